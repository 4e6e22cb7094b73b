//! Data movement: transpose, concat and pad.

use qcc_dialects::Tensor;
use qcc_dialects::ops::attrs::PadMode;

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Permutes axes: output axis i is input axis `perm[i]`.
pub fn transpose(x: &[f32], shape: &[usize], perm: &[usize]) -> Tensor {
    let out_shape: Vec<usize> = perm.iter().map(|p| shape[*p]).collect();
    let in_strides = strides(shape);
    let n = x.len();
    let mut out = Vec::with_capacity(n);
    let mut index = vec![0usize; shape.len()];
    for _ in 0..n {
        let src: usize = index
            .iter()
            .zip(perm)
            .map(|(i, p)| i * in_strides[*p])
            .sum();
        out.push(x[src]);
        for d in (0..out_shape.len()).rev() {
            index[d] += 1;
            if index[d] < out_shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Tensor::from_f32(out_shape, out)
}

/// Concatenates along `axis`.
pub fn concat(inputs: &[(&[f32], &[usize])], axis: usize) -> Tensor {
    let mut shape = inputs[0].1.to_vec();
    shape[axis] = inputs.iter().map(|(_, s)| s[axis]).sum();
    let outer: usize = shape[..axis].iter().product();
    let mut out = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for (data, s) in inputs {
            let block: usize = s[axis..].iter().product();
            out.extend_from_slice(&data[o * block..(o + 1) * block]);
        }
    }
    Tensor::from_f32(shape, out)
}

/// Pads every axis by `pads` (all begins, then all ends).
pub fn pad(x: &[f32], shape: &[usize], pads: &[usize], mode: PadMode) -> Tensor {
    let rank = shape.len();
    let out_shape: Vec<usize> = (0..rank)
        .map(|i| shape[i] + pads[i] + pads[i + rank])
        .collect();
    let in_strides = strides(shape);
    let n: usize = out_shape.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut index = vec![0usize; rank];
    for _ in 0..n {
        let mut src = Some(0usize);
        for d in 0..rank {
            let j = mode.source(index[d] as isize - pads[d] as isize, shape[d]);
            src = match (src, j) {
                (Some(s), Some(j)) => Some(s + j * in_strides[d]),
                _ => None,
            };
        }
        out.push(src.map_or(mode.fill(), |s| x[s]));
        for d in (0..rank).rev() {
            index[d] += 1;
            if index[d] < out_shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Tensor::from_f32(out_shape, out)
}
