//! Integer kernels of the `quant` ops. Accumulation is exact in i32 (convolutions through an f32
//! GEMM cut into chunks whose sums of integer products stay exact), requantization goes through
//! [`Multiplier`], and every result saturates to its storage range.

use qcc_dialects::{Tensor, TensorType};
use rayon::prelude::*;

use super::gemm::exact_int_gemm;
use super::layers::{conv_output, depthwise_plane, im2col};
use crate::pooling::PoolGeometry;
use crate::quant::{
    AddLevels, Multiplier, Requant, avg_multiplier, check_accumulator, magnitude,
    per_tensor_params, store, stored_ints,
};
use qcc_dialects::ops::attrs::Conv2dAttrs;

/// The operands of an integer conv2d or dense layer.
pub struct LayerOperands<'a> {
    /// Input activations and their type.
    pub x: (&'a Tensor, &'a TensorType),
    /// Weights (i8) and their type.
    pub w: (&'a Tensor, &'a TensorType),
    /// Optional i32 bias.
    pub bias: Option<&'a Tensor>,
    /// Result type.
    pub out: &'a TensorType,
}

/// The i32 bias of a layer with `channels` outputs (zeros without one).
fn layer_bias(ops: &LayerOperands, channels: usize) -> Vec<i64> {
    ops.bias.map_or(vec![0; channels], |b| {
        stored_ints(b).into_iter().map(i64::from).collect()
    })
}

/// `quant.conv2d`, requantized by `rq` (prepared from the layer's types and clamp).
pub fn conv2d(ops: &LayerOperands, g: &Conv2dAttrs, rq: &Requant) -> Result<Tensor, String> {
    let (acc, shape) = conv2d_accumulators((ops.x.0, ops.x.1), ops.w.0, g)?;
    let bias = layer_bias(ops, shape[1]);
    let plane = shape[2] * shape[3];
    Ok(rq.requantize(&acc, &bias, plane, ops.out, shape))
}

/// The exact accumulators `sum (x - Z_x) * w` of an integer convolution (no bias), `[N, O, OH, OW]`.
pub fn conv2d_accumulators(
    xq: (&Tensor, &TensorType),
    w: &Tensor,
    g: &Conv2dAttrs,
) -> Result<(Vec<i32>, Vec<usize>), String> {
    let x = xq.0;
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (o, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3]);
    let (_, zx, _) = per_tensor_params(xq.1, "the input")?;
    let (oh, ow) = conv_output(g, h, wd, kh, kw);
    let plane = oh * ow;
    let og = o / g.groups;
    let xs: Vec<i32> = stored_ints(x).into_iter().map(|v| v - zx as i32).collect();
    let ws = stored_ints(w);
    let (max_x, max_w) = (magnitude(&xs), magnitude(&ws));
    let kdim = cg * kh * kw;
    check_accumulator(kdim, max_x, max_w)?;
    let wf: Vec<f32> = ws.iter().map(|v| *v as f32).collect();
    let depthwise = cg == 1 && og == 1;
    let pointwise = kh == 1 && kw == 1 && g.window.strides == [1, 1] && g.window.pads == [0; 4];
    let mut out = vec![0i32; n * o * plane];
    out.par_chunks_mut(o * plane)
        .enumerate()
        .for_each(|(b, image)| {
            let xin = &xs[b * c * h * wd..(b + 1) * c * h * wd];
            if depthwise {
                for ch in 0..o {
                    let k = &ws[ch * kh * kw..(ch + 1) * kh * kw];
                    depthwise_plane(
                        &xin[ch * h * wd..(ch + 1) * h * wd],
                        h,
                        wd,
                        k,
                        kh,
                        kw,
                        g,
                        &mut image[ch * plane..(ch + 1) * plane],
                        ow,
                    );
                }
                return;
            }
            let xf: Vec<f32> = xin.iter().map(|v| *v as f32).collect();
            let mut cols = if pointwise {
                Vec::new()
            } else {
                vec![0f32; kdim * plane]
            };
            let mut scratch = Vec::new();
            for grp in 0..g.groups {
                let xg = &xf[grp * cg * h * wd..(grp + 1) * cg * h * wd];
                let b_mat: &[f32] = if pointwise {
                    xg
                } else {
                    im2col(xg, cg, h, wd, kh, kw, g, oh, ow, &mut cols);
                    &cols
                };
                exact_int_gemm(
                    [og, kdim, plane],
                    (&wf[grp * og * kdim..(grp + 1) * og * kdim], max_w),
                    (b_mat, max_x),
                    &mut image[grp * og * plane..(grp + 1) * og * plane],
                    &mut scratch,
                );
            }
        });
    Ok((out, vec![n, o, oh, ow]))
}

