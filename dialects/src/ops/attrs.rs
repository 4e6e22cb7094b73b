//! Typed readers of op attributes: each attribute is read, defaulted and range-checked here and
//! nowhere else, for shape inference, the verifier, the engines and the passes alike.

use crate::attr::Attr;
use crate::ir::Operation;

/// The largest dimension, pad, stride or group count an attribute may hold (keeps every
/// derived size far from overflow).
pub const MAX_DIM: i64 = 1 << 31;

fn ints_or(op: &Operation, name: &str, default: &[i64]) -> Vec<i64> {
    op.attr(name)
        .and_then(Attr::as_ints)
        .unwrap_or_else(|| default.to_vec())
}

fn float_or(op: &Operation, name: &str, default: f64) -> f64 {
    op.attr(name).and_then(Attr::as_float).unwrap_or(default)
}

fn bool_or(op: &Operation, name: &str, default: bool) -> bool {
    op.attr(name).and_then(Attr::as_bool).unwrap_or(default)
}

/// Checks that `values` has `len` entries in `[min, MAX_DIM]`, or says which attribute is wrong.
pub fn dims(values: &[i64], name: &str, len: usize, min: i64) -> Result<Vec<usize>, String> {
    if values.len() != len {
        return Err(format!("'{name}' needs {len} values, got {}", values.len()));
    }
    values
        .iter()
        .map(|&v| {
            if v < min {
                Err(format!("'{name}' values must be >= {min}, got {v}"))
            } else if v > MAX_DIM {
                Err(format!("'{name}' value {v} is too large"))
            } else {
                Ok(v as usize)
            }
        })
        .collect()
}

/// Resolves a possibly negative axis against `rank`.
pub fn resolve_axis(value: i64, rank: usize, name: &str) -> Result<usize, String> {
    let r = rank as i64;
    if value < -r || value >= r.max(1) {
        return Err(format!(
            "'{name}' = {value} is out of range for rank {rank}"
        ));
    }
    Ok(if value < 0 {
        (value + r) as usize
    } else {
        value as usize
    })
}

/// The `axis` attribute of an op on operands of `rank` (concat, softmax), resolved.
pub fn axis(op: &Operation, default: i64, rank: usize) -> Result<usize, String> {
    let value = op.attr("axis").and_then(Attr::as_int).unwrap_or(default);
    resolve_axis(value, rank, "axis")
}

/// Strides, pads (top, left, bottom, right) and dilations of a 2-D window op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Vertical and horizontal step.
    pub strides: [usize; 2],
    /// Top, left, bottom, right.
    pub pads: [usize; 4],
    /// Vertical and horizontal dilation.
    pub dilations: [usize; 2],
}

impl Window {
    /// Reads `strides`, `pads` and `dilations` with their defaults (1, 0 and 1).
    pub fn of(op: &Operation) -> Result<Window, String> {
        let s = dims(&ints_or(op, "strides", &[1, 1]), "strides", 2, 1)?;
        let p = dims(&ints_or(op, "pads", &[0, 0, 0, 0]), "pads", 4, 0)?;
        let d = dims(&ints_or(op, "dilations", &[1, 1]), "dilations", 2, 1)?;
        Ok(Window {
            strides: [s[0], s[1]],
            pads: [p[0], p[1], p[2], p[3]],
            dilations: [d[0], d[1]],
        })
    }

    /// Output height and width for an input of `h`x`w` and a `kh`x`kw` kernel.
    pub fn output(
        &self,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        ceil: bool,
    ) -> Result<(usize, usize), String> {
        let one = |size: usize, k: usize, axis: usize| -> Result<usize, String> {
            let padded = size + self.pads[axis] + self.pads[axis + 2];
            let span = self.dilations[axis] * (k - 1) + 1;
            if k == 0 || padded < span {
                return Err(format!(
                    "the window ({span} after dilation) is larger than the padded input ({padded})"
                ));
            }
            let s = self.strides[axis];
            let mut out = if ceil {
                (padded - span).div_ceil(s) + 1
            } else {
                (padded - span) / s + 1
            };
            // A window may not start in the end padding only.
            if ceil && (out - 1) * s >= size + self.pads[axis] {
                out -= 1;
            }
            Ok(out)
        };
        Ok((one(h, kh, 0)?, one(w, kw, 1)?))
    }
}

/// The attributes of `nn.conv2d` and `quant.conv2d`: the window and the group count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dAttrs {
    /// Strides, pads and dilations.
    pub window: Window,
    /// Channel groups (the input channels for a depthwise convolution).
    pub groups: usize,
}

