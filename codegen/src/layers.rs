//! The generated `quant.conv2d` and `quant.dense`: exact i32 accumulators from the generated
//! kernels ([`crate::gemm`], [`crate::depthwise`]), then the one requantization of
//! `qcc_runtime::quant`, so the integer results are the reference's bit for bit.

use qcc_dialects::ops::attrs::Conv2dAttrs;
use qcc_dialects::{Tensor, TensorData, TensorType};
use qcc_runtime::OpKernel;
use qcc_runtime::quant::{Requant, check_accumulator, magnitude, per_tensor_params, stored_ints};
use rayon::prelude::*;

use crate::depthwise::{self, Geometry};
use crate::gemm::{self, PackedA};

/// The i8 weights of `w`, or an error.
fn weights(w: &Tensor) -> Result<&[i8], String> {
    match &w.data {
        TensorData::I8(v) => Ok(v),
        other => Err(format!("the weight must be i8, got {}", other.dtype_name())),
    }
}

/// The i32 bias of a layer with `channels` outputs (zeros without one).
fn bias(b: Option<&&Tensor>, channels: usize) -> Vec<i64> {
    b.map_or(vec![0; channels], |b| {
        stored_ints(b).into_iter().map(i64::from).collect()
    })
}

/// The stored values of `x` and the largest `|x - Z_x|`.
fn centred(x: &Tensor, zero_point: i64) -> (Vec<i32>, u32) {
    let values = stored_ints(x);
    let (lo, hi) = values
        .iter()
        .fold((i32::MAX, i32::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let z = zero_point as i32;
    let max = if values.is_empty() {
        0
    } else {
        magnitude(&[lo.saturating_sub(z), hi.saturating_sub(z)])
    };
    (values, max)
}

/// How a layer's weights are laid out for its kernel.
enum Packed {
    /// One packed matrix per group.
    Gemm(Vec<PackedA>),
    /// One tap list per channel.
    Depthwise(Vec<i32>),
}

/// A weight tensor packed once, remembered by its contents so a run with other weights repacks.
struct Weights {
    source: Vec<i8>,
    packed: Packed,
    max: u32,
}

/// A generated `quant.conv2d`.
pub struct QuantConv {
    attrs: Conv2dAttrs,
    x_ty: TensorType,
    out_ty: TensorType,
    requant: Requant,
    weights: Weights,
}

fn pack_conv(w: &Tensor, groups: usize, depthwise: bool) -> Result<Weights, String> {
    let v = weights(w)?;
    let (o, k) = (w.shape[0], w.shape[1..].iter().product::<usize>());
    let packed = if depthwise {
        Packed::Depthwise(v.iter().map(|x| i32::from(*x)).collect())
    } else {
        let og = o / groups;
        Packed::Gemm(
            (0..groups)
                .map(|g| PackedA::new(&v[g * og * k..(g + 1) * og * k], og, k))
                .collect(),
        )
    };
    let ints: Vec<i32> = v.iter().map(|x| i32::from(*x)).collect();
    Ok(Weights {
        source: v.to_vec(),
        packed,
        max: magnitude(&ints),
    })
}

impl QuantConv {
    /// Prepares the layer: `w` its weight constant, the types of its input and result, its
    /// requantization; compiles its kernels for the declared shapes.
    pub fn new(
        attrs: Conv2dAttrs,
        w: &Tensor,
        x_ty: &TensorType,
        out_ty: &TensorType,
        requant: Requant,
    ) -> Result<QuantConv, String> {
        let conv = QuantConv {
            attrs,
            x_ty: x_ty.clone(),
            out_ty: out_ty.clone(),
            requant,
            weights: pack_conv(w, attrs.groups, is_depthwise(&w.shape, attrs.groups))?,
        };
        if x_ty.shape.len() == 4 {
            let [_, _, h, wd] = [x_ty.shape[0], x_ty.shape[1], x_ty.shape[2], x_ty.shape[3]];
            match &conv.weights.packed {
                Packed::Depthwise(_) => {
                    depthwise::kernel(&conv.geometry(h, wd, &w.shape)?)?;
                }
                Packed::Gemm(_) => {
                    gemm::kernel(w.shape[1..].iter().product())?;
                }
            }
        }
        Ok(conv)
    }

    fn geometry(&self, h: usize, w: usize, wshape: &[usize]) -> Result<Geometry, String> {
        let (kh, kw) = (wshape[2], wshape[3]);
        let win = &self.attrs.window;
        let (oh, ow) = win.output(h, w, kh, kw, false)?;
        Ok(Geometry {
            input: [h, w],
            kernel: [kh, kw],
            output: [oh, ow],
            strides: win.strides,
            dilations: win.dilations,
            pads: [win.pads[0], win.pads[1]],
        })
    }

    fn conv_accumulators(&self, x: &Tensor, w: &Tensor) -> Result<(Vec<i32>, Vec<usize>), String> {
        let fresh;
        let weights = if weights(w)? == self.weights.source.as_slice() {
            &self.weights
        } else {
            fresh = pack_conv(
                w,
                self.attrs.groups,
                is_depthwise(&w.shape, self.attrs.groups),
            )?;
            &fresh
        };
        let (_, zx, _) = per_tensor_params(&self.x_ty, "the input")?;
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        let (o, cg) = (w.shape[0], w.shape[1]);
        let g = self.geometry(h, wd, &w.shape)?;
        let [oh, ow] = g.output;
        let plane = oh * ow;
        let (xs, max_x) = centred(x, zx);
        check_accumulator(cg * g.kernel[0] * g.kernel[1], max_x, weights.max)?;
        let mut acc = vec![0i32; n * o * plane];
        let groups = self.attrs.groups;
        let image_len = c * h * wd;
        let results: Vec<Result<(), String>> = acc
            .par_chunks_mut((o * plane).max(1))
            .zip(xs.par_chunks(image_len.max(1)))
            .map(|(out, image)| match &weights.packed {
                Packed::Depthwise(taps) => depthwise_image(&g, image, zx as i32, taps, out),
                Packed::Gemm(panels) => {
                    gemm_image(&g, &self.attrs, image, zx as i32, cg, groups, panels, out)
                }
            })
            .collect();
        results.into_iter().collect::<Result<(), String>>()?;
        Ok((acc, vec![n, o, oh, ow]))
    }
}

fn is_depthwise(wshape: &[usize], groups: usize) -> bool {
    wshape.len() == 4 && wshape[1] == 1 && groups > 1 && wshape[0] == groups
}

/// One image of a depthwise layer, channels over threads.
fn depthwise_image(
    g: &Geometry,
    image: &[i32],
    zx: i32,
    taps: &[i32],
    out: &mut [i32],
) -> Result<(), String> {
    let f = depthwise::kernel(g)?;
    let (plane_in, plane_out) = (g.input[0] * g.input[1], g.output[0] * g.output[1]);
    let per = g.kernel[0] * g.kernel[1];
    out.par_chunks_mut(plane_out.max(1))
        .enumerate()
        .for_each_init(
            || (vec![0i16; g.staged_len()], vec![0i32; g.out_len()]),
            |(staged, padded), (ch, dst)| {
                g.stage(&image[ch * plane_in..(ch + 1) * plane_in], zx, staged);
                // SAFETY: `staged` and `padded` have the sizes the kernel was generated for.
                unsafe {
                    f(
                        staged.as_ptr(),
                        taps[ch * per..(ch + 1) * per].as_ptr(),
                        padded.as_mut_ptr(),
                    )
                };
                g.compact(padded, dst);
            },
        );
    Ok(())
}

/// One image of a grouped (or plain) convolution: per group, the im2col matrix (or the input
/// itself for a 1x1 convolution with stride 1 and no padding) times the packed weights.
#[allow(clippy::too_many_arguments)]
fn gemm_image(
    g: &Geometry,
    attrs: &Conv2dAttrs,
    image: &[i32],
    zx: i32,
    cg: usize,
    groups: usize,
    panels: &[PackedA],
    out: &mut [i32],
) -> Result<(), String> {
    let [h, w] = g.input;
    let [kh, kw] = g.kernel;
    let [oh, ow] = g.output;
    let plane = oh * ow;
    let k = cg * kh * kw;
    let pointwise =
        kh == 1 && kw == 1 && attrs.window.strides == [1, 1] && attrs.window.pads == [0; 4];
    let mut rows = vec![0i16; k * plane];
    for (grp, a) in panels.iter().enumerate().take(groups) {
        let x = &image[grp * cg * h * w..(grp + 1) * cg * h * w];
        if pointwise {
            rows.par_iter_mut()
                .zip(x.par_iter())
                .for_each(|(r, v)| *r = (*v - zx) as i16);
        } else {
            im2col(g, x, zx, cg, &mut rows);
        }
        let packed = gemm::pack_b(&rows, k, plane, plane);
        let c = gemm::multiply(a, &packed, plane)?;
        out[grp * a.m * plane..(grp + 1) * a.m * plane].copy_from_slice(&c);
    }
    Ok(())
}

/// The `[cg * kh * kw, OH * OW]` matrix of `x - Z_x` under each window position (0 in padding).
fn im2col(g: &Geometry, x: &[i32], zx: i32, cg: usize, rows: &mut [i16]) {
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
            for oy in 0..oh {
                let iy = (oy * sy + ky * dy).checked_sub(pt).filter(|v| *v < h);
                for ox in 0..ow {
                    let ix = (ox * sx + kx * dx).checked_sub(pl).filter(|v| *v < w);
                    dst[oy * ow + ox] = match (iy, ix) {
                        (Some(iy), Some(ix)) => (src[iy * w + ix] - zx) as i16,
                        _ => 0,
                    };
                }
            }
        });
}

