//! The reference interpreter: runs a function op by op in schedule order, freeing each value
//! after its last use, and lets an observer see every op's output.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use qcc_dialects::ops::attrs::{self, Conv2dAttrs};
use qcc_dialects::{
    ElemType, Function, Module, Node, NodeIndex, OpKind, Operation, Tensor, TensorType, Value,
};

use crate::engine::OpKernel;
use crate::kernels::elementwise::{
    Activation, Arith, batch_norm, binary, binary_in_place, channel_clip, f32s, softmax, unary,
    unary_in_place,
};
use crate::kernels::layers::{conv2d, dense, matmul};
use crate::kernels::layout::{concat, pad, transpose};
use crate::kernels::pool::{PoolKind, global_avg, pool2d};
use crate::kernels::quant as q;
use crate::plan;
use crate::pooling::PoolGeometry;
use crate::quant::Requant;

/// A failure while running: which op, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct RunError {
    /// The op (or input) that failed.
    pub op: String,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.op, self.message)
    }
}

impl std::error::Error for RunError {}

/// The requantization of an integer conv/dense layer whose operand types are `types`.
pub fn layer_requant(op: &Operation, types: &[&TensorType]) -> Result<Requant, String> {
    let out = &op.results[0];
    let channels = out.shape.get(1).copied().unwrap_or(1);
    match (types.first(), types.get(1)) {
        (Some(x), Some(w)) => Requant::from_types(x, w, out, channels, attrs::clamp(op)?)?
            .with_channel_max(attrs::channel_clamp(op)?),
        _ => Err("missing operand".into()),
    }
}

/// Runs one op on its inputs, whose types are `types` (integer ops read their quantization
/// parameters there). `op.results[0]` supplies output sizes that only shape inference knows
/// (pooling's ceil mode); the batch dimension comes from the inputs.
pub fn eval_op(
    op: &Operation,
    inputs: &[&Tensor],
    types: &[&TensorType],
) -> Result<Tensor, String> {
    eval_prepared(op, inputs, types, None)
}

