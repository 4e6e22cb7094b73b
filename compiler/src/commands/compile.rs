//! `qcc [--passes=...] INPUT [-o OUT]`: run a pipeline on a module and print or write it.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use qcc_dialects::{Diagnostic, Module, OpKind, Tensor, print_module};
use qcc_passes::bias::FloatReference;
use qcc_passes::{PassContext, PassManager, PassTiming, parse_pipeline, parse_pipeline_given};

use crate::commands::export::{is_onnx_output, write_onnx};
use crate::model::{Failure, load, load_or};
use crate::output::{check_module_output, check_output, inline_changed_weights, write_module};
use crate::preprocess::{Preprocess, PreprocessArgs};

/// Above this many weight values not yet in any file, printing asks for `-o` instead.
const LARGE_INLINE: usize = 1_000_000;

/// Options of the default command.
#[derive(Args, Debug, Default)]
pub struct CompileArgs {
    /// Pass pipeline to run, e.g. `fold-batchnorm,canonicalize`.
    #[arg(long, value_name = "PIPELINE")]
    pub passes: Option<String>,

    /// Write the resulting module here (weights next to it as .safetensors when they changed)
    /// instead of printing it; a name ending in .onnx writes ONNX (integer ops as QDQ).
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

    /// Calibration data for passes that need it (quantize, bias correction): a folder of images,
    /// a .npy of u8 pixels [N, 3, H, W] or a .npy of f32 network inputs.
    #[arg(long, value_name = "DATA")]
    pub calib: Option<PathBuf>,

    /// The float model an already-quantized INPUT (a QDQ ONNX model from ONNX Runtime or NNCF,
    /// say) was quantized from: bias-correct, bias-fit and estimate-bias-shift then run on INPUT
    /// as it is, against this model's float layers (matched in order).
    #[arg(long, value_name = "FLOAT_MODEL")]
    pub reference: Option<PathBuf>,

    /// Preprocessing recorded when INPUT is an ONNX model (and used for --calib images).
    #[command(flatten)]
    pub preprocess: PreprocessArgs,

