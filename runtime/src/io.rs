//! Tensor and image I/O: `.npy` files (f32, u8, i8, i32, i64) and JPEG/PNG images resized and
//! centre-cropped the way ImageNet-style preprocessing does.

use std::io::Cursor;
use std::path::Path;

use npyz::WriterBuilder;
use qcc_dialects::{Tensor, TensorData};

/// Reads a C-order `.npy` file of f32, u8, i8, i32 or i64.
pub fn read_npy(path: &Path) -> Result<Tensor, String> {
    // Streamed from the file: no copy of its bytes beside the array read from them.
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    read_npy_from(std::io::BufReader::new(file)).map_err(|e| format!("'{}': {e}", path.display()))
}

/// Reads `.npy` bytes.
pub fn read_npy_bytes(bytes: &[u8]) -> Result<Tensor, String> {
    read_npy_from(Cursor::new(bytes))
}

/// Reads a `.npy` array from `source`.
fn read_npy_from(source: impl std::io::Read) -> Result<Tensor, String> {
    let npy = npyz::NpyFile::new(source).map_err(|e| format!("not a valid .npy file: {e}"))?;
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

/// Per output pixel of one axis: the first input pixel, and fixed-point weights of the input
/// pixels from there (bilinear filter stretched over the shrink factor, as Pillow computes them).
fn bilinear_taps(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    const ONE: f64 = (1u32 << PRECISION_BITS) as f64;
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the bilinear filter's support is 1
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let weights: Vec<f64> = (lo..hi)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) / filter_scale).abs();
                    if t < 1.0 { 1.0 - t } else { 0.0 }
                })
                .collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    (if w < 0.0 {
                        -0.5 + w * ONE
                    } else {
                        0.5 + w * ONE
                    }) as i32
                })
                .collect();
            (lo, fixed)
        })
        .collect()
}

/// Fractional bits of the resize weights (Pillow's 8-bit precision).
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes interleaved RGB bytes with a bilinear filter that averages over the whole footprint
/// when shrinking: horizontal pass first, each pass rounded to bytes, in the fixed-point
/// arithmetic of Pillow's `Image.resize(..., BILINEAR)`, so pixels match Python pipelines.
pub fn resize_bilinear(rgb: &[u8], w: usize, h: usize, nw: usize, nh: usize) -> Vec<u8> {
    let rows = bilinear_taps(h, nh);
    let cols = bilinear_taps(w, nw);
    // Only the input rows the vertical pass reads go through the horizontal pass.
    let first = rows.first().map_or(0, |r| r.0);
    let last = rows.last().map_or(0, |r| r.0 + r.1.len());
    let half = 1i64 << (PRECISION_BITS - 1);
    let mut tmp = vec![0u8; (last - first) * nw * 3];
    for (y, row) in tmp.chunks_mut(nw * 3).enumerate() {
        let src = &rgb[(first + y) * w * 3..(first + y + 1) * w * 3];
        for (xx, (lo, k)) in cols.iter().enumerate() {
            for c in 0..3 {
                let acc = k.iter().enumerate().fold(half, |a, (i, kv)| {
                    a + src[(lo + i) * 3 + c] as i64 * *kv as i64
                });
                row[xx * 3 + c] = clip8(acc);
            }
        }
    }
    let mut out = vec![0u8; nw * nh * 3];
    for (yy, (lo, k)) in rows.iter().enumerate() {
        for xx in 0..nw * 3 {
            let acc = k.iter().enumerate().fold(half, |a, (i, kv)| {
                a + tmp[(lo - first + i) * nw * 3 + xx] as i64 * *kv as i64
            });
            out[yy * nw * 3 + xx] = clip8(acc);
        }
    }
    out
}

/// Loads an image as RGB, resizes its shorter side to `resize` (bilinear, see
/// [`resize_bilinear`]) and cuts the centre `crop` x `crop`; returns CHW bytes.
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
        (
            resize,
            ((h * resize) as f64 / w as f64).round_ties_even() as usize,
        )
    } else {
        (
            ((w * resize) as f64 / h as f64).round_ties_even() as usize,
            resize,
        )
    };
    let resized = if (nw, nh) == (w, h) {
        img.into_raw()
    } else {
        resize_bilinear(img.as_raw(), w, h, nw, nh)
    };
    let left = ((nw - crop) as f64 / 2.0).round_ties_even() as usize;
    let top = ((nh - crop) as f64 / 2.0).round_ties_even() as usize;
    let mut chw = vec![0u8; 3 * crop * crop];
    for y in 0..crop {
        for x in 0..crop {
            let p = ((top + y) * nw + left + x) * 3;
            for c in 0..3 {
                chw[c * crop * crop + y * crop + x] = resized[p + c];
            }
        }
    }
    Ok(chw)
}