/// [`eval_op`] with the layer's requantization already prepared (by [`Interpreter::new`]).
fn eval_prepared(
    op: &Operation,
    inputs: &[&Tensor],
    types: &[&TensorType],
    requant: Option<&Requant>,
) -> Result<Tensor, String> {
    let kind = op
        .kind()
        .ok_or_else(|| format!("unknown op '{}'", op.name))?;
    let out = &op.results[0];
    let x = inputs.first().copied();
    let input = || -> Result<(&[f32], &[usize]), String> {
        let t = x.ok_or("missing operand")?;
        Ok((f32s(t)?, &t.shape))
    };
    let typed = |i: usize| -> (&Tensor, &TensorType) { (inputs[i], types[i]) };
    Ok(match kind {
        OpKind::Const => {
            return Err("constants are prepared with the function, not run".into());
        }
        OpKind::Conv2d => float_conv(op, inputs, None)?,
        OpKind::Dense => {
            let (xv, xs) = input()?;
            let w = inputs[1];
            let bias = inputs.get(2).map(|b| f32s(b)).transpose()?;
            dense(xv, xs[0], xs[1], f32s(w)?, w.shape[0], bias)
        }
        OpKind::MatMul => {
            let (xv, xs) = input()?;
            matmul(xv, xs, f32s(inputs[1])?, &inputs[1].shape)
        }
        OpKind::BatchNorm => {
            let (_, _) = input()?;
            let p: Vec<&[f32]> = inputs[1..5]
                .iter()
                .map(|t| f32s(t))
                .collect::<Result<_, _>>()?;
            batch_norm(
                inputs[0],
                [p[0], p[1], p[2], p[3]],
                attrs::epsilon(op)? as f32,
            )
        }
        OpKind::Clip if attrs::clip_bounds(op)?.channel_hi.is_some() => {
            let (xv, xs) = input()?;
            channel_clip(xv, xs, &attrs::clip_bounds(op)?)
        }
        OpKind::Relu | OpKind::Clip | OpKind::Sigmoid | OpKind::HardSigmoid | OpKind::HardSwish => {
            let (xv, xs) = input()?;
            let f = Activation::of(op)?.ok_or("not an activation")?;
            unary(xv, xs, f)
        }
        OpKind::Add | OpKind::Sub | OpKind::Mul | OpKind::Div => binary(
            inputs[0],
            inputs[1],
            Arith::of(kind).ok_or("not arithmetic")?,
        )?,
        OpKind::GlobalAvgPool => {
            let (xv, xs) = input()?;
            global_avg(xv, xs)
        }
        OpKind::AvgPool2d | OpKind::MaxPool2d => {
            let (xv, xs) = input()?;
            let g = PoolGeometry::of(op)?;
            let kind = if kind == OpKind::MaxPool2d {
                PoolKind::Max
            } else {
                PoolKind::Avg
            };
            pool2d(xv, xs, &g, kind)
        }
        OpKind::Flatten | OpKind::Reshape => {
            let t = x.ok_or("missing operand")?;
            let mut shape = out.shape.clone();
            // Follow the input's batch size, which may differ from the declared one.
            let declared: usize = shape.iter().product();
            if declared != t.numel() && !shape.is_empty() && declared > 0 {
                let rest: usize = shape[1..].iter().product();
                if rest > 0 && t.numel() % rest == 0 {
                    shape[0] = t.numel() / rest;
                }
            }
            Tensor::new(shape, t.data.clone())?
        }
        OpKind::Transpose => {
            let (xv, xs) = input()?;
            transpose(xv, xs, &attrs::perm(op, xs.len())?)
        }
        OpKind::Concat => {
            let parts: Vec<(&[f32], &[usize])> = inputs
                .iter()
                .map(|t| Ok((f32s(t)?, t.shape.as_slice())))
                .collect::<Result<_, String>>()?;
            concat(&parts, attrs::axis(op, 1, parts[0].1.len())?)
        }
        OpKind::Softmax => {
            let (xv, xs) = input()?;
            softmax(xv, xs, attrs::axis(op, -1, xs.len())?)
        }
        OpKind::Pad => {
            let (xv, xs) = input()?;
            let a = attrs::PadAttrs::of(op, xs.len())?;
            pad(xv, xs, &a.pads, a.mode)
        }
        OpKind::Quantize => {
            let x = f32s(inputs[0])?;
            crate::quant::quantize(x, &inputs[0].shape, out)?
        }
        OpKind::Dequantize => crate::quant::dequantize(inputs[0], types[0])?,
        OpKind::QuantConv2d | OpKind::QuantDense => {
            let ops = q::LayerOperands {
                x: typed(0),
                w: typed(1),
                bias: inputs.get(2).copied(),
                out,
            };
            let computed;
            let rq = match requant {
                Some(rq) => rq,
                None => {
                    computed = layer_requant(op, types)?;
                    &computed
                }
            };
            if kind == OpKind::QuantConv2d {
                q::conv2d(&ops, &Conv2dAttrs::of(op)?, rq)?
            } else {
                q::dense(&ops, rq)?
            }
        }
        OpKind::QuantAdd => {
            let shape =
                crate::kernels::elementwise::broadcast_shape(&inputs[0].shape, &inputs[1].shape)?;
            q::add(typed(0), typed(1), out, &shape, attrs::clamp(op)?)?
        }
        OpKind::QuantAvgPool2d => q::avg_pool2d(typed(0), out, &PoolGeometry::of(op)?)?,
        OpKind::QuantMaxPool2d => q::max_pool2d(inputs[0], out, &PoolGeometry::of(op)?),
        OpKind::QuantGlobalAvgPool => q::global_avg_pool(typed(0), out)?,
        OpKind::QuantConcat => {
            let parts: Vec<(&Tensor, &TensorType)> =
                inputs.iter().copied().zip(types.iter().copied()).collect();
            let rank = inputs[0].shape.len();
            q::concat(&parts, out, attrs::axis(op, 1, rank)?)?
        }
    })
}

