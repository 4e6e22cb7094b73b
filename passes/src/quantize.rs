//! `quantize`: calibrates activation ranges on sample inputs and rewrites the float network into
//! integer `quant` ops: u8 asymmetric activations, i8 symmetric narrow-range weights (per output
//! channel or per tensor), i32 biases at `s_x * s_w[c]`, ReLU/ReLU6 fused as the output clamp.
//! Ops with no integer form stay float between `quant.dequantize` and `quant.quantize`.

use std::collections::{BTreeMap, HashMap};

use qcc_dialects::ops::attrs::{self, ClipBounds};
use qcc_dialects::{
    Attr, Attrs, ElemType, Function, Module, NodeIndex, OpKind, Operation, QuantParams, QuantType,
    Storage, Tensor, TensorData, TensorType, Value, f32_scale,
};

use qcc_runtime::quant::{to_bias, to_weight};

use crate::calibrate::{Method, calibrate, check_inputs, take};
use crate::pass::{OptionKind, OptionSpec, Options, Pass, PassContext, PassInfo};

/// Registration of `quantize`.
pub const INFO: PassInfo = PassInfo {
    name: "quantize",
    summary: "calibrate (on --calib data, or from batch-norm statistics) and rewrite conv/dense/add/pool/concat into int8 quant ops",
    options: &[
        OptionSpec {
            name: "granularity",
            kind: OptionKind::Choice(&["per-channel", "per-tensor"]),
            default: "per-channel",
            help: "weight scales: one per output channel, or one per tensor",
        },
        OptionSpec {
            name: "calibration",
            kind: OptionKind::Choice(&["mse", "minmax", "percentile", "batchnorm"]),
            default: "mse",
            help: "how activation ranges are chosen: from the calibration inputs (mse: the range with the least expected clipping plus rounding error; minmax; percentile), or with no inputs at all from the batch-norm statistics fold-batchnorm recorded (batchnorm: each channel's mean +- sigmas standard deviations, clipped by the activations; the input's from the recorded preprocessing)",
        },
        OptionSpec {
            name: "sigmas",
            kind: OptionKind::Float {
                min: 0.5,
                max: 100.0,
            },
            default: "6",
            help: "standard deviations each side of a channel's mean that calibration=batchnorm keeps",
        },
        OptionSpec {
            name: "percentile",
            kind: OptionKind::Float {
                min: 50.0,
                max: 100.0,
            },
            default: "99.99",
            help: "the percentile kept by calibration=percentile",
        },
        OptionSpec {
            name: "weights",
            kind: OptionKind::Choice(&["maxabs", "mse"]),
            default: "maxabs",
            help: "weight scales: max |w| / 127, or the clipping that minimizes the squared rounding error",
        },
        crate::calibrate::SAMPLES_OPTION,
    ],
    requires: &["fold-batchnorm"],
    create: |o: &Options| {
        Box::new(Quantize {
            per_channel: o.choice("granularity") == "per-channel",
            ranges: match o.choice("calibration") {
                "percentile" => Ranges::Calibrated(Method::Percentile(o.float("percentile"))),
                "mse" => Ranges::Calibrated(Method::Mse),
                "batchnorm" => Ranges::BatchNorm(o.float("sigmas")),
                _ => Ranges::Calibrated(Method::MinMax),
            },
            samples: o.int("samples") as usize,
            weight_mse: o.choice("weights") == "mse",
        })
    },
};

/// Where activation ranges come from.
#[derive(Clone, Copy, Debug)]
enum Ranges {
    /// Running the float network on the calibration inputs.
    Calibrated(Method),
    /// The recorded batch-norm statistics, each channel's mean +- this many standard
    /// deviations (`crate::moments::ranges`), no inputs.
    BatchNorm(f64),
}

struct Quantize {
    per_channel: bool,
    weight_mse: bool,
    ranges: Ranges,
    samples: usize,
}

/// Scale and zero point of a u8 activation over a calibrated range (widened to contain 0, so
/// that 0.0 is exact). A collapsed range gets the scale of [0, 1].
pub fn activation_params(lo: f32, hi: f32) -> (f64, i64) {
    let (lo, hi) = (lo.min(0.0) as f64, hi.max(0.0) as f64);
    let mut scale = f32_scale((hi - lo) / 255.0);
    if !(scale.is_finite() && scale > 1e-12) {
        scale = f32_scale(1.0 / 255.0);
    }
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as i64;
    (scale, zp)
}

