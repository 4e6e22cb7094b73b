//! The generated `quant.conv2d` and `quant.dense`: exact i32 accumulators from the generated
//! kernels ([`crate::gemm`], [`crate::depthwise`]), requantized in the kernels' fused epilogue
//! (the same f32 arithmetic as `qcc_runtime::quant::Requant`, vectorised) or, where that
//! epilogue would not be exact, by `Requant` itself; so the integer results are the reference's
//! bit for bit.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use qcc_dialects::ops::attrs::Conv2dAttrs;
use qcc_dialects::{Tensor, TensorData, TensorType};
use qcc_runtime::OpKernel;
use qcc_runtime::engine::Accumulators;
use qcc_runtime::quant::{Requant, check_accumulator, magnitude, per_tensor_params, stored_ints};
use rayon::prelude::*;

use crate::clif::{Clamp, Levels, RECORD_WORDS, record};
use crate::depthwise::{self, Geometry};
use crate::gemm::{self, Epilogue, Form, MR, PackedA};
use crate::pool::{Poolable, Pooled};

/// The i8 weights of `w`, or an error.
pub(crate) fn weights(w: &Tensor) -> Result<&[i8], String> {
    match &w.data {
        TensorData::I8(v) => Ok(v),
        other => Err(format!("the weight must be i8, got {}", other.dtype_name())),
    }
}

/// The i32 bias of a layer with `channels` outputs (zeros without one).
pub(crate) fn bias(b: Option<&&Tensor>, channels: usize) -> Vec<i64> {
    b.map_or(vec![0; channels], |b| {
        stored_ints(b).into_iter().map(i64::from).collect()
    })
}

/// The largest `|x - Z_x|` any stored 8-bit value (i8 when `signed`, else u8) can have.
pub(crate) fn storage_extent(zero_point: i64, signed: bool) -> u32 {
    if signed {
        (zero_point + 128).max(127 - zero_point) as u32
    } else {
        zero_point.max(255 - zero_point) as u32
    }
}

/// A bound on `|x - Z_x|` good enough for a layer of depth `k` and largest weight `max_w`: the
/// storage range's when even that keeps every sum (and `|acc + bias|`, `bias` the largest
/// bias) below 2^31, so the data need not be read; else the data's own largest value.
pub(crate) fn extent_for(
    x: &Tensor,
    zero_point: i64,
    k: usize,
    max_w: u32,
    bias: u64,
) -> Result<u32, String> {
    let static_bound = match &x.data {
        TensorData::U8(_) => storage_extent(zero_point, false),
        TensorData::I8(_) => storage_extent(zero_point, true),
        other => {
            return Err(format!(
                "the input must be 8-bit, got {}",
                other.dtype_name()
            ));
        }
    };
    let sum = k as u128 * u128::from(static_bound) * u128::from(max_w);
    if sum + u128::from(bias) < 1 << 31 {
        Ok(static_bound)
    } else {
        extent(x, zero_point)
    }
}

