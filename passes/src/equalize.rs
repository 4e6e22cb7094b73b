//! `equalize`: cross-layer equalization. For a float convolution A whose output channel c is
//! input channel c of the next convolution B (B dense in its input channels, or depthwise), with
//! a ReLU, a ReLU6 or nothing between them, A's output channel c is divided by a scale `s_c` and
//! B's input channel c multiplied by it. ReLU commutes with a positive scale; a ReLU6's bound is
//! divided by `s_c` per channel (`relu6=scale`, giving `nn.clip` a `channel_max`), so the float
//! function is unchanged (or, with `relu6=relu`, the ReLU6 becomes a ReLU first, as Nagel et al.
//! do, which changes the float function; `relu6=skip` leaves such pairs alone).
//!
//! The scales: `objective=weights` is the plain rule of Nagel et al. 2019 ("Data-Free
//! Quantization Through Weight Equalization and Bias Correction"), `s_c = sqrt(r1_c / r2_c)` with
//! `r1_c` the largest |weight| of A's output channel and `r2_c` that of B's weights reading it,
//! so both become `sqrt(r1_c * r2_c)`. `objective=noise` minimises [`Noise`], a model of the
//! per-tensor quantization noise at B's output that also counts the activations between the
//! layers, measured on calibration data (the plain rule moves the imbalance into them). Sweeps
//! repeat over every pair, since a layer in two pairs is rescaled by both, until no scale moves
//! by more than 1e-3.

use std::collections::HashMap;

use rayon::prelude::*;

use qcc_dialects::{Function, Module, NodeIndex, OpKind, Tensor, TensorData, Value};

use crate::pass::{OptionKind, OptionSpec, Options, Pass, PassContext, PassInfo};
use crate::rewrite::{WeightLayout, add_const, const_name, const_tensor, is_inline_const};

/// Registration of `equalize`.
pub const INFO: PassInfo = PassInfo {
    name: "equalize",
    summary: "cross-layer equalization of float convolution pairs (through ReLU, ReLU6 or nothing; the float function stays), after fold-batchnorm, before quantize",
    options: &[
        OptionSpec {
            name: "relu6",
            kind: OptionKind::Choice(&["scale", "skip", "relu"]),
            default: "scale",
            help: "pairs through ReLU6 (a clip from 0): scale its bound per channel with the layer (the float function stays exact; the integer layer gets per-channel output bounds), leave them alone, or replace the ReLU6 with ReLU and equalize (as Nagel et al.; changes the float function)",
        },
        OptionSpec {
            name: "objective",
            kind: OptionKind::Choice(&["noise", "weights"]),
            default: "noise",
            help: "how scales are chosen: noise (the scales that minimise the modelled per-tensor quantization noise at the second layer's output, counting the activations between the layers; needs --calib) or weights (the plain rule of Nagel et al.: both layers' channel ranges become sqrt(r1 r2); measured worse here, kept for comparison)",
        },
        OptionSpec {
            name: "absorb",
            kind: OptionKind::Bool,
            default: "false",
            help: "after equalizing, move the part of each channel's bias that the ReLU/ReLU6 after it never clips on the calibration data into the next layer's bias (high-bias absorption; needs --calib; only into layers without padding)",
        },
        crate::calibrate::SAMPLES_OPTION,
        OptionSpec {
            name: "sweeps",
            kind: OptionKind::Int { min: 0, max: 100 },
            default: "20",
            help: "rounds over all pairs at most (stops earlier when no scale moves by 1e-3); 0 only replaces the ReLU6 of relu6=relu, to compare with the network it equalizes",
        },
    ],
    requires: &["fold-batchnorm"],
    create: |o: &Options| {
        Box::new(Equalize {
            relu6: match o.choice("relu6") {
                "skip" => Relu6::Skip,
                "relu" => Relu6::Relu,
                _ => Relu6::Scale,
            },
            noise: o.choice("objective") == "noise",
            absorb: o.bool("absorb"),
            samples: o.int("samples") as usize,
            sweeps: o.int("sweeps") as usize,
        })
    },
};

