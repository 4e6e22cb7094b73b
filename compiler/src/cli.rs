//! The `qcc` command line: argument parsing, dispatch to the subcommands, error reporting.

use std::ffi::OsString;
use std::io::Write;

use clap::{Parser, Subcommand};

use crate::commands::compare::{CompareArgs, compare_pipelines};
use crate::commands::compile::{CompileArgs, compile};
use crate::commands::eval::{EvalArgs, eval};
use crate::commands::import::{ImportArgs, import};
use crate::commands::report::{ReportArgs, report};
use crate::commands::run::{RunArgs, run as run_model};
use crate::model::Failure;

const EXAMPLES: &str = "\
Examples:
  Parse, verify and print a module:
    qcc model.ir
  Fold batch norm into the layers before it, clean up, print the result:
    qcc --passes=fold-batchnorm,canonicalize model.ir
  Write the result to out.ir (and out.safetensors when weights changed):
    qcc --passes=fold-batchnorm,canonicalize model.ir -o out.ir
  Watch each pass and time it:
    qcc --passes=fold-batchnorm,canonicalize --print-ir-after-all --timing -v model.ir
  Import an ONNX model (weights to model.safetensors), or run one on a folder of images:
    qcc import model.onnx -o model.ir --preprocess tf
    qcc run model.onnx --input photos/ --top 5
  List the passes and their options, or the ops:
    qcc --list-passes
    qcc --list-ops

A pipeline is a comma-separated list of passes, each with options in braces if needed:
  pass-a,pass-b{key=value,key2=value2}
Passes that a listed pass requires are added before it.";

/// qcc: a post-training quantization compiler for neural networks. It reads a model (qcc's
/// textual IR, or ONNX), runs a pipeline of passes with the verifier after each, and prints or
/// writes the result.
#[derive(Parser, Debug)]
#[command(name = "qcc", version, after_help = EXAMPLES, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// A subcommand; without one, qcc compiles INPUT.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options of the default (compile) command.
    #[command(flatten)]
    pub compile: CompileArgs,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Convert an ONNX model to a .ir module and a .safetensors file of its weights.
    Import(ImportArgs),
    /// Run a model on images or tensors: print the top classes, or write the outputs as .npy.
    Run(RunArgs),
    /// Score a (quantized) model against a float reference: agreement, SQNR, KL, accuracy.
    Eval(EvalArgs),
    /// Quantize a float model with several pipelines and score each against float, as a table.
    Compare(CompareArgs),
    /// Plot and tabulate the mean activation shift per layer of quantized models against float.
    Report(ReportArgs),
}

fn list_passes(out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "Passes (use as --passes=a,b{{key=value}}):")?;
    for p in qcc_passes::passes() {
        writeln!(out, "  {:<24} {}", p.name, p.summary)?;
        for o in p.options {
            writeln!(
                out,
                "      {}={:<18} {} (default {})",
                o.name,
                o.describe_kind(),
                o.help,
                o.default
            )?;
        }
        if !p.requires.is_empty() {
            writeln!(out, "      requires: {}", p.requires.join(", "))?;
        }
    }
    Ok(())
}

fn list_ops(out: &mut dyn Write) -> std::io::Result<()> {
    for def in qcc_dialects::registry().ops() {
        writeln!(out, "  {:<24} {}", def.name, def.summary)?;
    }
    Ok(())
}

/// Runs qcc with `args` (the first is the program name); returns the exit code.
pub fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let text = e.render().to_string();
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = out.write_all(text.as_bytes());
                    0
                }
                _ => {
                    let _ = err.write_all(text.as_bytes());
                    1
                }
            };
        }
    };
    let result = match &cli.command {
        Some(Command::Import(args)) => import(args, err),
        Some(Command::Run(args)) => run_model(args, out, err),
        Some(Command::Eval(args)) => eval(args, out, err),
        Some(Command::Report(args)) => report(args, out, err),
        Some(Command::Compare(args)) => compare_pipelines(args, out, err),
        None if cli.compile.list_passes => {
            list_passes(out).map_err(|e| Failure::msg(e.to_string()))
        }
        None if cli.compile.list_ops => list_ops(out).map_err(|e| Failure::msg(e.to_string())),
        None => compile(&cli.compile, out, err),
    };
    match result {
        Ok(()) => 0,
        Err(failure) => {
            for d in &failure.diagnostics {
                let _ = err.write_all(d.render(failure.file.as_ref()).as_bytes());
            }
            1
        }
    }
}
