//! How raw images become a network's input: resize of the shorter side, centre crop, per-channel
//! mean and std on [0, 1] pixels, channel order. Recorded in module attributes at import.

use clap::Args;
use qcc_dialects::{Attr, Module};

/// Preprocessing of images into network inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocess {
    /// The shorter side is resized to this many pixels (bilinear).
    pub resize: usize,
    /// Then the centre `crop` x `crop` is cut out.
    pub crop: usize,
    /// Subtracted per channel from pixels scaled to [0, 1].
    pub mean: [f32; 3],
    /// Then divided per channel.
    pub std: [f32; 3],
    /// Feed channels as BGR instead of RGB.
    pub bgr: bool,
}

/// The named presets.
pub const PRESETS: &[&str] = &["tf", "torch", "none"];

impl Preprocess {
    /// A preset for a `crop` x `crop` input: `tf` (x / 127.5 - 1), `torch` (ImageNet mean/std),
    /// `none` (x / 255). The resize keeps ImageNet's 256/224 ratio.
    pub fn preset(name: &str, crop: usize) -> Result<Preprocess, String> {
        let (mean, std) = match name {
            "tf" => ([0.5; 3], [0.5; 3]),
            "torch" => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            "none" => ([0.0; 3], [1.0; 3]),
            other => {
                return Err(format!(
                    "unknown preprocessing preset '{other}' (expected one of {})",
                    PRESETS.join(", ")
                ));
            }
        };
        Ok(Preprocess {
            resize: (crop as f64 * 256.0 / 224.0).round() as usize,
            crop,
            mean,
            std,
            bgr: false,
        })
    }

    /// ONNX metadata entries that give this preprocessing back on import: `qcc.preprocess`
    /// (a preset's name, when it is one) and every field under `qcc.preprocess.*`.
    pub fn metadata(&self) -> Vec<(String, String)> {
        let three = |v: [f32; 3]| format!("{},{},{}", v[0], v[1], v[2]);
        let mut out: Vec<(String, String)> = PRESETS
            .iter()
            .find(|p| Preprocess::preset(p, self.crop).is_ok_and(|p| p == *self))
            .map(|p| ("qcc.preprocess".to_string(), p.to_string()))
            .into_iter()
            .collect();
        for (key, value) in [
            ("resize", self.resize.to_string()),
            ("crop", self.crop.to_string()),
            ("mean", three(self.mean)),
            ("std", three(self.std)),
            ("channels", if self.bgr { "bgr" } else { "rgb" }.to_string()),
        ] {
            out.push((format!("qcc.preprocess.{key}"), value));
        }
        out
    }

    /// The preprocessing ONNX metadata records (see `metadata`): the `qcc.preprocess.*` fields
    /// when present, else the `qcc.preprocess` preset for a `crop` x `crop` input.
    pub fn from_metadata(
        entries: &[(String, String)],
        crop: usize,
    ) -> Result<Option<Preprocess>, String> {
        let get = |key: &str| {
            entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.trim())
        };
        let Some(crop_text) = get("qcc.preprocess.crop") else {
            return get("qcc.preprocess")
                .map(|name| Preprocess::preset(name, crop))
                .transpose();
        };
        let size = |key: &str, text: &str| {
            text.parse::<usize>()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("{key} must be a positive integer, got '{text}'"))
        };
        let three = |key: &str| -> Result<[f32; 3], String> {
            let text = get(key).ok_or_else(|| format!("{key} is missing"))?;
            let v: Vec<f32> = text
                .split(',')
                .map(|x| x.trim().parse::<f32>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("{key} must be three numbers R,G,B, got '{text}'"))?;
            match v[..] {
                [r, g, b] => Ok([r, g, b]),
                _ => Err(format!("{key} must be three numbers R,G,B, got '{text}'")),
            }
        };
        let crop = size("qcc.preprocess.crop", crop_text)?;
        let resize = match get("qcc.preprocess.resize") {
            Some(t) => size("qcc.preprocess.resize", t)?,
            None => crop,
        };
        let std = three("qcc.preprocess.std")?;
        if std.iter().any(|v| v.is_nan() || *v <= 0.0) {
            return Err(format!("qcc.preprocess.std must be positive, got {std:?}"));
        }
        Ok(Some(Preprocess {
            resize: resize.max(crop),
            crop,
            mean: three("qcc.preprocess.mean")?,
            std,
            bgr: get("qcc.preprocess.channels") == Some("bgr"),
        }))
    }

    /// Writes the `preprocess.*` module attributes.
    pub fn record(&self, module: &mut Module) {
        let a = &mut module.attrs;
        a.set("preprocess.resize", Attr::Int(self.resize as i64));
        a.set("preprocess.crop", Attr::Int(self.crop as i64));
        a.set(
            "preprocess.mean",
            Attr::floats(&self.mean.map(|v| v as f64)),
        );
        a.set("preprocess.std", Attr::floats(&self.std.map(|v| v as f64)));
        a.set(
            "preprocess.channels",
            Attr::Str(if self.bgr { "bgr" } else { "rgb" }.into()),
        );
    }

    /// Reads the `preprocess.*` module attributes, if the module records them.
    pub fn recorded(module: &Module) -> Result<Option<Preprocess>, String> {
        let a = &module.attrs;
        let Some(crop) = a.get("preprocess.crop") else {
            return Ok(None);
        };
        let int = |v: &Attr, what: &str| {
            v.as_int()
                .filter(|v| *v > 0)
                .map(|v| v as usize)
                .ok_or_else(|| format!("module attribute {what} must be a positive integer"))
        };
        let three = |name: &str| -> Result<[f32; 3], String> {
            let v = a
                .get(name)
                .and_then(Attr::as_floats)
                .ok_or_else(|| format!("module attribute {name} must be a list of 3 numbers"))?;
            if v.len() != 3 {
                return Err(format!(
                    "module attribute {name} must be a list of 3 numbers"
                ));
            }
            Ok([v[0] as f32, v[1] as f32, v[2] as f32])
        };
        let crop = int(crop, "preprocess.crop")?;
        Ok(Some(Preprocess {
            resize: match a.get("preprocess.resize") {
                Some(v) => int(v, "preprocess.resize")?,
                None => crop,
            },
            crop,
            mean: three("preprocess.mean")?,
            std: three("preprocess.std")?,
            bgr: a.get("preprocess.channels").and_then(Attr::as_str) == Some("bgr"),
        }))
    }
}

