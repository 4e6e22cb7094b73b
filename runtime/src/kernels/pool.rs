//! Pooling: windowed average and max, and global average.

use qcc_dialects::Tensor;

/// A pooling window.
pub struct PoolGeometry {
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Vertical, horizontal step.
    pub strides: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    /// Vertical, horizontal dilation (max pooling).
    pub dilations: [usize; 2],
    /// Output size (computed by shape inference, which knows ceil mode).
    pub out: [usize; 2],
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
            for xo in 0..ow {
                let (mut acc, mut count, mut max) = (0f32, 0usize, f32::NEG_INFINITY);
                let mut window = 0usize;
                for ky in 0..g.kernel[0] {
                    let iy = (y * g.strides[0] + ky * g.dilations[0]) as isize - g.pads[0] as isize;
                    for kx in 0..g.kernel[1] {
                        let ix =
                            (xo * g.strides[1] + kx * g.dilations[1]) as isize - g.pads[1] as isize;
                        // Positions inside the padded input count for count_include_pad.
                        if iy < (h + g.pads[2]) as isize && ix < (w + g.pads[3]) as isize {
                            window += 1;
                        }
                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                            continue;
                        }
                        let v = plane[iy as usize * w + ix as usize];
                        acc += v;
                        count += 1;
                        max = max.max(v);
                    }
                }
                out.push(match kind {
                    PoolKind::Max => max,
                    PoolKind::Avg { count_include_pad } => {
                        let d = if count_include_pad { window } else { count };
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
