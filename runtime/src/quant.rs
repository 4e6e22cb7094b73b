//! The integer semantics of the `quant` dialect, written once and used by every engine and pass:
//! the layers' f32 requantization, fixed-point multipliers and their rounding rule (the other
//! integer ops), quantize and dequantize of single values.
//! `docs/quantization.md` states the same in prose.

use qcc_dialects::{ElemType, QuantParams, QuantType, Tensor, TensorData, TensorType};
use rayon::prelude::*;

/// Rounds `x / 2^shift` to the nearest integer, ties away from zero.
#[inline]
pub fn round_shift(x: i64, shift: u32) -> i64 {
    if shift >= 63 {
        return 0;
    }
    // Branch-free: round the magnitude, then restore the sign.
    let sign = x >> 63;
    let magnitude = (x ^ sign) - sign;
    let rounded = (magnitude + ((1i64 << shift) >> 1)) >> shift;
    (rounded ^ sign) - sign
}

/// A positive real multiplier as `m0 / 2^shift` with `m0` in [2^30, 2^31).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Multiplier {
    /// The 31-bit significand.
    pub m0: i64,
    /// The right shift (up to 62; larger multipliers than 2^31 are not representable).
    pub shift: u32,
}

impl Multiplier {
    /// The fixed-point form of `m` (> 0, finite). Multipliers of 2^31 or more saturate; those
    /// below 2^-32 become zero.
    pub fn new(m: f64) -> Multiplier {
        if !(m.is_finite() && m > 0.0) {
            return Multiplier { m0: 0, shift: 0 };
        }
        // m = f * 2^e with f in [0.5, 1).
        let mut e = m.log2().floor() as i32 + 1;
        let mut f = m / 2f64.powi(e);
        if f < 0.5 {
            f *= 2.0;
            e -= 1;
        } else if f >= 1.0 {
            f /= 2.0;
            e += 1;
        }
        let mut m0 = (f * 2f64.powi(31)).round() as i64;
        if m0 == 1 << 31 {
            m0 = 1 << 30;
            e += 1;
        }
        let shift = 31 - e;
        if shift < 0 {
            return Multiplier {
                m0: (1 << 31) - 1,
                shift: 0,
            };
        }
        if shift > 62 {
            return Multiplier { m0: 0, shift: 0 };
        }
        Multiplier {
            m0,
            shift: shift as u32,
        }
    }

    /// `round(x * m)` with the product in 64 bits (|x| must stay below 2^32).
    #[inline]
    pub fn apply(&self, x: i64) -> i64 {
        round_shift(x * self.m0, self.shift)
    }

    /// The real value it stands for.
    pub fn value(&self) -> f64 {
        self.m0 as f64 / 2f64.powi(self.shift as i32)
    }
}

/// The multiplier of integer average pooling from input scale `sx` to output scale `sy` over
/// `d` values (`d` of 0 divides by 1).
pub fn avg_multiplier(sx: f64, sy: f64, d: usize) -> Multiplier {
    Multiplier::new(sx / (d.max(1) as f64 * sy))
}

/// Bits the operands of an integer add are shifted left by before rescaling, so that their
/// rescaled sum keeps that many bits of fraction.
pub const ADD_SHIFT: u32 = 20;

/// Integer `quant.add` of two per-tensor operands into a per-tensor result: each operand rescaled
/// to twice the larger input scale with [`ADD_SHIFT`] bits of fraction, the sum rescaled to the
/// result, its zero point added, clamped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AddLevels {
    /// The operands' multipliers (`S_a / 2 max(S_a, S_b)`, `S_b / 2 max(S_a, S_b)`).
    pub operands: [Multiplier; 2],
    /// The sum's multiplier, `2 max(S_a, S_b) / (2^ADD_SHIFT S_y)`.
    pub sum: Multiplier,
    /// The operands' zero points.
    pub zero_points: [i64; 2],
    /// The result's zero point.
    pub zero_point: i64,
    /// The result's smallest and largest level.
    pub bounds: (i64, i64),
}

