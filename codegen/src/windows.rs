//! Generated window pooling: `quant.max_pool2d` and `quant.avg_pool2d` of 8-bit tensors and
//! `nn.max_pool2d` and `nn.avg_pool2d` of f32 ones, sixteen outputs of a row per iteration, every
//! tap of the window unrolled.
//!
//! The driver stages each input plane with its padding into one buffer per column phase of the
//! stride (staged column `j` goes to phase `j % stride`, position `j / stride`), so the sixteen
//! inputs a tap reads for sixteen neighbouring outputs are contiguous at any stride, and every
//! tap is one load at a constant offset. The padding holds the smallest level (integer max
//! pooling: a window always has an input position, or the op stays on the reference kernel), the
//! input's zero point (integer average pooling: padding adds nothing to `sum (x - Z_x)`), -inf
//! (float max) or +0.0 (float average: adding +0.0 changes no sum that starts from +0.0).
//!
//! Integer average pooling sums sixteen lanes of i16 (at most 128 taps of 255) and requantizes
//! with the window's fixed-point multiplier; float average pooling adds the taps in the
//! reference's order and divides. For both, the driver recomputes the outputs whose window
//! divides by something else (the border when padding does not count, ceil mode's overhang) with
//! the reference's own arithmetic (`qcc_runtime::pooling`).

use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;
use qcc_dialects::{OpKind, Operation, Tensor, TensorType};
use qcc_runtime::OpKernel;
use qcc_runtime::pooling::PoolGeometry;
use qcc_runtime::quant::{Multiplier as Fixed, avg_multiplier, per_tensor};
use rayon::prelude::*;

use crate::clif::{Levels, Loop, Multiplier, max_ps, pre_shift, splat32, store_levels8};
use crate::elementwise::{Fallback, bytes8, is_f32, levels_of, params8, tensor8};
use crate::jit;
use crate::pool::{Poolable, Pooled};

/// Outputs of a row per iteration.
const LANES: usize = 16;
/// The most taps a window may have: i16 sums of this many levels of 255 stay below 2^15.
const MAX_TAPS: usize = 128;

type PlaneFn = unsafe extern "C" fn(*const u8, *mut u8);

/// Where one plane's padded input sits in the staging buffer.
#[derive(Clone, Copy, Debug)]
struct Staging {
    /// The input plane's height and width.
    h: usize,
    w: usize,
    /// Padding above and to the left.
    top: usize,
    left: usize,
    /// Staged rows and columns (the input with its padding, as far as any tap reads).
    rows: usize,
    cols: usize,
    /// Column phases (the horizontal stride) and the positions of a phase's row.
    phases: usize,
    width: usize,
}

impl Staging {
    /// The layout for windows of `g` over an `h` by `w` input whose output rows are computed
    /// `out_w` wide (a multiple of [`LANES`]).
    fn new(g: &PoolGeometry, h: usize, w: usize, out_w: usize) -> Staging {
        let a = &g.attrs;
        let (s, d) = (a.window.strides, a.window.dilations);
        let reach = |axis: usize, outputs: usize| {
            (outputs.max(1) - 1) * s[axis] + (a.kernel[axis] - 1) * d[axis].max(1) + 1
        };
        let (rows, cols) = (reach(0, g.out[0]), reach(1, out_w));
        let phases = s[1].max(1);
        Staging {
            h,
            w,
            top: a.window.pads[0],
            left: a.window.pads[1],
            rows,
            cols,
            phases,
            width: cols.div_ceil(phases),
        }
    }

    fn len(&self) -> usize {
        self.phases * self.rows * self.width
    }

    /// The offset in elements, from the start of output row 0's first window, of tap `(ky, kx)`.
    fn tap(&self, g: &PoolGeometry, ky: usize, kx: usize) -> usize {
        let d = g.attrs.window.dilations;
        let (row, col) = (ky * d[0].max(1), kx * d[1].max(1));
        (col % self.phases * self.rows + row) * self.width + col / self.phases
    }

