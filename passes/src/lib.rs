//! qcc's passes: the `Pass` trait, the pass registry and pipeline parser, the pass manager, and
//! every pass.

pub mod bias;
pub mod bias_analytic;
pub mod bias_correct;
pub mod bias_search;
pub mod calibrate;
pub mod canonicalize;
pub mod equalize;
pub mod fold_batchnorm;
pub mod moments;
pub mod pass;
pub mod pipeline;
pub mod quantize;
pub mod rewrite;

pub use pass::{OptionKind, OptionSpec, OptionValue, Options, Pass, PassContext, PassInfo};
pub use pipeline::{
    PassManager, PassTiming, PipelineError, Step, lookup, parse_pipeline, parse_pipeline_given,
    passes,
};