    /// The model: a .ir module or an .onnx file (imported on the fly).
    #[arg(value_name = "INPUT")]
    pub input: Option<PathBuf>,
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

/// The calibration data `args.calib` names, as inputs of `module`.
pub fn load_calib(module: &Module, args: &CompileArgs) -> Result<Option<Tensor>, Failure> {
    let Some(path) = &args.calib else {
        return Ok(None);
    };
    let pre = crate::model::preprocessing(module, &args.preprocess)?;
    let input = crate::model::input_type(module)?;
    Ok(Some(
        crate::data::load(path, &input, &pre, None)
            .map_err(|e| format!("--calib: {e}"))?
            .tensor,
    ))
}

/// Loads `input` and the float model `args.reference` names (once): an input that records no
/// preprocessing, as models quantized elsewhere often do, gets the reference's.
pub fn load_with_reference(
    input: &Path,
    args: &CompileArgs,
    err: &mut dyn Write,
) -> Result<(Module, Option<Module>), Failure> {
    let reference = match &args.reference {
        Some(path) => Some(load(path, &args.preprocess, &mut std::io::sink())?),
        None => None,
    };
    let fallback = match &reference {
        Some(r) if !args.preprocess.any() => Preprocess::recorded(r)?,
        _ => None,
    };
    Ok((load_or(input, &args.preprocess, fallback, err)?, reference))
}

/// Runs `pipeline` on `module` with the reporting flags of `args`, calibrating on `args.calib`,
/// against `reference` (the float model `args.reference` names, from [`load_with_reference`])
/// when `module` was quantized elsewhere.
pub fn run_pipeline(
    module: &mut Module,
    pipeline: &str,
    args: &CompileArgs,
    reference: Option<Module>,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let calib = load_calib(module, args)?;
    run_pipeline_with(module, pipeline, args, calib, reference, err)
}

/// [`run_pipeline`] with calibration data already loaded.
pub fn run_pipeline_with(
    module: &mut Module,
    pipeline: &str,
    args: &CompileArgs,
    calib: Option<Tensor>,
    reference: Option<Module>,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let steps = match &reference {
        // The input is quantized already, and the reference is its float network.
        Some(_) => parse_pipeline_given(pipeline, &["fold-batchnorm", "quantize"]),
        None => parse_pipeline(pipeline),
    }
    .map_err(Failure::msg)?;
    let float_reference = match reference {
        Some(float) => Some(float_reference(module, float, args)?),
        None => None,
    };
    if let Some(step) = steps
        .iter()
        .find(|s| s.implicit && s.info.name == "quantize")
        && has_quant_layers(module)
    {
        let wanting = steps
            .iter()
            .find(|s| s.info.requires.contains(&step.info.name))
            .map_or("a pass", |s| s.info.name);
        return Err(Failure::msg(format!(
            "--passes: {wanting} needs the float network the model was quantized from, and the input is quantized already: give that float model with --reference FLOAT_MODEL"
        )));
    }
    let mut manager = PassManager::new(steps);
    manager.verify_each = !args.no_verify;
    if args.verbose {
        for step in manager.steps().iter().filter(|s| s.implicit) {
            let _ = writeln!(
                err,
                "note: running '{}' first: a later pass requires it",
                step.info.name
            );
        }
    }
    let mut ctx = PassContext {
        engine: crate::engines::default_engine(),
        verbose: args.verbose,
        calib,
        float_reference,
        ..PassContext::default()
    };
    let print_after = args.print_ir_after_all;
    let result = manager.run(module, &mut ctx, &mut |label, m| {
        if print_after {
            let _ = writeln!(
                err,
                "// ----- IR after {label} ----- //\n{}",
                print_module(m)
            );
        }
    });
    if args.verbose {
        for note in &ctx.notes {
            let _ = writeln!(err, "note: {note}");
        }
    }
    let timings = result.map_err(|e| {
        let location = e.location();
        Failure {
            file: None,
            diagnostics: e
                .diagnostics
                .into_iter()
                .map(|d| Diagnostic::new(format!("{location}: {}", d.message)))
                .collect(),
        }
    })?;
    if args.timing {
        let _ = print_timings(err, &timings);
    }
    Ok(())
}

/// Whether `module` has integer convolution or dense layers (was quantized).
fn has_quant_layers(module: &Module) -> bool {
    module.function("main").is_some_and(|f| {
        f.op_nodes()
            .into_iter()
            .any(|n| f.is_op(n, OpKind::QuantConv2d) || f.is_op(n, OpKind::QuantDense))
    })
}

/// The float network of an already-quantized `module`: `float` (the model `--reference` names)
/// with its batch norms folded, its layers linked in order to `module`'s.
fn float_reference(
    module: &Module,
    mut float: Module,
    args: &CompileArgs,
) -> Result<FloatReference, Failure> {
    let path = args
        .reference
        .as_deref()
        .unwrap_or(Path::new("the float model"));
    if !has_quant_layers(module) {
        return Err(Failure::msg(
            "--reference: the input has no integer convolution or dense layer to correct; --reference is for a model quantized elsewhere (give --passes=quantize,... for a float one)",
        ));
    }
    let (want, got) = (
        crate::model::input_type(module)?,
        crate::model::input_type(&float)?,
    );
    if want.shape[1..] != got.shape[1..] {
        return Err(Failure::msg(format!(
            "--reference '{}' takes inputs of type {got}, the quantized model {want}",
            path.display()
        )));
    }
    let fold = PassManager::new(parse_pipeline("fold-batchnorm").map_err(Failure::msg)?);
    fold.run(&mut float, &mut PassContext::default(), &mut |_, _| {})
        .map_err(|e| {
            let first = e.diagnostics.first().map(|d| d.message.clone());
            format!(
                "--reference '{}': {}: {}",
                path.display(),
                e.location(),
                first.unwrap_or_default()
            )
        })?;
    FloatReference::link(module, float)
        .map_err(|e| Failure::msg(format!("--reference '{}': {e}", path.display())))
}

/// The default command.
pub fn compile(
    args: &CompileArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let Some(input) = &args.input else {
        return Err(Failure::msg("no input file given (try `qcc --help`)"));
    };
    // Check the pipeline and the output path before the (possibly slow) load.
    if let Some(passes) = &args.passes {
        parse_pipeline(passes).map_err(|e| format!("--passes: {e}"))?;
    }
    match &args.output {
        Some(path) if is_onnx_output(path) => check_output(path, "-o")?,
        Some(path) => check_module_output(path, "-o")?,
        None => {}
    }
    let (mut module, reference) = load_with_reference(input, args, err)?;
    match &args.passes {
        Some(passes) => run_pipeline(&mut module, passes, args, reference, err)?,
        None if args.calib.is_some() => {
            let _ = writeln!(err, "warning: --calib is ignored: no --passes need it");
        }
        None => {}
    }
    match &args.output {
        Some(path) if is_onnx_output(path) => {
            write_onnx(&module, path, err)?;
            if args.verbose {
                let _ = writeln!(err, "wrote {}", path.display());
            }
        }
        Some(path) => {
            let written = write_module(&mut module, path).map_err(Failure::msg)?;
            if args.verbose {
                for p in written {
                    let _ = writeln!(err, "wrote {}", p.display());
                }
            }
        }
        None => {
            // Tensors the passes made are in no file yet: print them inline so the output stands alone.
            let pending: usize = module
                .weights
                .changed
                .iter()
                .filter_map(|n| module.weights.tensors.get(n))
                .map(|t| t.numel())
                .sum();
            if pending > LARGE_INLINE {
                return Err(Failure::msg(format!(
                    "the module holds {pending} weight values that are in no file yet; give -o OUT.ir to write them to OUT.safetensors"
                )));
            }
            inline_changed_weights(&mut module);
            out.write_all(print_module(&module).as_bytes())
                .map_err(|e| Failure::msg(format!("cannot write to stdout: {e}")))?;
        }
    }
    Ok(())
}
