//! The Cranelift engine: prepares a function by generating (or taking from the cache) a kernel
//! for every op that has one and runs the rest on the reference interpreter's kernels, warning
//! once per process for each op kind that has none.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use qcc_dialects::ops::attrs::Conv2dAttrs;
use qcc_dialects::{Function, Module, Node, NodeIndex, OpKind, Storage, TensorType};
use qcc_runtime::interp::layer_requant;
use qcc_runtime::{Engine, Interpreter, OpKernel, Prepared};

use crate::elementwise::{Dequantize, QuantAdd, QuantConcat, Quantize};
use crate::float::{FloatDense, FloatDepthwise};
use crate::layers::{QuantConv, QuantDense};
use crate::reduce::QuantGlobalAvgPool;
use crate::windows::{FloatPool, QuantPool};

/// The engine of generated code (`--engine cranelift`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Native;

/// Op kinds already warned about in this process.
static WARNED: Mutex<Option<HashSet<OpKind>>> = Mutex::new(None);

/// Ops that move no data worth a kernel or are not run at all.
fn needs_no_kernel(kind: OpKind) -> bool {
    matches!(kind, OpKind::Const | OpKind::Flatten | OpKind::Reshape)
}

/// Whether `t` holds f32 values.
fn is_f32(t: &TensorType) -> bool {
    matches!(t.elem, qcc_dialects::ElemType::F32)
}

/// Whether the integer kernels take inputs of type `t`: 8-bit storage, so `x - Z_x` fits i16.
fn eight_bit(t: &TensorType) -> bool {
    t.elem
        .quant()
        .is_some_and(|q| matches!(q.storage, Storage::U8 | Storage::I8))
}

/// The generated kernel of `node`, `None` when its op has none (or not for these types).
fn kernel_for(
    module: &Module,
    func: &Function,
    node: NodeIndex,
) -> Result<Option<Box<dyn OpKernel>>, String> {
    let op = func.op(node);
    let Some(kind) = op.kind() else {
        return Ok(None);
    };
    let operands = func.operands(node);
    let types: Vec<&TensorType> = operands.iter().map(|v| func.value_type(*v)).collect();
    match kind {
        OpKind::QuantConv2d | OpKind::QuantDense => {}
        OpKind::QuantAdd => {
            return Ok(QuantAdd::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::QuantGlobalAvgPool => {
            return Ok(
                QuantGlobalAvgPool::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>)
            );
        }
        OpKind::QuantMaxPool2d | OpKind::QuantAvgPool2d => {
            return Ok(QuantPool::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::QuantConcat => {
            return Ok(QuantConcat::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::Quantize => {
            return Ok(Quantize::new(op)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::Dequantize => {
            return Ok(Dequantize::new(types[0])?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::Conv2d if is_f32(types[0]) && types.get(1).is_some_and(|t| is_f32(t)) => {
            return Ok(FloatDepthwise::new(op, &types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::MaxPool2d | OpKind::AvgPool2d => {
            return Ok(FloatPool::new(op, types[0])?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }
        OpKind::Dense if types.len() >= 2 && types.iter().all(|t| is_f32(t)) => {
            return Ok(FloatDense::new(&types)?.map(|k| Box::new(k) as Box<dyn OpKernel>));
        }

        _ => return Ok(None),
    }
    let Some(weight) = operands
        .get(1)
        .and_then(|w| func.try_op(w.node))
        .filter(|w| w.is(OpKind::Const))
        .and_then(|w| module.const_value(w))
    else {
        return Ok(None); // weights computed at run time: the reference kernel handles them
    };
    if !eight_bit(types[0]) || !matches!(weight.data, qcc_dialects::TensorData::I8(_)) {
        return Ok(None);
    }
    let requant = layer_requant(op, &types)?;
    let out = &op.results[0];
    Ok(Some(if kind == OpKind::QuantConv2d {
        if weight.shape.len() != 4 {
            return Ok(None);
        }
        Box::new(QuantConv::new(
            Conv2dAttrs::of(op)?,
            weight,
            types[0],
            out,
            requant,
        )?)
    } else {
        if weight.shape.len() != 2 {
            return Ok(None);
        }
        Box::new(QuantDense::new(weight, types[0], out, requant)?)
    }))
}

impl Engine for Native {
    fn name(&self) -> &'static str {
        "cranelift"
    }

    fn prepare<'m>(
        &self,
        module: &'m Module,
        function: &str,
    ) -> Result<Box<dyn Prepared + 'm>, String> {
        let func = module
            .function(function)
            .ok_or_else(|| format!("the module has no function @{function}"))?;
        let mut kernels = HashMap::new();
        let mut missing = BTreeSet::new();
        for node in func.graph.node_indices() {
            let Node::Op(op) = &func.graph[node] else {
                continue;
            };
            let Some(kind) = op.kind() else { continue };
            match kernel_for(module, func, node).map_err(|e| format!("{}: {e}", op.name))? {
                Some(k) => {
                    kernels.insert(node, k);
                }
                None if needs_no_kernel(kind) => {}
                None => {
                    missing.insert(kind);
                }
            }
        }
        warn_missing(&missing);
        Ok(Box::new(Interpreter::with_kernels(
            module, function, kernels,
        )?))
    }
}

/// Warns (once per process and op kind) about ops that run on their reference kernel.
fn warn_missing(missing: &BTreeSet<OpKind>) {
    let mut guard = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    let warned = guard.get_or_insert_with(HashSet::new);
    let new: Vec<&str> = missing
        .iter()
        .filter(|k| warned.insert(**k))
        .map(|k| k.name())
        .collect();
    if !new.is_empty() {
        eprintln!(
            "warning: no generated kernel for {}; {} on the reference interpreter",
            new.join(", "),
            if new.len() == 1 {
                "it runs"
            } else {
                "they run"
            }
        );
    }
}
