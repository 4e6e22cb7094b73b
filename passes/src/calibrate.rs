//! Calibration: run the float network on sample inputs and record the range of every value,
//! by min/max, a percentile, or the range that minimizes the expected quantization error.

use std::collections::HashMap;

use qcc_dialects::{Function, Module, Tensor, Value};
use qcc_runtime::Engine;
use qcc_runtime::wide::widest;
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
/// Bins on each side of zero of the histograms the MSE search works on.
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
        widen(&mut ranges, v, data)
    })?;
    Ok(ranges)
}

/// Widens `v`'s range in `ranges` to the finite values of `data`.
fn widen(ranges: &mut HashMap<Value, (f32, f32)>, v: Value, data: &[f32]) {
    let r = ranges
        .entry(v)
        .or_insert((f32::INFINITY, f32::NEG_INFINITY));
    let (lo, hi) = finite_range(data);
    *r = (r.0.min(lo), r.1.max(hi));
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

/// Counts of a value's magnitudes on one side of zero: `BINS` equal bins from 0 up to a power
/// of two above every magnitude seen. A larger magnitude doubles the top and merges the bins in
/// pairs, which moves no count across a bin edge, so the counts depend only on the values and
/// not on the order they arrive in: one pass over the calibration data is enough.
#[derive(Clone, Debug, Default)]
struct Side {
    /// The top of the last bin (0 while nothing above zero has been seen).
    top: f32,
    /// The largest magnitude seen.
    largest: f32,
    counts: Vec<u64>,
}

impl Side {
    /// Makes room for magnitudes up to `m`.
    fn reach(&mut self, m: f32) {
        self.largest = self.largest.max(m);
        if m < self.top || m <= 0.0 {
            return;
        }
        let top = power_of_two_above(m);
        if self.top == 0.0 {
            self.counts = vec![0; BINS];
        } else {
            let merge = (top / self.top) as usize;
            let mut merged = vec![0; BINS];
            for (i, n) in self.counts.iter().enumerate() {
                merged[i / merge] += n;
            }
            self.counts = merged;
        }
        self.top = top;
    }

    /// Bins per unit of magnitude.
    fn density(&self) -> f32 {
        if self.top > 0.0 {
            BINS as f32 / self.top
        } else {
            0.0
        }
    }

    /// The centres of the bins, in value units (`sign` 1 above zero, -1 below), with their counts.
    fn centres(&self, sign: f64) -> impl Iterator<Item = (f64, f64)> + '_ {
        let width = f64::from(self.top) / BINS as f64;
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(move |(i, n)| (sign * (i as f64 + 0.5) * width, *n as f64))
    }
}

/// The smallest power of two above `m` (itself finite and positive), at most 2^127.
fn power_of_two_above(m: f32) -> f32 {
    let m = m.max(f32::MIN_POSITIVE);
    // Clearing the mantissa gives the power of two at or below m.
    let below = f32::from_bits(m.to_bits() & 0x7f80_0000);
    if below >= 2f32.powi(127) {
        below
    } else {
        below * 2.0
    }
}

/// A value's distribution on both sides of zero.
#[derive(Clone, Debug, Default)]
struct Histogram {
    above: Side,
    below: Side,
}

impl Histogram {
    /// Counts the finite values of `data`.
    fn add(&mut self, data: &[f32]) {
        let (lo, hi) = finite_range(data);
        if lo > hi {
            return;
        }
        self.above.reach(hi);
        self.below.reach(-lo);
        if self.above.top == 0.0 && self.below.top == 0.0 {
            // Every value is zero: a range of [0, 0].
            return;
        }
        let (up, down) = (self.above.density(), self.below.density());
        // Bins below zero first, then above (`BINS` each), and one more that counts what is not
        // finite and is dropped.
        // Written as selects of values, so that a block's bins are computed in vector lanes.
        let bin = move |x: f32| -> u16 {
            const LAST: f32 = (BINS - 1) as f32;
            let below = x < 0.0;
            let product = x.abs() * if below { down } else { up };
            // `product.min(LAST)`, a NaN product giving way to the bound as there.
            let scaled = if product < LAST { product } else { LAST };
            // SAFETY: `scaled` is in [0, LAST] (a product of non-negative factors, or the bound),
            // so it converts to i32 exactly.
            let level = unsafe { scaled.to_int_unchecked::<i32>() };
            let side = if below { 0 } else { BINS as i32 };
            if x.is_finite() {
                (side + level) as u16
            } else {
                2 * BINS as u16
            }
        };
        let fill = |mut h: Vec<u64>, chunk: &[f32]| {
            count(&mut h, chunk, &bin);
            h
        };
        let counted = data
            .par_chunks(HISTOGRAM_CHUNK)
            .fold(|| vec![0u64; STRIDE], fill)
            .reduce(
                || vec![0u64; STRIDE],
                |mut x, y| {
                    x.iter_mut().zip(&y).for_each(|(x, y)| *x += y);
                    x
                },
            );
        for (side, counted) in [&mut self.below, &mut self.above]
            .into_iter()
            .zip(counted.chunks(BINS))
        {
            if side.top > 0.0 {
                side.counts
                    .iter_mut()
                    .zip(counted)
                    .for_each(|(h, c)| *h += c);
            }
        }
    }