/// Checks the op's shape rule on the shapes its operands have in this run (the batch may differ
/// from the declared one), so that no kernel sees operands that do not fit together. Reshape and
/// flatten are exempt: their target shape is declared for the declared batch, and their kernel
/// follows the batch it is given.
fn check_shapes(op: &Operation, inputs: &[&Tensor], types: &[&TensorType]) -> Result<(), String> {
    if matches!(op.kind(), Some(OpKind::Reshape | OpKind::Flatten)) {
        return Ok(());
    }
    if inputs.iter().zip(types).all(|(t, ty)| t.shape == ty.shape) {
        return Ok(()); // the verifier checked the declared shapes
    }
    let def = qcc_dialects::registry()
        .get(&op.name)
        .ok_or_else(|| format!("unknown op '{}'", op.name))?;
    let actual: Vec<TensorType> = inputs
        .iter()
        .zip(types)
        .map(|(t, ty)| TensorType::new(t.shape.clone(), ty.elem.clone()))
        .collect();
    let ctx = qcc_dialects::registry::OpCtx {
        op,
        operands: actual.iter().collect(),
    };
    (def.infer)(&ctx).map(|_| ()).map_err(|why| {
        format!(
            "cannot run on inputs of shapes {:?}: {why}",
            inputs.iter().map(|t| &t.shape).collect::<Vec<_>>()
        )
    })
}

/// The reference float `nn.conv2d` `op` of `inputs` (input, weight, optional bias), then `then`.
fn float_conv(
    op: &Operation,
    inputs: &[&Tensor],
    then: Option<Activation>,
) -> Result<Tensor, String> {
    let (x, w) = match inputs {
        [x, w, ..] => (*x, *w),
        _ => return Err("missing operand".into()),
    };
    let bias = inputs.get(2).map(|b| f32s(b)).transpose()?;
    let attrs = Conv2dAttrs::of(op)?;
    Ok(conv2d(
        f32s(x)?,
        &x.shape,
        f32s(w)?,
        &w.shape,
        bias,
        &attrs,
        then,
    ))
}

/// The float convolutions of `func` whose output only a float activation reads (and the function
/// does not return), with that activation.
fn fusions(func: &Function, schedule: &[NodeIndex]) -> HashMap<NodeIndex, Activation> {
    let mut readers: HashMap<Value, usize> = HashMap::new();
    for &node in schedule {
        for v in func.operands(node) {
            *readers.entry(v).or_default() += 1;
        }
    }
    let mut fused = HashMap::new();
    for &node in schedule {
        let operands = func.operands(node);
        let [v] = operands.as_slice() else { continue };
        let Ok(Some(then)) = Activation::of(func.op(node)) else {
            continue;
        };
        let producer = func.try_op(v.node);
        if producer.is_some_and(|p| p.is(OpKind::Conv2d))
            && matches!(func.value_type(*v).elem, ElemType::F32)
            && readers.get(v) == Some(&1)
            && !func.is_returned(*v)
        {
            fused.insert(v.node, then);
        }
    }
    fused
}

/// A function prepared to run: schedule, constants, and where each value is last used.
pub struct Interpreter<'m> {
    func: &'m Function,
    schedule: Vec<NodeIndex>,
    consts: HashMap<NodeIndex, Cow<'m, Tensor>>,
    /// The requantization of every integer conv/dense, computed once.
    requants: HashMap<NodeIndex, Requant>,
    last_use: HashMap<Value, usize>,
    /// Compiled kernels that replace the reference kernel of their op.
    kernels: HashMap<NodeIndex, Box<dyn OpKernel>>,
    /// Float convolutions whose only reader is an activation: plain runs apply the activation in
    /// the convolution, and the activation op passes the value on.
    fused: HashMap<NodeIndex, Activation>,
    /// The planned activation arena's bytes by batch size, as runs ask for them.
    arena_sizes: std::sync::Mutex<HashMap<usize, usize>>,
}

