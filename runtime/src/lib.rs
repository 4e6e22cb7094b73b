//! qcc's runtime: the reference interpreter that runs a module's ops on tensors, with an observer
//! hook that sees every op's output.

pub mod engine;
pub mod float;
pub mod interp;
pub mod io;
mod kernels;
pub mod plan;
pub mod pooling;
pub mod quant;
pub mod wide;

pub use engine::{Engine, OpKernel, Prepared, Reference, Steps};
pub use interp::{Interpreter, RunError, Stepper};
pub use qcc_dialects::{Tensor, TensorData};
