//! Per-channel means and variances of a float network's values without running it: a folded
//! batch norm records what it was trained to give each channel (`channel_mean`, `channel_std` on
//! its layer, from `fold-batchnorm`), and the ops whose effect is known carry them on: a layer
//! without statistics (independent inputs), ReLU and clips (a clipped normal), adds, average
//! pooling, flattening of 1x1 planes and channel concatenation. Values whose moments cannot be
//! derived (the network input, max pooling, ...) have none, and neither does what follows from
//! them alone. Data-free bias correction (`bias-correct-analytic`) and data-free activation
//! ranges (`quantize{calibration=batchnorm}`, [`ranges`]) build on it.

use std::collections::HashMap;

use qcc_dialects::ops::attrs::{self, ClipBounds};
use qcc_dialects::{Attr, Function, Module, NodeIndex, OpKind, Value};

use crate::rewrite::{WeightLayout, const_tensor};

/// A value's per-channel (axis 1) mean and variance.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    /// Each channel's mean.
    pub mean: Vec<f64>,
    /// Each channel's variance.
    pub var: Vec<f64>,
}

/// The moments of every value of `func` that they can be derived for.
pub fn propagate(module: &Module, func: &Function) -> HashMap<Value, Moments> {
    let mut known: HashMap<Value, Moments> = HashMap::new();
    for node in func.schedule() {
        if let Some(m) = of_op(module, func, node, &known) {
            known.insert(Value::of(node), m);
        }
    }
    known
}

/// The moments of `node`'s output from its operands'.
fn of_op(
    module: &Module,
    func: &Function,
    node: NodeIndex,
    known: &HashMap<Value, Moments>,
) -> Option<Moments> {
    let op = func.op(node);
    let operands = func.operands(node);
    let input = || known.get(operands.first()?);
    match op.kind()? {
        OpKind::Conv2d | OpKind::Dense => {
            let floats = |name: &str| op.attr(name).and_then(Attr::as_floats);
            if let (Some(mean), Some(std)) = (floats("channel_mean"), floats("channel_std")) {
                let var = std.iter().map(|s| s * s).collect();
                return Some(Moments { mean, var });
            }
            layer(module, func, node, input()?)
        }
        OpKind::BatchNorm => {
            let param = |i: usize| -> Option<Vec<f64>> {
                let t = const_tensor(module, func, *operands.get(i)?)?;
                Some(t.as_f32()?.iter().map(|v| f64::from(*v)).collect())
            };
            let (gamma, beta) = (param(1)?, param(2)?);
            let var = gamma.iter().map(|g| g * g).collect();
            Some(Moments { mean: beta, var })
        }
        OpKind::Relu => Some(clip(
            input()?,
            &ClipBounds {
                lo: 0.0,
                hi: f64::INFINITY,
                channel_hi: None,
            },
        )),
        OpKind::Clip => Some(clip(input()?, &attrs::clip_bounds(op).ok()?)),
        OpKind::Add => {
            let (a, b) = (known.get(operands.first()?)?, known.get(operands.get(1)?)?);
            let same = func.value_type(operands[0]).shape == func.value_type(operands[1]).shape;
            same.then(|| Moments {
                mean: a.mean.iter().zip(&b.mean).map(|(x, y)| x + y).collect(),
                var: a.var.iter().zip(&b.var).map(|(x, y)| x + y).collect(),
            })
        }
        // Averaging keeps each channel's mean; the variance is kept as an upper bound.
        OpKind::GlobalAvgPool | OpKind::AvgPool2d => input().cloned(),
        OpKind::Flatten | OpKind::Reshape => {
            let (from, to) = (func.value_type(operands[0]), &op.results[0]);
            let planes_of_one = from.shape.iter().skip(2).all(|d| *d == 1);
            (planes_of_one && to.shape.get(1) == from.shape.get(1) && to.rank() == 2)
                .then(|| input().cloned())?
        }
        OpKind::Concat => {
            let axis = attrs::axis(op, 1, func.value_type(operands[0]).rank()).ok()?;
            if axis != 1 {
                return None;
            }
            let mut out = Moments {
                mean: Vec::new(),
                var: Vec::new(),
            };
            for v in &operands {
                let m = known.get(v)?;
                out.mean.extend(&m.mean);
                out.var.extend(&m.var);
            }
            Some(out)
        }
        _ => None,
    }
}