fn describe(func: &Function, node: NodeIndex) -> String {
    match &func.graph[node] {
        Node::Op(op) => match op.result_names.first().cloned().flatten() {
            Some(name) => format!("{} (%{name})", op.name),
            None => op.name.clone(),
        },
        Node::Arg { name, .. } => format!("argument %{name}"),
    }
}

impl<'m> Interpreter<'m> {
    /// Prepares function `name` of `module`.
    pub fn new(module: &'m Module, name: &str) -> Result<Interpreter<'m>, String> {
        let func = module
            .function(name)
            .ok_or_else(|| format!("the module has no function @{name}"))?;
        let schedule = func.schedule();
        let mut consts = HashMap::new();
        let mut requants = HashMap::new();
        let mut last_use = HashMap::new();
        for (step, &node) in schedule.iter().enumerate() {
            let op = func.op(node);
            if op.is(OpKind::Const) {
                let t = module.const_value(op).ok_or_else(|| {
                    format!("{}: its weight cannot be found", describe(func, node))
                })?;
                consts.insert(node, t);
            }
            if matches!(op.kind(), Some(OpKind::QuantConv2d | OpKind::QuantDense)) {
                let types: Vec<&TensorType> = func
                    .operands(node)
                    .iter()
                    .map(|v| func.value_type(*v))
                    .collect();
                let rq = layer_requant(op, &types)
                    .map_err(|e| format!("{}: {e}", describe(func, node)))?;
                requants.insert(node, rq);
            }
            for v in func.operands(node) {
                last_use.insert(v, step);
            }
        }
        let fused = fusions(func, &schedule);
        Ok(Interpreter {
            func,
            schedule,
            consts,
            requants,
            last_use,
            kernels: HashMap::new(),
            fused,
            arena_sizes: Default::default(),
        })
    }

    /// Prepares function `name` of `module` with `kernels` run in place of the reference kernel
    /// of their op (the others run on their reference kernel).
    pub fn with_kernels(
        module: &'m Module,
        name: &str,
        kernels: HashMap<NodeIndex, Box<dyn OpKernel>>,
    ) -> Result<Interpreter<'m>, String> {
        Ok(Interpreter {
            kernels,
            ..Interpreter::new(module, name)?
        })
    }

