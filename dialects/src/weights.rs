//! Reading and writing a module's named weights as safetensors.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::tensor::{Tensor, TensorData};

fn decode(view: &TensorView<'_>, name: &str) -> Result<TensorData, String> {
    let bytes = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => TensorData::F32(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::I8 => TensorData::I8(bytes.iter().map(|b| *b as i8).collect()),
        Dtype::U8 => TensorData::U8(bytes.to_vec()),
        Dtype::I32 => TensorData::I32(
            bytes
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        Dtype::I64 => TensorData::I64(
            bytes
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        ),
        other => {
            return Err(format!(
                "tensor '{name}' has unsupported dtype {other:?} (qcc reads F32, I8, U8, I32, I64)"
            ));
        }
    })
}

/// Reads every tensor of a safetensors file.
pub fn load(path: &Path) -> Result<BTreeMap<String, Tensor>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read weights file '{}': {e}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("'{}' is not a valid safetensors file: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let data = decode(&view, &name).map_err(|e| format!("{}: {e}", path.display()))?;
        let tensor = Tensor::new(view.shape().to_vec(), data)
            .map_err(|e| format!("{}: tensor '{name}': {e}", path.display()))?;
        out.insert(name, tensor);
    }
    Ok(out)
}

fn encode(data: &TensorData) -> (Dtype, Vec<u8>) {
    match data {
        TensorData::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::I8(v) => (Dtype::I8, v.iter().map(|x| *x as u8).collect()),
        TensorData::U8(v) => (Dtype::U8, v.clone()),
        TensorData::I32(v) => (Dtype::I32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        TensorData::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
    }
}

/// Serializes tensors to safetensors bytes.
pub fn to_bytes<'a>(
    tensors: impl IntoIterator<Item = (&'a String, &'a Tensor)>,
) -> Result<Vec<u8>, String> {
    let encoded: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, t)| {
            let (dtype, bytes) = encode(&t.data);
            (name.clone(), dtype, t.shape.clone(), bytes)
        })
        .collect();
    let views = encoded
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| format!("tensor '{name}': {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, None).map_err(|e| format!("cannot serialize weights: {e}"))
}