impl AddLevels {
    /// The add of operands of types `a` and `b` into `out`, clamped by `clamp` (within the
    /// storage range).
    pub fn new(
        a: &TensorType,
        b: &TensorType,
        out: &TensorType,
        clamp: Option<[i64; 2]>,
    ) -> Result<AddLevels, String> {
        let (sa, za, _) = per_tensor_params(a, "the first operand")?;
        let (sb, zb, _) = per_tensor_params(b, "the second operand")?;
        let (sy, zy, range) = per_tensor_params(out, "the result")?;
        let twice = 2.0 * sa.max(sb);
        Ok(AddLevels {
            operands: [Multiplier::new(sa / twice), Multiplier::new(sb / twice)],
            sum: Multiplier::new(twice / ((1u64 << ADD_SHIFT) as f64 * sy)),
            zero_points: [za, zb],
            zero_point: zy,
            bounds: clamp_bounds(clamp, range),
        })
    }

    /// The result level of stored operand levels `x` and `y`.
    pub fn level(&self, x: i64, y: i64) -> i64 {
        let [ma, mb] = self.operands;
        let ta = ma.apply((x - self.zero_points[0]) << ADD_SHIFT);
        let tb = mb.apply((y - self.zero_points[1]) << ADD_SHIFT);
        (self.zero_point + self.sum.apply(ta + tb)).clamp(self.bounds.0, self.bounds.1)
    }
}

/// Scale and zero point of a per-tensor quantized type.
pub fn per_tensor(t: &TensorType) -> Option<(f64, i64, (i64, i64))> {
    match &t.elem {
        ElemType::Quant(QuantType {
            storage,
            params: QuantParams::PerTensor { scale, zero_point },
        }) => Some((*scale, *zero_point, storage.range())),
        _ => None,
    }
}

/// One scale per output channel (axis 0), repeating a per-tensor scale.
pub fn channel_scales(t: &TensorType, channels: usize) -> Option<Vec<f64>> {
    match &t.elem.quant()?.params {
        QuantParams::PerTensor { scale, .. } => Some(vec![*scale; channels]),
        QuantParams::PerAxis { scales, .. } => Some(scales.clone()),
    }
}

/// `clamp(round(x / scale) + zero_point)` into the storage range; the division is in f32 and
/// the rounding ties away from zero.
pub fn quantize_value(x: f32, scale: f64, zero_point: i64, (lo, hi): (i64, i64)) -> i64 {
    let q = (x / scale as f32).round();
    let q = if q.is_nan() {
        0
    } else {
        q.clamp(-2e9, 2e9) as i64
    };
    (q + zero_point).clamp(lo, hi)
}

/// `scale * (q - zero_point)` in f32.
pub fn dequantize_value(q: i64, scale: f64, zero_point: i64) -> f32 {
    (q - zero_point) as f32 * scale as f32
}

/// The stored integers of a quantized (or integer) tensor.
pub fn stored_ints(t: &Tensor) -> Vec<i32> {
    match &t.data {
        TensorData::U8(v) => v.iter().map(|x| *x as i32).collect(),
        TensorData::I8(v) => v.iter().map(|x| *x as i32).collect(),
        TensorData::I32(v) => v.clone(),
        TensorData::I64(v) => v.iter().map(|x| *x as i32).collect(),
        TensorData::F32(v) => v.iter().map(|x| *x as i32).collect(),
    }
}

/// A real bias in accumulator units (`b / (S_x * S_w[c])`), rounded (ties away from zero) and
/// saturated to i32: how `quantize` stores biases and bias correction changes them.
pub fn to_bias(v: f64) -> i64 {
    v.round().clamp(i32::MIN as f64, i32::MAX as f64) as i64
}

