//! `qcc compare MODEL --calib DATA [--data DATA] [--passes PIPELINE]...`: runs several pipelines
//! on the same float model and scores each result against float on the same inputs, one table row
//! per pipeline. Without `--passes` the rows are naive quantization, `bias-correct` and `bias-fit`
//! with per-tensor and with per-channel weights.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use crate::commands::compile::{CompileArgs, load_calib, run_pipeline_with};
use crate::commands::run::{Batching, run_batches};
use crate::data;
use crate::metrics::{Comparison, argmax, compare};
use crate::model::{Failure, input_type, load, preprocessing};
use crate::preprocess::PreprocessArgs;
use crate::progress::Progress;

/// Options of `qcc compare`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  Naive quantization, bias-correct and bias-fit, per-tensor and per-channel, and per-tensor
  after cross-layer equalization, scored on the calibration photos themselves:
    qcc compare model.onnx --calib photos/
  Calibrate on one set and score on another, with pipelines of your own:
    qcc compare model.onnx --calib calib.npy --data eval.npy \\
        --passes 'quantize,bias-correct' --passes 'quantize{calibration=minmax},bias-correct{at=pre-activation}'")]
pub struct CompareArgs {
    /// The float model: .ir or .onnx.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,

    /// Calibration data for the pipelines (images, u8 pixels .npy or f32 inputs .npy).
    #[arg(long, value_name = "DATA")]
    pub calib: PathBuf,

    /// Inputs to score on (default: the calibration data).
    #[arg(long, value_name = "DATA")]
    pub data: Option<PathBuf>,

    /// A pipeline to score (repeatable); default: naive, bias-correct and bias-fit, each with
    /// per-tensor and per-channel weights, and per-tensor after equalize{objective=noise}.
    #[arg(long, value_name = "PIPELINE")]
    pub passes: Vec<String>,

    /// Say what the passes did.
    #[arg(short, long)]
    pub verbose: bool,

    /// Batching and progress display.
    #[command(flatten)]
    pub batching: Batching,

