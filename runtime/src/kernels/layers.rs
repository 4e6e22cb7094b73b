//! Layers with weights: 2-D convolution (any groups), dense and matmul. Images of a batch run in
//! parallel; dense convolutions are an im2col and a GEMM, depthwise ones a direct loop.

use qcc_dialects::Tensor;
use qcc_dialects::ops::attrs::Conv2dAttrs;
use rayon::prelude::*;

use super::gemm::sgemm;
use crate::float::{DENSE_BLOCK, canonical_nan, dense_by_blocks, dot};

/// Output height and width of convolution `g` over an `h` x `w` input with a `kh` x `kw` kernel
/// (the verifier has checked that the window fits).
pub fn conv_output(g: &Conv2dAttrs, h: usize, w: usize, kh: usize, kw: usize) -> (usize, usize) {
    let one = |size: usize, k: usize, axis: usize| {
        let span = g.window.dilations[axis] * k.saturating_sub(1) + 1;
        (size + g.window.pads[axis] + g.window.pads[axis + 2]).saturating_sub(span)
            / g.window.strides[axis].max(1)
            + 1
    };
    (one(h, kh, 0), one(w, kw, 1))
}

fn is_pointwise(g: &Conv2dAttrs, kh: usize, kw: usize) -> bool {
    kh == 1 && kw == 1 && g.window.strides == [1, 1] && g.window.pads == [0; 4]
}

/// Unrolls the windows of `channels` input planes into rows of `[c * kh * kw, oh * ow]`.
#[allow(clippy::too_many_arguments)]
pub fn im2col<T: Copy + Default>(
    x: &[T],
    channels: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    g: &Conv2dAttrs,
    oh: usize,
    ow: usize,
    cols: &mut [T],
) {
    for c in 0..channels {
        let plane = &x[c * h * w..(c + 1) * h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &mut cols[((c * kh + ky) * kw + kx) * oh * ow..][..oh * ow];
                let dy = (ky * g.window.dilations[0]) as isize - g.window.pads[0] as isize;
                let dx = (kx * g.window.dilations[1]) as isize - g.window.pads[1] as isize;
                for y in 0..oh {
                    let iy = (y * g.window.strides[0]) as isize + dy;
                    let out = &mut row[y * ow..(y + 1) * ow];
                    if iy < 0 || iy >= h as isize {
                        out.fill(T::default());
                        continue;
                    }
                    let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                    for (xo, v) in out.iter_mut().enumerate() {
                        let ix = (xo * g.window.strides[1]) as isize + dx;
                        *v = if ix >= 0 && ix < w as isize {
                            src[ix as usize]
                        } else {
                            T::default()
                        };
                    }
                }
            }
        }
    }
}

/// One channel of a depthwise convolution, tap by tap over the output plane.
#[allow(clippy::too_many_arguments)]
pub fn depthwise_plane<T: Copy + std::ops::Mul<Output = T> + std::ops::AddAssign>(
    plane: &[T],
    h: usize,
    w: usize,
    k: &[T],
    kh: usize,
    kw: usize,
    g: &Conv2dAttrs,
    out: &mut [T],
    ow: usize,
) {
    let oh = out.len() / ow;
    for ky in 0..kh {
        for kx in 0..kw {
            let wv = k[ky * kw + kx];
            let dy = (ky * g.window.dilations[0]) as isize - g.window.pads[0] as isize;
            let dx = (kx * g.window.dilations[1]) as isize - g.window.pads[1] as isize;
            // Output columns whose input column is inside the plane.
            let first = if dx < 0 {
                ((-dx) as usize).div_ceil(g.window.strides[1])
            } else {
                0
            };
            let last = if (w as isize - dx) <= 0 {
                0
            } else {
                (((w as isize - dx - 1) as usize) / g.window.strides[1] + 1).min(ow)
            };
            for y in 0..oh {
                let iy = (y * g.window.strides[0]) as isize + dy;
                if iy < 0 || iy >= h as isize {
                    continue;
                }
                if first >= last {
                    continue;
                }
                let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                let dst = &mut out[y * ow + first..y * ow + last];
                let start = ((first * g.window.strides[1]) as isize + dx) as usize;
                if g.window.strides[1] == 1 {
                    for (d, s) in dst.iter_mut().zip(&src[start..]) {
                        *d += wv * *s;
                    }
                } else {
                    for (d, s) in dst
                        .iter_mut()
                        .zip(src[start..].iter().step_by(g.window.strides[1]))
                    {
                        *d += wv * *s;
                    }
                }
            }
        }
    }
}

