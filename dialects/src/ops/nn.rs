//! The `nn` dialect: float network ops, NCHW layout.

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
    let eps = ctx.float("epsilon", 1e-5);
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(format!("'epsilon' must be finite and >= 0, got {eps:?}"));
    }
    Ok(())
}

fn clip_verify(ctx: &OpCtx) -> Result<(), String> {
    all_f32(ctx)?;
    let (lo, hi) = (
        ctx.float("min", f64::NEG_INFINITY),
        ctx.float("max", f64::INFINITY),
    );
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return Err(format!("'min' ({lo:?}) must not exceed 'max' ({hi:?})"));
    }
    Ok(())
}

fn axis_verify(ctx: &OpCtx) -> Result<(), String> {
    all_f32(ctx)?;
    shape::axis(ctx.int("axis", -1), ctx.operand(0).rank(), "axis").map(|_| ())
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
    match ctx
        .op
        .attr("mode")
        .and_then(Attr::as_str)
        .unwrap_or("constant")
    {
        "constant" | "reflect" | "edge" => Ok(()),
        other => Err(format!(
            "'mode' must be constant, reflect or edge, got \"{other}\""
        )),
    }
}

const WINDOW: [crate::registry::AttrSpec; 3] = [
    optional("strides", K::Ints),
    optional("pads", K::Ints),
    optional("dilations", K::Ints),
];

/// Every `nn` op.
pub static OPS: &[OpDef] = &[
    OpDef {
        name: "nn.const",
        summary: "a constant tensor: a named weight of the module, or an inline dense value",
        operands: Arity::Exact(0),
        results: 1,
        attrs: &[optional("name", K::Str), optional("value", K::Dense)],
        infer: const_infer,
        verify: const_verify,
    },
    OpDef {
        name: "nn.conv2d",
        summary: "2-D convolution (NCHW input, OIHW weights, optional bias); groups cover depthwise",
        operands: Arity::Range(2, 3),
        results: 1,
        attrs: &[WINDOW[0], WINDOW[1], WINDOW[2], optional("groups", K::Int)],
        infer: shape::conv2d,
        verify: all_f32,
    },
    OpDef {
        name: "nn.batch_norm",
        summary: "inference batch normalization over axis 1: (x - mean) / sqrt(var + epsilon) * scale + bias",
        operands: Arity::Exact(5),
        results: 1,
        attrs: &[optional("epsilon", K::Float)],
        infer: batch_norm_infer,
        verify: batch_norm_verify,
    },
    OpDef {
        name: "nn.relu",
        summary: "max(x, 0)",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[],
        infer: shape::same,
        verify: all_f32,
    },
    OpDef {
        name: "nn.clip",
        summary: "min(max(x, min), max); ReLU6 is min = 0, max = 6",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[optional("min", K::Float), optional("max", K::Float)],
        infer: shape::same,
        verify: clip_verify,
    },
    OpDef {
        name: "nn.add",
        summary: "elementwise sum with broadcasting",
        operands: Arity::Exact(2),
        results: 1,
        attrs: &[],
        infer: shape::broadcast,
        verify: all_f32,
    },
    OpDef {
        name: "nn.sub",
        summary: "elementwise difference with broadcasting",
        operands: Arity::Exact(2),
        results: 1,
        attrs: &[],
        infer: shape::broadcast,
        verify: all_f32,
    },
    OpDef {
        name: "nn.mul",
        summary: "elementwise product with broadcasting",
        operands: Arity::Exact(2),
        results: 1,
        attrs: &[],
        infer: shape::broadcast,
        verify: all_f32,
    },
    OpDef {
        name: "nn.div",
        summary: "elementwise quotient with broadcasting",
        operands: Arity::Exact(2),
        results: 1,
        attrs: &[],
        infer: shape::broadcast,
        verify: all_f32,
    },
    OpDef {
        name: "nn.avg_pool2d",
        summary: "average pooling over kernel windows",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &super::AVG_POOL_ATTRS,
        infer: shape::pool2d,
        verify: all_f32,
    },
    OpDef {
        name: "nn.max_pool2d",
        summary: "max pooling over kernel windows",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &super::MAX_POOL_ATTRS,
        infer: shape::pool2d,
        verify: all_f32,
    },
    OpDef {
        name: "nn.global_avg_pool",
        summary: "mean over the spatial axes: [N, C, H, W] -> [N, C, 1, 1]",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[],
        infer: shape::global_pool,
        verify: all_f32,
    },
    OpDef {
        name: "nn.dense",
        summary: "fully connected layer: x [N, K] times weight [M, K] transposed, plus optional bias [M]",
        operands: Arity::Range(2, 3),
        results: 1,
        attrs: &[],
        infer: shape::dense,
        verify: all_f32,
    },
    OpDef {
        name: "nn.matmul",
        summary: "matrix product of x [..., K] and w [K, N]",
        operands: Arity::Exact(2),
        results: 1,
        attrs: &[],
        infer: matmul_infer,
        verify: all_f32,
    },
    OpDef {
        name: "nn.flatten",
        summary: "reshape to 2-D: the dimensions before axis, and those from axis on",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[optional("axis", K::Int)],
        infer: shape::flatten,
        verify: same_elem,
    },
    OpDef {
        name: "nn.reshape",
        summary: "reshape to the given shape (same element count)",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[required("shape", K::Ints)],
        infer: shape::reshape,
        verify: same_elem,
    },
    OpDef {
        name: "nn.transpose",
        summary: "permute the axes",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[optional("perm", K::Ints)],
        infer: shape::transpose,
        verify: same_elem,
    },
    OpDef {
        name: "nn.concat",
        summary: "concatenate along axis",
        operands: Arity::AtLeast(1),
        results: 1,
        attrs: &[optional("axis", K::Int)],
        infer: shape::concat,
        verify: all_f32,
    },
    OpDef {
        name: "nn.softmax",
        summary: "softmax along axis (default -1)",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[optional("axis", K::Int)],
        infer: shape::same,
        verify: axis_verify,
    },
    OpDef {
        name: "nn.pad",
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
        name: "nn.sigmoid",
        summary: "1 / (1 + exp(-x))",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[],
        infer: shape::same,
        verify: all_f32,
    },
    OpDef {
        name: "nn.hardsigmoid",
        summary: "max(0, min(1, alpha * x + beta)); alpha 0.2, beta 0.5 by default",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[optional("alpha", K::Float), optional("beta", K::Float)],
        infer: shape::same,
        verify: all_f32,
    },
    OpDef {
        name: "nn.hardswish",
        summary: "x * max(0, min(1, x / 6 + 1 / 2))",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[],
        infer: shape::same,
        verify: all_f32,
    },
];
