//! The `quant` dialect: quantize/dequantize and the integer forms of the compute ops. Their
//! integer semantics (accumulation, requantization, rounding) are stated in `docs/quantization.md`.

use super::kind::OpKind;
use super::shape;
use crate::registry::{Arity, AttrKind as K, AttrSpec, OpCtx, OpDef, optional};
use crate::types::{ElemType, QuantParams, QuantType, Storage, TensorType};

fn quant_of<'a>(t: &'a TensorType, what: &str) -> Result<&'a QuantType, String> {
    t.elem
        .quant()
        .ok_or_else(|| format!("{what} must have a !quant.uniform element type, got {t}"))
}

/// A per-tensor u8/i8 activation.
fn activation(t: &TensorType, what: &str) -> Result<(), String> {
    let q = quant_of(t, what)?;
    if !matches!(q.params, QuantParams::PerTensor { .. }) || q.storage == Storage::I32 {
        return Err(format!(
            "{what} must be a per-tensor u8 or i8 quantized tensor, got {t}"
        ));
    }
    Ok(())
}

/// An i8 weight, per tensor or per output channel (axis 0).
fn weight(t: &TensorType) -> Result<(), String> {
    let q = quant_of(t, "the weight")?;
    if q.storage != Storage::I8 {
        return Err(format!("the weight must be stored as i8, got {t}"));
    }
    if let QuantParams::PerAxis { axis, .. } = q.params
        && axis != 0
    {
        return Err(format!(
            "per-axis weights must be quantized along axis 0 (output channels), got axis {axis}"
        ));
    }
    Ok(())
}

/// An i32 bias, plain or quantized with zero point 0.
fn bias(t: &TensorType) -> Result<(), String> {
    match &t.elem {
        ElemType::I32 => Ok(()),
        ElemType::Quant(q) if q.storage == Storage::I32 => Ok(()),
        _ => Err(format!(
            "the bias must be i32 (at scale input x weight), got {t}"
        )),
    }
}

/// `clamp = [lo, hi]` lies in the result's storage range.
fn clamp(ctx: &OpCtx) -> Result<(), String> {
    let storage = quant_of(ctx.result(0), "the result")?.storage;
    let (lo, hi) = storage.range();
    match super::attrs::clamp(ctx.op) {
        Ok(None) => Ok(()),
        Ok(Some([a, b])) if lo <= a && b <= hi => Ok(()),
        _ => Err(format!(
            "'clamp' must be [lo, hi] with {lo} <= lo <= hi <= {hi}, got {:?}",
            ctx.op
                .attr("clamp")
                .and_then(crate::Attr::as_ints)
                .unwrap_or_default()
        )),
    }
}

fn layer_verify(ctx: &OpCtx) -> Result<(), String> {
    activation(ctx.operand(0), "the input")?;
    weight(ctx.operand(1))?;
    if let Some(b) = ctx.operands.get(2) {
        bias(b)?;
    }
    activation(ctx.result(0), "the result")?;
    clamp(ctx)?;
    channel_clamp(ctx)
}

/// `channel_max` has one bound per output channel (axis 1), each within the clamp.
fn channel_clamp(ctx: &OpCtx) -> Result<(), String> {
    let Some(h) = super::attrs::channel_clamp(ctx.op)? else {
        return Ok(());
    };
    let channels = ctx.result(0).shape.get(1).copied().unwrap_or(1);
    if h.len() != channels {
        return Err(format!(
            "'channel_max' has {} bounds for {channels} output channels",
            h.len()
        ));
    }
    let (lo, hi) = match super::attrs::clamp(ctx.op)? {
        Some([lo, hi]) => (lo, hi),
        None => quant_of(ctx.result(0), "the result")?.storage.range(),
    };
    match h.iter().enumerate().find(|(_, v)| !(lo..=hi).contains(*v)) {
        Some((c, v)) => Err(format!(
            "'channel_max' of channel {c} ({v}) must lie in the clamp [{lo}, {hi}]"
        )),
        None => Ok(()),
    }
}

