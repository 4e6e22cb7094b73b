//! How far a model's outputs are from a reference's: agreement, SQNR, KL, accuracy, and per layer
//! the mean activation shift (the paper's figure of merit) and SQNR.

/// Index of the largest value.
pub fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|a, b| row[*a].total_cmp(&row[*b]))
        .unwrap_or(0)
}

/// Whether `class` is among the `k` largest values of `row`.
pub fn in_top_k(row: &[f32], class: usize, k: usize) -> bool {
    let v = row[class];
    row.iter().filter(|x| x.total_cmp(&v).is_gt()).count() < k
}

fn softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) as f64;
    let e: Vec<f64> = row.iter().map(|v| (*v as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// Output quality of a model against a reference on the same inputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Comparison {
    /// Inputs compared.
    pub count: usize,
    /// % of inputs whose top-1 class equals the reference's.
    pub top1_agreement: f64,
    /// % of inputs whose reference top-1 class is in the model's top 5.
    pub top5_agreement: f64,
    /// `10 log10(sum f^2 / sum (f - q)^2)` over all outputs, in dB.
    pub sqnr_db: f64,
    /// Mean KL(softmax f || softmax q).
    pub kl: f64,
    /// Labelled inputs (label >= 0).
    pub labelled: usize,
    /// Top-1 / top-5 accuracy of the reference and of the model, in % of labelled inputs.
    pub accuracy: Option<[f64; 4]>,
}

/// Compares `model` outputs with `reference` outputs (`[N, classes]` each, row-major).
pub fn compare(
    reference: &[f32],
    model: &[f32],
    classes: usize,
    labels: Option<&[i64]>,
) -> Comparison {
    let n = reference.len() / classes.max(1);
    let (mut t1, mut t5, mut kl, mut signal, mut noise) = (0usize, 0usize, 0f64, 0f64, 0f64);
    let mut acc = [0usize; 4];
    let mut labelled = 0;
    for i in 0..n {
        let f = &reference[i * classes..(i + 1) * classes];
        let q = &model[i * classes..(i + 1) * classes];
        let ft = argmax(f);
        t1 += usize::from(argmax(q) == ft);
        t5 += usize::from(in_top_k(q, ft, 5));
        let (pf, pq) = (softmax(f), softmax(q));
        kl += pf
            .iter()
            .zip(&pq)
            .map(|(a, b)| {
                if *a > 0.0 {
                    a * (a / b.max(1e-300)).ln()
                } else {
                    0.0
                }
            })
            .sum::<f64>();
        for (a, b) in f.iter().zip(q) {
            signal += (*a as f64).powi(2);
            noise += (*a as f64 - *b as f64).powi(2);
        }
        if let Some(&label) = labels.and_then(|l| l.get(i))
            && label >= 0
            && (label as usize) < classes
        {
            let c = label as usize;
            labelled += 1;
            acc[0] += usize::from(ft == c);
            acc[1] += usize::from(in_top_k(f, c, 5));
            acc[2] += usize::from(argmax(q) == c);
            acc[3] += usize::from(in_top_k(q, c, 5));
        }
    }
    let pct = |k: usize, of: usize| {
        if of == 0 {
            0.0
        } else {
            100.0 * k as f64 / of as f64
        }
    };
    Comparison {
        count: n,
        top1_agreement: pct(t1, n),
        top5_agreement: pct(t5, n),
        sqnr_db: if noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (signal / noise).log10()
        },
        kl: if n == 0 { 0.0 } else { kl / n as f64 },
        labelled,
        accuracy: (labelled > 0).then(|| acc.map(|a| pct(a, labelled))),
    }
}

/// Running per-channel statistics of one layer's output against the reference's.
#[derive(Clone, Debug, Default)]
pub struct LayerStats {
    count: Vec<f64>,
    sum_f: Vec<f64>,
    sum_q: Vec<f64>,
    sum_f2: Vec<f64>,
    signal: f64,
    noise: f64,
}

