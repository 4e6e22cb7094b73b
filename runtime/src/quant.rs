//! The integer semantics of the `quant` dialect, written once and used by every engine and pass:
//! fixed-point multipliers, the one rounding rule, quantize and dequantize of single values.
//! `docs/quantization.md` states the same in prose.

use qcc_dialects::{ElemType, QuantParams, QuantType, TensorType};

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
