//! `qcc run MODEL --input X`: run a model on images or tensors, print the top classes and/or
//! write the outputs as `.npy`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use qcc_dialects::{Module, OpKind, Tensor};
use qcc_passes::parse_pipeline;
use qcc_runtime::Prepared;

use crate::commands::compile::{CompileArgs, load_with_reference, run_pipeline};
use crate::data;
use crate::model::{Failure, input_type, preprocessing};
use crate::output::{check_output, write_atomic};
use crate::preprocess::PreprocessArgs;
use crate::profile::Profile;
use crate::progress::Progress;

/// Options of `qcc run`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  Top 5 classes of every photo:
    qcc run model.q.ir --input photos/
  Quantize on the fly and show the classes before and after side by side:
    qcc run model.onnx --input photos/ --passes=quantize,bias-correct --calib photos/ --compare
  Write every output (f32, dequantized for int8 models) to a .npy file:
    qcc run model.q.ir --input eval.npy -o logits.npy")]
pub struct RunArgs {
    /// The model: a .ir module or an .onnx file.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,

    /// Inputs: a folder of JPEG/PNG images, one image, a .npy of u8 pixels (N x 3 x H x W,
    /// resized and cropped) or a .npy of f32 network inputs.
    #[arg(long, value_name = "DATA")]
    pub input: PathBuf,

    /// Write the outputs (f32, N x ...) to this .npy file.
    #[arg(short = 'o', long = "output", value_name = "OUT.npy")]
    pub output: Option<PathBuf>,

    /// Print the K most likely classes of every input (default 5 when no -o is given; 0 prints
    /// none).
    #[arg(long, value_name = "K")]
    pub top: Option<usize>,

    /// Class names, one per line (default: labels.txt beside the model, if there is one).
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,

    /// Passes to run on the model first, e.g. fold-batchnorm or quantize.
    #[arg(long, value_name = "PIPELINE")]
    pub passes: Option<String>,

    /// Calibration data for the passes (images, u8 pixels .npy or f32 inputs .npy).
    #[arg(long, value_name = "DATA")]
    pub calib: Option<PathBuf>,

    /// With --passes on a model quantized elsewhere: the float model it was quantized from,
    /// for bias-correct and friends (as on the compile command).
    #[arg(long, value_name = "FLOAT_MODEL", requires = "passes")]
    pub reference: Option<PathBuf>,

    /// With --passes: print the model's top classes before and after the passes side by side.
    #[arg(long, requires = "passes")]
    pub compare: bool,

    /// Say what the passes did.
    #[arg(short, long)]
    pub verbose: bool,

    /// After the results, print the time of every op (with its multiply-accumulates and GMAC/s)
    /// sorted by time, and the totals per op class.
    #[arg(long)]
    pub profile: bool,

    /// After the results, time N runs of the first input alone (batch 1, after three warm-up
    /// runs) and print the median, fastest and slowest, the time to prepare the model again, and
    /// how many kernels the process generated and how long that took.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub latency: Option<u64>,

    /// Batching and progress display.
    #[command(flatten)]
    pub batching: Batching,

    /// Preprocessing of images (overrides what the model records).
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

/// How a command runs its inputs: batch size and progress display.
#[derive(Args, Debug, Clone, Copy)]
pub struct Batching {
    /// Inputs per batch.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_size: u64,

    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `module` on all of `inputs` in batches; returns the first output of every item, stacked.
pub fn run_batches(
    module: &Module,
    inputs: &Tensor,
    batch: usize,
    progress: &mut Progress,
) -> Result<Tensor, String> {
    let prepared = crate::engines::default_engine().prepare(module, "main")?;
    run_prepared(prepared.as_ref(), inputs, batch, progress, None)
}

/// [`run_batches`] on a function already prepared, timing every op into `profile` when one is
/// given.
fn run_prepared(
    interp: &dyn Prepared,
    inputs: &Tensor,
    batch: usize,
    progress: &mut Progress,
    mut profile: Option<&mut Profile>,
) -> Result<Tensor, String> {
    let n = inputs.shape[0];
    if inputs.as_f32().is_none() {
        return Err("inputs must be f32".into());
    }
    let mut out_shape = Vec::new();
    let mut out = Vec::new();
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let chunk = inputs.items(start..end);
        let results = match profile.as_deref_mut() {
            Some(p) => p.run(interp, &chunk),
            None => interp.run(&[chunk]),
        }
        .map_err(|e| e.to_string())?;
        let y = &results[0];
        out_shape = y.shape.clone();
        out.extend_from_slice(y.as_f32().ok_or("the model's output is not f32")?);
        progress.advance(end - start);
    }
    out_shape[0] = n;
    Ok(Tensor::from_f32(out_shape, out))
}

fn labels(path: Option<&Path>, model: &Path) -> Result<Option<Vec<String>>, String> {
    let (path, explicit) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (model.with_file_name("labels.txt"), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text.lines().map(|l| l.trim().to_string()).collect())),
        Err(e) if explicit => Err(format!("cannot read labels '{}': {e}", path.display())),
        Err(_) => Ok(None),
    }
}

/// Probabilities from the last axis: the outputs themselves when the model ends in a softmax.
fn probabilities(module: &Module, row: &[f32]) -> Vec<f32> {
    let ends_in_softmax = module.function("main").is_some_and(|f| {
        f.results
            .first()
            .is_some_and(|v| f.is_op(v.node, OpKind::Softmax))
    });
    if ends_in_softmax {
        return row.to_vec();
    }
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let exp: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

fn top_lines(module: &Module, row: &[f32], k: usize, names: Option<&[String]>) -> Vec<String> {
    let probs = probabilities(module, row);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]));
    order
        .iter()
        .take(k)
        .map(|&c| {
            let label = names.and_then(|l| l.get(c)).map_or("", String::as_str);
            format!("{c:>5}  {:>6.2}%  {label}", probs[c] * 100.0)
        })
        .collect()
}