fn u8_type(shape: Vec<usize>, (scale, zero_point): (f64, i64)) -> TensorType {
    TensorType::new(
        shape,
        ElemType::Quant(QuantType {
            storage: Storage::U8,
            params: QuantParams::PerTensor { scale, zero_point },
        }),
    )
}

/// The scale of symmetric narrow-range i8 weights: `max |w| / 127`, or with `mse` the clipped
/// scale (down to half of that, in 1% steps) with the smallest squared rounding error, ties going
/// to the larger scale (so weights already on a grid keep it).
fn weight_scale(w: &[f32], mse: bool) -> f64 {
    let top = w.iter().fold(0f32, |m, v| m.max(v.abs())) as f64 / 127.0;
    if top == 0.0 {
        return 0.0;
    }
    let top = f32_scale(top);
    if !mse {
        return top;
    }
    let error = |s: f64| -> f64 {
        w.iter()
            .map(|v| {
                let v = *v as f64;
                (v - to_weight(v, s) as f64 * s).powi(2)
            })
            .sum()
    };
    let mut best = (error(top), top);
    for percent in (50..100).rev() {
        let s = f32_scale(top * percent as f64 / 100.0);
        let e = error(s);
        if e < best.0 {
            best = (e, s);
        }
    }
    best.1
}

/// Symmetric narrow-range i8 weights: per output channel (axis 0) or one scale for the tensor.
pub fn quantize_weights(
    w: &[f32],
    shape: &[usize],
    per_channel: bool,
    mse: bool,
) -> (Vec<i8>, Vec<f64>) {
    let channels = shape[0];
    let per = w.len() / channels.max(1);
    let scales: Vec<f64> = if per_channel {
        w.chunks(per.max(1)).map(|c| weight_scale(c, mse)).collect()
    } else {
        vec![weight_scale(w, mse); channels]
    };
    // An all-zero channel quantizes to zeros under any scale; 1/127 keeps its bias precise.
    let scales: Vec<f64> = scales
        .into_iter()
        .map(|s| if s > 0.0 { s } else { f32_scale(1.0 / 127.0) })
        .collect();
    let q = w
        .iter()
        .enumerate()
        .map(|(i, v)| to_weight(*v as f64, scales[i / per.max(1)]))
        .collect();
    (q, scales)
}

/// Where a rewritten layer's output goes: the value it stands for (after a fused activation),
/// its type, its clamp and per-channel bounds, and the fused activation.
struct LayerOutput {
    value: Value,
    ty: TensorType,
    clamp: Option<Attr>,
    channel_max: Option<Attr>,
    fused: Option<NodeIndex>,
}

/// What replaced an old value in the new function.
#[derive(Default)]
struct Mapping {
    float: HashMap<Value, Value>,
    quant: HashMap<Value, Value>,
}

/// The activation that follows `node` in `func` and can be fused as its output clamp, with its
/// bounds.
fn fusable_activation(func: &Function, node: NodeIndex) -> Option<(NodeIndex, ClipBounds)> {
    let out = Value::of(node);
    let users = func.users(out);
    if users.len() != 1 || func.is_returned(out) {
        return None;
    }
    let user = users[0].0;
    let op = func.op(user);
    match op.kind()? {
        OpKind::Relu => Some((
            user,
            ClipBounds {
                lo: 0.0,
                hi: f64::INFINITY,
                channel_hi: None,
            },
        )),
        OpKind::Clip => {
            let b = attrs::clip_bounds(op).ok()?;
            (b.lo == 0.0 && b.max_hi() > 0.0).then_some((user, b))
        }
        _ => None,
    }
}

/// Whether `quantize` never reads the calibrated range of `v`: the output of a conv/dense layer
/// whose activation is fused into it (the layer's output takes the activation's range).
fn range_unread(func: &Function, v: Value) -> bool {
    v.result == 0
        && func.try_op(v.node).is_some_and(|op| {
            (op.is(OpKind::Conv2d) || op.is(OpKind::Dense))
                && fusable_activation(func, v.node).is_some()
        })
}

