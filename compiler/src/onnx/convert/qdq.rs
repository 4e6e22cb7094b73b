//! QDQ ONNX to `quant` ops. A float op whose activations come from DequantizeLinear nodes and
//! whose result (after an optional Relu or Clip) goes only to a QuantizeLinear becomes one
//! integer op with the model's own scales, zero points, int8 weights and int32 biases: the form
//! ONNX Runtime's `quantize_static`, NNCF and `qcc export` write. QuantizeLinear and
//! DequantizeLinear elsewhere become `quant.quantize` and `quant.dequantize` (or fold, on
//! constants), so an op qcc cannot map runs in float between them.

use std::collections::{HashMap, HashSet};

use qcc_dialects::{
    Attr, Attrs, ElemType, OpKind, QuantParams, QuantType, Storage, Tensor, TensorData, TensorType,
    Value, f32_scale,
};
use qcc_runtime::quant::{quantize_value, to_bias};

use super::super::proto::{GraphProto, NodeProto};
use super::super::tensor::{ints, scalar};
use super::{Converter, Source, attr_float, attr_int, sanitize};

/// The parameters of a QuantizeLinear or DequantizeLinear node.
#[derive(Clone, Debug, PartialEq)]
struct Params {
    scales: Vec<f64>,
    zero_points: Vec<i64>,
    storage: Storage,
    /// The axis of per-axis parameters (`None`: one scale for the tensor).
    axis: Option<usize>,
}

impl Params {
    fn quant_type(&self) -> QuantType {
        QuantType {
            storage: self.storage,
            params: match self.axis {
                None => QuantParams::PerTensor {
                    scale: self.scales[0],
                    zero_point: self.zero_points[0],
                },
                Some(axis) => QuantParams::PerAxis {
                    axis,
                    scales: self.scales.clone(),
                    zero_points: self.zero_points.clone(),
                },
            },
        }
    }

    /// The scale and zero point of element `i` of a tensor of `shape`.
    fn at(&self, shape: &[usize], i: usize) -> (f64, i64) {
        match self.axis {
            None => (self.scales[0], self.zero_points[0]),
            Some(axis) => {
                let inner: usize = shape[axis + 1..].iter().product();
                let c = (i / inner.max(1)) % shape[axis].max(1);
                (self.scales[c], self.zero_points[c])
            }
        }
    }
}

/// Who produces and who reads each tensor of a graph.
struct Index<'g> {
    nodes: &'g [NodeProto],
    producer: HashMap<&'g str, usize>,
    readers: HashMap<&'g str, Vec<usize>>,
    outputs: HashSet<&'g str>,
}

impl<'g> Index<'g> {
    fn new(graph: &'g GraphProto) -> Index<'g> {
        let mut producer = HashMap::new();
        let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, n) in graph.node.iter().enumerate() {
            for o in &n.output {
                producer.insert(o.as_str(), i);
            }
            for input in n.input.iter().filter(|s| !s.is_empty()) {
                readers.entry(input.as_str()).or_default().push(i);
            }
        }
        Index {
            nodes: &graph.node,
            producer,
            readers,
            outputs: graph.output.iter().map(|o| o.name.as_str()).collect(),
        }
    }

    /// The node that produces `name`, if it is a `op_type` node.
    fn produced_by(&self, name: &str, op_type: &str) -> Option<&'g NodeProto> {
        let n = &self.nodes[*self.producer.get(name)?];
        (n.op_type == op_type).then_some(n)
    }

    /// The one node that reads `name`, when exactly one does and it is not a graph output.
    fn only_reader(&self, name: &str) -> Option<usize> {
        match self.readers.get(name).map(Vec::as_slice) {
            Some(&[r]) if !self.outputs.contains(name) => Some(r),
            _ => None,
        }
    }
}

/// A float op and its QDQ wrapping, to become one integer op.
pub(super) struct Unit {
    kind: OpKind,
    /// The quantized tensors it reads (the inputs of its DequantizeLinear nodes) and their
    /// parameters.
    inputs: Vec<(String, Params)>,
    /// i8 weights as `[outputs, ...]` with their type, and the name they are stored under.
    weight: Option<(String, Tensor, QuantType)>,
    /// i32 biases at scale input x weight, and their name.
    bias: Option<(String, Vec<i32>)>,
    clamp: Option<[i64; 2]>,
    /// Per-channel upper bounds in stored values (a `Min` after the activation).
    channel_max: Option<Vec<i64>>,
    result: QuantType,
    /// The QuantizeLinear's output, which the integer op computes.
    output: String,
    /// The float tensor the integer op stands for (after the batch norm and the activation):
    /// its value's name in the module, as the float model names the same value.
    float_name: String,
    /// The Relu or Clip (and Min) and the QuantizeLinear the integer op takes in.
    pub(super) absorbed: Vec<usize>,
}

