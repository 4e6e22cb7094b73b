//! The kernels against straightforward definitions and hand-computed integer cases.

mod float;
mod quant;
