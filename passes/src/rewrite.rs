//! Helpers passes share to read constants, make new ones and clean up dead ops.

use qcc_dialects::{Function, Module, NodeIndex, OpKind, Tensor, TensorType, Value};

/// The tensor behind `v` if it is produced by an `nn.const`.
pub fn const_tensor(module: &Module, func: &Function, v: Value) -> Option<Tensor> {
    let op = func.try_op(v.node)?;
    if !op.is(OpKind::Const) {
        return None;
    }
    module.const_value(op).map(|t| t.into_owned())
}

/// Where each element of a conv/dense weight (`[O, I / groups, kh, kw]` or `[O, K]`, row-major)
/// sits: the output channel it makes and the input channel it reads.
#[derive(Clone, Copy, Debug)]
pub struct WeightLayout {
    outputs: usize,
    per_group: usize,
    taps: usize,
    groups: usize,
}

impl WeightLayout {
    /// The layout of a weight of `shape` in a layer of `groups` groups.
    pub fn new(shape: &[usize], groups: usize) -> WeightLayout {
        WeightLayout {
            outputs: shape.first().copied().unwrap_or(0).max(1),
            per_group: shape.get(1).copied().unwrap_or(1).max(1),
            taps: shape.iter().skip(2).product::<usize>().max(1),
            groups: groups.max(1),
        }
    }

    /// The layout of conv/dense `node`'s weight (operand 1), `None` when it has no readable one.
    pub fn of(func: &Function, node: NodeIndex) -> Option<WeightLayout> {
        let shape = &func.value_type(*func.operands(node).get(1)?).shape;
        let op = func.op(node);
        let groups = if op.is(OpKind::Conv2d) || op.is(OpKind::QuantConv2d) {
            qcc_dialects::ops::attrs::Conv2dAttrs::of(op).ok()?.groups
        } else {
            1
        };
        Some(WeightLayout::new(shape, groups))
    }

    /// The output channel and the input channel of weight element `i`.
    pub fn channels(&self, i: usize) -> (usize, usize) {
        let o = i / (self.per_group * self.taps);
        let group = o / (self.outputs / self.groups).max(1);
        (o, group * self.per_group + (i / self.taps) % self.per_group)
    }

    /// Input channels of the layer.
    pub fn inputs(&self) -> usize {
        self.per_group * self.groups
    }

    /// Products per input channel value: kernel taps.
    pub fn taps(&self) -> usize {
        self.taps
    }
}

/// Whether `v` is produced by an `nn.const` holding its tensor inline.
pub fn is_inline_const(func: &Function, v: Value) -> bool {
    func.try_op(v.node)
        .is_some_and(|op| op.is(OpKind::Const) && op.attr("value").is_some())
}

/// The weight name of the `nn.const` producing `v`, if it names one.
pub fn const_name(func: &Function, v: Value) -> Option<String> {
    let op = func.try_op(v.node)?;
    Some(op.attr("name")?.as_str()?.to_string())
}

/// Adds an `nn.const` for `tensor`: inline when `inline`, else stored in the module's weights under
/// a fresh name derived from `name`.
pub fn add_const(
    module: &mut Module,
    func: &mut Function,
    name: &str,
    tensor: Tensor,
    ty: TensorType,
    inline: bool,
) -> Value {
    Value::of(func.add_op(module.weights.const_op(name, tensor, ty, inline), &[]))
}

/// Removes ops whose results nobody reads (every op is pure); returns how many were removed.
pub fn remove_dead_ops(func: &mut Function) -> usize {
    let mut removed = 0;
    loop {
        let dead: Vec<NodeIndex> = func
            .op_nodes()
            .into_iter()
            .filter(|&n| {
                (0..func.op(n).results.len())
                    .all(|r| func.use_count(Value { node: n, result: r }) == 0)
            })
            .collect();
        if dead.is_empty() {
            return removed;
        }
        removed += dead.len();
        for n in dead {
            func.remove_op(n);
        }
    }
}