impl Conv2dAttrs {
    /// Reads a convolution's attributes.
    pub fn of(op: &Operation) -> Result<Conv2dAttrs, String> {
        let window = Window::of(op)?;
        let groups = op.attr("groups").and_then(Attr::as_int).unwrap_or(1);
        if !(1..=MAX_DIM).contains(&groups) {
            return Err(format!("'groups' must be >= 1, got {groups}"));
        }
        Ok(Conv2dAttrs {
            window,
            groups: groups as usize,
        })
    }
}

/// The attributes of the windowed pooling ops (`avg_pool2d`, `max_pool2d`, float or integer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dAttrs {
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Strides, pads and dilations (average pooling has no dilation: 1).
    pub window: Window,
    /// Whether the output size rounds up.
    pub ceil_mode: bool,
    /// Whether padded positions count in an average's divisor.
    pub count_include_pad: bool,
}

impl Pool2dAttrs {
    /// Reads a pooling op's attributes.
    pub fn of(op: &Operation) -> Result<Pool2dAttrs, String> {
        let k = dims(&ints_or(op, "kernel", &[]), "kernel", 2, 1)?;
        Ok(Pool2dAttrs {
            kernel: [k[0], k[1]],
            window: Window::of(op)?,
            ceil_mode: bool_or(op, "ceil_mode", false),
            count_include_pad: bool_or(op, "count_include_pad", false),
        })
    }
}

/// `nn.clip`'s bounds: `min` and `max` (unbounded where not given) and, with `channel_max`, an
/// upper bound per channel (axis 1) that applies together with `max` (cross-layer equalization
/// scales a ReLU6's bound per channel).
#[derive(Clone, Debug, PartialEq)]
pub struct ClipBounds {
    /// The lower bound.
    pub lo: f64,
    /// The upper bound shared by every channel.
    pub hi: f64,
    /// The upper bound of each channel, if the clip has them.
    pub channel_hi: Option<Vec<f64>>,
}

impl ClipBounds {
    /// The upper bound of channel `c`.
    pub fn hi_of(&self, c: usize) -> f64 {
        match &self.channel_hi {
            Some(h) => h.get(c).map_or(self.hi, |v| v.min(self.hi)),
            None => self.hi,
        }
    }

    /// The largest upper bound of any channel.
    pub fn max_hi(&self) -> f64 {
        match &self.channel_hi {
            Some(h) => h
                .iter()
                .fold(f64::NEG_INFINITY, |m, v| m.max(*v))
                .min(self.hi),
            None => self.hi,
        }
    }

    /// The bounds as `(lo, hi)` when every channel shares them.
    pub fn uniform(&self) -> Option<(f64, f64)> {
        self.channel_hi.is_none().then_some((self.lo, self.hi))
    }
}

/// The bounds of `nn.clip`.
pub fn clip_bounds(op: &Operation) -> Result<ClipBounds, String> {
    let (lo, hi) = (
        float_or(op, "min", f64::NEG_INFINITY),
        float_or(op, "max", f64::INFINITY),
    );
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return Err(format!("'min' ({lo:?}) must not exceed 'max' ({hi:?})"));
    }
    let channel_hi = match op.attr("channel_max") {
        None => None,
        Some(a) => {
            let h = a
                .as_floats()
                .ok_or_else(|| format!("'channel_max' must be a list of numbers, got {a}"))?;
            if let Some((c, v)) = h.iter().enumerate().find(|(_, v)| v.is_nan() || **v < lo) {
                return Err(format!(
                    "'channel_max' of channel {c} ({v:?}) is below 'min' ({lo:?})"
                ));
            }
            Some(h)
        }
    };
    Ok(ClipBounds { lo, hi, channel_hi })
}

/// The fused output clamp of an integer op, in stored values (`None`: the storage range).
pub fn clamp(op: &Operation) -> Result<Option<[i64; 2]>, String> {
    let Some(c) = op.attr("clamp") else {
        return Ok(None);
    };
    match c.as_ints().as_deref() {
        Some(&[lo, hi]) if lo <= hi => Ok(Some([lo, hi])),
        _ => Err(format!("'clamp' must be [lo, hi] with lo <= hi, got {c}")),
    }
}

/// The per-output-channel upper bounds of an integer conv/dense layer's output, in stored values
/// (`channel_max`, applied together with `clamp`), if it has them.
pub fn channel_clamp(op: &Operation) -> Result<Option<Vec<i64>>, String> {
    match op.attr("channel_max") {
        None => Ok(None),
        Some(a) => a
            .as_ints()
            .map(Some)
            .ok_or_else(|| format!("'channel_max' must be a list of integers, got {a}")),
    }
}

