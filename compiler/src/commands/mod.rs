//! One module per subcommand.

pub mod compile;
pub mod eval;
pub mod import;
pub mod run;
