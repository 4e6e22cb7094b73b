//! `fold-batchnorm`: folds an inference `nn.batch_norm` into the conv2d or dense that feeds it
//! (constant weights, no other reader), scaling the weights per output channel and rewriting the
//! bias, which is created when the layer had none.

use qcc_dialects::{Attr, Function, Module, NodeIndex, OpKind, Tensor, TensorData, Value};

use crate::pass::{Options, Pass, PassContext, PassInfo};
use crate::rewrite::{add_const, const_name, const_tensor, is_inline_const, remove_dead_ops};

/// Registration of `fold-batchnorm`.
pub const INFO: PassInfo = PassInfo {
    name: "fold-batchnorm",
    summary: "fold nn.batch_norm into the conv2d/dense before it (constant weights); creates a bias if needed",
    options: &[],
    requires: &[],
    create: |_: &Options| Box::new(FoldBatchNorm),
};

struct FoldBatchNorm;

fn f32s<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], String> {
    t.as_f32().ok_or_else(|| format!("{what} is not f32"))
}

/// The per-channel factor and offset, `bn(y) = y * scale + shift`, and the output distribution
/// the batch norm was trained to give, `(beta, |gamma|)` per channel.
type Affine = (Vec<f64>, Vec<f64>, (Vec<f64>, Vec<f64>));

/// The batch norm's [`Affine`].
fn affine(module: &Module, func: &Function, bn: NodeIndex) -> Result<Affine, String> {
    let ops = func.operands(bn);
    let param = |i: usize, what: &str| -> Result<Vec<f64>, String> {
        let t = const_tensor(module, func, ops[i])
            .ok_or_else(|| format!("its {what} is not a constant"))?;
        Ok(f32s(&t, what)?.iter().map(|v| *v as f64).collect())
    };
    let (gamma, beta, mean, var) = (
        param(1, "scale")?,
        param(2, "bias")?,
        param(3, "mean")?,
        param(4, "variance")?,
    );
    let eps = func
        .op(bn)
        .attr("epsilon")
        .and_then(Attr::as_float)
        .unwrap_or(1e-5);
    let mut scale = Vec::with_capacity(gamma.len());
    let mut shift = Vec::with_capacity(gamma.len());
    for c in 0..gamma.len() {
        let s = gamma[c] / (var[c] + eps).sqrt();
        if !s.is_finite() {
            return Err(format!(
                "channel {c} has variance {} + epsilon {eps}, which gives no finite scale",
                var[c]
            ));
        }
        scale.push(s);
        shift.push(beta[c] - mean[c] * s);
    }
    // The parameters are f32: recorded as the f64 of their shortest f32 text, so they print
    // as written (0.1, not 0.10000000149011612).
    let short = |v: f64| (v as f32).to_string().parse::<f64>().unwrap_or(v);
    let mean = beta.iter().map(|b| short(*b)).collect();
    let std = gamma.iter().map(|g| short(g.abs())).collect();
    Ok((scale, shift, (mean, std)))
}

