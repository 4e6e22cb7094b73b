//! qcc's IR core: modules, functions as petgraph dataflow graphs, tensor and quantized types,
//! attributes, the op registry with the `nn` and `quant` dialects, the verifier, and the textual
//! format (logos lexer, lalrpop grammar, printer).

pub mod ast;
pub mod attr;
pub mod diag;
pub mod ir;
pub mod lexer;
pub mod ops;
pub mod parse;
pub mod printer;
pub mod registry;
mod syntax;
pub mod tensor;
pub mod types;
pub mod verifier;
pub mod weights;

pub use attr::{Attr, Attrs, DenseAttr};
pub use diag::{Diagnostic, SourceFile, Span};
pub use ir::{Function, Module, Node, Operation, Use, Value, WeightStore};
pub use ops::kind::OpKind;
pub use parse::{parse_file, parse_module};
pub use petgraph::stable_graph::NodeIndex;
pub use printer::print_module;
pub use registry::{OpDef, Registry, registry};
pub use tensor::{Tensor, TensorData};
pub use types::{ElemType, MAX_ELEMENTS, QuantParams, QuantType, Storage, TensorType, f32_scale};
pub use verifier::verify_module;