    /// Writes `plane` and the padding (`fill`) into `dst`.
    fn stage<T: Copy>(&self, plane: &[T], dst: &mut [T], fill: T) {
        dst.fill(fill);
        // Input columns whose staged column some tap reads.
        let read = self.cols.saturating_sub(self.left).min(self.w);
        for (r, src) in plane.chunks_exact(self.w).enumerate().take(self.h) {
            let row = r + self.top;
            if row >= self.rows {
                break;
            }
            if self.phases == 1 {
                let at = row * self.width + self.left;
                dst[at..at + read].copy_from_slice(&src[..read]);
                continue;
            }
            for phase in 0..self.phases {
                // The first input column of this phase, and where it lands.
                let first = (phase + self.phases - self.left % self.phases) % self.phases;
                let at = (phase * self.rows + row) * self.width + (first + self.left) / self.phases;
                let lane = src[..read].iter().skip(first).step_by(self.phases);
                for (d, v) in dst[at..].iter_mut().zip(lane) {
                    *d = *v;
                }
            }
        }
    }
}

/// What a generated window kernel reduces with.
#[derive(Clone, Copy, Debug)]
enum Reduce {
    /// The largest f32 (`maxps` with the tap first: a NaN tap is skipped).
    FloatMax,
    /// The sum from +0.0 of the taps in order, divided by `d`.
    FloatAvg { d: f32 },
    /// The largest stored level.
    Max,
    /// `Z_y + M * sum (x - Z_x)` over the whole window (`taps * Z_x` taken out), the sum
    /// shifted left by `pre` first ([`pre_shift`]).
    Avg {
        zx: i64,
        m: Fixed,
        pre: u32,
        levels: Levels,
    },
}

/// A generated `quant.max_pool2d` or `quant.avg_pool2d` for one geometry and one set of
/// quantization constants.
pub struct QuantPool {
    planes: Planes,
    /// The padding's byte.
    fill: u8,
    signed: bool,
    /// The input's zero point.
    zx: i64,
    /// Average pooling: the outputs whose divisor is not the whole window's, each with its
    /// multiplier, and the output's zero point and bounds.
    patches: Vec<(usize, usize, Fixed)>,
    zero_point: i64,
    bounds: (i64, i64),
    fallback: Fallback,
}

impl QuantPool {
    /// Prepares the op (operand types `types`), or `None` for inputs that are not 8-bit
    /// `[N, C, H, W]`, windows of more than 128 taps, a window that reads no input (max pooling)
    /// and multipliers the vector arithmetic would not compute exactly (average pooling).
    pub fn new(op: &Operation, types: &[&TensorType]) -> Result<Option<QuantPool>, String> {
        let x = types[0];
        let out = &op.results[0];
        let (Some((sx, zx, signed)), Some(levels)) = (params8(x), levels_of(out, None)) else {
            return Ok(None);
        };
        if x.shape.len() != 4 || out.shape.len() != 4 || levels.signed != signed {
            return Ok(None);
        }
        let g = PoolGeometry::of(op)?;
        let (h, w) = (x.shape[2], x.shape[3]);
        let [oh, ow] = g.out;
        let [kh, kw] = g.attrs.kernel;
        let taps = kh * kw;
        if taps == 0 || taps > MAX_TAPS || oh == 0 || ow == 0 {
            return Ok(None);
        }
        let out_w = ow.div_ceil(LANES) * LANES;
        let (reduce, fill, patches) = if op.is(OpKind::QuantMaxPool2d) {
            let empty = (0..oh).any(|y| g.taps(0, y, h).count == 0)
                || (0..ow).any(|o| g.taps(1, o, w).count == 0);
            if empty {
                return Ok(None);
            }
            (Reduce::Max, if signed { 0x80u8 } else { 0 }, Vec::new())
        } else {
            let (sy, _, _) = per_tensor(out).ok_or("the result must be per-tensor quantized")?;
            let m = avg_multiplier(sx, sy, taps);
            // `|t| <= taps * 255 < 2^15`.
            let Some(pre) = pre_shift(m.m0, m.shift, 16) else {
                return Ok(None);
            };
            let patches = partial_windows(&g, h, w)
                .map(|(y, o, d)| (y, o, avg_multiplier(sx, sy, d)))
                .collect();
            (Reduce::Avg { zx, m, pre, levels }, zx as u8, patches)
        };
        let staging = Staging::new(&g, h, w, out_w);
        let kernel = plane_kernel(&g, &staging, out_w, signed, reduce)?;
        Ok(Some(QuantPool {
            planes: Planes {
                kernel,
                geometry: g,
                staging,
                out_w,
            },
            fill,
            signed,
            zx,
            patches,
            zero_point: i64::from(levels.zero_point),
            bounds: (i64::from(levels.bounds.0), i64::from(levels.bounds.1)),
            fallback: Fallback::new(op, types),
        }))
    }