    /// The range, `[-below.largest, above.largest]` shrunk by a factor in [0.2, 1], with the
    /// least expected squared error of u8 quantization.
    fn best_range(&self) -> (f32, f32) {
        let (a, b) = (0.0 - self.below.largest, self.above.largest);
        let bins: Vec<(f64, f64)> = self
            .below
            .centres(-1.0)
            .chain(self.above.centres(1.0))
            .collect();
        let best = (20..=100)
            .map(|k| k as f32 / 100.0)
            .map(|f| (quantization_error(&bins, a * f, b * f), f))
            .min_by(|x, y| x.0.total_cmp(&y.0))
            .map_or(1.0, |(_, f)| f);
        (a * best, b * best)
    }
}

/// The expected squared error of u8 quantization over `[lo, hi]` of values counted in bins
/// (centre, count).
fn quantization_error(bins: &[(f64, f64)], lo: f32, hi: f32) -> f64 {
    let scale = ((hi - lo) / 255.0).max(f32::MIN_POSITIVE) as f64;
    let (lo, hi) = (f64::from(lo), f64::from(hi));
    bins.iter()
        .map(|&(centre, n)| {
            let clipped = if centre < lo {
                lo - centre
            } else if centre > hi {
                centre - hi
            } else {
                return n * scale * scale / 12.0;
            };
            n * clipped * clipped
        })
        .sum()
}

/// Bins of a histogram's counts: `2 * BINS` and one for what is not finite.
const STRIDE: usize = 2 * BINS + 1;

/// Adds to `h` (`STRIDE` counts) the count of every value of `chunk` in its bin `bin(x)`.
fn count(h: &mut [u64], chunk: &[f32], bin: &impl Fn(f32) -> u16) {
    widest(
        #[inline(always)]
        || count_any(h, chunk, bin),
    )
}

/// [`count`], inlined into [`widest`]'s callers.
#[inline(always)]
fn count_any(h: &mut [u64], chunk: &[f32], bin: &impl Fn(f32) -> u16) {
    // Counts are sums, so chunks are counted apart and added. Within a chunk, neighbours go to
    // `COPIES` copies of the counts, so that a run of one value (the zeros after a ReLU) does
    // not wait on one counter.
    const COPIES: usize = 4;
    const BLOCK: usize = 512;
    let mut copies = vec![0u32; COPIES * STRIDE];
    let mut bins = [0u16; BLOCK];
    for block in chunk.chunks(BLOCK) {
        // The bins of a block first (a loop that vectorizes), then the counts.
        for (b, x) in bins.iter_mut().zip(block) {
            *b = bin(*x);
        }
        let mut groups = bins[..block.len()].chunks_exact(COPIES);
        for group in &mut groups {
            for (k, b) in group.iter().enumerate() {
                copies[k * STRIDE + usize::from(*b)] += 1;
            }
        }
        for b in groups.remainder() {
            copies[usize::from(*b)] += 1;
        }
    }
    for copy in copies.chunks(STRIDE) {
        h.iter_mut()
            .zip(copy)
            .for_each(|(h, c)| *h += u64::from(*c));
    }
}

fn mse(
    engine: &dyn Engine,
    module: &Module,
    inputs: &Tensor,
    unread: &dyn Fn(Value) -> bool,
) -> Result<HashMap<Value, (f32, f32)>, String> {
    let mut hists: HashMap<Value, Histogram> = HashMap::new();
    let mut extremes: HashMap<Value, (f32, f32)> = HashMap::new();
    observe(engine, module, inputs, |v, data, _| {
        if unread(v) {
            widen(&mut extremes, v, data);
        } else {
            hists.entry(v).or_default().add(data);
        }
    })?;
    let mut ranges: HashMap<Value, (f32, f32)> = hists
        .into_par_iter()
        .map(|(v, h)| (v, h.best_range()))
        .collect();
    ranges.extend(extremes);
    Ok(ranges)
}

