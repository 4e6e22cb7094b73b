//! Bias correction ("Fighting Quantization Bias With Bias", Finkelstein, Almog, Grobman 2019):
//! measure, per output channel of every integer conv/dense layer, the mean of (quantized - float)
//! output on calibration inputs, and subtract it through the i32 bias.
//!
//! The float and the quantized network step together op by op over the whole calibration batch,
//! keeping only live values: one pass costs about one float plus one integer run. A layer's
//! accumulators are computed once; trying a bias is only a requantization.

use std::collections::HashMap;
use std::ops::Range;

use qcc_dialects::{
    Attr, Function, Module, NodeIndex, OpKind, Tensor, TensorData, TensorType, Value,
};
use qcc_runtime::quant::{channel_scales, per_tensor, stored_ints};
use qcc_runtime::{Engine, Prepared, Steps};

use crate::bias_search::{LayerOutput, Sums};

/// Images per float run and per accumulator computation in [`lockstep`] (8 x 4.8 MB for the
/// widest MobileNetV2 value).
pub const FLOAT_CHUNK: usize = 8;

/// The most bytes of each of a layer's values over the whole batch (its i32 accumulators, its
/// f32 float output) that bias correction keeps from its first pass for its second instead of
/// computing them again. With MobileNetV2 and 64 images that is every layer but the seven
/// widest (at 112x112 and 56x56), and the peak stays where those layers' values put it.
pub const KEPT_PER_LAYER: usize = 64 << 20;

/// How much of the batch [`lockstep`] holds at a time: it changes the memory and the time
/// lockstep takes, never what it measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holding {
    /// Images per float run and per accumulator computation.
    pub chunk: usize,
    /// Bytes of a layer's accumulators, or of its float output, over the whole batch, up to
    /// which they are kept for the second pass rather than computed again.
    pub kept_per_layer: usize,
}

impl Holding {
    /// What the passes hold: [`FLOAT_CHUNK`] and [`KEPT_PER_LAYER`].
    pub const PASSES: Holding = Holding {
        chunk: FLOAT_CHUNK,
        kept_per_layer: KEPT_PER_LAYER,
    };
}

/// The float network a quantized one came from, and which float values each integer layer stands for.
#[derive(Clone)]
pub struct FloatReference {
    /// The float module (after batch-norm folding, before quantization).
    pub module: Module,
    /// Integer layer -> its float counterpart.
    pub layers: Vec<LayerLink>,
}