    /// The level of output `(y, x)` computed from `plane` as the reference computes it.
    fn patch(&self, plane: &[u8], y: usize, x: usize, m: &Fixed) -> u8 {
        let (h, w) = (self.planes.staging.h, self.planes.staging.w);
        let level = |i: usize| {
            if self.signed {
                plane[i] as i8 as i64
            } else {
                plane[i] as i64
            }
        };
        let sum = self
            .planes
            .geometry
            .sum((y, x), (h, w), |i| level(i) - self.zx);
        (self.zero_point + m.apply(sum)).clamp(self.bounds.0, self.bounds.1) as u8
    }
}

/// The outputs `(y, x, divisor)` of an average over an `h` by `w` input whose divisor is not the
/// whole window's (the kernels divide by that; these are patched).
fn partial_windows(
    g: &PoolGeometry,
    h: usize,
    w: usize,
) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
    let taps = g.attrs.kernel[0] * g.attrs.kernel[1];
    let [oh, ow] = g.out;
    (0..oh)
        .flat_map(move |y| (0..ow).map(move |x| (y, x, g.divisor(y, x, h, w))))
        .filter(move |&(_, _, d)| d != taps)
}

/// Generates the kernel that pools one staged plane into rows `out_w` wide.
fn plane_kernel(
    g: &PoolGeometry,
    staging: &Staging,
    out_w: usize,
    signed: bool,
    reduce: Reduce,
) -> Result<PlaneFn, String> {
    let a = &g.attrs;
    let [kh, kw] = a.kernel;
    let (s, d) = (a.window.strides, a.window.dilations);
    let what = match reduce {
        Reduce::FloatMax => "fmax".to_string(),
        Reduce::FloatAvg { d } => format!("favg{:08x}", d.to_bits()),
        Reduce::Max => "max".to_string(),
        Reduce::Avg { zx, m, levels, .. } => {
            format!("avg{zx}_{}x{}_{}", m.m0, m.shift, levels.tag())
        }
    };
    let name = format!(
        "qpool_{what}_{}_o{}x{out_w}_k{kh}x{kw}_s{}x{}_d{}x{}_st{}x{}x{}",
        if signed { "i" } else { "u" },
        g.out[0],
        s[0],
        s[1],
        d[0],
        d[1],
        staging.phases,
        staging.rows,
        staging.width,
    );
    let elem = match reduce {
        Reduce::FloatMax | Reduce::FloatAvg { .. } => 4,
        Reduce::Max | Reduce::Avg { .. } => 1,
    };
    let taps: Vec<i32> = (0..kh)
        .flat_map(|ky| (0..kw).map(move |kx| (ky, kx)))
        .map(|(ky, kx)| (staging.tap(g, ky, kx) * elem) as i32)
        .collect();
    let row_step = (s[0] * staging.width * elem) as i64;
    let ptr = jit::pointer();
    let code = jit::kernel(&name, &[ptr; 2], |b, args| {
        let (src, dst) = (args[0], args[1]);
        let flags = MemFlagsData::new().with_notrap();
        // The staged plane is not written while the kernel runs: loads Cranelift may place next
        // to their use (else a window's loads are all issued first and, past sixteen, spill).
        let fixed = flags.with_readonly().with_can_move();
        let zero = b.ins().iconst(ptr, 0);
        let rows = b.ins().iconst(ptr, g.out[0] as i64);
        let y = Loop::new(b, zero, rows);
        let src_row = b.ins().imul_imm_s(y.index, row_step);
        let src_row = b.ins().iadd(src, src_row);
        let dst_row = b.ins().imul_imm_s(y.index, (out_w * elem) as i64);
        let dst_row = b.ins().iadd(dst, dst_row);
        let groups = b.ins().iconst(ptr, (out_w * elem) as i64);
        let x = Loop::stepped(b, zero, groups, (LANES * elem) as i64);
        let at = b.ins().iadd(src_row, x.index);
        let to = b.ins().iadd(dst_row, x.index);
        let load = |b: &mut FunctionBuilder, off: i32| b.ins().load(types::I8X16, fixed, at, off);
        let load_f = |b: &mut FunctionBuilder, off: i32| b.ins().load(types::F32X4, fixed, at, off);
        match reduce {
            Reduce::FloatMax | Reduce::FloatAvg { .. } => {
                let start = match reduce {
                    Reduce::FloatMax => f32::NEG_INFINITY,
                    _ => 0.0,
                };
                let start = b.ins().f32const(start);
                let start = b.ins().splat(types::F32X4, start);
                let mut acc = [start; LANES / 4];
                for off in &taps {
                    for (j, a) in acc.iter_mut().enumerate() {
                        let v = load_f(b, off + 16 * j as i32);
                        *a = match reduce {
                            Reduce::FloatMax => max_ps(b, v, *a),
                            _ => b.ins().fadd(*a, v),
                        };
                    }
                }
                for (j, a) in acc.into_iter().enumerate() {
                    let r = match reduce {
                        Reduce::FloatAvg { d } => {
                            let d = b.ins().f32const(d);
                            let d = b.ins().splat(types::F32X4, d);
                            b.ins().fdiv(a, d)
                        }
                        _ => a,
                    };
                    b.ins().store(flags, r, to, 16 * j as i32);
                }
            }
            Reduce::Max => {
                let mut best = load(b, taps[0]);
                for off in &taps[1..] {
                    let v = load(b, *off);
                    best = if signed {
                        b.ins().smax(best, v)
                    } else {
                        b.ins().umax(best, v)
                    };
                }
                b.ins().store(flags, best, to, 0);
            }
            Reduce::Avg { zx, m, pre, levels } => {
                let widen = |b: &mut FunctionBuilder, v: Value, high: bool| match (signed, high) {
                    (true, false) => b.ins().swiden_low(v),
                    (true, true) => b.ins().swiden_high(v),
                    (false, false) => b.ins().uwiden_low(v),
                    (false, true) => b.ins().uwiden_high(v),
                };
                let mut sums: Option<[Value; 2]> = None;
                for off in &taps {
                    let v = load(b, *off);
                    let halves = [widen(b, v, false), widen(b, v, true)];
                    sums = Some(match sums {
                        None => halves,
                        Some(s) => [0, 1].map(|j| b.ins().iadd(s[j], halves[j])),
                    });
                }
                let sums = sums.expect("a window has taps");
                let multiplier = Multiplier::shifted(b, m.m0, m.shift, pre);
                let share = splat32(b, taps.len() as i64 * zx);
                let quads = [
                    b.ins().swiden_low(sums[0]),
                    b.ins().swiden_high(sums[0]),
                    b.ins().swiden_low(sums[1]),
                    b.ins().swiden_high(sums[1]),
                ]
                .map(|q| {
                    let t = b.ins().isub(q, share);
                    multiplier.apply(b, t)
                });
                store_levels8(b, [quads[0], quads[1]], &levels, to);
                let upper = b.ins().iadd_imm_s(to, 8);
                store_levels8(b, [quads[2], quads[3]], &levels, upper);
            }
        }
        x.close(b);
        y.close(b);
        b.ins().return_(&[]);
    })?;
    // SAFETY: generated with exactly this signature, in the platform's C ABI.
    Ok(unsafe { std::mem::transmute::<*const u8, PlaneFn>(code) })
}