/// What `equalize` does with a pair through a ReLU6 (any clip from 0).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Relu6 {
    /// Divides the clip's upper bound of channel c by the channel's scale.
    Scale,
    /// Leaves the pair alone.
    Skip,
    /// Turns the clip into a ReLU (changes the float function).
    Relu,
}

struct Equalize {
    relu6: Relu6,
    noise: bool,
    absorb: bool,
    samples: usize,
    sweeps: usize,
}

/// One equalizable pair: producer `a`, the activation between (if any), consumer `b`.
#[derive(Clone, Copy, Debug)]
struct Pair {
    a: NodeIndex,
    act: Option<NodeIndex>,
    b: NodeIndex,
}

/// Weights and bias of a float convolution, as f64, with its group count.
struct Layer {
    w: Vec<f64>,
    shape: Vec<usize>,
    bias: Option<Vec<f64>>,
    depthwise: bool,
    layout: WeightLayout,
}

impl Layer {
    fn read(module: &Module, func: &Function, n: NodeIndex) -> Option<Layer> {
        let ops = func.operands(n);
        let w = const_tensor(module, func, *ops.get(1)?)?;
        let bias = match ops.get(2) {
            Some(b) => Some(
                const_tensor(module, func, *b)?
                    .as_f32()?
                    .iter()
                    .map(|v| *v as f64)
                    .collect(),
            ),
            None => None,
        };
        let groups = qcc_dialects::ops::attrs::Conv2dAttrs::of(func.op(n))
            .ok()?
            .groups;
        let shape = w.shape.clone();
        let depthwise = groups > 1 && groups == shape[0] && shape[1] == 1;
        if groups != 1 && !depthwise {
            return None;
        }
        Some(Layer {
            w: w.as_f32()?.iter().map(|v| *v as f64).collect(),
            layout: WeightLayout::new(&shape, groups),
            shape,
            bias,
            depthwise,
        })
    }

    /// Weights per output channel.
    fn per_out(&self) -> usize {
        self.w.len() / self.shape[0].max(1)
    }

    /// Input channels (of the whole layer).
    fn inputs(&self) -> usize {
        self.layout.inputs()
    }

    /// The input channel weight element `i` reads.
    fn input_of(&self, i: usize) -> usize {
        self.layout.channels(i).1
    }

    /// The largest |weight| of each output channel.
    fn out_ranges(&self) -> Vec<f64> {
        self.w
            .chunks(self.per_out().max(1))
            .map(|c| c.iter().fold(0.0f64, |m, v| m.max(v.abs())))
            .collect()
    }

    /// The largest |weight| reading each input channel.
    fn in_ranges(&self) -> Vec<f64> {
        let mut r = vec![0.0f64; self.inputs()];
        for (i, v) in self.w.iter().enumerate() {
            let c = self.input_of(i);
            r[c] = r[c].max(v.abs());
        }
        r
    }

    fn scale_out(&mut self, s: &[f64]) {
        let per = self.per_out().max(1);
        for (i, v) in self.w.iter_mut().enumerate() {
            *v /= s[i / per];
        }
        if let Some(b) = &mut self.bias {
            for (v, s) in b.iter_mut().zip(s) {
                *v /= s;
            }
        }
    }

    fn scale_in(&mut self, s: &[f64]) {
        let layout = self.layout;
        for (i, v) in self.w.iter_mut().enumerate() {
            *v *= s[layout.channels(i).1];
        }
    }
}

/// The activation between two layers, if it is one equalization can pass: ReLU, or (with
/// `relu6`) a clip from 0.
fn passable(func: &Function, n: NodeIndex, relu6: bool) -> bool {
    if func.is_op(n, OpKind::Relu) {
        return true;
    }
    relu6
        && func.is_op(n, OpKind::Clip)
        && qcc_dialects::ops::attrs::clip_bounds(func.op(n)).is_ok_and(|b| b.lo == 0.0)
}

/// The only reader of `v`, when it has one and `v` is not returned.
fn only_reader(func: &Function, v: Value) -> Option<NodeIndex> {
    match func.users(v).as_slice() {
        [(user, 0)] if !func.is_returned(v) => Some(*user),
        _ => None,
    }
}

