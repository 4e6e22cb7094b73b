//! Tensor types: a shape and an element type, which may be a quantized type.

use std::fmt;

/// Storage type of a quantized value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    /// Signed 8-bit.
    I8,
    /// Unsigned 8-bit.
    U8,
    /// Signed 32-bit (biases).
    I32,
}

impl Storage {
    /// The textual name (`i8`, `u8`, `i32`).
    pub fn name(self) -> &'static str {
        match self {
            Storage::I8 => "i8",
            Storage::U8 => "u8",
            Storage::I32 => "i32",
        }
    }

    /// Smallest and largest representable value.
    pub fn range(self) -> (i64, i64) {
        match self {
            Storage::I8 => (-128, 127),
            Storage::U8 => (0, 255),
            Storage::I32 => (i32::MIN as i64, i32::MAX as i64),
        }
    }
}

/// Quantization parameters: one (scale, zero point) for the tensor or one per slice along an axis.
#[derive(Clone, Debug, PartialEq)]
pub enum QuantParams {
    /// One scale and zero point for the whole tensor.
    PerTensor { scale: f64, zero_point: i64 },
    /// One scale and zero point per index of `axis`.
    PerAxis {
        axis: usize,
        scales: Vec<f64>,
        zero_points: Vec<i64>,
    },
}

/// A scale as quantized types hold it: the nearest f32 (the element type says `f32`, and every
/// deployment format, ONNX's `QuantizeLinear` included, stores f32 scales, so export and import
/// keep a module's scales exactly). The parser rounds every scale it reads this way.
pub fn f32_scale(s: f64) -> f64 {
    s as f32 as f64
}

/// How a scale is written: as the shortest f32 text when it is an f32 (which reads back to the
/// same scale), else in full.
fn scale_text(s: f64) -> String {
    if f32_scale(s) == s {
        format!("{:?}", s as f32)
    } else {
        format!("{s:?}")
    }
}

/// A uniform quantized element type: `real = scale * (stored - zero_point)`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantType {
    /// How the integer is stored.
    pub storage: Storage,
    /// Scales and zero points.
    pub params: QuantParams,
}

impl QuantType {
    /// Checks that the parameters are usable: positive finite scales, zero points in range.
    pub fn validate(&self) -> Result<(), String> {
        let (lo, hi) = self.storage.range();
        let check = |scale: f64, zp: i64| -> Result<(), String> {
            if !(scale.is_finite() && scale > 0.0) {
                return Err(format!(
                    "quantization scale must be positive and finite, got {}",
                    scale_text(scale)
                ));
            }
            if zp < lo || zp > hi {
                return Err(format!(
                    "zero point {zp} is outside the {} range [{lo}, {hi}]",
                    self.storage.name()
                ));
            }
            Ok(())
        };
        match &self.params {
            QuantParams::PerTensor { scale, zero_point } => check(*scale, *zero_point),
            QuantParams::PerAxis {
                scales,
                zero_points,
                ..
            } => {
                if scales.is_empty() {
                    return Err("per-axis quantization needs at least one scale".into());
                }
                if scales.len() != zero_points.len() {
                    return Err("per-axis quantization needs one zero point per scale".into());
                }
                scales
                    .iter()
                    .zip(zero_points)
                    .try_for_each(|(s, z)| check(*s, *z))
            }
        }
    }
}

/// The element type of a tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum ElemType {
    /// 32-bit float.
    F32,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// A quantized integer standing for an f32.
    Quant(QuantType),
}

impl ElemType {
    /// Parses a plain (non-quantized) element type name.
    pub fn from_name(name: &str) -> Option<ElemType> {
        Some(match name {
            "f32" => ElemType::F32,
            "i8" => ElemType::I8,
            "u8" => ElemType::U8,
            "i32" => ElemType::I32,
            "i64" => ElemType::I64,
            _ => return None,
        })
    }