/// A weight in units of its scale, rounded (ties away from zero) into the narrow i8 range
/// [-127, 127].
pub fn to_weight(v: f64, scale: f64) -> i8 {
    (v / scale).round().clamp(-127.0, 127.0) as i8
}

/// The output clamp of a layer: `clamp` when given, within the storage `range`.
pub fn clamp_bounds(clamp: Option<[i64; 2]>, range: (i64, i64)) -> (i64, i64) {
    clamp.map_or(range, |[lo, hi]| (lo.max(range.0), hi.min(range.1)))
}

/// The largest `|v|` of integer values.
pub fn magnitude(values: &[i32]) -> u32 {
    values.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0)
}

/// Checks that sums of `k` products of magnitudes up to `max_x` and `max_w` fit i32: the
/// refusal every engine gives for a layer whose accumulators could overflow.
pub fn check_accumulator(k: usize, max_x: u32, max_w: u32) -> Result<(), String> {
    if (k as u128) * u128::from(max_x) * u128::from(max_w) >= 1u128 << 31 {
        return Err(format!(
            "a layer summing {k} products of inputs up to {max_x} and weights up to {max_w} may overflow its i32 accumulators"
        ));
    }
    Ok(())
}

/// [`per_tensor`], or an error naming `what` must be per-tensor quantized.
pub fn per_tensor_params(t: &TensorType, what: &str) -> Result<(f64, i64, (i64, i64)), String> {
    per_tensor(t).ok_or_else(|| format!("{what} must be per-tensor quantized, got {t}"))
}

/// How an integer conv/dense layer turns exact accumulators plus its i32 bias into output levels:
/// one f32 scale `S_x * S_w[c] / S_y` per output channel, the output zero point and the clamp:
/// `y = clamp(Z_y + round_even(f32(acc + bias) * scale[c]), lo, hi)`, every step in f32 rounding
/// to nearest, ties to even (what SIMD conversion and multiplication do, so engines vectorise it
/// exactly). It depends only on the layer's types and clamp, so an engine computes it once when it
/// prepares a function; the bias is read at run time, so changing a bias changes nothing here.
#[derive(Clone, Debug, PartialEq)]
pub struct Requant {
    scales: Vec<f32>,
    zp: i64,
    lo: i64,
    hi: i64,
    /// Each channel's upper bound (`hi` for all, unless the layer has `channel_max`).
    highs: Vec<i64>,
}

/// One channel of a [`Requant`]: its scale and its output bounds less the zero point.
#[derive(Clone, Copy, Debug)]
pub struct ChannelLevels {
    scale: f32,
    lo: f32,
    hi: f32,
}

impl ChannelLevels {
    /// The output level of `acc` (accumulator plus bias, an integer below 2^53 in magnitude) less
    /// the zero point, before and after the clamp, as f32: the levels of [`Requant::unclamped`]
    /// and [`Requant::one`], except that the unclamped level saturates at +-2^22 (far beyond any
    /// clamp).
    #[inline]
    pub fn offsets(&self, acc: f64) -> (f32, f32) {
        // f64 holds the integer exactly, so this rounds as `acc as i64 as f32` does. Bounding the
        // level first leaves the rounding without a branch, so that loops of it vectorize.
        let level = round_even_bounded((acc as f32 * self.scale).clamp(-BOUNDED, BOUNDED));
        (level, level.clamp(self.lo, self.hi))
    }
}

/// `x` rounded to the nearest integer, ties to even (`f32::round_ties_even`, which is a libm call
/// on baseline x86-64): below 2^22 in magnitude by adding and subtracting 1.5 * 2^23, whose sum
/// has a unit in the last place of 1, so the addition itself rounds (to even, as every f32
/// addition does) and the subtraction is exact; larger values have no fraction to round.
#[inline]
pub(crate) fn round_even(x: f32) -> f32 {
    if x.abs() <= BOUNDED {
        round_even_bounded(x)
    } else {
        x.round_ties_even()
    }
}

