//! The built-in dialects: `nn` (float network ops) and `quant` (integer ops).

pub mod nn;
pub mod quant;
pub mod shape;