/// A generated plane kernel with the layout it reads and writes.
struct Planes {
    kernel: PlaneFn,
    geometry: PoolGeometry,
    staging: Staging,
    /// Output rows as the kernel writes them (a multiple of [`LANES`]).
    out_w: usize,
}

impl Planes {
    /// Whether `x` is an `[N, C, H, W]` tensor of the planes the kernel was generated for.
    fn fits(&self, x: &Tensor) -> bool {
        x.shape.len() == 4 && x.shape[2..] == [self.staging.h, self.staging.w]
    }

    /// Runs the kernel over every plane of `x` (elements `input`) into a new `[N, C, oh, ow]`
    /// buffer, planes in parallel: each staged with `fill`, pooled into rows `out_w` wide,
    /// copied out through `finish`, then handed to `patch` (output plane, input plane).
    fn run<T: Poolable + Send + Sync>(
        &self,
        x: &Tensor,
        input: &[T],
        fill: T,
        finish: impl Fn(T) -> T + Sync,
        patch: impl Fn(&mut [T], &[T]) + Sync,
    ) -> (Vec<T>, Vec<usize>) {
        let (st, out_w) = (&self.staging, self.out_w);
        let [oh, ow] = self.geometry.out;
        let shape = vec![x.shape[0], x.shape[1], oh, ow];
        let mut out = vec![T::default(); shape.iter().product()];
        let plane = st.h * st.w;
        if plane == 0 || oh * ow == 0 {
            return (out, shape);
        }
        let bytes = std::mem::size_of::<T>();
        out.par_chunks_mut(oh * ow)
            .zip(input.par_chunks(plane))
            .with_min_len((1 << 14) / (plane * bytes) + 1)
            .for_each(|(dst, plane)| {
                let mut staged = Pooled::<T>::dirty(st.len());
                let mut rows = Pooled::<T>::dirty(oh * out_w);
                st.stage(plane, &mut staged, fill);
                // SAFETY: the staging buffer holds every position a tap reads (`Staging`
                // reaches the last tap of the last lane of every row); `rows` holds `oh` rows
                // `out_w` wide. The kernel was generated for this element type.
                unsafe {
                    (self.kernel)(staged.as_ptr() as *const u8, rows.as_mut_ptr() as *mut u8)
                };
                for (d, r) in dst.chunks_exact_mut(ow).zip(rows.chunks_exact(out_w)) {
                    for (o, v) in d.iter_mut().zip(r) {
                        *o = finish(*v);
                    }
                }
                patch(dst, plane);
            });
        (out, shape)
    }
}