/// A conv/dense layer's output moments from its input's, the inputs taken as independent (the
/// variance is a guess; the mean is exact away from padding).
fn layer(module: &Module, func: &Function, node: NodeIndex, x: &Moments) -> Option<Moments> {
    let operands = func.operands(node);
    let w = const_tensor(module, func, *operands.get(1)?)?;
    let w = w.as_f32()?;
    let shape = &func.value_type(operands[1]).shape;
    let outputs = shape[0];
    let bias: Vec<f64> = match operands.get(2) {
        Some(b) => const_tensor(module, func, *b)?
            .as_f32()?
            .iter()
            .map(|v| f64::from(*v))
            .collect(),
        None => vec![0.0; outputs],
    };
    let layout = WeightLayout::of(func, node)?;
    let mut mean = bias;
    let mut var = vec![0.0; outputs];
    for (i, w) in w.iter().enumerate() {
        let (o, c) = layout.channels(i);
        let w = f64::from(*w);
        mean[o] += w * x.mean.get(c)?;
        var[o] += w * w * x.var.get(c)?;
    }
    Some(Moments { mean, var })
}

/// The moments of `clip(y)` per channel for `y` normal with the moments `x`.
pub fn clip(x: &Moments, bounds: &ClipBounds) -> Moments {
    let (mean, var) = x
        .mean
        .iter()
        .zip(&x.var)
        .enumerate()
        .map(|(c, (m, v))| clipped_normal(*m, *v, bounds.lo, bounds.hi_of(c)))
        .unzip();
    Moments { mean, var }
}

/// Mean and variance of `clamp(y, lo, hi)` for `y ~ N(m, v)`.
pub fn clipped_normal(m: f64, v: f64, lo: f64, hi: f64) -> (f64, f64) {
    let s = v.max(0.0).sqrt();
    if s == 0.0 || !s.is_finite() {
        return (m.clamp(lo, hi.max(lo)), 0.0);
    }
    let (a, b) = ((lo - m) / s, (hi - m) / s);
    // Each bound's share: the probability mass it takes, and the density at it (both zero for
    // an infinite bound, where the product with the bound is zero too).
    let (cdf_a, pdf_a, a_pdf_a) = if lo.is_finite() {
        (phi_cdf(a), phi(a), a * phi(a))
    } else {
        (0.0, 0.0, 0.0)
    };
    let (cdf_b, pdf_b, b_pdf_b) = if hi.is_finite() {
        (phi_cdf(b), phi(b), b * phi(b))
    } else {
        (1.0, 0.0, 0.0)
    };
    let (at_lo, at_hi) = (
        if lo.is_finite() { lo } else { 0.0 },
        if hi.is_finite() { hi } else { 0.0 },
    );
    let inside = cdf_b - cdf_a;
    let mean = at_lo * cdf_a + at_hi * (1.0 - cdf_b) + m * inside + s * (pdf_a - pdf_b);
    let square = at_lo * at_lo * cdf_a
        + at_hi * at_hi * (1.0 - cdf_b)
        + (m * m + v) * inside
        + 2.0 * m * s * (pdf_a - pdf_b)
        + v * (a_pdf_a - b_pdf_b);
    (mean, (square - mean * mean).max(0.0))
}

