//! Elementwise ops: activations, binary ops with broadcasting, batch normalization, softmax.

use qcc_dialects::Tensor;
use qcc_dialects::ops::attrs::ClipBounds;
use rayon::prelude::*;

pub use crate::float::{Activation, Arith};

/// Elements per parallel task of the elementwise kernels.
const GRAIN: usize = 1 << 16;

/// `f` of every element, as a new tensor.
pub fn unary(x: &[f32], shape: &[usize], f: Activation) -> Tensor {
    let mut out = x.to_vec();
    unary_in_place(&mut out, f);
    Tensor::from_f32(shape.to_vec(), out)
}

/// Replaces every element by `f` of it.
pub fn unary_in_place(x: &mut [f32], f: Activation) {
    x.par_chunks_mut(GRAIN).for_each(|chunk| f.apply_to(chunk));
}

/// `nn.clip` with an upper bound per channel (axis 1 of `shape`).
pub fn channel_clip(x: &[f32], shape: &[usize], bounds: &ClipBounds) -> Tensor {
    let channels = shape.get(1).copied().unwrap_or(1).max(1);
    let plane: usize = shape.iter().skip(2).product::<usize>().max(1);
    let mut out = x.to_vec();
    out.par_chunks_mut(plane).enumerate().for_each(|(j, p)| {
        let f = Activation::Clip(bounds.lo as f32, bounds.hi_of(j % channels) as f32);
        p.iter_mut().for_each(|v| *v = f.apply(*v));
    });
    Tensor::from_f32(shape.to_vec(), out)
}

/// `a = f(a, b)` where `b` has `a`'s shape; false (nothing written) when it has not.
pub fn binary_in_place(a: &mut Tensor, b: &Tensor, f: Arith) -> Result<bool, String> {
    if a.shape != b.shape {
        return Ok(false);
    }
    let bv = f32s(b)?;
    let name = a.data.dtype_name();
    let av = a
        .as_f32_mut()
        .ok_or_else(|| format!("expected an f32 tensor, got {name}"))?;
    av.par_chunks_mut(GRAIN)
        .zip(bv.par_chunks(GRAIN))
        .for_each(|(x, y)| x.iter_mut().zip(y).for_each(|(x, y)| *x = f.apply(*x, *y)));
    Ok(true)
}

/// The broadcast shape of two shapes, or an error naming both.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, String> {
    let rank = a.len().max(b.len());
    let mut out = vec![1; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}

/// Element strides of `shape` seen through `out` (0 on broadcast axes).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let offset = out.len() - shape.len();
    let mut strides = vec![0; out.len()];
    let mut s = 1;
    for i in (0..shape.len()).rev() {
        strides[i + offset] = if shape[i] == 1 { 0 } else { s };
        s *= shape[i];
    }
    strides
}

/// `f(a, b)` with numpy broadcasting.
pub fn binary(a: &Tensor, b: &Tensor, f: Arith) -> Result<Tensor, String> {
    let (av, bv) = (f32s(a)?, f32s(b)?);
    if a.shape == b.shape {
        let mut out = a.clone();
        binary_in_place(&mut out, b, f)?;
        return Ok(out);
    }
    let shape = broadcast_shape(&a.shape, &b.shape)?;
    let (sa, sb) = (
        broadcast_strides(&a.shape, &shape),
        broadcast_strides(&b.shape, &shape),
    );
    let n: usize = shape.iter().product();
    let mut data = Vec::with_capacity(n);
    let mut index = vec![0usize; shape.len()];
    let (mut ia, mut ib) = (0usize, 0usize);
    for _ in 0..n {
        data.push(f.apply(av[ia], bv[ib]));
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            ia += sa[d];
            ib += sb[d];
            if index[d] < shape[d] {
                break;
            }
            ia -= sa[d] * shape[d];
            ib -= sb[d] * shape[d];
            index[d] = 0;
        }
    }
    Ok(Tensor::from_f32(shape, data))
}

/// The f32 data of a tensor, or an error.
pub fn f32s(t: &Tensor) -> Result<&[f32], String> {
    t.as_f32()
        .ok_or_else(|| format!("expected an f32 tensor, got {}", t.data.dtype_name()))
}

/// Inference batch normalization over axis 1.
pub fn batch_norm(x: &Tensor, params: [&[f32]; 4], eps: f32) -> Tensor {
    let [gamma, beta, mean, var] = params;
    let c = x.shape[1];
    let inner: usize = x.shape[2..].iter().product();
    let xv = x.as_f32().expect("checked f32");
    let scale = crate::float::batch_norm_scales(&gamma[..c], &var[..c], eps);
    let data = xv
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let ch = (i / inner) % c;
            (v - mean[ch]) * scale[ch] + beta[ch]
        })
        .collect();
    Tensor::from_f32(x.shape.clone(), data)
}

/// Softmax along `axis`: the largest value (NaN ignored), `crate::float::exp` of each value less
/// it, their sum in order from +0.0, each divided by the sum (a NaN result canonical).
pub fn softmax(x: &[f32], shape: &[usize], axis: usize) -> Tensor {
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let outer: usize = shape[..axis].iter().product();
    let mut out = x.to_vec();
    for o in 0..outer {
        for i in 0..inner {
            let at = |k: usize| o * n * inner + k * inner + i;
            let max = (0..n).map(|k| x[at(k)]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for k in 0..n {
                let e = crate::float::exp(x[at(k)] - max);
                out[at(k)] = e;
                sum += e;
            }
            for k in 0..n {
                out[at(k)] = crate::float::canonical_nan(out[at(k)] / sum);
            }
        }
    }
    Tensor::from_f32(shape.to_vec(), out)
}
