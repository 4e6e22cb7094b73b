//! `qcc eval MODEL --reference FLOAT --data X`: how far a (quantized) model's outputs are from a
//! float reference's on the same inputs, overall and per layer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use qcc_dialects::{Module, OpKind, Tensor, TensorType};
use qcc_runtime::io::read_npy;
use serde_json::json;

use crate::commands::run::{Batching, run_batches};
use crate::data;
use crate::metrics::{Comparison, LayerStats, compare};
use crate::model::{Failure, input_type, load, load_reference};
use crate::preprocess::PreprocessArgs;
use crate::progress::Progress;

/// Options of `qcc eval`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  Agreement, SQNR and KL of an int8 module against its float model:
    qcc eval model.q.ir --reference model.onnx --data photos/
  The same per layer (mean activation shift and SQNR), as JSON:
    qcc eval model.q.ir --reference model.onnx --data eval.npy --per-layer --json")]
pub struct EvalArgs {
    /// The model to score (usually quantized): .ir or .onnx.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,

    /// The float reference: .ir or .onnx.
    #[arg(long, value_name = "FLOAT_MODEL")]
    pub reference: PathBuf,

    /// Evaluation inputs: images, u8 pixels .npy or f32 inputs .npy.
    #[arg(long, value_name = "DATA")]
    pub data: PathBuf,

    /// Class index of every input (.npy of integers; -1 = unlabelled), for accuracy.
    #[arg(long, value_name = "LABELS.npy")]
    pub labels: Option<PathBuf>,

    /// Also report every quantized layer: mean activation shift and SQNR against the reference.
    #[arg(long)]
    pub per_layer: bool,

    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Batching and progress display.
    #[command(flatten)]
    pub batching: Batching,

