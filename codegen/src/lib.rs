//! qcc's code generator: Cranelift-compiled kernels for the ops of a module, and the engine that
//! runs a function on them ([`Native`]), every op without a generated kernel on its reference
//! kernel. `docs/engine.md` explains the kernels and how to add one.

mod clif;
pub mod cpu;
mod depthwise;
mod elementwise;
pub mod emit;
mod engine;
mod float;
mod float_map;
mod gemm;
pub mod jit;
mod layers;
mod layout;
pub mod object;
mod pool;
pub mod program;
mod reduce;
mod windows;

pub use engine::{Native, without_kernels};
pub use jit::{Dumps, Features, NO_VNNI_VAR, set_dumps};
