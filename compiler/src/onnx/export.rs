//! A module to ONNX: every integer op as the standard QDQ form (DequantizeLinear of its inputs,
//! the float op, the fused clamp as Relu or Clip, QuantizeLinear of its result: what ONNX
//! Runtime's QDQ fusion turns back into its int8 kernels), every float op as itself.

use std::collections::{HashMap, HashSet};

use prost::Message;
use qcc_dialects::ops::attrs::{
    self, Conv2dAttrs, PadAttrs, PadMode, Pool2dAttrs, clip_bounds, flatten_axis, hardsigmoid,
    reshape_target,
};
use qcc_dialects::{
    ElemType, Function, Module, Node, OpKind, Operation, QuantParams, QuantType, Storage, Tensor,
    TensorData, TensorType, Value,
};
use qcc_runtime::quant::channel_scales;

use super::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto::AttributeType,
    tensor_proto::DataType, tensor_shape_proto, type_proto,
};

/// The ONNX IR version written (the one that goes with opsets 13 and 14).
const IR_VERSION: i64 = 7;

/// The name the batch dimension of the graph's inputs and outputs gets.
const BATCH: &str = "N";

/// An exported model and what the export had to approximate.
pub struct Exported {
    /// The serialized `ModelProto`.
    pub bytes: Vec<u8>,
    /// One line per approximation (scales that are not f32 numbers), for the user.
    pub notes: Vec<String>,
}

/// Writes `module`'s `@main` as an ONNX model. `metadata` goes into the model's metadata
/// (`qcc.preprocess` and friends).
pub fn export(module: &Module, metadata: &[(String, String)]) -> Result<Exported, String> {
    let func = module
        .function("main")
        .or(module.functions.first())
        .ok_or("the module has no function to export")?;
    let mut w = Writer::new(module, func);
    w.graph()?;
    let opset = if w.uses_hardswish { 14 } else { 13 };
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        producer_name: "qcc".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(GraphProto {
            name: module.name.clone().unwrap_or_else(|| "model".into()),
            ..w.graph
        }),
        metadata_props: metadata
            .iter()
            .map(|(key, value)| StringStringEntryProto {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        ..ModelProto::default()
    };
    let mut notes = Vec::new();
    let estimates = func
        .op_nodes()
        .into_iter()
        .filter(|n| func.op(*n).attr("bias_shift").is_some())
        .count();
    if estimates > 0 {
        notes.push(format!(
            "{estimates} layers carry bias_shift estimates (from estimate-bias-shift), which ONNX has no place for; they are left out (apply-bias-correction applies them to the biases)"
        ));
    }
    if w.inexact_scales > 0 {
        notes.push(format!(
            "{} quantization scales are not f32 numbers (the module predates f32 scales); ONNX stores them rounded to f32, so a few values may differ by one unit",
            w.inexact_scales
        ));
    }
    Ok(Exported {
        bytes: model.encode_to_vec(),
        notes,
    })
}

fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..AttributeProto::default()
    }
}

fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i: value,
        ..AttributeProto::default()
    }
}

fn attr_float(name: &str, value: f64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f: value as f32,
        ..AttributeProto::default()
    }
}

fn attr_str(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: value.as_bytes().to_vec(),
        ..AttributeProto::default()
    }
}

fn usizes(v: &[usize]) -> Vec<i64> {
    v.iter().map(|d| *d as i64).collect()
}

/// The ONNX element type of stored values.
fn data_type(elem: &ElemType) -> DataType {
    match elem {
        ElemType::F32 => DataType::Float,
        ElemType::I8 => DataType::Int8,
        ElemType::U8 => DataType::Uint8,
        ElemType::I32 => DataType::Int32,
        ElemType::I64 => DataType::Int64,
        ElemType::Quant(q) => match q.storage {
            Storage::I8 => DataType::Int8,
            Storage::U8 => DataType::Uint8,
            Storage::I32 => DataType::Int32,
        },
    }
}

