//! Generated reductions: `quant.global_avg_pool` of 8-bit tensors, and float
//! `nn.global_avg_pool` ([`FloatGlobalAvgPool`]) and `nn.softmax` ([`FloatSoftmax`]). Each call sums eight planes
//! (widened to i32 lanes, sixteen bytes per load), subtracts the zero point's share and
//! requantizes the eight sums with the fixed-point multiplier (`clif::Multiplier`, as
//! `docs/quantization.md` states for pooling). The driver copies the planes
//! into rows of a multiple of sixteen bytes (zeros after the data, which add nothing) and pads
//! the plane count to a multiple of eight, so the kernel never reads past its buffer.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, types};
use cranelift_frontend::FunctionBuilder;
use qcc_dialects::{Operation, Tensor, TensorType};
use qcc_runtime::OpKernel;
use qcc_runtime::quant::{Multiplier as Fixed, per_tensor};
use rayon::prelude::*;

use crate::clif::Levels;
use crate::clif::{Loop, Multiplier, splat32, store_levels8};
use crate::elementwise::{Fallback, bytes8, is_f32, levels_of, params8, tensor8};
use crate::emit::{Shape, Sink};
use crate::jit;
use cranelift_module::FuncId;

/// Planes per kernel iteration.
pub(crate) const PLANES: usize = 8;
/// Bytes per load.
pub(crate) const BLOCK: usize = 16;
/// Groups of planes per parallel task.
const GROUPS_PER_TASK: usize = 16;

type ReduceFn = unsafe extern "C" fn(*const u8, *mut u8, i64);

/// A generated `quant.global_avg_pool` for one plane size and one set of quantization constants.
pub struct QuantGlobalAvgPool {
    kernel: ReduceFn,
    plane: usize,
    row: usize,
    signed: bool,
    out_signed: bool,
    fallback: Fallback,
}

/// What the kernel of one `quant.global_avg_pool` is specialised on.
pub(crate) struct Pooling {
    /// Values per plane.
    pub(crate) plane: usize,
    /// The input's zero point.
    pub(crate) zx: i64,
    /// Whether the input is stored as i8.
    pub(crate) signed: bool,
    /// `S_x / (plane * S_y)` as a fixed-point multiplier.
    pub(crate) m: Fixed,
    /// The output's levels.
    pub(crate) levels: Levels,
}

impl Pooling {
    /// The constants of `op` over input type `x`, or `None` when the input is not an 8-bit
    /// `[N, C, H, W]` tensor or the multiplier is 1 or more (the vector arithmetic would not be
    /// exact).
    pub(crate) fn of(op: &Operation, x: &TensorType) -> Option<Pooling> {
        let out = &op.results[0];
        let (Some((sx, zx, signed)), Some(levels)) = (params8(x), levels_of(out, None)) else {
            return None;
        };
        if x.shape.len() != 4 {
            return None;
        }
        let plane = x.shape[2] * x.shape[3];
        let (sy, _, _) = per_tensor(out)?;
        // The reference's constants (runtime/src/kernels/quant.rs, `global_avg_pool`).
        let m = Fixed::new(sx / (plane as f64 * sy));
        // `|sum - plane * zx|` stays below 2^31 when `plane * 255 < 2^31`.
        if m.shift < 31 || plane == 0 || plane >= (1 << 23) {
            return None;
        }
        Some(Pooling {
            plane,
            zx,
            signed,
            m,
            levels,
        })
    }

    /// Bytes of one plane's row in the kernel's input (the plane rounded up to [`BLOCK`]).
    pub(crate) fn row(&self) -> usize {
        self.plane.div_ceil(BLOCK) * BLOCK
    }

    /// Defines the kernel in `sink` (see [`define`]).
    pub(crate) fn define(&self, sink: &mut dyn Sink) -> Result<FuncId, String> {
        define(
            sink,
            self.plane,
            self.zx,
            self.signed,
            &self.m,
            &self.levels,
        )
    }
}

impl QuantGlobalAvgPool {
    /// Prepares the op (operand types `types`), or `None` when [`Pooling::of`] says the kernel
    /// cannot compute it.
    pub fn new(
        op: &Operation,
        types: &[&TensorType],
    ) -> Result<Option<QuantGlobalAvgPool>, String> {
        let Some(pooling) = Pooling::of(op, types[0]) else {
            return Ok(None);
        };
        let Pooling {
            plane,
            signed,
            levels,
            ..
        } = pooling;
        let row = pooling.row();
        let code = jit::compile(|sink| pooling.define(sink))?;
        Ok(Some(QuantGlobalAvgPool {
            // SAFETY: generated with exactly this signature, in the platform's C ABI.
            kernel: unsafe { std::mem::transmute::<*const u8, ReduceFn>(code) },
            plane,
            row,
            signed,
            out_signed: levels.signed,
            fallback: Fallback::new(op, types),
        }))
    }
}

