//! The kernels against straightforward definitions and hand-computed integer cases.

mod float;
mod quant;

use qcc_dialects::ops::attrs::{Pool2dAttrs, Window};

use crate::pooling::PoolGeometry;

/// A pooling window (no padding counted in averages) producing `out`.
fn pool(
    kernel: [usize; 2],
    strides: [usize; 2],
    pads: [usize; 4],
    dilations: [usize; 2],
    out: [usize; 2],
) -> PoolGeometry {
    PoolGeometry {
        attrs: Pool2dAttrs {
            kernel,
            window: Window {
                strides,
                pads,
                dilations,
            },
            ceil_mode: false,
            count_include_pad: false,
        },
        out,
    }
}
