//! The built-in dialects: `nn` (float network ops) and `quant` (integer ops).

pub mod attrs;
pub mod cost;
pub mod kind;
pub mod nn;
pub mod quant;
pub mod shape;

use crate::registry::{AttrKind as K, AttrSpec, optional, required};

/// Attributes of average pooling, float or integer.
pub(crate) const AVG_POOL_ATTRS: [AttrSpec; 5] = [
    required("kernel", K::Ints),
    optional("strides", K::Ints),
    optional("pads", K::Ints),
    optional("ceil_mode", K::Bool),
    optional("count_include_pad", K::Bool),
];

/// Attributes of max pooling, float or integer.
pub(crate) const MAX_POOL_ATTRS: [AttrSpec; 5] = [
    required("kernel", K::Ints),
    optional("strides", K::Ints),
    optional("pads", K::Ints),
    optional("dilations", K::Ints),
    optional("ceil_mode", K::Bool),
];