/// `quant.dense`: x [N, K] and w [M, K].
pub fn dense(ops: &LayerOperands, rq: &Requant) -> Result<Tensor, String> {
    let (acc, shape) = dense_accumulators((ops.x.0, ops.x.1), ops.w.0)?;
    let bias = layer_bias(ops, shape[1]);
    Ok(rq.requantize(&acc, &bias, 1, ops.out, shape))
}

/// The exact accumulators `sum (x - Z_x) * w` of an integer dense layer (no bias), `[N, M]`.
pub fn dense_accumulators(
    xq: (&Tensor, &TensorType),
    w: &Tensor,
) -> Result<(Vec<i32>, Vec<usize>), String> {
    let x = xq.0;
    let (n, k, m) = (x.shape[0], x.shape[1], w.shape[0]);
    let (_, zx, _) = per_tensor_params(xq.1, "the input")?;
    let xs: Vec<i32> = stored_ints(x).into_iter().map(|v| v - zx as i32).collect();
    let ws = stored_ints(w);
    check_accumulator(k, magnitude(&xs), magnitude(&ws))?;
    let mut out = vec![0i32; n * m];
    out.par_chunks_mut(m.max(1))
        .zip(xs.par_chunks(k.max(1)))
        .for_each(|(row, x)| {
            for (o, w) in row.iter_mut().zip(ws.chunks(k.max(1))) {
                *o = x.iter().zip(w).map(|(a, b)| a * b).sum();
            }
        });
    Ok((out, vec![n, m]))
}

/// `quant.add` with broadcasting of equal-rank shapes: each input is rescaled to twice the larger
/// input scale, summed, then rescaled to the output.
pub fn add(
    a: (&Tensor, &TensorType),
    b: (&Tensor, &TensorType),
    out: &TensorType,
    out_shape: &[usize],
    clamp: Option<[i64; 2]>,
) -> Result<Tensor, String> {
    let levels = AddLevels::new(a.1, b.1, out, clamp)?;
    let (av, bv) = (stored_ints(a.0), stored_ints(b.0));
    let n: usize = out_shape.iter().product();
    let index = |shape: &[usize], i: usize| -> usize {
        // Broadcast index of flat output position i into `shape` (same rank or lower).
        let offset = out_shape.len() - shape.len();
        let (mut rem, mut idx, mut stride) = (i, 0, 1);
        for d in (0..out_shape.len()).rev() {
            let coord = rem % out_shape[d];
            rem /= out_shape[d];
            if d >= offset {
                let dim = shape[d - offset];
                idx += if dim == 1 { 0 } else { coord * stride };
                stride *= dim;
            }
        }
        idx
    };
    let same = a.0.shape == out_shape && b.0.shape == out_shape;
    let values = (0..n)
        .map(|i| {
            let (x, y) = if same {
                (av[i], bv[i])
            } else {
                (av[index(&a.0.shape, i)], bv[index(&b.0.shape, i)])
            };
            levels.level(x as i64, y as i64)
        })
        .collect();
    Ok(store(values, out, out_shape.to_vec()))
}

