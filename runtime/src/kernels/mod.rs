//! Float reference kernels for the `nn` ops, NCHW layout, any batch size.

pub mod elementwise;
pub mod gemm;
pub mod layers;
pub mod layout;
pub mod pool;
pub mod quant;
