//! `bias-correct-analytic`: data-free bias correction (Nagel et al. 2019, section 4.2). A layer's
//! quantized weights `W_q * S_w` differ from its float weights `W` by `e = W_q * S_w - W`; on an
//! input whose channel c has mean `E[x_c]`, that shifts output channel o by
//! `sum_{c,k} e[o, c, k] * E[x_c]` on average. The means come from the float network's folded
//! batch norms (`crate::moments`: clipped normals through ReLU/ReLU6), not from images, and the
//! shift is taken out of the i32 bias. Layers whose input has no derivable means (the first
//! layer reads the image) keep their bias.

use qcc_dialects::{Module, NodeIndex, Value};
use qcc_runtime::quant::{channel_scales, per_tensor, stored_ints};

use crate::bias::{FloatReference, layer_name, set_bias};
use crate::moments::{Moments, propagate};
use crate::pass::{Options, Pass, PassContext, PassInfo};
use crate::rewrite::{WeightLayout, const_tensor};

/// Registration of `bias-correct-analytic`.
pub const INFO: PassInfo = PassInfo {
    name: "bias-correct-analytic",
    summary: "data-free bias correction: each integer layer's expected output shift from its weight rounding error times the input means its float network's folded batch norms imply; no calibration inputs",
    options: &[],
    requires: &["quantize"],
    create: |_: &Options| Box::new(Analytic),
};

struct Analytic;

impl Pass for Analytic {
    fn name(&self) -> &'static str {
        INFO.name
    }

    fn run(&self, module: &mut Module, ctx: &mut PassContext) -> Result<(), String> {
        let reference = ctx.float_reference.as_ref().ok_or_else(|| {
            format!("{} needs the float network that quantize started from: run it in the same pipeline after quantize (e.g. --passes=quantize,{}), or give --reference", INFO.name, INFO.name)
        })?;
        let float = reference
            .module
            .function("main")
            .ok_or("the float reference has no @main")?;
        let moments = propagate(&reference.module, float);
        let (mut corrected, mut skipped) = (0, Vec::new());
        let mut biases = Vec::new();
        for link in &reference.layers {
            let input = float.operands(link.pre.node)[0];
            let Some(x) = moments.get(&input) else {
                skipped.push(layer_name(module, link.quant));
                continue;
            };
            match corrected_bias(module, reference, link.quant, link.pre, x)? {
                Some(bias) => {
                    biases.push((link.quant, bias));
                    corrected += 1;
                }
                None => skipped.push(layer_name(module, link.quant)),
            }
        }
        if corrected == 0 {
            return Err(format!(
                "no layer's input has batch-norm statistics to derive its means from ({} layers): the float network has no batch norms that fold-batchnorm folded (a model exported with them already folded has none); use bias-correct with --calib instead",
                skipped.len()
            ));
        }
        for (node, bias) in biases {
            set_bias(module, node, bias)?;
        }
        let listed: Vec<&str> = skipped.iter().take(5).map(String::as_str).collect();
        let more = if skipped.len() > 5 { ", ..." } else { "" };
        ctx.note(
            INFO.name,
            format!(
                "corrected {corrected} layers from batch-norm statistics{}",
                if skipped.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; left {} with no input means ({}{more})",
                        skipped.len(),
                        listed.join(", ")
                    )
                }
            ),
        );
        Ok(())
    }
}

/// Integer layer `node`'s bias less its expected shift on inputs of moments `x`, or `None` when
/// the layer has no constant weights or bias to work with.
fn corrected_bias(
    module: &Module,
    reference: &FloatReference,
    node: NodeIndex,
    pre: Value,
    x: &Moments,
) -> Result<Option<Vec<i32>>, String> {
    let q = module.function("main").ok_or("the module has no @main")?;
    let f = reference
        .module
        .function("main")
        .ok_or("the float reference has no @main")?;
    let operands = q.operands(node);
    let (Some(wq), Some(bq)) = (
        operands.get(1).and_then(|w| const_tensor(module, q, *w)),
        operands.get(2).and_then(|b| const_tensor(module, q, *b)),
    ) else {
        return Ok(None);
    };
    let Some(w) = f
        .operands(pre.node)
        .get(1)
        .and_then(|w| const_tensor(&reference.module, f, *w))
    else {
        return Ok(None);
    };
    let w = w.as_f32().ok_or("the float weight is not f32")?;
    let outputs = wq.shape[0];
    let (sx, _, _) = per_tensor(q.value_type(operands[0]))
        .ok_or("the layer input must be per-tensor quantized")?;
    let sw =
        channel_scales(q.value_type(operands[1]), outputs).ok_or("the weight must be quantized")?;
    let Some(layout) = WeightLayout::of(f, pre.node) else {
        return Ok(None);
    };
    let mut shift = vec![0.0f64; outputs];
    for (i, (q, w)) in stored_ints(&wq).iter().zip(w).enumerate() {
        let (o, c) = layout.channels(i);
        let error = f64::from(*q) * sw[o] - f64::from(*w);
        shift[o] += error * x.mean.get(c).copied().unwrap_or(0.0);
    }
    let bias = stored_ints(&bq)
        .iter()
        .zip(&shift)
        .zip(&sw)
        .map(|((b, s), w)| {
            let levels = (s / (sx * w)).round();
            let levels = if levels.is_finite() { levels as i64 } else { 0 };
            (i64::from(*b) - levels).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
        })
        .collect();
    Ok(Some(bias))
}
