//! The windows of a pooling op: which input positions each output reads, and what an average
//! divides by. Both engines' pooling kernels follow it.

use qcc_dialects::Operation;
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
    /// The geometry of pooling op `op` (its output size from the declared result).
    pub fn of(op: &Operation) -> Result<PoolGeometry, String> {
        let rs = &op.results[0].shape;
        Ok(PoolGeometry {
            attrs: Pool2dAttrs::of(op)?,
            out: [
                rs.get(2).copied().unwrap_or(1),
                rs.get(3).copied().unwrap_or(1),
            ],
        })
    }

    /// `f` folded over the input positions `i` (`row * w + column`) that the window of output
    /// `(y, x)` reads, in order (row by row), for an input `h` by `w`.
    pub fn fold<T>(
        &self,
        (y, x): (usize, usize),
        (h, w): (usize, usize),
        init: T,
        f: impl Fn(T, usize) -> T,
    ) -> T {
        let (rows, cols) = (self.taps(0, y, h), self.taps(1, x, w));
        let mut acc = init;
        for iy in rows.positions() {
            for ix in cols.positions() {
                acc = f(acc, iy * w + ix);
            }
        }
        acc
    }

    /// The sum of `value(i)` over the positions the window of output `(y, x)` reads.
    pub fn sum(
        &self,
        at: (usize, usize),
        size: (usize, usize),
        value: impl Fn(usize) -> i64,
    ) -> i64 {
        self.fold(at, size, 0, |s, i| s + value(i))
    }

    /// Float max pooling's output `(y, x)` of `plane` (`h` by `w`): the largest value its window
    /// reads, NaN ignored, -inf for a window that reads none.
    pub fn float_max(&self, plane: &[f32], at: (usize, usize), size: (usize, usize)) -> f32 {
        self.fold(at, size, f32::NEG_INFINITY, |m, i| m.max(plane[i]))
    }

    /// Float average pooling's output `(y, x)` of `plane` (`h` by `w`): the sum from +0.0 of the
    /// values its window reads, in order, divided by [`PoolGeometry::divisor`] (0 when that is
    /// 0); a NaN is [`crate::float::canonical_nan`]'s.
    pub fn float_average(&self, plane: &[f32], at: (usize, usize), size: (usize, usize)) -> f32 {
        let acc = self.fold(at, size, 0f32, |a, i| a + plane[i]);
        let d = self.divisor(at.0, at.1, size.0, size.1);
        crate::float::canonical_nan(if d == 0 { 0.0 } else { acc / d as f32 })
    }

    /// What an average over the window of output `(y, x)` divides by (0 for a window with no
    /// position in the padded input), for an input `h` by `w`.
    pub fn divisor(&self, y: usize, x: usize, h: usize, w: usize) -> usize {
        let (rows, cols) = (self.taps(0, y, h), self.taps(1, x, w));
        if self.attrs.count_include_pad {
            rows.padded * cols.padded
        } else {
            rows.count * cols.count
        }
    }

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
