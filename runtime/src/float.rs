//! Float arithmetic whose order every engine follows, so that their float results are the same
//! bits: the dot product of `nn.dense`, and how a dense layer's outputs are split into tasks.

use rayon::prelude::*;

/// Outputs one task of a float dense computes, in every engine.
pub const DENSE_BLOCK: usize = 64;

/// The dot product of `x` and `w` in the order every engine's float dense follows: eight running
/// sums, `s[l]` over the elements at `l` modulo 8 of the whole groups of eight; then
/// `((s0 + s4) + (s2 + s6)) + ((s1 + s5) + (s3 + s7))`; then the remaining elements one by one.
/// Each product is rounded before it is added (never fused), and the sums start at +0.0. Which NaN
/// a sum of NaNs gives depends on the order a compiler puts the operands of an addition in, so the
/// layer's output goes through [`canonical_nan`].
pub fn dot(x: &[f32], w: &[f32]) -> f32 {
    let mut s = [0f32; 8];
    let (xs, ws) = (x.chunks_exact(8), w.chunks_exact(8));
    let (xt, wt) = (xs.remainder(), ws.remainder());
    for (xc, wc) in xs.zip(ws) {
        for l in 0..8 {
            s[l] += xc[l] * wc[l];
        }
    }
    let c = [s[0] + s[4], s[1] + s[5], s[2] + s[6], s[3] + s[7]];
    let mut total = (c[0] + c[2]) + (c[1] + c[3]);
    for (a, b) in xt.iter().zip(wt) {
        total += a * b;
    }
    total
}

/// `v`, or [`f32::NAN`] when `v` is any NaN.
#[inline]
pub fn canonical_nan(v: f32) -> f32 {
    if v.is_nan() { f32::NAN } else { v }
}

/// The `[n, m]` outputs of a dense layer over `n` images, computed by blocks of up to `block`
/// outputs in parallel: `compute(first, len, part)` fills `part` (`n` rows of `len`) with outputs
/// `first..first + len` of every image, so that a block's weights are read from memory once and
/// from cache for the other images.
pub fn dense_by_blocks(
    n: usize,
    m: usize,
    block: usize,
    compute: impl Fn(usize, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let block = block.max(1);
    let parts: Vec<Vec<f32>> = (0..m.div_ceil(block))
        .into_par_iter()
        .map(|b| {
            let first = b * block;
            let len = block.min(m - first);
            let mut part = vec![0f32; n * len];
            compute(first, len, &mut part);
            part
        })
        .collect();
    let mut out = vec![0f32; n * m];
    for (b, part) in parts.iter().enumerate() {
        let first = b * block;
        let len = block.min(m - first);
        for (row, values) in part.chunks(len).enumerate() {
            out[row * m + first..row * m + first + len].copy_from_slice(values);
        }
    }
    out
}