impl LayerStats {
    /// Adds a batch of outputs, NC... layout, channels on axis 1.
    pub fn add(&mut self, f: &[f32], q: &[f32], shape: &[usize]) {
        let c = shape.get(1).copied().unwrap_or(1);
        let inner: usize = shape.iter().skip(2).product();
        if self.count.len() != c {
            *self = LayerStats {
                count: vec![0.0; c],
                sum_f: vec![0.0; c],
                sum_q: vec![0.0; c],
                sum_f2: vec![0.0; c],
                ..LayerStats::default()
            };
        }
        for (i, (a, b)) in f.iter().zip(q).enumerate() {
            let ch = (i / inner.max(1)) % c;
            let (a, b) = (*a as f64, *b as f64);
            self.count[ch] += 1.0;
            self.sum_f[ch] += a;
            self.sum_q[ch] += b;
            self.sum_f2[ch] += a * a;
            self.signal += a * a;
            self.noise += (a - b) * (a - b);
        }
    }

    /// Mean over channels of |mean(q) - mean(f)| / std(f). Channels whose float spread is below
    /// a thousandth of the layer's typical spread (dead or constant channels, where any shift
    /// divides by almost nothing) are skipped.
    pub fn mean_shift(&self) -> f64 {
        let stats: Vec<(f64, f64)> = (0..self.count.len())
            .filter(|ch| self.count[*ch] > 0.0)
            .map(|ch| {
                let n = self.count[ch];
                let mf = self.sum_f[ch] / n;
                let std = (self.sum_f2[ch] / n - mf * mf).max(0.0).sqrt();
                ((self.sum_q[ch] / n - mf).abs(), std)
            })
            .collect();
        let typical = stats.iter().map(|s| s.1).sum::<f64>() / stats.len().max(1) as f64;
        let kept: Vec<f64> = stats
            .iter()
            .filter(|(_, std)| *std > 1e-3 * typical && *std > 1e-6)
            .map(|(shift, std)| shift / std)
            .collect();
        if kept.is_empty() {
            0.0
        } else {
            kept.iter().sum::<f64>() / kept.len() as f64
        }
    }

    /// `10 log10(sum f^2 / sum (f - q)^2)` in dB.
    pub fn sqnr_db(&self) -> f64 {
        if self.noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.signal / self.noise).log10()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_outputs_agree_fully() {
        let f = [1.0, 3.0, 2.0, 0.0, 0.5, 0.2];
        let c = compare(&f, &f, 3, Some(&[1, -1]));
        assert_eq!(
            (c.top1_agreement, c.top5_agreement, c.kl),
            (100.0, 100.0, 0.0)
        );
        assert!(c.sqnr_db.is_infinite());
        assert_eq!(c.labelled, 1);
        assert_eq!(c.accuracy, Some([100.0, 100.0, 100.0, 100.0]));
    }

    #[test]
    fn sqnr_and_agreement_by_hand() {
        // Signal 1+9+4 = 14, noise (1-4)^2 = 9; the top class moves from 1 to 0.
        let (f, q) = ([1.0, 3.0, 2.0], [4.0, 3.0, 2.0]);
        let c = compare(&f, &q, 3, None);
        assert_eq!(c.top1_agreement, 0.0);
        assert_eq!(c.top5_agreement, 100.0);
        assert!((c.sqnr_db - 10.0 * (14.0f64 / 9.0).log10()).abs() < 1e-9);
        assert!(c.kl > 0.0);
    }

    #[test]
    fn mean_shift_is_relative_to_the_channel_spread() {
        let mut s = LayerStats::default();
        // One channel, values 0 and 2 (mean 1, std 1); the model adds 0.5 everywhere.
        s.add(&[0.0, 2.0], &[0.5, 2.5], &[1, 1, 2]);
        assert!((s.mean_shift() - 0.5).abs() < 1e-12);
        assert!((s.sqnr_db() - 10.0 * (4.0f64 / 0.5).log10()).abs() < 1e-9);
    }

    #[test]
    fn nearly_constant_channels_do_not_dominate_the_shift() {
        let mut s = LayerStats::default();
        // Channel 0: values 0 and 2, shifted by 0.5 (0.5 std). Channel 1: 1.0 and 1.00002 (std
        // 1e-5), shifted by 1e-4: 10 std, but of a channel that carries nothing.
        s.add(
            &[0.0, 2.0, 1.0, 1.00002],
            &[0.5, 2.5, 1.0001, 1.00012],
            &[1, 2, 2],
        );
        assert!((s.mean_shift() - 0.5).abs() < 1e-6, "{}", s.mean_shift());
    }
}