    /// Bytes one element takes in memory (a quantized element: its storage).
    pub fn size_bytes(&self) -> usize {
        match self {
            ElemType::F32 | ElemType::I32 => 4,
            ElemType::I8 | ElemType::U8 => 1,
            ElemType::I64 => 8,
            ElemType::Quant(q) => match q.storage {
                Storage::I8 | Storage::U8 => 1,
                Storage::I32 => 4,
            },
        }
    }

    /// The quantized type, if this is one.
    pub fn quant(&self) -> Option<&QuantType> {
        match self {
            ElemType::Quant(q) => Some(q),
            _ => None,
        }
    }
}

/// The most elements one tensor may hold (2^31: 8 GiB of f32). Types above it are errors in the
/// parser and the verifier, before anything is allocated.
pub const MAX_ELEMENTS: usize = 1 << 31;

/// A ranked tensor type with static dimensions.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorType {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Element type.
    pub elem: ElemType,
}

impl TensorType {
    /// A tensor type from a shape and element type.
    pub fn new(shape: Vec<usize>, elem: ElemType) -> TensorType {
        TensorType { shape, elem }
    }

    /// An f32 tensor type.
    pub fn f32(shape: Vec<usize>) -> TensorType {
        TensorType::new(shape, ElemType::F32)
    }

    /// Number of elements (saturating: types from text or ONNX are checked to stay far below).
    pub fn numel(&self) -> usize {
        self.shape.iter().fold(1usize, |a, d| a.saturating_mul(*d))
    }

    /// Checks that the element count stays within [`MAX_ELEMENTS`], so that no value or
    /// constant of this type can ask for an unbounded allocation.
    pub fn check_size(&self) -> Result<(), String> {
        match self
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        {
            Some(n) if n <= MAX_ELEMENTS => Ok(()),
            Some(n) => Err(format!(
                "{self} has {n} elements, more than the {MAX_ELEMENTS} a tensor may hold"
            )),
            None => Err(format!(
                "{self} has more elements than a tensor may hold ({MAX_ELEMENTS})"
            )),
        }
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The same element type with another shape.
    pub fn with_shape(&self, shape: Vec<usize>) -> TensorType {
        TensorType::new(shape, self.elem.clone())
    }

    /// Checks a per-axis quantized type against the shape (axis in range, one scale per index).
    pub fn validate(&self) -> Result<(), String> {
        if let ElemType::Quant(q) = &self.elem {
            q.validate()?;
            if let QuantParams::PerAxis { axis, scales, .. } = &q.params {
                let Some(&dim) = self.shape.get(*axis) else {
                    return Err(format!(
                        "quantization axis {axis} is out of range for a tensor of rank {}",
                        self.rank()
                    ));
                };
                if dim != scales.len() {
                    return Err(format!(
                        "per-axis quantization along axis {axis} needs {dim} scales, got {}",
                        scales.len()
                    ));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.params {
            QuantParams::PerTensor { scale, zero_point } => {
                write!(
                    f,
                    "!quant.uniform<{}:f32, {}:{zero_point}>",
                    self.storage,
                    scale_text(*scale)
                )
            }
            QuantParams::PerAxis {
                axis,
                scales,
                zero_points,
            } => {
                write!(f, "!quant.uniform<{}:f32:{axis}, {{", self.storage)?;
                for (i, (s, z)) in scales.iter().zip(zero_points).enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    if *z == 0 {
                        write!(f, "{}", scale_text(*s))?;
                    } else {
                        write!(f, "{}:{z}", scale_text(*s))?;
                    }
                }
                f.write_str("}>")
            }
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElemType::F32 => f.write_str("f32"),
            ElemType::I8 => f.write_str("i8"),
            ElemType::U8 => f.write_str("u8"),
            ElemType::I32 => f.write_str("i32"),
            ElemType::I64 => f.write_str("i64"),
            ElemType::Quant(q) => q.fmt(f),
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tensor<")?;
        for d in &self.shape {
            write!(f, "{d}x")?;
        }
        write!(f, "{}>", self.elem)
    }
}