/// Defines the kernel of a `quant.global_avg_pool` over planes of `plane` values (zero point
/// `zx`, stored signed or not), fixed-point multiplier `m`, into `levels`, in `sink`:
/// `(x, out, groups)` reads `groups` groups of [`PLANES`] rows of `plane` rounded up to
/// [`BLOCK`] bytes (zeros after the data) and writes one level per plane.
fn define(
    sink: &mut dyn Sink,
    plane: usize,
    zx: i64,
    signed: bool,
    m: &Fixed,
    levels: &Levels,
) -> Result<FuncId, String> {
    let row = plane.div_ceil(BLOCK) * BLOCK;
    let name = format!(
        "qgap_{}{zx}_p{plane}_{}x{}_{}",
        if signed { "i" } else { "u" },
        m.m0,
        m.shift,
        levels.tag()
    );
    let ptr = sink.pointer();
    let levels = *levels;
    sink.function(&name, &Shape::kernel(&[ptr; 3]), &mut |b, args, _| {
        let (x, out, groups) = (args[0], args[1], args[2]);
        let flags = MemFlagsData::new().with_notrap();
        let zero = b.ins().iconst(ptr, 0);
        let g = Loop::new(b, zero, groups);
        let first = b.ins().imul_imm_s(g.index, (PLANES * row) as i64);
        let first = b.ins().iadd(x, first);
        let sums: Vec<_> = (0..PLANES).map(|_| b.declare_var(types::I32X4)).collect();
        let none = splat32(b, 0);
        for v in &sums {
            b.def_var(*v, none);
        }
        let end = b.ins().iconst(ptr, row as i64);
        let k = Loop::stepped(b, zero, end, BLOCK as i64);
        let at = b.ins().iadd(first, k.index);
        for (j, v) in sums.iter().enumerate() {
            let bytes = b.ins().load(types::I8X16, flags, at, (j * row) as i32);
            let (lo, hi) = if signed {
                (b.ins().swiden_low(bytes), b.ins().swiden_high(bytes))
            } else {
                (b.ins().uwiden_low(bytes), b.ins().uwiden_high(bytes))
            };
            // Two bytes per i16 lane: at most 510 in magnitude.
            let pairs = b.ins().iadd(lo, hi);
            let (wl, wh) = (b.ins().swiden_low(pairs), b.ins().swiden_high(pairs));
            let acc = b.use_var(*v);
            let acc = b.ins().iadd(acc, wl);
            let acc = b.ins().iadd(acc, wh);
            b.def_var(*v, acc);
        }
        k.close(b);
        // Each plane's four lanes summed, the eight sums gathered into two vectors.
        let totals: Vec<_> = sums
            .iter()
            .map(|v| {
                let acc = b.use_var(*v);
                let lanes: Vec<_> = (0..4).map(|l| b.ins().extractlane(acc, l)).collect();
                let a = b.ins().iadd(lanes[0], lanes[1]);
                let c = b.ins().iadd(lanes[2], lanes[3]);
                b.ins().iadd(a, c)
            })
            .collect();
        let offset = splat32(b, -(plane as i64) * zx);
        let multiplier = Multiplier::constant(b, m.m0, m.shift);
        let values = [0, 1].map(|half| {
            let mut v = b.ins().splat(types::I32X4, totals[4 * half]);
            for lane in 1..4 {
                v = b.ins().insertlane(v, totals[4 * half + lane], lane as u8);
            }
            let t = b.ins().iadd(v, offset);
            multiplier.apply(b, t)
        });
        let dst = b.ins().imul_imm_s(g.index, PLANES as i64);
        let dst = b.ins().iadd(out, dst);
        store_levels8(b, values, &levels, dst);
        g.close(b);
        b.ins().return_(&[]);
        Ok(())
    })
}