struct Rewriter<'a> {
    old: &'a Function,
    new: Function,
    module: &'a mut Module,
    ranges: HashMap<Value, (f32, f32)>,
    map: Mapping,
    per_channel: bool,
    weight_mse: bool,
    skipped: BTreeMap<String, usize>,
    layers: usize,
    links: Vec<crate::bias::LayerLink>,
}

fn hint(func: &Function, v: Value) -> Option<String> {
    match &func.graph[v.node] {
        qcc_dialects::Node::Arg { name, .. } => Some(name.clone()),
        qcc_dialects::Node::Op(op) => op.result_names.get(v.result).cloned().flatten(),
    }
    .filter(|h| !h.bytes().all(|b| b.is_ascii_digit()))
}

impl Rewriter<'_> {
    fn add(&mut self, op: Operation, operands: &[Value]) -> Value {
        Value::of(self.new.add_op(op, operands))
    }

    fn params(&self, v: Value) -> (f64, i64) {
        let (lo, hi) = self.ranges.get(&v).copied().unwrap_or((0.0, 0.0));
        activation_params(lo, hi)
    }

    /// The float form of an old value in the new function.
    fn float(&mut self, v: Value) -> Result<Value, String> {
        if let Some(f) = self.map.float.get(&v) {
            return Ok(*f);
        }
        let f = if let Some(q) = self.map.quant.get(&v).copied() {
            let ty = TensorType::f32(self.new.value_type(q).shape.clone());
            let mut op = Operation::of(OpKind::Dequantize, Attrs::new(), ty);
            op.result_names[0] = hint(self.old, v);
            self.add(op, &[q])
        } else if self.old.is_op(v.node, OpKind::Const) {
            let op = self.old.op(v.node).clone();
            self.add(op, &[])
        } else {
            return Err(format!(
                "internal error: value {v:?} was not converted before its use"
            ));
        };
        self.map.float.insert(v, f);
        Ok(f)
    }

    /// The quantized (u8) form of an old value, quantizing its float form on first need.
    fn quantized(&mut self, v: Value) -> Result<Value, String> {
        if let Some(q) = self.map.quant.get(&v) {
            return Ok(*q);
        }
        let f = self.float(v)?;
        let ty = u8_type(self.new.value_type(f).shape.clone(), self.params(v));
        let mut op = Operation::of(OpKind::Quantize, Attrs::new(), ty);
        op.result_names[0] = hint(self.old, v).map(|h| format!("{h}_q"));
        let q = self.add(op, &[f]);
        self.map.quant.insert(v, q);
        Ok(q)
    }

    fn keep_float(&mut self, node: NodeIndex, why: &str) -> Result<(), String> {
        let op = self.old.op(node).clone();
        *self
            .skipped
            .entry(format!("{} ({why})", op.name))
            .or_default() += 1;
        let operands = self
            .old
            .operands(node)
            .into_iter()
            .map(|v| self.float(v))
            .collect::<Result<Vec<_>, _>>()?;
        let new = self.add(op, &operands);
        self.map.float.insert(Value::of(node), new);
        Ok(())
    }

    /// The result type, clamp and per-channel bounds of a layer whose output (after a fused
    /// activation) is `out`.
    fn output(&self, node: NodeIndex, shape: Vec<usize>) -> LayerOutput {
        match fusable_activation(self.old, node) {
            Some((act, bounds)) => {
                let out = Value::of(act);
                let (scale, zp) = self.params(out);
                let level = |max: f64| {
                    let hi = if max.is_finite() {
                        (zp as f64 + (max / scale).round()).min(255.0) as i64
                    } else {
                        255
                    };
                    hi.max(zp)
                };
                let hi = level(bounds.max_hi());
                let channel_max = bounds.channel_hi.as_ref().map(|h| {
                    let levels: Vec<i64> = (0..h.len())
                        .map(|c| level(bounds.hi_of(c)).min(hi))
                        .collect();
                    Attr::ints(&levels)
                });
                LayerOutput {
                    value: out,
                    ty: u8_type(shape, (scale, zp)),
                    clamp: Some(Attr::ints(&[zp, hi])),
                    channel_max,
                    fused: Some(act),
                }
            }
            None => {
                let out = Value::of(node);
                LayerOutput {
                    value: out,
                    ty: u8_type(shape, self.params(out)),
                    clamp: None,
                    channel_max: None,
                    fused: None,
                }
            }
        }
    }

    fn const_f32(&self, v: Value) -> Option<Tensor> {
        let t = crate::rewrite::const_tensor(self.module, self.old, v)?;
        t.as_f32().is_some().then_some(t)
    }

    fn weight_name(&self, v: Value, suffix: &str) -> String {
        let base = crate::rewrite::const_name(self.old, v)
            .or_else(|| hint(self.old, v))
            .unwrap_or_else(|| "weight".into());
        format!("{base}{suffix}")
    }

    fn new_const(&mut self, name: &str, data: TensorData, ty: TensorType, inline: bool) -> Value {
        let tensor = Tensor {
            shape: ty.shape.clone(),
            data,
        };
        let op = self.module.weights.const_op(name, tensor, ty, inline);
        self.add(op, &[])
    }

    /// Rewrites conv2d/dense with constant weights; `Ok(Some(why))` when it must stay float.
    fn layer(
        &mut self,
        node: NodeIndex,
        consumed: &mut Vec<NodeIndex>,
    ) -> Result<Option<String>, String> {
        let op = self.old.op(node).clone();
        let ops = self.old.operands(node);
        let Some(w) = self.const_f32(ops[1]) else {
            return Ok(Some("its weight is not a constant".into()));
        };
        let bias = match ops.get(2) {
            Some(b) => match self.const_f32(*b) {
                Some(t) => Some(t),
                None => return Ok(Some("its bias is not a constant".into())),
            },
            None => None,
        };
        let wname = self.weight_name(ops[1], "");
        for (t, name) in [
            (Some(&w), wname.clone()),
            (
                bias.as_ref(),
                self.weight_name(ops.get(2).copied().unwrap_or(ops[1]), ""),
            ),
        ] {
            if let Some(t) = t
                && t.as_f32().expect("f32").iter().any(|v| !v.is_finite())
            {
                return Err(format!(
                    "weight '{name}' of {} contains NaN or infinite values",
                    op.name
                ));
            }
        }
        let xq = self.quantized(ops[0])?;
        let (sx, _) = match qcc_runtime::quant::per_tensor(self.new.value_type(xq)) {
            Some((s, z, _)) => (s, z),
            None => return Ok(Some("its input is not per-tensor quantized".into())),
        };
        let (wq, scales) = quantize_weights(
            w.as_f32().expect("f32"),
            &w.shape,
            self.per_channel,
            self.weight_mse,
        );
        let channels = w.shape[0];
        let params = if self.per_channel {
            QuantParams::PerAxis {
                axis: 0,
                scales: scales.clone(),
                zero_points: vec![0; channels],
            }
        } else {
            QuantParams::PerTensor {
                scale: scales[0],
                zero_point: 0,
            }
        };
        let inline = crate::rewrite::is_inline_const(self.old, ops[1]);
        let wty = TensorType::new(
            w.shape.clone(),
            ElemType::Quant(QuantType {
                storage: Storage::I8,
                params,
            }),
        );
        let wv = self.new_const(&format!("{wname}.q"), TensorData::I8(wq), wty, inline);
        if let Some(h) = hint(self.old, ops[1]) {
            self.new.op_mut(wv.node).result_names[0] = Some(format!("{h}_q"));
        }
        let b = bias
            .as_ref()
            .map(|t| t.as_f32().expect("f32").to_vec())
            .unwrap_or_else(|| vec![0.0; channels]);
        let bq: Vec<i32> = b
            .iter()
            .zip(&scales)
            .map(|(v, s)| to_bias(*v as f64 / (sx * s)) as i32)
            .collect();
        let bname = match ops.get(2) {
            Some(bv) => self.weight_name(*bv, ".q"),
            None => format!("{}.bias.q", wname.strip_suffix(".weight").unwrap_or(&wname)),
        };
        let bv = self.new_const(
            &bname,
            TensorData::I32(bq),
            TensorType::new(vec![channels], ElemType::I32),
            inline,
        );
        let bias_hint = match ops.get(2) {
            Some(b) => hint(self.old, *b).map(|h| format!("{h}_q")),
            None => hint(self.old, Value::of(node)).map(|h| format!("{h}_bias_q")),
        };
        self.new.op_mut(bv.node).result_names[0] = bias_hint;
        let LayerOutput {
            value: out,
            ty,
            clamp,
            channel_max,
            fused,
        } = self.output(node, op.results[0].shape.clone());
        let mut attrs = op.attrs.clone();
        // The float layer's channel statistics stay with the float reference.
        attrs.remove("channel_mean");
        attrs.remove("channel_std");
        if let Some(c) = clamp {
            attrs.set("clamp", c);
        }
        if let Some(c) = channel_max {
            attrs.set("channel_max", c);
        }
        let kind = if op.is(OpKind::Conv2d) {
            OpKind::QuantConv2d
        } else {
            OpKind::QuantDense
        };
        let mut qop = Operation::of(kind, attrs, ty);
        qop.result_names[0] = hint(self.old, out);
        let q = self.add(qop, &[xq, wv, bv]);
        self.map.quant.insert(out, q);
        consumed.extend(fused);
        self.layers += 1;
        self.links.push(crate::bias::LayerLink {
            quant: q.node,
            pre: Value::of(node),
            post: out,
        });
        Ok(None)
    }

    /// Rewrites an op whose integer form takes quantized inputs and calibrated output parameters.
    fn simple(
        &mut self,
        node: NodeIndex,
        kind: OpKind,
        consumed: &mut Vec<NodeIndex>,
        fuse: bool,
    ) -> Result<(), String> {
        let op = self.old.op(node).clone();
        let inputs = self
            .old
            .operands(node)
            .into_iter()
            .map(|v| self.quantized(v))
            .collect::<Result<Vec<_>, _>>()?;
        // Only conv/dense layers take per-channel bounds.
        let fused_output = fuse
            .then(|| self.output(node, op.results[0].shape.clone()))
            .filter(|o| o.channel_max.is_none());
        let (out, ty, clamp, fused) = match fused_output {
            Some(o) => (o.value, o.ty, o.clamp, o.fused),
            None => {
                let out = Value::of(node);
                (
                    out,
                    u8_type(op.results[0].shape.clone(), self.params(out)),
                    None,
                    None,
                )
            }
        };
        let mut attrs = op.attrs.clone();
        if let Some(c) = clamp {
            attrs.set("clamp", c);
        }
        let mut qop = Operation::of(kind, attrs, ty);
        qop.result_names[0] = hint(self.old, out);
        let q = self.add(qop, &inputs);
        self.map.quant.insert(out, q);
        consumed.extend(fused);
        self.layers += 1;
        Ok(())
    }

    /// An op that only moves data: it keeps its input's quantization.
    fn pass_through(&mut self, node: NodeIndex, kind: OpKind) -> Result<(), String> {
        let op = self.old.op(node).clone();
        let input = self.old.operands(node)[0];
        let q = self.quantized(input)?;
        let elem = self.new.value_type(q).elem.clone();
        let mut new = op.clone();
        new.name = kind.name().to_string();
        new.results = vec![TensorType::new(op.results[0].shape.clone(), elem)];
        let v = self.add(new, &[q]);
        self.map.quant.insert(Value::of(node), v);
        Ok(())
    }

    fn run(&mut self) -> Result<(), String> {
        for &a in &self.old.args {
            let qcc_dialects::Node::Arg { name, ty, .. } = &self.old.graph[a] else {
                continue;
            };
            let v = self.new.add_arg(name, ty.clone());
            self.map.float.insert(Value::of(a), v);
        }
        let mut consumed: Vec<NodeIndex> = Vec::new();
        for node in self.old.schedule() {
            if consumed.contains(&node) {
                continue;
            }
            let op = self.old.op(node);
            let kind = op
                .kind()
                .ok_or_else(|| format!("unknown op '{}'", op.name))?;
            let has_quant_input = |r: &Self| {
                r.old
                    .operands(node)
                    .first()
                    .is_some_and(|v| r.map.quant.contains_key(v))
            };
            match kind {
                OpKind::Const => {} // copied where a float op reads it, folded into layers otherwise
                OpKind::Conv2d | OpKind::Dense => {
                    if let Some(why) = self.layer(node, &mut consumed)? {
                        self.keep_float(node, &why)?;
                    }
                }
                OpKind::Add => self.simple(node, OpKind::QuantAdd, &mut consumed, true)?,
                OpKind::AvgPool2d => {
                    self.simple(node, OpKind::QuantAvgPool2d, &mut consumed, false)?
                }
                OpKind::GlobalAvgPool => {
                    self.simple(node, OpKind::QuantGlobalAvgPool, &mut consumed, false)?
                }
                OpKind::Concat => self.simple(node, OpKind::QuantConcat, &mut consumed, false)?,
                OpKind::MaxPool2d => self.pass_through(node, OpKind::QuantMaxPool2d)?,
                OpKind::Flatten | OpKind::Reshape if has_quant_input(self) => {
                    self.pass_through(node, kind)?
                }
                OpKind::Flatten | OpKind::Reshape => self.keep_float(node, "its input is float")?,
                OpKind::Relu | OpKind::Clip => {
                    self.keep_float(node, "no integer layer before it to fuse into")?
                }
                OpKind::BatchNorm
                | OpKind::Sub
                | OpKind::Mul
                | OpKind::Div
                | OpKind::MatMul
                | OpKind::Transpose
                | OpKind::Softmax
                | OpKind::Pad
                | OpKind::Sigmoid
                | OpKind::HardSigmoid
                | OpKind::HardSwish => self.keep_float(node, "no integer form")?,
                OpKind::Quantize
                | OpKind::Dequantize
                | OpKind::QuantConv2d
                | OpKind::QuantDense
                | OpKind::QuantAdd
                | OpKind::QuantAvgPool2d
                | OpKind::QuantMaxPool2d
                | OpKind::QuantGlobalAvgPool
                | OpKind::QuantConcat => {
                    return Err(format!(
                        "the module is quantized already ('{kind}'); quantize takes a float module"
                    ));
                }
            }
        }
        let results = self.old.results.clone();
        for v in results {
            let f = self.float(v)?;
            self.new.results.push(f);
        }
        Ok(())
    }
}