/// Runs `qcc run`.
pub fn run(args: &RunArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Failure> {
    if let Some(path) = &args.output {
        check_output(path, "-o")?;
    }
    if let Some(p) = &args.passes {
        parse_pipeline(p).map_err(|e| format!("--passes: {e}"))?;
    }
    let names = labels(args.labels.as_deref(), &args.model)?;
    let settings = CompileArgs {
        calib: args.calib.clone(),
        verbose: args.verbose,
        preprocess: args.preprocess.clone(),
        reference: args.reference.clone(),
        ..CompileArgs::default()
    };
    let (original, reference) = load_with_reference(&args.model, &settings, err)?;
    let mut module = original.clone();
    if let Some(p) = &args.passes {
        run_pipeline(&mut module, p, &settings, reference, err)?;
    }
    let pre = preprocessing(&module, &args.preprocess)?;
    let ty = input_type(&module)?;
    // Loading the inputs and preparing the model (generating its kernels) are independent and
    // each mostly serial: one beside the other.
    let (inputs, prepared) = std::thread::scope(|scope| {
        let loading = scope.spawn(|| data::load(&args.input, &ty, &pre, None));
        let prepared = crate::engines::default_engine().prepare(&module, "main");
        let inputs = loading
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (inputs, prepared)
    });
    let inputs = inputs?;
    let prepared = prepared?;
    let n = inputs.names.len();
    let mut progress = Progress::new(
        n * (1 + usize::from(args.compare)),
        "running",
        args.batching.quiet,
    );
    let mut profile = args.profile.then(Profile::default);
    let outputs = run_prepared(
        prepared.as_ref(),
        &inputs.tensor,
        args.batching.batch_size as usize,
        &mut progress,
        profile.as_mut(),
    )?;
    let before = if args.compare {
        Some(run_batches(
            &original,
            &inputs.tensor,
            args.batching.batch_size as usize,
            &mut progress,
        )?)
    } else {
        None
    };
    progress.finish();
    if let Some(path) = &args.output {
        write_atomic(path, &qcc_runtime::io::npy_bytes(&outputs)?)?;
    }
    let top = args
        .top
        .or(if args.output.is_none() { Some(5) } else { None })
        .filter(|k| *k > 0);
    if let Some(k) = top {
        print_top(
            out,
            &module,
            &original,
            &outputs,
            before.as_ref(),
            &inputs.names,
            k,
            names.as_deref(),
            args.passes.as_deref().unwrap_or(""),
        )?;
    }
    if let Some(p) = &profile {
        p.print(out, crate::engines::default_engine().name())
            .map_err(|e| Failure::msg(format!("cannot write the profile: {e}")))?;
    }
    if let Some(runs) = args.latency {
        latency(&module, &inputs.tensor, runs as usize, out)?;
    }
    Ok(())
}

/// Times `runs` batch-1 runs of the first of `inputs` and prints the figures.
fn latency(
    module: &Module,
    inputs: &Tensor,
    runs: usize,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    use std::time::Instant;
    let engine = crate::engines::default_engine();
    let start = Instant::now();
    let prepared = engine.prepare(module, "main")?;
    let prepare_ms = start.elapsed().as_secs_f64() * 1e3;
    if inputs.as_f32().is_none() {
        return Err(Failure::msg("inputs must be f32"));
    }
    let first = [inputs.items(0..1)];
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs + 3 {
        let t = Instant::now();
        prepared.run(&first).map_err(|e| e.to_string())?;
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    let (kernels, compiling) = qcc_codegen::jit::stats();
    let text = format!(
        "latency: batch 1, {runs} runs on the {} engine ({} threads): median {:.3} ms, fastest {:.3} ms, slowest {:.3} ms; prepared again in {prepare_ms:.1} ms; {kernels} kernels compiled in this process in {:.1} ms\n",
        engine.name(),
        rayon::current_num_threads(),
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        compiling.as_secs_f64() * 1e3
    );
    out.write_all(text.as_bytes())
        .map_err(|e| Failure::msg(format!("cannot write the latency: {e}")))
}

/// Prints the `k` most likely classes of every input (side by side with `before` when given).
#[allow(clippy::too_many_arguments)]
fn print_top(
    out: &mut dyn Write,
    module: &Module,
    original: &Module,
    outputs: &Tensor,
    before: Option<&Tensor>,
    inputs: &[String],
    k: usize,
    names: Option<&[String]>,
    after_label: &str,
) -> Result<(), Failure> {
    let n = inputs.len();
    let values = outputs
        .as_f32()
        .ok_or_else(|| Failure::msg("the model's output is not f32"))?;
    let per_item = values.len() / n.max(1);
    for (i, name) in inputs.iter().enumerate() {
        let row = |t: &[f32]| t[i * per_item..(i + 1) * per_item].to_vec();
        let now = top_lines(module, &row(values), k, names);
        match before {
            None => {
                let _ = writeln!(out, "{name}");
                for l in now {
                    let _ = writeln!(out, "  {l}");
                }
            }
            Some(b) => {
                let was = top_lines(original, &row(b.as_f32().unwrap_or(&[])), k, names);
                let _ = writeln!(out, "{name}\n  {:<42}|   after {after_label}", "as given");
                for (w, l) in was.iter().zip(&now) {
                    let w: String = w.chars().take(42).collect();
                    let _ = writeln!(out, "  {w:<42}|   {l}");
                }
            }
        }
    }
    Ok(())
}