impl OpKernel for QuantGlobalAvgPool {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let x = inputs[0];
        let Some((bytes, signed)) = bytes8(x) else {
            return self.fallback.run(inputs);
        };
        if signed != self.signed || x.shape.len() != 4 || x.shape[2] * x.shape[3] != self.plane {
            return self.fallback.run(inputs);
        }
        let (n, c) = (x.shape[0], x.shape[1]);
        let planes = n * c;
        let groups = planes.div_ceil(PLANES);
        let mut rows = vec![0u8; groups * PLANES * self.row];
        for (dst, src) in rows
            .chunks_exact_mut(self.row)
            .zip(bytes.chunks_exact(self.plane))
        {
            dst[..self.plane].copy_from_slice(src);
        }
        let mut out = vec![0u8; groups * PLANES];
        out.par_chunks_mut(GROUPS_PER_TASK * PLANES)
            .zip(rows.par_chunks(GROUPS_PER_TASK * PLANES * self.row))
            .for_each(|(dst, src)| {
                // SAFETY: `src` holds `dst.len() / PLANES` whole groups of `PLANES` rows of
                // `self.row` bytes, and `dst` one byte per plane of them.
                unsafe {
                    (self.kernel)(src.as_ptr(), dst.as_mut_ptr(), (dst.len() / PLANES) as i64)
                }
            });
        out.truncate(planes);
        Ok(tensor8(out, self.out_signed, vec![n, c, 1, 1]))
    }
}

/// A float kernel over planes or rows: `(x, out, count)`.
type FloatReduceFn = unsafe extern "C" fn(*const f32, *mut f32, i64);

/// A generated float `nn.global_avg_pool` for one plane size: each plane's values summed in f64
/// one after another from the first, rounded to f32 and divided by the plane size, a NaN mean
/// made `f32::NAN`, as the reference does (the same bits); [`PLANES`] planes side by side, each
/// its own running sum.
pub struct FloatGlobalAvgPool {
    kernel: FloatReduceFn,
    plane: usize,
    fallback: Fallback,
}

impl FloatGlobalAvgPool {
    /// Prepares the op (operand types `types`), or `None` when its input is not an f32
    /// `[N, C, H, W]` tensor with planes of 1 to 2^24 values.
    pub fn new(
        op: &Operation,
        types: &[&TensorType],
    ) -> Result<Option<FloatGlobalAvgPool>, String> {
        let x = types[0];
        if !is_f32(x) || x.shape.len() != 4 {
            return Ok(None);
        }
        let plane = x.shape[2] * x.shape[3];
        if plane == 0 || plane > 1 << 24 {
            return Ok(None);
        }
        let code = jit::compile(|sink| define_float(sink, plane))?;
        Ok(Some(FloatGlobalAvgPool {
            // SAFETY: generated with exactly this signature, in the platform's C ABI.
            kernel: unsafe { std::mem::transmute::<*const u8, FloatReduceFn>(code) },
            plane,
            fallback: Fallback::new(op, types),
        }))
    }
}

/// Defines the kernel of a float `nn.global_avg_pool` over planes of `plane` values in `sink`:
/// `(x, out, groups)` reads `groups` groups of [`PLANES`] consecutive planes and writes one mean
/// per plane.
fn define_float(sink: &mut dyn Sink, plane: usize) -> Result<FuncId, String> {
    let ptr = sink.pointer();
    let name = format!("fgap_p{plane}");
    sink.function(&name, &Shape::kernel(&[ptr; 3]), &mut |b, args, _| {
        let (x, out, groups) = (args[0], args[1], args[2]);
        let flags = MemFlagsData::new().with_notrap();
        let bytes = (plane * 4) as i64;
        let zero = b.ins().iconst(ptr, 0);
        let g = Loop::new(b, zero, groups);
        let first = b.ins().imul_imm_s(g.index, PLANES as i64 * bytes);
        let first = b.ins().iadd(x, first);
        // Plane `j` starts at `j * bytes` from the group's first value.
        let value = |b: &mut FunctionBuilder, at: cranelift_codegen::ir::Value, j: usize| {
            let v = b
                .ins()
                .load(types::F32, flags, at, (j as i64 * bytes) as i32);
            b.ins().fpromote(types::F64, v)
        };
        let sums: Vec<_> = (0..PLANES).map(|_| b.declare_var(types::F64)).collect();
        for (j, s) in sums.iter().enumerate() {
            let v = value(b, first, j);
            b.def_var(*s, v);
        }
        let (one, end) = (b.ins().iconst(ptr, 4), b.ins().iconst(ptr, bytes));
        let k = Loop::stepped(b, one, end, 4);
        let at = b.ins().iadd(first, k.index);
        for (j, s) in sums.iter().enumerate() {
            let v = value(b, at, j);
            let total = b.use_var(*s);
            let total = b.ins().fadd(total, v);
            b.def_var(*s, total);
        }
        k.close(b);
        let count = b.ins().f32const(plane as f32);
        let dst = b.ins().imul_imm_s(g.index, (PLANES * 4) as i64);
        let dst = b.ins().iadd(out, dst);
        for (j, s) in sums.iter().enumerate() {
            let total = b.use_var(*s);
            let rounded = b.ins().fdemote(types::F32, total);
            let mean = b.ins().fdiv(rounded, count);
            let unordered = b.ins().fcmp(FloatCC::Unordered, mean, mean);
            let nan = b.ins().f32const(f32::NAN);
            let mean = b.ins().select(unordered, nan, mean);
            b.ins().store(flags, mean, dst, 4 * j as i32);
        }
        g.close(b);
        b.ins().return_(&[]);
        Ok(())
    })
}