impl Pass for Quantize {
    fn name(&self) -> &'static str {
        INFO.name
    }

    fn run(&self, module: &mut Module, ctx: &mut PassContext) -> Result<(), String> {
        let main = module
            .function("main")
            .ok_or("quantize: the module has no function @main")?;
        let mut calibrated_on = "batch-norm statistics, no inputs".to_string();
        let ranges = match (self.ranges, ctx.calib.as_ref()) {
            (Ranges::BatchNorm(sigmas), _) => crate::moments::ranges(module, main, sigmas)
                .map_err(|e| format!("quantize{{calibration=batchnorm}}: {e}"))?,
            (_, None) => {
                return Err(
                    "quantize needs calibration data: give --calib DATA (a folder of images, a .npy of u8 pixels [N, 3, H, W] or a .npy of f32 inputs); it uses the first 64 samples unless quantize{samples=N} says otherwise; quantize{calibration=batchnorm} needs none when the model has batch norms"
                        .into(),
                );
            }
            (Ranges::Calibrated(method), Some(calib)) => {
                check_inputs(main, calib)?;
                let inputs = take(calib, self.samples);
                calibrated_on = format!("{} samples", inputs.shape[0]);
                calibrate(ctx.engine.as_ref(), module, &inputs, method, &|v| {
                    range_unread(main, v)
                })?
            }
        };
        let float_module = module.clone();
        let index = module
            .functions
            .iter()
            .position(|f| f.name == "main")
            .expect("@main exists");
        let old = std::mem::take(&mut module.functions[index]);
        let mut r = Rewriter {
            old: &old,
            new: Function::new(&old.name),
            module,
            ranges,
            map: Mapping::default(),
            per_channel: self.per_channel,
            weight_mse: self.weight_mse,
            skipped: BTreeMap::new(),
            layers: 0,
            links: Vec::new(),
        };
        let result = r.run();
        let (mut new, layers, skipped, links) = (r.new, r.layers, r.skipped, r.links);
        if let Err(e) = result {
            module.functions[index] = old;
            return Err(e);
        }
        crate::rewrite::remove_dead_ops(&mut new);
        new.span = old.span;
        module.functions[index] = new;
        ctx.float_reference = Some(crate::bias::FloatReference {
            module: float_module,
            layers: links,
        });
        ctx.note(
            INFO.name,
            format!(
                "{layers} ops quantized ({} weights), calibrated on {calibrated_on}",
                if self.per_channel {
                    "per-channel"
                } else {
                    "per-tensor"
                },
            ),
        );
        for (what, count) in skipped {
            ctx.note(INFO.name, format!("kept float: {what} x{count}"));
        }
        Ok(())
    }
}
