//! Layers with weights: 2-D convolution (any groups), dense and matmul. Images of a batch run in
//! parallel; dense convolutions are an im2col and a GEMM, depthwise ones a direct loop.

use qcc_dialects::Tensor;
use qcc_dialects::ops::attrs::Conv2dAttrs;
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::gemm::sgemm_into;
use crate::float::{
    Activation, DENSE_BLOCK, add_bias_then, canonical_nan, dense_by_blocks, dot, transposed,
};

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
    im2col_rows(x, channels, [h, w], [kh, kw], g, 0..oh, ow, cols);
}

/// [`im2col`] of the output rows `rows` only: `[c * kh * kw, rows.len() * ow]`.
#[allow(clippy::too_many_arguments)]
fn im2col_rows<T: Copy + Default>(
    x: &[T],
    channels: usize,
    [h, w]: [usize; 2],
    [kh, kw]: [usize; 2],
    g: &Conv2dAttrs,
    rows: std::ops::Range<usize>,
    ow: usize,
    cols: &mut [T],
) {
    let width = rows.len() * ow;
    for c in 0..channels {
        let plane = &x[c * h * w..(c + 1) * h * w];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &mut cols[((c * kh + ky) * kw + kx) * width..][..width];
                let dy = (ky * g.window.dilations[0]) as isize - g.window.pads[0] as isize;
                let dx = (kx * g.window.dilations[1]) as isize - g.window.pads[1] as isize;
                for (i, y) in rows.clone().enumerate() {
                    let iy = (y * g.window.strides[0]) as isize + dy;
                    let out = &mut row[i * ow..(i + 1) * ow];
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

/// Bytes of output (and of im2col matrix) one GEMM of a dense convolution covers at most, so
/// that the block it fills with the bias and then accumulates into stays in the L2 cache.
const CONV_BLOCK_BYTES: usize = 192 << 10;
/// Output pixels one GEMM covers at least, so that packing the weights again for every block
/// costs little beside the products.
const CONV_BLOCK_MIN_PIXELS: usize = 512;

/// Output rows per GEMM of a dense convolution with `og` outputs and `kdim` products each
/// (`unrolled` when the windows are copied into an im2col matrix), `ow` pixels per row.
fn block_rows(og: usize, kdim: usize, unrolled: bool, oh: usize, ow: usize) -> usize {
    let per_row = 4 * ow.max(1) * if unrolled { og.max(kdim) } else { og }.max(1);
    let fits = CONV_BLOCK_BYTES / per_row;
    fits.max(CONV_BLOCK_MIN_PIXELS.div_ceil(ow.max(1)))
        .clamp(1, oh.max(1))
}

/// NCHW convolution with OIHW weights and an optional bias, then the activation `then` if one is
/// given. A dense convolution runs as GEMMs over blocks of output rows; each block then gets its
/// bias and the activation in one pass while it is in cache (an element's value is the same
/// whatever the blocks).
pub fn conv2d(
    x: &[f32],
    xs: &[usize],
    w: &[f32],
    ws: &[usize],
    bias: Option<&[f32]>,
    g: &Conv2dAttrs,
    then: Option<Activation>,
) -> Tensor {
    let (n, c, h, wd) = (xs[0], xs[1], xs[2], xs[3]);
    let (o, cg, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let og = o / g.groups;
    let (oh, ow) = conv_output(g, h, wd, kh, kw);
    let plane = oh * ow;
    let len = n * o * plane;
    // Every output is written before anything reads it: no zeroing pass first.
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let depthwise = cg == 1 && og == 1;
    let bias_of = |oc: usize| bias.map_or(0.0, |bv| bv[oc]);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut((o * plane).max(1))
        .enumerate()
        .for_each(|(b, image)| {
            let xin = &x[b * c * h * wd..(b + 1) * c * h * wd];
            if depthwise {
                for ch in 0..o {
                    let k = &w[ch * kh * kw..(ch + 1) * kh * kw];
                    let dst = fill(&mut image[ch * plane..(ch + 1) * plane], bias_of(ch));
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
                    if let Some(f) = then {
                        f.apply_to(dst);
                    }
                }
                return;
            }
            let kdim = cg * kh * kw;
            let pointwise = is_pointwise(g, kh, kw);
            let rows = block_rows(og, kdim, !pointwise, oh, ow);
            let mut cols = if pointwise {
                Vec::new()
            } else {
                vec![0f32; kdim * rows * ow]
            };
            for grp in 0..g.groups {
                let xg = &xin[grp * cg * h * wd..(grp + 1) * cg * h * wd];
                let wg = &w[grp * og * kdim..(grp + 1) * og * kdim];
                let dst = &mut image[grp * og * plane..(grp + 1) * og * plane];
                for y0 in (0..oh).step_by(rows) {
                    let y1 = (y0 + rows).min(oh);
                    let (first, width) = (y0 * ow, (y1 - y0) * ow);
                    let b_mat = if pointwise {
                        (&xg[first..], plane)
                    } else {
                        im2col_rows(xg, cg, [h, wd], [kh, kw], g, y0..y1, ow, &mut cols);
                        (&cols[..], width)
                    };
                    sgemm_into([og, kdim, width], wg, b_mat, (&mut dst[first..], plane));
                    // The block is still in cache: its bias and activation now.
                    for (oc, row) in dst.chunks_mut(plane).enumerate() {
                        // SAFETY: the GEMM just wrote the block's columns of every row.
                        let block = unsafe { assume_init(&mut row[first..first + width]) };
                        if bias.is_some() {
                            add_bias_then(block, bias_of(grp * og + oc), then);
                        } else if let Some(f) = then {
                            f.apply_to(block);
                        }
                    }
                }
            }
        });
    // SAFETY: the images cover the first `len` values, and each wrote all of its own.
    unsafe { out.set_len(len) };
    Tensor::from_f32(vec![n, o, oh, ow], out)
}

/// Writes `v` into every element of `dst` and returns it, now initialized.
fn fill(dst: &mut [MaybeUninit<f32>], v: f32) -> &mut [f32] {
    for d in dst.iter_mut() {
        d.write(v);
    }
    // SAFETY: every element was just written.
    unsafe { assume_init(dst) }
}

/// `values` seen as initialized.
///
/// # Safety
/// Every element of `values` must have been written.
unsafe fn assume_init(values: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and the caller says every element is one.
    unsafe { &mut *(values as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// `x [N, K]` times `w [M, K]` transposed plus `bias`: every output is [`dot`] of its input row
/// and weight row, plus its bias, any NaN made [`f32::NAN`].
pub fn dense(x: &[f32], n: usize, k: usize, w: &[f32], m: usize, bias: Option<&[f32]>) -> Tensor {
    Tensor::from_f32(vec![n, m], dense_values(x, n, k, w, m, bias))
}

/// [`dense`]'s `[n, m]` outputs.
fn dense_values(
    x: &[f32],
    n: usize,
    k: usize,
    w: &[f32],
    m: usize,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    dense_by_blocks(n, m, DENSE_BLOCK, |first, len, part| {
        for (row, values) in part.chunks_mut(len).enumerate() {
            let xr = &x[row * k..(row + 1) * k];
            for (i, o) in values.iter_mut().enumerate() {
                let j = first + i;
                let d = dot(xr, &w[j * k..(j + 1) * k]);
                *o = canonical_nan(bias.map_or(d, |b| d + b[j]));
            }
        }
    })
}

/// `a [..., K]` times `b [K, N]`: every output is [`dot`] of its row of `a` and its column of
/// `b`, any NaN made [`f32::NAN`] (a dense layer whose weight is `b` transposed).
pub fn matmul(a: &[f32], a_shape: &[usize], b: &[f32], b_shape: &[usize]) -> Tensor {
    let k = *a_shape.last().expect("rank >= 2");
    let rows: usize = a_shape[..a_shape.len() - 1].iter().product();
    let nn = b_shape[1];
    let mut shape = a_shape.to_vec();
    *shape.last_mut().expect("rank >= 2") = nn;
    Tensor::from_f32(
        shape,
        dense_values(a, rows, k, &transposed(b, k, nn), nn, None),
    )
}