impl OpKernel for QuantPool {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let x = inputs[0];
        match bytes8(x) {
            Some((bytes, signed)) if signed == self.signed && self.planes.fits(x) => {
                let ow = self.planes.geometry.out[1];
                let (out, shape) = self.planes.run(
                    x,
                    bytes,
                    self.fill,
                    |v| v,
                    |dst, plane| {
                        for (y, o, m) in &self.patches {
                            dst[y * ow + o] = self.patch(plane, *y, *o, m);
                        }
                    },
                );
                Ok(tensor8(out, self.signed, shape))
            }
            _ => self.fallback.run(inputs),
        }
    }
}

/// A generated float `nn.max_pool2d` or `nn.avg_pool2d` for one geometry, bit for bit the
/// reference's (`PoolGeometry::float_max`, `PoolGeometry::float_average`).
pub struct FloatPool {
    planes: Planes,
    max: bool,
    /// Average pooling: the outputs whose divisor is not the whole window's.
    patches: Vec<(usize, usize)>,
    fallback: Fallback,
}

impl FloatPool {
    /// Prepares the op (its input type `x`), or `None` for an input that is not f32
    /// `[N, C, H, W]` or windows of more than 128 taps.
    pub fn new(op: &Operation, x: &TensorType) -> Result<Option<FloatPool>, String> {
        let out = &op.results[0];
        if !is_f32(x) || x.shape.len() != 4 || out.shape.len() != 4 {
            return Ok(None);
        }
        let g = PoolGeometry::of(op)?;
        let (h, w) = (x.shape[2], x.shape[3]);
        let [oh, ow] = g.out;
        let taps = g.attrs.kernel[0] * g.attrs.kernel[1];
        if taps == 0 || taps > MAX_TAPS || oh == 0 || ow == 0 {
            return Ok(None);
        }
        let max = op.is(OpKind::MaxPool2d);
        let patches = if max {
            Vec::new()
        } else {
            partial_windows(&g, h, w).map(|(y, o, _)| (y, o)).collect()
        };
        let out_w = ow.div_ceil(LANES) * LANES;
        let staging = Staging::new(&g, h, w, out_w);
        let reduce = if max {
            Reduce::FloatMax
        } else {
            Reduce::FloatAvg { d: taps as f32 }
        };
        let kernel = plane_kernel(&g, &staging, out_w, false, reduce)?;
        Ok(Some(FloatPool {
            planes: Planes {
                kernel,
                geometry: g,
                staging,
                out_w,
            },
            max,
            patches,
            fallback: Fallback::new(op, &[x]),
        }))
    }
}

impl OpKernel for FloatPool {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let x = inputs[0];
        match x.as_f32() {
            Some(values) if self.planes.fits(x) => {
                let (g, st) = (&self.planes.geometry, &self.planes.staging);
                let ow = g.out[1];
                let fill = if self.max { f32::NEG_INFINITY } else { 0.0 };
                let finish = qcc_runtime::float::canonical_nan;
                let (out, shape) = self.planes.run(x, values, fill, finish, |dst, plane| {
                    for &(y, o) in &self.patches {
                        dst[y * ow + o] = g.float_average(plane, (y, o), (st.h, st.w));
                    }
                });
                Ok(Tensor::from_f32(shape, out))
            }
            _ => self.fallback.run(inputs),
        }
    }
}