/// NCHW convolution with OIHW weights and an optional bias.
pub fn conv2d(
    x: &[f32],
    xs: &[usize],
    w: &[f32],
    ws: &[usize],
    bias: Option<&[f32]>,
    g: &Conv2dAttrs,
) -> Tensor {
    let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (o, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let og = o / g.groups;
    let (oh, ow) = conv_output(g, h, wd, kh, kw);
    let plane = oh * ow;
    let mut out = vec![0f32; n * o * plane];
    let depthwise = cg == 1 && og == 1;
    out.par_chunks_mut(o * plane)
        .enumerate()
        .for_each(|(b, image)| {
            let xin = &x[b * c * h * wd..(b + 1) * c * h * wd];
            for (oc, dst) in image.chunks_mut(plane).enumerate() {
                dst.fill(bias.map_or(0.0, |bv| bv[oc]));
            }
            if depthwise {
                for ch in 0..o {
                    let k = &w[ch * kh * kw..(ch + 1) * kh * kw];
                    let dst = &mut image[ch * plane..(ch + 1) * plane];
                    depthwise_plane(
                        &xin[ch * h * wd..(ch + 1) * h * wd],
                        h,
                        wd,
                        k,
                        kh,
                        kw,
                        g,
                        dst,
                        ow,
                    );
                }
                return;
            }
            let kdim = cg * kh * kw;
            let mut cols = if is_pointwise(g, kh, kw) {
                Vec::new()
            } else {
                vec![0f32; kdim * plane]
            };
            for grp in 0..g.groups {
                let xg = &xin[grp * cg * h * wd..(grp + 1) * cg * h * wd];
                let b_mat: &[f32] = if cols.is_empty() {
                    xg
                } else {
                    im2col(xg, cg, h, wd, kh, kw, g, oh, ow, &mut cols);
                    &cols
                };
                let wg = &w[grp * og * kdim..(grp + 1) * og * kdim];
                let dst = &mut image[grp * og * plane..(grp + 1) * og * plane];
                sgemm([og, kdim, plane], wg, b_mat, false, dst, true);
            }
        });
    Tensor::from_f32(vec![n, o, oh, ow], out)
}

/// `x [N, K]` times `w [M, K]` transposed plus `bias`: every output is [`dot`] of its input row
/// and weight row, plus its bias, any NaN made [`f32::NAN`].
pub fn dense(x: &[f32], n: usize, k: usize, w: &[f32], m: usize, bias: Option<&[f32]>) -> Tensor {
    let out = dense_by_blocks(n, m, DENSE_BLOCK, |first, len, part| {
        for (row, values) in part.chunks_mut(len).enumerate() {
            let xr = &x[row * k..(row + 1) * k];
            for (i, o) in values.iter_mut().enumerate() {
                let j = first + i;
                let d = dot(xr, &w[j * k..(j + 1) * k]);
                *o = canonical_nan(bias.map_or(d, |b| d + b[j]));
            }
        }
    });
    Tensor::from_f32(vec![n, m], out)
}

/// `a [..., K]` times `b [K, N]`.
pub fn matmul(a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize]) -> Tensor {
    let k = *a_shape.last().expect("rank >= 2");
    let rows = a.len() / k;
    let nn = b_shape[1];
    let mut out = vec![0f32; rows * nn];
    sgemm([rows, k, nn], a, b, false, &mut out, false);
    let mut shape = a_shape.to_vec();
    *shape.last_mut().expect("rank >= 2") = nn;
    Tensor::from_f32(shape, out)
}
