//! Calibration: run the float network on sample inputs and record the range of every value,
//! by min/max, a percentile, or the range that minimizes the expected quantization error.

use std::collections::HashMap;

use qcc_dialects::{Function, Module, Tensor, Value};
use qcc_runtime::Engine;
use rayon::prelude::*;

/// How a value's range is chosen from what calibration saw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// The smallest and largest value.
    MinMax,
    /// The given percentile at the top (and its mirror at the bottom), in percent.
    Percentile(f64),
    /// The range, shrunk from min/max, that minimizes clipping plus rounding error (u8).
    Mse,
}

/// The `samples` option of every pass that runs on calibration data.
pub const SAMPLES_OPTION: crate::pass::OptionSpec = crate::pass::OptionSpec {
    name: "samples",
    kind: crate::pass::OptionKind::Int {
        min: 1,
        max: i64::MAX,
    },
    default: "64",
    help: "calibration inputs used",
};

/// Images per interpreter run during calibration.
const CHUNK: usize = 8;
/// Bins of the histogram the MSE search works on.
const BINS: usize = 2048;

/// Values one task of the histogram count takes.
const HISTOGRAM_CHUNK: usize = 1 << 16;

/// Calls `see(value, data)` for the function input and every op output, over `inputs` in chunks.
pub(crate) fn observe(
    engine: &dyn Engine,
    module: &Module,
    inputs: &Tensor,
    mut see: impl FnMut(Value, &[f32], usize),
) -> Result<(), String> {
    let func = module
        .function("main")
        .ok_or("the module has no function @main")?;
    let interp = engine.prepare(module, "main")?;
    if inputs.as_f32().is_none() {
        return Err("calibration inputs must be f32".into());
    }
    let n = inputs.shape[0];
    let arg = Value::of(func.args[0]);
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        let chunk = inputs.items(start..end);
        let items = end - start;
        see(arg, chunk.as_f32().expect("f32"), items);
        interp
            .run_observed(&[chunk], &mut |node, _, t| {
                if let Some(v) = t.as_f32() {
                    see(Value::of(node), v, items);
                }
            })
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn min_max(
    engine: &dyn Engine,
    module: &Module,
    inputs: &Tensor,
) -> Result<HashMap<Value, (f32, f32)>, String> {
    let mut ranges: HashMap<Value, (f32, f32)> = HashMap::new();
    observe(engine, module, inputs, |v, data, _| {
        let r = ranges
            .entry(v)
            .or_insert((f32::INFINITY, f32::NEG_INFINITY));
        let (lo, hi) = finite_range(data);
        *r = (r.0.min(lo), r.1.max(hi));
    })?;
    Ok(ranges)
}

/// The smallest and largest finite value of `data` (infinities when there is none).
fn finite_range(data: &[f32]) -> (f32, f32) {
    data.par_chunks(1 << 16)
        .map(|chunk| {
            // Plain min/max first (one vector min and max per lane group; NaN never wins a
            // comparison); only a chunk that holds an infinity is scanned again without them.
            let (lo, hi) = lane_range(chunk, |x| (x, x));
            if lo > f32::NEG_INFINITY && hi < f32::INFINITY {
                return (lo, hi);
            }
            lane_range(chunk, |x| {
                if x.abs() < f32::INFINITY {
                    (x, x)
                } else {
                    (f32::INFINITY, f32::NEG_INFINITY)
                }
            })
        })
        .reduce(
            || (f32::INFINITY, f32::NEG_INFINITY),
            |a, b| (a.0.min(b.0), a.1.max(b.1)),
        )
}

/// The smallest and largest of `see(x)`'s two values over `data`, NaN skipped.
fn lane_range(data: &[f32], see: impl Fn(f32) -> (f32, f32)) -> (f32, f32) {
    const LANES: usize = 16;
    // Independent lanes so that the loop vectorizes.
    let (mut lo, mut hi) = ([f32::INFINITY; LANES], [f32::NEG_INFINITY; LANES]);
    let mut lanes = data.chunks_exact(LANES);
    for group in &mut lanes {
        for j in 0..LANES {
            let (low, high) = see(group[j]);
            lo[j] = lo[j].min(low);
            hi[j] = hi[j].max(high);
        }
    }
    for &x in lanes.remainder() {
        let (low, high) = see(x);
        lo[0] = if low < lo[0] { low } else { lo[0] };
        hi[0] = if high > hi[0] { high } else { hi[0] };
    }
    let fold = |v: [f32; LANES], f: fn(f32, f32) -> f32, init| v.into_iter().fold(init, f);
    (
        fold(lo, f32::min, f32::INFINITY),
        fold(hi, f32::max, f32::NEG_INFINITY),
    )
}

/// Keeps the `k` largest values seen (unordered).
fn keep_largest(kept: &mut Vec<f32>, data: impl Iterator<Item = f32>, k: usize) {
    kept.extend(data);
    if kept.len() > 2 * k.max(1024) {
        let at = kept.len() - k;
        kept.select_nth_unstable_by(at, |a, b| a.total_cmp(b));
        kept.drain(..at);
    }
}

fn percentile(
    engine: &dyn Engine,
    module: &Module,
    inputs: &Tensor,
    p: f64,
) -> Result<HashMap<Value, (f32, f32)>, String> {
    let mut tops: HashMap<Value, (Vec<f32>, Vec<f32>, usize)> = HashMap::new();
    let n = inputs.shape[0];
    observe(engine, module, inputs, |v, data, items| {
        let total = data.len() / items.max(1) * n;
        let k = ((total as f64) * (1.0 - p / 100.0)).ceil() as usize + 1;
        let e = tops.entry(v).or_insert_with(|| (Vec::new(), Vec::new(), k));
        keep_largest(&mut e.0, data.iter().copied().filter(|x| x.is_finite()), k);
        keep_largest(
            &mut e.1,
            data.iter().filter(|x| x.is_finite()).map(|x| -x),
            k,
        );
    })?;
    Ok(tops
        .into_iter()
        .map(|(v, (mut hi, mut lo, k))| {
            let pick = |vals: &mut Vec<f32>| -> f32 {
                if vals.is_empty() {
                    return 0.0;
                }
                vals.sort_by(|a, b| b.total_cmp(a));
                vals[(k - 1).min(vals.len() - 1)]
            };
            (v, (-pick(&mut lo), pick(&mut hi)))
        })
        .collect())
}

/// The expected squared error of u8 quantization over `[lo, hi]` of a histogram over `[a, b]`.
fn quantization_error(hist: &[u64], a: f32, b: f32, lo: f32, hi: f32) -> f64 {
    let scale = ((hi - lo) / 255.0).max(f32::MIN_POSITIVE) as f64;
    let width = (b - a) as f64 / hist.len() as f64;
    hist.iter()
        .enumerate()
        .map(|(i, n)| {
            let center = a as f64 + (i as f64 + 0.5) * width;
            let clipped = if center < lo as f64 {
                lo as f64 - center
            } else if center > hi as f64 {
                center - hi as f64
            } else {
                return *n as f64 * scale * scale / 12.0;
            };
            *n as f64 * clipped * clipped
        })
        .sum()
}

fn mse(
    engine: &dyn Engine,
    module: &Module,
    inputs: &Tensor,
) -> Result<HashMap<Value, (f32, f32)>, String> {
    let ranges = min_max(engine, module, inputs)?;
    let mut hists: HashMap<Value, Vec<u64>> = HashMap::new();
    observe(engine, module, inputs, |v, data, _| {
        let Some(&(lo, hi)) = ranges.get(&v) else {
            return;
        };
        let (a, b) = (lo.min(0.0), hi.max(0.0));
        if b <= a {
            return;
        }
        let h = hists.entry(v).or_insert_with(|| vec![0; BINS]);
        let w = (b - a) / BINS as f32;
        // Counts are sums, so chunks can be counted apart and added.
        let fill = |mut h: Vec<u64>, chunk: &[f32]| {
            for x in chunk.iter().filter(|x| x.is_finite()) {
                h[(((x - a) / w) as usize).min(BINS - 1)] += 1;
            }
            h
        };
        let counted = data
            .par_chunks(HISTOGRAM_CHUNK)
            .fold(|| vec![0u64; BINS], fill)
            .reduce(
                || vec![0u64; BINS],
                |mut x, y| {
                    x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
                    x
                },
            );
        h.iter_mut().zip(&counted).for_each(|(h, c)| *h += c);
    })?;
    Ok(ranges
        .into_iter()
        .map(|(v, (lo, hi))| {
            let Some(h) = hists.get(&v) else {
                return (v, (lo, hi));
            };
            let (a, b) = (lo.min(0.0), hi.max(0.0));
            let best = (20..=100)
                .map(|k| k as f32 / 100.0)
                .map(|f| (quantization_error(h, a, b, a * f, b * f), f))
                .min_by(|x, y| x.0.total_cmp(&y.0))
                .map_or(1.0, |(_, f)| f);
            (v, (a * best, b * best))
        })
        .collect())
}

/// The range of the function input and of every op output of `@main` on `inputs`.
pub fn calibrate(
    engine: &dyn Engine,
    module: &Module,
    inputs: &Tensor,
    method: Method,
) -> Result<HashMap<Value, (f32, f32)>, String> {
    match method {
        Method::MinMax => min_max(engine, module, inputs),
        Method::Percentile(p) => percentile(engine, module, inputs, p),
        Method::Mse => mse(engine, module, inputs),
    }
}

/// The first `n` items of a batch (the batch itself when it has no more).
pub fn take(inputs: &Tensor, n: usize) -> std::borrow::Cow<'_, Tensor> {
    if n >= inputs.shape[0] {
        std::borrow::Cow::Borrowed(inputs)
    } else {
        std::borrow::Cow::Owned(inputs.items(0..n))
    }
}