/// The largest magnitude [`round_even_bounded`] takes (2^22).
const BOUNDED: f32 = 4_194_304.0;

/// [`round_even`] of `x` no larger than [`BOUNDED`] in magnitude.
#[inline]
fn round_even_bounded(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0;
    (x + MAGIC) - MAGIC
}

/// A layer's real multiplier as the f32 its requantization uses (finite: a product with it is
/// never NaN).
pub fn layer_scale(m: f64) -> f32 {
    if m.is_finite() && m > 0.0 {
        (m as f32).min(f32::MAX)
    } else {
        0.0
    }
}

impl Requant {
    /// From the layer's input, weight and result types, its output channel count and its clamp.
    pub fn from_types(
        x: &TensorType,
        w: &TensorType,
        out: &TensorType,
        channels: usize,
        clamp: Option<[i64; 2]>,
    ) -> Result<Requant, String> {
        let (sx, _, _) = per_tensor_params(x, "the input")?;
        let (sy, zp, range) = per_tensor_params(out, "the result")?;
        let sw = channel_scales(w, channels).ok_or("the weight must be quantized")?;
        if sw.len() != channels {
            return Err(format!(
                "the weight has {} scales for {channels} output channels",
                sw.len()
            ));
        }
        let (lo, hi) = clamp_bounds(clamp, range);
        Ok(Requant {
            scales: sw.iter().map(|s| layer_scale(sx * s / sy)).collect(),
            zp,
            lo,
            hi,
            highs: vec![hi; channels],
        })
    }

    /// The same requantization with each channel's output also bounded above by `channel_max[c]`
    /// (a layer's `channel_max` attribute); the bounds stay within the clamp.
    pub fn with_channel_max(mut self, channel_max: Option<Vec<i64>>) -> Result<Requant, String> {
        let Some(h) = channel_max else {
            return Ok(self);
        };
        if h.len() != self.scales.len() {
            return Err(format!(
                "'channel_max' has {} bounds for {} output channels",
                h.len(),
                self.scales.len()
            ));
        }
        self.highs = h.iter().map(|v| (*v).clamp(self.lo, self.hi)).collect();
        Ok(self)
    }

    /// Output channels.
    pub fn channels(&self) -> usize {
        self.scales.len()
    }

    /// The output level of `acc` (accumulator plus bias) of channel `c`, clamped.
    #[inline]
    pub fn one(&self, c: usize, acc: i64) -> i64 {
        self.unclamped(c, acc).clamp(self.lo, self.highs[c])
    }

    /// The output level of `acc` (accumulator plus bias) of channel `c` before the clamp to
    /// [`Requant::bounds`].
    #[inline]
    pub fn unclamped(&self, c: usize, acc: i64) -> i64 {
        let scaled = acc as f32 * self.scales[c];
        (round_even(scaled) as i64).saturating_add(self.zp)
    }

    /// Channel `c`'s requantization as f32 constants, for loops over many of its accumulators.
    pub fn channel(&self, c: usize) -> ChannelLevels {
        ChannelLevels {
            scale: self.scales[c],
            lo: (self.lo - self.zp) as f32,
            hi: (self.highs[c] - self.zp) as f32,
        }
    }

    /// The f32 scale of channel `c`.
    pub fn scale(&self, c: usize) -> f32 {
        self.scales[c]
    }

    /// The output zero point.
    pub fn zero_point(&self) -> i64 {
        self.zp
    }

    /// The smallest and largest output level (clamp and storage range; the largest of any
    /// channel).
    pub fn bounds(&self) -> (i64, i64) {
        (self.lo, self.hi)
    }

    /// The smallest and largest output level of channel `c`.
    pub fn channel_bounds(&self, c: usize) -> (i64, i64) {
        (self.lo, self.highs[c])
    }

