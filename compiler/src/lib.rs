//! The `qcc` compiler driver: command line, ONNX front end, data loading, subcommands and output
//! files. No IR logic lives here.

pub mod cli;
pub mod commands;
pub mod data;
pub mod engines;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod output;
pub mod preprocess;
pub mod profile;
pub mod progress;
