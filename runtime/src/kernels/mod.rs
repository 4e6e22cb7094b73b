//! The reference engine's kernels: float kernels for the `nn` ops (NCHW, any batch size) and
//! integer kernels for the `quant` ops. Private to the reference interpreter; other crates reach
//! them only through `Interpreter` and the semantics in `crate::quant`.

pub mod elementwise;
pub mod gemm;
pub mod layers;
pub mod layout;
pub mod pool;
pub mod quant;

#[cfg(test)]
mod tests;