/// The largest `|x - Z_x|` over the stored values of `x` (8-bit storage).
fn extent(x: &Tensor, zero_point: i64) -> Result<u32, String> {
    /// Smallest and largest of `values`, in chunks the compiler vectorises.
    fn bounds<T: Copy + Ord + Send + Sync + Into<i64>>(values: &[T]) -> Option<(i64, i64)> {
        values
            .par_chunks(1 << 16)
            .map(|c| {
                let lo = c.iter().copied().min()?;
                let hi = c.iter().copied().max()?;
                Some((lo.into(), hi.into()))
            })
            .reduce(
                || None,
                |a, b| match (a, b) {
                    (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
                    (a, None) => a,
                    (None, b) => b,
                },
            )
    }
    let range = match &x.data {
        TensorData::U8(v) => bounds(v),
        TensorData::I8(v) => bounds(v),
        other => {
            return Err(format!(
                "the input must be 8-bit, got {}",
                other.dtype_name()
            ));
        }
    };
    Ok(range.map_or(0, |(lo, hi)| {
        (lo - zero_point)
            .unsigned_abs()
            .max((hi - zero_point).unsigned_abs()) as u32
    }))
}

/// The activations of a layer as its kernels read them.
enum Activations<'a> {
    /// `x - Z_x` as i16 (the `pmaddwd` GEMM).
    Centred(Vec<i16>),
    /// The stored values shifted to u8 and the zero point shifted with them (the `vpdpbusd`
    /// GEMM): u8 storage as it is, i8 storage plus 128.
    Shifted(Cow<'a, [u8]>, u8),
}

impl Activations<'_> {
    fn of(x: &Tensor, zero_point: i64, form: Form) -> Activations<'_> {
        match (form, &x.data) {
            (Form::Quads, TensorData::U8(v)) => {
                Activations::Shifted(Cow::Borrowed(v), zero_point as u8)
            }
            (Form::Quads, TensorData::I8(v)) => Activations::Shifted(
                Cow::Owned(v.par_iter().map(|q| (*q as u8) ^ 0x80).collect()),
                (zero_point + 128) as u8,
            ),
            (_, data) => {
                let z = zero_point as i16;
                Activations::Centred(match data {
                    TensorData::U8(v) => v.par_iter().map(|q| *q as i16 - z).collect(),
                    TensorData::I8(v) => v.par_iter().map(|q| *q as i16 - z).collect(),
                    _ => Vec::new(), // refused by `extent` before
                })
            }
        }
    }

    /// Image `i` of `len` values.
    fn image(&self, i: usize, len: usize) -> Image<'_> {
        match self {
            Activations::Centred(v) => Image::Centred(&v[i * len..(i + 1) * len]),
            Activations::Shifted(v, z) => Image::Shifted(&v[i * len..(i + 1) * len], *z),
        }
    }
}

/// One image of [`Activations`].
#[derive(Clone, Copy)]
enum Image<'a> {
    Centred(&'a [i16]),
    Shifted(&'a [u8], u8),
}

/// How a layer's outputs are produced: requantized inside the kernels, or (when the layer's
/// constants fall outside what the fused epilogue computes exactly, or for the accumulators
/// alone) as i32 accumulators that `Requant` finishes.
pub(crate) struct Finish<'a> {
    pub(crate) requant: &'a Requant,
    pub(crate) out_ty: &'a TensorType,
    pub(crate) bias: Vec<i64>,
}

impl Finish<'_> {
    /// One record per channel (padded to whole row panels) for the fused epilogue, or `None`
    /// when it would not be exact: an `|acc + bias|` that could reach 2^31 (the kernels add in
    /// i32), or an output that is not 8-bit. `bound` bounds `|acc|`; where it keeps every
    /// `|(acc + bias) * scale|` below 2^22, the epilogue leaves the storage's own bounds to the
    /// narrowing packs ([`Levels::clamp`]).
    pub(crate) fn records(&self, bound: u128) -> Option<(Vec<i32>, Levels)> {
        let (signed, storage) = match TensorData::zeros(&self.out_ty.elem, 0) {
            TensorData::U8(_) => (false, (0, 255)),
            TensorData::I8(_) => (true, (-128, 127)),
            _ => return None,
        };
        let channels = self.requant.channels();
        let zp = self.requant.zero_point();
        let mut records = vec![0i32; channels.div_ceil(MR) * MR * RECORD_WORDS];
        let mut rounds_exactly = true;
        for c in 0..channels {
            let b = self.bias.get(c).copied().unwrap_or(0);
            let sum = u128::from(b.unsigned_abs()) + bound;
            if sum >= 1 << 31 {
                return None;
            }
            // In f64, which holds the sum exactly and the product within far less than the
            // margin between the f32 product and 2^22.
            rounds_exactly &= sum as f64 * f64::from(self.requant.scale(c).abs()) < 4_000_000.0;
            let hi = (self.requant.channel_bounds(c).1 - zp) as f32;
            records[RECORD_WORDS * c..RECORD_WORDS * (c + 1)].copy_from_slice(&record(
                b as i32,
                self.requant.scale(c),
                hi,
            ));
        }
        let (lo, hi) = self.requant.bounds();
        let channel_hi = self.requant.uniform_bounds().is_none();
        Some((
            records,
            Levels {
                zero_point: zp as i32,
                bounds: (lo as i32, hi as i32),
                signed,
                channel_hi,
                clamp: Clamp {
                    lo: !(rounds_exactly && lo == storage.0),
                    hi: !(rounds_exactly && hi == storage.1 && !channel_hi),
                },
            },
        ))
    }
}

