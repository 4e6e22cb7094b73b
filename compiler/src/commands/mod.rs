//! One module per subcommand.

pub mod build;
pub mod compare;
pub mod compile;
pub mod eval;
pub mod export;
pub mod import;
pub mod report;
pub mod run;
