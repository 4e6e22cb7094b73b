//! Generated float kernels, bit for bit the reference's: the same operations in the same order on
//! every element, only four at a time (multiply then add, never fused, because the reference
//! rounds the product before adding it).
//!
//! - `nn.conv2d`, depthwise with stride 2 along the row: every output starts from its bias and adds
//!   `w * x` tap by tap, row-major, skipping taps that fall in the padding. The generated kernel
//!   computes the interior (where no tap falls in the padding, and for stride 2 where the eight
//!   values a group of four reads stay in the row); the border is computed in Rust in the same
//!   order.

use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;
use qcc_dialects::Tensor;
use qcc_dialects::ops::attrs::Conv2dAttrs;
use qcc_runtime::OpKernel;
use rayon::prelude::*;

use crate::clif::Loop;
use crate::jit;

/// Lanes of an f32 vector.
const LANES: usize = 4;

/// Groups of four outputs one iteration of the generated row loop computes side by side.
const UNROLL: usize = 4;

/// Channels one task takes at a time.
const PLANES_PER_TASK: usize = 8;

/// The geometry of a float depthwise layer and the interior its kernel computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    input: [usize; 2],
    kernel: [usize; 2],
    output: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 2],
    /// Output rows `[rows.0, rows.1)` read no padding.
    rows: (usize, usize),
    /// Output columns `[cols.0, cols.0 + 4 * groups)` read no padding and stay in the row.
    cols: (usize, usize),
}

impl Plan {
    fn new(attrs: &Conv2dAttrs, input: [usize; 2], kernel: [usize; 2]) -> Result<Plan, String> {
        let w = &attrs.window;
        let (oh, ow) = w.output(input[0], input[1], kernel[0], kernel[1], false)?;
        // Outputs whose every tap along one axis is inside the input: o * s >= pad and
        // o * s - pad + (k - 1) * d + extra < size.
        let inside =
            |size: usize, k: usize, s: usize, d: usize, pad: usize, extra: usize, out: usize| {
                let first = pad.div_ceil(s);
                let span = (k - 1) * d + extra + 1;
                let last = if size + pad >= span {
                    ((size + pad - span) / s + 1).min(out)
                } else {
                    0
                };
                (first.min(last), last)
            };
        let rows = inside(
            input[0],
            kernel[0],
            w.strides[0],
            w.dilations[0],
            w.pads[0],
            0,
            oh,
        );
        // A group of four at stride s reads 4 * s consecutive values.
        let extra = LANES * w.strides[1] - 1;
        let (c0, c1) = inside(
            input[1],
            kernel[1],
            w.strides[1],
            w.dilations[1],
            w.pads[1],
            extra,
            ow,
        );
        Ok(Plan {
            input,
            kernel,
            output: [oh, ow],
            strides: w.strides,
            dilations: w.dilations,
            pads: [w.pads[0], w.pads[1]],
            rows,
            // Every group start in [c0, c1) keeps all its reads inside the row.
            cols: (c0, (c1 - c0).div_ceil(LANES)),
        })
    }

    fn name(&self) -> String {
        format!(
            "fdwconv_{}x{}_k{}x{}_s{}x{}_d{}x{}_p{}x{}_o{}x{}_r{}-{}_c{}+{}",
            self.input[0],
            self.input[1],
            self.kernel[0],
            self.kernel[1],
            self.strides[0],
            self.strides[1],
            self.dilations[0],
            self.dilations[1],
            self.pads[0],
            self.pads[1],
            self.output[0],
            self.output[1],
            self.rows.0,
            self.rows.1,
            self.cols.0,
            self.cols.1
        )
    }

    /// Outputs `cols` of row `y` of one plane as the reference computes them: from the bias, tap
    /// by tap in row-major order, each tap over the outputs whose input it reads is inside the
    /// plane (`row` is the row's outputs).
    fn row(
        &self,
        plane: &[f32],
        taps: &[f32],
        bias: f32,
        y: usize,
        cols: std::ops::Range<usize>,
        row: &mut [f32],
    ) {
        let [h, w] = self.input;
        let [sy, sx] = self.strides;
        let [dy, dx] = self.dilations;
        let [pt, pl] = self.pads;
        row[cols.clone()].fill(bias);
        for ky in 0..self.kernel[0] {
            let Some(iy) = (y * sy + ky * dy).checked_sub(pt).filter(|v| *v < h) else {
                continue;
            };
            let src = &plane[iy * w..(iy + 1) * w];
            for kx in 0..self.kernel[1] {
                let wv = taps[ky * self.kernel[1] + kx];
                // Outputs x with 0 <= x * sx + kx * dx - pl < w.
                let lo = pl.saturating_sub(kx * dx).div_ceil(sx).max(cols.start);
                let hi = (w + pl).saturating_sub(kx * dx).div_ceil(sx).min(cols.end);
                for xo in lo..hi {
                    row[xo] += wv * src[xo * sx + kx * dx - pl];
                }
            }
        }
    }
}

