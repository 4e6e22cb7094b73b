//! Bias correction ("Fighting Quantization Bias With Bias", Finkelstein, Almog, Grobman 2019):
//! measure, per output channel of every integer conv/dense layer, the mean of (quantized - float)
//! output on calibration inputs, and subtract it through the i32 bias.
//!
//! The float and the quantized network step together op by op over the whole calibration batch,
//! keeping only live values: one pass costs about one float plus one integer run. A layer's
//! accumulators are computed once; trying a bias is only a requantization.

use std::collections::HashMap;

use qcc_dialects::{Attr, Module, NodeIndex, OpKind, Tensor, TensorData, TensorType, Value};
use qcc_runtime::quant::{channel_scales, per_tensor, stored_ints};
use qcc_runtime::{Engine, Steps};

use crate::bias_search::{LayerOutput, Sums};

/// The float network a quantized one came from, and which float values each integer layer stands for.
#[derive(Clone)]
pub struct FloatReference {
    /// The float module (after batch-norm folding, before quantization).
    pub module: Module,
    /// Integer layer -> its float counterpart.
    pub layers: Vec<LayerLink>,
}

/// One integer conv/dense and the float values it replaces.
#[derive(Clone, Copy, Debug)]
pub struct LayerLink {
    /// The `quant.conv2d` / `quant.dense` node of the quantized `@main`.
    pub quant: NodeIndex,
    /// The float layer's output (before its activation).
    pub pre: Value,
    /// The float value after the fused activation (equal to `pre` without one).
    pub post: Value,
}

/// Where the shift is measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// The layer's real-valued output before requantization and activation.
    PreActivation,
    /// The dequantized output after the fused activation clamp.
    PostActivation,
}

impl At {
    /// From the `at` option.
    pub fn parse(s: &str) -> At {
        if s == "post-activation" {
            At::PostActivation
        } else {
            At::PreActivation
        }
    }
}

/// What happened to one layer.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The integer layer.
    pub node: NodeIndex,
    /// Measured mean (quantized - float) per channel, in real units.
    pub shift: Vec<f64>,
    /// The bias that stays (the corrected one, or the original when reverted or only measuring).
    pub bias: Vec<i32>,
    /// Whether a correction was applied and kept.
    pub kept: bool,
    /// Squared error against float before and after the correction.
    pub error: (f64, f64),
}

/// How each layer's bias is chosen before the next layer is measured.
#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    /// Cancel each layer's mean shift, keeping the correction only if it lowers the layer's
    /// error (`bias-correct`; `estimate-bias-shift` records the same corrections as shifts).
    Correct,
    /// Fit each layer's biases to its float counterpart after the activation (gradient descent,
    /// `steps` steps of rate `lr`) before the next is measured.
    Fit {
        /// Gradient steps per layer.
        steps: usize,
        /// Learning rate (unitless; see [`LayerOutput::fit`]).
        lr: f64,
    },
}

/// Advances the float run until `v` is computed, and returns it (live until the run steps on).
fn float_value(stepper: &mut dyn Steps, v: Value) -> Result<&Tensor, String> {
    while stepper.value(v).is_none() {
        if stepper.step().map_err(|e| e.to_string())?.is_none() {
            return Err("internal error: the float network finished before a layer's counterpart was computed".into());
        }
    }
    stepper
        .value(v)
        .ok_or_else(|| "internal error: a computed float value is gone".into())
}