fn activations_verify(ctx: &OpCtx) -> Result<(), String> {
    for (i, t) in ctx.operands.iter().enumerate() {
        activation(t, &format!("operand #{i}"))?;
    }
    activation(ctx.result(0), "the result")?;
    clamp(ctx)
}

fn same_type_verify(ctx: &OpCtx) -> Result<(), String> {
    activation(ctx.operand(0), "the input")?;
    if ctx.operand(0).elem != ctx.result(0).elem {
        return Err(format!(
            "the result keeps the input's quantization: expected element type {}, got {}",
            ctx.operand(0).elem,
            ctx.result(0).elem
        ));
    }
    Ok(())
}

fn quantize_verify(ctx: &OpCtx) -> Result<(), String> {
    if ctx.operand(0).elem != ElemType::F32 {
        return Err(format!("the input must be f32, got {}", ctx.operand(0)));
    }
    quant_of(ctx.result(0), "the result").map(|_| ())
}

fn dequantize_verify(ctx: &OpCtx) -> Result<(), String> {
    quant_of(ctx.operand(0), "the input")?;
    if ctx.result(0).elem != ElemType::F32 {
        return Err(format!("the result must be f32, got {}", ctx.result(0)));
    }
    Ok(())
}

const LAYER_ATTRS: [AttrSpec; 7] = [
    optional("strides", K::Ints),
    optional("pads", K::Ints),
    optional("dilations", K::Ints),
    optional("groups", K::Int),
    optional("clamp", K::Ints),
    optional("channel_max", K::Ints),
    optional("bias_shift", K::Floats),
];

/// Every `quant` op.
pub static OPS: &[OpDef] = &[
    OpDef {
        kind: OpKind::Quantize,
        summary: "f32 to a quantized type: clamp(round(x / scale) + zero_point)",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[],
        infer: shape::same,
        verify: quantize_verify,
    },
    OpDef {
        kind: OpKind::Dequantize,
        summary: "a quantized type to f32: scale * (q - zero_point)",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[],
        infer: shape::same,
        verify: dequantize_verify,
    },
    OpDef {
        kind: OpKind::QuantConv2d,
        summary: "integer convolution: i32 accumulation, f32 requantization, clamp",
        operands: Arity::Range(2, 3),
        results: 1,
        attrs: &LAYER_ATTRS,
        infer: shape::conv2d,
        verify: layer_verify,
    },
    OpDef {
        kind: OpKind::QuantDense,
        summary: "integer fully connected layer: i32 accumulation, f32 requantization, clamp",
        operands: Arity::Range(2, 3),
        results: 1,
        attrs: &[
            optional("clamp", K::Ints),
            optional("channel_max", K::Ints),
            optional("bias_shift", K::Floats),
        ],
        infer: shape::dense,
        verify: layer_verify,
    },
    OpDef {
        kind: OpKind::QuantAdd,
        summary: "integer add: each input rescaled to the output scale, then summed and clamped",
        operands: Arity::Exact(2),
        results: 1,
        attrs: &[optional("clamp", K::Ints)],
        infer: shape::broadcast,
        verify: activations_verify,
    },
    OpDef {
        kind: OpKind::QuantAvgPool2d,
        summary: "integer average pooling with rounding and rescale",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &super::AVG_POOL_ATTRS,
        infer: shape::pool2d,
        verify: activations_verify,
    },
    OpDef {
        kind: OpKind::QuantMaxPool2d,
        summary: "integer max pooling; the result keeps the input's scale and zero point",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &super::MAX_POOL_ATTRS,
        infer: shape::pool2d,
        verify: same_type_verify,
    },
    OpDef {
        kind: OpKind::QuantGlobalAvgPool,
        summary: "integer mean over the spatial axes with rounding and rescale",
        operands: Arity::Exact(1),
        results: 1,
        attrs: &[],
        infer: shape::global_pool,
        verify: activations_verify,
    },
    OpDef {
        kind: OpKind::QuantConcat,
        summary: "integer concatenation, each input rescaled to the output scale",
        operands: Arity::AtLeast(1),
        results: 1,
        attrs: &[optional("axis", K::Int)],
        infer: shape::concat,
        verify: activations_verify,
    },
];
