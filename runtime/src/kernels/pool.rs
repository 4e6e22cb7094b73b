//! Pooling: windowed average and max, and global average.

use qcc_dialects::Tensor;
use qcc_dialects::ops::attrs::Pool2dAttrs;

/// A pooling op's window and the output size it produces.
pub struct PoolGeometry {
    /// The op's kernel, strides, pads, dilations and `count_include_pad`.
    pub attrs: Pool2dAttrs,
    /// Output height and width (computed by shape inference, which knows ceil mode).
    pub out: [usize; 2],
}

/// The taps of one pooling window along one axis that fall inside the input: input positions
/// `first, first + step, ...` (`count` of them), and how many of the window's taps lie inside the
/// padded input (what `count_include_pad` divides by).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Taps {
    /// The first input position read.
    pub first: usize,
    /// How many input positions are read.
    pub count: usize,
    /// The distance between them (the dilation).
    pub step: usize,
    /// Taps inside the input or its padding.
    pub padded: usize,
}

impl Taps {
    /// The input positions read, in order.
    pub fn positions(self) -> impl Iterator<Item = usize> {
        (0..self.count).map(move |i| self.first + i * self.step)
    }
}

impl PoolGeometry {
    /// The taps of output position `o` along `axis` (0: rows, 1: columns) of an input `len`
    /// long. Only taps inside the input are visited, so a window much larger than its input
    /// costs no more than the input.
    pub fn taps(&self, axis: usize, o: usize, len: usize) -> Taps {
        let w = &self.attrs.window;
        let (kernel, step) = (
            self.attrs.kernel[axis] as i128,
            w.dilations[axis].max(1) as i128,
        );
        let start = o as i128 * w.strides[axis] as i128 - w.pads[axis] as i128;
        // Taps k in [0, kernel) with start + k * step below `limit`.
        let below = |limit: i128| -> i128 {
            if limit <= start {
                0
            } else {
                ((limit - start + step - 1) / step).min(kernel)
            }
        };
        let skipped = if start >= 0 {
            0
        } else {
            ((-start + step - 1) / step).min(kernel)
        };
        let end = below(len as i128);
        let count = (end - skipped).max(0);
        Taps {
            first: if count > 0 {
                (start + skipped * step) as usize
            } else {
                0
            },
            count: count as usize,
            step: step as usize,
            padded: below(len as i128 + w.pads[axis + 2] as i128) as usize,
        }
    }
}

/// Which reduction a window applies.
#[derive(Clone, Copy)]
pub enum PoolKind {
    /// Maximum over the window (padding ignored).
    Max,
    /// Mean; `count_include_pad` divides by the whole window size.
    Avg {
        /// Whether padded positions count in the divisor.
        count_include_pad: bool,
    },
}

/// NCHW pooling.
pub fn pool2d(x: &[f32], xs: &[usize], g: &PoolGeometry, kind: PoolKind) -> Tensor {
    let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let [oh, ow] = g.out;
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in x.chunks_exact(h * w).take(n * c) {
        for y in 0..oh {
            let rows = g.taps(0, y, h);
            for xo in 0..ow {
                let cols = g.taps(1, xo, w);
                let (mut acc, mut max) = (0f32, f32::NEG_INFINITY);
                for iy in rows.positions() {
                    for ix in cols.positions() {
                        let v = plane[iy * w + ix];
                        acc += v;
                        max = max.max(v);
                    }
                }
                out.push(match kind {
                    PoolKind::Max => max,
                    PoolKind::Avg { count_include_pad } => {
                        let d = if count_include_pad {
                            rows.padded * cols.padded
                        } else {
                            rows.count * cols.count
                        };
                        if d == 0 { 0.0 } else { acc / d as f32 }
                    }
                });
            }
        }
    }
    Tensor::from_f32(vec![n, c, oh, ow], out)
}

/// Mean over H and W: [N, C, H, W] -> [N, C, 1, 1].
pub fn global_avg(x: &[f32], xs: &[usize]) -> Tensor {
    let hw = xs[2] * xs[3];
    let data = x
        .chunks_exact(hw)
        .map(|p| p.iter().map(|v| *v as f64).sum::<f64>() as f32 / hw as f32)
        .collect();
    Tensor::from_f32(vec![xs[0], xs[1], 1, 1], data)
}