/// Output levels as a tensor of the result's storage.
fn levels_tensor(bytes: Vec<u8>, levels: &Levels, shape: Vec<usize>) -> Tensor {
    let data = if levels.signed {
        TensorData::I8(bytes.into_iter().map(|b| b as i8).collect())
    } else {
        TensorData::U8(bytes)
    };
    Tensor { shape, data }
}

/// How a layer's weights are laid out for its kernel.
enum Packed {
    /// One packed matrix per group.
    Gemm(Vec<PackedA>),
    /// The tap weights of every channel, for the depthwise kernel of the form
    /// ([`depthwise::pair_words`], [`depthwise::quad_words`]).
    Depthwise(Form, Vec<u32>),
}

/// A weight tensor packed once, remembered by its contents so a run with other weights repacks.
struct Weights {
    source: Vec<i8>,
    packed: Packed,
    max: u32,
    /// Where the module holds the tensor, when it outlives the prepared function: a run given
    /// the values at that address is given these weights (nothing can free or change them
    /// while the function is prepared), without comparing them.
    home: Option<(usize, usize)>,
}

impl Weights {
    /// Whether `w` holds these weights.
    fn are(&self, w: &[i8]) -> bool {
        self.home == Some((w.as_ptr() as usize, w.len())) || w == self.source.as_slice()
    }
}

/// Where a weight tensor lives when the module itself holds it for the life of the prepared
/// function (a tensor of the weights file, borrowed), `None` for a copy (an inline constant).
#[expect(
    clippy::ptr_arg,
    reason = "whether the tensor is borrowed is what is asked"
)]
fn home_of(w: &Cow<'_, Tensor>) -> Option<(usize, usize)> {
    match w {
        Cow::Borrowed(Tensor {
            data: TensorData::I8(v),
            ..
        }) => Some((v.as_ptr() as usize, v.len())),
        _ => None,
    }
}

/// A generated `quant.conv2d`.
pub struct QuantConv {
    attrs: Conv2dAttrs,
    x_ty: TensorType,
    out_ty: TensorType,
    requant: Requant,
    weights: Weights,
}

/// The zero point of a layer's input as the quads form sees it (u8 storage as it is, i8 plus
/// 128).
pub(crate) fn shifted_zero_point(x_ty: &TensorType) -> Result<i64, String> {
    let (_, zx, _) = per_tensor_params(x_ty, "the input")?;
    Ok(match TensorData::zeros(&x_ty.elem, 0) {
        TensorData::I8(_) => zx + 128,
        _ => zx,
    })
}

/// The weights of a convolution with `attrs` over inputs of type `x_ty`, packed for its kernels.
fn pack_conv(w: &Tensor, attrs: &Conv2dAttrs, x_ty: &TensorType) -> Result<Weights, String> {
    let v = weights(w)?;
    let groups = attrs.groups;
    let (o, k) = (w.shape[0], w.shape[1..].iter().product::<usize>());
    let packed = match depthwise_geometry(attrs, x_ty, &w.shape) {
        Some(g) => {
            let form = depthwise_form(&g, k);
            let words = match form {
                Form::Pairs => v.chunks(k.max(1)).flat_map(depthwise::pair_words).collect(),
                Form::Quads => {
                    let zu = shifted_zero_point(x_ty)?;
                    v.chunks(k.max(1))
                        .flat_map(|taps| depthwise::quad_words(taps, &g, zu))
                        .collect()
                }
            };
            Packed::Depthwise(form, words)
        }
        None => {
            let og = o / groups;
            Packed::Gemm(
                (0..groups)
                    .map(|g| {
                        PackedA::new(&v[g * og * k..(g + 1) * og * k], og, k, Form::for_depth(k))
                    })
                    .collect(),
            )
        }
    };
    let ints: Vec<i32> = v.iter().map(|x| i32::from(*x)).collect();
    Ok(Weights {
        source: v.to_vec(),
        packed,
        max: magnitude(&ints),
        home: None,
    })
}

/// The depthwise kernel's form for `g` (depth `k`): quads where the CPU and the geometry allow.
pub(crate) fn depthwise_form(g: &Geometry, k: usize) -> Form {
    depthwise_form_on(g, k, crate::jit::features().is_ok_and(|f| f.vnni))
}

