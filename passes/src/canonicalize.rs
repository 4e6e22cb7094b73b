//! `canonicalize`: removes dead ops and folds ops that do nothing or compose into one:
//! identity reshapes/flattens/transposes/pads/concats, reshape-of-reshape, and nested ReLU/clip.

use qcc_dialects::ops::attrs::{self, ClipBounds};
use qcc_dialects::{Attr, Attrs, Function, Module, NodeIndex, OpKind, Operation, Value};

use crate::pass::{Options, Pass, PassContext, PassInfo};
use crate::rewrite::remove_dead_ops;

/// Registration of `canonicalize`.
pub const INFO: PassInfo = PassInfo {
    name: "canonicalize",
    summary: "remove dead ops; fold identity reshape/flatten/transpose/pad/concat, reshape chains, nested relu/clip",
    options: &[],
    requires: &[],
    create: |_: &Options| Box::new(Canonicalize),
};

struct Canonicalize;

fn is_identity(func: &Function, node: NodeIndex) -> bool {
    let op = func.op(node);
    let input = func.operands(node);
    let rank = || func.value_type(input[0]).rank();
    match op.kind() {
        Some(OpKind::Reshape | OpKind::Flatten) => {
            func.value_type(input[0]).shape == op.results[0].shape
        }
        Some(OpKind::Transpose) => {
            attrs::perm(op, rank()).is_ok_and(|p| p.iter().enumerate().all(|(i, v)| i == *v))
        }
        Some(OpKind::Pad) => {
            attrs::PadAttrs::of(op, rank()).is_ok_and(|p| p.pads.iter().all(|v| *v == 0))
        }
        Some(OpKind::Concat) => input.len() == 1,
        _ => false,
    }
}

fn clip_range(op: &Operation) -> Option<ClipBounds> {
    match op.kind()? {
        OpKind::Relu => Some(ClipBounds {
            lo: 0.0,
            hi: f64::INFINITY,
            channel_hi: None,
        }),
        OpKind::Clip => attrs::clip_bounds(op).ok(),
        _ => None,
    }
}

/// The clip that `inner` then `outer` make together: the intersection of their ranges.
fn intersect(inner: &ClipBounds, outer: &ClipBounds) -> ClipBounds {
    let lo = inner.lo.max(outer.lo);
    let hi = inner.hi.min(outer.hi).max(lo);
    let channels = inner
        .channel_hi
        .as_ref()
        .or(outer.channel_hi.as_ref())
        .map(Vec::len);
    let channel_hi = channels.map(|n| {
        (0..n)
            .map(|c| inner.hi_of(c).min(outer.hi_of(c)).max(lo))
            .collect()
    });
    ClipBounds { lo, hi, channel_hi }
}

/// Tries one rewrite rooted at `node`; returns whether the graph changed.
fn rewrite(func: &mut Function, node: NodeIndex) -> bool {
    let out = Value::of(node);
    if is_identity(func, node) {
        let input = func.operands(node)[0];
        func.replace_all_uses(out, input);
        func.remove_op(node);
        return true;
    }
    let op = func.op(node).clone();
    let input = func.operands(node).first().copied();
    let Some(input) = input else { return false };
    let Some(producer) = func.try_op(input.node).cloned() else {
        return false;
    };
    let reshaping = |op: &Operation| matches!(op.kind(), Some(OpKind::Reshape | OpKind::Flatten));
    if reshaping(&op) && reshaping(&producer) {
        // reshape(reshape(x)) is one reshape of x to the outer shape.
        let source = func.operands(input.node)[0];
        let shape: Vec<i64> = op.results[0].shape.iter().map(|d| *d as i64).collect();
        let mut merged = Operation::of(
            OpKind::Reshape,
            Attrs::new().with("shape", Attr::ints(&shape)),
            op.results[0].clone(),
        );
        merged.result_names = op.result_names.clone();
        let new = func.add_op(merged, &[source]);
        func.replace_all_uses(out, Value::of(new));
        func.remove_op(node);
        return true;
    }
    if let (Some(inner), Some(outer)) = (clip_range(&producer), clip_range(&op)) {
        // clip(clip(x)) clips once to the intersection of the ranges.
        let source = func.operands(input.node)[0];
        let ClipBounds { lo, hi, channel_hi } = intersect(&inner, &outer);
        let merged = if lo == 0.0 && hi == f64::INFINITY && channel_hi.is_none() {
            Operation::of(OpKind::Relu, Attrs::new(), op.results[0].clone())
        } else {
            let mut attrs = Attrs::new();
            if lo > f64::NEG_INFINITY {
                attrs.set("min", Attr::Float(lo));
            }
            if hi < f64::INFINITY {
                attrs.set("max", Attr::Float(hi));
            }
            if let Some(h) = channel_hi {
                attrs.set("channel_max", Attr::floats(&h));
            }
            Operation::of(OpKind::Clip, attrs, op.results[0].clone())
        };
        let mut merged = merged;
        merged.result_names = op.result_names.clone();
        let new = func.add_op(merged, &[source]);
        func.replace_all_uses(out, Value::of(new));
        func.remove_op(node);
        return true;
    }
    false
}

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        INFO.name
    }

    fn run(&self, module: &mut Module, ctx: &mut PassContext) -> Result<(), String> {
        for func in &mut module.functions {
            let mut folded = 0;
            loop {
                let changed = func.schedule().into_iter().find(|&n| rewrite(func, n));
                if changed.is_none() {
                    break;
                }
                folded += 1;
            }
            let removed = remove_dead_ops(func);
            if ctx.verbose {
                ctx.note(
                    INFO.name,
                    format!(
                        "@{}: {folded} fold(s), {removed} dead op(s) removed",
                        func.name
                    ),
                );
            }
        }
        Ok(())
    }
}