impl FloatReference {
    /// Links the `@main` of an already-quantized module (one imported from ONNX, say) to `float`,
    /// the float module it was quantized from: the k-th convolution or dense layer of one, integer
    /// or not, is the k-th of the other, with weights of the same shape. A float layer's value
    /// after an activation that alone reads it is the post-activation value.
    pub fn link(quantized: &Module, float: Module) -> Result<FloatReference, String> {
        fn main(m: &Module) -> Result<&Function, String> {
            m.function("main")
                .ok_or_else(|| "the module has no @main".to_string())
        }
        let (q, f) = (main(quantized)?, main(&float)?);
        let layers = |func: &Function, kinds: [OpKind; 4]| -> Vec<NodeIndex> {
            func.schedule()
                .into_iter()
                .filter(|&n| kinds.iter().any(|k| func.is_op(n, *k)))
                .collect()
        };
        let all = [
            OpKind::Conv2d,
            OpKind::QuantConv2d,
            OpKind::Dense,
            OpKind::QuantDense,
        ];
        let (ql, fl) = (layers(q, all), layers(f, all));
        if ql.len() != fl.len() {
            return Err(format!(
                "the float reference has {} convolution and dense layers, the quantized module {}: it is not the model that was quantized",
                fl.len(),
                ql.len()
            ));
        }
        let mut links = Vec::new();
        for (k, (&qn, &fn_)) in ql.iter().zip(&fl).enumerate() {
            let weights = |func: &Function, n: NodeIndex| {
                func.operands(n)
                    .get(1)
                    .map(|w| func.value_type(*w).shape.clone())
            };
            let (qw, fw) = (weights(q, qn), weights(f, fn_));
            if qw != fw {
                return Err(format!(
                    "layer {} of the quantized module ({}) has weights of shape {:?}, its float counterpart ({}) {:?}: the float reference is not the model that was quantized",
                    k + 1,
                    layer_name(quantized, qn),
                    qw.unwrap_or_default(),
                    layer_name(&float, fn_),
                    fw.unwrap_or_default()
                ));
            }
            if !(q.is_op(qn, OpKind::QuantConv2d) || q.is_op(qn, OpKind::QuantDense)) {
                continue;
            }
            let pre = Value::of(fn_);
            let post = match f.users(pre).as_slice() {
                [(user, 0)]
                    if (f.is_op(*user, OpKind::Relu) || f.is_op(*user, OpKind::Clip))
                        && !f.is_returned(pre) =>
                {
                    Value::of(*user)
                }
                _ => pre,
            };
            links.push(LayerLink {
                quant: qn,
                pre,
                post,
            });
        }
        Ok(FloatReference {
            module: float,
            layers: links,
        })
    }
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

/// Runs `stepper` up to the first of `rc`'s ops and copies the values they read; `None` when
/// the run is already past that op (an earlier layer's value came after it in the float
/// schedule), and the layer's output must be kept instead.
fn recompute_inputs(
    footprint: &Footprint,
    stepper: &mut dyn Steps,
    rc: &Recompute,
) -> Result<Option<HashMap<Value, Tensor>>, String> {
    let first = rc.ops[0];
    let position = |n: NodeIndex| footprint.position.get(&n).copied();
    while stepper.next_node() != Some(first) {
        match stepper.next_node() {
            Some(n) if position(n) < position(first) => {
                stepper.step().map_err(|e| e.to_string())?;
            }
            _ => return Ok(None),
        }
    }
    rc.inputs
        .iter()
        .map(|v| {
            stepper
                .value(*v)
                .cloned()
                .map(|t| (*v, t))
                .ok_or_else(|| "internal error: a layer's float input is not live".to_string())
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

/// What a chunk keeps of a layer for the second pass after the activation.
enum Kept<'a> {
    /// The layer's float output.
    Output(Vec<f32>),
    /// The values its float ops read, to run them again.
    Inputs(&'a Recompute, HashMap<Value, Tensor>),
}

/// `measured` recomputed from the values `rc` kept.
fn recompute_output(
    prepared: &dyn Prepared,
    rc: &Recompute,
    mut values: HashMap<Value, Tensor>,
    measured: Value,
) -> Result<Tensor, String> {
    for op in &rc.ops {
        let t = prepared.evaluate(*op, &values)?;
        values.insert(Value::of(*op), t);
    }
    values
        .remove(&measured)
        .ok_or_else(|| "internal error: the recomputed ops do not give the measured value".into())
}

/// How far a streamed float chunk may run ahead: up to and including `node`, or up to just
/// before it.
#[derive(Clone, Copy, Debug)]
struct Until {
    node: NodeIndex,
    inclusive: bool,
}

/// What a streamed float chunk keeps of a layer for the second pass that measures the corrected
/// bias after the activation: the float ops from the layer to its activation and the values they
/// read (recomputed from those when they take less room than the layer's output).
#[derive(Clone, Debug)]
struct Recompute {
    /// The float ops, in schedule order.
    ops: Vec<NodeIndex>,
    /// The values they read that are computed before them (constants excepted).
    inputs: Vec<Value>,
}

impl Recompute {
    /// The ops computing `link.post` from `link.pre`'s operands, when that is the layer op alone
    /// or the layer op and one activation reading it, and their inputs take less room per image
    /// than `link.post`.
    fn of(func: &Function, link: &LayerLink) -> Option<Recompute> {
        let mut ops = vec![link.pre.node];
        if link.post != link.pre {
            let reads: Vec<Value> = func.operands(link.post.node);
            let non_const: Vec<&Value> = reads
                .iter()
                .filter(|v| !func.is_op(v.node, OpKind::Const))
                .collect();
            if non_const != [&link.pre] {
                return None;
            }
            ops.push(link.post.node);
        }
        let inputs: Vec<Value> = func
            .operands(link.pre.node)
            .into_iter()
            .filter(|v| !func.is_op(v.node, OpKind::Const))
            .collect();
        let per_image = |v: &Value| -> usize { func.value_type(*v).shape.iter().skip(1).product() };
        (inputs.iter().map(per_image).sum::<usize>() < per_image(&link.post))
            .then_some(Recompute { ops, inputs })
    }
}

/// The float network's schedule, with the f32 values (elements per image) held once each op
/// has run: where a float run waits between layers costs that much per image.
struct Footprint {
    /// Schedule position of every op.
    position: HashMap<NodeIndex, usize>,
    /// Elements per image live after each position.
    live: Vec<usize>,
}

impl Footprint {
    fn of(func: &Function) -> Footprint {
        let schedule = func.schedule();
        let position: HashMap<NodeIndex, usize> =
            schedule.iter().enumerate().map(|(p, n)| (*n, p)).collect();
        let end = schedule.len();
        let mut last: HashMap<Value, usize> = HashMap::new();
        for (p, node) in schedule.iter().enumerate() {
            for v in func.operands(*node) {
                last.insert(v, p);
            }
        }
        let per_image = |v: Value| -> usize { func.value_type(v).shape.iter().skip(1).product() };
        let mut delta = vec![0isize; end + 1];
        // A value defined at `from` is held after every position before its last reader's.
        let mut held = |from: usize, v: Value| {
            let until = if func.is_returned(v) {
                end
            } else {
                last.get(&v).copied().unwrap_or(from)
            };
            if until > from {
                delta[from] += per_image(v) as isize;
                delta[until] -= per_image(v) as isize;
            }
        };
        for arg in &func.args {
            held(0, Value::of(*arg));
        }
        for (p, node) in schedule.iter().enumerate() {
            if !func.op(*node).is(OpKind::Const) {
                held(p, Value::of(*node));
            }
        }
        let mut live = Vec::with_capacity(end);
        let mut running = 0isize;
        for d in delta.iter().take(end) {
            running += d;
            live.push(running.max(0) as usize);
        }
        Footprint { position, live }
    }

    /// Runs `stepper` on, at most until it has computed `next`, to where it holds the least.
    fn wait_for(&self, stepper: &mut dyn Steps, until: Until) -> Result<(), String> {
        let (Some(from), Some(&to)) = (
            stepper.next_node().and_then(|n| self.position.get(&n)),
            self.position.get(&until.node),
        ) else {
            return Ok(());
        };
        let Some(to) = (if until.inclusive {
            Some(to)
        } else {
            to.checked_sub(1)
        }) else {
            return Ok(());
        };
        if to < *from {
            return Ok(());
        }
        // Stop after position `best` (or stay, when nothing ahead is smaller).
        let mut best: Option<usize> = None;
        let mut least = if *from > 0 {
            self.live[from - 1]
        } else {
            usize::MAX
        };
        for p in *from..=to {
            if self.live[p] < least {
                least = self.live[p];
                best = Some(p);
            }
        }
        if let Some(best) = best {
            for _ in *from..=best {
                stepper.step().map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

/// Runs the quantized module and its float reference side by side on `inputs` and measures (and,
/// in `Mode::Correct`, corrects) every linked layer in schedule order.
///
/// The integer network steps over the whole batch (its values are bytes); the float network
/// steps in chunks of `holding.chunk` images, and the accumulators are computed a chunk at a
/// time; [`Holding`] changes the memory and time this takes, not what it measures.
/// In correction each float chunk moves on as soon as it has been summed, at most until it has
/// computed the next layer's value, to where it holds the least ([`Footprint`]): of the whole
/// batch, only the narrowest float values between two layers are held. After the activation the
/// corrected bias takes a second pass over the layer's float output, so each chunk also keeps,
/// until then, that output or, when they are smaller, the values the layer's float ops read
/// ([`Recompute`]; the ops run again on them through [`Prepared::evaluate`], which gives the same
/// bits); a chunk then waits before such a layer rather than after it.
#[allow(clippy::too_many_arguments)]
pub fn lockstep(
    engine: &dyn Engine,
    module: &Module,
    reference: &FloatReference,
    inputs: &Tensor,
    at: At,
    mode: Mode,
    holding: Holding,
) -> Result<Vec<Outcome>, String> {
    let chunk = holding.chunk.max(1);
    let qf = module.function("main").ok_or("the module has no @main")?;
    let links: HashMap<NodeIndex, LayerLink> =
        reference.layers.iter().map(|l| (l.quant, *l)).collect();
    let at = match mode {
        Mode::Fit { .. } => At::PostActivation,
        Mode::Correct => at,
    };
    let measured_of = |node: &NodeIndex| {
        links.get(node).map(|link| match at {
            At::PreActivation => link.pre,
            At::PostActivation => link.post,
        })
    };
    let order: Vec<NodeIndex> = qf
        .schedule()
        .into_iter()
        .filter(|n| links.contains_key(n))
        .collect();
    // Correction streams the float chunks (fitting revisits every chunk's values at every step).
    // After the activation, where the corrected bias takes a second pass over the layer's float
    // output, each chunk keeps that output, or the values that recompute it when they are smaller.
    let streaming = mode == Mode::Correct;
    let second_pass = streaming && at == At::PostActivation;
    let qi = engine.prepare(module, "main")?;
    let fi = engine.prepare(&reference.module, "main")?;
    let images = inputs.shape[0];
    // A float output whose whole batch fits `holding.kept_per_layer` is kept, not recomputed.
    let kept_whole = |v: Value| {
        let per_image: usize = fi.function().value_type(v).shape.iter().skip(1).product();
        images * per_image * std::mem::size_of::<f32>() <= holding.kept_per_layer
    };
    let recomputes: HashMap<NodeIndex, Recompute> = if second_pass {
        links
            .iter()
            .filter(|(_, link)| !kept_whole(link.post))
            .filter_map(|(n, link)| Recompute::of(fi.function(), link).map(|r| (*n, r)))
            .collect()
    } else {
        HashMap::new()
    };
    // How far a chunk may run ahead of layer `node`: up to its measured value, or to just before
    // the float ops it will recompute.
    let until_of = |node: &NodeIndex| -> Option<Until> {
        match (recomputes.get(node), links.get(node)) {
            (Some(_), Some(link)) => Some(Until {
                node: link.pre.node,
                inclusive: false,
            }),
            _ => measured_of(node).map(|v| Until {
                node: v.node,
                inclusive: true,
            }),
        }
    };
    let footprint = Footprint::of(fi.function());
    let mut qs = qi
        .steps(std::slice::from_ref(inputs))
        .map_err(|e| e.to_string())?;
    let chunks: Vec<Range<usize>> = (0..images)
        .step_by(chunk)
        .map(|s| s..(s + chunk).min(images))
        .collect();
    let mut floats = chunks
        .iter()
        .map(|r| fi.steps(&[inputs.items(r.clone())]))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut outcomes = Vec::new();
    while let Some(node) = qs.next_node() {
        let Some(measured) = measured_of(&node) else {
            qs.step().map_err(|e| e.to_string())?;
            continue;
        };
        let following = order
            .iter()
            .skip_while(|n| **n != node)
            .nth(1)
            .and_then(until_of);
        let recompute = recomputes.get(&node);
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
        let channels = out_ty.shape.get(1).copied().unwrap_or(1);
        let per_image: usize = out_ty.shape[1..].iter().product();
        let plane = (per_image / channels.max(1)).max(1);
        let bias: Vec<i64> = match operands.get(2).and_then(|b| qs.value(*b)) {
            Some(b) => stored_ints(b).into_iter().map(i64::from).collect(),
            None => vec![0; channels],
        };
        let (sx, _, _) = per_tensor(x_ty).ok_or("the layer input must be per-tensor quantized")?;
        let requant = qi
            .requant(node)
            .ok_or("internal error: the layer has no prepared requantization")?;
        let (out_scale, out_zp, _) =
            per_tensor(out_ty).ok_or("the layer output must be per-tensor quantized")?;
        let template = LayerOutput {
            parts: Vec::new(),
            channels,
            plane,
            unit: channel_scales(w_ty, channels)
                .ok_or("the weight must be quantized")?
                .iter()
                .map(|s| sx * s)
                .collect(),
            requant: requant.clone(),
            out: (out_scale, out_zp),
            at,
        };
        let accumulate = |r: &Range<usize>| -> Result<Vec<i32>, String> {
            let (acc, shape) = if r.len() == images {
                qi.accumulators(node, x, w)?
            } else {
                qi.accumulators(node, &x.items(r.clone()), w)?
            };
            if shape.get(1) != Some(&channels) || acc.len() != r.len() * per_image {
                return Err(format!(
                    "internal error: {} computed accumulators of shape {shape:?}",
                    layer_name(module, node)
                ));
            }
            Ok(acc)
        };
        // The first pass: each chunk's float values and accumulators, and for correction the
        // sums with the current bias. Fitting revisits the accumulators at every step and keeps
        // them; correction keeps them for the second pass when the whole batch's take at most
        // `holding.kept_per_layer`, else recomputes them there (one chunk's at a time).
        let keep = matches!(mode, Mode::Fit { .. })
            || chunks.len() == 1
            || images * per_image * std::mem::size_of::<i32>() <= holding.kept_per_layer;
        let mut sums = vec![Sums::default(); channels];
        let mut kept_acc = Vec::new();
        // For the second pass: per chunk, the float output or the values that recompute it.
        let mut second: Vec<Kept> = Vec::new();
        for (r, float) in chunks.iter().zip(floats.iter_mut()) {
            let inputs = match recompute {
                Some(rc) => recompute_inputs(&footprint, float.as_mut(), rc)?,
                None => None,
            };
            let f = float_value(float.as_mut(), measured)?
                .as_f32()
                .ok_or("the float counterpart is not f32")?;
            if f.len() != r.len() * per_image {
                return Err(format!(
                    "internal error: {} has {} outputs per image but its float counterpart {}",
                    layer_name(module, node),
                    per_image,
                    f.len() / r.len().max(1)
                ));
            }
            let acc = accumulate(r)?;
            if mode == Mode::Correct {
                for (total, s) in sums
                    .iter_mut()
                    .zip(template.on(vec![(&acc, f)]).sums(&bias))
                {
                    total.add(&s);
                }
            }
            if second_pass {
                second.push(match (recompute, inputs) {
                    (Some(rc), Some(values)) => Kept::Inputs(rc, values),
                    _ => Kept::Output(f.to_vec()),
                });
            }
            if streaming && let Some(next) = following {
                footprint.wait_for(float.as_mut(), next)?;
            }
            if keep {
                kept_acc.push(acc);
            }
        }
        let acc_of = |k: usize| -> Result<std::borrow::Cow<'_, [i32]>, String> {
            Ok(match kept_acc.get(k) {
                Some(acc) => std::borrow::Cow::Borrowed(acc.as_slice()),
                None => std::borrow::Cow::Owned(accumulate(&chunks[k])?),
            })
        };
        // Unless streaming, each chunk's float values are still live.
        let reference_of = |k: usize| -> &[f32] {
            floats[k]
                .value(measured)
                .and_then(Tensor::as_f32)
                .unwrap_or(&[])
        };
        let (shift, before, kept, after, final_bias);
        match mode {
            Mode::Correct => {
                shift = sums.iter().map(Sums::mean).collect::<Vec<f64>>();
                before = sums.iter().map(|s| s.d2).sum::<f64>();
                let corrected = template.corrected(&bias, &sums);
                // Before the activation the new sums follow from the old ones; after it they
                // take a second pass.
                after = if at == At::PreActivation {
                    template
                        .rebias(&bias, &sums, &corrected)
                        .iter()
                        .map(|s| s.d2)
                        .sum::<f64>()
                } else {
                    let mut a = 0.0;
                    // Each chunk's kept values go as soon as they have served.
                    for (k, held) in std::mem::take(&mut second).into_iter().enumerate() {
                        let acc = acc_of(k)?;
                        let recomputed = match held {
                            Kept::Inputs(rc, values) => {
                                recompute_output(fi.as_ref(), rc, values, measured)?
                            }
                            Kept::Output(v) => Tensor::from_f32(vec![v.len()], v),
                        };
                        let f = recomputed
                            .as_f32()
                            .ok_or("the float counterpart is not f32")?;
                        let corrected_sums = template.on(vec![(&acc, f)]).sums(&corrected);
                        a += corrected_sums.iter().map(|s| s.d2).sum::<f64>();
                    }
                    a
                };
                kept = after < before;
                final_bias = if kept { corrected } else { bias.clone() };
            }
            Mode::Fit { steps, lr } => {
                let layer = template.on(kept_acc
                    .iter()
                    .enumerate()
                    .map(|(k, acc)| (acc.as_slice(), reference_of(k)))
                    .collect());
                let start = layer.sums(&bias);
                shift = start.iter().map(Sums::mean).collect();
                before = start.iter().map(|s| s.d2).sum();
                let fitted = layer.fit(&bias, steps, lr);
                after = fitted.iter().map(|(_, s)| s.d2).sum();
                let fitted: Vec<i64> = fitted.into_iter().map(|(b, _)| b).collect();
                kept = fitted != bias;
                final_bias = fitted;
            }
        }
        // The layer's own kernel computes its output, with the bias that stays.
        drop(kept_acc);
        if final_bias != bias {
            let b = *operands
                .get(2)
                .ok_or("the layer has no bias operand to correct")?;
            let shape = qs
                .value(b)
                .ok_or("internal error: the layer bias is not live")?
                .shape
                .clone();
            let values = final_bias.iter().map(|v| *v as i32).collect();
            qs.replace(b, Tensor::new(shape, TensorData::I32(values))?);
        }
        qs.step().map_err(|e| e.to_string())?;
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
