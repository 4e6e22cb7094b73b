//! The `qcc` command line: argument parsing, running a pipeline, reporting errors.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use qcc_dialects::{Diagnostic, Module, SourceFile, print_module};
use qcc_passes::{PassContext, PassManager, PassTiming, parse_pipeline, passes};

use crate::output::write_module;

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
  List the passes and their options, or the ops:
    qcc --list-passes
    qcc --list-ops

A pipeline is a comma-separated list of passes, each with options in braces if needed:
  pass-a,pass-b{key=value,key2=value2}
Passes that a listed pass requires are added before it.";

/// Above this many inlined weight values, printing suggests `-o`.
const LARGE_INLINE: usize = 100_000;

/// qcc: a post-training quantization compiler for neural networks. It reads a module in qcc's
/// textual IR, runs a pipeline of passes with the verifier after each, and prints or writes the result.
#[derive(Parser, Debug)]
#[command(name = "qcc", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Pass pipeline to run, e.g. `fold-batchnorm,canonicalize`.
    #[arg(long, value_name = "PIPELINE")]
    pub passes: Option<String>,

    /// Write the resulting module here (weights next to it as .safetensors when they changed)
    /// instead of printing it.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,

    /// List the registered passes with their options, then exit.
    #[arg(long)]
    pub list_passes: bool,

    /// List the registered ops, then exit.
    #[arg(long)]
    pub list_ops: bool,

    /// Skip the verifier between passes.
    #[arg(long)]
    pub no_verify: bool,

    /// Print the module to stderr after every pass.
    #[arg(long)]
    pub print_ir_after_all: bool,

    /// Print how long each pass (and the verifier after it) took.
    #[arg(long)]
    pub timing: bool,

    /// Say what passes did and what they skipped, and why.
    #[arg(short, long)]
    pub verbose: bool,

    /// The module to compile (.ir).
    #[arg(value_name = "INPUT")]
    pub input: Option<PathBuf>,
}

/// A failure to report: diagnostics, with the source they point into when there is one.
struct Failure {
    file: Option<SourceFile>,
    diagnostics: Vec<Diagnostic>,
}

impl Failure {
    fn msg(message: impl Into<String>) -> Failure {
        Failure {
            file: None,
            diagnostics: vec![Diagnostic::new(message)],
        }
    }
}

fn list_passes(out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "Passes (use as --passes=a,b{{key=value}}):")?;
    for p in passes() {
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

fn print_timings(err: &mut dyn Write, timings: &[PassTiming]) -> std::io::Result<()> {
    let width = timings
        .iter()
        .map(|t| t.pass.len())
        .max()
        .unwrap_or(4)
        .max(5);
    writeln!(
        err,
        "{:<width$}  {:>10}  {:>10}",
        "pass", "run ms", "verify ms"
    )?;
    let (mut run, mut verify) = (0.0, 0.0);
    for t in timings {
        let (r, v) = (t.run.as_secs_f64() * 1e3, t.verify.as_secs_f64() * 1e3);
        run += r;
        verify += v;
        writeln!(err, "{:<width$}  {r:>10.3}  {v:>10.3}", t.pass)?;
    }
    writeln!(err, "{:<width$}  {run:>10.3}  {verify:>10.3}", "total")
}

fn compile(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Failure> {
    let Some(input) = &cli.input else {
        return Err(Failure::msg("no input file given (try `qcc --help`)"));
    };
    let steps = parse_pipeline(cli.passes.as_deref().unwrap_or("")).map_err(Failure::msg)?;
    let mut module: Module = qcc_dialects::parse_file(input)
        .map_err(|(file, diagnostics)| Failure { file, diagnostics })?;
    let mut manager = PassManager::new(steps);
    manager.verify_each = !cli.no_verify;
    for step in manager.steps().iter().filter(|s| s.implicit) {
        if cli.verbose {
            let _ = writeln!(
                err,
                "note: running '{}' first: a later pass requires it",
                step.info.name
            );
        }
    }
    let mut ctx = PassContext {
        verbose: cli.verbose,
        ..PassContext::default()
    };
    let print_after = cli.print_ir_after_all;
    let result = manager.run(&mut module, &mut ctx, &mut |label, m| {
        if print_after {
            let _ = writeln!(
                err,
                "// ----- IR after {label} ----- //\n{}",
                print_module(m)
            );
        }
    });
    if cli.verbose {
        for note in &ctx.notes {
            let _ = writeln!(err, "note: {note}");
        }
    }
    let timings = result.map_err(|e| Failure {
        file: None,
        diagnostics: e
            .diagnostics
            .into_iter()
            .map(|d| Diagnostic::new(format!("after pass '{}': {}", e.pass, d.message)))
            .collect(),
    })?;
    if cli.timing {
        let _ = print_timings(err, &timings);
    }
    match &cli.output {
        Some(path) => {
            let written = write_module(&mut module, path).map_err(Failure::msg)?;
            if cli.verbose {
                for p in written {
                    let _ = writeln!(err, "wrote {}", p.display());
                }
            }
        }
        None => {
            // Tensors the passes made are in no file yet: print them inline so the output stands alone.
            let inlined = crate::output::inline_changed_weights(&mut module);
            if inlined > LARGE_INLINE {
                let _ = writeln!(
                    err,
                    "note: {inlined} changed weight values were printed inline; use -o OUT.ir to write them to OUT.safetensors instead"
                );
            }
            out.write_all(print_module(&module).as_bytes())
                .map_err(|e| Failure::msg(format!("cannot write to stdout: {e}")))?;
        }
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
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
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
    if cli.list_passes {
        return if list_passes(out).is_ok() { 0 } else { 1 };
    }
    if cli.list_ops {
        return if list_ops(out).is_ok() { 0 } else { 1 };
    }
    match compile(&cli, out, err) {
        Ok(()) => 0,
        Err(failure) => {
            for d in &failure.diagnostics {
                let _ = err.write_all(d.render(failure.file.as_ref()).as_bytes());
            }
            1
        }
    }
}
