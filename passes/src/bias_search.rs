//! How a layer's i32 bias is chosen once its exact accumulators and its float counterpart are
//! known: per-channel error sums, the mean-shift correction, and the bias-only fit. Channels are
//! independent (a bias only moves its own channel), so every search runs per channel in parallel.

use qcc_runtime::quant::{Requant, to_bias};
use qcc_runtime::wide::widest;
use rayon::prelude::*;

use crate::bias::At;

/// Per-channel sums over a layer's output elements of `d = quantized - float` (real units).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sums {
    /// Elements.
    pub n: f64,
    /// Sum of `d`.
    pub d: f64,
    /// Sum of `d^2`.
    pub d2: f64,
    /// Sum of `d` over the elements the output clamp lets through (straight-through gradient).
    pub d_active: f64,
}

impl Sums {
    /// Mean of `d`.
    pub fn mean(&self) -> f64 {
        if self.n > 0.0 { self.d / self.n } else { 0.0 }
    }

    /// Adds the sums of more elements of the same channel.
    pub fn add(&mut self, other: &Sums) {
        self.n += other.n;
        self.d += other.d;
        self.d2 += other.d2;
        self.d_active += other.d_active;
    }

    /// Mean of `d^2`.
    pub fn mean_square(&self) -> f64 {
        if self.n > 0.0 { self.d2 / self.n } else { 0.0 }
    }
}

/// One integer layer's output on the calibration batch (or a part of it), as a function of its
/// bias.
pub struct LayerOutput<'a> {
    /// Chunks of images: exact accumulators without bias, `[n, C, plane]`, and the float
    /// counterpart at the measuring point in the same layout.
    pub parts: Vec<(&'a [i32], &'a [f32])>,
    /// Output channels.
    pub channels: usize,
    /// Elements per channel and image.
    pub plane: usize,
    /// Real value of one accumulator unit per channel (input scale times weight scale).
    pub unit: Vec<f64>,
    /// Requantization with a zero bias.
    pub requant: Requant,
    /// Output scale and zero point.
    pub out: (f64, i64),
    /// Where the layer's output is compared with float.
    pub at: At,
}

impl LayerOutput<'_> {
    /// The same layer on other images (chunks of accumulators and float values).
    pub fn on<'b>(&self, parts: Vec<(&'b [i32], &'b [f32])>) -> LayerOutput<'b> {
        LayerOutput {
            parts,
            channels: self.channels,
            plane: self.plane,
            unit: self.unit.clone(),
            requant: self.requant.clone(),
            out: self.out,
            at: self.at,
        }
    }

    /// The sums of channel `c` with bias `b` (in accumulator units).
    pub fn channel(&self, c: usize, b: i64) -> Sums {
        widest(
            #[inline(always)]
            || self.channel_any(c, b),
        )
    }

    /// [`LayerOutput::channel`], inlined into [`widest`]'s callers.
    #[inline(always)]
    fn channel_any(&self, c: usize, b: i64) -> Sums {
        let (scale, _) = self.out;
        let (unit, bias) = (self.unit[c], b as f64);
        let planes = self.parts.iter().flat_map(|(acc, reference)| {
            let images = acc.len() / (self.channels * self.plane).max(1);
            (0..images).map(move |n| {
                let start = (n * self.channels + c) * self.plane;
                (
                    &acc[start..start + self.plane],
                    &reference[start..start + self.plane],
                )
            })
        });
        match self.at {
            At::PreActivation => sum_differences(planes, |a| ((a + bias) * unit, true)),
            At::PostActivation => {
                let levels = self.requant.channel(c);
                sum_differences(planes, |a| {
                    let (level, q) = levels.offsets(a + bias);
                    (f64::from(q) * scale, q == level)
                })
            }
        }
    }

    /// The sums of every channel with biases `bias`.
    pub fn sums(&self, bias: &[i64]) -> Vec<Sums> {
        (0..self.channels)
            .into_par_iter()
            .map(|c| self.channel(c, bias[c]))
            .collect()
    }

    /// The sums with biases `to`, given those with biases `from`. Before the activation every
    /// output of a channel moves by the same amount, so the new sums follow without another pass.
    pub fn rebias(&self, from: &[i64], sums: &[Sums], to: &[i64]) -> Vec<Sums> {
        if self.at == At::PostActivation {
            return self.sums(to);
        }
        sums.iter()
            .enumerate()
            .map(|(c, s)| {
                let delta = (to[c] - from[c]) as f64 * self.unit[c];
                let d = s.d + s.n * delta;
                Sums {
                    n: s.n,
                    d,
                    d2: s.d2 + 2.0 * delta * s.d + s.n * delta * delta,
                    d_active: d,
                }
            })
            .collect()
    }

    /// The bias that cancels each channel's mean shift `sums[c].mean()`.
    pub fn corrected(&self, bias: &[i64], sums: &[Sums]) -> Vec<i64> {
        (0..self.channels)
            .map(|c| to_bias(bias[c] as f64 - sums[c].mean() / self.unit[c]))
            .collect()
    }

    /// Fits every channel's bias by `steps` steps of gradient descent on the channel's mean
    /// squared error, with gradients straight through rounding and zero where the output
    /// clamp cuts. The bias is a real value in output units (`lr` is therefore unitless: with
    /// nothing clamped, `lr = 0.5` cancels the mean shift in one step); the layer runs with its
    /// rounding to the bias grid. Returns, per channel, the best bias seen (never worse than
    /// `bias`) and its sums.
    pub fn fit(&self, bias: &[i64], steps: usize, lr: f64) -> Vec<(i64, Sums)> {
        (0..self.channels)
            .into_par_iter()
            .map(|c| {
                let unit = self.unit[c];
                let mut best = (bias[c], self.channel(c, bias[c]));
                if !(unit.is_finite() && unit > 0.0) {
                    return best;
                }
                let mut real = bias[c] as f64 * unit;
                let mut current = best;
                for _ in 0..steps {
                    let s = current.1;
                    let gradient = if s.n > 0.0 {
                        2.0 * s.d_active / s.n
                    } else {
                        0.0
                    };
                    real -= lr * gradient;
                    let b = to_bias(real / unit);
                    current = if b == current.0 {
                        current
                    } else {
                        (b, self.channel(c, b))
                    };
                    if current.1.d2 < best.1.d2 {
                        best = current;
                    }
                }
                best
            })
            .collect()
    }
}