/// [`depthwise_form`] on a CPU with VNNI or without (`vnni`).
pub(crate) fn depthwise_form_on(g: &Geometry, k: usize, vnni: bool) -> Form {
    match Form::for_depth_on(k, vnni) {
        Form::Quads if g.quads_fit() => Form::Quads,
        _ => Form::Pairs,
    }
}

/// The geometry of a depthwise convolution over inputs of type `x_ty` (4-D), or `None` for a
/// layer that is not depthwise or whose geometry does not fit.
pub(crate) fn depthwise_geometry(
    attrs: &Conv2dAttrs,
    x_ty: &TensorType,
    wshape: &[usize],
) -> Option<Geometry> {
    if !is_depthwise(wshape, attrs.groups) || x_ty.shape.len() != 4 {
        return None;
    }
    Geometry::of(
        attrs,
        [x_ty.shape[2], x_ty.shape[3]],
        [wshape[2], wshape[3]],
    )
    .ok()
}

/// What a layer computes: its accumulators, or its output levels.
enum Output {
    Accumulators(Vec<i32>),
    Levels(Vec<u8>, Levels),
}

/// Where one image's results go, and how they are finished.
enum Sink<'a> {
    Accumulators(&'a mut [MaybeUninit<i32>]),
    Levels(&'a mut [MaybeUninit<u8>], &'a [i32], Levels),
}

impl QuantConv {
    /// Prepares the layer: `w` its weight constant, the types of its input and result, its
    /// requantization; compiles its kernels for the declared shapes.
    pub fn new(
        attrs: Conv2dAttrs,
        w: Cow<'_, Tensor>,
        x_ty: &TensorType,
        out_ty: &TensorType,
        requant: Requant,
    ) -> Result<QuantConv, String> {
        let conv = QuantConv {
            attrs,
            x_ty: x_ty.clone(),
            out_ty: out_ty.clone(),
            requant,
            weights: Weights {
                home: home_of(&w),
                ..pack_conv(&w, &attrs, x_ty)?
            },
        };
        if x_ty.shape.len() == 4 {
            let (h, wd) = (x_ty.shape[2], x_ty.shape[3]);
            let finish = Finish {
                requant: &conv.requant,
                out_ty,
                bias: Vec::new(),
            };
            let mut epilogues = vec![Epilogue::Accumulators];
            if let Some((_, levels)) = finish.records(0) {
                epilogues.push(Epilogue::Requantize(levels));
            }
            for e in epilogues {
                match &conv.weights.packed {
                    Packed::Depthwise(form, _) => {
                        depthwise::kernel(
                            &Geometry::of(&attrs, [h, wd], [w.shape[2], w.shape[3]])?,
                            *form,
                            e,
                        )?;
                    }
                    Packed::Gemm(panels) => {
                        gemm::kernel(w.shape[1..].iter().product(), panels[0].form, e)?;
                    }
                }
            }
        }
        Ok(conv)
    }