/// `nn.batch_norm`'s epsilon.
pub fn epsilon(op: &Operation) -> Result<f64, String> {
    let eps = float_or(op, "epsilon", 1e-5);
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(format!("'epsilon' must be finite and >= 0, got {eps:?}"));
    }
    Ok(eps)
}

/// `nn.hardsigmoid`'s `alpha` and `beta`: `clamp(alpha * x + beta, 0, 1)`.
pub fn hardsigmoid(op: &Operation) -> (f64, f64) {
    (float_or(op, "alpha", 0.2), float_or(op, "beta", 0.5))
}

/// `nn.transpose`'s permutation of an operand of `rank` (reversed axes by default).
pub fn perm(op: &Operation, rank: usize) -> Result<Vec<usize>, String> {
    let default: Vec<i64> = (0..rank as i64).rev().collect();
    let perm = ints_or(op, "perm", &default);
    if perm.len() != rank {
        return Err(format!("'perm' needs {rank} entries, got {}", perm.len()));
    }
    let mut seen = vec![false; rank];
    let mut out = Vec::with_capacity(rank);
    for &p in &perm {
        if p < 0 || p as usize >= rank || seen[p as usize] {
            return Err(format!(
                "'perm' = {perm:?} is not a permutation of 0..{rank}"
            ));
        }
        seen[p as usize] = true;
        out.push(p as usize);
    }
    Ok(out)
}

/// How `nn.pad` fills the border.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode {
    /// A constant value.
    Constant(f64),
    /// Mirror without repeating the edge.
    Reflect,
    /// Repeat the edge.
    Edge,
}

impl PadMode {
    /// The input index an output index `i` (already less the axis' begin, so negative in the
    /// leading border) reads on an axis of `len` elements; `None` where the output is the
    /// constant, or where an empty axis leaves nothing to repeat.
    pub fn source(self, i: isize, len: usize) -> Option<usize> {
        let len = len as isize;
        if (0..len).contains(&i) {
            return Some(i as usize);
        }
        match self {
            PadMode::Constant(_) => None,
            PadMode::Edge | PadMode::Reflect if len == 0 => None,
            PadMode::Edge => Some(i.clamp(0, len - 1) as usize),
            // A one-element axis reflects onto itself.
            PadMode::Reflect if len == 1 => Some(0),
            PadMode::Reflect => {
                let period = 2 * (len - 1);
                let m = i.rem_euclid(period);
                Some(if m < len { m } else { period - m } as usize)
            }
        }
    }

    /// The value of an output element that [`PadMode::source`] maps to no input element.
    pub fn fill(self) -> f32 {
        match self {
            PadMode::Constant(v) => v as f32,
            PadMode::Edge | PadMode::Reflect => 0.0,
        }
    }
}

/// `nn.pad`'s attributes: every axis' begin, then every axis' end (ONNX order), and the mode.
#[derive(Clone, Debug, PartialEq)]
pub struct PadAttrs {
    /// Begins, then ends, of an operand of rank `pads.len() / 2`.
    pub pads: Vec<usize>,
    /// How the border is filled.
    pub mode: PadMode,
}

impl PadAttrs {
    /// Reads `nn.pad`'s attributes for an operand of `rank`.
    pub fn of(op: &Operation, rank: usize) -> Result<PadAttrs, String> {
        let pads = dims(&ints_or(op, "pads", &[]), "pads", 2 * rank, 0)?;
        let mode = match op.attr("mode").and_then(Attr::as_str).unwrap_or("constant") {
            "constant" => PadMode::Constant(float_or(op, "value", 0.0)),
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            other => {
                return Err(format!(
                    "'mode' must be constant, reflect or edge, got '{other}'"
                ));
            }
        };
        Ok(PadAttrs { pads, mode })
    }
}

/// `nn.reshape`'s target shape (every dimension given).
pub fn reshape_target(op: &Operation) -> Result<Vec<usize>, String> {
    let target = ints_or(op, "shape", &[]);
    if let Some(bad) = target.iter().find(|d| **d < 0) {
        return Err(format!("'shape' dimensions must be >= 0, got {bad}"));
    }
    if let Some(big) = target.iter().find(|d| **d > MAX_DIM) {
        return Err(format!("'shape' dimension {big} is too large"));
    }
    Ok(target.iter().map(|d| *d as usize).collect())
}

/// `nn.flatten`'s axis for an operand of `rank` (0..=rank: the dimensions before it make rows).
pub fn flatten_axis(op: &Operation, rank: usize) -> Result<usize, String> {
    let a = op.attr("axis").and_then(Attr::as_int).unwrap_or(1);
    if a < 0 || a as usize > rank {
        return Err(format!("'axis' = {a} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}
