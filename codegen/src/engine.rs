//! The Cranelift engine: prepares a function by generating (or taking from the cache) a kernel
//! for every op that has one and runs the rest on the reference interpreter's kernels, warning
//! once per process for each op kind that has none. Plain runs of an integer function that
//! lowers whole ([`crate::program`]) run that generated program instead, its values in one
//! arena.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, OnceLock};

use qcc_dialects::ops::attrs::Conv2dAttrs;
use qcc_dialects::{
    Function, Module, Node, NodeIndex, OpKind, Operation, Storage, Tensor, TensorData, TensorType,
    Value,
};
use qcc_runtime::interp::{RunError, layer_requant};
use qcc_runtime::quant::Requant;
use qcc_runtime::{Engine, Interpreter, OpKernel, Prepared, Steps};
use rayon::prelude::*;

use crate::object::{Loaded, Scratch};

use crate::elementwise::{Dequantize, QuantAdd, QuantConcat, Quantize, is_f32};
use crate::float::{FloatDense, FloatDepthwise, FloatMatMul};
use crate::float_map::{FloatBatchNorm, FloatBroadcast, FloatChannelClip, FloatMap};
use crate::layers::{QuantConv, QuantDense};
use crate::layout::{FloatConcat, FloatPad, FloatTranspose};
use crate::reduce::{FloatGlobalAvgPool, FloatSoftmax, QuantGlobalAvgPool};
use crate::windows::{FloatPool, QuantPool};

/// The engine of generated code (`--engine cranelift`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Native;

/// Op kinds already warned about in this process.
static WARNED: Mutex<Option<HashSet<OpKind>>> = Mutex::new(None);

/// Ops that move no data worth a kernel or are not run at all.
fn needs_no_kernel(kind: OpKind) -> bool {
    matches!(kind, OpKind::Const | OpKind::Flatten | OpKind::Reshape)
}

/// Whether the integer kernels take inputs of type `t`: 8-bit storage, so `x - Z_x` fits i16.
fn eight_bit(t: &TensorType) -> bool {
    t.elem
        .quant()
        .is_some_and(|q| matches!(q.storage, Storage::U8 | Storage::I8))
}

