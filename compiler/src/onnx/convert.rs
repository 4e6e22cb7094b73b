//! ONNX graph to an `nn` module: one converter per ONNX op, shapes inferred through the op registry.

use std::collections::HashMap;

use qcc_dialects::registry::OpCtx;
use qcc_dialects::{
    Attr, Attrs, ElemType, Function, Module, OpKind, Operation, Tensor, TensorData, TensorType,
    Value, registry,
};

use super::proto::{AttributeProto, GraphProto, NodeProto, attribute_proto::AttributeType};
use super::tensor::{decode, ints, scalar};

mod qdq;

/// Every ONNX op the importer converts.
pub const SUPPORTED: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Clip",
    "Concat",
    "Constant",
    "Conv",
    "DequantizeLinear",
    "Div",
    "Dropout",
    "Flatten",
    "Gemm",
    "GlobalAveragePool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "MatMul",
    "MaxPool",
    "Min",
    "Mul",
    "Pad",
    "QuantizeLinear",
    "Relu",
    "Reshape",
    "Sigmoid",
    "Softmax",
    "Sub",
    "Transpose",
];

/// Constants at most this large, when they come from `Constant` nodes, are printed inline.
const INLINE_LIMIT: usize = 64;

/// The values of f32 `bounds` that vary along axis 1 of a tensor of `shape` only (shaped
/// `[C, 1, ...]` or `[1, C, 1, ...]`), as `Min` carries a per-channel clip.
pub(crate) fn channel_bounds<'t>(bounds: &'t Tensor, shape: &[usize]) -> Option<&'t [f32]> {
    let channels = shape.get(1).copied()?;
    let mut dims = bounds.shape.as_slice();
    if dims.len() == shape.len() && dims.first() == Some(&1) {
        dims = &dims[1..];
    }
    let per_channel = dims.len() + 1 == shape.len()
        && dims.first() == Some(&channels)
        && dims[1..].iter().all(|d| *d == 1);
    bounds.as_f32().filter(|_| per_channel)
}

/// Makes an ONNX name usable as an IR value name.
pub fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_$.-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_matches('_').to_string();
    if s.is_empty() { "v".into() } else { s }
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    attr(node, name).map(|a| a.i)
}

fn attr_float(node: &NodeProto, name: &str) -> Option<f64> {
    attr(node, name).map(|a| a.f as f64)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn attr_str(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name).map(|a| String::from_utf8_lossy(&a.s).into_owned())
}

/// What a graph value is during conversion.
#[derive(Clone)]
enum Source {
    /// Computed by an op (or a graph input).
    Value(Value),
    /// A constant not yet materialized; `inline` when it came from a small `Constant` node.
    Const { tensor: Tensor, inline: bool },
}

impl Source {
    /// A constant computed during conversion (folded), stored in the weights file when used.
    fn computed_const(tensor: Tensor) -> Source {
        Source::Const {
            tensor,
            inline: false,
        }
    }
}

/// Converts one ONNX graph.
pub struct Converter<'m> {
    module: &'m mut Module,
    func: Function,
    sources: HashMap<String, Source>,
    materialized: HashMap<String, Value>,
    opset: i64,
    node: String,
    /// QDQ-wrapped ops left in float, and why.
    kept_float: Vec<String>,
}

