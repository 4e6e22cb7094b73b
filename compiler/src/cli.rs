//! The `qcc` command line: argument parsing, dispatch to the subcommands, error reporting.

use std::ffi::OsString;
use std::io::Write;

use clap::{Parser, Subcommand};

use crate::commands::build::{BuildArgs, build};
use crate::commands::compare::{CompareArgs, compare_pipelines};
use crate::commands::compile::{CompileArgs, compile};
use crate::commands::eval::{EvalArgs, eval};
use crate::commands::export::{ExportArgs, export};
use crate::commands::import::{ImportArgs, import};
use crate::commands::report::{ReportArgs, report};
use crate::commands::run::{RunArgs, run as run_model};
use crate::model::Failure;

const EXAMPLES: &str = "\
Examples:
  Quantize an ONNX model to int8, calibrated on a folder of images, with bias correction:
    qcc --passes=quantize,bias-correct --calib photos/ model.onnx -o model.q.ir
  The same with per-tensor weights and the bias-only fitting phase instead:
    qcc --passes=quantize{granularity=per-tensor},bias-fit --calib photos/ model.onnx -o model.q.ir
  Score the result against float, or compare naive quantization with bias correction:
    qcc eval model.q.ir --reference model.onnx --data photos/
    qcc compare model.onnx --calib photos/
  Run a model on images and print the top 5 classes:
    qcc run model.q.ir --input photos/
  Fold batch norms and clean up, then print the module (or write it with -o):
    qcc --passes=fold-batchnorm,canonicalize model.ir
  Watch each pass and time it:
    qcc --passes=fold-batchnorm,quantize --calib photos/ --print-ir-after-all --timing -v model.ir
  Import an ONNX model (weights to model.safetensors):
    qcc import model.onnx -o model.ir --preprocess tf
  Export a quantized module as QDQ ONNX, for ONNX Runtime (or give -o model.q.onnx above):
    qcc export model.q.ir -o model.q.onnx
  List the passes and their options, or the ops:
    qcc --list-passes
    qcc --list-ops

A pipeline is a comma-separated list of passes, each with options in braces if needed:
  pass-a,pass-b{key=value,key2=value2}
Passes that a listed pass requires are added before it (quantize adds fold-batchnorm).
A written module and its weights file appear together or not at all; errors exit with code 1.";

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

    /// Threads for the parallel work (the images of a batch, layers' channels, calibration);
    /// default: one per core.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub threads: Option<u64>,

    /// What runs the modules (the run, eval, compare and report commands, calibration and the
    /// bias passes): `cranelift`, generated native kernels (ops without one run on their
    /// reference kernel, with a warning), or `reference`, the interpreter everything is checked
    /// against.
    #[arg(long, global = true, value_enum, default_value_t = crate::engines::EngineChoice::Cranelift)]
    pub engine: crate::engines::EngineChoice,

    /// Write the CLIF of every kernel the code generator compiles into folder DIR (made if missing).
    #[arg(long, global = true, value_name = "DIR")]
    pub dump_clif: Option<std::path::PathBuf>,

    /// Write the machine code of every kernel the code generator compiles (Cranelift's own
    /// printer) into folder DIR (made if missing).
    #[arg(long, global = true, value_name = "DIR")]
    pub dump_asm: Option<std::path::PathBuf>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Convert an ONNX model to a .ir module and a .safetensors file of its weights.
    Import(ImportArgs),
    /// Write a module as ONNX: integer ops in the standard QDQ form, for ONNX Runtime and others.
    Export(ExportArgs),
    /// Build a quantized model into an object file and a C header, to link into C or C++.
    Build(BuildArgs),
    /// Run a model on images or tensors: print the top classes, or write the outputs as .npy.
    Run(RunArgs),
    /// Score a (quantized) model against a float reference: agreement, SQNR, KL, accuracy.
    Eval(EvalArgs),
    /// Quantize a float model with several pipelines and score each against float, as a table.
    Compare(CompareArgs),
    /// Plot and tabulate the mean activation shift per layer of quantized models against float.
    Report(ReportArgs),
}

/// Width `--list-passes` wraps its descriptions to.
const LIST_WIDTH: usize = 100;

/// Writes `text` word-wrapped to `LIST_WIDTH`, every line indented by `indent` spaces.
fn write_wrapped(out: &mut dyn Write, indent: usize, text: &str) -> std::io::Result<()> {
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent + line.len() + 1 + word.len() > LIST_WIDTH {
            writeln!(out, "{:indent$}{line}", "")?;
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        writeln!(out, "{:indent$}{line}", "")?;
    }
    Ok(())
}

fn list_passes(out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "Passes (use as --passes=a,b{{key=value}}; a pass's requirements run first):"
    )?;
    for p in qcc_passes::passes() {
        writeln!(out)?;
        writeln!(out, "  {}", p.name)?;
        write_wrapped(out, 6, p.summary)?;
        for o in p.options {
            writeln!(out, "      {}={}", o.name, o.describe_kind())?;
            write_wrapped(out, 10, &format!("{} (default {})", o.help, o.default))?;
        }
        if !p.requires.is_empty() {
            writeln!(out, "      requires: {}", p.requires.join(", "))?;
        }
    }
    Ok(())
}

fn list_ops(out: &mut dyn Write) -> std::io::Result<()> {
    for def in qcc_dialects::registry().ops() {
        writeln!(out, "  {:<24} {}", def.name(), def.summary)?;
    }
    Ok(())
}

/// Runs qcc with `args` (the first is the program name); returns the exit code.
pub fn run<I, T>(args: I, out: &mut (dyn Write + Send), err: &mut (dyn Write + Send)) -> i32
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
    let threads = cli.threads;
    for (flag, dir) in [
        ("--dump-clif", &cli.dump_clif),
        ("--dump-asm", &cli.dump_asm),
    ] {
        // The folder is made when missing (its parents too), as compilers make their dump folders.
        if let Some(dir) = dir.as_ref()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            let _ = writeln!(err, "error: {flag} '{}': {e}", dir.display());
            return 1;
        }
    }
    qcc_codegen::set_dumps(qcc_codegen::Dumps {
        clif: cli.dump_clif.clone(),
        asm: cli.dump_asm.clone(),
    });
    let engine = cli.engine;
    let mut dispatch = || {
        crate::engines::choose(engine);
        match &cli.command {
            Some(Command::Import(args)) => import(args, err),
            Some(Command::Export(args)) => export(args, err),
            Some(Command::Build(args)) => build(args, err),
            Some(Command::Run(args)) => run_model(args, out, err),
            Some(Command::Eval(args)) => eval(args, out, err),
            Some(Command::Report(args)) => report(args, out, err),
            Some(Command::Compare(args)) => compare_pipelines(args, out, err),
            None if cli.compile.list_passes => {
                list_passes(out).map_err(|e| Failure::msg(e.to_string()))
            }
            None if cli.compile.list_ops => list_ops(out).map_err(|e| Failure::msg(e.to_string())),
            None => compile(&cli.compile, out, err),
        }
    };
    let result = match threads {
        Some(n) => match rayon::ThreadPoolBuilder::new()
            .num_threads(n as usize)
            .build()
        {
            Ok(pool) => pool.install(dispatch),
            Err(e) => Err(Failure::msg(format!("--threads {n}: {e}"))),
        },
        None => dispatch(),
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