/// The range of the function input and of every op output of `@main` on `inputs`. With
/// [`Method::Mse`], values for which `unread` holds (whose range the caller will not read) get
/// their min/max range instead, which costs a fraction of a histogram.
pub fn calibrate(
    engine: &dyn Engine,
    module: &Module,
    inputs: &Tensor,
    method: Method,
    unread: &dyn Fn(Value) -> bool,
) -> Result<HashMap<Value, (f32, f32)>, String> {
    match method {
        Method::MinMax => min_max(engine, module, inputs),
        Method::Percentile(p) => percentile(engine, module, inputs, p),
        Method::Mse => mse(engine, module, inputs, unread),
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
    use super::{BINS, Histogram, STRIDE, count, count_any, finite_range, power_of_two_above};

    #[test]
    fn counts_in_wide_vectors_are_the_scalar_ones() {
        let values: Vec<f32> = (0..5003)
            .map(|i| ((i * 7919) % 10_007) as f32 / 97.0 - 50.0)
            .chain([f32::NAN, f32::INFINITY, -0.0, 0.0])
            .collect();
        let bin = |x: f32| -> u16 {
            if x.is_finite() {
                (x.abs().min(BINS as f32 - 1.0) as u16) + if x < 0.0 { 0 } else { BINS as u16 }
            } else {
                2 * BINS as u16
            }
        };
        let (mut wide, mut scalar) = (vec![0u64; STRIDE], vec![0u64; STRIDE]);
        count(&mut wide, &values, &bin);
        count_any(&mut scalar, &values, &bin);
        assert_eq!(wide, scalar);
        assert_eq!(wide.iter().sum::<u64>(), values.len() as u64);
    }

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

    #[test]
    fn the_top_is_the_power_of_two_above() {
        assert_eq!(power_of_two_above(1.0), 2.0);
        assert_eq!(power_of_two_above(0.75), 1.0);
        assert_eq!(power_of_two_above(5.9), 8.0);
        assert_eq!(power_of_two_above(f32::MAX), 2f32.powi(127));
        assert!(power_of_two_above(1e-40) > 0.0);
    }

    #[test]
    fn the_counts_do_not_depend_on_the_order_values_arrive_in() {
        // Small values first make the histogram grow (and merge) four times on each side.
        let values: Vec<f32> = (0..40_000)
            .map(|i| ((i * 7919) % 10_007) as f32 / 997.0 - 3.0)
            .map(|x| x * x * x)
            .chain([f32::NAN, f32::INFINITY])
            .collect();
        let mut growing = Histogram::default();
        let mut sorted = values.clone();
        sorted.sort_by(|a, b| a.abs().total_cmp(&b.abs()));
        for chunk in sorted.chunks(1000) {
            growing.add(chunk);
        }
        let mut at_once = Histogram::default();
        at_once.add(&values);
        assert_eq!(growing.above.top, at_once.above.top);
        assert_eq!(growing.above.counts, at_once.above.counts);
        assert_eq!(growing.below.counts, at_once.below.counts);
        assert_eq!(growing.below.largest, 27.0);
        let counted: u64 = [&at_once.above, &at_once.below]
            .iter()
            .flat_map(|s| &s.counts)
            .sum();
        assert_eq!(counted, 40_000, "NaN and infinity are not counted");
        assert_eq!(at_once.best_range(), growing.best_range());
    }

    #[test]
    fn the_mse_range_clips_a_rare_outlier_and_keeps_a_dense_edge() {
        // A million values spread over [0, 1) and one at 100. Over [0, hi] the expected error
        // is 1e6 * (hi / 255)^2 / 12 + (100 - hi)^2, least at hi = 43.8.
        let mut values: Vec<f32> = (0..1_000_000).map(|i| i as f32 / 1e6).collect();
        values.push(100.0);
        let mut h = Histogram::default();
        h.add(&values);
        let (lo, hi) = h.best_range();
        assert_eq!(lo, 0.0);
        assert!((43.0..=45.0).contains(&hi), "{hi}");
        let values: Vec<f32> = (0..10_000).map(|i| i as f32 / 10_000.0).collect();
        // Uniform values keep their whole range.
        let mut h = Histogram::default();
        h.add(&values);
        assert_eq!(h.best_range(), (0.0, 0.9999));
        assert_eq!(h.above.counts.len(), BINS);
    }
}
