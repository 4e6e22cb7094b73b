//! Checks and conversions the grammar's actions call: element and quantized types, dense literals.

use lalrpop_util::ParseError;

use crate::ast::{DenseLit, Spanned};
use crate::attr::{Attr, DenseAttr};
use crate::diag::Span;
use crate::lexer::{Num, SyntaxError, Tok};
use crate::tensor::TensorData;
use crate::types::{ElemType, QuantParams, QuantType, Storage, TensorType, f32_scale};

type Result<T> = std::result::Result<T, ParseError<usize, Tok, SyntaxError>>;

fn error<T>(span: Span, message: impl Into<String>) -> Result<T> {
    Err(ParseError::User {
        error: SyntaxError::new(span, message),
    })
}

/// The parameters of a quantized type as written.
pub enum QuantParamsAst {
    /// `scale:zero_point`.
    PerTensor(Spanned<Num>, Spanned<Num>),
    /// `{scale[:zero_point], ...}`.
    PerAxis(Vec<(Spanned<Num>, Option<Spanned<Num>>)>),
}

pub(crate) fn num_attr(n: Num) -> Attr {
    match n {
        Num::Int(v) => Attr::Int(v),
        Num::Float(v) => Attr::Float(v),
    }
}

pub(crate) fn elem_type(name: &str, l: usize, r: usize) -> Result<ElemType> {
    match ElemType::from_name(name) {
        Some(t) => Ok(t),
        None => error(
            Span::new(l, r),
            format!(
                "unknown element type '{name}' (expected f32, i8, u8, i32, i64 or !quant.uniform<...>)"
            ),
        ),
    }
}

pub(crate) fn tensor_type(
    dims: Vec<usize>,
    elem: ElemType,
    l: usize,
    r: usize,
) -> Result<TensorType> {
    let ty = TensorType::new(dims, elem);
    if let Err(why) = ty.validate() {
        return error(Span::new(l, r), format!("bad quant type: {why}"));
    }
    if let Err(why) = ty.check_size() {
        return error(Span::new(l, r), why);
    }
    Ok(ty)
}

fn int_of(n: &Spanned<Num>, what: &str) -> Result<i64> {
    match n.node {
        Num::Int(v) => Ok(v),
        Num::Float(_) => error(n.span, format!("bad quant type: {what} must be an integer")),
    }
}

pub(crate) fn quant_type(
    dialect: &str,
    storage: Spanned<String>,
    expressed: Spanned<String>,
    axis: Option<Spanned<Num>>,
    params: QuantParamsAst,
    l: usize,
    r: usize,
) -> Result<ElemType> {
    if dialect != "quant.uniform" {
        return error(
            Span::new(l, r),
            format!("unknown dialect type '!{dialect}' (expected !quant.uniform)"),
        );
    }
    let storage_ty = match storage.node.as_str() {
        "i8" => Storage::I8,
        "u8" => Storage::U8,
        "i32" => Storage::I32,
        other => {
            return error(
                storage.span,
                format!("bad quant type: storage type '{other}' is not one of i8, u8, i32"),
            );
        }
    };
    if expressed.node != "f32" {
        return error(
            expressed.span,
            format!(
                "bad quant type: expressed type '{}' must be f32",
                expressed.node
            ),
        );
    }
    let params = match (axis, params) {
        (None, QuantParamsAst::PerTensor(scale, zp)) => QuantParams::PerTensor {
            scale: f32_scale(scale.node.as_f64()),
            zero_point: int_of(&zp, "the zero point")?,
        },
        (Some(axis), QuantParamsAst::PerAxis(list)) => {
            let axis_value = int_of(&axis, "the axis")?;
            if axis_value < 0 {
                return error(axis.span, "bad quant type: the axis must not be negative");
            }
            let mut scales = Vec::with_capacity(list.len());
            let mut zero_points = Vec::with_capacity(list.len());
            for (scale, zp) in &list {
                scales.push(f32_scale(scale.node.as_f64()));
                zero_points.push(match zp {
                    Some(zp) => int_of(zp, "a zero point")?,
                    None => 0,
                });
            }
            QuantParams::PerAxis {
                axis: axis_value as usize,
                scales,
                zero_points,
            }
        }
        (None, QuantParamsAst::PerAxis(_)) => {
            return error(
                Span::new(l, r),
                "bad quant type: per-axis parameters {...} need an axis, as in !quant.uniform<i8:f32:0, {...}>",
            );
        }
        (Some(axis), QuantParamsAst::PerTensor(..)) => {
            return error(
                axis.span,
                "bad quant type: an axis needs per-axis parameters in braces, as in {0.1, 0.2}",
            );
        }
    };
    let q = QuantType {
        storage: storage_ty,
        params,
    };
    if let Err(why) = q.validate() {
        return error(Span::new(l, r), format!("bad quant type: {why}"));
    }
    Ok(ElemType::Quant(q))
}

