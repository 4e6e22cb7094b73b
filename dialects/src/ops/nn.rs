//! The `nn` dialect: float network ops, NCHW layout.

use super::attrs;
use super::kind::OpKind;
use super::shape::{self, all_f32, same_elem};
use crate::attr::Attr;
use crate::registry::{Arity, AttrKind as K, OpCtx, OpDef, optional, required};

fn const_infer(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    Ok(vec![ctx.result(0).shape.clone()])
}

fn const_verify(ctx: &OpCtx) -> Result<(), String> {
    match (ctx.op.attr("name"), ctx.op.attr("value")) {
        (Some(_), Some(_)) => Err("give either 'name' or 'value', not both".into()),
        (None, None) => Err("needs 'name' (a weight in the module's weights file) or 'value' (an inline dense<...>)".into()),
        (None, Some(Attr::Dense(d))) if d.ty != *ctx.result(0) => Err(format!(
            "the value's type {} differs from the result type {}",
            d.ty,
            ctx.result(0)
        )),
        _ => Ok(()),
    }
}

fn batch_norm_infer(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let x = ctx.operand(0);
    if x.rank() < 2 {
        return Err(format!(
            "the input must have rank >= 2 (channels on axis 1), got {x}"
        ));
    }
    let c = x.shape[1];
    for (i, name) in ["scale", "bias", "mean", "var"].iter().enumerate() {
        let t = ctx.operand(i + 1);
        if t.shape != [c] {
            return Err(format!(
                "'{name}' must be tensor<{c}xf32> (one per channel), got {t}"
            ));
        }
    }
    Ok(vec![x.shape.clone()])
}

fn batch_norm_verify(ctx: &OpCtx) -> Result<(), String> {
    all_f32(ctx)?;
    attrs::epsilon(ctx.op).map(|_| ())
}

/// What a batch norm folded into a conv/dense layer was trained to make of each output channel:
/// `channel_mean` (its bias, beta) and `channel_std` (|its scale|, gamma), recorded by
/// `fold-batchnorm` for data-free bias correction.
const CHANNEL_STATS: [crate::registry::AttrSpec; 2] = [
    optional("channel_mean", K::Floats),
    optional("channel_std", K::Floats),
];

/// A conv/dense layer: f32 operands, and channel statistics (if any) one per output channel.
fn layer_verify(ctx: &OpCtx) -> Result<(), String> {
    all_f32(ctx)?;
    let channels = ctx.result(0).shape.get(1).copied().unwrap_or(1);
    for name in ["channel_mean", "channel_std"] {
        if let Some(v) = ctx.op.attr(name).and_then(crate::Attr::as_floats)
            && v.len() != channels
        {
            return Err(format!(
                "'{name}' has {} values for {channels} output channels",
                v.len()
            ));
        }
    }
    Ok(())
}

fn clip_verify(ctx: &OpCtx) -> Result<(), String> {
    all_f32(ctx)?;
    let bounds = attrs::clip_bounds(ctx.op)?;
    if let Some(h) = &bounds.channel_hi {
        let channels = ctx.operand(0).shape.get(1).copied();
        if channels != Some(h.len()) {
            return Err(format!(
                "'channel_max' has {} bounds for an input of {} channels (axis 1)",
                h.len(),
                channels.map_or("no".to_string(), |c| c.to_string())
            ));
        }
    }
    Ok(())
}

fn axis_verify(ctx: &OpCtx) -> Result<(), String> {
    all_f32(ctx)?;
    attrs::axis(ctx.op, -1, ctx.operand(0).rank()).map(|_| ())
}

fn matmul_infer(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let (a, b) = (ctx.operand(0), ctx.operand(1));
    if a.rank() < 2 {
        return Err(format!("the left operand must have rank >= 2, got {a}"));
    }
    shape::rank(b, 2, "the right operand")?;
    let k = a.shape[a.rank() - 1];
    if k != b.shape[0] {
        return Err(format!("inner dimensions differ: {a} and {b}"));
    }
    let mut out = a.shape.clone();
    *out.last_mut().expect("rank >= 2") = b.shape[1];
    Ok(vec![out])
}

fn pad_verify(ctx: &OpCtx) -> Result<(), String> {
    all_f32(ctx)?;
    attrs::PadAttrs::of(ctx.op, ctx.operand(0).rank()).map(|_| ())
}

const WINDOW: [crate::registry::AttrSpec; 3] = [
    optional("strides", K::Ints),
    optional("pads", K::Ints),
    optional("dilations", K::Ints),
];

