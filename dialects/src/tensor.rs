//! Tensor values: a shape and a typed, row-major buffer. Used for weights and by the runtime.

use crate::types::{ElemType, TensorType};

/// A typed, row-major buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// Signed bytes.
    I8(Vec<i8>),
    /// Unsigned bytes.
    U8(Vec<u8>),
    /// Signed 32-bit integers.
    I32(Vec<i32>),
    /// Signed 64-bit integers.
    I64(Vec<i64>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of the element type (`f32`, `i8`, ...).
    pub fn dtype_name(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "f32",
            TensorData::I8(_) => "i8",
            TensorData::U8(_) => "u8",
            TensorData::I32(_) => "i32",
            TensorData::I64(_) => "i64",
        }
    }

    /// Element `i` as an f64 (exact for every stored type but large i64).
    pub fn get_f64(&self, i: usize) -> f64 {
        match self {
            TensorData::F32(v) => v[i] as f64,
            TensorData::I8(v) => v[i] as f64,
            TensorData::U8(v) => v[i] as f64,
            TensorData::I32(v) => v[i] as f64,
            TensorData::I64(v) => v[i] as f64,
        }
    }

    /// Whether this buffer can hold the elements of `elem` (a quantized type uses its storage type).
    pub fn matches(&self, elem: &ElemType) -> bool {
        use crate::types::Storage;
        matches!(
            (self, elem),
            (TensorData::F32(_), ElemType::F32)
                | (TensorData::I8(_), ElemType::I8)
                | (TensorData::U8(_), ElemType::U8)
                | (TensorData::I32(_), ElemType::I32)
                | (TensorData::I64(_), ElemType::I64)
        ) || match (self, elem) {
            (data, ElemType::Quant(q)) => matches!(
                (data, q.storage),
                (TensorData::I8(_), Storage::I8)
                    | (TensorData::U8(_), Storage::U8)
                    | (TensorData::I32(_), Storage::I32)
            ),
            _ => false,
        }
    }

    /// A buffer of `n` zeros whose element type stores `elem`.
    pub fn zeros(elem: &ElemType, n: usize) -> TensorData {
        use crate::types::Storage;
        match elem {
            ElemType::F32 => TensorData::F32(vec![0.0; n]),
            ElemType::I8
            | ElemType::Quant(crate::types::QuantType {
                storage: Storage::I8,
                ..
            }) => TensorData::I8(vec![0; n]),
            ElemType::U8
            | ElemType::Quant(crate::types::QuantType {
                storage: Storage::U8,
                ..
            }) => TensorData::U8(vec![0; n]),
            ElemType::I32
            | ElemType::Quant(crate::types::QuantType {
                storage: Storage::I32,
                ..
            }) => TensorData::I32(vec![0; n]),
            ElemType::I64 => TensorData::I64(vec![0; n]),
        }
    }
}

/// A tensor: shape and data. The element type of a quantized tensor lives in its IR type.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major elements.
    pub data: TensorData,
}

impl Tensor {
    /// A tensor from a shape and data; the element count must match.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, String> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(format!(
                "shape {:?} needs {n} elements, the data has {}",
                shape,
                data.len()
            ));
        }
        Ok(Tensor { shape, data })
    }

    /// A 1-D tensor holding `data`.
    pub fn vector(data: TensorData) -> Tensor {
        Tensor {
            shape: vec![data.len()],
            data,
        }
    }

    /// An f32 tensor; panics when the element count does not match the shape (a programming error).
    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Tensor {
        Tensor::new(shape, TensorData::F32(data)).expect("element count matches shape")
    }

    /// A copy of items `range` of the outermost axis (images of a batch).
    pub fn items(&self, range: std::ops::Range<usize>) -> Tensor {
        let per: usize = self.shape.iter().skip(1).product();
        let (lo, hi) = (range.start * per, range.end * per);
        let data = match &self.data {
            TensorData::F32(v) => TensorData::F32(v[lo..hi].to_vec()),
            TensorData::I8(v) => TensorData::I8(v[lo..hi].to_vec()),
            TensorData::U8(v) => TensorData::U8(v[lo..hi].to_vec()),
            TensorData::I32(v) => TensorData::I32(v[lo..hi].to_vec()),
            TensorData::I64(v) => TensorData::I64(v[lo..hi].to_vec()),
        };
        let mut shape = self.shape.clone();
        if let Some(n) = shape.first_mut() {
            *n = range.len();
        }
        Tensor { shape, data }
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// The f32 elements, if this is an f32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// The f32 data, writable, if the tensor holds f32.
    pub fn as_f32_mut(&mut self) -> Option<&mut [f32]> {
        match &mut self.data {
            TensorData::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Whether this tensor fits a declared type (same shape, compatible element storage).
    pub fn fits(&self, ty: &TensorType) -> bool {
        self.shape == ty.shape && self.data.matches(&ty.elem)
    }
}