fn pairs(module: &Module, func: &Function, relu6: bool) -> Vec<Pair> {
    let mut out = Vec::new();
    for a in func.schedule() {
        if !func.is_op(a, OpKind::Conv2d) {
            continue;
        }
        let Some(next) = only_reader(func, Value::of(a)) else {
            continue;
        };
        let (act, b) = if func.is_op(next, OpKind::Conv2d) {
            (None, next)
        } else if passable(func, next, relu6) {
            match only_reader(func, Value::of(next)) {
                Some(b) if func.is_op(b, OpKind::Conv2d) => (Some(next), b),
                _ => continue,
            }
        } else {
            continue;
        };
        let (Some(la), Some(lb)) = (Layer::read(module, func, a), Layer::read(module, func, b))
        else {
            continue;
        };
        if la.shape[0] == lb.inputs() {
            out.push(Pair { a, act, b });
        }
    }
    out
}

/// A layer's printed name, for notes.
fn name_of(func: &Function, n: NodeIndex) -> String {
    match func.op(n).result_names[0].as_deref() {
        Some(h) => format!("%{h}"),
        None => func.op(n).name.clone(),
    }
}

/// The largest channel range over the smallest nonzero one.
fn spread(r: &[f64]) -> f64 {
    let live: Vec<f64> = r.iter().copied().filter(|v| *v > 0.0).collect();
    let (lo, hi) = live
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(*v), b.max(*v)));
    if live.is_empty() { 1.0 } else { hi / lo }
}

impl Pass for Equalize {
    fn name(&self) -> &'static str {
        INFO.name
    }

    fn run(&self, module: &mut Module, ctx: &mut PassContext) -> Result<(), String> {
        let Some(index) = module.functions.iter().position(|f| f.name == "main") else {
            return Ok(());
        };
        let found = pairs(module, &module.functions[index], self.relu6 != Relu6::Skip);
        if found.is_empty() {
            ctx.note(INFO.name, "no convolution pairs to equalize");
            return Ok(());
        }
        // ReLU6 first: the noise objective measures the network it equalizes.
        let relus = if self.relu6 == Relu6::Relu {
            relu6_to_relu(&mut module.functions[index], &found)
        } else {
            0
        };
        let stats = if self.noise && self.sweeps > 0 || self.absorb {
            Some(observe(module, &found, ctx, self.samples)?)
        } else {
            None
        };
        let mut func = std::mem::replace(&mut module.functions[index], Function::new("main"));
        let result = self.equalize(module, &mut func, ctx, &found, stats);
        module.functions[index] = func;
        let sweeps = result?;
        ctx.note(
            INFO.name,
            format!(
                "{} pairs equalized in {sweeps} sweeps{}",
                found.len(),
                if relus > 0 {
                    format!(", {relus} ReLU6 replaced by ReLU")
                } else {
                    String::new()
                }
            ),
        );
        Ok(())
    }
}

/// Turns the ReLU6 between the pairs' layers into ReLU; returns how many.
fn relu6_to_relu(func: &mut Function, found: &[Pair]) -> usize {
    let mut relus = 0;
    for p in found {
        if let Some(act) = p.act
            && func.is_op(act, OpKind::Clip)
        {
            func.op_mut(act).name = OpKind::Relu.name().to_string();
            func.op_mut(act).attrs = qcc_dialects::Attrs::new();
            relus += 1;
        }
    }
    relus
}

/// The value between a pair's layers (the second layer's input).
fn between(p: &Pair) -> Value {
    Value::of(p.act.unwrap_or(p.a))
}

