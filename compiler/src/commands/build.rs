//! `qcc build MODEL -o model.o --header model.h`: a quantized module as a relocatable object
//! file to link into C or C++ firmware, and the C header that declares it.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use qcc_codegen::object::{self, Target};
use qcc_dialects::OpKind;
use qcc_passes::parse_pipeline;

use crate::commands::compile::{CompileArgs, load_with_reference, run_pipeline};
use crate::model::Failure;
use crate::output::{check_output, write_all_atomic};
use crate::preprocess::PreprocessArgs;

/// Options of `qcc build`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  Quantize, correct the bias and build in one command:
    qcc build model.onnx --passes=quantize,bias-correct --calib photos/ -o model.o
  Build a module quantized before:
    qcc build model.q.ir -o mobilenet.o --header mobilenet.h --name mobilenet
The object holds the code, the weights and every constant; it calls nothing but memcpy and
memset and exports NAME_run and NAME_run_u8 (see the header). The caller provides a scratch area
of NAME_SCRATCH_BYTES bytes aligned to NAME_SCRATCH_ALIGN.")]
pub struct BuildArgs {
    /// The module to build: a quantized .ir (or .onnx), or a float one with --passes.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,

    /// Where to write the object file.
    #[arg(short = 'o', long = "output", value_name = "OUT.o")]
    pub output: PathBuf,

    /// Where to write the C header (default: the object's path with .h).
    #[arg(long, value_name = "OUT.h")]
    pub header: Option<PathBuf>,

    /// Prefix of every symbol and macro (default: the object's file name without extension).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// The machine to generate code for: native (this CPU), x86_64, x86_64-v3 or aarch64.
    #[arg(long, value_name = "TARGET", default_value = "native")]
    pub target: String,

    /// Passes to run on MODEL first, e.g. `quantize,bias-correct`.
    #[arg(long, value_name = "PIPELINE")]
    pub passes: Option<String>,

    /// Calibration data for the passes (images, u8 pixels .npy or f32 inputs .npy).
    #[arg(long, value_name = "DATA", requires = "passes")]
    pub calib: Option<PathBuf>,

    /// With --passes on a model quantized elsewhere: the float model it was quantized from.
    #[arg(long, value_name = "FLOAT_MODEL", requires = "passes")]
    pub reference: Option<PathBuf>,

    /// Say what the passes did.
    #[arg(short, long)]
    pub verbose: bool,

    /// Preprocessing of the calibration images.
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

/// The symbol prefix: `--name`, else the object's file stem.
fn name_of(args: &BuildArgs) -> Result<String, String> {
    match &args.name {
        Some(n) => Ok(n.clone()),
        None => {
            let stem = args
                .output
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if object::is_c_identifier(&stem) {
                Ok(stem)
            } else {
                Err(format!(
                    "-o '{}': its name '{stem}' cannot prefix C symbols; choose one with --name",
                    args.output.display()
                ))
            }
        }
    }
}

/// `path` with its extension replaced by `.h`.
fn header_beside(path: &Path) -> PathBuf {
    path.with_extension("h")
}

/// Runs `qcc build`.
pub fn build(args: &BuildArgs, err: &mut dyn Write) -> Result<(), Failure> {
    let target = Target::parse(&args.target).map_err(|e| format!("--target: {e}"))?;
    let name = name_of(args)?;
    object::check_name(&name)?;
    let header = args
        .header
        .clone()
        .unwrap_or_else(|| header_beside(&args.output));
    if header == args.output {
        return Err(Failure::msg(format!(
            "--header '{}' is the object file's own path",
            header.display()
        )));
    }
    check_output(&args.output, "-o")?;
    check_output(&header, "--header")?;
    if let Some(p) = &args.passes {
        parse_pipeline(p).map_err(|e| format!("--passes: {e}"))?;
    }
    let settings = CompileArgs {
        calib: args.calib.clone(),
        verbose: args.verbose,
        preprocess: args.preprocess.clone(),
        reference: args.reference.clone(),
        ..CompileArgs::default()
    };
    let (mut module, reference) = load_with_reference(&args.model, &settings, err)?;
    if let Some(p) = &args.passes {
        run_pipeline(&mut module, p, &settings, reference, err)?;
    }
    let main = module
        .function("main")
        .ok_or_else(|| format!("{}: the module has no function @main", args.model.display()))?;
    let quantized = main
        .graph
        .node_indices()
        .filter_map(|n| main.try_op(n))
        .any(|op| op.is(OpKind::Quantize));
    if !quantized {
        return Err(Failure::msg(format!(
            "{}: the model is float; qcc build compiles integer models. Quantize it in the same \
             command with --passes=quantize,bias-correct --calib DATA, or first with qcc \
             --passes=... -o model.q.ir",
            args.model.display()
        )));
    }
    let started = std::time::Instant::now();
    let built = object::build(&module, "main", &name, target, qcc_codegen::jit::dumps())
        .map_err(|e| format!("{}: {e}", args.model.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let source = args
        .model
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let pixels = crate::preprocess::Preprocess::recorded(&module)?.map(|p| object::Pixels {
        resize: p.resize,
        crop: p.crop,
        mean: p.mean,
        std: p.std,
        bgr: p.bgr,
    });
    let text = built.header(&source, pixels.as_ref());
    write_all_atomic(&[(&args.output, &built.bytes), (&header, text.as_bytes())])?;
    let kib = |b: usize| b as f64 / 1024.0;
    let _ = writeln!(
        err,
        "wrote {} ({:.1} KiB: {} ops as {} functions, {seconds:.2} s) and {}; a run needs {:.1} KiB of scratch ({:.1} KiB of activations)",
        args.output.display(),
        kib(built.bytes.len()),
        built.lowered.ops,
        built.functions,
        header.display(),
        kib(built.lowered.scratch),
        kib(built.lowered.arena),
    );
    Ok(())
}