/// The standard normal density.
fn phi(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// The standard normal distribution function, through `erfc` (Chebyshev fit of Numerical
/// Recipes, relative error below 1.2e-7 everywhere).
fn phi_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Every value's range for quantization without calibration inputs: the input's from the
/// preprocessing the module records (pixels in [0, 1], less the mean, over the std), a layer's
/// output (or a batch norm's) from its channels' moments, `mean +- sigmas * std`, clips and ReLU
/// cutting their input's range, adds within the sum of their inputs' ranges (and their moments'),
/// pooling and reshaping keeping it, concatenation joining them. An op none of these covers is
/// an error naming it.
pub fn ranges(
    module: &Module,
    func: &Function,
    sigmas: f64,
) -> Result<HashMap<Value, (f32, f32)>, String> {
    let moments = propagate(module, func);
    let spread = |m: &Moments| -> (f64, f64) {
        m.mean
            .iter()
            .zip(&m.var)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (m, v)| {
                let s = sigmas * v.max(0.0).sqrt();
                (lo.min(m - s), hi.max(m + s))
            })
    };
    let mut out: HashMap<Value, (f64, f64)> = HashMap::new();
    for &arg in &func.args {
        out.insert(Value::of(arg), input_range(module)?);
    }
    for node in func.schedule() {
        let op = func.op(node);
        let Some(kind) = op.kind() else { continue };
        let operands = func.operands(node);
        let input = |i: usize| -> Result<(f64, f64), String> {
            operands
                .get(i)
                .and_then(|v| out.get(v).copied())
                .ok_or_else(|| format!("{}: its operand #{i} has no range", op.name))
        };
        let own = moments.get(&Value::of(node));
        let range = match kind {
            OpKind::Const => continue,
            OpKind::Conv2d | OpKind::Dense | OpKind::BatchNorm => match own {
                Some(m) => spread(m),
                None => {
                    return Err(format!(
                        "{} '{}': no batch-norm statistics reach it, so its range is unknown; give --calib",
                        op.name,
                        op.result_names[0].as_deref().unwrap_or("")
                    ));
                }
            },
            OpKind::Relu => {
                let (lo, hi) = input(0)?;
                (lo.max(0.0), hi.max(0.0))
            }
            OpKind::Clip => {
                let b = attrs::clip_bounds(op)?;
                let (lo, hi) = input(0)?;
                let top = b.max_hi();
                (lo.clamp(b.lo, top), hi.clamp(b.lo, top))
            }
            OpKind::Add => {
                let ((a0, a1), (b0, b1)) = (input(0)?, input(1)?);
                let (lo, hi) = (a0 + b0, a1 + b1);
                match own {
                    Some(m) => {
                        let (l, h) = spread(m);
                        (lo.max(l), hi.min(h).max(lo.max(l)))
                    }
                    None => (lo, hi),
                }
            }
            OpKind::GlobalAvgPool
            | OpKind::AvgPool2d
            | OpKind::MaxPool2d
            | OpKind::Flatten
            | OpKind::Reshape
            | OpKind::Transpose => input(0)?,
            OpKind::Pad => {
                let (lo, hi) = input(0)?;
                (lo.min(0.0), hi.max(0.0))
            }
            OpKind::Concat => {
                let mut r = (f64::INFINITY, f64::NEG_INFINITY);
                for i in 0..operands.len() {
                    let (lo, hi) = input(i)?;
                    r = (r.0.min(lo), r.1.max(hi));
                }
                r
            }
            OpKind::Softmax | OpKind::Sigmoid | OpKind::HardSigmoid => (0.0, 1.0),
            OpKind::HardSwish => {
                let (_, hi) = input(0)?;
                (-0.375, hi.max(0.0))
            }
            _ => {
                return Err(format!(
                    "{}: its range cannot be derived without calibration inputs; give --calib",
                    op.name
                ));
            }
        };
        out.insert(Value::of(node), range);
    }
    Ok(out
        .into_iter()
        .map(|(v, (lo, hi))| (v, (lo as f32, hi as f32)))
        .collect())
}

/// The network input's range from the module's recorded preprocessing: pixels in [0, 1], less
/// `preprocess.mean`, over `preprocess.std`, per channel.
fn input_range(module: &Module) -> Result<(f64, f64), String> {
    let floats = |name: &str| module.attrs.get(name).and_then(Attr::as_floats);
    let (Some(mean), Some(std)) = (floats("preprocess.mean"), floats("preprocess.std")) else {
        return Err(
            "the module records no preprocessing, so the input's range is unknown without calibration inputs: give --preprocess (or --calib)"
                .into(),
        );
    };
    Ok(mean
        .iter()
        .zip(&std)
        .filter(|(_, s)| **s > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (m, s)| {
            (lo.min(-m / s), hi.max((1.0 - m) / s))
        }))
}

#[cfg(test)]
mod tests {
    use super::clipped_normal;

    /// The clipped normal's moments against a numeric integral of the density.
    #[test]
    fn clipped_normal_moments_match_the_integral() {
        for &(m, v, lo, hi) in &[
            (0.0, 1.0, 0.0, f64::INFINITY),
            (1.5, 4.0, 0.0, 6.0),
            (-2.0, 0.25, 0.0, 6.0),
            (7.0, 1.0, 0.0, 6.0),
            (0.3, 2.0, -1.0, 1.0),
        ] {
            let s: f64 = f64::sqrt(v);
            let n = 400_000;
            let (from, to) = (m - 12.0 * s, m + 12.0 * s);
            let dx = (to - from) / n as f64;
            let (mut e, mut e2) = (0.0, 0.0);
            for i in 0..n {
                let y = from + (i as f64 + 0.5) * dx;
                let p = (-(y - m) * (y - m) / (2.0 * v)).exp()
                    / (2.0 * std::f64::consts::PI * v).sqrt()
                    * dx;
                let c = y.clamp(lo, hi);
                e += c * p;
                e2 += c * c * p;
            }
            let (mean, var) = clipped_normal(m, v, lo, hi);
            assert!(
                (mean - e).abs() < 1e-5,
                "{m} {v} [{lo}, {hi}]: mean {mean} vs {e}"
            );
            assert!(
                (var - (e2 - e * e)).abs() < 1e-5,
                "{m} {v} [{lo}, {hi}]: variance {var} vs {}",
                e2 - e * e
            );
        }
    }
}