/// The generated kernel of `node`, `None` when its op has none (or not for these types).
fn kernel_for(
    module: &Module,
    func: &Function,
    node: NodeIndex,
) -> Result<Option<Box<dyn OpKernel>>, String> {
    let op = func.op(node);
    let Some(kind) = op.kind() else {
        return Ok(None);
    };
    let operands = func.operands(node);
    let types: Vec<&TensorType> = operands.iter().map(|v| func.value_type(*v)).collect();
    match kind {
        OpKind::QuantConv2d | OpKind::QuantDense => {}
        OpKind::QuantAdd => {
            return Ok(QuantAdd::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::QuantGlobalAvgPool => {
            return Ok(
                QuantGlobalAvgPool::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>)
            );
        }
        OpKind::QuantMaxPool2d | OpKind::QuantAvgPool2d => {
            return Ok(QuantPool::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::QuantConcat => {
            return Ok(QuantConcat::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::Quantize => {
            return Ok(Quantize::new(op)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::Dequantize => {
            return Ok(Dequantize::new(types[0])?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::Conv2d if is_f32(types[0]) && types.get(1).is_some_and(|t| is_f32(t)) => {
            return Ok(FloatDepthwise::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::MaxPool2d | OpKind::AvgPool2d => {
            return Ok(FloatPool::new(op, types[0])?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::Dense if types.len() >= 2 && types.iter().all(|t| is_f32(t)) => {
            return Ok(FloatDense::new(&types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::MatMul if types.len() == 2 => {
            let weight = func
                .try_op(operands[1].node)
                .filter(|w| w.is(OpKind::Const))
                .and_then(|w| module.const_value(w));
            return Ok(FloatMatMul::new(&types, weight.as_deref())?
                .map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::Relu
        | OpKind::Clip
        | OpKind::Sigmoid
        | OpKind::HardSigmoid
        | OpKind::HardSwish
        | OpKind::Add
        | OpKind::Sub
        | OpKind::Mul
        | OpKind::Div => {
            if let Some(k) = FloatChannelClip::new(op, &types)? {
                return Ok(Some(Box::new(k)));
            }
            if let Some(k) = FloatBroadcast::new(op, &types)? {
                return Ok(Some(Box::new(k)));
            }
            return Ok(FloatMap::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::Transpose => {
            return Ok(FloatTranspose::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::Pad => {
            return Ok(FloatPad::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::Concat => {
            return Ok(FloatConcat::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::Softmax => {
            return Ok(FloatSoftmax::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::BatchNorm => {
            return Ok(FloatBatchNorm::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::GlobalAvgPool => {
            return Ok(
                FloatGlobalAvgPool::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>)
            );
        }

        _ => return Ok(None),
    }
    let Some(weight) = operands
        .get(1)
        .and_then(|w| func.try_op(w.node))
        .filter(|w| w.is(OpKind::Const))
        .and_then(|w| module.const_value(w))
    else {
        return Ok(None); // weights computed at run time: the reference kernel handles them
    };
    if !eight_bit(types[0]) || !matches!(weight.data, qcc_dialects::TensorData::I8(_)) {
        return Ok(None);
    }
    let requant = layer_requant(op, &types)?;
    let out = &op.results[0];
    Ok(Some(if kind == OpKind::QuantConv2d {
        if weight.shape.len() != 4 {
            return Ok(None);
        }
        Box::new(QuantConv::new(
            Conv2dAttrs::of(op)?,
            weight,
            types[0],
            out,
            requant,
        )?)
    } else {
        if weight.shape.len() != 2 {
            return Ok(None);
        }
        Box::new(QuantDense::new(weight, types[0], out, requant)?)
    }))
}

/// The generated kernel of every op of `func` that has one, and the kinds of the ops that have
/// none (and run on their reference kernel).
#[allow(clippy::type_complexity)]
fn kernels_of(
    module: &Module,
    func: &Function,
) -> Result<(HashMap<NodeIndex, Box<dyn OpKernel>>, BTreeSet<OpKind>), String> {
    let mut kernels = HashMap::new();
    let mut missing = BTreeSet::new();
    for node in func.graph.node_indices() {
        let Node::Op(op) = &func.graph[node] else {
            continue;
        };
        let Some(kind) = op.kind() else { continue };
        match kernel_for(module, func, node).map_err(|e| format!("{}: {e}", op.name))? {
            Some(k) => {
                kernels.insert(node, k);
            }
            None if needs_no_kernel(kind) => {}
            None => {
                missing.insert(kind);
            }
        }
    }
    Ok((kernels, missing))
}

/// The kinds of the ops of `@function` that have no generated kernel on this engine (what
/// preparing it warns about).
pub fn without_kernels(module: &Module, function: &str) -> Result<BTreeSet<OpKind>, String> {
    let func = module
        .function(function)
        .ok_or_else(|| format!("the module has no function @{function}"))?;
    Ok(kernels_of(module, func)?.1)
}

impl Engine for Native {
    fn name(&self) -> &'static str {
        "cranelift"
    }

    fn prepare<'m>(
        &self,
        module: &'m Module,
        function: &str,
    ) -> Result<Box<dyn Prepared + 'm>, String> {
        let func = module
            .function(function)
            .ok_or_else(|| format!("the module has no function @{function}"))?;
        let (kernels, missing) = kernels_of(module, func)?;
        warn_missing(&missing);
        Ok(Box::new(NativePrepared {
            interp: Interpreter::with_kernels(module, function, kernels)?,
            module,
            function: function.to_string(),
            program: OnceLock::new(),
            scratch: Mutex::new(Vec::new()),
        }))
    }
}

/// A function prepared on the Cranelift engine: the interpreter with the generated kernels, and,
/// for plain runs, the whole function as one generated program over one arena
/// ([`crate::program`]) when it lowers, compiled at the first such run.
struct NativePrepared<'m> {
    interp: Interpreter<'m>,
    module: &'m Module,
    function: String,
    program: OnceLock<Option<Loaded>>,
    /// Scratch areas of earlier runs, lent to the next (a program's contents need no
    /// initialisation, so allocating and filling megabytes per run would be wasted).
    scratch: Mutex<Vec<Scratch>>,
}

/// A scratch area lent from [`NativePrepared::scratch`] and returned when dropped.
struct Lent<'a> {
    area: Option<Scratch>,
    home: &'a Mutex<Vec<Scratch>>,
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        if let Some(area) = self.area.take() {
            self.home
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(area);
        }
    }
}

impl NativePrepared<'_> {
    /// Runs `inputs` through the whole-function program, image by image over the thread pool;
    /// `None` when the function has no program or the run does not fit it (its declared batch
    /// is not 1, fewer images than threads, which the interpreter's kernels split finer).
    fn run_program(&self, inputs: &[Tensor]) -> Option<Result<Vec<Tensor>, RunError>> {
        let [x] = inputs else { return None };
        let n = *x.shape.first()?;
        if n < rayon::current_num_threads() && rayon::current_num_threads() > 1 {
            return None;
        }
        let program = self
            .program
            .get_or_init(|| crate::object::load(self.module, &self.function).ok())
            .as_ref()?;
        let (input, output) = (&program.lowered.input, &program.lowered.output);
        let values = x.as_f32()?;
        if input.shape.first() != Some(&1) || x.shape[1..] != input.shape[1..] {
            return None;
        }
        let (per_in, per_out) = (input.elements(), output.elements());
        let mut out = vec![0f32; n * per_out];
        let ran = out
            .par_chunks_mut(per_out)
            .zip(values.par_chunks(per_in))
            .map_init(
                || Lent {
                    area: Some(
                        self.scratch
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .pop()
                            .unwrap_or_else(|| program.scratch()),
                    ),
                    home: &self.scratch,
                },
                |lent, (y, x)| match &mut lent.area {
                    Some(area) => program.run_into(x, y, area),
                    None => Err("internal error: no scratch area".into()),
                },
            )
            .collect::<Result<(), String>>();
        let mut shape = output.shape.clone();
        shape[0] = n;
        Some(
            ran.map_err(|message| RunError {
                op: format!("@{}", self.function),
                message,
            })
            .and_then(|()| {
                Tensor::new(shape, TensorData::F32(out)).map_err(|message| RunError {
                    op: format!("@{}", self.function),
                    message,
                })
            })
            .map(|t| vec![t]),
        )
    }
}

impl Prepared for NativePrepared<'_> {
    fn function(&self) -> &Function {
        self.interp.function()
    }

    fn run_observed(
        &self,
        inputs: &[Tensor],
        observer: &mut dyn FnMut(NodeIndex, &Operation, &Tensor),
    ) -> Result<Vec<Tensor>, RunError> {
        self.interp.run_observed(inputs, observer)
    }

    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        match self.run_program(inputs) {
            Some(result) => result,
            None => self.interp.run(inputs),
        }
    }

    fn steps<'a>(&'a self, inputs: &[Tensor]) -> Result<Box<dyn Steps + 'a>, RunError> {
        Prepared::steps(&self.interp, inputs)
    }

    fn plain_steps<'a>(&'a self, inputs: &[Tensor]) -> Result<Box<dyn Steps + 'a>, RunError> {
        Prepared::plain_steps(&self.interp, inputs)
    }

    fn fused_into(&self, node: NodeIndex) -> Option<NodeIndex> {
        self.interp.fused_into(node)
    }

    fn accumulators(
        &self,
        node: NodeIndex,
        x: &Tensor,
        w: &Tensor,
    ) -> Result<(Vec<i32>, Vec<usize>), String> {
        self.interp.accumulators(node, x, w)
    }

    fn requant(&self, node: NodeIndex) -> Option<&Requant> {
        self.interp.requant(node)
    }

    fn evaluate(&self, node: NodeIndex, values: &HashMap<Value, Tensor>) -> Result<Tensor, String> {
        self.interp.evaluate(node, values)
    }
}

/// Warns (once per process and op kind) about ops that run on their reference kernel.
fn warn_missing(missing: &BTreeSet<OpKind>) {
    let mut guard = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    let warned = guard.get_or_insert_with(HashSet::new);
    let new: Vec<&str> = missing
        .iter()
        .filter(|k| warned.insert(**k))
        .map(|k| k.name())
        .collect();
    if !new.is_empty() {
        eprintln!(
            "warning: no generated kernel for {}; {} on the reference interpreter",
            new.join(", "),
            if new.len() == 1 {
                "it runs"
            } else {
                "they run"
            }
        );
    }
}