    /// Preprocessing of images (overrides what the reference records).
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

/// One quantized layer's figures.
pub struct LayerRow {
    /// The value name shared by both models.
    pub name: String,
    /// The op computing it in the scored model.
    pub op: String,
    /// Mean |shift| / std over channels.
    pub shift: f64,
    /// Layer SQNR in dB.
    pub sqnr_db: f64,
}

/// Ops whose outputs `--per-layer` compares.
fn is_layer(op: &qcc_dialects::Operation) -> bool {
    op.kind()
        .is_some_and(|k| k.is_quant() && k != OpKind::Quantize && k != OpKind::Dequantize)
}

/// `reference` with its batch norms folded into the layers before them, as `quantize` saw it:
/// a folded layer keeps its name but computes what the batch norm computed, so its values match
/// the quantized layer of the same name.
fn folded(reference: &Module) -> Result<Module, String> {
    let steps = qcc_passes::parse_pipeline("fold-batchnorm")?;
    let mut module = reference.clone();
    qcc_passes::PassManager::new(steps)
        .run(
            &mut module,
            &mut qcc_passes::PassContext::default(),
            &mut |_, _| {},
        )
        .map_err(|e| {
            let first = e.diagnostics.first().map(|d| d.message.clone());
            format!(
                "cannot fold the reference's batch norms ({}): {}",
                e.location(),
                first.unwrap_or_default()
            )
        })?;
    Ok(module)
}

/// Per-layer statistics of `model` against `reference` (its batch norms folded), matched by value
/// name, in `model`'s schedule order.
pub fn per_layer(
    model: &Module,
    reference: &Module,
    inputs: &Tensor,
    batch: usize,
    progress: &mut Progress,
) -> Result<Vec<LayerRow>, String> {
    let reference = &folded(reference)?;
    let qf = model.function("main").ok_or("the model has no @main")?;
    let ff = reference
        .function("main")
        .ok_or("the reference has no @main")?;
    let name_of = |f: &qcc_dialects::Function, n| {
        f.try_op(n)
            .and_then(|op| op.result_names.first().cloned().flatten())
    };
    let mut layers: Vec<(qcc_dialects::NodeIndex, String, String, TensorType)> = Vec::new();
    for n in qf.schedule() {
        let op = qf.op(n);
        if let (true, Some(name)) = (is_layer(op), name_of(qf, n)) {
            layers.push((n, name, op.name.clone(), op.results[0].clone()));
        }
    }
    let wanted: HashSet<&str> = layers.iter().map(|l| l.1.as_str()).collect();
    let float_nodes: HashMap<qcc_dialects::NodeIndex, String> = ff
        .schedule()
        .into_iter()
        .filter_map(|n| {
            name_of(ff, n)
                .filter(|name| wanted.contains(name.as_str()))
                .map(|name| (n, name))
        })
        .collect();
    let engine = crate::engines::default_engine();
    let fi = engine.prepare(reference, "main")?;
    let qi = engine.prepare(model, "main")?;
    if inputs.as_f32().is_none() {
        return Err("inputs must be f32".into());
    }
    let n = inputs.shape[0];
    let mut stats: BTreeMap<String, LayerStats> = BTreeMap::new();
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let chunk = inputs.items(start..end);
        let mut float_out: HashMap<String, Tensor> = HashMap::new();
        fi.run_observed(std::slice::from_ref(&chunk), &mut |node, _, t| {
            if let Some(name) = float_nodes.get(&node) {
                float_out.insert(name.clone(), t.clone());
            }
        })
        .map_err(|e| e.to_string())?;
        let mut failure = None;
        qi.run_observed(&[chunk], &mut |node, _, t| {
            let Some((_, name, _, ty)) = layers.iter().find(|l| l.0 == node) else {
                return;
            };
            let Some(f) = float_out.get(name) else { return };
            match qcc_runtime::quant::dequantize(t, ty) {
                Ok(q) => stats.entry(name.clone()).or_default().add(
                    f.as_f32().unwrap_or(&[]),
                    q.as_f32().unwrap_or(&[]),
                    &t.shape,
                ),
                Err(e) => failure = Some(e),
            }
        })
        .map_err(|e| e.to_string())?;
        if let Some(e) = failure {
            return Err(e);
        }
        progress.advance(end - start);
    }
    Ok(layers
        .into_iter()
        .filter_map(|(_, name, op, _)| {
            let s = stats.get(&name)?;
            Some(LayerRow {
                shift: s.mean_shift(),
                sqnr_db: s.sqnr_db(),
                name,
                op,
            })
        })
        .collect())
}

fn labels(path: &std::path::Path, n: usize) -> Result<Vec<i64>, String> {
    let t = read_npy(path)?;
    let labels = crate::onnx::int_values(&t)
        .ok_or_else(|| format!("'{}' must hold integers", path.display()))?;
    if labels.len() != n {
        return Err(format!(
            "'{}' holds {} labels for {n} inputs",
            path.display(),
            labels.len()
        ));
    }
    Ok(labels)
}

/// Loads data, runs both models and compares their outputs.
pub struct Evaluation {
    /// Whole-output figures.
    pub comparison: Comparison,
    /// Per-layer figures, when asked for.
    pub layers: Vec<LayerRow>,
}

/// Scores `model` against `reference` on `inputs`.
pub fn evaluate(
    model: &Module,
    reference: &Module,
    inputs: &Tensor,
    labels: Option<&[i64]>,
    per_layers: bool,
    batch: usize,
    quiet: bool,
) -> Result<Evaluation, String> {
    let n = inputs.shape[0];
    let mut progress = Progress::new(n * (2 + 2 * usize::from(per_layers)), "evaluating", quiet);
    let f = run_batches(reference, inputs, batch, &mut progress)?;
    let q = run_batches(model, inputs, batch, &mut progress)?;
    if f.shape != q.shape {
        return Err(format!(
            "the model's outputs {:?} and the reference's {:?} differ in shape",
            q.shape, f.shape
        ));
    }
    let classes = f.numel() / n.max(1);
    let comparison = compare(
        f.as_f32().ok_or("the reference's output is not f32")?,
        q.as_f32().ok_or("the model's output is not f32")?,
        classes,
        labels,
    );
    let layers = if per_layers {
        per_layer(model, reference, inputs, batch.min(8), &mut progress)?
    } else {
        Vec::new()
    };
    progress.finish();
    Ok(Evaluation { comparison, layers })
}