    /// The layer on `x` with weights `w`: requantized (by `finish`) when given, else the
    /// accumulators; with its shape.
    fn compute(
        &self,
        x: &Tensor,
        w: &Tensor,
        finish: Option<&Finish>,
    ) -> Result<(Output, Vec<usize>), String> {
        let fresh;
        let weights = if self.weights.are(weights(w)?) {
            &self.weights
        } else {
            fresh = pack_conv(w, &self.attrs, &self.x_ty)?;
            &fresh
        };
        let (_, zx, _) = per_tensor_params(&self.x_ty, "the input")?;
        let zu = shifted_zero_point(&self.x_ty)?;
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        let (o, cg) = (w.shape[0], w.shape[1]);
        let g = Geometry::of(&self.attrs, [h, wd], [w.shape[2], w.shape[3]])?;
        let [oh, ow] = g.output;
        let plane = oh * ow;
        let k = cg * g.kernel[0] * g.kernel[1];
        let largest_bias = finish.map_or(0, |f| {
            f.bias.iter().map(|b| b.unsigned_abs()).max().unwrap_or(0)
        });
        let max_x = extent_for(x, zx, k, weights.max, largest_bias)?;
        let form = match &weights.packed {
            Packed::Gemm(panels) => panels.first().map(|p| p.form),
            Packed::Depthwise(..) => None,
        };
        // The depthwise kernel stages the stored values itself.
        let xs = form.map(|form| Activations::of(x, zx, form));
        check_accumulator(k, max_x, weights.max)?;
        let bound = k as u128 * u128::from(max_x) * u128::from(weights.max);
        let fused = finish.and_then(|f| f.records(bound));
        let image_len = c * h * wd;
        let run = |i: usize, sink: Sink| match &weights.packed {
            Packed::Depthwise(form, taps) => {
                let image = i * image_len..(i + 1) * image_len;
                let layer = Channels {
                    g: &g,
                    form: *form,
                    zx,
                    zu,
                    taps,
                };
                match &x.data {
                    TensorData::U8(v) => layer.run(&v[image], sink),
                    TensorData::I8(v) => layer.run(&v[image], sink),
                    _ => Err("the input must be 8-bit".into()),
                }
            }
            Packed::Gemm(panels) => {
                let image = xs
                    .as_ref()
                    .ok_or("internal error: no activations for the GEMM")?
                    .image(i, image_len);
                gemm_image(&g, &self.attrs, image, cg, panels, sink)
            }
        };
        let shape = vec![n, o, oh, ow];
        // Every image's run writes all of its outputs (or fails): no zeroing pass first.
        let len = n * o * plane;
        let output = match fused {
            Some((records, levels)) => {
                let mut out: Vec<u8> = Vec::with_capacity(len);
                out.spare_capacity_mut()[..len]
                    .par_chunks_mut((o * plane).max(1))
                    .enumerate()
                    .map(|(i, out)| run(i, Sink::Levels(out, &records, levels)))
                    .collect::<Result<(), String>>()?;
                // SAFETY: every image's run succeeded, so each wrote all of its outputs.
                unsafe { out.set_len(len) };
                Output::Levels(out, levels)
            }
            None => {
                let mut acc: Vec<i32> = Vec::with_capacity(len);
                acc.spare_capacity_mut()[..len]
                    .par_chunks_mut((o * plane).max(1))
                    .enumerate()
                    .map(|(i, acc)| run(i, Sink::Accumulators(acc)))
                    .collect::<Result<(), String>>()?;
                // SAFETY: as above.
                unsafe { acc.set_len(len) };
                Output::Accumulators(acc)
            }
        };
        Ok((output, shape))
    }
}

pub(crate) fn is_depthwise(wshape: &[usize], groups: usize) -> bool {
    wshape.len() == 4 && wshape[1] == 1 && groups > 1 && wshape[0] == groups
}

/// Depthwise channels one thread takes at a time (each task stages into buffers of its own).
const CHANNELS_PER_TASK: usize = 16;

/// A depthwise layer as it runs one image: its geometry, kernel form, input zero point (`zx`,
/// and `zu` shifted to u8) and packed weights.
struct Channels<'a> {
    g: &'a Geometry,
    form: Form,
    zx: i64,
    zu: i64,
    taps: &'a [u32],
}

impl Channels<'_> {
    /// Every channel's output of `image` (its stored values), as `sink` asks, channels over
    /// threads.
    fn run<T: depthwise::Byte>(&self, image: &[T], sink: Sink) -> Result<(), String> {
        match sink {
            Sink::Accumulators(out) => {
                let f = depthwise::kernel(self.g, self.form, Epilogue::Accumulators)?;
                self.all(image, out, f, |_| std::ptr::null());
            }
            Sink::Levels(out, records, levels) => {
                let f = depthwise::kernel(self.g, self.form, Epilogue::Requantize(levels))?;
                self.all(image, out, f, |ch| records[RECORD_WORDS * ch..].as_ptr());
            }
        }
        Ok(())
    }

    /// Every channel's output plane into `out` (i32 accumulators or levels, as `f` writes
    /// them), `record(ch)` the channel's requantization record.
    fn all<T: depthwise::Byte, O: Poolable + Send + Sync>(
        &self,
        image: &[T],
        out: &mut [MaybeUninit<O>],
        f: depthwise::DepthwiseFn,
        record: impl Fn(usize) -> *const i32 + Sync,
    ) {
        match self.form {
            Form::Pairs => {
                self.each::<T, i16, O>(image, out, f, record, |plane, staged, line, fresh| {
                    self.g.stage(plane, self.zx as i16, (staged, line), fresh)
                })
            }
            Form::Quads => {
                self.each::<T, u8, O>(image, out, f, record, |plane, staged, _, fresh| {
                    self.g.stage_quads(plane, self.zu as u8, staged, fresh)
                })
            }
        }
    }

    /// [`Channels::all`] with `stage` staging a channel's plane for the kernel.
    fn each<T: depthwise::Byte, S: Poolable + Send, O: Poolable + Send + Sync>(
        &self,
        image: &[T],
        out: &mut [MaybeUninit<O>],
        f: depthwise::DepthwiseFn,
        record: impl Fn(usize) -> *const i32 + Sync,
        stage: impl Fn(&[T], &mut [S], &mut Vec<S>, bool) + Sync,
    ) {
        let g = self.g;
        let plane_in = g.input[0] * g.input[1];
        let per = depthwise::words_per_channel(g, self.form);
        let sizes = (g.staged_len(self.form), CHANNELS_PER_TASK);
        g.each_plane(out, (sizes, false), |ch, staged, line, target, fresh| {
            stage(
                &image[ch * plane_in..(ch + 1) * plane_in],
                staged,
                line,
                fresh,
            );
            // SAFETY: `staged` and the target have the sizes the kernel was generated for, the
            // taps are the channel's packed words, the record (when the kernel requantizes) the
            // channel's.
            unsafe {
                f(
                    staged.as_ptr() as *const u8,
                    self.taps[ch * per..(ch + 1) * per].as_ptr(),
                    target as *mut u8,
                    record(ch),
                )
            };
        });
    }
}