fn flatten(
    lit: &DenseLit,
    depth: usize,
    shape: &mut Vec<usize>,
    out: &mut Vec<DenseLit>,
) -> std::result::Result<(), String> {
    match lit {
        DenseLit::List(items) => {
            if shape.len() == depth {
                shape.push(items.len());
            } else if shape.len() < depth || shape[depth] != items.len() {
                return Err("dense literal is ragged: nested lists differ in length".into());
            }
            for item in items {
                flatten(item, depth + 1, shape, out)?;
            }
            Ok(())
        }
        scalar => {
            if shape.len() > depth {
                return Err(
                    "dense literal is ragged: a number stands where a list is expected".into(),
                );
            }
            out.push(scalar.clone());
            Ok(())
        }
    }
}

fn convert(items: &[DenseLit], elem: &ElemType) -> std::result::Result<TensorData, String> {
    fn int(lit: &DenseLit, lo: i64, hi: i64, name: &str) -> std::result::Result<i64, String> {
        match lit {
            DenseLit::Num(Num::Int(v)) if (lo..=hi).contains(v) => Ok(*v),
            DenseLit::Num(Num::Int(v)) => Err(format!("{v} does not fit in {name}")),
            DenseLit::Bool(b) => Ok(*b as i64),
            _ => Err(format!("{name} elements must be integers")),
        }
    }
    let storage = match elem {
        ElemType::Quant(q) => match q.storage {
            Storage::I8 => ElemType::I8,
            Storage::U8 => ElemType::U8,
            Storage::I32 => ElemType::I32,
        },
        other => other.clone(),
    };
    Ok(match storage {
        ElemType::F32 => TensorData::F32(
            items
                .iter()
                .map(|l| match l {
                    DenseLit::Num(n) => Ok(n.as_f64() as f32),
                    _ => Err("f32 elements must be numbers".to_string()),
                })
                .collect::<std::result::Result<_, _>>()?,
        ),
        ElemType::I8 => TensorData::I8(
            items
                .iter()
                .map(|l| int(l, -128, 127, "i8").map(|v| v as i8))
                .collect::<std::result::Result<_, _>>()?,
        ),
        ElemType::U8 => TensorData::U8(
            items
                .iter()
                .map(|l| int(l, 0, 255, "u8").map(|v| v as u8))
                .collect::<std::result::Result<_, _>>()?,
        ),
        ElemType::I32 => TensorData::I32(
            items
                .iter()
                .map(|l| int(l, i32::MIN as i64, i32::MAX as i64, "i32").map(|v| v as i32))
                .collect::<std::result::Result<_, _>>()?,
        ),
        ElemType::I64 | ElemType::Quant(_) => TensorData::I64(
            items
                .iter()
                .map(|l| int(l, i64::MIN, i64::MAX, "i64"))
                .collect::<std::result::Result<_, _>>()?,
        ),
    })
}

pub(crate) fn dense_attr(
    lit: DenseLit,
    ty: Spanned<TensorType>,
    l: usize,
    r: usize,
) -> Result<Attr> {
    let span = Span::new(l, r);
    let mut shape = Vec::new();
    let mut items = Vec::new();
    if let Err(why) = flatten(&lit, 0, &mut shape, &mut items) {
        return error(span, why);
    }
    let n = ty.node.numel();
    let items = if items.len() == 1 && shape.is_empty() {
        vec![items[0].clone(); n] // a splat: one value fills the tensor
    } else if items.len() != n || (shape != ty.node.shape && shape != [n]) {
        return error(
            span,
            format!(
                "dense literal of shape {:?} does not match {} ({} elements)",
                shape, ty.node, n
            ),
        );
    } else {
        items
    };
    match convert(&items, &ty.node.elem) {
        Ok(data) => Ok(Attr::Dense(DenseAttr { ty: ty.node, data })),
        Err(why) => error(span, format!("bad dense literal: {why}")),
    }
}