impl OpKernel for QuantConv {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let (acc, shape) = self.conv_accumulators(inputs[0], inputs[1])?;
        let bias = bias(inputs.get(2), shape[1]);
        let plane = shape[2] * shape[3];
        Ok(self
            .requant
            .requantize(&acc, &bias, plane, &self.out_ty, shape))
    }

    fn accumulators(
        &self,
        x: &Tensor,
        w: &Tensor,
    ) -> Option<Result<(Vec<i32>, Vec<usize>), String>> {
        Some(self.conv_accumulators(x, w))
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
        packed: Packed::Gemm(vec![PackedA::new(v, w.shape[0], w.shape[1])]),
        max: magnitude(&ints),
    })
}

impl QuantDense {
    /// Prepares the layer (see [`QuantConv::new`]).
    pub fn new(
        w: &Tensor,
        x_ty: &TensorType,
        out_ty: &TensorType,
        requant: Requant,
    ) -> Result<QuantDense, String> {
        gemm::kernel(w.shape[1])?;
        Ok(QuantDense {
            x_ty: x_ty.clone(),
            out_ty: out_ty.clone(),
            requant,
            weights: pack_dense(w)?,
        })
    }

    fn dense_accumulators(&self, x: &Tensor, w: &Tensor) -> Result<(Vec<i32>, Vec<usize>), String> {
        let fresh;
        let weights = if weights(w)? == self.weights.source.as_slice() {
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
        let (xs, max_x) = centred(x, zx);
        check_accumulator(k, max_x, weights.max)?;
        // B is x transposed: K rows of N columns.
        let mut rows = vec![0i16; k * n];
        for (i, image) in xs.chunks(k.max(1)).enumerate().take(n) {
            for (j, v) in image.iter().enumerate() {
                rows[j * n + i] = (*v - zx as i32) as i16;
            }
        }
        let packed = gemm::pack_b(&rows, k, n, n);
        let c = gemm::multiply(&panels[0], &packed, n)?;
        let mut acc = vec![0i32; n * m];
        for (o, row) in c.chunks(n.max(1)).enumerate().take(m) {
            for (i, v) in row.iter().enumerate() {
                acc[i * m + o] = *v;
            }
        }
        Ok((acc, vec![n, m]))
    }
}

impl OpKernel for QuantDense {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let (acc, shape) = self.dense_accumulators(inputs[0], inputs[1])?;
        let bias = bias(inputs.get(2), shape[1]);
        Ok(self.requant.requantize(&acc, &bias, 1, &self.out_ty, shape))
    }

    fn accumulators(
        &self,
        x: &Tensor,
        w: &Tensor,
    ) -> Option<Result<(Vec<i32>, Vec<usize>), String>> {
        Some(self.dense_accumulators(x, w))
    }
}