impl<'m> Converter<'m> {
    /// A converter writing weights into `module`.
    pub fn new(module: &'m mut Module, opset: i64) -> Converter<'m> {
        Converter {
            module,
            func: Function::new("main"),
            sources: HashMap::new(),
            materialized: HashMap::new(),
            opset,
            node: String::new(),
            kept_float: Vec::new(),
        }
    }

    fn err<T>(&self, msg: impl std::fmt::Display) -> Result<T, String> {
        Err(format!("{}: {msg}", self.node))
    }

    /// Converts the whole graph into `@main`; also returns the QDQ-wrapped ops that stay float,
    /// each with the reason.
    pub fn graph(mut self, graph: &GraphProto) -> Result<(Function, Vec<String>), String> {
        for init in &graph.initializer {
            let tensor = decode(init)?;
            self.sources.insert(
                init.name.clone(),
                Source::Const {
                    tensor,
                    inline: false,
                },
            );
        }
        for input in &graph.input {
            if self.sources.contains_key(&input.name) {
                continue; // an initializer listed among the inputs (older exporters)
            }
            let ty = input_type(input)?;
            let v = self.func.add_arg(&sanitize(&input.name), ty);
            self.sources.insert(input.name.clone(), Source::Value(v));
        }
        if self.func.args.is_empty() {
            return Err("the graph has no inputs besides its initializers".into());
        }
        let folded = self.fold_constants(graph)?;
        let (units, kept_float) = self.plan_units(graph, &folded);
        self.kept_float = kept_float;
        let absorbed: std::collections::HashSet<usize> =
            units.values().flat_map(|u| u.absorbed.clone()).collect();
        for (i, node) in graph.node.iter().enumerate() {
            if folded.contains(&i) || absorbed.contains(&i) {
                continue;
            }
            self.at_node(i, node);
            match units.get(&i) {
                Some(unit) => self.convert_unit(node, unit)?,
                None => self.convert(node)?,
            }
        }
        self.node = "the graph outputs".into();
        for out in &graph.output {
            let v = self.value(&out.name)?;
            self.func.results.push(v);
        }
        if self.func.results.is_empty() {
            return Err("the graph has no outputs".into());
        }
        self.remove_unread_dequantizes();
        Ok((self.func, self.kept_float))
    }

    /// Names node `i` in messages.
    fn at_node(&mut self, i: usize, node: &NodeProto) {
        self.node = if node.name.is_empty() {
            format!("node #{i} ({})", node.op_type)
        } else {
            format!("node '{}' ({})", node.name, node.op_type)
        };
    }

    /// Removes the `quant.dequantize` ops of DequantizeLinear nodes whose readers all became
    /// integer ops.
    fn remove_unread_dequantizes(&mut self) {
        let unread: Vec<_> = self
            .func
            .op_nodes()
            .into_iter()
            .filter(|&n| {
                self.func.is_op(n, OpKind::Dequantize) && self.func.use_count(Value::of(n)) == 0
            })
            .collect();
        for n in unread {
            self.func.remove_op(n);
        }
    }

    fn is_known(&self, name: &str) -> bool {
        self.sources.contains_key(name)
    }

    fn constant(&self, name: &str) -> Option<&Tensor> {
        match self.sources.get(name)? {
            Source::Const { tensor, .. } => Some(tensor),
            Source::Value(_) => None,
        }
    }

    fn const_input(
        &self,
        node: &NodeProto,
        i: usize,
        what: &str,
    ) -> Result<Option<Tensor>, String> {
        match node.input.get(i).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(name) => match self.constant(name) {
                Some(t) => Ok(Some(t.clone())),
                None if self.is_known(name) => self.err(format!(
                    "its {what} ('{name}') must be a constant (an initializer or a Constant node)"
                )),
                None => self.err(format!(
                    "input '{name}' is not produced by any node, initializer or graph input"
                )),
            },
        }
    }

    /// The IR value of an ONNX name, materializing a constant as `nn.const` on first use.
    fn value(&mut self, name: &str) -> Result<Value, String> {
        if let Some(v) = self.materialized.get(name) {
            return Ok(*v);
        }
        match self.sources.get(name).cloned() {
            Some(Source::Value(v)) => Ok(v),
            Some(Source::Const { tensor, inline }) => {
                let TensorData::F32(_) = tensor.data else {
                    return self.err(format!(
                        "constant '{name}' holds {} values; qcc computes in f32",
                        tensor.data.dtype_name()
                    ));
                };
                let v = self.add_const(name, tensor, inline);
                self.materialized.insert(name.to_string(), v);
                Ok(v)
            }
            None => self.err(format!(
                "input '{name}' is not produced by any node, initializer or graph input"
            )),
        }
    }

    fn add_const(&mut self, name: &str, tensor: Tensor, inline: bool) -> Value {
        let ty = TensorType::f32(tensor.shape.clone());
        let inline = inline || tensor.numel() == 0;
        let op = self
            .module
            .weights
            .const_op(name, tensor, ty, inline)
            .named(sanitize(name));
        Value::of(self.func.add_op(op, &[]))
    }

    fn input(&mut self, node: &NodeProto, i: usize) -> Result<Value, String> {
        match node.input.get(i).filter(|n| !n.is_empty()) {
            Some(name) => {
                let name = name.clone();
                self.value(&name)
            }
            None => self.err(format!("input #{i} is missing")),
        }
    }

    fn optional_input(&mut self, node: &NodeProto, i: usize) -> Result<Option<Value>, String> {
        match node.input.get(i).filter(|n| !n.is_empty()) {
            Some(_) => self.input(node, i).map(Some),
            None => Ok(None),
        }
    }

    fn ty(&self, v: Value) -> &TensorType {
        self.func.value_type(v)
    }

    /// Adds an op, inferring its result type through the registry (the element type of its
    /// first operand).
    fn emit(
        &mut self,
        kind: OpKind,
        attrs: Attrs,
        operands: &[Value],
        hint: Option<&str>,
    ) -> Result<Value, String> {
        let elem = operands
            .first()
            .map_or(ElemType::F32, |v| self.ty(*v).elem.clone());
        self.emit_typed(kind, attrs, operands, elem, hint)
    }