type DepthwiseFn = unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32);

/// The generated interior of `plan`: `(plane, taps, &bias, out plane)`.
fn depthwise_kernel(plan: &Plan) -> Result<DepthwiseFn, String> {
    let ptr = jit::pointer();
    let p = *plan;
    let code = jit::kernel(&plan.name(), &[ptr; 4], |b, args| {
        build_depthwise(b, args, &p)
    })?;
    // SAFETY: generated with exactly this signature, in the platform's C ABI.
    Ok(unsafe { std::mem::transmute::<*const u8, DepthwiseFn>(code) })
}

fn build_depthwise(b: &mut FunctionBuilder, args: &[Value], p: &Plan) {
    let (x, taps, bias, out) = (args[0], args[1], args[2], args[3]);
    let flags = MemFlagsData::new().with_notrap();
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let ptr = jit::pointer();
    let [kh, kw] = p.kernel;
    let [sy, sx] = p.strides;
    let [dy, dx] = p.dilations;
    let (w, ow) = (p.input[1] as i64, p.output[1] as i64);
    let weights: Vec<Value> = (0..kh * kw)
        .map(|t| {
            let v = b.ins().load(types::F32, flags, taps, (4 * t) as i32);
            b.ins().splat(types::F32X4, v)
        })
        .collect();
    let bias = b.ins().load(types::F32, flags, bias, 0);
    let bias = b.ins().splat(types::F32X4, bias);
    // Even lanes of two vectors (stride 2).
    let even = b
        .func
        .dfg
        .immediates
        .push(vec![0u8, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27].into());
    let (r0, r1) = (
        b.ins().iconst(ptr, p.rows.0 as i64),
        b.ins().iconst(ptr, p.rows.1 as i64),
    );
    let rows = Loop::new(b, r0, r1);
    let y = rows.index;
    // Input row of tap row 0 and column of tap column 0 for output column 0, in bytes.
    let in_row = b.ins().imul_imm_s(y, sy as i64 * w * 4);
    let base = b.ins().iadd(x, in_row);
    let out_row = b.ins().imul_imm_s(y, ow * 4);
    let out_row = b.ins().iadd(out, out_row);
    // Groups of four outputs, UNROLL groups per iteration (independent sums), then one at a time.
    let tap = |b: &mut FunctionBuilder, src: Value, ky: usize, kx: usize| -> Value {
        let off = ((ky * dy) as i64 - p.pads[0] as i64) * w + (kx * dx) as i64 - p.pads[1] as i64;
        let off = (off * 4) as i32;
        if sx == 1 {
            b.ins().load(types::F32X4, flags, src, off)
        } else {
            let lo = b.ins().load(types::I8X16, flags, src, off);
            let hi = b.ins().load(types::I8X16, flags, src, off + 16);
            let v = b.ins().shuffle(lo, hi, even);
            b.ins().bitcast(types::F32X4, little, v)
        }
    };
    let emit = |b: &mut FunctionBuilder, first: Value, count: usize| {
        let sources: Vec<(Value, Value)> = (0..count)
            .map(|u| {
                let col = b.ins().imul_imm_s(first, LANES as i64);
                let col = b.ins().iadd_imm_s(col, (p.cols.0 + u * LANES) as i64);
                let src = b.ins().imul_imm_s(col, sx as i64 * 4);
                (col, b.ins().iadd(base, src))
            })
            .collect();
        let mut accs = vec![bias; count];
        for ky in 0..kh {
            for kx in 0..kw {
                for (u, (_, src)) in sources.iter().enumerate() {
                    let v = tap(b, *src, ky, kx);
                    let prod = b.ins().fmul(weights[ky * kw + kx], v);
                    accs[u] = b.ins().fadd(accs[u], prod);
                }
            }
        }
        for ((col, _), acc) in sources.iter().zip(accs) {
            let dst = b.ins().ishl_imm_u(*col, 2);
            let dst = b.ins().iadd(out_row, dst);
            b.ins().store(flags, acc, dst, 0);
        }
    };
    let whole = p.cols.1 / UNROLL * UNROLL;
    let (g0, g1) = (b.ins().iconst(ptr, 0), b.ins().iconst(ptr, whole as i64));
    let unrolled = Loop::stepped(b, g0, g1, UNROLL as i64);
    emit(b, unrolled.index, UNROLL);
    unrolled.close(b);
    let (t0, t1) = (
        b.ins().iconst(ptr, whole as i64),
        b.ins().iconst(ptr, p.cols.1 as i64),
    );
    let tail = Loop::new(b, t0, t1);
    emit(b, tail.index, 1);
    tail.close(b);
    rows.close(b);
    b.ins().return_(&[]);
}

