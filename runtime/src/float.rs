//! Float arithmetic whose order every engine follows, so that their float results are the same
//! bits: the dot product of `nn.dense`, how a dense layer's outputs are split into tasks, the
//! float activations and the elementwise arithmetic.

use qcc_dialects::ops::attrs;
use qcc_dialects::{OpKind, Operation};
use rayon::prelude::*;

use crate::wide::widest;

/// A float activation applied element by element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `max(v, 0)`.
    Relu,
    /// `min(max(v, lo), hi)`.
    Clip(f32, f32),
    /// `1 / (1 + e^-v)`, with [`exp`].
    Sigmoid,
    /// `clamp(a * v + b, 0, 1)`.
    HardSigmoid(f32, f32),
    /// `v * clamp(v / 6 + 1/2, 0, 1)`.
    HardSwish,
}

impl Activation {
    /// The activation `op` applies, `None` when it is no activation or clips per channel.
    pub fn of(op: &Operation) -> Result<Option<Activation>, String> {
        Ok(Some(match op.kind() {
            Some(OpKind::Relu) => Activation::Relu,
            Some(OpKind::Clip) => match attrs::clip_bounds(op)?.uniform() {
                Some((lo, hi)) => Activation::Clip(lo as f32, hi as f32),
                None => return Ok(None), // per channel
            },
            Some(OpKind::Sigmoid) => Activation::Sigmoid,
            Some(OpKind::HardSigmoid) => {
                let (a, b) = attrs::hardsigmoid(op);
                Activation::HardSigmoid(a as f32, b as f32)
            }
            Some(OpKind::HardSwish) => Activation::HardSwish,
            _ => return Ok(None),
        }))
    }

    /// The activation of one value. Relu and clip map NaN to their lower bound; written as
    /// comparisons (not `f32::max`, whose NaN handling costs a compare and a blend per vector) so
    /// that each bound is one `maxps` / `minps`. Always inlined: the loops that call it with a
    /// known activation must vectorize (a call per value costs several times the work).
    #[inline(always)]
    pub fn apply(self, v: f32) -> f32 {
        let above = |v: f32, lo: f32| if v > lo { v } else { lo };
        let below = |v: f32, hi: f32| if v < hi { v } else { hi };
        match self {
            Activation::Relu => above(v, 0.0),
            Activation::Clip(lo, hi) => below(above(v, lo), hi),
            Activation::Sigmoid => 1.0 / (1.0 + exp(-v)),
            Activation::HardSigmoid(a, b) => (a * v + b).clamp(0.0, 1.0),
            Activation::HardSwish => v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
        }
    }
}

impl Activation {
    /// Replaces every value of `x` by its activation.
    pub fn apply_to(self, x: &mut [f32]) {
        // One loop per activation, chosen once, so that each loop vectorizes.
        match self {
            Activation::Relu => each(x, |v| Activation::Relu.apply(v)),
            Activation::Clip(lo, hi) => each(x, |v| Activation::Clip(lo, hi).apply(v)),
            Activation::Sigmoid => each(x, |v| Activation::Sigmoid.apply(v)),
            Activation::HardSigmoid(a, b) => each(x, |v| Activation::HardSigmoid(a, b).apply(v)),
            Activation::HardSwish => each(x, |v| Activation::HardSwish.apply(v)),
        }
    }
}

/// A float binary arithmetic op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arith {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
}

impl Arith {
    /// The arithmetic of op kind `kind`, `None` for other kinds.
    pub fn of(kind: OpKind) -> Option<Arith> {
        Some(match kind {
            OpKind::Add => Arith::Add,
            OpKind::Sub => Arith::Sub,
            OpKind::Mul => Arith::Mul,
            OpKind::Div => Arith::Div,
            _ => return None,
        })
    }

    /// The op on one pair (inlined into its loops, as [`Activation::apply`]); a NaN result is [`canonical_nan`]'s (which of two NaNs an addition
    /// or a product gives depends on the order a compiler puts its operands in).
    #[inline(always)]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        canonical_nan(match self {
            Arith::Add => a + b,
            Arith::Sub => a - b,
            Arith::Mul => a * b,
            Arith::Div => a / b,
        })
    }
}