    /// Runs on `inputs` (one per argument; the batch dimension may differ from the declared one).
    /// Nothing sees the values between ops, so a float convolution applies the activation that
    /// is its only reader itself (the same values as one op after the other).
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        let mut stepper = self.plain_stepper(inputs)?;
        while stepper.step()?.is_some() {}
        Ok(stepper.results())
    }

    /// A stepper that runs as [`Interpreter::run`] does, its fusions applied: a value that only
    /// a fused activation reads is never readable between the two ops.
    pub fn plain_stepper(&self, inputs: &[Tensor]) -> Result<Stepper<'_, 'm>, RunError> {
        let mut stepper = self.stepper(inputs)?;
        stepper.fuse = true;
        Ok(stepper)
    }

    /// The float convolution that applies activation `node` in a plain run, if one does.
    pub fn fused_into(&self, node: NodeIndex) -> Option<NodeIndex> {
        // A fused convolution's output has one reader: its activation.
        let operand = self.func.operands(node).first().copied()?;
        self.fused
            .contains_key(&operand.node)
            .then_some(operand.node)
    }

    /// Runs and calls `observer` with every op's node, op and output.
    pub fn run_observed(
        &self,
        inputs: &[Tensor],
        observer: &mut dyn FnMut(NodeIndex, &Operation, &Tensor),
    ) -> Result<Vec<Tensor>, RunError> {
        let mut stepper = self.stepper(inputs)?;
        while let Some(node) = stepper.step()? {
            if let Some(t) = stepper
                .value(Value::of(node))
                .filter(|_| !self.consts.contains_key(&node))
            {
                observer(node, self.func.op(node), t);
            }
        }
        Ok(stepper.results())
    }

    /// An error when the values of a run on `inputs` need more memory than this machine has
    /// available (instead of an allocation failing part-way, which aborts the process): their
    /// arena planned by value liveness at the inputs' batch, against `MemAvailable`.
    fn check_memory(&self, inputs: &[Tensor]) -> Result<(), RunError> {
        // Below this, no machine worth running on lacks the memory: not worth asking.
        const SURELY_AVAILABLE: usize = 256 << 20;
        let batch = inputs
            .first()
            .and_then(|t| t.shape.first())
            .copied()
            .unwrap_or(1);
        let need = *self
            .arena_sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(batch)
            .or_insert_with(|| plan::plan(self.func, batch, plan::ALIGN).size);
        if need <= SURELY_AVAILABLE {
            return Ok(());
        }
        let Some(available) = plan::available_memory() else {
            return Ok(());
        };
        if need <= available {
            return Ok(());
        }
        Err(RunError {
            op: format!("@{}", self.func.name),
            message: format!(
                "its values need {} at batch {batch} (the activation arena planned by value \
                 liveness), more than the {} of memory available{}",
                plan::bytes_text(need),
                plan::bytes_text(available),
                if batch > 1 {
                    "; a smaller --batch-size needs less"
                } else {
                    ""
                }
            ),
        })
    }

    /// Starts a run that the caller advances op by op, reading and replacing live values.
    pub fn stepper(&self, inputs: &[Tensor]) -> Result<Stepper<'_, 'm>, RunError> {
        let func = self.func;
        if inputs.len() != func.args.len() {
            return Err(RunError {
                op: format!("@{}", func.name),
                message: format!("takes {} input(s), got {}", func.args.len(), inputs.len()),
            });
        }
        self.check_memory(inputs)?;
        let mut live: HashMap<Value, Cow<'_, Tensor>> = HashMap::new();
        for (&arg, t) in func.args.iter().zip(inputs) {
            let ty = func.value_type(Value::of(arg));
            if t.shape.len() != ty.rank()
                || t.shape.get(1..) != ty.shape.get(1..)
                || !t.data.matches(&ty.elem)
            {
                return Err(RunError {
                    op: describe(func, arg),
                    message: format!(
                        "expects {ty} (any batch size), got {:?} {}",
                        t.shape,
                        t.data.dtype_name()
                    ),
                });
            }
            live.insert(Value::of(arg), Cow::Owned(t.clone()));
        }
        Ok(Stepper {
            interp: self,
            live,
            position: 0,
            fuse: false,
        })
    }

    /// The prepared function.
    pub fn function(&self) -> &'m Function {
        self.func
    }

    /// The requantization prepared for integer conv/dense `node`.
    pub fn requant(&self, node: NodeIndex) -> Option<&Requant> {
        self.requants.get(&node)
    }

    /// Op `node` once more on operand values from `values` (a constant operand comes from the
    /// prepared function when `values` has none), with the kernel a step runs: the same output.
    pub fn evaluate(
        &self,
        node: NodeIndex,
        values: &HashMap<Value, Tensor>,
    ) -> Result<Tensor, String> {
        let func = self.func;
        let operands = func.operands(node);
        let args = operands
            .iter()
            .map(|v| {
                values
                    .get(v)
                    .or_else(|| self.consts.get(&v.node).map(|c| c.as_ref()))
                    .ok_or_else(|| format!("{}: an operand is not given", describe(func, node)))
            })
            .collect::<Result<Vec<&Tensor>, String>>()?;
        self.run_op(node, &args)
            .map_err(|e| format!("{}: {e}", describe(func, node)))
    }

    /// The types of op `node`'s operands.
    fn operand_types(&self, node: NodeIndex) -> Vec<&TensorType> {
        let func = self.func;
        func.operands(node)
            .iter()
            .map(|v| func.value_type(*v))
            .collect()
    }

    /// Checks `args` against op `node`'s operand types.
    fn check_args(&self, node: NodeIndex, args: &[&Tensor]) -> Result<(), String> {
        check_shapes(self.func.op(node), args, &self.operand_types(node))
    }

    /// [`Interpreter::run_op`] of a float convolution with the activation `then` fused.
    fn run_op_then(
        &self,
        node: NodeIndex,
        args: &[&Tensor],
        then: Activation,
    ) -> Result<Tensor, String> {
        let (op, types) = (self.func.op(node), self.operand_types(node));
        check_shapes(op, args, &types)?;
        match self.kernels.get(&node) {
            Some(kernel) => kernel.run_then(args, then),
            None => float_conv(op, args, Some(then)),
        }
    }

    /// Op `node` on `args`, checked, with its generated kernel or else its reference one.
    fn run_op(&self, node: NodeIndex, args: &[&Tensor]) -> Result<Tensor, String> {
        let (op, types) = (self.func.op(node), self.operand_types(node));
        check_shapes(op, args, &types)?;
        match self.kernels.get(&node) {
            Some(kernel) => kernel.run(args),
            None => eval_prepared(op, args, &types, self.requants.get(&node)),
        }
    }

    /// The exact i32 accumulators `sum (x - Z_x) * w` (no bias) of integer conv/dense `node` on
    /// its input `x` and weight `w`, laid out `[N, C, plane]`, with their shape: what the layer
    /// requantizes (bias correction tries many biases on one set of accumulators).
    pub fn accumulators(
        &self,
        node: NodeIndex,
        x: &Tensor,
        w: &Tensor,
    ) -> Result<(Vec<i32>, Vec<usize>), String> {
        let func = self.func;
        let op = func
            .try_op(node)
            .ok_or("accumulators: not an op of the prepared function")?;
        if let Some(acc) = self.kernels.get(&node).and_then(|k| k.accumulators(x, w)) {
            return acc;
        }
        let x_ty = func
            .operands(node)
            .first()
            .map(|v| func.value_type(*v))
            .ok_or("accumulators: the layer has no input")?;
        match op.kind() {
            Some(OpKind::QuantConv2d) => {
                q::conv2d_accumulators((x, x_ty), w, &Conv2dAttrs::of(op)?)
            }
            Some(OpKind::QuantDense) => q::dense_accumulators((x, x_ty), w),
            _ => Err(format!(
                "{} is not an integer conv or dense layer",
                describe(func, node)
            )),
        }
    }
}