    /// Preprocessing of images (overrides what the model records).
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

/// The rows without `--passes`: (weights, method, pipeline).
const DEFAULT_ROWS: &[(&str, &str, &str)] = &[
    ("per-tensor", "naive", "quantize{granularity=per-tensor}"),
    (
        "per-tensor",
        "bias-correct",
        "quantize{granularity=per-tensor},bias-correct",
    ),
    (
        "per-tensor",
        "bias-fit",
        "quantize{granularity=per-tensor},bias-fit",
    ),
    (
        "per-tensor",
        "equalize+correct",
        "equalize{objective=noise},quantize{granularity=per-tensor},bias-correct",
    ),
    ("per-channel", "naive", "quantize{granularity=per-channel}"),
    (
        "per-channel",
        "bias-correct",
        "quantize{granularity=per-channel},bias-correct",
    ),
    (
        "per-channel",
        "bias-fit",
        "quantize{granularity=per-channel},bias-fit",
    ),
];

/// Inputs up to which every input's top-1 class is listed.
const LIST_CLASSES: usize = 12;

/// One scored pipeline.
struct Row {
    label: String,
    comparison: Option<Comparison>,
    seconds: Option<f64>,
    classes: Vec<usize>,
}

fn top1(outputs: &[f32], classes: usize) -> Vec<usize> {
    outputs.chunks(classes.max(1)).map(argmax).collect()
}

fn print_table(out: &mut dyn Write, rows: &[Row], inputs: usize) -> std::io::Result<()> {
    let width = rows.iter().map(|r| r.label.len()).max().unwrap_or(0).max(8);
    let listed = inputs <= LIST_CLASSES;
    write!(
        out,
        "{:<width$}  {:>11}  {:>11}  {:>8}  {:>7}  {:>8}",
        "", "top-1 agree", "top-5 agree", "SQNR dB", "KL", "passes s"
    )?;
    if listed {
        write!(out, "  top-1 class per input")?;
    }
    writeln!(out)?;
    for r in rows {
        let (t1, t5, sqnr, kl) = match &r.comparison {
            Some(c) => (
                format!("{:.1}%", c.top1_agreement),
                format!("{:.1}%", c.top5_agreement),
                format!("{:.2}", c.sqnr_db),
                format!("{:.4}", c.kl),
            ),
            None => ("–".into(), "–".into(), "–".into(), "–".into()),
        };
        let seconds = r.seconds.map_or("–".into(), |s| format!("{s:.1}"));
        write!(
            out,
            "{:<width$}  {t1:>11}  {t5:>11}  {sqnr:>8}  {kl:>7}  {seconds:>8}",
            r.label
        )?;
        if listed {
            let classes: Vec<String> = r.classes.iter().map(|c| c.to_string()).collect();
            write!(out, "  {}", classes.join(" "))?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// Runs `qcc compare`.
pub fn compare_pipelines(
    args: &CompareArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<(), Failure> {
    let rows: Vec<(String, String)> = if args.passes.is_empty() {
        DEFAULT_ROWS
            .iter()
            .map(|(w, m, p)| (format!("{w:<11} {m}"), p.to_string()))
            .collect()
    } else {
        args.passes.iter().map(|p| (p.clone(), p.clone())).collect()
    };
    // A mistyped pipeline is an error before any work.
    for (_, pipeline) in &rows {
        qcc_passes::parse_pipeline(pipeline).map_err(|e| format!("--passes '{pipeline}': {e}"))?;
    }
    let float = load(&args.model, &args.preprocess, err)?;
    let pre = preprocessing(&float, &args.preprocess)?;
    let data_path = args.data.as_ref().unwrap_or(&args.calib);
    let flag = if args.data.is_some() {
        "--data"
    } else {
        "--calib"
    };
    let inputs = data::load(data_path, &input_type(&float)?, &pre, None)
        .map_err(|e| format!("{flag}: {e}"))?;
    let n = inputs.names.len();
    let batch = args.batching.batch_size as usize;
    let mut progress = Progress::new(n * (1 + rows.len()), "scoring", args.batching.quiet);
    let reference = run_batches(&float, &inputs.tensor, batch, &mut progress)?;
    let f = reference
        .as_f32()
        .ok_or_else(|| Failure::msg("the float model's output is not f32"))?;
    let classes = f.len() / n.max(1);
    let mut table = vec![Row {
        label: "float".into(),
        comparison: None,
        seconds: None,
        classes: top1(f, classes),
    }];
    let settings = CompileArgs {
        calib: Some(args.calib.clone()),
        verbose: args.verbose,
        preprocess: args.preprocess.clone(),
        ..CompileArgs::default()
    };
    // Decoded once for every pipeline (and reused as the scoring inputs when they are the same).
    let calib = if args.data.is_some() {
        load_calib(&float, &settings)?
    } else {
        Some(inputs.tensor.clone())
    };
    for (label, pipeline) in rows {
        let mut module = float.clone();
        let start = Instant::now();
        run_pipeline_with(&mut module, &pipeline, &settings, calib.clone(), None, err)?;
        let seconds = start.elapsed().as_secs_f64();
        let outputs = run_batches(&module, &inputs.tensor, batch, &mut progress)?;
        let q = outputs
            .as_f32()
            .ok_or_else(|| format!("{pipeline}: the output is not f32"))?;
        if q.len() != f.len() {
            return Err(Failure::msg(format!(
                "{pipeline}: the outputs {:?} differ in shape from float's {:?}",
                outputs.shape, reference.shape
            )));
        }
        table.push(Row {
            label,
            comparison: Some(compare(f, q, classes, None)),
            seconds: Some(seconds),
            classes: top1(q, classes),
        });
    }
    progress.finish();
    writeln!(
        out,
        "{n} inputs from {}, calibrated on {}; agreement and SQNR against float",
        data_path.display(),
        args.calib.display()
    )
    .and_then(|_| print_table(out, &table, n))
    .and_then(|_| {
        if n <= LIST_CLASSES {
            writeln!(out, "inputs in order: {}", inputs.names.join(", "))
        } else {
            Ok(())
        }
    })
    .map_err(|e| Failure::msg(format!("cannot write the table: {e}")))
}