impl Equalize {
    /// Equalizes the pairs in sweeps; returns how many sweeps ran.
    fn equalize(
        &self,
        module: &mut Module,
        func: &mut Function,
        ctx: &mut PassContext,
        found: &[Pair],
        mut stats: Option<HashMap<Value, ChannelStats>>,
    ) -> Result<usize, String> {
        let mut layers: HashMap<NodeIndex, Layer> = found
            .iter()
            .flat_map(|p| [p.a, p.b])
            .filter_map(|n| Some((n, Layer::read(module, func, n)?)))
            .collect();
        let spreads = |layers: &HashMap<NodeIndex, Layer>,
                       stats: &Option<HashMap<Value, ChannelStats>>,
                       p: &Pair| {
            (
                spread(&layers[&p.a].out_ranges()),
                spread(&layers[&p.b].in_ranges()),
                stats
                    .as_ref()
                    .filter(|_| self.noise)
                    .map(|s| spread(&s[&between(p)].ranges())),
            )
        };
        let before: Vec<_> = found.iter().map(|p| spreads(&layers, &stats, p)).collect();
        let inputs: Vec<Value> = found.iter().map(|p| func.operands(p.a)[0]).collect();
        let mut total: Vec<Vec<f64>> = found
            .iter()
            .map(|p| vec![1.0; layers[&p.a].shape[0]])
            .collect();
        let mut sweeps = 0;
        for _ in 0..self.sweeps {
            sweeps += 1;
            let mut moved = 0.0f64;
            for (k, p) in found.iter().enumerate() {
                let (a, b) = (&layers[&p.a], &layers[&p.b]);
                let s: Vec<f64> = match &stats {
                    Some(stats) if self.noise => {
                        Noise::of(a, b, &stats[&between(p)], &stats[&inputs[k]]).solve()
                    }
                    _ => plain_scales(&a.out_ranges(), &b.in_ranges()),
                };
                moved = s.iter().fold(moved, |m, v| m.max(v.ln().abs()));
                total[k].iter_mut().zip(&s).for_each(|(t, s)| *t *= s);
                layers.get_mut(&p.a).expect("read").scale_out(&s);
                layers.get_mut(&p.b).expect("read").scale_in(&s);
                if let Some(stats) = &mut stats {
                    stats.get_mut(&between(p)).expect("observed").divide(&s);
                    if p.act.is_some() {
                        stats.get_mut(&Value::of(p.a)).expect("observed").divide(&s);
                    }
                }
            }
            if moved < 1e-3 {
                break;
            }
        }
        for (k, p) in found.iter().enumerate() {
            let now = spreads(&layers, &stats, p);
            let activations = match (before[k].2, now.2) {
                (Some(b), Some(a)) => format!(", {b:.1} -> {a:.1} (activations between)"),
                _ => String::new(),
            };
            ctx.note(
                INFO.name,
                format!(
                    "{} -> {}: channel range spread {:.1} -> {:.1} (outputs of the first), {:.1} -> {:.1} (inputs of the second){activations}",
                    name_of(func, p.a),
                    name_of(func, p.b),
                    before[k].0,
                    now.0,
                    before[k].1,
                    now.1,
                ),
            );
        }
        let mut absorbed = vec![None; found.len()];
        if let (true, Some(stats)) = (self.absorb, &stats) {
            for (k, p) in found.iter().enumerate() {
                absorbed[k] = absorb(func, p, &total[k], &mut layers, stats, ctx)?;
            }
        }
        let mut nodes: Vec<NodeIndex> = layers.keys().copied().collect();
        nodes.sort();
        for n in nodes {
            write(module, func, n, &layers[&n])?;
        }
        for ((p, s), h) in found.iter().zip(&total).zip(&absorbed) {
            scale_channel_stats(func, p.a, s, h.as_deref());
            if let Some(act) = p.act
                && func.is_op(act, OpKind::Clip)
            {
                set_clip_bounds(func, act, s, h.as_deref())?;
            }
        }
        Ok(sweeps)
    }
}

