//! Network inputs from what users have: a folder of images, a single image, a `.npy` of u8 pixels
//! (NCHW, already resized and cropped) or a `.npy` of f32 network inputs taken as they are.

use std::path::{Path, PathBuf};

use qcc_dialects::{Tensor, TensorData, TensorType};
use qcc_runtime::io::{load_image, read_npy};

use crate::preprocess::Preprocess;

/// A batch of network inputs with a name per item (file name, or `#i` inside a .npy).
pub struct Inputs {
    /// f32 [N, C, H, W] (or the network's input shape with N in front).
    pub tensor: Tensor,
    /// One label per item, for reports.
    pub names: Vec<String>,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

/// The images of a folder, sorted by name.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read folder '{}': {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "folder '{}' holds no JPEG or PNG images",
            dir.display()
        ));
    }
    Ok(files)
}

fn normalize(pixels: &[u8], n: usize, hw: usize, pre: &Preprocess) -> Vec<f32> {
    let mut out = Vec::with_capacity(pixels.len());
    for i in 0..n {
        for c in 0..3 {
            let src = if pre.bgr { 2 - c } else { c };
            let plane = &pixels[(i * 3 + src) * hw..(i * 3 + src + 1) * hw];
            let (m, s) = (pre.mean[c], pre.std[c]);
            out.extend(plane.iter().map(|p| (*p as f32 / 255.0 - m) / s));
        }
    }
    out
}

/// Checks that `input` (the network's declared input type) takes 3-channel square images of the
/// preprocessing's crop size.
fn check_image_input(input: &TensorType, pre: &Preprocess, what: &str) -> Result<(), String> {
    let s = &input.shape;
    if s.len() != 4 || s[1] != 3 {
        return Err(format!(
            "{what} holds images, but the network's input is {input}, not N x 3 x H x W"
        ));
    }
    if s[2] != pre.crop || s[3] != pre.crop {
        return Err(format!(
            "{what}: images are cropped to {0}x{0} but the network takes {1}x{2} (set --crop {1})",
            pre.crop, s[2], s[3]
        ));
    }
    Ok(())
}

/// Loads `spec` as inputs of the network input type `input`, using `pre` for images and u8 pixels.
/// `limit` keeps only the first items (calibration samples).
pub fn load(
    spec: &Path,
    input: &TensorType,
    pre: &Preprocess,
    limit: Option<usize>,
) -> Result<Inputs, String> {
    let what = format!("'{}'", spec.display());
    if spec.is_dir() || is_image(spec) {
        let mut files = if spec.is_dir() {
            image_files(spec)?
        } else {
            vec![spec.to_path_buf()]
        };
        if let Some(l) = limit {
            files.truncate(l);
        }
        check_image_input(input, pre, &what)?;
        let hw = pre.crop * pre.crop;
        let images: Vec<Result<Vec<u8>, String>> = {
            use rayon::prelude::*;
            files
                .par_iter()
                .map(|f| load_image(f, pre.resize, pre.crop))
                .collect()
        };
        let mut pixels = Vec::with_capacity(files.len() * 3 * hw);
        for img in images {
            pixels.extend(img?);
        }
        let names = files
            .iter()
            .map(|f| {
                f.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
            })
            .collect();
        let data = normalize(&pixels, files.len(), hw, pre);
        let shape = vec![files.len(), 3, pre.crop, pre.crop];
        return Ok(Inputs {
            tensor: Tensor::from_f32(shape, data),
            names,
        });
    }
    if spec.extension().is_some_and(|e| e == "npy") {
        let t = read_npy(spec)?;
        let mut n = *t
            .shape
            .first()
            .ok_or_else(|| format!("{what} holds a scalar, not a batch"))?;
        if n == 0 {
            return Err(format!("{what} holds no items (its first dimension is 0)"));
        }
        let per_item: usize = t.shape[1..].iter().product();
        let keep = limit.map_or(n, |l| l.min(n));
        let tensor = match &t.data {
            TensorData::U8(pixels) => {
                check_image_input(input, pre, &what)?;
                if t.shape.len() != 4
                    || t.shape[1] != 3
                    || t.shape[2] != pre.crop
                    || t.shape[3] != pre.crop
                {
                    return Err(format!(
                        "{what} holds u8 pixels of shape {:?}; the network needs N x 3 x {} x {} (resized and cropped)",
                        t.shape, pre.crop, pre.crop
                    ));
                }
                n = keep;
                Tensor::from_f32(
                    vec![n, 3, pre.crop, pre.crop],
                    normalize(&pixels[..n * per_item], n, pre.crop * pre.crop, pre),
                )
            }
            TensorData::F32(values) => {
                if t.shape.get(1..) != input.shape.get(1..) {
                    return Err(format!(
                        "{what} holds f32 inputs of shape {:?}; the network takes N x {}",
                        t.shape,
                        input.shape[input.rank().min(1)..]
                            .iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join(" x ")
                    ));
                }
                n = keep;
                let mut shape = t.shape.clone();
                shape[0] = n;
                Tensor::from_f32(shape, values[..n * per_item].to_vec())
            }
            other => {
                return Err(format!(
                    "{what} holds {} values; give u8 pixels (N x 3 x H x W) or f32 network inputs",
                    other.dtype_name()
                ));
            }
        };
        return Ok(Inputs {
            tensor,
            names: (0..n).map(|i| format!("#{i}")).collect(),
        });
    }
    if !spec.exists() {
        return Err(format!("{what} does not exist"));
    }
    Err(format!(
        "{what} is neither a folder of images, a JPEG/PNG image nor a .npy file"
    ))
}