/// One image of a grouped (or plain) convolution: per group, the im2col matrix (or the input
/// itself for a 1x1 convolution with stride 1 and no padding) times the packed weights.
fn gemm_image(
    g: &Geometry,
    attrs: &Conv2dAttrs,
    image: Image,
    cg: usize,
    panels: &[PackedA],
    mut sink: Sink,
) -> Result<(), String> {
    let [h, w] = g.input;
    let [kh, kw] = g.kernel;
    let plane = g.output[0] * g.output[1];
    let k = cg * kh * kw;
    let pointwise =
        kh == 1 && kw == 1 && attrs.window.strides == [1, 1] && attrs.window.pads == [0; 4];
    let group = |grp: usize| grp * cg * h * w..(grp + 1) * cg * h * w;
    for (grp, a) in panels.iter().enumerate() {
        let packed = match image {
            Image::Centred(x) if pointwise => gemm::pack_pairs(&x[group(grp)], k, plane, plane),
            Image::Centred(x) => {
                let mut cols = Pooled::dirty(k * plane);
                im2col(g, &x[group(grp)], cg, 0, &mut cols);
                gemm::pack_pairs(&cols, k, plane, plane)
            }
            Image::Shifted(x, _) if pointwise => gemm::pack_quads(&x[group(grp)], k, plane, plane),
            Image::Shifted(x, z) => {
                let mut cols = Pooled::dirty(k * plane);
                im2col(g, &x[group(grp)], cg, z, &mut cols);
                gemm::pack_quads(&cols, k, plane, plane)
            }
        };
        let zu = match image {
            Image::Shifted(_, z) => i64::from(z),
            Image::Centred(_) => 0,
        };
        let span = grp * a.m * plane..(grp + 1) * a.m * plane;
        match &mut sink {
            Sink::Accumulators(out) => {
                let (c, ld) = gemm::multiply(a, &packed, plane)?;
                correct((&c, ld), a, zu, plane, &mut out[span]);
            }
            Sink::Levels(out, records, levels) => {
                let records = group_records(records, RECORD_WORDS * grp * a.m, a, zu);
                gemm::multiply_requantized(a, &packed, plane, &records, *levels, &mut out[span])?;
            }
        }
    }
    Ok(())
}

/// Accumulators `c` (`a.m` rows of `plane` values, `ld` apart) with the shifted zero point's share
/// `zu * sum_k w` removed, into `out` (`[a.m][plane]`).
fn correct(
    (c, ld): (&[i32], usize),
    a: &PackedA,
    zu: i64,
    plane: usize,
    out: &mut [MaybeUninit<i32>],
) {
    for ((dst, src), sum) in out
        .chunks_mut(plane.max(1))
        .zip(c.chunks(ld.max(1)))
        .zip(&a.row_sums)
    {
        let delta = (zu * sum) as i32;
        for (d, s) in dst.iter_mut().zip(src) {
            d.write(s.wrapping_sub(delta));
        }
    }
}