/// Runs the quantized module and its float reference side by side on `inputs` and measures (and,
/// in `Mode::Correct`, corrects) every linked layer in schedule order.
pub fn lockstep(
    engine: &dyn Engine,
    module: &Module,
    reference: &FloatReference,
    inputs: &Tensor,
    at: At,
    mode: Mode,
) -> Result<Vec<Outcome>, String> {
    let qf = module.function("main").ok_or("the module has no @main")?;
    let links: HashMap<NodeIndex, LayerLink> =
        reference.layers.iter().map(|l| (l.quant, *l)).collect();
    let qi = engine.prepare(module, "main")?;
    let fi = engine.prepare(&reference.module, "main")?;
    let mut qs = qi
        .steps(std::slice::from_ref(inputs))
        .map_err(|e| e.to_string())?;
    let mut fs = fi
        .steps(std::slice::from_ref(inputs))
        .map_err(|e| e.to_string())?;
    let mut outcomes = Vec::new();
    while let Some(node) = qs.next_node() {
        let Some(link) = links.get(&node) else {
            qs.step().map_err(|e| e.to_string())?;
            continue;
        };
        let op = qf.op(node);
        if !op.is(OpKind::QuantConv2d) && !op.is(OpKind::QuantDense) {
            return Err(format!(
                "bias correction expected an integer conv or dense layer, found '{}'",
                op.name
            ));
        }
        let operands = qf.operands(node);
        let (x_ty, w_ty, out_ty) = (
            qf.value_type(operands[0]),
            qf.value_type(operands[1]),
            &op.results[0],
        );
        let x = qs
            .value(operands[0])
            .ok_or("internal error: the layer input is not live")?;
        let w = qs
            .value(operands[1])
            .ok_or("internal error: the layer weight is not live")?;
        let (acc, shape) = qi.accumulators(node, x, w)?;
        let channels = shape[1];
        let plane: usize = shape[2..].iter().product();
        let bias: Vec<i64> = match operands.get(2).and_then(|b| qs.value(*b)) {
            Some(b) => stored_ints(b).into_iter().map(i64::from).collect(),
            None => vec![0; channels],
        };
        let (sx, _, _) = per_tensor(x_ty).ok_or("the layer input must be per-tensor quantized")?;
        let requant = qi
            .requant(node)
            .ok_or("internal error: the layer has no prepared requantization")?;
        let at = match mode {
            Mode::Fit { .. } => At::PostActivation,
            _ => at,
        };
        let measured = match at {
            At::PreActivation => link.pre,
            At::PostActivation => link.post,
        };
        let reference_values = float_value(fs.as_mut(), measured)?
            .as_f32()
            .ok_or("the float counterpart is not f32")?;
        if reference_values.len() != acc.len() {
            return Err(format!(
                "internal error: {} has {} outputs but its float counterpart {}",
                layer_name(module, node),
                acc.len(),
                reference_values.len()
            ));
        }
        let (out_scale, out_zp, _) =
            per_tensor(out_ty).ok_or("the layer output must be per-tensor quantized")?;
        let layer = LayerOutput {
            acc: &acc,
            reference: reference_values,
            channels,
            plane: plane.max(1),
            unit: channel_scales(w_ty, channels)
                .ok_or("the weight must be quantized")?
                .iter()
                .map(|s| sx * s)
                .collect(),
            requant: requant.clone(),
            out: (out_scale, out_zp),
            at,
        };
        let sums = layer.sums(&bias);
        let shift: Vec<f64> = sums.iter().map(Sums::mean).collect();
        let before: f64 = sums.iter().map(|s| s.d2).sum();
        let (kept, after, final_bias) = match mode {
            Mode::Correct => {
                let corrected = layer.corrected(&bias, &sums);
                let after: f64 = layer
                    .rebias(&bias, &sums, &corrected)
                    .iter()
                    .map(|s| s.d2)
                    .sum();
                if after < before {
                    (true, after, corrected)
                } else {
                    (false, after, bias.clone())
                }
            }
            Mode::Fit { steps, lr } => {
                let fitted = layer.fit(&bias, steps, lr);
                let after: f64 = fitted.iter().map(|(_, s)| s.d2).sum();
                let fitted: Vec<i64> = fitted.into_iter().map(|(b, _)| b).collect();
                (fitted != bias, after, fitted)
            }
        };
        qs.provide(requant.requantize(&acc, &final_bias, plane, out_ty, shape.clone()));
        outcomes.push(Outcome {
            node,
            shift,
            bias: final_bias.iter().map(|b| *b as i32).collect(),
            kept,
            error: (before, after),
        });
    }
    Ok(outcomes)
}

/// Writes a layer's new i32 bias into its bias constant (in the weight store, or inline).
pub fn set_bias(module: &mut Module, node: NodeIndex, bias: Vec<i32>) -> Result<(), String> {
    let func = module
        .functions
        .iter_mut()
        .find(|f| f.name == "main")
        .ok_or("the module has no @main")?;
    let Some(b) = func.operands(node).get(2).copied() else {
        return Err("the layer has no bias operand".into());
    };
    let op = func.op_mut(b.node);
    if !op.is(OpKind::Const) {
        return Err("the layer's bias is not a constant".into());
    }
    let ty: TensorType = op.results[0].clone();
    if let Some(Attr::Dense(d)) = op.attrs.get("value").cloned() {
        let mut d = d;
        d.data = TensorData::I32(bias);
        op.attrs.set("value", Attr::Dense(d));
        return Ok(());
    }
    let name = op
        .attr("name")
        .and_then(Attr::as_str)
        .ok_or("the bias constant names no tensor")?
        .to_string();
    module
        .weights
        .insert(name, Tensor::new(ty.shape, TensorData::I32(bias))?);
    Ok(())
}

/// A printable name of an integer layer, for `--verbose`.
pub fn layer_name(module: &Module, node: NodeIndex) -> String {
    module
        .function("main")
        .and_then(|f| f.try_op(node))
        .map(|op| match op.result_names.first().cloned().flatten() {
            Some(n) => format!("%{n}"),
            None => op.name.clone(),
        })
        .unwrap_or_default()
}