/// A layer's bias: i32 levels already at scale `S_x * S_w[c]` (with the scales they were stored
/// at), or real values to round to it; with the name it is stored under.
enum Bias {
    Levels(String, Vec<i32>, Vec<f64>),
    Real(String, Vec<f64>),
}

/// i8 weights `w` (`[outputs, ...]`, channel scales `scales`) with every output channel `c`
/// multiplied by `gain[c]`, exactly: the integers keep their magnitude (negated for a negative
/// gain) and the scale becomes `scales[c] * |gain[c]|`, rounded to f32 as every scale is. A
/// channel whose gain is zero becomes zeros.
fn fold_gain(w: &Tensor, scales: &[f64], gain: &[f64]) -> Result<(Tensor, QuantType), String> {
    let TensorData::I8(data) = &w.data else {
        return Err("its weights are not int8".into());
    };
    let per = data.len() / gain.len().max(1);
    let mut out = data.clone();
    let mut folded = Vec::with_capacity(gain.len());
    for (c, k) in gain.iter().enumerate() {
        let s = f32_scale(scales[c] * k.abs());
        let row = &mut out[c * per..(c + 1) * per];
        if !(s > 0.0 && s.is_finite()) {
            row.fill(0);
            folded.push(scales[c]);
            continue;
        }
        if *k < 0.0 {
            for v in row.iter_mut() {
                *v = v
                    .checked_neg()
                    .ok_or("its weights hold -128 in a channel its batch norm negates")?;
            }
        }
        folded.push(s);
    }
    let ty = QuantType {
        storage: Storage::I8,
        params: QuantParams::PerAxis {
            axis: 0,
            zero_points: vec![0; folded.len()],
            scales: folded,
        },
    };
    // Same shape, same element count: the weights rescaled in place.
    let t = Tensor {
        shape: w.shape.clone(),
        data: TensorData::I8(out),
    };
    Ok((t, ty))
}

fn round_half_even(v: f64) -> f64 {
    v.round_ties_even()
}

