//! Pooling: windowed average and max, and global average.

use qcc_dialects::Tensor;

use crate::pooling::PoolGeometry;

/// Which reduction a window applies.
#[derive(Clone, Copy)]
pub enum PoolKind {
    /// Maximum over the window (padding ignored).
    Max,
    /// Mean (what it divides by: [`PoolGeometry::divisor`]).
    Avg,
}

/// NCHW pooling.
pub fn pool2d(x: &[f32], xs: &[usize], g: &PoolGeometry, kind: PoolKind) -> Tensor {
    let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let [oh, ow] = g.out;
    let mut out = Vec::with_capacity(n * c * oh * ow);
    for plane in x.chunks_exact(h * w).take(n * c) {
        for y in 0..oh {
            for xo in 0..ow {
                out.push(match kind {
                    PoolKind::Max => g.float_max(plane, (y, xo), (h, w)),
                    PoolKind::Avg => g.float_average(plane, (y, xo), (h, w)),
                });
            }
        }
    }
    Tensor::from_f32(vec![n, c, oh, ow], out)
}

/// Mean over H and W: [N, C, H, W] -> [N, C, 1, 1]; each plane summed in f64 in order, the sum
/// rounded to f32 and divided by the plane size; a NaN mean is `canonical_nan`'s.
pub fn global_avg(x: &[f32], xs: &[usize]) -> Tensor {
    let hw = xs[2] * xs[3];
    let data = x
        .chunks_exact(hw)
        .map(|p| {
            let sum = p.iter().map(|v| *v as f64).sum::<f64>();
            crate::float::canonical_nan(sum as f32 / hw as f32)
        })
        .collect();
    Tensor::from_f32(vec![xs[0], xs[1], 1, 1], data)
}