/// A run in progress: ops execute one at a time in schedule order; a value stays readable until
/// its last reader has run.
pub struct Stepper<'i, 'm> {
    interp: &'i Interpreter<'m>,
    live: HashMap<Value, Cow<'i, Tensor>>,
    position: usize,
    /// Whether the interpreter's fusions apply (a run whose values between ops nobody reads).
    fuse: bool,
}

impl Stepper<'_, '_> {
    /// The op the next `step` runs.
    pub fn next_node(&self) -> Option<NodeIndex> {
        self.interp.schedule.get(self.position).copied()
    }

    /// Runs the next op; returns its node, or `None` when the function is done.
    pub fn step(&mut self) -> Result<Option<NodeIndex>, RunError> {
        let Some(node) = self.next_node() else {
            return Ok(None);
        };
        let (func, step) = (self.interp.func, self.position);
        let out = if let Some(c) = self.interp.consts.get(&node) {
            Cow::Borrowed(c.as_ref())
        } else {
            let fail = |message| RunError {
                op: describe(func, node),
                message,
            };
            let operands = func.operands(node);
            if self.fuse && self.interp.fused_into(node).is_some() {
                // An activation its operand's convolution has applied: the value passes on.
                match self.live.remove(&operands[0]) {
                    Some(Cow::Owned(t)) => Cow::Owned(t),
                    _ => return Err(fail("internal error: the fused value is not owned".into())),
                }
            } else {
                let args: Vec<&Tensor> = operands.iter().map(|v| self.live[v].as_ref()).collect();
                let t = match self.interp.fused.get(&node).filter(|_| self.fuse) {
                    Some(then) => self.interp.run_op_then(node, &args, *then),
                    None if self.reusable(node, step) => {
                        self.interp.check_args(node, &args).map_err(fail)?;
                        self.in_place(node)
                    }
                    None => self.interp.run_op(node, &args),
                }
                .map_err(fail)?;
                Cow::Owned(t)
            }
        };
        self.live.insert(Value::of(node), out);
        for v in func.operands(node) {
            if self.interp.last_use.get(&v) == Some(&step) && !func.is_returned(v) {
                self.live.remove(&v);
            }
        }
        self.position += 1;
        Ok(Some(node))
    }