/// Command-line flags that choose or override preprocessing.
#[derive(Args, Clone, Debug, Default)]
pub struct PreprocessArgs {
    /// Preprocessing preset: tf (x/127.5-1), torch (ImageNet mean/std), none (x/255).
    #[arg(long, value_name = "PRESET", value_parser = clap::builder::PossibleValuesParser::new(PRESETS))]
    pub preprocess: Option<String>,
    /// Resize the shorter image side to this many pixels.
    #[arg(long, value_name = "PIXELS")]
    pub resize: Option<usize>,
    /// Cut the centre square of this size.
    #[arg(long, value_name = "PIXELS")]
    pub crop: Option<usize>,
    /// Per-channel mean on [0, 1] pixels, e.g. 0.485,0.456,0.406.
    #[arg(long, value_name = "R,G,B", value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,
    /// Per-channel std on [0, 1] pixels, e.g. 0.229,0.224,0.225.
    #[arg(long, value_name = "R,G,B", value_delimiter = ',')]
    pub std: Option<Vec<f32>>,
    /// Feed channels in BGR order.
    #[arg(long)]
    pub bgr: bool,
}

impl PreprocessArgs {
    /// Whether any flag was given.
    pub fn any(&self) -> bool {
        self.preprocess.is_some()
            || self.resize.is_some()
            || self.crop.is_some()
            || self.mean.is_some()
            || self.std.is_some()
            || self.bgr
    }

    /// `base` with the flags applied on top (a preset replaces mean, std and sizes first).
    pub fn apply(&self, base: Preprocess) -> Result<Preprocess, String> {
        let mut p = match &self.preprocess {
            Some(name) => Preprocess::preset(name, self.crop.unwrap_or(base.crop))?,
            None => base,
        };
        if let Some(c) = self.crop {
            if self.resize.is_none() && self.preprocess.is_none() {
                p.resize = p.resize.max(c);
            }
            p.crop = c;
        }
        if let Some(r) = self.resize {
            p.resize = r;
        }
        for (flag, values) in [("--mean", &self.mean), ("--std", &self.std)] {
            if let Some(v) = values
                && v.len() != 3
            {
                return Err(format!(
                    "{flag} takes three comma-separated numbers (R,G,B), got {}",
                    v.len()
                ));
            }
        }
        if let Some(m) = &self.mean {
            p.mean = [m[0], m[1], m[2]];
        }
        if let Some(s) = &self.std {
            if s.iter().any(|v| *v <= 0.0) {
                return Err(format!("--std values must be positive, got {s:?}"));
            }
            p.std = [s[0], s[1], s[2]];
        }
        if self.bgr {
            p.bgr = true;
        }
        if p.crop == 0 || p.resize < p.crop {
            return Err(format!(
                "--resize ({}) must be at least --crop ({}), and both positive",
                p.resize, p.crop
            ));
        }
        Ok(p)
    }
}