/// A tensor as an initializer (little-endian raw data).
pub fn tensor_proto(name: &str, t: &Tensor) -> TensorProto {
    let (data_type, raw_data): (DataType, Vec<u8>) = match &t.data {
        TensorData::F32(v) => (
            DataType::Float,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        TensorData::I8(v) => (DataType::Int8, v.iter().map(|x| *x as u8).collect()),
        TensorData::U8(v) => (DataType::Uint8, v.clone()),
        TensorData::I32(v) => (
            DataType::Int32,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
        TensorData::I64(v) => (
            DataType::Int64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
    };
    TensorProto {
        name: name.into(),
        dims: usizes(&t.shape),
        data_type: data_type as i32,
        raw_data,
        ..TensorProto::default()
    }
}

/// Whether an integer op is exported as a float op between DequantizeLinear and QuantizeLinear.
fn has_float_form(op: &Operation) -> bool {
    [
        OpKind::QuantConv2d,
        OpKind::QuantDense,
        OpKind::QuantAdd,
        OpKind::QuantConcat,
        OpKind::QuantAvgPool2d,
        OpKind::QuantGlobalAvgPool,
    ]
    .iter()
    .any(|k| op.is(*k))
}

fn value_info(name: &str, ty: &TensorType) -> ValueInfoProto {
    use tensor_shape_proto::{Dimension, dimension::Value as Dim};
    let dim = ty
        .shape
        .iter()
        .enumerate()
        .map(|(i, d)| Dimension {
            value: Some(if i == 0 {
                Dim::DimParam(BATCH.into())
            } else {
                Dim::DimValue(*d as i64)
            }),
            ..Dimension::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type(&ty.elem) as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    }
}

struct Writer<'m> {
    module: &'m Module,
    func: &'m Function,
    graph: GraphProto,
    names: HashMap<Value, String>,
    taken: HashSet<String>,
    /// Initializers already written for a (scale, zero point) pair, by their key.
    params: HashMap<String, (String, Option<String>)>,
    inexact_scales: usize,
    uses_hardswish: bool,
    /// The last float tensor of each integer op with a float form (conv, dense, add, concat,
    /// average pooling): the module's name of its value; the quantized value is `NAME_quantized`.
    float_names: HashMap<qcc_dialects::NodeIndex, String>,
}

impl<'m> Writer<'m> {
    fn new(module: &'m Module, func: &'m Function) -> Writer<'m> {
        Writer {
            module,
            func,
            graph: GraphProto::default(),
            names: HashMap::new(),
            taken: HashSet::new(),
            params: HashMap::new(),
            inexact_scales: 0,
            uses_hardswish: false,
            float_names: HashMap::new(),
        }
    }

    /// A tensor name not used yet, derived from `base`.
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 0;
        while self.taken.contains(&name) {
            i += 1;
            name = format!("{base}_{i}");
        }
        self.taken.insert(name.clone());
        name
    }

    fn name(&self, v: Value) -> String {
        self.names[&v].clone()
    }

    fn ty(&self, v: Value) -> &'m TensorType {
        self.func.value_type(v)
    }

    fn node(
        &mut self,
        op_type: &str,
        inputs: Vec<String>,
        output: &str,
        attribute: Vec<AttributeProto>,
    ) {
        self.graph.node.push(NodeProto {
            input: inputs,
            output: vec![output.to_string()],
            name: output.to_string(),
            op_type: op_type.into(),
            attribute,
            ..NodeProto::default()
        });
    }

    fn initializer(&mut self, base: &str, t: &Tensor) -> String {
        let name = self.fresh(base);
        self.graph.initializer.push(tensor_proto(&name, t));
        name
    }

    /// Names every argument and op result, keeping the module's own names. An unnamed result
    /// that dequantizes a named value takes that value's name (the graph's output keeps the
    /// float model's name, `logits` say), and the quantized value is `NAME_quantized`.
    fn assign_names(&mut self) {
        for &r in &self.func.results {
            let Some(op) = self.func.try_op(r.node) else {
                continue;
            };
            if !op.is(OpKind::Dequantize) {
                continue;
            }
            let q = self.func.operands(r.node)[0];
            let named = self
                .func
                .try_op(q.node)
                .and_then(|o| o.result_names.get(q.result).cloned().flatten());
            // Numbers are the printer's names for unnamed values; `quantize` gives the output's
            // dequantize the same name as the value it reads (the printer then numbers it).
            let unnamed = op.result_names[0].as_deref().is_none_or(|n| {
                n.chars().all(|c| c.is_ascii_digit()) || Some(n) == named.as_deref()
            });
            if !unnamed {
                continue;
            }
            if let Some(name) = named
                && !self.taken.contains(&name)
                && !self.names.contains_key(&q)
            {
                let quantized = self.fresh(&format!("{name}_quantized"));
                self.names.insert(q, quantized);
                let name = self.fresh(&name);
                self.names.insert(r, name.clone());
                let float = self.fresh(&format!("{name}_float"));
                self.float_names.insert(q.node, float);
            }
        }
        for (i, &arg) in self.func.args.iter().enumerate() {
            let base = match &self.func.graph[arg] {
                Node::Arg { name, .. } => name.clone(),
                Node::Op(_) => format!("input{i}"),
            };
            let name = self.fresh(&base);
            self.names.insert(Value::of(arg), name);
        }
        for node in self.func.schedule() {
            let op = self.func.op(node);
            for r in 0..op.results.len() {
                if self.names.contains_key(&Value { node, result: r }) {
                    continue;
                }
                let base = match op.result_names.get(r).and_then(|n| n.as_deref()) {
                    Some(n) => n.to_string(),
                    None => op.name.replace('.', "_"),
                };
                let name = if has_float_form(op) {
                    let float = self.fresh(&base);
                    self.float_names.insert(node, float);
                    self.fresh(&format!("{base}_quantized"))
                } else {
                    self.fresh(&base)
                };
                self.names.insert(Value { node, result: r }, name);
            }
        }
    }

    fn graph(&mut self) -> Result<(), String> {
        self.assign_names();
        for &arg in &self.func.args {
            let v = Value::of(arg);
            let info = value_info(&self.name(v), self.ty(v));
            self.graph.input.push(info);
        }
        for node in self.func.schedule() {
            let op = self.func.op(node);
            self.op(node, op)
                .map_err(|e| format!("{} ({}): {e}", self.name(Value::of(node)), op.name))?;
        }
        for &v in &self.func.results {
            let info = value_info(&self.name(v), self.ty(v));
            self.graph.output.push(info);
        }
        Ok(())
    }

    /// The scale and zero-point initializers of a quantized type (shared between uses), and the
    /// axis of a per-axis type.
    fn qparams(&mut self, q: &QuantType) -> Result<(String, Option<String>, Option<i64>), String> {
        q.validate()?;
        let (scales, zps, axis): (Vec<f64>, Vec<i64>, Option<i64>) = match &q.params {
            QuantParams::PerTensor { scale, zero_point } => (vec![*scale], vec![*zero_point], None),
            QuantParams::PerAxis {
                axis,
                scales,
                zero_points,
            } => (scales.clone(), zero_points.clone(), Some(*axis as i64)),
        };
        let key = format!("{:?} {scales:?} {zps:?}", q.storage);
        if let Some((s, z)) = self.params.get(&key) {
            return Ok((s.clone(), z.clone(), axis));
        }
        let shape = if axis.is_some() {
            vec![scales.len()]
        } else {
            vec![]
        };
        let f32_scales: Vec<f32> = scales.iter().map(|s| *s as f32).collect();
        self.inexact_scales += scales
            .iter()
            .zip(&f32_scales)
            .filter(|(a, b)| **a != **b as f64)
            .count();
        let s = self.initializer("scale", &Tensor::from_f32(shape.clone(), f32_scales));
        // ONNX's default zero point is a u8 0; i8 storage needs its own, and i32 allows none.
        let data = match q.storage {
            Storage::U8 => Some(TensorData::U8(zps.iter().map(|z| *z as u8).collect())),
            Storage::I8 => Some(TensorData::I8(zps.iter().map(|z| *z as i8).collect())),
            Storage::I32 => None,
        };
        let z = match data {
            Some(data) => Some(self.initializer("zero_point", &Tensor::new(shape, data)?)),
            None => None,
        };
        self.params.insert(key, (s.clone(), z.clone()));
        Ok((s, z, axis))
    }

    /// `DequantizeLinear` of a quantized value, one per reader (ONNX Runtime's QDQ fusion wants
    /// each DequantizeLinear to feed one node).
    fn dequantize(&mut self, v: Value) -> Result<String, String> {
        let out = self.fresh(&format!("{}_dq", self.name(v)));
        self.dequantize_into(v, &out)?;
        Ok(out)
    }

    /// `DequantizeLinear` of the quantized value `v` into the tensor `out`.
    fn dequantize_into(&mut self, v: Value, out: &str) -> Result<(), String> {
        let ty = self.ty(v);
        self.linear("DequantizeLinear", self.name(v), ty, out)
    }

    /// `QuantizeLinear` of `x` into the value `out` of quantized type `ty`.
    fn quantize(&mut self, x: String, ty: &TensorType, out: &str) -> Result<(), String> {
        self.linear("QuantizeLinear", x, ty, out)
    }

    /// A `QuantizeLinear` or `DequantizeLinear` node with the parameters of `ty`.
    fn linear(
        &mut self,
        op_type: &str,
        x: String,
        ty: &TensorType,
        out: &str,
    ) -> Result<(), String> {
        let q = ty
            .elem
            .quant()
            .ok_or_else(|| format!("expected a quantized type, got {ty}"))?
            .clone();
        let (scale, zp, axis) = self.qparams(&q)?;
        let mut inputs = vec![x, scale];
        inputs.extend(zp);
        let attrs = axis.map(|a| attr_int("axis", a)).into_iter().collect();
        self.node(op_type, inputs, out, attrs);
        Ok(())
    }

    /// An integer op's float form: `op_type` on the dequantized `inputs`, the fused clamp as
    /// Relu or Clip, then `QuantizeLinear` into the op's result. The last float tensor takes the
    /// module's name of the value (as the float model names it), the one before a clamp
    /// `NAME_preact`.
    fn float_op(
        &mut self,
        op: &Operation,
        me: Value,
        op_type: &str,
        inputs: Vec<String>,
        attrs: Vec<AttributeProto>,
    ) -> Result<(), String> {
        let ty = &op.results[0];
        let q = ty.elem.quant().ok_or("the result must be quantized")?;
        let QuantParams::PerTensor { scale, zero_point } = q.params else {
            return Err("the result must be quantized per tensor".into());
        };
        let (min, max) = q.storage.range();
        let out = self.name(me);
        let post = match self.float_names.get(&me.node) {
            Some(n) => n.clone(),
            None => self.fresh(&format!("{out}_float")),
        };
        let channel_max = attrs::channel_clamp(op)?;
        let clamp = match attrs::clamp(op)? {
            Some([lo, hi]) if lo > min || hi < max || channel_max.is_some() => Some((lo, hi)),
            None if channel_max.is_some() => Some((min, max)),
            _ => None,
        };
        let Some((lo, hi)) = clamp else {
            self.node(op_type, inputs, &post, attrs);
            return self.quantize(post, ty, &out);
        };
        let pre = self.fresh(&format!("{post}_preact"));
        self.node(op_type, inputs, &pre, attrs);
        let real = |v: i64| (v - zero_point) as f32 * scale as f32;
        let clipped = match &channel_max {
            Some(_) => self.fresh(&format!("{post}_clip")),
            None => post.clone(),
        };
        if lo == zero_point && hi == max {
            self.node("Relu", vec![pre], &clipped, vec![]);
        } else {
            let lo_name = if lo > min {
                self.initializer("clip_min", &Tensor::from_f32(vec![], vec![real(lo)]))
            } else {
                String::new()
            };
            let hi_name = if hi < max {
                self.initializer("clip_max", &Tensor::from_f32(vec![], vec![real(hi)]))
            } else {
                String::new()
            };
            self.node("Clip", vec![pre, lo_name, hi_name], &clipped, vec![]);
        }
        if let Some(h) = channel_max {
            let bounds: Vec<f64> = h.iter().map(|v| f64::from(real(*v))).collect();
            self.channel_min(clipped, &bounds, ty.rank(), &post);
        }
        self.quantize(post, ty, &out)
    }

    /// `Min(x, bounds)` into `out`, the bounds (one per channel) shaped `[C, 1, ...]` so they
    /// broadcast along axis 1 of a tensor of `rank`.
    fn channel_min(&mut self, x: String, bounds: &[f64], rank: usize, out: &str) {
        let mut shape = vec![bounds.len()];
        shape.resize(rank.max(2) - 1, 1);
        let values = bounds.iter().map(|v| *v as f32).collect();
        let name = self.initializer("channel_max", &Tensor::from_f32(shape, values));
        self.node("Min", vec![x, name], out, vec![]);
    }

    /// The bias of an integer layer as `DequantizeLinear` of its i32 values at scale
    /// `S_x * S_w[c]`.
    fn bias(&mut self, x: Value, w: Value, b: Value) -> Result<String, String> {
        let channels = self.ty(w).shape[0];
        let ty = self.ty(b);
        let scales: Vec<f32> = match ty.elem.quant() {
            Some(q) => channel_scales(ty, channels)
                .ok_or("bias scales")?
                .iter()
                .map(|s| *s as f32)
                .inspect(|_| debug_assert_eq!(q.storage, Storage::I32))
                .collect(),
            None => {
                let (sx, ..) = qcc_runtime::quant::per_tensor_params(self.ty(x), "the input")?;
                let sw =
                    channel_scales(self.ty(w), channels).ok_or("the weight is not quantized")?;
                sw.iter().map(|s| (sx * s) as f32).collect()
            }
        };
        let per_axis = scales.iter().any(|s| *s != scales[0]);
        let scale = if per_axis {
            self.initializer("bias_scale", &Tensor::from_f32(vec![channels], scales))
        } else {
            self.initializer("bias_scale", &Tensor::from_f32(vec![], vec![scales[0]]))
        };
        let out = self.fresh(&format!("{}_dq", self.name(b)));
        let attrs = if per_axis {
            vec![attr_int("axis", 0)]
        } else {
            vec![]
        };
        self.node("DequantizeLinear", vec![self.name(b), scale], &out, attrs);
        Ok(out)
    }

    fn window(&self, w: &attrs::Window) -> Vec<AttributeProto> {
        vec![
            attr_ints("strides", &usizes(&w.strides)),
            attr_ints("pads", &usizes(&w.pads)),
            attr_ints("dilations", &usizes(&w.dilations)),
        ]
    }

    fn conv_attrs(&self, op: &Operation, w: Value) -> Result<Vec<AttributeProto>, String> {
        let a = Conv2dAttrs::of(op)?;
        let ws = &self.ty(w).shape;
        let mut out = vec![attr_ints("kernel_shape", &usizes(&ws[2..]))];
        out.extend(self.window(&a.window));
        out.push(attr_int("group", a.groups as i64));
        Ok(out)
    }

    fn pool_attrs(&self, op: &Operation, max: bool) -> Result<Vec<AttributeProto>, String> {
        let a = Pool2dAttrs::of(op)?;
        let mut out = vec![
            attr_ints("kernel_shape", &usizes(&a.kernel)),
            attr_ints("strides", &usizes(&a.window.strides)),
            attr_ints("pads", &usizes(&a.window.pads)),
            attr_int("ceil_mode", a.ceil_mode as i64),
        ];
        if max {
            out.push(attr_ints("dilations", &usizes(&a.window.dilations)));
        } else {
            out.push(attr_int("count_include_pad", a.count_include_pad as i64));
        }
        Ok(out)
    }

    /// A Reshape's target as an int64 initializer, the batch dimension copied from the input
    /// (0) so that the exported graph takes any batch.
    fn reshape_shape(&mut self, x: Value, target: &[usize]) -> String {
        let mut dims = usizes(target);
        if let (Some(d), Some(b)) = (dims.first_mut(), self.ty(x).shape.first())
            && *d == *b as i64
        {
            *d = 0;
        }
        self.initializer("shape", &Tensor::vector(TensorData::I64(dims)))
    }

    fn op(&mut self, node: qcc_dialects::NodeIndex, op: &'m Operation) -> Result<(), String> {
        let kind = op
            .kind()
            .ok_or_else(|| format!("'{}' is not a registered op", op.name))?;
        let ops = self.func.operands(node);
        let me = Value::of(node);
        let out = self.name(me);
        let names: Vec<String> = ops.iter().map(|v| self.name(*v)).collect();
        match kind {
            OpKind::Const => {
                let t = self
                    .module
                    .const_value(op)
                    .ok_or("its weight is missing from the weights file")?;
                self.graph.initializer.push(tensor_proto(&out, &t));
            }
            OpKind::Quantize => self.quantize(names[0].clone(), &op.results[0], &out)?,
            OpKind::Dequantize => self.dequantize_into(ops[0], &out)?,
            OpKind::QuantConv2d | OpKind::QuantDense => {
                let x = self.dequantize(ops[0])?;
                let w = self.dequantize(ops[1])?;
                let mut inputs = vec![x, w];
                if let Some(&b) = ops.get(2) {
                    inputs.push(self.bias(ops[0], ops[1], b)?);
                }
                if kind == OpKind::QuantConv2d {
                    let attrs = self.conv_attrs(op, ops[1])?;
                    self.float_op(op, me, "Conv", inputs, attrs)?;
                } else {
                    self.float_op(op, me, "Gemm", inputs, vec![attr_int("transB", 1)])?;
                }
            }
            OpKind::QuantAdd | OpKind::QuantConcat => {
                let inputs = ops
                    .iter()
                    .map(|v| self.dequantize(*v))
                    .collect::<Result<Vec<_>, _>>()?;
                if kind == OpKind::QuantAdd {
                    self.float_op(op, me, "Add", inputs, vec![])?;
                } else {
                    let axis = attrs::axis(op, 1, self.ty(ops[0]).rank())?;
                    let attrs = vec![attr_int("axis", axis as i64)];
                    self.float_op(op, me, "Concat", inputs, attrs)?;
                }
            }
            OpKind::QuantAvgPool2d | OpKind::QuantGlobalAvgPool => {
                let x = self.dequantize(ops[0])?;
                if kind == OpKind::QuantAvgPool2d {
                    let attrs = self.pool_attrs(op, false)?;
                    self.float_op(op, me, "AveragePool", vec![x], attrs)?;
                } else {
                    self.float_op(op, me, "GlobalAveragePool", vec![x], vec![])?;
                }
            }
            // The maximum of stored values is exact on the integers themselves (ONNX's MaxPool
            // takes u8 and i8 since opset 12).
            OpKind::QuantMaxPool2d | OpKind::MaxPool2d => {
                let attrs = self.pool_attrs(op, true)?;
                self.node("MaxPool", names, &out, attrs);
            }
            OpKind::Conv2d => {
                let attrs = self.conv_attrs(op, ops[1])?;
                self.node("Conv", names, &out, attrs);
            }
            OpKind::Dense => self.node("Gemm", names, &out, vec![attr_int("transB", 1)]),
            OpKind::MatMul => self.node("MatMul", names, &out, vec![]),
            OpKind::BatchNorm => {
                let eps = attrs::epsilon(op)?;
                self.node(
                    "BatchNormalization",
                    names,
                    &out,
                    vec![attr_float("epsilon", eps)],
                );
            }
            OpKind::Relu
            | OpKind::Sigmoid
            | OpKind::Add
            | OpKind::Sub
            | OpKind::Mul
            | OpKind::Div => {
                let op_type = match kind {
                    OpKind::Relu => "Relu",
                    OpKind::Sigmoid => "Sigmoid",
                    OpKind::Add => "Add",
                    OpKind::Sub => "Sub",
                    OpKind::Mul => "Mul",
                    _ => "Div",
                };
                self.node(op_type, names, &out, vec![]);
            }
            OpKind::HardSwish => {
                self.uses_hardswish = true;
                self.node("HardSwish", names, &out, vec![]);
            }
            OpKind::HardSigmoid => {
                let (alpha, beta) = hardsigmoid(op);
                let attrs = vec![attr_float("alpha", alpha), attr_float("beta", beta)];
                self.node("HardSigmoid", names, &out, attrs);
            }
            OpKind::Clip => {
                let bounds = clip_bounds(op)?;
                let clipped = match bounds.channel_hi {
                    Some(_) => self.fresh(&format!("{out}_clip")),
                    None => out.clone(),
                };
                let mut inputs = names;
                for (bound, what) in [(bounds.lo, "clip_min"), (bounds.hi, "clip_max")] {
                    inputs.push(if bound.is_finite() {
                        self.initializer(what, &Tensor::from_f32(vec![], vec![bound as f32]))
                    } else {
                        String::new()
                    });
                }
                while inputs.last().is_some_and(String::is_empty) {
                    inputs.pop();
                }
                self.node("Clip", inputs, &clipped, vec![]);
                if let Some(h) = &bounds.channel_hi {
                    self.channel_min(clipped, h, self.ty(ops[0]).rank(), &out);
                }
            }
            OpKind::AvgPool2d => {
                let attrs = self.pool_attrs(op, false)?;
                self.node("AveragePool", names, &out, attrs);
            }
            OpKind::GlobalAvgPool => self.node("GlobalAveragePool", names, &out, vec![]),
            OpKind::Flatten => {
                let axis = flatten_axis(op, self.ty(ops[0]).rank())?;
                self.node("Flatten", names, &out, vec![attr_int("axis", axis as i64)]);
            }
            OpKind::Reshape => {
                let target = reshape_target(op)?;
                let shape = self.reshape_shape(ops[0], &target);
                self.node("Reshape", vec![names[0].clone(), shape], &out, vec![]);
            }
            OpKind::Transpose => {
                let perm = attrs::perm(op, self.ty(ops[0]).rank())?;
                self.node(
                    "Transpose",
                    names,
                    &out,
                    vec![attr_ints("perm", &usizes(&perm))],
                );
            }
            OpKind::Concat => {
                let axis = attrs::axis(op, 1, self.ty(ops[0]).rank())?;
                self.node("Concat", names, &out, vec![attr_int("axis", axis as i64)]);
            }
            OpKind::Softmax => {
                let axis = attrs::axis(op, -1, self.ty(ops[0]).rank())?;
                self.node("Softmax", names, &out, vec![attr_int("axis", axis as i64)]);
            }
            OpKind::Pad => {
                let rank = self.ty(ops[0]).rank();
                let p = PadAttrs::of(op, rank)?;
                let pads = Tensor::vector(TensorData::I64(usizes(&p.pads)));
                let pads = self.initializer("pads", &pads);
                let (mode, value) = match p.mode {
                    PadMode::Constant(v) => ("constant", Some(v)),
                    PadMode::Reflect => ("reflect", None),
                    PadMode::Edge => ("edge", None),
                };
                let mut inputs = vec![names[0].clone(), pads];
                if let Some(v) = value.filter(|v| *v != 0.0) {
                    inputs.push(
                        self.initializer("pad_value", &Tensor::from_f32(vec![], vec![v as f32])),
                    );
                }
                self.node("Pad", inputs, &out, vec![attr_str("mode", mode)]);
            }
        }
        Ok(())
    }
}
