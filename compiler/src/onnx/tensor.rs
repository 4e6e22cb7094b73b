//! ONNX `TensorProto` to qcc tensors.

use qcc_dialects::{Tensor, TensorData};

use super::proto::TensorProto;
use super::proto::tensor_proto::DataType;

fn le<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| f(<[u8; N]>::try_from(c).unwrap_or([0; N])))
        .collect()
}

/// Decodes an ONNX tensor (raw or typed fields). Floats come out as f32, integers keep their
/// width where qcc has one (i8, u8, i32, i64); bools become u8.
pub fn decode(t: &TensorProto) -> Result<Tensor, String> {
    let name = if t.name.is_empty() {
        "<unnamed>"
    } else {
        &t.name
    };
    if t.data_location == 1 {
        return Err(format!(
            "tensor '{name}' keeps its data in an external file; qcc reads ONNX files with embedded weights only"
        ));
    }
    let shape = t
        .dims
        .iter()
        .map(|d| {
            usize::try_from(*d).map_err(|_| format!("tensor '{name}' has a negative dimension {d}"))
        })
        .collect::<Result<Vec<usize>, String>>()?;
    let n = shape
        .iter()
        .try_fold(1usize, |a, d| a.checked_mul(*d))
        .filter(|n| *n <= qcc_dialects::MAX_ELEMENTS)
        .ok_or_else(|| {
            format!(
                "tensor '{name}' of shape {shape:?} has more than the {} elements a tensor may hold",
                qcc_dialects::MAX_ELEMENTS
            )
        })?;
    let raw = &t.raw_data;
    let dtype = DataType::try_from(t.data_type)
        .map_err(|_| format!("tensor '{name}' has unknown data type {}", t.data_type))?;
    let expect = |bytes: usize| -> Result<(), String> {
        if raw.len() != n * bytes {
            return Err(format!(
                "tensor '{name}' has {} bytes of data, its shape {:?} needs {}",
                raw.len(),
                shape,
                n * bytes
            ));
        }
        Ok(())
    };
    let data = match dtype {
        DataType::Float if !raw.is_empty() => {
            expect(4)?;
            TensorData::F32(le(raw, f32::from_le_bytes))
        }
        DataType::Float => TensorData::F32(t.float_data.clone()),
        DataType::Double if !raw.is_empty() => {
            expect(8)?;
            TensorData::F32(
                le(raw, f64::from_le_bytes)
                    .into_iter()
                    .map(|v| v as f32)
                    .collect(),
            )
        }
        DataType::Double => TensorData::F32(t.double_data.iter().map(|v| *v as f32).collect()),
        DataType::Int64 if !raw.is_empty() => {
            expect(8)?;
            TensorData::I64(le(raw, i64::from_le_bytes))
        }
        DataType::Int64 => TensorData::I64(t.int64_data.clone()),
        DataType::Int32 if !raw.is_empty() => {
            expect(4)?;
            TensorData::I32(le(raw, i32::from_le_bytes))
        }
        DataType::Int32 => TensorData::I32(t.int32_data.clone()),
        DataType::Int8 if !raw.is_empty() => {
            expect(1)?;
            TensorData::I8(raw.iter().map(|b| *b as i8).collect())
        }
        DataType::Int8 => TensorData::I8(t.int32_data.iter().map(|v| *v as i8).collect()),
        DataType::Uint8 | DataType::Bool if !raw.is_empty() => {
            expect(1)?;
            TensorData::U8(raw.to_vec())
        }
        DataType::Uint8 | DataType::Bool => {
            TensorData::U8(t.int32_data.iter().map(|v| *v as u8).collect())
        }
        other => {
            return Err(format!(
                "tensor '{name}' has data type {}, which qcc does not read",
                other.as_str_name()
            ));
        }
    };
    Tensor::new(shape, data).map_err(|e| format!("tensor '{name}': {e}"))
}

/// The values of an integer tensor (i64, i32, i8, u8) as i64.
pub fn ints(t: &Tensor) -> Option<Vec<i64>> {
    Some(match &t.data {
        TensorData::I64(v) => v.clone(),
        TensorData::I32(v) => v.iter().map(|x| *x as i64).collect(),
        TensorData::I8(v) => v.iter().map(|x| *x as i64).collect(),
        TensorData::U8(v) => v.iter().map(|x| *x as i64).collect(),
        TensorData::F32(_) => return None,
    })
}

/// The single value of a one-element tensor as f64.
pub fn scalar(t: &Tensor) -> Option<f64> {
    (t.numel() == 1).then(|| t.data.get_f64(0))
}