/// Every `nn` op.
pub static OPS: &[OpDef] = &[
    OpDef {
        kind: OpKind::Const,
        summary: "a constant tensor: a named weight of the module, or an inline dense value",
        operands: Arity::Exact(0),
        results: 1,
        attrs: &[optional("name", K::Str), optional("value", K::Dense)],
        infer: const_infer,
        verify: const_verify,
    },
    OpDef {
        kind: OpKind::Conv2d,
        summary: "2-D convolution (NCHW input, OIHW weights, optional bias); groups cover depthwise",
        operands: Arity::Range(2, 3),
        results: 1,
        attrs: &[
            WINDOW[0],
            WINDOW[1],
            WINDOW[2],
            optional("groups", K::Int),
            CHANNEL_STATS[0],
            CHANNEL_STATS[1],
        ],
        infer: shape::conv2d,
        verify: layer_verify,
    },
    OpDef {
        kind: OpKind::BatchNorm,
        summary: "inference batch normalization over axis 1: (x - mean) / sqrt(var + epsilon) * scale + bias",
        operands: Arity::Exact(5),
        results: 1,
        attrs: &[optional("epsilon", K::Float)],
        infer: batch_norm_infer,
        verify: batch_norm_verify,
    },
    OpDef {
        kind: OpKind::Relu,
        summary: "max(x, 0)",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[],
        infer: shape::same,
        verify: all_f32,
    },
    OpDef {
        kind: OpKind::Clip,
        summary: "min(max(x, min), max, channel_max[c]); ReLU6 is min = 0, max = 6; channel_max (optional) bounds each channel (axis 1)",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[
            optional("min", K::Float),
            optional("max", K::Float),
            optional("channel_max", K::Floats),
        ],
        infer: shape::same,
        verify: clip_verify,
    },
    OpDef {
        kind: OpKind::Add,
        summary: "elementwise sum with broadcasting",
        operands: Arity::Exact(2),
        results: 1,
        attrs: &[],
        infer: shape::broadcast,
        verify: all_f32,
    },
    OpDef {
        kind: OpKind::Sub,
        summary: "elementwise difference with broadcasting",
        operands: Arity::Exact(2),
        results: 1,
        attrs: &[],
        infer: shape::broadcast,
        verify: all_f32,
    },
    OpDef {
        kind: OpKind::Mul,
        summary: "elementwise product with broadcasting",
        operands: Arity::Exact(2),
        results: 1,
        attrs: &[],
        infer: shape::broadcast,
        verify: all_f32,
    },
    OpDef {
        kind: OpKind::Div,
        summary: "elementwise quotient with broadcasting",
        operands: Arity::Exact(2),
        results: 1,
        attrs: &[],
        infer: shape::broadcast,
        verify: all_f32,
    },
    OpDef {
        kind: OpKind::AvgPool2d,
        summary: "average pooling over kernel windows",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &super::AVG_POOL_ATTRS,
        infer: shape::pool2d,
        verify: all_f32,
    },
    OpDef {
        kind: OpKind::MaxPool2d,
        summary: "max pooling over kernel windows",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &super::MAX_POOL_ATTRS,
        infer: shape::pool2d,
        verify: all_f32,
    },
    OpDef {
        kind: OpKind::GlobalAvgPool,
        summary: "mean over the spatial axes: [N, C, H, W] -> [N, C, 1, 1]",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[],
        infer: shape::global_pool,
        verify: all_f32,
    },
    OpDef {
        kind: OpKind::Dense,
        summary: "fully connected layer: x [N, K] times weight [M, K] transposed, plus optional bias [M]",
        operands: Arity::Range(2, 3),
        results: 1,
        attrs: &CHANNEL_STATS,
        infer: shape::dense,
        verify: layer_verify,
    },
    OpDef {
        kind: OpKind::MatMul,
        summary: "matrix product of x [..., K] and w [K, N]",
        operands: Arity::Exact(2),
        results: 1,
        attrs: &[],
        infer: matmul_infer,
        verify: all_f32,
    },
    OpDef {
        kind: OpKind::Flatten,
        summary: "reshape to 2-D: the dimensions before axis, and those from axis on",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[optional("axis", K::Int)],
        infer: shape::flatten,
        verify: same_elem,
    },
    OpDef {
        kind: OpKind::Reshape,
        summary: "reshape to the given shape (same element count)",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[required("shape", K::Ints)],
        infer: shape::reshape,
        verify: same_elem,
    },
    OpDef {
        kind: OpKind::Transpose,
        summary: "permute the axes",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[optional("perm", K::Ints)],
        infer: shape::transpose,
        verify: same_elem,
    },
    OpDef {
        kind: OpKind::Concat,
        summary: "concatenate along axis",
        operands: Arity::AtLeast(1),
        results: 1,
        attrs: &[optional("axis", K::Int)],
        infer: shape::concat,
        verify: all_f32,
    },
    OpDef {
        kind: OpKind::Softmax,
        summary: "softmax along axis (default -1)",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[optional("axis", K::Int)],
        infer: shape::same,
        verify: axis_verify,
    },
    OpDef {
        kind: OpKind::Pad,
        summary: "pad every axis: pads = all begins then all ends; constant value, reflect or edge",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[
            required("pads", K::Ints),
            optional("value", K::Float),
            optional("mode", K::Str),
        ],
        infer: shape::pad,
        verify: pad_verify,
    },
    OpDef {
        kind: OpKind::Sigmoid,
        summary: "1 / (1 + exp(-x))",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[],
        infer: shape::same,
        verify: all_f32,
    },
    OpDef {
        kind: OpKind::HardSigmoid,
        summary: "max(0, min(1, alpha * x + beta)); alpha 0.2, beta 0.5 by default",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[optional("alpha", K::Float), optional("beta", K::Float)],
        infer: shape::same,
        verify: all_f32,
    },
    OpDef {
        kind: OpKind::HardSwish,
        summary: "x * max(0, min(1, x / 6 + 1 / 2))",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[],
        infer: shape::same,
        verify: all_f32,
    },
];