/// Checks calibration inputs against `@main`'s input type before any work.
pub fn check_inputs(func: &Function, inputs: &Tensor) -> Result<(), String> {
    let arg = func.args.first().ok_or("@main takes no input")?;
    let ty = func.value_type(Value::of(*arg));
    if inputs.shape.len() != ty.rank()
        || inputs.shape.is_empty()
        || inputs.shape[1..] != ty.shape[1..]
        || inputs.as_f32().is_none()
    {
        return Err(format!(
            "calibration data of shape {:?} does not fit the network input {ty}",
            inputs.shape
        ));
    }
    if inputs.shape[0] == 0 {
        return Err("the calibration data holds no samples".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::finite_range;

    #[test]
    fn the_range_skips_nan_and_infinities() {
        let mut data: Vec<f32> = (0..100_000).map(|i| (i % 977) as f32 - 300.0).collect();
        assert_eq!(finite_range(&data), (-300.0, 676.0));
        data[5] = f32::NAN;
        data[70_000] = f32::INFINITY;
        data[99_999] = f32::NEG_INFINITY;
        data[12] = 1000.5;
        assert_eq!(finite_range(&data), (-300.0, 1000.5));
        let none = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        assert_eq!(finite_range(&none), (f32::INFINITY, f32::NEG_INFINITY));
        assert_eq!(finite_range(&[]), (f32::INFINITY, f32::NEG_INFINITY));
    }
}