/// Divides channel c's upper bound of clip `act` by `s[c]` (its input channel was divided by it)
/// and lowers it by `h[c]` (the part of the channel high-bias absorption moved on).
fn set_clip_bounds(
    func: &mut Function,
    act: NodeIndex,
    s: &[f64],
    h: Option<&[f64]>,
) -> Result<(), String> {
    let bounds = qcc_dialects::ops::attrs::clip_bounds(func.op(act))?;
    let unchanged = s.iter().all(|v| *v == 1.0) && h.is_none_or(|h| h.iter().all(|v| *v == 0.0));
    if unchanged || bounds.max_hi() == f64::INFINITY && bounds.channel_hi.is_none() {
        return Ok(());
    }
    let hi: Vec<f64> = s
        .iter()
        .enumerate()
        .map(|(c, s)| bounds.hi_of(c) / s - h.map_or(0.0, |h| h[c]))
        .collect();
    let attrs = &mut func.op_mut(act).attrs;
    attrs.remove("max");
    attrs.set("channel_max", qcc_dialects::Attr::floats(&hi));
    Ok(())
}

/// Keeps a layer's recorded output statistics (`channel_mean`, `channel_std`, from a folded batch
/// norm) true after its output channel c was divided by `s[c]` and lowered by `h[c]`.
fn scale_channel_stats(func: &mut Function, a: NodeIndex, s: &[f64], h: Option<&[f64]>) {
    let attrs = &mut func.op_mut(a).attrs;
    for name in ["channel_mean", "channel_std"] {
        let Some(v) = attrs.get(name).and_then(qcc_dialects::Attr::as_floats) else {
            continue;
        };
        let scaled: Vec<f64> = v
            .iter()
            .enumerate()
            .map(|(c, v)| {
                let shift = if name == "channel_mean" {
                    h.map_or(0.0, |h| h[c])
                } else {
                    0.0
                };
                v / s.get(c).copied().unwrap_or(1.0) - shift
            })
            .collect();
        attrs.set(name, qcc_dialects::Attr::floats(&scaled));
    }
}

/// High-bias absorption for pair `p` (after its scaling by `s`): `h_c`, the smallest value
/// channel c of the first layer's output took on the calibration data when positive (capped at
/// the channel's clip bound), is taken out of that layer's bias, and the second layer's bias
/// gains what `h` contributes to it, `sum_k w[o, c, k] * h_c`. Through a ReLU or ReLU6 (whose
/// bound drops by `h_c`, see [`set_clip_bounds`]) that keeps the function wherever the channel
/// stays above `h_c`, which it does on the calibration data. The second layer must not pad (padding would
/// read 0 where the function had `h_c`). Returns `h`, or `None` when the pair is left as it is.
fn absorb(
    func: &Function,
    p: &Pair,
    s: &[f64],
    layers: &mut HashMap<NodeIndex, Layer>,
    stats: &HashMap<Value, ChannelStats>,
    ctx: &mut PassContext,
) -> Result<Option<Vec<f64>>, String> {
    let Some(act) = p.act else {
        return Ok(None); // nothing clips: absorption is for ReLU and ReLU6
    };
    let padded = qcc_dialects::ops::attrs::Conv2dAttrs::of(func.op(p.b))?
        .window
        .pads
        .iter()
        .any(|v| *v != 0);
    if padded || layers[&p.a].bias.is_none() || layers[&p.b].bias.is_none() {
        return Ok(None);
    }
    let bounds = if func.is_op(act, OpKind::Clip) {
        Some(qcc_dialects::ops::attrs::clip_bounds(func.op(act))?)
    } else {
        None
    };
    // The statistics and the bound, like the layers, in the scaled units (divided by `s`).
    let pre = &stats[&Value::of(p.a)];
    let h: Vec<f64> = pre
        .lo
        .iter()
        .enumerate()
        .map(|(c, lo)| {
            let bound = bounds.as_ref().map_or(f64::INFINITY, |b| b.hi_of(c) / s[c]);
            lo.max(0.0).min(bound)
        })
        .collect();
    if h.iter().all(|v| *v == 0.0) {
        return Ok(None);
    }
    let a = layers.get_mut(&p.a).expect("read");
    if let Some(bias) = &mut a.bias {
        bias.iter_mut().zip(&h).for_each(|(b, h)| *b -= h);
    }
    let b = layers.get_mut(&p.b).expect("read");
    let mut gain = vec![0.0f64; b.shape[0]];
    for (i, w) in b.w.iter().enumerate() {
        let (o, c) = b.layout.channels(i);
        gain[o] += w * h[c];
    }
    if let Some(bias) = &mut b.bias {
        bias.iter_mut().zip(&gain).for_each(|(v, g)| *v += g);
    }
    let moved = h.iter().filter(|v| **v > 0.0).count();
    ctx.note(
        INFO.name,
        format!(
            "{} -> {}: absorbed {moved} of {} channels' biases (largest {:.3})",
            name_of(func, p.a),
            name_of(func, p.b),
            h.len(),
            h.iter().fold(0.0f64, |m, v| m.max(*v))
        ),
    );
    Ok(Some(h))
}