/// The records of `a.m` channels starting at record offset `first`, padded to whole row panels,
/// their biases less `zu * sum_k w` (wrapping: the sum the kernel forms is exact modulo 2^32,
/// and the caller checked that the true one fits i32).
pub(crate) fn group_records(records: &[i32], first: usize, a: &PackedA, zu: i64) -> Vec<i32> {
    let m = a.m;
    let mut out = vec![0i32; m.div_ceil(MR) * MR * RECORD_WORDS];
    out[..RECORD_WORDS * m].copy_from_slice(&records[first..first + RECORD_WORDS * m]);
    for (r, sum) in out.chunks_mut(RECORD_WORDS).zip(&a.row_sums) {
        let bias = (i64::from(r[0]) - zu * sum) as i32;
        r[..4].fill(bias);
    }
    out
}

/// The `[cg * kh * kw, OH * OW]` matrix of activations under each window position (`pad` where
/// the window reads padding).
fn im2col<T: Copy + Send + Sync>(g: &Geometry, x: &[T], cg: usize, pad: T, rows: &mut [T]) {
    let [h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output;
    let [sy, sx] = g.strides;
    let [dy, dx] = g.dilations;
    let [pt, pl] = g.pads;
    let plane = oh * ow;
    rows.par_chunks_mut(plane.max(1))
        .enumerate()
        .take(cg * kh * kw)
        .for_each(|(row, dst)| {
            let (c, ky, kx) = (row / (kh * kw), (row / kw) % kh, row % kw);
            let src = &x[c * h * w..(c + 1) * h * w];
            let (first, end) = g.inside_columns(kx);
            for (oy, d) in dst.chunks_exact_mut(ow.max(1)).take(oh).enumerate() {
                let Some(iy) = (oy * sy + ky * dy).checked_sub(pt).filter(|v| *v < h) else {
                    d.fill(pad);
                    continue;
                };
                d[..first].fill(pad);
                d[end..].fill(pad);
                if first < end {
                    let start = iy * w + first * sx + kx * dx - pl;
                    let line = &src[start..];
                    if sx == 1 {
                        d[first..end].copy_from_slice(&line[..end - first]);
                    } else {
                        for (v, s) in d[first..end].iter_mut().zip(line.iter().step_by(sx)) {
                            *v = *s;
                        }
                    }
                }
            }
        });
}

/// Finishes a layer's output: levels as they are, accumulators through `Requant`.
fn finish(output: Output, finish: &Finish, shape: Vec<usize>) -> Tensor {
    match output {
        Output::Levels(bytes, levels) => levels_tensor(bytes, &levels, shape),
        Output::Accumulators(acc) => {
            let plane = shape[2..].iter().product();
            finish
                .requant
                .requantize(&acc, &finish.bias, plane, finish.out_ty, shape)
        }
    }
}

fn accumulators_of(output: Output) -> Result<Vec<i32>, String> {
    match output {
        Output::Accumulators(acc) => Ok(acc),
        Output::Levels(..) => Err("internal error: levels where accumulators were asked".into()),
    }
}

impl OpKernel for QuantConv {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let f = Finish {
            requant: &self.requant,
            out_ty: &self.out_ty,
            bias: bias(inputs.get(2), inputs[1].shape[0]),
        };
        let (output, shape) = self.compute(inputs[0], inputs[1], Some(&f))?;
        Ok(finish(output, &f, shape))
    }

    fn accumulators(&self, x: &Tensor, w: &Tensor) -> Option<Result<Accumulators, String>> {
        Some(
            self.compute(x, w, None)
                .and_then(|(o, shape)| Ok((accumulators_of(o)?, shape))),
        )
    }
}

/// A generated `quant.dense`: x `[N, K]` times w `[M, K]` as one multiply with the batch as
/// columns.
pub struct QuantDense {
    x_ty: TensorType,
    out_ty: TensorType,
    requant: Requant,
    weights: Weights,
}

fn pack_dense(w: &Tensor) -> Result<Weights, String> {
    let v = weights(w)?;
    let ints: Vec<i32> = v.iter().map(|x| i32::from(*x)).collect();
    Ok(Weights {
        source: v.to_vec(),
        packed: Packed::Gemm(vec![PackedA::new(
            v,
            w.shape[0],
            w.shape[1],
            Form::for_depth(w.shape[1]),
        )]),
        max: magnitude(&ints),
        home: None,
    })
}

