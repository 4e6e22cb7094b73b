//! Shape inference shared by the float and integer forms of an op.

use crate::registry::OpCtx;
use crate::types::{ElemType, TensorType};

/// The largest dimension, pad, stride or group count the shape rules accept (keeps every
/// derived size far from overflow).
pub const MAX_DIM: i64 = 1 << 31;

/// Converts a non-negative attribute value to usize, or says which attribute is wrong.
fn dims(values: &[i64], name: &str, len: usize, min: i64) -> Result<Vec<usize>, String> {
    if values.len() != len {
        return Err(format!("'{name}' needs {len} values, got {}", values.len()));
    }
    values
        .iter()
        .map(|&v| {
            if v < min {
                Err(format!("'{name}' values must be >= {min}, got {v}"))
            } else if v > MAX_DIM {
                Err(format!("'{name}' value {v} is too large"))
            } else {
                Ok(v as usize)
            }
        })
        .collect()
}

/// Strides, pads (top, left, bottom, right) and dilations of a 2-D window op.
pub struct Window {
    /// Vertical and horizontal step.
    pub strides: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    /// Vertical and horizontal dilation.
    pub dilations: [usize; 2],
}

impl Window {
    /// Reads `strides`, `pads` and `dilations` with their defaults.
    pub fn from_ctx(ctx: &OpCtx) -> Result<Window, String> {
        let s = dims(&ctx.ints("strides", &[1, 1]), "strides", 2, 1)?;
        let p = dims(&ctx.ints("pads", &[0, 0, 0, 0]), "pads", 4, 0)?;
        let d = dims(&ctx.ints("dilations", &[1, 1]), "dilations", 2, 1)?;
        Ok(Window {
            strides: [s[0], s[1]],
            pads: [p[0], p[1], p[2], p[3]],
            dilations: [d[0], d[1]],
        })
    }

    /// Output height and width for an input of `h`x`w` and a `kh`x`kw` kernel.
    pub fn output(
        &self,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        ceil: bool,
    ) -> Result<(usize, usize), String> {
        let one = |size: usize, k: usize, axis: usize| -> Result<usize, String> {
            let padded = size + self.pads[axis] + self.pads[axis + 2];
            let span = self.dilations[axis] * (k - 1) + 1;
            if k == 0 || padded < span {
                return Err(format!(
                    "the window ({span} after dilation) is larger than the padded input ({padded})"
                ));
            }
            let s = self.strides[axis];
            let mut out = if ceil {
                (padded - span).div_ceil(s) + 1
            } else {
                (padded - span) / s + 1
            };
            // A window may not start in the end padding only.
            if ceil && (out - 1) * s >= size + self.pads[axis] {
                out -= 1;
            }
            Ok(out)
        };
        Ok((one(h, kh, 0)?, one(w, kw, 1)?))
    }
}

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
    let groups = ctx.int("groups", 1);
    if !(1..=MAX_DIM).contains(&groups) {
        return Err(format!("'groups' must be >= 1, got {groups}"));
    }
    let g = groups as usize;
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
    let win = Window::from_ctx(ctx)?;
    let (oh, ow) = win.output(x.shape[2], x.shape[3], w.shape[2], w.shape[3], false)?;
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
    let k = dims(&ctx.ints("kernel", &[]), "kernel", 2, 1)?;
    let win = Window::from_ctx(ctx)?;
    let (oh, ow) = win.output(
        x.shape[2],
        x.shape[3],
        k[0],
        k[1],
        ctx.bool("ceil_mode", false),
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

/// Resolves a possibly negative axis against `rank`.
pub fn axis(value: i64, rank: usize, name: &str) -> Result<usize, String> {
    let r = rank as i64;
    if value < -r || value >= r.max(1) {
        return Err(format!(
            "'{name}' = {value} is out of range for rank {rank}"
        ));
    }
    Ok(if value < 0 {
        (value + r) as usize
    } else {
        value as usize
    })
}

/// Concatenation along `axis`.
pub fn concat(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let first = ctx.operand(0);
    let a = axis(ctx.int("axis", 1), first.rank(), "axis")?;
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
    let a = ctx.int("axis", 1);
    if a < 0 || a as usize > x.rank() {
        return Err(format!(
            "'axis' = {a} is out of range for rank {}",
            x.rank()
        ));
    }
    let a = a as usize;
    Ok(vec![vec![
        x.shape[..a].iter().product(),
        x.shape[a..].iter().product(),
    ]])
}

/// Reshape to the `shape` attribute (all dimensions given).
pub fn reshape(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let x = ctx.operand(0);
    let target = ctx.ints("shape", &[]);
    if let Some(bad) = target.iter().find(|d| **d < 0) {
        return Err(format!("'shape' dimensions must be >= 0, got {bad}"));
    }
    if let Some(big) = target.iter().find(|d| **d > MAX_DIM) {
        return Err(format!("'shape' dimension {big} is too large"));
    }
    let shape: Vec<usize> = target.iter().map(|d| *d as usize).collect();
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
    let default: Vec<i64> = (0..x.rank() as i64).rev().collect();
    let perm = ctx.ints("perm", &default);
    let mut seen = vec![false; x.rank()];
    if perm.len() != x.rank() {
        return Err(format!(
            "'perm' needs {} entries, got {}",
            x.rank(),
            perm.len()
        ));
    }
    let mut out = Vec::with_capacity(perm.len());
    for &p in &perm {
        if p < 0 || p as usize >= x.rank() || seen[p as usize] {
            return Err(format!(
                "'perm' = {perm:?} is not a permutation of 0..{}",
                x.rank()
            ));
        }
        seen[p as usize] = true;
        out.push(x.shape[p as usize]);
    }
    Ok(vec![out])
}

/// Constant padding: `pads` holds every axis' begin, then every axis' end (ONNX order).
pub fn pad(ctx: &OpCtx) -> Result<Vec<Vec<usize>>, String> {
    let x = ctx.operand(0);
    let pads = dims(&ctx.ints("pads", &[]), "pads", 2 * x.rank(), 0)?;
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