impl OpKernel for FloatGlobalAvgPool {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let x = inputs[0];
        let Some(values) = x.as_f32() else {
            return self.fallback.run(inputs);
        };
        if x.shape.len() != 4 || x.shape[2] * x.shape[3] != self.plane {
            return self.fallback.run(inputs);
        }
        let (n, c) = (x.shape[0], x.shape[1]);
        let planes = n * c;
        let whole = planes / PLANES * PLANES;
        let mut out = vec![0f32; planes];
        let (head, tail) = out.split_at_mut(whole);
        head.par_chunks_mut(GROUPS_PER_TASK * PLANES)
            .zip(values[..whole * self.plane].par_chunks(GROUPS_PER_TASK * PLANES * self.plane))
            .for_each(|(dst, src)| {
                // SAFETY: `src` holds `dst.len() / PLANES` whole groups of `PLANES` planes, and
                // `dst` one value per plane of them.
                unsafe {
                    (self.kernel)(src.as_ptr(), dst.as_mut_ptr(), (dst.len() / PLANES) as i64)
                }
            });
        if !tail.is_empty() {
            // The last planes, in a group padded with zero planes.
            let mut padded = vec![0f32; PLANES * self.plane];
            padded[..tail.len() * self.plane].copy_from_slice(&values[whole * self.plane..]);
            let mut means = [0f32; PLANES];
            // SAFETY: one whole group of planes, and a value per plane.
            unsafe { (self.kernel)(padded.as_ptr(), means.as_mut_ptr(), 1) };
            let rest = tail.len();
            tail.copy_from_slice(&means[..rest]);
        }
        Ok(Tensor::from_f32(vec![n, c, 1, 1], out))
    }
}

/// Values per group of the softmax kernel.
const SOFTMAX_GROUP: usize = 4;

/// A generated float `nn.softmax` along any axis, per line of `len` values along it: the largest
/// value (NaN ignored), `exp` of each value less it (`qcc_runtime::float::exp`'s steps, four at
/// a time), their sum one after another from +0.0, each divided by the sum, a NaN result made
/// `f32::NAN`: the reference's bits. Lines along the last axis whose length is a multiple of four
/// are the kernel's rows where they lie; other lines are copied into rows padded with -inf (whose
/// exp, 0, leaves the sum as it is), a block of them at a time, and their results copied back.
pub struct FloatSoftmax {
    kernel: FloatReduceFn,
    axis: usize,
    len: usize,
    fallback: Fallback,
}

impl FloatSoftmax {
    /// Prepares `op` (operand types `types`), or `None` unless it normalises a non-empty axis of
    /// an f32 tensor.
    pub fn new(op: &Operation, types: &[&TensorType]) -> Result<Option<FloatSoftmax>, String> {
        let x = types[0];
        let rank = x.shape.len();
        if !is_f32(x) || rank == 0 {
            return Ok(None);
        }
        let axis = qcc_dialects::ops::attrs::axis(op, -1, rank)?;
        let len = x.shape[axis];
        if len == 0 {
            return Ok(None);
        }
        let code = jit::compile(|sink| define_softmax(sink, len.div_ceil(SOFTMAX_GROUP)))?;
        Ok(Some(FloatSoftmax {
            // SAFETY: generated with exactly this signature, in the platform's C ABI.
            kernel: unsafe { std::mem::transmute::<*const u8, FloatReduceFn>(code) },
            axis,
            len,
            fallback: Fallback::new(op, types),
        }))
    }
}

