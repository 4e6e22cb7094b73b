//! Shape inference shared by the float and integer forms of an op.

use crate::registry::OpCtx;
use crate::types::{ElemType, TensorType};

use super::attrs::{self, Conv2dAttrs, Pool2dAttrs};
pub use super::attrs::{MAX_DIM, Window, resolve_axis as axis};

/// Requires `ty` to have `rank` dimensions.
pub fn rank(ty: &TensorType, rank: usize, what: &str) -> Result<(), String> {
    if ty.rank() != rank {
        return Err(format!("{what} must have rank {rank}, got {ty}"));
    }
    Ok(())
}

/// `nn.conv2d` / `quant.conv2d`: NCHW input, OIHW weights, optional bias of O.
pub fn conv2d(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let (x, w) = (ctx.operand(0), ctx.operand(1));
    rank(x, 4, "the input")?;
    rank(w, 4, "the weight")?;
    let conv = Conv2dAttrs::of(ctx.op)?;
    let g = conv.groups;
    let (c, o) = (x.shape[1], w.shape[0]);
    if c % g != 0 || o % g != 0 {
        return Err(format!(
            "groups = {g} must divide both the input channels ({c}) and the output channels ({o})"
        ));
    }
    if w.shape[1] * g != c {
        return Err(format!(
            "the weight {w} expects {} input channels per group, the input has {c} channels in {g} group(s)",
            w.shape[1]
        ));
    }
    if let Some(b) = ctx.operands.get(2)
        && b.shape != [o]
    {
        return Err(format!(
            "the bias must be tensor<{o}x...> (one per output channel), got {b}"
        ));
    }
    let (oh, ow) = conv
        .window
        .output(x.shape[2], x.shape[3], w.shape[2], w.shape[3], false)?;
    Ok(vec![vec![x.shape[0], o, oh, ow]])
}

/// `dense`: x [N, K], w [M, K], optional bias [M] -> [N, M].
pub fn dense(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let (x, w) = (ctx.operand(0), ctx.operand(1));
    rank(x, 2, "the input")?;
    rank(w, 2, "the weight")?;
    if x.shape[1] != w.shape[1] {
        return Err(format!(
            "the input has {} features, the weight {w} expects {}",
            x.shape[1], w.shape[1]
        ));
    }
    if let Some(b) = ctx.operands.get(2)
        && b.shape != [w.shape[0]]
    {
        return Err(format!(
            "the bias must be tensor<{}x...> (one per output), got {b}",
            w.shape[0]
        ));
    }
    Ok(vec![vec![x.shape[0], w.shape[0]]])
}

/// A pooling window: `kernel`, `strides`, `pads`, `ceil_mode`.
pub fn pool2d(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let x = ctx.operand(0);
    rank(x, 4, "the input")?;
    let pool = Pool2dAttrs::of(ctx.op)?;
    let (oh, ow) = pool.window.output(
        x.shape[2],
        x.shape[3],
        pool.kernel[0],
        pool.kernel[1],
        pool.ceil_mode,
    )?;
    Ok(vec![vec![x.shape[0], x.shape[1], oh, ow]])
}

/// Global average pooling: [N, C, H, W] -> [N, C, 1, 1].
pub fn global_pool(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let x = ctx.operand(0);
    rank(x, 4, "the input")?;
    Ok(vec![vec![x.shape[0], x.shape[1], 1, 1]])
}

/// The result has the shape of the first operand.
pub fn same(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    Ok(vec![ctx.operand(0).shape.clone()])
}

/// Numpy-style broadcasting of every operand.
pub fn broadcast(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let rank = ctx.operands.iter().map(|t| t.rank()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for t in &ctx.operands {
        let offset = rank - t.rank();
        for (i, &d) in t.shape.iter().enumerate() {
            let o = &mut out[offset + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                let shapes: Vec<String> = ctx.operands.iter().map(|t| t.to_string()).collect();
                return Err(format!(
                    "operand shapes do not broadcast: {}",
                    shapes.join(", ")
                ));
            }
        }
    }
    Ok(vec![out])
}

/// Concatenation along `axis`.
pub fn concat(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let first = ctx.operand(0);
    let a = attrs::axis(ctx.op, 1, first.rank())?;
    let mut out = first.shape.clone();
    out[a] = 0;
    for t in &ctx.operands {
        if t.rank() != first.rank()
            || t.shape
                .iter()
                .enumerate()
                .any(|(i, d)| i != a && *d != first.shape[i])
        {
            return Err(format!(
                "operands must agree on every dimension but axis {a}: {first} and {t}"
            ));
        }
        out[a] += t.shape[a];
    }
    Ok(vec![out])
}

/// Flatten to 2-D at `axis`.
pub fn flatten(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let x = ctx.operand(0);
    let a = attrs::flatten_axis(ctx.op, x.rank())?;
    Ok(vec![vec![
        x.shape[..a].iter().product(),
        x.shape[a..].iter().product(),
    ]])
}

/// Reshape to the `shape` attribute (all dimensions given).
pub fn reshape(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let x = ctx.operand(0);
    let shape = attrs::reshape_target(ctx.op)?;
    let count = shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d));
    if count != Some(x.numel()) {
        return Err(format!(
            "cannot reshape {x} ({} elements) to {:?}",
            x.numel(),
            shape
        ));
    }
    Ok(vec![shape])
}

/// Transpose by `perm`.
pub fn transpose(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let x = ctx.operand(0);
    let out = attrs::perm(ctx.op, x.rank())?
        .into_iter()
        .map(|p| x.shape[p])
        .collect();
    Ok(vec![out])
}

/// Constant padding: `pads` holds every axis' begin, then every axis' end (ONNX order).
pub fn pad(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let x = ctx.operand(0);
    let pads = attrs::PadAttrs::of(ctx.op, x.rank())?.pads;
    Ok(vec![
        x.shape
            .iter()
            .enumerate()
            .map(|(i, d)| d + pads[i] + pads[i + x.rank()])
            .collect(),
    ])
}

/// Requires every operand and result to be f32.
pub fn all_f32(ctx: &OpCtx) -> Result<(), String> {
    for (i, t) in ctx.operands.iter().enumerate() {
        if t.elem != ElemType::F32 {
            return Err(format!("operand #{i} must be f32, got {t}"));
        }
    }
    for (i, t) in ctx.op.results.iter().enumerate() {
        if t.elem != ElemType::F32 {
            return Err(format!("result #{i} must be f32, got {t}"));
        }
    }
    Ok(())
}

/// Requires every operand and the result to share one element type.
pub fn same_elem(ctx: &OpCtx) -> Result<(), String> {
    let elem = &ctx.op.results[0].elem;
    for (i, t) in ctx.operands.iter().enumerate() {
        if &t.elem != elem {
            return Err(format!(
                "operand #{i} has element type {}, the result {}",
                t.elem, elem
            ));
        }
    }
    Ok(())
}