/// `e^x` in f32, by steps every engine takes in the same order (so that sigmoid and softmax give
/// the same bits everywhere; libm's `expf` differs between platforms): `x` clamped to
/// `[-104, 89]` (beyond, the result is 0 or infinity anyway); `n = round(x log2 e)` by adding and
/// subtracting 1.5 * 2^23; `r = (x - n c1) - n c2` with `c1 + c2 = ln 2` (`c1` short enough that
/// `n c1` is exact); Cephes' degree-7 polynomial `((p(r) r^2) + r) + 1` for `e^r`; times `2^n`
/// as two powers of two built from bits (so that results near the f32 limits, subnormals
/// included, round once). Within 2 ulp of `e^x` over the normal range (tested); NaN passes
/// through.
#[inline]
pub fn exp(x: f32) -> f32 {
    let c = {
        let above = if x > EXP_LOW { x } else { EXP_LOW };
        if above < EXP_HIGH { above } else { EXP_HIGH }
    };
    let t = c * std::f32::consts::LOG2_E + EXP_MAGIC;
    let n = t - EXP_MAGIC;
    let r = (c - n * EXP_C1) - n * EXP_C2;
    let mut p = EXP_POLY[0];
    for coefficient in &EXP_POLY[1..] {
        p = p * r + coefficient;
    }
    let y = (p * (r * r) + r) + 1.0;
    let k = (t.to_bits() as i32).wrapping_sub(EXP_MAGIC.to_bits() as i32);
    let (k1, k2) = (k >> 1, k - (k >> 1));
    let power = |k: i32| f32::from_bits(((k + 127) << 23) as u32);
    let e = (y * power(k1)) * power(k2);
    if x.is_nan() { x } else { e }
}

/// [`exp`]'s lower clamp: `e^-104` is below half the smallest subnormal f32.
pub const EXP_LOW: f32 = -104.0;
/// [`exp`]'s upper clamp: `e^89` is beyond the largest f32.
pub const EXP_HIGH: f32 = 89.0;
/// `1.5 * 2^23`: adding it rounds an f32 below 2^22 in magnitude to an integer.
pub const EXP_MAGIC: f32 = 12_582_912.0;
/// The high part of ln 2 in [`exp`]'s reduction (0.693359375, nine significant bits).
pub const EXP_C1: f32 = 0.693_359_4;
/// The low part of ln 2 in [`exp`]'s reduction.
pub const EXP_C2: f32 = -2.121_944_4e-4;
/// [`exp`]'s polynomial coefficients (Cephes `expf`), highest degree first.
pub const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// The per-channel factors of `nn.batch_norm` (`gamma / sqrt(var + eps)`): each value `v` of
/// channel `c` becomes `(v - mean[c]) * scale[c] + beta[c]`, in that order, in every engine.
pub fn batch_norm_scales(gamma: &[f32], var: &[f32], eps: f32) -> Vec<f32> {
    gamma
        .iter()
        .zip(var)
        .map(|(g, v)| g / (v + eps).sqrt())
        .collect()
}

/// Adds `bias` to every value of `x`, then applies `then` when there is one (one pass).
pub fn add_bias_then(x: &mut [f32], bias: f32, then: Option<Activation>) {
    match then {
        None => each(x, |v| v + bias),
        Some(Activation::Relu) => each(x, |v| Activation::Relu.apply(v + bias)),
        Some(Activation::Clip(lo, hi)) => each(x, |v| Activation::Clip(lo, hi).apply(v + bias)),
        Some(f) => each(x, |v| f.apply(v + bias)),
    }
}

/// Replaces every value `v` of `x` by `g(v)`, in the widest vectors the CPU has.
#[inline(always)]
fn each(x: &mut [f32], g: impl Fn(f32) -> f32) {
    widest(
        #[inline(always)]
        || x.iter_mut().for_each(|v| *v = g(*v)),
    )
}

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

/// The `[cols, rows]` transpose of the `[rows, cols]` matrix `m`.
pub fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    for (i, row) in m.chunks_exact(cols.max(1)).take(rows).enumerate() {
        for (j, v) in row.iter().enumerate() {
            t[j * rows + i] = *v;
        }
    }
    t
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