/// Defines the softmax kernel over rows of `groups` groups of four values in `sink`:
/// `(x, out, rows)`.
fn define_softmax(sink: &mut dyn Sink, groups: usize) -> Result<FuncId, String> {
    use crate::clif::{canonical_nan_ps, max_ps, splat_f32};
    use crate::float_map::exp;
    let ptr = sink.pointer();
    let name = format!("fsoftmax_g{groups}");
    let row = (groups * SOFTMAX_GROUP * 4) as i64;
    sink.function(&name, &Shape::kernel(&[ptr; 3]), &mut |b, args, _| {
        let (x, out, rows) = (args[0], args[1], args[2]);
        let flags = MemFlagsData::new().with_notrap();
        let zero = b.ins().iconst(ptr, 0);
        let end = b.ins().iconst(ptr, row);
        let step = SOFTMAX_GROUP as i64 * 4;
        let (r, at) = Loop::carrying(b, (zero, rows, 1), &[(x, row), (out, row)]);
        let (src, dst) = (at[0], at[1]);
        // The largest value: `v > m ? v : m` from -inf (NaN never replaces it), lanes apart,
        // then across them (the order of a maximum changes nothing but which zero it keeps,
        // and exp gives 1 for either).
        let largest = b.declare_var(types::F32X4);
        let start = splat_f32(b, f32::NEG_INFINITY);
        b.def_var(largest, start);
        let k = Loop::stepped(b, zero, end, step);
        let p = b.ins().iadd(src, k.index);
        let v = b.ins().load(types::F32X4, flags, p, 0);
        let m = b.use_var(largest);
        let m = max_ps(b, v, m);
        b.def_var(largest, m);
        k.close(b);
        let m = b.use_var(largest);
        let mut top = b.ins().extractlane(m, 0);
        for lane in 1..SOFTMAX_GROUP as u8 {
            let v = b.ins().extractlane(m, lane);
            let greater = b.ins().fcmp(FloatCC::GreaterThan, v, top);
            top = b.ins().select(greater, v, top);
        }
        let top = b.ins().splat(types::F32X4, top);
        // exp of each value less the largest, stored, and summed one value after another.
        let total = b.declare_var(types::F32);
        let none = b.ins().f32const(0.0);
        b.def_var(total, none);
        let k = Loop::stepped(b, zero, end, step);
        let (p, q) = (b.ins().iadd(src, k.index), b.ins().iadd(dst, k.index));
        let v = b.ins().load(types::F32X4, flags, p, 0);
        let shifted = b.ins().fsub(v, top);
        let e = exp(b, shifted);
        b.ins().store(flags, e, q, 0);
        let mut sum = b.use_var(total);
        for lane in 0..SOFTMAX_GROUP as u8 {
            let value = b.ins().extractlane(e, lane);
            sum = b.ins().fadd(sum, value);
        }
        b.def_var(total, sum);
        k.close(b);
        let sum = b.use_var(total);
        let sum = b.ins().splat(types::F32X4, sum);
        let k = Loop::stepped(b, zero, end, step);
        let q = b.ins().iadd(dst, k.index);
        let e = b.ins().load(types::F32X4, flags, q, 0);
        let y = b.ins().fdiv(e, sum);
        let y = canonical_nan_ps(b, y);
        b.ins().store(flags, y, q, 0);
        k.close(b);
        r.close(b);
        b.ins().return_(&[]);
        Ok(())
    })
}

impl OpKernel for FloatSoftmax {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let x = inputs[0];
        let Some(values) = x.as_f32() else {
            return self.fallback.run(inputs);
        };
        if x.shape.get(self.axis) != Some(&self.len) {
            return self.fallback.run(inputs);
        }
        let len = self.len;
        let inner: usize = x.shape[self.axis + 1..].iter().product();
        let padded = len.div_ceil(SOFTMAX_GROUP) * SOFTMAX_GROUP;
        let mut out = vec![0f32; values.len()];
        if inner == 0 {
            return Ok(Tensor::from_f32(x.shape.clone(), out));
        }
        let block = len * inner;
        if inner == 1 && padded == len {
            out.par_chunks_mut(len)
                .zip(values.par_chunks(len))
                // SAFETY: one row of `len` values, a whole number of groups.
                .for_each(|(dst, src)| unsafe { (self.kernel)(src.as_ptr(), dst.as_mut_ptr(), 1) });
        } else {
            // Each block of `inner` lines (one index of the axes before the softmax's) as rows.
            out.par_chunks_mut(block)
                .zip(values.par_chunks(block))
                .for_each(|(dst, src)| {
                    let mut rows = vec![f32::NEG_INFINITY; inner * padded];
                    for (k, v) in src.iter().enumerate() {
                        rows[(k % inner) * padded + k / inner] = *v;
                    }
                    let mut result = vec![0f32; inner * padded];
                    // SAFETY: `inner` padded rows of whole groups.
                    unsafe { (self.kernel)(rows.as_ptr(), result.as_mut_ptr(), inner as i64) };
                    for (k, v) in dst.iter_mut().enumerate() {
                        *v = result[(k % inner) * padded + k / inner];
                    }
                });
        }
        Ok(Tensor::from_f32(x.shape.clone(), out))
    }
}