/// The plain rule: `sqrt(r1_c / r2_c)` (1 for a channel where either range is 0).
fn plain_scales(r1: &[f64], r2: &[f64]) -> Vec<f64> {
    r1.iter()
        .zip(r2)
        .map(|(a, b)| {
            if *a > 0.0 && *b > 0.0 {
                (a / b).sqrt()
            } else {
                1.0
            }
        })
        .collect()
}

/// Per-channel statistics of a value (channels on axis 1) over the calibration data.
#[derive(Clone, Debug)]
struct ChannelStats {
    lo: Vec<f64>,
    hi: Vec<f64>,
    mean_square: Vec<f64>,
}

impl ChannelStats {
    fn new(channels: usize) -> ChannelStats {
        ChannelStats {
            lo: vec![0.0; channels],
            hi: vec![0.0; channels],
            mean_square: vec![0.0; channels],
        }
    }

    /// Adds `items` images of the value's data (`[N, C, plane]`); `seen` images came before.
    fn add(&mut self, data: &[f32], items: usize, seen: usize) {
        let c = self.lo.len();
        let plane = (data.len() / (items * c).max(1)).max(1);
        // Each plane's smallest, largest and mean square, planes in parallel.
        let planes: Vec<(f64, f64, f64)> = data
            .par_chunks(plane)
            .map(|xs| {
                let (lo, hi, sq) = xs.iter().fold(
                    (f32::INFINITY, f32::NEG_INFINITY, 0.0f64),
                    |(lo, hi, sq), &x| (lo.min(x), hi.max(x), sq + f64::from(x) * f64::from(x)),
                );
                (f64::from(lo), f64::from(hi), sq / xs.len() as f64)
            })
            .collect();
        for (j, (lo, hi, ms)) in planes.into_iter().enumerate() {
            let (image, ch) = (seen + j / c, j % c);
            if image == 0 {
                (self.lo[ch], self.hi[ch]) = (lo, hi);
            } else {
                self.lo[ch] = self.lo[ch].min(lo);
                self.hi[ch] = self.hi[ch].max(hi);
            }
            self.mean_square[ch] += (ms - self.mean_square[ch]) / (image + 1) as f64;
        }
    }

    /// Each channel's largest magnitude.
    fn ranges(&self) -> Vec<f64> {
        self.lo
            .iter()
            .zip(&self.hi)
            .map(|(l, h)| l.abs().max(h.abs()))
            .collect()
    }

    /// The statistics after channel c is divided by `s[c]`.
    fn divide(&mut self, s: &[f64]) {
        for (c, s) in s.iter().enumerate() {
            self.lo[c] /= s;
            self.hi[c] /= s;
            self.mean_square[c] /= s * s;
        }
    }
}

/// Statistics of every pair's input and in-between value on the calibration data.
fn observe(
    module: &Module,
    found: &[Pair],
    ctx: &PassContext,
    samples: usize,
) -> Result<HashMap<Value, ChannelStats>, String> {
    let calib = ctx.calib.as_ref().ok_or(
        "equalize{objective=noise} and equalize{absorb=true} need calibration inputs (--calib): they measure the activations between the layers",
    )?;
    let func = module
        .function("main")
        .ok_or("the module has no function @main")?;
    crate::calibrate::check_inputs(func, calib)?;
    let inputs = crate::calibrate::take(calib, samples);
    let mut stats: HashMap<Value, ChannelStats> = HashMap::new();
    for p in found {
        for v in [between(p), Value::of(p.a), func.operands(p.a)[0]] {
            let ty = func.value_type(v);
            if ty.rank() < 2 {
                return Err(format!("equalize: value {v:?} has no channel axis"));
            }
            stats.insert(v, ChannelStats::new(ty.shape[1]));
        }
    }
    let mut seen: HashMap<Value, usize> = HashMap::new();
    crate::calibrate::observe(ctx.engine.as_ref(), module, &inputs, |v, data, items| {
        if let Some(s) = stats.get_mut(&v) {
            let n = seen.entry(v).or_insert(0);
            s.add(data, items, *n);
            *n += items;
        }
    })?;
    Ok(stats)
}