/// Folds `bn` into its producer, or says why it cannot.
fn fold(module: &mut Module, func: &mut Function, bn: NodeIndex) -> Result<(), String> {
    let input = func.operands(bn)[0];
    let Some(layer) = func.try_op(input.node) else {
        return Err("its input is a function argument".into());
    };
    let kind = layer.name.clone();
    if !layer.is(OpKind::Conv2d) && !layer.is(OpKind::Dense) {
        return Err(format!(
            "its input comes from '{kind}', not nn.conv2d or nn.dense"
        ));
    }
    if func.use_count(input) != 1 {
        return Err(format!("the {kind} output is also read elsewhere"));
    }
    let layer_ops = func.operands(input.node);
    let w = const_tensor(module, func, layer_ops[1])
        .ok_or_else(|| format!("the {kind} weight is not a constant"))?;
    let w_data = f32s(&w, "the weight")?;
    let channels = w.shape[0];
    let bias = match layer_ops.get(2) {
        Some(b) => {
            let t = const_tensor(module, func, *b)
                .ok_or_else(|| format!("the {kind} bias is not a constant"))?;
            f32s(&t, "the bias")?.iter().map(|v| *v as f64).collect()
        }
        None => vec![0.0; channels],
    };
    let (scale, shift, (channel_mean, channel_std)) = affine(module, func, bn)?;
    if scale.len() != channels {
        return Err(format!(
            "it has {} channels, the {kind} has {channels}",
            scale.len()
        ));
    }
    let per_channel = w_data.len() / channels;
    let folded_w: Vec<f32> = w_data
        .iter()
        .enumerate()
        .map(|(i, v)| (*v as f64 * scale[i / per_channel]) as f32)
        .collect();
    let folded_b: Vec<f32> = (0..channels)
        .map(|c| (bias[c] * scale[c] + shift[c]) as f32)
        .collect();

    let inline = is_inline_const(func, layer_ops[1]);
    let w_name = const_name(func, layer_ops[1]).unwrap_or_else(|| "weight".into());
    let b_name = match layer_ops.get(2).and_then(|b| const_name(func, *b)) {
        Some(n) => format!("{n}.folded"),
        None => match w_name.strip_suffix(".weight") {
            Some(stem) => format!("{stem}.bias.folded"),
            None => format!("{w_name}.bias.folded"),
        },
    };
    let w_ty = func.value_type(layer_ops[1]).clone();
    let b_ty = qcc_dialects::TensorType::f32(vec![channels]);
    let new_w = add_const(
        module,
        func,
        &format!("{w_name}.folded"),
        Tensor::new(w.shape.clone(), TensorData::F32(folded_w)).map_err(|e| e.to_string())?,
        w_ty,
        inline,
    );
    let new_b = add_const(
        module,
        func,
        &b_name,
        Tensor::new(vec![channels], TensorData::F32(folded_b)).map_err(|e| e.to_string())?,
        b_ty,
        inline,
    );
    // Printed names follow the originals: %w -> %w_folded; a created bias is named after the layer.
    let hint = |v: Option<Value>| {
        v.and_then(|v| func.op(v.node).result_names[0].clone())
            .filter(|h| !h.bytes().all(|b| b.is_ascii_digit()))
    };
    let w_hint = hint(Some(layer_ops[1])).map(|h| format!("{h}_folded"));
    let b_hint = match layer_ops.get(2) {
        Some(b) => hint(Some(*b)).map(|h| format!("{h}_folded")),
        None => hint(Some(input)).map(|h| format!("{h}_bias")),
    };
    func.op_mut(new_w.node).result_names[0] = w_hint;
    func.op_mut(new_b.node).result_names[0] = b_hint;
    func.set_operands(input.node, &[layer_ops[0], new_w, new_b]);
    let attrs = &mut func.op_mut(input.node).attrs;
    attrs.set("channel_mean", Attr::floats(&channel_mean));
    attrs.set("channel_std", Attr::floats(&channel_std));
    func.replace_all_uses(Value::of(bn), input);
    func.remove_op(bn);
    Ok(())
}

impl Pass for FoldBatchNorm {
    fn name(&self) -> &'static str {
        INFO.name
    }

    fn run(&self, module: &mut Module, ctx: &mut PassContext) -> Result<(), String> {
        for i in 0..module.functions.len() {
            let mut func = std::mem::take(&mut module.functions[i]);
            let mut folded = 0;
            for bn in func.op_nodes() {
                if !func.is_op(bn, OpKind::BatchNorm) {
                    continue;
                }
                match fold(module, &mut func, bn) {
                    Ok(()) => folded += 1,
                    Err(why) => ctx.note(
                        INFO.name,
                        format!("@{}: kept a batch_norm: {why}", func.name),
                    ),
                }
            }
            remove_dead_ops(&mut func);
            if folded > 0 {
                ctx.note(
                    INFO.name,
                    format!("@{}: folded {folded} batch_norm(s)", func.name),
                );
            }
            module.functions[i] = func;
        }
        Ok(())
    }
}