    /// Adds an op whose result has element type `elem`, its shape inferred through the registry.
    fn emit_typed(
        &mut self,
        kind: OpKind,
        attrs: Attrs,
        operands: &[Value],
        elem: ElemType,
        hint: Option<&str>,
    ) -> Result<Value, String> {
        let Some(def) = registry().get(kind.name()) else {
            return self.err(format!("internal error: '{kind}' is not a registered op"));
        };
        let mut op = Operation::of(kind, attrs, TensorType::f32(vec![]));
        let shapes = {
            let ctx = OpCtx {
                op: &op,
                operands: operands.iter().map(|v| self.func.value_type(*v)).collect(),
            };
            match (def.infer)(&ctx) {
                Ok(s) => s,
                Err(e) => return self.err(e),
            }
        };
        op.results = vec![TensorType::new(shapes[0].clone(), elem)];
        if let Some(h) = hint {
            op.result_names[0] = Some(sanitize(h));
        }
        Ok(Value::of(self.func.add_op(op, operands)))
    }

    fn bind(&mut self, node: &NodeProto, v: Value) {
        self.bind_source(node, Source::Value(v));
    }

    fn bind_source(&mut self, node: &NodeProto, source: Source) {
        if let Some(out) = node.output.first() {
            self.sources.insert(out.clone(), source);
        }
    }

    fn hint(node: &NodeProto) -> Option<&str> {
        node.output.first().map(String::as_str)
    }

    fn only_first_output(&self, node: &NodeProto) -> Result<(), String> {
        if node.output.iter().skip(1).any(|o| !o.is_empty()) {
            return self.err(format!(
                "only its first output is supported, but it has {}",
                node.output.len()
            ));
        }
        Ok(())
    }

    fn spatial(&self, v: Value) -> Result<(usize, usize), String> {
        let t = self.ty(v);
        if t.rank() != 4 {
            return self.err(format!(
                "only 2-D images (4-D NCHW tensors) are supported, got {t}"
            ));
        }
        Ok((t.shape[2], t.shape[3]))
    }