/// Integer average pooling: the window sum of `x - z_x`, rescaled by `s_x / (count * s_y)`.
pub fn avg_pool2d(
    x: (&Tensor, &TensorType),
    out: &TensorType,
    g: &PoolGeometry,
) -> Result<Tensor, String> {
    let (sx, zx, _) = per_tensor_params(x.1, "the input")?;
    let (sy, zy, range) = per_tensor_params(out, "the result")?;
    let (n, c, h, w) = (x.0.shape[0], x.0.shape[1], x.0.shape[2], x.0.shape[3]);
    let [oh, ow] = g.out;
    let xs = stored_ints(x.0);
    let mut mults: std::collections::HashMap<usize, Multiplier> = std::collections::HashMap::new();
    let mut values = Vec::with_capacity(n * c * oh * ow);
    for plane in xs.chunks_exact(h * w).take(n * c) {
        for y in 0..oh {
            for xo in 0..ow {
                let sum = g.sum((y, xo), (h, w), |i| plane[i] as i64 - zx);
                let d = g.divisor(y, xo, h, w);
                let m = *mults.entry(d).or_insert_with(|| avg_multiplier(sx, sy, d));
                values.push((zy + m.apply(sum)).clamp(range.0, range.1));
            }
        }
    }
    Ok(store(values, out, vec![n, c, oh, ow]))
}

/// Integer global average pooling.
pub fn global_avg_pool(x: (&Tensor, &TensorType), out: &TensorType) -> Result<Tensor, String> {
    let (sx, zx, _) = per_tensor_params(x.1, "the input")?;
    let (sy, zy, range) = per_tensor_params(out, "the result")?;
    let hw = x.0.shape[2] * x.0.shape[3];
    let m = Multiplier::new(sx / (hw as f64 * sy));
    let values = stored_ints(x.0)
        .chunks_exact(hw)
        .map(|p| (zy + m.apply(p.iter().map(|v| *v as i64 - zx).sum())).clamp(range.0, range.1))
        .collect();
    Ok(store(values, out, vec![x.0.shape[0], x.0.shape[1], 1, 1]))
}

/// Integer max pooling: the maximum stored value (the type passes through).
pub fn max_pool2d(x: &Tensor, ty: &TensorType, g: &PoolGeometry) -> Tensor {
    let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let [oh, ow] = g.out;
    let xs = stored_ints(x);
    let mut values = Vec::with_capacity(n * c * oh * ow);
    for plane in xs.chunks_exact(h * w).take(n * c) {
        for y in 0..oh {
            for xo in 0..ow {
                let mut best = i64::MIN;
                for iy in g.taps(0, y, h).positions() {
                    for ix in g.taps(1, xo, w).positions() {
                        best = best.max(plane[iy * w + ix] as i64);
                    }
                }
                values.push(best);
            }
        }
    }
    store(values, ty, vec![n, c, oh, ow])
}

/// Integer concatenation: each input rescaled to the output's scale and zero point.
pub fn concat(
    inputs: &[(&Tensor, &TensorType)],
    out: &TensorType,
    axis: usize,
) -> Result<Tensor, String> {
    let (sy, zy, range) = per_tensor_params(out, "the result")?;
    let mut shape = inputs[0].0.shape.clone();
    shape[axis] = inputs.iter().map(|(t, _)| t.shape[axis]).sum();
    let outer: usize = shape[..axis].iter().product();
    let rescaled: Vec<Vec<i64>> = inputs
        .iter()
        .map(|(t, ty)| {
            let (s, z, _) = per_tensor_params(ty, "every operand")?;
            let m = Multiplier::new(s / sy);
            let identity = s == sy && z == zy;
            Ok(stored_ints(t)
                .into_iter()
                .map(|v| {
                    if identity {
                        v as i64
                    } else {
                        (zy + m.apply(v as i64 - z)).clamp(range.0, range.1)
                    }
                })
                .collect())
        })
        .collect::<Result<_, String>>()?;
    let mut values = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for ((t, _), v) in inputs.iter().zip(&rescaled) {
            let block: usize = t.shape[axis..].iter().product();
            values.extend_from_slice(&v[o * block..(o + 1) * block]);
        }
    }
    Ok(store(values, out, shape))
}