/// The noise a pair's per-tensor quantization adds at the second layer's output, as a function
/// of the scales `t` (first layer's output channel c divided by `t_c`, second layer's input
/// channel c multiplied by it): with `w_c` the sum of squares of the second layer's weights
/// reading channel c, `e_c` the energy of the inputs of the first layer's channel c, `n_c` the
/// second layer's products per input channel value and `m_c` the mean square of the value
/// between (all before scaling),
///
/// `J(t) = (dx^2 + da^2 e_c) sum_c w_c t_c^2 + db^2 sum_c n_c m_c / t_c^2`
///
/// where `dx` is the in-between value's u8 step (its per-tensor range over 255), `da` and `db`
/// the weights' i8 steps (largest |weight| over 127), all depending on `t` through the ranges.
struct Noise {
    r1: Vec<f64>,
    r2: Vec<f64>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    w: Vec<f64>,
    e: Vec<f64>,
    nm: Vec<f64>,
}

impl Noise {
    fn of(a: &Layer, b: &Layer, x: &ChannelStats, input: &ChannelStats) -> Noise {
        let taps_a = a.layout.taps();
        let e: Vec<f64> = if a.depthwise {
            input
                .mean_square
                .iter()
                .map(|m| m * taps_a as f64)
                .collect()
        } else {
            let all: f64 = input.mean_square.iter().sum();
            vec![all * taps_a as f64; a.shape[0]]
        };
        let mut w = vec![0.0f64; b.inputs()];
        for (i, v) in b.w.iter().enumerate() {
            w[b.input_of(i)] += v * v;
        }
        let readers = if b.depthwise { 1 } else { b.shape[0] } * b.layout.taps();
        Noise {
            r1: a.out_ranges(),
            r2: b.in_ranges(),
            lo: x.lo.iter().map(|v| v.min(0.0)).collect(),
            hi: x.hi.iter().map(|v| v.max(0.0)).collect(),
            w,
            e,
            nm: x.mean_square.iter().map(|m| m * readers as f64).collect(),
        }
    }

    /// Coordinate descent on `log t` over a grid of steps of 2^(1/4), at most 2^10 either way.
    fn solve(&self) -> Vec<f64> {
        let mut t = vec![1.0f64; self.r1.len()];
        let mut hi = Top2::new(self.hi.clone());
        let mut lo = Top2::new(self.lo.iter().map(|v| -v).collect());
        let mut r1 = Top2::new(self.r1.clone());
        let mut r2 = Top2::new(self.r2.clone());
        let mut sum_w: f64 = self.w.iter().sum();
        let mut sum_we: f64 = self.w.iter().zip(&self.e).map(|(w, e)| w * e).sum();
        let mut sum_nm: f64 = self.nm.iter().sum();
        let cost = |dx: f64, da: f64, db: f64, sw: f64, swe: f64, snm: f64| {
            let (dx, da, db) = (dx / 255.0, da / 127.0, db / 127.0);
            dx * dx * sw + da * da * swe + db * db * snm
        };
        for _ in 0..30 {
            let mut changed = false;
            for (i, ti) in t.iter_mut().enumerate() {
                let (ohi, olo, or1, or2) =
                    (hi.without(i), lo.without(i), r1.without(i), r2.without(i));
                let (t2, w, we, nm) = (*ti * *ti, self.w[i], self.w[i] * self.e[i], self.nm[i]);
                let rest = (sum_w - w * t2, sum_we - we * t2, sum_nm - nm / t2);
                let at = |u: f64| {
                    let dx = ohi.max(self.hi[i] / u) + olo.max(-self.lo[i] / u);
                    let da = or1.max(self.r1[i] / u);
                    let db = or2.max(self.r2[i] * u);
                    let u2 = u * u;
                    cost(
                        dx,
                        da,
                        db,
                        rest.0 + w * u2,
                        rest.1 + we * u2,
                        rest.2 + nm / u2,
                    )
                };
                let now = at(*ti);
                let mut best = (now, *ti);
                for k in (-8..=8).filter(|k| *k != 0) {
                    let u = *ti * 2f64.powf(k as f64 / 4.0);
                    if !(2f64.powi(-10)..=2f64.powi(10)).contains(&u) {
                        continue;
                    }
                    let j = at(u);
                    if j < best.0 * (1.0 - 1e-9) {
                        best = (j, u);
                    }
                }
                if best.1 != *ti {
                    changed = true;
                    let u = best.1;
                    *ti = u;
                    (sum_w, sum_we, sum_nm) = (
                        rest.0 + w * u * u,
                        rest.1 + we * u * u,
                        rest.2 + nm / (u * u),
                    );
                    hi.set(i, self.hi[i] / u);
                    lo.set(i, -self.lo[i] / u);
                    r1.set(i, self.r1[i] / u);
                    r2.set(i, self.r2[i] * u);
                }
            }
            if !changed {
                break;
            }
        }
        t
    }
}

