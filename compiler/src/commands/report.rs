//! `qcc report MODEL... --reference FLOAT --data X [-o shift.svg]`: the mean activation shift of
//! every quantized layer of one or more models against their float reference, as a table on
//! stdout and as a plot (one line per model).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use plotters::prelude::*;

use crate::commands::eval::{LayerRow, per_layer};
use crate::commands::run::Batching;
use crate::data;
use crate::model::{Failure, input_type, load, load_reference};
use crate::output::{check_output, write_atomic};
use crate::preprocess::PreprocessArgs;
use crate::progress::Progress;

/// Options of `qcc report`.
#[derive(Args, Debug)]
#[command(after_help = "\
Example: the mean activation shift per layer before and after bias correction, as a table and a plot:
    qcc --passes=quantize{granularity=per-tensor} --calib photos/ model.onnx -o naive.ir
    qcc --passes=quantize{granularity=per-tensor},bias-correct --calib photos/ model.onnx -o corrected.ir
    qcc report naive.ir corrected.ir --reference model.onnx --data photos/ -o shift.svg")]
pub struct ReportArgs {
    /// The quantized models to compare (e.g. before and after bias correction): .ir or .onnx.
    #[arg(value_name = "MODEL", required = true)]
    pub models: Vec<PathBuf>,

    /// The float reference: .ir or .onnx.
    #[arg(long, value_name = "FLOAT_MODEL")]
    pub reference: PathBuf,

    /// Inputs: images, u8 pixels .npy or f32 inputs .npy.
    #[arg(long, value_name = "DATA")]
    pub data: PathBuf,

    /// Write the plot here (SVG).
    #[arg(short = 'o', long = "output", value_name = "OUT.svg")]
    pub output: Option<PathBuf>,

    /// Batching and progress display.
    #[command(flatten)]
    pub batching: Batching,

    /// Preprocessing of images (overrides what the reference records).
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

/// Line colours that stay apart on white (red, blue, green, orange, purple, brown, grey).
const PALETTE: [RGBColor; 7] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

/// One model's per-layer figures, named for the legend.
struct Series {
    name: String,
    rows: Vec<LayerRow>,
}

/// Legend names: file names, or the paths when two models share a file name.
fn names(paths: &[PathBuf]) -> Vec<String> {
    let short: Vec<String> = paths
        .iter()
        .map(|p| {
            p.file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
        })
        .collect();
    let unique = short
        .iter()
        .enumerate()
        .all(|(i, n)| !short[..i].contains(n));
    if unique {
        short
    } else {
        paths.iter().map(|p| p.display().to_string()).collect()
    }
}

fn mean_shift(rows: &[LayerRow]) -> f64 {
    rows.iter().map(|r| r.shift).sum::<f64>() / rows.len().max(1) as f64
}

/// A tick label with one significant digit (0.03, 0.2, 5).
fn short(v: f64) -> String {
    let decimals = (-v.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

fn print_table(out: &mut dyn Write, series: &[Series]) -> std::io::Result<()> {
    let layers = &series[0].rows;
    let width = layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let col = series
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        .max(18);
    writeln!(
        out,
        "Per layer: mean |shift| / std, and the layer's SQNR in dB"
    )?;
    write!(out, "{:>3}  {:<width$}", "#", "layer")?;
    for s in series {
        write!(out, "  {:>col$}", s.name)?;
    }
    writeln!(out)?;
    for (i, l) in layers.iter().enumerate() {
        write!(out, "{i:>3}  {:<width$}", l.name)?;
        for s in series {
            let cell = s.rows.iter().find(|r| r.name == l.name).map_or_else(
                || "–".to_string(),
                |r| format!("{:.4} {:>6.2} dB", r.shift, r.sqnr_db),
            );
            write!(out, "  {cell:>col$}")?;
        }
        writeln!(out)?;
    }
    write!(out, "{:>3}  {:<width$}", "", "mean")?;
    for s in series {
        write!(out, "  {:>col$}", format!("{:.4}", mean_shift(&s.rows)))?;
    }
    writeln!(out)
}

/// Draws the shift per layer index on a log scale, one line per model.
fn plot(series: &[Series], reference: &str) -> Result<String, String> {
    const FLOOR: f64 = 1e-4;
    let values = series
        .iter()
        .flat_map(|s| s.rows.iter().map(|r| r.shift.max(FLOOR)));
    let (lo, hi) = values.fold((f64::INFINITY, 0f64), |(a, b), v| (a.min(v), b.max(v)));
    // Headroom above the lines for the legend.
    let (lo, hi) = (lo / 1.5, (hi * 4.0).max(lo * 10.0));
    let layers = series.iter().map(|s| s.rows.len()).max().unwrap_or(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 540)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("Mean activation shift per layer against {reference}"),
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..(layers.max(2) - 1) as f64, (lo..hi).log_scale())
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("layer (schedule order)")
            .y_desc("mean |shift| / std")
            .y_labels(12)
            .y_label_formatter(&|v| short(*v))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(e)?;
        for (i, s) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()].to_rgba();
            let points: Vec<(f64, f64)> = s
                .rows
                .iter()
                .enumerate()
                .map(|(x, r)| (x as f64, r.shift.max(FLOOR)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(e)?
                .label(format!("{} (mean {:.4})", s.name, mean_shift(&s.rows)))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 2, color.filled())),
                )
                .map_err(e)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(svg)
}

/// Runs `qcc report`.
pub fn report(args: &ReportArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Failure> {
    if let Some(path) = &args.output {
        check_output(path, "-o")?;
    }
    let first = match args.models.first() {
        Some(path) => load(path, &args.preprocess, err)?,
        None => return Err(Failure::msg("give at least one model to report on")),
    };
    let (reference, pre) = load_reference(&first, &args.reference, &args.preprocess, err)?;
    let inputs = data::load(&args.data, &input_type(&reference)?, &pre, None)
        .map_err(|e| format!("--data: {e}"))?;
    let mut series = Vec::new();
    let mut first = Some(first);
    for (path, name) in args.models.iter().zip(names(&args.models)) {
        let model = match first.take() {
            Some(m) => m,
            None => load(path, &args.preprocess, err)?,
        };
        let n = inputs.tensor.shape[0];
        let mut progress = Progress::new(n, &format!("measuring {name}"), args.batching.quiet);
        let rows = per_layer(
            &model,
            &reference,
            &inputs.tensor,
            // Every layer's float output of a batch is held at once: keep batches small.
            (args.batching.batch_size as usize).min(8),
            &mut progress,
        )?;
        progress.finish();
        if rows.is_empty() {
            return Err(Failure::msg(format!(
                "'{}' has no quantized layer named like a value of the reference '{}'",
                path.display(),
                args.reference.display()
            )));
        }
        series.push(Series { name, rows });
    }
    print_table(out, &series).map_err(|e| Failure::msg(format!("cannot write the table: {e}")))?;
    if let Some(path) = &args.output {
        let reference_name = file_name(&args.reference);
        let svg = plot(&series, &reference_name)
            .map_err(|e| Failure::msg(format!("cannot draw the plot: {e}")))?;
        write_atomic(path, svg.as_bytes())?;
        let _ = writeln!(err, "wrote {}", path.display());
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
}