fn print_table(out: &mut dyn Write, e: &Evaluation) -> std::io::Result<()> {
    let c = &e.comparison;
    writeln!(out, "inputs            {}", c.count)?;
    writeln!(out, "top-1 agreement   {:.1}%", c.top1_agreement)?;
    writeln!(out, "top-5 agreement   {:.1}%", c.top5_agreement)?;
    writeln!(out, "SQNR              {:.2} dB", c.sqnr_db)?;
    writeln!(out, "KL                {:.4}", c.kl)?;
    if let Some([f1, f5, q1, q5]) = c.accuracy {
        writeln!(
            out,
            "top-1 accuracy    {q1:.1}% (reference {f1:.1}%, {} labelled)",
            c.labelled
        )?;
        writeln!(out, "top-5 accuracy    {q5:.1}% (reference {f5:.1}%)")?;
    }
    if !e.layers.is_empty() {
        let width = e
            .layers
            .iter()
            .map(|l| l.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            out,
            "\n{:>3}  {:<width$}  {:<22}  {:>10}  {:>9}",
            "#", "layer", "op", "shift/std", "SQNR dB"
        )?;
        for (i, l) in e.layers.iter().enumerate() {
            writeln!(
                out,
                "{i:>3}  {:<width$}  {:<22}  {:>10.4}  {:>9.2}",
                l.name, l.op, l.shift, l.sqnr_db
            )?;
        }
    }
    Ok(())
}

fn to_json(e: &Evaluation) -> serde_json::Value {
    let c = &e.comparison;
    let finite = |v: f64| if v.is_finite() { json!(v) } else { json!(null) };
    let mut obj = json!({
        "inputs": c.count,
        "top1_agreement": c.top1_agreement,
        "top5_agreement": c.top5_agreement,
        "sqnr_db": finite(c.sqnr_db),
        "kl": c.kl,
    });
    if let Some([f1, f5, q1, q5]) = c.accuracy {
        obj["labelled"] = json!(c.labelled);
        obj["top1_accuracy"] = json!(q1);
        obj["top5_accuracy"] = json!(q5);
        obj["reference_top1_accuracy"] = json!(f1);
        obj["reference_top5_accuracy"] = json!(f5);
    }
    if !e.layers.is_empty() {
        obj["layers"] = e
            .layers
            .iter()
            .map(|l| json!({"name": l.name, "op": l.op, "mean_shift": l.shift, "sqnr_db": finite(l.sqnr_db)}))
            .collect();
    }
    obj
}

/// Runs `qcc eval`.
pub fn eval(args: &EvalArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<(), Failure> {
    let model = load(&args.model, &args.preprocess, err)?;
    let (reference, pre) = load_reference(&model, &args.reference, &args.preprocess, err)?;
    let inputs = data::load(&args.data, &input_type(&reference)?, &pre, None)
        .map_err(|e| format!("--data: {e}"))?;
    let labels = args
        .labels
        .as_ref()
        .map(|p| labels(p, inputs.names.len()))
        .transpose()?;
    let e = evaluate(
        &model,
        &reference,
        &inputs.tensor,
        labels.as_deref(),
        args.per_layer,
        args.batching.batch_size as usize,
        args.batching.quiet,
    )?;
    let written = if args.json {
        writeln!(out, "{}", to_json(&e))
    } else {
        print_table(out, &e)
    };
    written.map_err(|e| Failure::msg(format!("cannot write the report: {e}")))
}