    /// [`Requant::bounds`] when every channel has them (no `channel_max` below the clamp).
    pub fn uniform_bounds(&self) -> Option<(i64, i64)> {
        self.highs
            .iter()
            .all(|h| *h == self.hi)
            .then_some((self.lo, self.hi))
    }

    /// Requantizes accumulators laid out `[N, C, plane]` plus `bias[c]` into a tensor of type `ty`.
    pub fn requantize(
        &self,
        acc: &[i32],
        bias: &[i64],
        plane: usize,
        ty: &TensorType,
        shape: Vec<usize>,
    ) -> Tensor {
        let data = match TensorData::zeros(&ty.elem, 0) {
            TensorData::U8(_) => TensorData::U8(self.fill(acc, bias, plane, |v| v as u8)),
            TensorData::I8(_) => TensorData::I8(self.fill(acc, bias, plane, |v| v as i8)),
            _ => TensorData::I32(self.fill(acc, bias, plane, |v| v as i32)),
        };
        Tensor { shape, data }
    }

    fn fill<T: Copy + Default + Send>(
        &self,
        acc: &[i32],
        bias: &[i64],
        plane: usize,
        cast: impl Fn(i64) -> T + Sync,
    ) -> Vec<T> {
        let (c, plane) = (self.scales.len().max(1), plane.max(1));
        let mut out = vec![T::default(); acc.len()];
        out.par_chunks_mut(plane)
            .zip(acc.par_chunks(plane))
            .enumerate()
            .for_each(|(j, (dst, src))| {
                let ch = j % c;
                let b = bias.get(ch).copied().unwrap_or(0);
                for (d, a) in dst.iter_mut().zip(src) {
                    *d = cast(self.one(ch, i64::from(*a) + b));
                }
            });
        out
    }
}

/// The scale and zero point that apply to flat element `i` of a tensor of `shape` and type `q`.
fn params_at<'a>(q: &'a QuantType, shape: &'a [usize]) -> impl Fn(usize) -> (f64, i64) + 'a {
    move |i| match &q.params {
        QuantParams::PerTensor { scale, zero_point } => (*scale, *zero_point),
        QuantParams::PerAxis {
            axis,
            scales,
            zero_points,
        } => {
            let inner: usize = shape[axis + 1..].iter().product();
            let c = (i / inner.max(1)) % shape[*axis];
            (scales[c], zero_points[c])
        }
    }
}

/// `quant.quantize`: f32 to the result type (per tensor, or per axis).
pub fn quantize(x: &[f32], shape: &[usize], ty: &TensorType) -> Result<Tensor, String> {
    let q = ty.elem.quant().ok_or("the result must be quantized")?;
    let (range, at) = (q.storage.range(), params_at(q, shape));
    let values: Vec<i64> = x
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (scale, zp) = at(i);
            quantize_value(*v, scale, zp, range)
        })
        .collect();
    Ok(store(values, ty, shape.to_vec()))
}

/// `quant.dequantize`: the input type's scales and zero points back to f32.
pub fn dequantize(q: &Tensor, ty: &TensorType) -> Result<Tensor, String> {
    let quant = ty.elem.quant().ok_or("the input must be quantized")?;
    let at = params_at(quant, &q.shape);
    let data = stored_ints(q)
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let (scale, zp) = at(i);
            dequantize_value(*x as i64, scale, zp)
        })
        .collect();
    Ok(Tensor::from_f32(q.shape.clone(), data))
}

/// Output levels as a tensor of type `ty`'s storage.
pub(crate) fn store(values: Vec<i64>, ty: &TensorType, shape: Vec<usize>) -> Tensor {
    let data = match TensorData::zeros(&ty.elem, 0) {
        TensorData::U8(_) => TensorData::U8(values.iter().map(|v| *v as u8).collect()),
        TensorData::I8(_) => TensorData::I8(values.iter().map(|v| *v as i8).collect()),
        _ => TensorData::I32(values.iter().map(|v| *v as i32).collect()),
    };
    Tensor { shape, data }
}
