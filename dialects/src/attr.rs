//! Op and module attributes.

use std::fmt;

use crate::tensor::{Tensor, TensorData};
use crate::types::TensorType;

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// A list of attributes.
    List(Vec<Attr>),
    /// An inline constant tensor: `dense<...> : tensor<...>`.
    Dense(DenseAttr),
}

/// An inline tensor constant with its declared type.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseAttr {
    /// The declared type (its storage matches `data`).
    pub ty: TensorType,
    /// The elements, row-major.
    pub data: TensorData,
}

impl DenseAttr {
    /// The constant as a tensor.
    pub fn to_tensor(&self) -> Tensor {
        Tensor {
            shape: self.ty.shape.clone(),
            data: self.data.clone(),
        }
    }
}

impl Attr {
    /// The kind of attribute, as used in error messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Attr::Int(_) => "integer",
            Attr::Float(_) => "float",
            Attr::Bool(_) => "bool",
            Attr::Str(_) => "string",
            Attr::List(_) => "list",
            Attr::Dense(_) => "dense tensor",
        }
    }

    /// The integer value.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Attr::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The value as a float (integers convert).
    pub fn as_float(&self) -> Option<f64> {
        match self {
            Attr::Float(v) => Some(*v),
            Attr::Int(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// The string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Attr::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The boolean value.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Attr::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A list of integers.
    pub fn as_ints(&self) -> Option<Vec<i64>> {
        match self {
            Attr::List(items) => items.iter().map(Attr::as_int).collect(),
            _ => None,
        }
    }

    /// A list of floats (integers convert).
    pub fn as_floats(&self) -> Option<Vec<f64>> {
        match self {
            Attr::List(items) => items.iter().map(Attr::as_float).collect(),
            _ => None,
        }
    }

    /// A list of integers as an attribute.
    pub fn ints(values: &[i64]) -> Attr {
        Attr::List(values.iter().map(|v| Attr::Int(*v)).collect())
    }

    /// A list of floats as an attribute.
    pub fn floats(values: &[f64]) -> Attr {
        Attr::List(values.iter().map(|v| Attr::Float(*v)).collect())
    }
}

/// An ordered attribute dictionary (the order is kept for printing).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attrs(Vec<(String, Attr)>);

impl Attrs {
    /// An empty dictionary.
    pub fn new() -> Attrs {
        Attrs(Vec::new())
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&Attr> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Sets `name`, replacing an existing value in place or appending.
    pub fn set(&mut self, name: &str, value: Attr) {
        match self.0.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name.to_string(), value)),
        }
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<Attr> {
        let i = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.remove(i).1)
    }

    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Attr)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// True when there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Builder form of [`Attrs::set`].
    pub fn with(mut self, name: &str, value: Attr) -> Attrs {
        self.set(name, value);
        self
    }
}

/// Writes a string literal with escapes.
pub(crate) fn write_string(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

fn write_elements(
    f: &mut fmt::Formatter<'_>,
    data: &TensorData,
    shape: &[usize],
    offset: usize,
) -> fmt::Result {
    if shape.is_empty() {
        return match data {
            TensorData::F32(v) => write!(f, "{:?}", v[offset]),
            TensorData::I8(v) => write!(f, "{}", v[offset]),
            TensorData::U8(v) => write!(f, "{}", v[offset]),
            TensorData::I32(v) => write!(f, "{}", v[offset]),
            TensorData::I64(v) => write!(f, "{}", v[offset]),
        };
    }
    let stride: usize = shape[1..].iter().product();
    f.write_str("[")?;
    for i in 0..shape[0] {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_elements(f, data, &shape[1..], offset + i * stride)?;
    }
    f.write_str("]")
}

impl fmt::Display for DenseAttr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dense<")?;
        let splat = self.data.len() > 1
            && (1..self.data.len())
                .all(|i| self.data.get_f64(i).to_bits() == self.data.get_f64(0).to_bits());
        if splat {
            write_elements(f, &self.data, &[], 0)?;
        } else {
            write_elements(f, &self.data, &self.ty.shape, 0)?;
        }
        write!(f, "> : {}", self.ty)
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Int(v) => write!(f, "{v}"),
            Attr::Float(v) => write!(f, "{v:?}"),
            Attr::Bool(v) => write!(f, "{v}"),
            Attr::Str(s) => write_string(f, s),
            Attr::List(items) => {
                f.write_str("[")?;
                for (i, a) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{a}")?;
                }
                f.write_str("]")
            }
            Attr::Dense(d) => d.fmt(f),
        }
    }
}

impl fmt::Display for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let bare = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if bare {
                f.write_str(k)?;
            } else {
                write_string(f, k)?;
            }
            write!(f, " = {v}")?;
        }
        f.write_str("}")
    }
}