impl Converter<'_> {
    /// Folds every Constant node, and QuantizeLinear, DequantizeLinear and Identity nodes of
    /// constants, before the graph is converted (so that the QDQ units see constants wherever
    /// they are defined). Returns the folded nodes.
    pub(super) fn fold_constants(&mut self, graph: &GraphProto) -> Result<HashSet<usize>, String> {
        let mut folded = HashSet::new();
        for (i, node) in graph.node.iter().enumerate() {
            let constant_input = node
                .input
                .first()
                .is_some_and(|n| self.constant(n).is_some());
            let fold = match node.op_type.as_str() {
                "Constant" => true,
                "QuantizeLinear" | "DequantizeLinear" | "Identity" => constant_input,
                _ => false,
            };
            if fold && (node.domain.is_empty() || node.domain == "ai.onnx") {
                self.at_node(i, node);
                match node.op_type.as_str() {
                    "QuantizeLinear" => self.quantize_linear(node)?,
                    "DequantizeLinear" => self.dequantize_linear(node)?,
                    _ => self.convert(node)?,
                }
                folded.insert(i);
            }
        }
        Ok(folded)
    }

    /// The parameters of QuantizeLinear or DequantizeLinear `node` (inputs 1 and 2, `axis`).
    fn qparams(&self, node: &NodeProto, shape: &[usize]) -> Result<Params, String> {
        let Some(scale) = self.const_input(node, 1, "scale")? else {
            return self.err("the scale (input #1) is missing");
        };
        let Some(scales) = scale.as_f32() else {
            return self.err("the scale must be float32");
        };
        let scales: Vec<f64> = scales.iter().map(|s| *s as f64).collect();
        if scales.is_empty() {
            return self.err("the scale holds no value");
        }
        if let Some(bad) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return self.err(format!("scale {bad} is not positive and finite"));
        }
        let (storage, zero_points) = match self.const_input(node, 2, "zero point")? {
            None => (Storage::U8, vec![0; scales.len()]),
            Some(z) => {
                let storage = match z.data {
                    TensorData::U8(_) => Storage::U8,
                    TensorData::I8(_) => Storage::I8,
                    TensorData::I32(_) => Storage::I32,
                    _ => {
                        return self.err(format!(
                            "zero points of type {} are not supported (uint8, int8 and int32 are)",
                            z.data.dtype_name()
                        ));
                    }
                };
                let zps = ints(&z).unwrap_or_default();
                if zps.len() != scales.len() {
                    return self.err(format!(
                        "{} scales but {} zero points",
                        scales.len(),
                        zps.len()
                    ));
                }
                (storage, zps)
            }
        };
        // Per-axis parameters that are all the same (NNCF writes such for activations) are one
        // pair for the tensor.
        let uniform = scales.iter().all(|s| *s == scales[0])
            && zero_points.iter().all(|z| *z == zero_points[0]);
        let axis = if uniform {
            None
        } else {
            let rank = shape.len() as i64;
            let mut a = attr_int(node, "axis").unwrap_or(1);
            if a < 0 {
                a += rank;
            }
            if !(0..rank).contains(&a) || shape[a as usize] != scales.len() {
                return self.err(format!(
                    "{} scales along axis {a} do not fit a tensor of shape {shape:?}",
                    scales.len()
                ));
            }
            Some(a as usize)
        };
        Ok(Params {
            scales: if uniform { vec![scales[0]] } else { scales },
            zero_points: if uniform {
                vec![zero_points[0]]
            } else {
                zero_points
            },
            storage,
            axis,
        })
    }

    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        match self.sources.get(name)? {
            Source::Const { tensor, .. } => Some(tensor.shape.clone()),
            Source::Value(v) => Some(self.ty(*v).shape.clone()),
        }
    }

    /// QuantizeLinear: `quant.quantize`, or folded on a constant (ONNX's rounding, half to even).
    pub(super) fn quantize_linear(&mut self, node: &NodeProto) -> Result<(), String> {
        let x_name = node.input.first().cloned().unwrap_or_default();
        let shape = self.shape_of(&x_name).unwrap_or_default();
        let p = self.qparams(node, &shape)?;
        if p.storage == Storage::I32 {
            return self.err("quantizing to int32 is not supported");
        }
        if let Some(t) = self.constant(&x_name).cloned() {
            let Some(x) = t.as_f32() else {
                return self.err("the input must be float32");
            };
            let (lo, hi) = p.storage.range();
            let q: Vec<i64> = x
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let (s, z) = p.at(&t.shape, i);
                    let q = round_half_even(*v as f64 / s);
                    if q.is_nan() {
                        z
                    } else {
                        (q as i64).saturating_add(z).clamp(lo, hi)
                    }
                })
                .collect();
            let data = match p.storage {
                Storage::U8 => TensorData::U8(q.iter().map(|v| *v as u8).collect()),
                _ => TensorData::I8(q.iter().map(|v| *v as i8).collect()),
            };
            let tensor = Tensor::new(t.shape.clone(), data).or_else(|e| self.err(e))?;
            self.bind_source(node, Source::computed_const(tensor));
            return Ok(());
        }
        let x = self.input(node, 0)?;
        let elem = ElemType::Quant(p.quant_type());
        let v = self.emit_typed(OpKind::Quantize, Attrs::new(), &[x], elem, Self::hint(node))?;
        self.bind(node, v);
        Ok(())
    }

    /// DequantizeLinear: `quant.dequantize` of a quantized value, or folded on a constant.
    pub(super) fn dequantize_linear(&mut self, node: &NodeProto) -> Result<(), String> {
        let x_name = node.input.first().cloned().unwrap_or_default();
        let shape = self.shape_of(&x_name).unwrap_or_default();
        let p = self.qparams(node, &shape)?;
        if let Some(t) = self.constant(&x_name).cloned() {
            let Some(q) = ints(&t) else {
                return self.err("the input must be an integer tensor");
            };
            let x: Vec<f32> = q
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let (s, z) = p.at(&t.shape, i);
                    (v - z) as f32 * s as f32
                })
                .collect();
            let tensor = Tensor::from_f32(t.shape.clone(), x);
            self.bind_source(node, Source::computed_const(tensor));
            return Ok(());
        }
        let x = self.input(node, 0)?;
        let want = p.quant_type();
        if self.ty(x).elem.quant() != Some(&want) {
            return self.err(format!(
                "it reads '{x_name}' of type {} with other parameters ({})",
                self.ty(x),
                ElemType::Quant(want)
            ));
        }
        let v = self.emit_typed(
            OpKind::Dequantize,
            Attrs::new(),
            &[x],
            ElemType::F32,
            Self::hint(node),
        )?;
        self.bind(node, v);
        Ok(())
    }

    /// Finds every QDQ unit of `graph` (by the index of its float op) and, for each op that
    /// reads dequantized values but cannot become an integer op, why.
    pub(super) fn plan_units(
        &self,
        graph: &GraphProto,
        folded: &HashSet<usize>,
    ) -> (HashMap<usize, Unit>, Vec<String>) {
        let index = Index::new(graph);
        let mut units = HashMap::new();
        let mut kept = Vec::new();
        for (i, node) in graph.node.iter().enumerate() {
            if folded.contains(&i) || !(node.domain.is_empty() || node.domain == "ai.onnx") {
                continue;
            }
            match self.unit(&index, node) {
                Ok(Some(unit)) => {
                    units.insert(i, unit);
                }
                Ok(None) => {}
                Err(why) => kept.push(format!("{} ({}): {why}", node.name, node.op_type)),
            }
        }
        (units, kept)
    }

    /// The unit around float op `node`: `None` when none of its inputs is dequantized, an error
    /// saying why when it reads dequantized values but does not fit an integer op.
    fn unit(&self, g: &Index, node: &NodeProto) -> Result<Option<Unit>, String> {
        let kind = match node.op_type.as_str() {
            "Conv" => OpKind::QuantConv2d,
            "Gemm" | "MatMul" => OpKind::QuantDense,
            "Add" => OpKind::QuantAdd,
            "AveragePool" => OpKind::QuantAvgPool2d,
            "GlobalAveragePool" => OpKind::QuantGlobalAvgPool,
            "MaxPool" => OpKind::QuantMaxPool2d,
            "Concat" => OpKind::QuantConcat,
            _ => return Ok(None),
        };
        if kind == OpKind::QuantAdd && node.input.len() != 2 {
            return Ok(None);
        }
        let activations = match kind {
            OpKind::QuantAdd => 2,
            OpKind::QuantConcat => node.input.len(),
            _ => 1,
        };
        let dqs: Vec<Option<&NodeProto>> = node
            .input
            .iter()
            .take(activations)
            .map(|n| g.produced_by(n, "DequantizeLinear"))
            .collect();
        if dqs.iter().all(Option::is_none) {
            return Ok(None);
        }
        let mut inputs = Vec::new();
        for (k, dq) in dqs.iter().enumerate() {
            let Some(dq) = dq else {
                return Err(format!("input #{k} is not dequantized"));
            };
            let x = dq.input.first().cloned().unwrap_or_default();
            if self.constant(&x).is_some() {
                return Err(format!("input #{k} is a dequantized constant"));
            }
            inputs.push((x, self.per_tensor_8bit(dq, &format!("input #{k}"))?));
        }
        // The result: one reader, optionally a BatchNormalization (after a Conv, folded into it),
        // then optionally a Relu or Clip with one reader, then QuantizeLinear.
        let mut out = node.output.first().map(String::as_str).unwrap_or_default();
        let mut next = g
            .only_reader(out)
            .ok_or("its result has other readers than one QuantizeLinear")?;
        let mut batch_norm = None;
        if kind == OpKind::QuantConv2d && g.nodes[next].op_type == "BatchNormalization" {
            batch_norm = Some(next);
            out = g.nodes[next]
                .output
                .first()
                .map(String::as_str)
                .unwrap_or_default();
            next = g
                .only_reader(out)
                .ok_or("its batch norm's result has other readers than one QuantizeLinear")?;
        }
        let output_of = |n: usize| {
            g.nodes[n]
                .output
                .first()
                .map(String::as_str)
                .unwrap_or_default()
        };
        let (act, min, q) = match g.nodes[next].op_type.as_str() {
            "QuantizeLinear" => (None, None, next),
            "Relu" | "Clip"
                if matches!(
                    kind,
                    OpKind::QuantConv2d | OpKind::QuantDense | OpKind::QuantAdd
                ) =>
            {
                match g.only_reader(output_of(next)) {
                    Some(q) if g.nodes[q].op_type == "QuantizeLinear" => (Some(next), None, q),
                    Some(m)
                        if g.nodes[m].op_type == "Min"
                            && matches!(kind, OpKind::QuantConv2d | OpKind::QuantDense) =>
                    {
                        match g.only_reader(output_of(m)) {
                            Some(q) if g.nodes[q].op_type == "QuantizeLinear" => {
                                (Some(next), Some(m), q)
                            }
                            _ => {
                                return Err(
                                    "its per-channel bound's result is not quantized".into()
                                );
                            }
                        }
                    }
                    _ => return Err("its activation's result is not quantized".into()),
                }
            }
            other => return Err(format!("its result goes to {other}, not QuantizeLinear")),
        };
        let qnode = &g.nodes[q];
        let float_name = match min.or(act) {
            Some(a) => output_of(a),
            None => out,
        }
        .to_string();
        let rp = self.per_tensor_8bit(qnode, "its result")?;
        let mut clamp = match act {
            None => None,
            Some(a) => self.clamp(&g.nodes[a], &rp)?,
        };
        let channel_max = match min {
            None => None,
            Some(m) => {
                let range = rp.storage.range();
                let [lo, hi] = *clamp.get_or_insert([range.0, range.1]);
                let rank = if kind == OpKind::QuantConv2d { 4 } else { 2 };
                Some(self.channel_max(&g.nodes[m], rank, &rp, (lo, hi))?)
            }
        };
        if kind == OpKind::QuantMaxPool2d && rp != inputs[0].1 {
            return Err("its result is quantized with other parameters than its input".into());
        }
        let (weight, bias) = match kind {
            OpKind::QuantConv2d | OpKind::QuantDense => {
                let (mut name, mut w, mut wt) = self.weight(g, node, kind)?;
                let sx = inputs[0].1.scales[0];
                let channels = w.shape[0];
                let sw = |wt: &QuantType| -> Vec<f64> {
                    match &wt.params {
                        QuantParams::PerTensor { scale, .. } => vec![*scale; channels],
                        QuantParams::PerAxis { scales, .. } => scales.clone(),
                    }
                };
                let mut bias = self.bias(g, node, sx, &sw(&wt))?;
                if let Some(bn) = batch_norm {
                    let (gain, shift) = self.batch_norm(&g.nodes[bn], channels)?;
                    (w, wt) = fold_gain(&w, &sw(&wt), &gain)?;
                    name = format!("{name}.folded");
                    let real = match bias {
                        Some(Bias::Levels(_, ref levels, ref scales)) => levels
                            .iter()
                            .zip(scales)
                            .map(|(v, s)| *v as f64 * s)
                            .collect(),
                        Some(Bias::Real(_, ref b)) => b.clone(),
                        None => vec![0.0; channels],
                    };
                    let folded = real
                        .iter()
                        .zip(gain.iter().zip(&shift))
                        .map(|(b, (k, t))| b * k + t)
                        .collect();
                    let bname = match &bias {
                        Some(Bias::Levels(n, ..) | Bias::Real(n, _)) => format!("{n}.folded"),
                        None => format!("{name}.bias"),
                    };
                    bias = Some(Bias::Real(bname, folded));
                }
                let sw = sw(&wt);
                let levels = bias.map(|b| match b {
                    Bias::Levels(n, levels, _) => (n, levels),
                    Bias::Real(n, real) => (
                        n,
                        real.iter()
                            .zip(&sw)
                            .map(|(b, s)| to_bias(b / (sx * s)) as i32)
                            .collect(),
                    ),
                });
                (Some((name, w, wt)), levels)
            }
            _ => (None, None),
        };
        let mut absorbed: Vec<usize> = batch_norm.into_iter().chain(act).chain(min).collect();
        absorbed.push(q);
        Ok(Some(Unit {
            kind,
            inputs,
            weight,
            bias,
            clamp,
            channel_max,
            result: rp.quant_type(),
            output: qnode.output.first().cloned().unwrap_or_default(),
            float_name,
            absorbed,
        }))
    }

    /// The parameters of a QuantizeLinear or DequantizeLinear of an activation (`what`), which
    /// must be per tensor, to u8 or i8.
    fn per_tensor_8bit(&self, node: &NodeProto, what: &str) -> Result<Params, String> {
        let uniform = |k: usize| {
            node.input
                .get(k)
                .and_then(|n| self.constant(n))
                .is_none_or(|t| (0..t.numel()).all(|i| t.data.get_f64(i) == t.data.get_f64(0)))
        };
        if !(uniform(1) && uniform(2)) {
            return Err(format!("{what} is quantized per channel"));
        }
        // Uniform parameters never consult the shape.
        let channels = node
            .input
            .get(1)
            .and_then(|n| self.constant(n))
            .map_or(1, |t| t.numel());
        let p = self.qparams_at(node, &[0, channels])?;
        if p.storage == Storage::I32 {
            return Err(format!("{what} is quantized to int32"));
        }
        Ok(p)
    }

    /// [`Converter::qparams`] reporting errors without the converter's node prefix (the unit
    /// planner names the node itself).
    fn qparams_at(&self, node: &NodeProto, shape: &[usize]) -> Result<Params, String> {
        self.qparams(node, shape).map_err(|e| {
            let inner = e
                .split_once(": ")
                .map_or(e.as_str(), |(_, m)| m)
                .to_string();
            format!("its {} '{}': {inner}", node.op_type, node.name)
        })
    }

    /// The fused clamp of a Relu or Clip before a QuantizeLinear of parameters `p`, in stored
    /// values (`None`: the whole storage range).
    fn clamp(&self, act: &NodeProto, p: &Params) -> Result<Option<[i64; 2]>, String> {
        let (lo, hi) = if act.op_type == "Relu" {
            (0.0, f64::INFINITY)
        } else if self.opset < 11 {
            (
                attr_float(act, "min").unwrap_or(f64::NEG_INFINITY),
                attr_float(act, "max").unwrap_or(f64::INFINITY),
            )
        } else {
            let bound = |k: usize, default: f64| -> Result<f64, String> {
                match act.input.get(k).filter(|n| !n.is_empty()) {
                    None => Ok(default),
                    Some(n) => self
                        .constant(n)
                        .and_then(scalar)
                        .ok_or_else(|| "its Clip has bounds that are not constants".to_string()),
                }
            };
            (bound(1, f64::NEG_INFINITY)?, bound(2, f64::INFINITY)?)
        };
        let (s, z) = (p.scales[0], p.zero_points[0]);
        let range = p.storage.range();
        let level = |v: f64| quantize_value(v as f32, s, z, range);
        let c = [level(lo), level(hi)];
        Ok((c != [range.0, range.1]).then_some(c))
    }

    /// The per-channel bounds of a `Min` after a layer's activation, in stored values of
    /// parameters `p`, within the clamp `[lo, hi]`.
    fn channel_max(
        &self,
        min: &NodeProto,
        rank: usize,
        p: &Params,
        (lo, hi): (i64, i64),
    ) -> Result<Vec<i64>, String> {
        let bounds = min
            .input
            .get(1)
            .filter(|_| min.input.len() == 2)
            .and_then(|n| self.constant(n))
            .and_then(|t| {
                // The channel count is checked against the layer by the verifier.
                let channels = t.shape.iter().copied().find(|d| *d != 1).unwrap_or(1);
                let mut shape = vec![1, channels];
                shape.resize(rank, 1);
                super::channel_bounds(t, &shape)
            })
            .ok_or("its Min is not a constant bound per channel")?;
        let (s, z) = (p.scales[0], p.zero_points[0]);
        let range = p.storage.range();
        Ok(bounds
            .iter()
            .map(|v| quantize_value(*v, s, z, range).clamp(lo, hi))
            .collect())
    }

    /// The int8 weights of a Conv, Gemm or MatMul as `[outputs, ...]`, per tensor or per output
    /// channel, with the name they are stored under.
    fn weight(
        &self,
        g: &Index,
        node: &NodeProto,
        kind: OpKind,
    ) -> Result<(String, Tensor, QuantType), String> {
        let name = node.input.get(1).cloned().unwrap_or_default();
        let dq = g
            .produced_by(&name, "DequantizeLinear")
            .ok_or("its weights are not dequantized int8")?;
        let stored = dq.input.first().cloned().unwrap_or_default();
        let t = self
            .constant(&stored)
            .ok_or("its weights are not a constant")?
            .clone();
        let p = self.qparams_at(dq, &t.shape)?;
        let TensorData::I8(data) = &t.data else {
            return Err(format!(
                "its weights are stored as {}, not int8",
                t.data.dtype_name()
            ));
        };
        if p.zero_points.iter().any(|z| *z != 0) {
            return Err("its weights have a nonzero zero point".into());
        }
        let per_tensor = p.axis.is_none() || p.scales.iter().all(|s| *s == p.scales[0]);
        let params = |axis_ok: Option<usize>| -> Result<QuantParams, String> {
            if per_tensor {
                return Ok(QuantParams::PerTensor {
                    scale: p.scales[0],
                    zero_point: 0,
                });
            }
            if p.axis != axis_ok {
                return Err(format!(
                    "its weights are quantized along axis {}, not the output channels",
                    p.axis.unwrap_or(0)
                ));
            }
            Ok(QuantParams::PerAxis {
                axis: 0,
                scales: p.scales.clone(),
                zero_points: p.zero_points.clone(),
            })
        };
        let wt = |params| QuantType {
            storage: Storage::I8,
            params,
        };
        if kind == OpKind::QuantConv2d {
            return Ok((stored, t.clone(), wt(params(Some(0))?)));
        }
        if node.op_type == "Gemm" {
            let one = |a: &str| attr_float(node, a).unwrap_or(1.0) == 1.0;
            if !one("alpha") || !one("beta") || attr_int(node, "transA") == Some(1) {
                return Err("a Gemm with alpha, beta or transA other than the defaults".into());
            }
        }
        if t.shape.len() != 2 {
            return Err(format!("its weights have shape {:?}, not 2-D", t.shape));
        }
        // Gemm with transB holds [N, K] already; MatMul and Gemm without it hold [K, N].
        if node.op_type == "Gemm" && attr_int(node, "transB") == Some(1) {
            return Ok((stored, t.clone(), wt(params(Some(0))?)));
        }
        let params = params(Some(1))?;
        let (k, n) = (t.shape[0], t.shape[1]);
        let mut rows = vec![0i8; n * k];
        for i in 0..n {
            for j in 0..k {
                rows[i * k + j] = data[j * n + i];
            }
        }
        let tensor = Tensor::new(vec![n, k], TensorData::I8(rows))?;
        Ok((format!("{stored}.transposed"), tensor, wt(params)))
    }

    /// The int32 biases of a Conv or Gemm at scale `sx * sw[c]`: an int32 DequantizeLinear at
    /// that scale is taken as it is; one at another scale, or a float constant, is rounded to it.
    fn bias(
        &self,
        g: &Index,
        node: &NodeProto,
        sx: f64,
        sw: &[f64],
    ) -> Result<Option<Bias>, String> {
        if node.op_type == "MatMul" {
            return Ok(None);
        }
        let Some(name) = node.input.get(2).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let channels = sw.len();
        if let Some(dq) = g.produced_by(name, "DequantizeLinear") {
            let stored = dq.input.first().cloned().unwrap_or_default();
            let t = self.constant(&stored).ok_or("its bias is not a constant")?;
            let TensorData::I32(b) = &t.data else {
                return Err("its dequantized bias is not int32".into());
            };
            let p = self.qparams_at(dq, &t.shape)?;
            if b.len() != channels || p.zero_points.iter().any(|z| *z != 0) {
                return Err(
                    "its int32 bias does not hold one value per output channel with zero point 0"
                        .into(),
                );
            }
            let scales: Vec<f64> = (0..channels)
                .map(|c| p.scales[if p.scales.len() == 1 { 0 } else { c }])
                .collect();
            if scales
                .iter()
                .zip(sw)
                .all(|(s, w)| *s as f32 == (sx * w) as f32)
            {
                return Ok(Some(Bias::Levels(stored, b.clone(), scales)));
            }
            let real = b.iter().zip(&scales).map(|(v, s)| *v as f64 * s).collect();
            return Ok(Some(Bias::Real(stored, real)));
        }
        let t = self
            .constant(name)
            .ok_or("its bias is neither an int32 DequantizeLinear nor a constant")?;
        let Some(b) = t.as_f32().filter(|b| b.len() == channels) else {
            return Err("its bias does not hold one float per output channel".into());
        };
        let real = b.iter().map(|v| *v as f64).collect();
        Ok(Some(Bias::Real(format!("{name}.q"), real)))
    }

    /// The gain and shift per output channel of an inference BatchNormalization:
    /// `y = gain * x + shift`.
    fn batch_norm(&self, bn: &NodeProto, channels: usize) -> Result<(Vec<f64>, Vec<f64>), String> {
        if attr_int(bn, "training_mode") == Some(1)
            || bn.output.iter().skip(1).any(|o| !o.is_empty())
        {
            return Err("its batch norm is in training mode".into());
        }
        let param = |k: usize| -> Result<Vec<f64>, String> {
            bn.input
                .get(k)
                .and_then(|n| self.constant(n))
                .and_then(|t| {
                    t.as_f32()
                        .map(|v| v.iter().map(|x| *x as f64).collect::<Vec<_>>())
                })
                .filter(|v: &Vec<f64>| v.len() == channels)
                .ok_or_else(|| {
                    "its batch norm's parameters are not constants, one per channel".to_string()
                })
        };
        let (scale, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
        let eps = attr_float(bn, "epsilon").unwrap_or(1e-5);
        let gain: Vec<f64> = scale
            .iter()
            .zip(&var)
            .map(|(s, v)| s / (v + eps).sqrt())
            .collect();
        if gain.iter().any(|k| !k.is_finite()) {
            return Err("its batch norm has a variance of zero or less".into());
        }
        let shift = beta
            .iter()
            .zip(mean.iter().zip(&gain))
            .map(|(b, (m, k))| b - m * k)
            .collect();
        Ok((gain, shift))
    }

    /// Converts a unit's float op (the node `node`) into its integer op.
    pub(super) fn convert_unit(&mut self, node: &NodeProto, unit: &Unit) -> Result<(), String> {
        let mut operands = Vec::new();
        for (name, p) in &unit.inputs {
            let v = self.value(name)?;
            if self.ty(v).elem.quant() != Some(&p.quant_type()) {
                return self.err(format!(
                    "'{name}' of type {} is dequantized with other parameters ({})",
                    self.ty(v),
                    ElemType::Quant(p.quant_type())
                ));
            }
            operands.push(v);
        }
        let x = operands[0];
        let mut attrs = Attrs::new();
        if let Some((name, w, wt)) = &unit.weight {
            let ty = TensorType::new(w.shape.clone(), ElemType::Quant(wt.clone()));
            let op = self
                .module
                .weights
                .const_op(name, w.clone(), ty, false)
                .named(sanitize(name));
            operands.push(Value::of(self.func.add_op(op, &[])));
            if unit.kind == OpKind::QuantConv2d {
                attrs = self.conv_attrs(node, x, &w.shape)?;
            } else if self.ty(x).rank() != 2 {
                return self.err(format!("A must be 2-D, got {}", self.ty(x)));
            }
        }
        if let Some((name, b)) = &unit.bias {
            let t = Tensor::vector(TensorData::I32(b.clone()));
            let ty = TensorType::new(vec![b.len()], ElemType::I32);
            let op = self
                .module
                .weights
                .const_op(name, t, ty, false)
                .named(sanitize(name));
            operands.push(Value::of(self.func.add_op(op, &[])));
        }
        match unit.kind {
            OpKind::QuantAvgPool2d | OpKind::QuantMaxPool2d => {
                attrs = self.pool_attrs(node, x)?.0;
            }
            OpKind::QuantGlobalAvgPool => {
                self.spatial(x)?;
            }
            OpKind::QuantConcat => {
                let Some(axis) = attr_int(node, "axis") else {
                    return self.err("'axis' is required");
                };
                attrs.set("axis", Attr::Int(axis));
            }
            _ => {}
        }
        if let Some(c) = unit.clamp {
            attrs.set("clamp", Attr::ints(&c));
        }
        if let Some(c) = &unit.channel_max {
            attrs.set("channel_max", Attr::ints(c));
        }
        let elem = ElemType::Quant(unit.result.clone());
        let v = self.emit_typed(unit.kind, attrs, &operands, elem, Some(&unit.float_name))?;
        self.sources.insert(unit.output.clone(), Source::Value(v));
        Ok(())
    }
}
