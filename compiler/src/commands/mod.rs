//! One module per subcommand.

pub mod compile;
pub mod import;
pub mod run;