impl QuantDense {
    /// Prepares the layer (see [`QuantConv::new`]).
    pub fn new(
        w: Cow<'_, Tensor>,
        x_ty: &TensorType,
        out_ty: &TensorType,
        requant: Requant,
    ) -> Result<QuantDense, String> {
        let form = Form::for_depth(w.shape[1]);
        gemm::kernel(w.shape[1], form, Epilogue::Accumulators)?;
        if form == Form::Quads {
            gemm::vector_kernels(w.shape[1])?;
        }
        Ok(QuantDense {
            x_ty: x_ty.clone(),
            out_ty: out_ty.clone(),
            requant,
            weights: Weights {
                home: home_of(&w),
                ..pack_dense(&w)?
            },
        })
    }

    /// The accumulators `[N, M]` of the layer on `x` with weights `w`.
    fn dense_accumulators(&self, x: &Tensor, w: &Tensor) -> Result<(Vec<i32>, Vec<usize>), String> {
        let fresh;
        let weights = if self.weights.are(weights(w)?) {
            &self.weights
        } else {
            fresh = pack_dense(w)?;
            &fresh
        };
        let Packed::Gemm(panels) = &weights.packed else {
            return Err("internal error: dense weights packed for a depthwise kernel".into());
        };
        let (_, zx, _) = per_tensor_params(&self.x_ty, "the input")?;
        let (n, k, m) = (x.shape[0], x.shape[1], w.shape[0]);
        let max_x = extent_for(x, zx, k, weights.max, 0)?;
        check_accumulator(k, max_x, weights.max)?;
        let a = &panels[0];
        let activations = Activations::of(x, zx, a.form);
        if let (true, Activations::Shifted(xs, z)) = (n < VECTOR_BATCH, &activations) {
            // One matrix-vector product per image (the GEMM would pad the batch to 8 columns).
            let mut acc = Vec::with_capacity(n * m);
            for image in xs.chunks(k.max(1)).take(n) {
                let sums = gemm::multiply_vector(a, image)?;
                acc.extend(
                    sums.iter()
                        .zip(&a.row_sums)
                        .map(|(s, w)| s.wrapping_sub((i64::from(*z) * w) as i32)),
                );
            }
            return Ok((acc, vec![n, m]));
        }
        // B is x transposed: K rows of N columns.
        let (packed, zu) = match activations {
            Activations::Centred(xs) => (gemm::pack_pairs(&transpose(&xs, n, k), k, n, n), 0),
            Activations::Shifted(xs, z) => (
                gemm::pack_quads(&transpose(&xs, n, k), k, n, n),
                i64::from(z),
            ),
        };
        let mut c: Vec<i32> = Vec::with_capacity(m * n);
        let (product, ld) = gemm::multiply(a, &packed, n)?;
        correct(
            (&product, ld),
            a,
            zu,
            n,
            &mut c.spare_capacity_mut()[..m * n],
        );
        // SAFETY: `correct` wrote every one of the `m` rows of `n`.
        unsafe { c.set_len(m * n) };
        let mut acc = vec![0i32; n * m];
        for (o, row) in c.chunks(n.max(1)).enumerate().take(m) {
            for (i, v) in row.iter().enumerate() {
                acc[i * m + o] = *v;
            }
        }
        Ok((acc, vec![n, m]))
    }
}

/// Batches below this size run a dense layer as matrix-vector products.
const VECTOR_BATCH: usize = 4;

/// `rows x cols` values transposed.
fn transpose<T: Copy + Default>(values: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = vec![T::default(); rows * cols];
    for (i, row) in values.chunks(cols.max(1)).enumerate().take(rows) {
        for (j, v) in row.iter().enumerate() {
            out[j * rows + i] = *v;
        }
    }
    out
}

impl OpKernel for QuantDense {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let (acc, shape) = self.dense_accumulators(inputs[0], inputs[1])?;
        let bias = bias(inputs.get(2), shape[1]);
        Ok(self.requant.requantize(&acc, &bias, 1, &self.out_ty, shape))
    }

    fn accumulators(&self, x: &Tensor, w: &Tensor) -> Option<Result<Accumulators, String>> {
        Some(self.dense_accumulators(x, w))
    }
}
