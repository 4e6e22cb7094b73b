//! The `qcc` compiler driver: command line, subcommands and output files. No IR logic lives here.

pub mod cli;
pub mod output;