/// Values with their largest and second largest, for "the largest of the others".
struct Top2 {
    values: Vec<f64>,
    first: (f64, usize),
    second: (f64, usize),
}

impl Top2 {
    fn new(values: Vec<f64>) -> Top2 {
        let mut t = Top2 {
            values,
            first: (f64::NEG_INFINITY, usize::MAX),
            second: (f64::NEG_INFINITY, usize::MAX),
        };
        t.recompute();
        t
    }

    fn recompute(&mut self) {
        self.first = (f64::NEG_INFINITY, usize::MAX);
        self.second = (f64::NEG_INFINITY, usize::MAX);
        for (i, &v) in self.values.iter().enumerate() {
            if v > self.first.0 {
                self.second = self.first;
                self.first = (v, i);
            } else if v > self.second.0 {
                self.second = (v, i);
            }
        }
    }

    /// The largest value other than entry `i` (0 when there is none).
    fn without(&self, i: usize) -> f64 {
        let v = if self.first.1 == i {
            self.second.0
        } else {
            self.first.0
        };
        v.max(0.0)
    }

    fn set(&mut self, i: usize, v: f64) {
        self.values[i] = v;
        if self.first.1 == i || self.second.1 == i {
            self.recompute();
        } else if v > self.first.0 {
            self.second = self.first;
            self.first = (v, i);
        } else if v > self.second.0 {
            self.second = (v, i);
        }
    }
}

/// Replaces layer `n`'s weights and bias with `layer`'s.
fn write(
    module: &mut Module,
    func: &mut Function,
    n: NodeIndex,
    layer: &Layer,
) -> Result<(), String> {
    let ops = func.operands(n);
    let mut replace = |func: &mut Function, i: usize, shape: Vec<usize>, data: &[f64]| {
        let old = ops[i];
        let name = const_name(func, old).unwrap_or_else(|| "weight".into());
        let ty = func.value_type(old).clone();
        let inline = is_inline_const(func, old);
        let t = Tensor::new(
            shape,
            TensorData::F32(data.iter().map(|v| *v as f32).collect()),
        )
        .map_err(|e| e.to_string())?;
        let v = add_const(module, func, &format!("{name}.equalized"), t, ty, inline);
        let hint = func.op(old.node).result_names[0].clone();
        func.op_mut(v.node).result_names[0] = hint.map(|h| format!("{h}_eq"));
        func.set_operand(n, i, v);
        Ok::<(), String>(())
    };
    replace(func, 1, layer.shape.clone(), &layer.w)?;
    if let Some(b) = &layer.bias {
        replace(func, 2, vec![b.len()], b)?;
    }
    crate::rewrite::remove_dead_ops(func);
    Ok(())
}