/// The sums of `real(a) - f` over pairs of accumulator `a` and float value `f`, where `real`
/// gives an accumulator's value in real units and whether the output clamp lets it through.
#[inline(always)]
fn sum_differences<'a>(
    planes: impl Iterator<Item = (&'a [i32], &'a [f32])>,
    real: impl Fn(f64) -> (f64, bool),
) -> Sums {
    // Independent lanes, so that the loop vectorizes instead of waiting on one running sum:
    // element `i` of a plane's whole groups of eight goes to lane `i % 8`, the rest to lane 0.
    const LANES: usize = 8;
    // Elements whose differences are computed before they are summed (a multiple of LANES).
    const BLOCK: usize = 256;
    let (mut d, mut d2, mut active) = ([0.0; LANES], [0.0; LANES], [0.0; LANES]);
    let (mut diffs, mut passed) = ([0.0f64; BLOCK], [0.0f64; BLOCK]);
    let mut n = 0usize;
    let difference = |a: i32, f: f32| {
        let (value, through) = real(f64::from(a));
        let diff = value - f64::from(f);
        (diff, if through { diff } else { 0.0 })
    };
    for (acc, reference) in planes {
        let len = acc.len().min(reference.len());
        n += len;
        let whole = len - len % LANES;
        for (a, f) in acc[..whole]
            .chunks(BLOCK)
            .zip(reference[..whole].chunks(BLOCK))
        {
            // The block's differences first (a loop with no running sum), then the lane sums.
            for ((a, f), (diff, through)) in a.iter().zip(f).zip(diffs.iter_mut().zip(&mut passed))
            {
                (*diff, *through) = difference(*a, *f);
            }
            // One sum at a time: each loop is one vector of lanes.
            for ds in diffs[..a.len()].chunks_exact(LANES) {
                (0..LANES).for_each(|lane| d[lane] += ds[lane]);
            }
            for ds in diffs[..a.len()].chunks_exact(LANES) {
                (0..LANES).for_each(|lane| d2[lane] += ds[lane] * ds[lane]);
            }
            for ps in passed[..a.len()].chunks_exact(LANES) {
                (0..LANES).for_each(|lane| active[lane] += ps[lane]);
            }
        }
        for (a, f) in acc[whole..len].iter().zip(&reference[whole..len]) {
            let (diff, through) = difference(*a, *f);
            d[0] += diff;
            d2[0] += diff * diff;
            active[0] += through;
        }
    }
    let total = |lanes: [f64; LANES]| lanes.iter().sum::<f64>();
    Sums {
        n: n as f64,
        d: total(d),
        d2: total(d2),
        d_active: total(active),
    }
}

#[cfg(test)]
mod tests {
    use super::{LayerOutput, Sums};
    use crate::bias::At;
    use qcc_dialects::types::{ElemType, QuantParams, QuantType, Storage, TensorType};
    use qcc_runtime::quant::Requant;

    fn quant(storage: Storage, scale: f64, zero_point: i64) -> TensorType {
        let params = QuantParams::PerTensor { scale, zero_point };
        TensorType::new(vec![1], ElemType::Quant(QuantType { storage, params }))
    }

    #[test]
    fn the_sums_in_wide_vectors_are_the_scalar_ones_bit_for_bit() {
        // Three channels of 37 values (whole groups of eight and a tail) over two images,
        // accumulators wide enough that the clamp cuts some at both ends.
        let (channels, plane, images) = (3, 37, 2);
        let len = images * channels * plane;
        let acc: Vec<i32> = (0..len)
            .map(|i| ((i * 7919) % 4001) as i32 - 2000)
            .collect();
        let float: Vec<f32> = (0..len)
            .map(|i| ((i * 104_729) % 997) as f32 * 0.37 - 90.0)
            .collect();
        let x = quant(Storage::U8, 0.05, 128);
        let w = quant(Storage::I8, 0.02, 0);
        let out = quant(Storage::U8, 0.4, 120);
        let requant = Requant::from_types(&x, &w, &out, channels, Some([0, 255])).expect("types");
        for at in [At::PreActivation, At::PostActivation] {
            let layer = LayerOutput {
                parts: vec![(&acc, &float)],
                channels,
                plane,
                unit: vec![0.001, 0.0013, 0.0021],
                requant: requant.clone(),
                out: (0.4, 120),
                at,
            };
            for c in 0..channels {
                for b in [-700, 0, 913] {
                    let bits = |s: Sums| [s.n, s.d, s.d2, s.d_active].map(f64::to_bits);
                    assert_eq!(bits(layer.channel(c, b)), bits(layer.channel_any(c, b)));
                }
            }
        }
    }
}
