//! `equalize`: cross-layer equalization with the plain weight-range rule of Nagel et al. 2019
//! ("Data-Free Quantization Through Weight Equalization and Bias Correction"). For a float
//! convolution A whose output channel c is input channel c of the next convolution B (B dense in
//! its input channels, or depthwise), with a ReLU or nothing between them, A's output channel c is
//! divided by `s_c = sqrt(r1_c / r2_c)` and B's input channel c multiplied by it, where `r1_c` is
//! the largest |weight| of A's output channel and `r2_c` that of the weights of B reading channel
//! c: both become `sqrt(r1_c * r2_c)`, so per-tensor weight quantization loses less on the
//! channels with small ranges. ReLU commutes with a positive scale, so the float function is
//! unchanged. ReLU6 does not (its bound would have to move per channel): such pairs are left
//! alone, or with `relu6=relu` the ReLU6 becomes a ReLU first, as the paper does, which changes
//! the float function (score against the original model). Sweeps repeat over every pair, since a
//! layer in two pairs is rescaled by both, until no scale moves by more than 1e-3.

use qcc_dialects::{Function, Module, NodeIndex, OpKind, Tensor, TensorData, Value};

use crate::pass::{OptionKind, OptionSpec, Options, Pass, PassContext, PassInfo};
use crate::rewrite::{add_const, const_name, const_tensor, is_inline_const};

/// Registration of `equalize`.
pub const INFO: PassInfo = PassInfo {
    name: "equalize",
    summary: "cross-layer equalization of float convolution pairs (the plain weight-range rule), after fold-batchnorm, before quantize",
    options: &[
        OptionSpec {
            name: "relu6",
            kind: OptionKind::Choice(&["skip", "relu"]),
            default: "skip",
            help: "pairs through ReLU6: leave them (the float function stays exact), or replace the ReLU6 with ReLU and equalize (as Nagel et al.; changes the float function)",
        },
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
            relu6_to_relu: o.choice("relu6") == "relu",
            sweeps: o.int("sweeps") as usize,
        })
    },
};

struct Equalize {
    relu6_to_relu: bool,
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
        if self.depthwise {
            self.shape[0]
        } else {
            self.shape[1]
        }
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
        let taps: usize = self.shape[2..].iter().product();
        for (i, v) in self.w.iter().enumerate() {
            let c = if self.depthwise {
                i / taps.max(1)
            } else {
                (i / taps.max(1)) % self.shape[1]
            };
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
        let taps: usize = self.shape[2..].iter().product::<usize>().max(1);
        for (i, v) in self.w.iter_mut().enumerate() {
            let c = if self.depthwise {
                i / taps
            } else {
                (i / taps) % self.shape[1]
            };
            *v *= s[c];
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
        && qcc_dialects::ops::attrs::clip_bounds(func.op(n)).is_ok_and(|(lo, _)| lo == 0.0)
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
        let mut func = std::mem::replace(&mut module.functions[index], Function::new("main"));
        let result = self.equalize(module, &mut func, ctx);
        module.functions[index] = func;
        result
    }
}

impl Equalize {
    fn equalize(
        &self,
        module: &mut Module,
        func: &mut Function,
        ctx: &mut PassContext,
    ) -> Result<(), String> {
        let found = pairs(module, func, self.relu6_to_relu);
        if found.is_empty() {
            ctx.note(INFO.name, "no convolution pairs to equalize");
            return Ok(());
        }
        let mut layers: std::collections::HashMap<NodeIndex, Layer> = found
            .iter()
            .flat_map(|p| [p.a, p.b])
            .filter_map(|n| Some((n, Layer::read(module, func, n)?)))
            .collect();
        let before: Vec<(f64, f64)> = found
            .iter()
            .map(|p| {
                (
                    spread(&layers[&p.a].out_ranges()),
                    spread(&layers[&p.b].in_ranges()),
                )
            })
            .collect();
        let mut sweeps = 0;
        for _ in 0..self.sweeps {
            sweeps += 1;
            let mut moved = 0.0f64;
            for p in &found {
                let r1 = layers[&p.a].out_ranges();
                let r2 = layers[&p.b].in_ranges();
                let s: Vec<f64> = r1
                    .iter()
                    .zip(&r2)
                    .map(|(a, b)| {
                        if *a > 0.0 && *b > 0.0 {
                            (a / b).sqrt()
                        } else {
                            1.0
                        }
                    })
                    .collect();
                moved = s.iter().fold(moved, |m, v| m.max(v.ln().abs()));
                layers.get_mut(&p.a).expect("read").scale_out(&s);
                layers.get_mut(&p.b).expect("read").scale_in(&s);
            }
            if moved < 1e-3 {
                break;
            }
        }
        for (k, p) in found.iter().enumerate() {
            let (a, b) = (&layers[&p.a], &layers[&p.b]);
            ctx.note(
                INFO.name,
                format!(
                    "{} -> {}: channel range spread {:.1} -> {:.1} (outputs of the first), {:.1} -> {:.1} (inputs of the second)",
                    name_of(func, p.a),
                    name_of(func, p.b),
                    before[k].0,
                    spread(&a.out_ranges()),
                    before[k].1,
                    spread(&b.in_ranges()),
                ),
            );
        }
        let mut relus = 0;
        for p in &found {
            if let Some(act) = p.act
                && func.is_op(act, OpKind::Clip)
            {
                func.op_mut(act).name = OpKind::Relu.name().to_string();
                func.op_mut(act).attrs = qcc_dialects::Attrs::new();
                relus += 1;
            }
        }
        let mut nodes: Vec<NodeIndex> = layers.keys().copied().collect();
        nodes.sort();
        for n in nodes {
            write(module, func, n, &layers[&n])?;
        }
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