/// A generated float depthwise `nn.conv2d` (stride 2 along the row).
pub struct FloatDepthwise {
    attrs: Conv2dAttrs,
}

impl FloatDepthwise {
    /// Prepares the layer for input shape `x` and weight shape `w`, or `None` when it is not a
    /// depthwise convolution this kernel covers.
    pub fn new(
        attrs: Conv2dAttrs,
        x: &[usize],
        w: &[usize],
    ) -> Result<Option<FloatDepthwise>, String> {
        let depthwise = x.len() == 4
            && w.len() == 4
            && w[1] == 1
            && attrs.groups == x[1]
            && w[0] == x[1]
            && attrs.groups > 1;
        // Stride 1 stays on the reference kernel, which streams each tap over whole rows and is
        // faster than this kernel there (kit MobileNetV2, batch 1: 39 ms against 62 ms over 64
        // images for the 112x112 layer); at stride 2 this one is 2.6x faster.
        if !depthwise || attrs.window.strides[1] != 2 {
            return Ok(None);
        }
        depthwise_kernel(&Plan::new(&attrs, [x[2], x[3]], [w[2], w[3]])?)?;
        Ok(Some(FloatDepthwise { attrs }))
    }
}

fn f32s<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], String> {
    t.as_f32().ok_or_else(|| format!("the {what} must be f32"))
}

impl OpKernel for FloatDepthwise {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let (x, w) = (inputs[0], inputs[1]);
        let (xv, wv) = (f32s(x, "input")?, f32s(w, "weight")?);
        let bias = inputs.get(2).map(|b| f32s(b, "bias")).transpose()?;
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        let plan = Plan::new(&self.attrs, [h, wd], [w.shape[2], w.shape[3]])?;
        let f = depthwise_kernel(&plan)?;
        let [oh, ow] = plan.output;
        let (plane_in, plane_out, per) = (h * wd, oh * ow, w.shape[2] * w.shape[3]);
        let mut out = vec![0f32; n * c * plane_out];
        out.par_chunks_mut(plane_out.max(1))
            .enumerate()
            .with_min_len(PLANES_PER_TASK)
            .for_each(|(i, dst)| {
                let ch = i % c;
                let plane = &xv[i * plane_in..(i + 1) * plane_in];
                let taps = &wv[ch * per..(ch + 1) * per];
                let b = bias.map_or(0.0, |bv| bv[ch]);
                // SAFETY: the kernel reads the plane's interior and writes its outputs only.
                unsafe { f(plane.as_ptr(), taps.as_ptr(), &b, dst.as_mut_ptr()) };
                // The border: whole rows above and below the interior, and the columns left and
                // right of it in between.
                let (c0, c1) = (plan.cols.0, (plan.cols.0 + LANES * plan.cols.1).min(ow));
                for (y, row) in dst.chunks_mut(ow.max(1)).enumerate() {
                    if (plan.rows.0..plan.rows.1).contains(&y) {
                        plan.row(plane, taps, b, y, 0..c0, row);
                        plan.row(plane, taps, b, y, c1..ow, row);
                    } else {
                        plan.row(plane, taps, b, y, 0..ow, row);
                    }
                }
            });
        Ok(Tensor::from_f32(vec![n, c, oh, ow], out))
    }
}
