//! What an op costs, from its types: multiply-accumulates of the layers, and the class a layer
//! belongs to, for profiles and benchmarks.

use super::attrs::Conv2dAttrs;
use super::kind::OpKind;
use crate::ir::Operation;
use crate::types::TensorType;

/// The kind of work an op does, for grouping a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpClass {
    /// A 1x1 convolution (a matrix product).
    Pointwise,
    /// A depthwise convolution (one input channel per group and output).
    Depthwise,
    /// Any other convolution (3x3 and larger, grouped).
    Conv,
    /// A fully connected layer or matrix product.
    Dense,
    /// Everything without multiply-accumulates.
    Other,
}

impl OpClass {
    /// How the class reads in a table.
    pub fn label(self) -> &'static str {
        match self {
            OpClass::Pointwise => "conv 1x1",
            OpClass::Depthwise => "depthwise",
            OpClass::Conv => "conv",
            OpClass::Dense => "dense",
            OpClass::Other => "other",
        }
    }
}

/// The class of `op`, whose operand types are `operands`.
pub fn class(op: &Operation, operands: &[&TensorType]) -> OpClass {
    match op.kind() {
        Some(OpKind::Conv2d | OpKind::QuantConv2d) => {
            let groups = Conv2dAttrs::of(op).map_or(1, |a| a.groups);
            match operands.get(1).map(|w| w.shape.as_slice()) {
                Some(&[o, 1, _, _]) if groups > 1 && groups == o => OpClass::Depthwise,
                Some(&[_, _, 1, 1]) => OpClass::Pointwise,
                _ => OpClass::Conv,
            }
        }
        Some(OpKind::Dense | OpKind::QuantDense | OpKind::MatMul) => OpClass::Dense,
        _ => OpClass::Other,
    }
}

/// Multiply-accumulates of `op` for one run of its declared result shape (0 for ops without
/// them): a convolution's outputs times its weights per output, a dense layer's outputs times
/// its inputs per output.
pub fn macs(op: &Operation, operands: &[&TensorType]) -> u64 {
    let Some(out) = op.results.first() else {
        return 0;
    };
    let outputs = out.numel() as u64;
    match op.kind() {
        Some(OpKind::Conv2d | OpKind::QuantConv2d) => match operands.get(1) {
            Some(w) if w.rank() == 4 => outputs * (w.shape[1] * w.shape[2] * w.shape[3]) as u64,
            _ => 0,
        },
        Some(OpKind::Dense | OpKind::QuantDense) => match operands.get(1) {
            Some(w) if w.rank() == 2 => outputs * w.shape[1] as u64,
            _ => 0,
        },
        Some(OpKind::MatMul) => match operands.get(1) {
            Some(b) if b.rank() == 2 => outputs * b.shape[0] as u64,
            _ => 0,
        },
        _ => 0,
    }
}