    /// Whether `node` is a float activation or same-shape arithmetic op that can write into its
    /// first operand: this op is that value's last reader, and the run owns it.
    fn reusable(&self, node: NodeIndex, step: usize) -> bool {
        let func = self.interp.func;
        let op = func.op(node);
        let operands = func.operands(node);
        let Some(&first) = operands.first() else {
            return false;
        };
        let elementwise = matches!(Activation::of(op), Ok(Some(_)))
            || op.kind().and_then(Arith::of).is_some()
                && operands
                    .get(1)
                    .and_then(|b| self.live.get(b))
                    .map(|b| &b.shape)
                    == self.live.get(&first).map(|a| &a.shape);
        elementwise
            && self.interp.last_use.get(&first) == Some(&step)
            && !func.is_returned(first)
            && operands.iter().filter(|v| **v == first).count() == 1
            && matches!(self.live.get(&first), Some(Cow::Owned(t)) if t.as_f32().is_some())
    }

    /// Runs a [`Stepper::reusable`] op in its first operand's buffer (through its generated
    /// kernel when it has one) and returns that buffer.
    fn in_place(&mut self, node: NodeIndex) -> Result<Tensor, String> {
        let func = self.interp.func;
        let op = func.op(node);
        let operands = func.operands(node);
        let Some(Cow::Owned(mut t)) = self.live.remove(&operands[0]) else {
            return Err("internal error: the operand to overwrite is not owned".into());
        };
        if let Some(kernel) = self.interp.kernels.get(&node) {
            let rest: Vec<&Tensor> = operands[1..]
                .iter()
                .map(|v| self.live[v].as_ref())
                .collect();
            if let Some(done) = kernel.run_in_place(&mut t, &rest) {
                return done.map(|()| t);
            }
            // The kernel computes no value in place: it runs on its own output buffer.
            let mut args = vec![&t];
            args.extend(rest);
            return kernel.run(&args);
        }
        match Activation::of(op)? {
            Some(f) => unary_in_place(t.as_f32_mut().ok_or("expected f32")?, f),
            None => {
                let f = op.kind().and_then(Arith::of).ok_or("not arithmetic")?;
                binary_in_place(&mut t, &self.live[&operands[1]], f)?;
            }
        }
        Ok(t)
    }

    /// Skips the next op, taking `t` as its output (a caller that computed it differently).
    pub fn provide(&mut self, t: Tensor) {
        let Some(node) = self.next_node() else { return };
        let (func, step) = (self.interp.func, self.position);
        self.live.insert(Value::of(node), Cow::Owned(t));
        for v in func.operands(node) {
            if self.interp.last_use.get(&v) == Some(&step) && !func.is_returned(v) {
                self.live.remove(&v);
            }
        }
        self.position += 1;
    }

    /// A live value.
    pub fn value(&self, v: Value) -> Option<&Tensor> {
        self.live.get(&v).map(|t| t.as_ref())
    }

    /// Replaces a live value (later ops read the replacement).
    pub fn replace(&mut self, v: Value, t: Tensor) {
        self.live.insert(v, Cow::Owned(t));
    }

    /// Runs the remaining ops.
    pub fn finish(&mut self) -> Result<(), RunError> {
        while self.step()?.is_some() {}
        Ok(())
    }

    /// The function's results (after `finish`).
    pub fn results(&self) -> Vec<Tensor> {
        self.interp
            .func
            .results
            .iter()
            .map(|v| self.live[v].clone().into_owned())
            .collect()
    }
}