    /// `pads` from `auto_pad` or the `pads` attribute, as [top, left, bottom, right].
    fn pads(
        &self,
        node: &NodeProto,
        hw: (usize, usize),
        kernel: [usize; 2],
        strides: [usize; 2],
        dilations: [usize; 2],
    ) -> Result<Vec<i64>, String> {
        let auto = attr_str(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
        match auto.as_str() {
            "NOTSET" => {
                let p = attr_ints(node, "pads").unwrap_or_else(|| vec![0; 4]);
                if p.len() != 4 || p.iter().any(|v| *v < 0) {
                    return self.err(format!("'pads' must hold 4 non-negative values, got {p:?}"));
                }
                Ok(p)
            }
            "VALID" => Ok(vec![0; 4]),
            "SAME_UPPER" | "SAME_LOWER" => {
                let mut begin = [0i64; 2];
                let mut end = [0i64; 2];
                for (a, size) in [hw.0, hw.1].into_iter().enumerate() {
                    let out = size.div_ceil(strides[a]);
                    let span = (kernel[a] - 1) * dilations[a] + 1;
                    let total = ((out - 1) * strides[a] + span).saturating_sub(size) as i64;
                    let small = total / 2;
                    (begin[a], end[a]) = if auto == "SAME_UPPER" {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                }
                Ok(vec![begin[0], begin[1], end[0], end[1]])
            }
            other => self.err(format!("unknown auto_pad '{other}'")),
        }
    }

    fn window_attrs(&self, node: &NodeProto, name: &str) -> Result<[usize; 2], String> {
        let v = attr_ints(node, name).unwrap_or_else(|| vec![1, 1]);
        if v.len() != 2 || v.iter().any(|x| *x < 1) {
            return self.err(format!("'{name}' must hold 2 positive values, got {v:?}"));
        }
        Ok([v[0] as usize, v[1] as usize])
    }

    fn convert(&mut self, node: &NodeProto) -> Result<(), String> {
        if !(node.domain.is_empty() || node.domain == "ai.onnx") {
            return self.err(format!(
                "ops of domain '{}' are not supported (supported: {} of the default domain)",
                node.domain,
                SUPPORTED.join(", ")
            ));
        }
        let hint = Self::hint(node);
        let v = match node.op_type.as_str() {
            "Conv" => self.conv(node)?,
            "BatchNormalization" => {
                self.only_first_output(node)?;
                if attr_int(node, "training_mode") == Some(1) {
                    return self
                        .err("training mode is not supported; export the model for inference");
                }
                let ops = (0..5)
                    .map(|i| self.input(node, i))
                    .collect::<Result<Vec<_>, _>>()?;
                let eps = attr_float(node, "epsilon").unwrap_or(1e-5);
                self.emit(
                    OpKind::BatchNorm,
                    Attrs::new().with("epsilon", Attr::Float(eps)),
                    &ops,
                    hint,
                )?
            }
            "Relu" | "Sigmoid" | "HardSwish" => {
                let x = self.input(node, 0)?;
                let kind = match node.op_type.as_str() {
                    "Relu" => OpKind::Relu,
                    "Sigmoid" => OpKind::Sigmoid,
                    _ => OpKind::HardSwish,
                };
                self.emit(kind, Attrs::new(), &[x], hint)?
            }
            "HardSigmoid" => {
                let x = self.input(node, 0)?;
                let attrs = Attrs::new()
                    .with(
                        "alpha",
                        Attr::Float(attr_float(node, "alpha").unwrap_or(0.2)),
                    )
                    .with("beta", Attr::Float(attr_float(node, "beta").unwrap_or(0.5)));
                self.emit(OpKind::HardSigmoid, attrs, &[x], hint)?
            }
            "Clip" => self.clip(node)?,
            "Min" => self.channel_min(node)?,
            "Add" | "Sub" | "Mul" | "Div" => {
                let (a, b) = (self.input(node, 0)?, self.input(node, 1)?);
                let kind = match node.op_type.as_str() {
                    "Add" => OpKind::Add,
                    "Sub" => OpKind::Sub,
                    "Mul" => OpKind::Mul,
                    _ => OpKind::Div,
                };
                self.emit(kind, Attrs::new(), &[a, b], hint)?
            }
            "GlobalAveragePool" => {
                let x = self.input(node, 0)?;
                self.spatial(x)?;
                self.emit(OpKind::GlobalAvgPool, Attrs::new(), &[x], hint)?
            }
            "AveragePool" | "MaxPool" => self.pool(node)?,
            "Gemm" => self.gemm(node)?,
            "MatMul" => self.matmul(node)?,
            "Flatten" => {
                let x = self.input(node, 0)?;
                let rank = self.ty(x).rank() as i64;
                let mut axis = attr_int(node, "axis").unwrap_or(1);
                if axis < 0 {
                    axis += rank;
                }
                self.emit(
                    OpKind::Flatten,
                    Attrs::new().with("axis", Attr::Int(axis)),
                    &[x],
                    hint,
                )?
            }
            "Reshape" => self.reshape(node)?,
            "Transpose" => {
                let x = self.input(node, 0)?;
                let rank = self.ty(x).rank() as i64;
                let perm = attr_ints(node, "perm").unwrap_or_else(|| (0..rank).rev().collect());
                self.emit(
                    OpKind::Transpose,
                    Attrs::new().with("perm", Attr::ints(&perm)),
                    &[x],
                    hint,
                )?
            }
            "Concat" => {
                let inputs = (0..node.input.len())
                    .map(|i| self.input(node, i))
                    .collect::<Result<Vec<_>, _>>()?;
                let Some(axis) = attr_int(node, "axis") else {
                    return self.err("'axis' is required");
                };
                self.emit(
                    OpKind::Concat,
                    Attrs::new().with("axis", Attr::Int(axis)),
                    &inputs,
                    hint,
                )?
            }
            "Softmax" => self.softmax(node)?,
            "QuantizeLinear" => return self.quantize_linear(node),
            "DequantizeLinear" => return self.dequantize_linear(node),
            "Pad" => self.pad(node)?,
            "Identity" | "Dropout" => {
                if node.op_type == "Dropout" {
                    self.only_first_output(node)?;
                }
                let src = node.input.first().cloned().unwrap_or_default();
                let Some(source) = self.sources.get(&src).cloned() else {
                    return self.err(format!(
                        "input '{src}' is not produced by any node, initializer or graph input"
                    ));
                };
                if let Some(out) = node.output.first() {
                    self.sources.insert(out.clone(), source);
                }
                return Ok(());
            }
            "Constant" => {
                let tensor = self.constant_value(node)?;
                let inline = tensor.numel() <= INLINE_LIMIT;
                if let Some(out) = node.output.first() {
                    self.sources
                        .insert(out.clone(), Source::Const { tensor, inline });
                }
                return Ok(());
            }
            other => {
                return self.err(format!(
                    "the op type '{other}' is not supported; supported: {}",
                    SUPPORTED.join(", ")
                ));
            }
        };
        self.bind(node, v);
        Ok(())
    }

    fn constant_value(&self, node: &NodeProto) -> Result<Tensor, String> {
        let Some(a) = node.attribute.first() else {
            return self.err("it has no value attribute");
        };
        match (a.name.as_str(), AttributeType::try_from(a.r#type).unwrap_or(AttributeType::Undefined)) {
            ("value", _) => match &a.t {
                Some(t) => decode(t).or_else(|e| self.err(e)),
                None => self.err("'value' holds no tensor"),
            },
            ("value_float", _) => Ok(Tensor::from_f32(vec![], vec![a.f])),
            ("value_floats", _) => Ok(Tensor::from_f32(vec![a.floats.len()], a.floats.clone())),
            ("value_int", _) => Tensor::new(vec![], TensorData::I64(vec![a.i])).or_else(|e| self.err(e)),
            ("value_ints", _) => Tensor::new(vec![a.ints.len()], TensorData::I64(a.ints.clone())).or_else(|e| self.err(e)),
            (other, _) => self.err(format!("Constant '{other}' attributes are not supported (value, value_float(s), value_int(s) are)")),
        }
    }

    fn conv(&mut self, node: &NodeProto) -> Result<Value, String> {
        let x = self.input(node, 0)?;
        let w = self.input(node, 1)?;
        let b = self.optional_input(node, 2)?;
        let ws = self.ty(w).shape.clone();
        let attrs = self.conv_attrs(node, x, &ws)?;
        let mut operands = vec![x, w];
        operands.extend(b);
        self.emit(OpKind::Conv2d, attrs, &operands, Self::hint(node))
    }

    /// The attributes of a Conv node reading `x` with weights of shape `ws`.
    fn conv_attrs(&self, node: &NodeProto, x: Value, ws: &[usize]) -> Result<Attrs, String> {
        let hw = self.spatial(x)?;
        if ws.len() != 4 {
            return self.err(format!("the weight must be 4-D (OIHW), got shape {ws:?}"));
        }
        let strides = self.window_attrs(node, "strides")?;
        let dilations = self.window_attrs(node, "dilations")?;
        let pads = self.pads(node, hw, [ws[2], ws[3]], strides, dilations)?;
        if attr_ints(node, "kernel_shape").is_some_and(|k| k != [ws[2] as i64, ws[3] as i64]) {
            return self.err(format!(
                "'kernel_shape' disagrees with the weight shape {ws:?}"
            ));
        }
        Ok(Attrs::new()
            .with("strides", Attr::ints(&strides.map(|v| v as i64)))
            .with("pads", Attr::ints(&pads))
            .with("dilations", Attr::ints(&dilations.map(|v| v as i64)))
            .with("groups", Attr::Int(attr_int(node, "group").unwrap_or(1))))
    }

    fn pool(&mut self, node: &NodeProto) -> Result<Value, String> {
        self.only_first_output(node)?;
        let x = self.input(node, 0)?;
        let (attrs, max) = self.pool_attrs(node, x)?;
        // The maximum of stored values is the quantized maximum: the type passes through.
        let kind = match (max, self.ty(x).elem.quant().is_some()) {
            (true, true) => OpKind::QuantMaxPool2d,
            (true, false) => OpKind::MaxPool2d,
            (false, _) => OpKind::AvgPool2d,
        };
        self.emit(kind, attrs, &[x], Self::hint(node))
    }

    /// The attributes of an AveragePool or MaxPool node reading `x`, and whether it is MaxPool.
    fn pool_attrs(&self, node: &NodeProto, x: Value) -> Result<(Attrs, bool), String> {
        let hw = self.spatial(x)?;
        let Some(kernel) = attr_ints(node, "kernel_shape") else {
            return self.err("'kernel_shape' is required");
        };
        if kernel.len() != 2 || kernel.iter().any(|k| *k < 1) {
            return self.err(format!(
                "'kernel_shape' must hold 2 positive values, got {kernel:?}"
            ));
        }
        let k = [kernel[0] as usize, kernel[1] as usize];
        let strides = self.window_attrs(node, "strides")?;
        let max = node.op_type == "MaxPool";
        let dilations = if max {
            self.window_attrs(node, "dilations")?
        } else {
            [1, 1]
        };
        let pads = self.pads(node, hw, k, strides, dilations)?;
        let mut attrs = Attrs::new()
            .with("kernel", Attr::ints(&kernel))
            .with("strides", Attr::ints(&strides.map(|v| v as i64)))
            .with("pads", Attr::ints(&pads));
        if max {
            attrs.set("dilations", Attr::ints(&dilations.map(|v| v as i64)));
        } else {
            attrs.set(
                "count_include_pad",
                Attr::Bool(attr_int(node, "count_include_pad") == Some(1)),
            );
        }
        attrs.set(
            "ceil_mode",
            Attr::Bool(attr_int(node, "ceil_mode") == Some(1)),
        );
        Ok((attrs, max))
    }

    fn clip(&mut self, node: &NodeProto) -> Result<Value, String> {
        let x = self.input(node, 0)?;
        let bound = |c: &Self, i: usize, attr_name: &str| -> Result<Option<f64>, String> {
            if c.opset < 11 {
                return Ok(attr_float(node, attr_name));
            }
            match c.const_input(node, i, attr_name)? {
                None => Ok(None),
                Some(t) => scalar(&t)
                    .map(Some)
                    .ok_or_else(|| format!("{}: '{attr_name}' must be a single value", c.node)),
            }
        };
        let lo = bound(self, 1, "min")?;
        let hi = bound(self, 2, "max")?;
        let mut attrs = Attrs::new();
        if let Some(lo) = lo {
            attrs.set("min", Attr::Float(lo));
        }
        if let Some(hi) = hi {
            attrs.set("max", Attr::Float(hi));
        }
        self.emit(OpKind::Clip, attrs, &[x], Self::hint(node))
    }

    /// `Min(x, bounds)` with constant bounds that vary along axis 1 only (shaped `[C, 1, ...]`
    /// or `[1, C, 1, ...]`), as qcc's export writes a per-channel clip: `nn.clip` with
    /// `channel_max`.
    fn channel_min(&mut self, node: &NodeProto) -> Result<Value, String> {
        if node.input.len() != 2 {
            return self
                .err("only Min of two inputs is supported (a tensor and per-channel bounds)");
        }
        let x = self.input(node, 0)?;
        let Some(bounds) = self.const_input(node, 1, "bound")? else {
            return self.err("its second input must be per-channel bounds");
        };
        let shape = self.ty(x).shape.clone();
        let values = channel_bounds(&bounds, &shape).ok_or_else(|| {
            format!(
                "{}: Min is supported only with constant f32 bounds per channel (shape [{}, 1, ...]), got shape {:?}",
                self.node,
                shape.get(1).copied().unwrap_or(0),
                bounds.shape
            )
        })?;
        let h: Vec<f64> = values.iter().map(|v| f64::from(*v)).collect();
        if h.iter().any(|v| v.is_nan()) {
            return self.err("its bounds hold NaN");
        }
        let attrs = Attrs::new().with("channel_max", Attr::floats(&h));
        self.emit(OpKind::Clip, attrs, &[x], Self::hint(node))
    }

    /// A constant f32 tensor derived from a converted one (transposed, scaled, ...).
    fn derived_const(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) -> Value {
        self.add_const(name, Tensor::from_f32(shape, data), false)
    }

    fn gemm(&mut self, node: &NodeProto) -> Result<Value, String> {
        let alpha = attr_float(node, "alpha").unwrap_or(1.0) as f32;
        let beta = attr_float(node, "beta").unwrap_or(1.0) as f32;
        let trans_a = attr_int(node, "transA") == Some(1);
        let trans_b = attr_int(node, "transB") == Some(1);
        let mut a = self.input(node, 0)?;
        if self.ty(a).rank() != 2 {
            return self.err(format!("A must be 2-D, got {}", self.ty(a)));
        }
        if trans_a {
            a = self.emit(
                OpKind::Transpose,
                Attrs::new().with("perm", Attr::ints(&[1, 0])),
                &[a],
                None,
            )?;
        }
        let b_name = node.input.get(1).cloned().unwrap_or_default();
        let hint = Self::hint(node);
        let Some(b) = self.constant(&b_name).cloned() else {
            // A computed B: a matrix product, then scaling and the C term as separate ops.
            let mut bv = self.input(node, 1)?;
            if trans_b {
                bv = self.emit(
                    OpKind::Transpose,
                    Attrs::new().with("perm", Attr::ints(&[1, 0])),
                    &[bv],
                    None,
                )?;
            }
            let mut y = self.emit(OpKind::MatMul, Attrs::new(), &[a, bv], hint)?;
            if alpha != 1.0 {
                let s = self.derived_const(&format!("{b_name}.alpha"), vec![], vec![alpha]);
                y = self.emit(OpKind::Mul, Attrs::new(), &[y, s], hint)?;
            }
            return self.gemm_c(node, y, beta, None);
        };
        let Some(bd) = b.as_f32() else {
            return self.err("B must be f32");
        };
        if b.shape.len() != 2 {
            return self.err(format!("B must be 2-D, got shape {:?}", b.shape));
        }
        // nn.dense wants the weight as [M, K].
        let (m, k) = if trans_b {
            (b.shape[0], b.shape[1])
        } else {
            (b.shape[1], b.shape[0])
        };
        let w = if !trans_b || alpha != 1.0 {
            let mut data = vec![0f32; m * k];
            for i in 0..m {
                for j in 0..k {
                    data[i * k + j] = alpha
                        * if trans_b {
                            bd[i * k + j]
                        } else {
                            bd[j * m + i]
                        };
                }
            }
            self.derived_const(&format!("{b_name}.weight"), vec![m, k], data)
        } else {
            self.value(&b_name)?
        };
        // A C that is one value per output (or a scalar) is the dense layer's bias.
        let c_name = node.input.get(2).filter(|n| !n.is_empty()).cloned();
        if let Some((c_name, c)) = c_name
            .as_ref()
            .and_then(|n| Some((n.clone(), self.constant(n)?.clone())))
        {
            let row = c.numel() == m && c.shape.iter().rev().skip(1).all(|d| *d == 1);
            if let (true, Some(cd)) = (row || c.numel() == 1, c.as_f32()) {
                let bias: Vec<f32> = (0..m)
                    .map(|i| beta * cd[if c.numel() == 1 { 0 } else { i }])
                    .collect();
                let bv = if beta == 1.0 && c.shape == [m] {
                    self.value(&c_name)?
                } else {
                    self.derived_const(&format!("{c_name}.bias"), vec![m], bias)
                };
                return self.emit(OpKind::Dense, Attrs::new(), &[a, w, bv], hint);
            }
        }
        let y = self.emit(OpKind::Dense, Attrs::new(), &[a, w], hint)?;
        self.gemm_c(node, y, beta, c_name)
    }

    /// Adds `beta * C` to a Gemm's product when C is present.
    fn gemm_c(
        &mut self,
        node: &NodeProto,
        y: Value,
        beta: f32,
        c_name: Option<String>,
    ) -> Result<Value, String> {
        let c_name = c_name.or_else(|| node.input.get(2).filter(|n| !n.is_empty()).cloned());
        let Some(c_name) = c_name else { return Ok(y) };
        let mut c = self.value(&c_name)?;
        if beta != 1.0 {
            let s = self.derived_const(&format!("{c_name}.beta"), vec![], vec![beta]);
            c = self.emit(OpKind::Mul, Attrs::new(), &[c, s], None)?;
        }
        self.emit(OpKind::Add, Attrs::new(), &[y, c], Self::hint(node))
    }

    fn matmul(&mut self, node: &NodeProto) -> Result<Value, String> {
        let a = self.input(node, 0)?;
        let b_name = node.input.get(1).cloned().unwrap_or_default();
        let hint = Self::hint(node);
        // A constant [K, N] right operand of a 2-D product is a dense layer (weight [N, K]).
        if let Some(b) = self.constant(&b_name).cloned()
            && b.shape.len() == 2
            && self.ty(a).rank() == 2
            && let Some(bd) = b.as_f32()
        {
            let (k, n) = (b.shape[0], b.shape[1]);
            let mut data = vec![0f32; n * k];
            for i in 0..n {
                for j in 0..k {
                    data[i * k + j] = bd[j * n + i];
                }
            }
            let w = self.derived_const(&format!("{b_name}.weight"), vec![n, k], data);
            return self.emit(OpKind::Dense, Attrs::new(), &[a, w], hint);
        }
        let b = self.input(node, 1)?;
        self.emit(OpKind::MatMul, Attrs::new(), &[a, b], hint)
    }

    fn reshape(&mut self, node: &NodeProto) -> Result<Value, String> {
        let x = self.input(node, 0)?;
        let Some(shape_t) = self.const_input(node, 1, "shape")? else {
            return self.err("the target shape (input #1) is missing");
        };
        let Some(target) = ints(&shape_t) else {
            return self.err("the target shape must be an integer tensor");
        };
        let input = self.ty(x).shape.clone();
        let allow_zero = attr_int(node, "allowzero") == Some(1);
        let mut shape: Vec<i64> = target
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if *d == 0 && !allow_zero {
                    input.get(i).map_or(0, |v| *v as i64)
                } else {
                    *d
                }
            })
            .collect();
        if shape
            .iter()
            .any(|d| *d < -1 || *d > qcc_dialects::ops::shape::MAX_DIM)
        {
            return self.err(format!(
                "the target shape {target:?} has an invalid dimension"
            ));
        }
        let known: i64 = shape
            .iter()
            .filter(|d| **d != -1)
            .try_fold(1i64, |a, d| a.checked_mul(*d))
            .unwrap_or(-1);
        let total: i64 = input
            .iter()
            .try_fold(1i64, |a, d| a.checked_mul(*d as i64))
            .unwrap_or(-1);
        match shape.iter().filter(|d| **d == -1).count() {
            0 => {}
            1 if known > 0 && total % known == 0 => {
                for d in &mut shape {
                    if *d == -1 {
                        *d = total / known;
                    }
                }
            }
            _ => {
                return self.err(format!(
                    "cannot resolve the target shape {target:?} for an input of shape {input:?}"
                ));
            }
        }
        self.emit(
            OpKind::Reshape,
            Attrs::new().with("shape", Attr::ints(&shape)),
            &[x],
            Self::hint(node),
        )
    }

    fn softmax(&mut self, node: &NodeProto) -> Result<Value, String> {
        let x = self.input(node, 0)?;
        let shape = self.ty(x).shape.clone();
        let rank = shape.len() as i64;
        let default = if self.opset >= 13 { -1 } else { 1 };
        let mut axis = attr_int(node, "axis").unwrap_or(default);
        if axis < 0 {
            axis += rank;
        }
        let hint = Self::hint(node);
        if self.opset >= 13 || axis == rank - 1 {
            return self.emit(
                OpKind::Softmax,
                Attrs::new().with("axis", Attr::Int(axis)),
                &[x],
                hint,
            );
        }
        // Before opset 13, Softmax normalizes over all axes from `axis` on, as one flattened axis.
        let flat = self.emit(
            OpKind::Flatten,
            Attrs::new().with("axis", Attr::Int(axis)),
            &[x],
            None,
        )?;
        let s = self.emit(
            OpKind::Softmax,
            Attrs::new().with("axis", Attr::Int(1)),
            &[flat],
            None,
        )?;
        let dims: Vec<i64> = shape.iter().map(|d| *d as i64).collect();
        self.emit(
            OpKind::Reshape,
            Attrs::new().with("shape", Attr::ints(&dims)),
            &[s],
            hint,
        )
    }

    fn pad(&mut self, node: &NodeProto) -> Result<Value, String> {
        let x = self.input(node, 0)?;
        let rank = self.ty(x).rank();
        let mode = attr_str(node, "mode").unwrap_or_else(|| "constant".into());
        if !["constant", "reflect", "edge"].contains(&mode.as_str()) {
            return self.err(format!(
                "pad mode '{mode}' is not supported (constant, reflect and edge are)"
            ));
        }
        let (pads, value) = if self.opset < 11 {
            (
                attr_ints(node, "pads").unwrap_or_default(),
                attr_float(node, "value").unwrap_or(0.0),
            )
        } else {
            let Some(p) = self.const_input(node, 1, "pads")? else {
                return self.err("the pads (input #1) are missing");
            };
            let p = ints(&p).ok_or_else(|| format!("{}: the pads must be integers", self.node))?;
            let value = match self.const_input(node, 2, "constant_value")? {
                Some(t) => scalar(&t).unwrap_or(0.0),
                None => 0.0,
            };
            let p = match self.const_input(node, 3, "axes")? {
                None => p,
                Some(axes) => {
                    let axes = ints(&axes).unwrap_or_default();
                    let mut full = vec![0i64; 2 * rank];
                    for (i, a) in axes.iter().enumerate() {
                        let a = if *a < 0 { a + rank as i64 } else { *a } as usize;
                        if a >= rank || p.len() != 2 * axes.len() {
                            return self.err(format!(
                                "'axes' {axes:?} do not fit a tensor of rank {rank}"
                            ));
                        }
                        full[a] = p[i];
                        full[a + rank] = p[i + axes.len()];
                    }
                    full
                }
            };
            (p, value)
        };
        if pads.len() != 2 * rank || pads.iter().any(|v| *v < 0) {
            return self.err(format!(
                "the pads must be {} non-negative values, got {pads:?}",
                2 * rank
            ));
        }
        let attrs = Attrs::new()
            .with("pads", Attr::ints(&pads))
            .with("value", Attr::Float(value))
            .with("mode", Attr::Str(mode));
        self.emit(OpKind::Pad, attrs, &[x], Self::hint(node))
    }
}

/// The IR type of a graph input; a symbolic first dimension becomes a batch of 1.
fn input_type(input: &super::proto::ValueInfoProto) -> Result<TensorType, String> {
    use super::proto::tensor_shape_proto::dimension::Value as Dim;
    use super::proto::type_proto::Value as Ty;
    let name = &input.name;
    let Some(Ty::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(format!("graph input '{name}' is not a tensor"));
    };
    if t.elem_type != 1 {
        return Err(format!(
            "graph input '{name}' has element type {}; qcc takes f32 inputs",
            t.elem_type
        ));
    }
    let Some(shape) = &t.shape else {
        return Err(format!(
            "graph input '{name}' has no shape; qcc needs static shapes (the batch may be symbolic)"
        ));
    };
    let mut dims = Vec::new();
    for (i, d) in shape.dim.iter().enumerate() {
        match d.value {
            Some(Dim::DimValue(v)) if v > 0 && v <= qcc_dialects::ops::shape::MAX_DIM => {
                dims.push(v as usize)
            }
            _ if i == 0 => dims.push(1),
            ref other => {
                let what = match other {
                    Some(Dim::DimParam(p)) => format!("symbolic '{p}'"),
                    _ => "unknown".into(),
                };
                return Err(format!(
                    "graph input '{name}' has a {what} dimension {i}; only the batch (dimension 0) may be symbolic"
                ));
            }
        }
    }
    if dims
        .iter()
        .try_fold(1u64, |a, d| a.checked_mul(*d as u64))
        .is_none_or(|n| n > 1 << 40)
    {
        return Err(format!(
            "graph input '{name}' of shape {dims:?} is too large"
        ));
    }
    Ok(TensorType::f32(dims))
}
