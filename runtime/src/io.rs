//! Tensor and image I/O: `.npy` files (f32, u8, i8, i32, i64) and JPEG/PNG images resized and
//! centre-cropped the way ImageNet-style preprocessing does.

use std::io::Cursor;
use std::path::Path;

use image::imageops::FilterType;
use npyz::WriterBuilder;
use qcc_dialects::{Tensor, TensorData};

/// Reads a C-order `.npy` file of f32, u8, i8, i32 or i64.
pub fn read_npy(path: &Path) -> Result<Tensor, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    read_npy_bytes(&bytes).map_err(|e| format!("'{}': {e}", path.display()))
}

/// Reads `.npy` bytes.
pub fn read_npy_bytes(bytes: &[u8]) -> Result<Tensor, String> {
    let npy = npyz::NpyFile::new(Cursor::new(bytes))
        .map_err(|e| format!("not a valid .npy file: {e}"))?;
    if npy.order() != npyz::Order::C {
        return Err("the array is stored in Fortran order; save it in C order".into());
    }
    let shape: Vec<usize> = npy.shape().iter().map(|d| *d as usize).collect();
    let type_str = match npy.dtype() {
        npyz::DType::Plain(t) => t.to_string(),
        other => {
            return Err(format!(
                "unsupported dtype {}; qcc reads f32, u8, i8, i32, i64",
                other.descr()
            ));
        }
    };
    let bad = |e: std::io::Error| format!("cannot read the data: {e}");
    let data = match type_str.as_str() {
        "<f4" => TensorData::F32(npy.into_vec::<f32>().map_err(bad)?),
        "|u1" | "<u1" => TensorData::U8(npy.into_vec::<u8>().map_err(bad)?),
        "|i1" | "<i1" => TensorData::I8(npy.into_vec::<i8>().map_err(bad)?),
        "<i4" => TensorData::I32(npy.into_vec::<i32>().map_err(bad)?),
        "<i8" => TensorData::I64(npy.into_vec::<i64>().map_err(bad)?),
        other => {
            return Err(format!(
                "unsupported dtype '{other}'; qcc reads f32, u8, i8, i32, i64 (little-endian)"
            ));
        }
    };
    Tensor::new(shape, data)
}

/// Encodes a tensor as `.npy` bytes.
pub fn npy_bytes(t: &Tensor) -> Result<Vec<u8>, String> {
    let shape: Vec<u64> = t.shape.iter().map(|d| *d as u64).collect();
    let mut out = Vec::new();
    fn write<T: npyz::AutoSerialize + Copy>(
        out: &mut Vec<u8>,
        shape: &[u64],
        data: &[T],
    ) -> std::io::Result<()> {
        let mut w = npyz::WriteOptions::new()
            .default_dtype()
            .shape(shape)
            .writer(out)
            .begin_nd()?;
        w.extend(data.iter().copied())?;
        w.finish()
    }
    match &t.data {
        TensorData::F32(v) => write(&mut out, &shape, v),
        TensorData::U8(v) => write(&mut out, &shape, v),
        TensorData::I8(v) => write(&mut out, &shape, v),
        TensorData::I32(v) => write(&mut out, &shape, v),
        TensorData::I64(v) => write(&mut out, &shape, v),
    }
    .map_err(|e| format!("cannot encode .npy: {e}"))?;
    Ok(out)
}

/// Loads an image as RGB, resizes its shorter side to `resize` (bilinear, antialiased when
/// shrinking) and cuts the centre `crop` x `crop`; returns CHW bytes.
pub fn load_image(path: &Path, resize: usize, crop: usize) -> Result<Vec<u8>, String> {
    let img = image::ImageReader::open(path)
        .map_err(|e| format!("cannot open '{}': {e}", path.display()))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read '{}': {e}", path.display()))?
        .decode()
        .map_err(|e| format!("cannot decode image '{}': {e}", path.display()))?
        .to_rgb8();
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(format!("image '{}' is empty", path.display()));
    }
    let resize = resize.max(crop);
    let (nw, nh) = if w <= h {
        (resize, ((h * resize) as f64 / w as f64).round() as usize)
    } else {
        (((w * resize) as f64 / h as f64).round() as usize, resize)
    };
    let resized = image::imageops::resize(&img, nw as u32, nh as u32, FilterType::Triangle);
    let left = ((nw - crop) as f64 / 2.0).round() as u32;
    let top = ((nh - crop) as f64 / 2.0).round() as u32;
    let cropped =
        image::imageops::crop_imm(&resized, left, top, crop as u32, crop as u32).to_image();
    let mut chw = vec![0u8; 3 * crop * crop];
    for (i, p) in cropped.pixels().enumerate() {
        for c in 0..3 {
            chw[c * crop * crop + i] = p[c];
        }
    }
    Ok(chw)
}
