//! Generated elementwise kernels: `quant.quantize` and `quant.dequantize` (per tensor) and the
//! rescaling of `quant.concat`'s operands stream eight elements per iteration (the driver splits
//! a tensor over threads and runs the last partial group through a padded copy, so the kernels
//! never read or write past a buffer); `quant.add` (same shapes) reads a table of its results.
//! Anything else (broadcasting adds, per-axis types) runs on the reference kernel, from the same
//! op kernel.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;
use qcc_dialects::{Operation, Storage, Tensor, TensorData, TensorType};
use qcc_runtime::OpKernel;
use qcc_runtime::interp::eval_op;
use qcc_runtime::quant::{AddLevels, Multiplier as Fixed, per_tensor};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use crate::clif::{
    Clamp, Levels, Loop, Multiplier, max_ps, min_ps, pre_shift, splat32, store_levels8,
};
use crate::emit::{Shape, Sink};
use crate::jit;
use cranelift_module::FuncId;

/// Elements per iteration of a generated loop.
pub(crate) const GROUP: usize = 8;

/// Elements one task streams.
const CHUNK: usize = 1 << 14;

pub(crate) type StreamFn = unsafe extern "C" fn(*const u8, *const u8, *mut u8, i64);

/// An operand or result of a stream: its bytes and the bytes per element.
pub(crate) struct Lane<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) width: usize,
}

/// Runs `f` over the elements of `a` and `b` into `out` (`out_width` bytes per element, as many
/// elements as `out` holds). Without `a` the kernel reads its first operand from `out` itself
/// and overwrites it (in place: each group is loaded before it is stored); without `b` it reads
/// `a` again as its second.
pub(crate) fn stream(
    f: StreamFn,
    a: Option<Lane>,
    b: Option<Lane>,
    out: &mut [u8],
    out_width: usize,
) {
    out.par_chunks_mut(CHUNK * out_width)
        .enumerate()
        .for_each(|(chunk, dst)| {
            let first = chunk * CHUNK;
            let len = dst.len() / out_width;
            fn at<'a>(l: &Lane<'a>, from: usize, count: usize) -> &'a [u8] {
                &l.bytes[from * l.width..(from + count) * l.width]
            }
            let whole = len / GROUP * GROUP;
            if whole > 0 {
                let po = dst.as_mut_ptr();
                // Cut to `whole` elements, so that a short operand panics rather than is overrun.
                let xa = a
                    .as_ref()
                    .map_or(po as *const u8, |a| at(a, first, whole).as_ptr());
                let xb = b.as_ref().map_or(xa, |b| at(b, first, whole).as_ptr());
                // SAFETY: each pointer covers `whole` elements of its width; in place, the kernel
                // reads each group before it writes it.
                unsafe { f(xa, xb, po, (whole / GROUP) as i64) };
            }
            let rest = len - whole;
            if rest > 0 {
                let pad = |bytes: &[u8], width: usize| {
                    let mut v = vec![0u8; GROUP * width];
                    v[..rest * width].copy_from_slice(&bytes[..rest * width]);
                    v
                };
                let own = &dst[whole * out_width..];
                let pa = match &a {
                    Some(a) => pad(at(a, first + whole, rest), a.width),
                    None => pad(own, out_width),
                };
                let pb = match &b {
                    Some(b) => pad(at(b, first + whole, rest), b.width),
                    None => pa.clone(),
                };
                let mut po = vec![0u8; GROUP * out_width];
                // SAFETY: one whole group in padded buffers.
                unsafe { f(pa.as_ptr(), pb.as_ptr(), po.as_mut_ptr(), 1) };
                dst[whole * out_width..].copy_from_slice(&po[..rest * out_width]);
            }
        });
}

/// Builds a streaming kernel: `body` turns the group at the two input pointers into stores at the
/// output pointer.
fn streaming(
    name: &str,
    widths: [i64; 3],
    body: impl Fn(&mut FunctionBuilder, Value, Value, Value),
) -> Result<StreamFn, String> {
    let code = jit::compile(|s| define_streaming(s, name, widths, body))?;
    // SAFETY: generated with exactly this signature, in the platform's C ABI.
    Ok(unsafe { std::mem::transmute::<*const u8, StreamFn>(code) })
}

/// Defines a streaming kernel `(a, b, out, groups)` in `sink` (see [`streaming`]).
pub(crate) fn define_streaming(
    sink: &mut dyn Sink,
    name: &str,
    widths: [i64; 3],
    body: impl Fn(&mut FunctionBuilder, Value, Value, Value),
) -> Result<FuncId, String> {
    let ptr = sink.pointer();
    sink.function(name, &Shape::kernel(&[ptr; 4]), &mut |b, args, _| {
        let (a, bp, out, groups) = (args[0], args[1], args[2], args[3]);
        let zero = b.ins().iconst(ptr, 0);
        let l = Loop::new(b, zero, groups);
        let i = l.index;
        let at = |b: &mut FunctionBuilder, base: Value, width: i64| {
            let off = b.ins().imul_imm_s(i, width * GROUP as i64);
            b.ins().iadd(base, off)
        };
        let (pa, pb, po) = (
            at(b, a, widths[0]),
            at(b, bp, widths[1]),
            at(b, out, widths[2]),
        );
        body(b, pa, pb, po);
        l.close(b);
        b.ins().return_(&[]);
        Ok(())
    })
}

/// Eight 8-bit values at `p` as two i32x4.
fn load8(b: &mut FunctionBuilder, p: Value, signed: bool) -> [Value; 2] {
    let flags = MemFlagsData::new().with_notrap();
    let wide = if signed {
        b.ins().sload8x8(flags, p, 0)
    } else {
        b.ins().uload8x8(flags, p, 0)
    };
    [b.ins().swiden_low(wide), b.ins().swiden_high(wide)]
}

/// The bytes of an 8-bit tensor and whether its storage is signed.
pub(crate) fn bytes8(t: &Tensor) -> Option<(&[u8], bool)> {
    match &t.data {
        TensorData::U8(v) => Some((v, false)),
        TensorData::I8(v) => {
            // SAFETY: i8 and u8 have the same size and alignment.
            Some((
                unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, v.len()) },
                true,
            ))
        }
        _ => None,
    }
}

/// A tensor of `shape` from output bytes of an 8-bit type.
pub(crate) fn tensor8(bytes: Vec<u8>, signed: bool, shape: Vec<usize>) -> Tensor {
    let data = if signed {
        TensorData::I8(bytes.into_iter().map(|b| b as i8).collect())
    } else {
        TensorData::U8(bytes)
    };
    Tensor { shape, data }
}

/// Whether `t` holds f32 values.
pub(crate) fn is_f32(t: &TensorType) -> bool {
    matches!(t.elem, qcc_dialects::ElemType::F32)
}

/// The bytes of f32 values.
pub(crate) fn f32_bytes(v: &[f32]) -> &[u8] {
    // SAFETY: f32 is four bytes without padding; the bytes are only read.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// The bytes of f32 values, to overwrite with other f32 values.
pub(crate) fn f32_bytes_mut(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: every bit pattern of four bytes is an f32.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut u8, std::mem::size_of_val(v)) }
}

/// Per-tensor scale, zero point and whether the storage is signed, of an 8-bit quantized type.
pub(crate) fn params8(t: &TensorType) -> Option<(f64, i64, bool)> {
    let (scale, zp, _) = per_tensor(t)?;
    match t.elem.quant()?.storage {
        Storage::U8 => Some((scale, zp, false)),
        Storage::I8 => Some((scale, zp, true)),
        Storage::I32 => None,
    }
}

pub(crate) fn levels_of(t: &TensorType, clamp: Option<[i64; 2]>) -> Option<Levels> {
    let (_, zp, signed) = params8(t)?;
    let range = t.elem.quant()?.storage.range();
    let (lo, hi) = qcc_runtime::quant::clamp_bounds(clamp, range);
    Some(Levels {
        zero_point: zp as i32,
        bounds: (lo as i32, hi as i32),
        signed,
        channel_hi: false,
        clamp: Clamp::BOTH,
    })
}

/// The reference kernel of an op, for the inputs a generated kernel does not take.
pub(crate) struct Fallback {
    op: Operation,
    types: Vec<TensorType>,
}

impl Fallback {
    /// The reference kernel of `op` with operand types `types`.
    pub(crate) fn new(op: &Operation, types: &[&TensorType]) -> Fallback {
        Fallback {
            op: op.clone(),
            types: types.iter().map(|t| (*t).clone()).collect(),
        }
    }

    /// Runs the op on its reference kernel.
    pub(crate) fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let types: Vec<&TensorType> = self.types.iter().collect();
        eval_op(&self.op, inputs, &types)
    }
}

/// Where a concat's operands go: the result's shape, the count of indices before the axis, and
/// each operand's block (its values from the axis on) per such index.
pub(crate) struct ConcatLayout {
    pub(crate) shape: Vec<usize>,
    pub(crate) outer: usize,
    pub(crate) blocks: Vec<usize>,
}

impl ConcatLayout {
    /// The layout of `inputs` joined along `axis`, `None` when their shapes differ elsewhere.
    pub(crate) fn of(inputs: &[&Tensor], axis: usize) -> Option<ConcatLayout> {
        let first = &inputs.first()?.shape;
        let fits = axis < first.len()
            && inputs.iter().all(|t| {
                t.shape.len() == first.len()
                    && t.shape
                        .iter()
                        .enumerate()
                        .all(|(d, n)| d == axis || *n == first[d])
            });
        if !fits {
            return None;
        }
        let mut shape = first.clone();
        shape[axis] = inputs.iter().map(|t| t.shape[axis]).sum();
        Some(ConcatLayout {
            outer: shape[..axis].iter().product(),
            blocks: inputs
                .iter()
                .map(|t| t.shape[axis..].iter().product())
                .collect(),
            shape,
        })
    }
}

/// Elements of a table-driven add per kernel iteration.
pub(crate) const LOOKUPS: usize = 4;

type LookupFn = unsafe extern "C" fn(*const u8, *const u8, *mut u8, i64, *const u8);

/// The generated loop of a table-driven binary op: `(a, b, out, groups, table)`, `out[i] =
/// table[a[i] * 256 + b[i]]` for `groups` groups of [`LOOKUPS`] bytes.
fn lookup_kernel() -> Result<LookupFn, String> {
    let code = jit::compile(define_lookup)?;
    // SAFETY: generated with exactly this signature, in the platform's C ABI.
    Ok(unsafe { std::mem::transmute::<*const u8, LookupFn>(code) })
}

/// Defines [`lookup_kernel`]'s function in `sink`.
pub(crate) fn define_lookup(sink: &mut dyn Sink) -> Result<FuncId, String> {
    let ptr = sink.pointer();
    let name = format!("lookup2_u8x{LOOKUPS}");
    sink.function(&name, &Shape::kernel(&[ptr; 5]), &mut |b, args, _| {
        let (pa, pb, po, groups, table) = (args[0], args[1], args[2], args[3], args[4]);
        let flags = MemFlagsData::new().with_notrap();
        let zero = b.ins().iconst(ptr, 0);
        let end = b.ins().imul_imm_s(groups, LOOKUPS as i64);
        let l = Loop::stepped(b, zero, end, LOOKUPS as i64);
        let (a, bb, o) = (
            b.ins().iadd(pa, l.index),
            b.ins().iadd(pb, l.index),
            b.ins().iadd(po, l.index),
        );
        for j in 0..LOOKUPS as i32 {
            let x = b.ins().uload8(ptr, flags, a, j);
            let y = b.ins().uload8(ptr, flags, bb, j);
            let row = b.ins().ishl_imm_u(x, 8);
            let at = b.ins().bor(row, y);
            let at = b.ins().iadd(table, at);
            let v = b.ins().uload8(types::I32, flags, at, 0);
            b.ins().istore8(flags, v, o, j);
        }
        l.close(b);
        b.ins().return_(&[]);
        Ok(())
    })
}

/// Result levels of every pair of stored operand bytes, per add's constants and storages: shared
/// by the prepared functions that use them (bias correction prepares a module many times), freed
/// with the last.
static ADD_TABLES: Mutex<Option<HashMap<String, Weak<[u8]>>>> = Mutex::new(None);

/// The table of `levels` for operands stored signed or not (`signed`) into a result stored
/// signed or not (`out_signed`): entry `a * 256 + b` for stored bytes `a` and `b`.
fn add_table(levels: &AddLevels, signed: [bool; 2], out_signed: bool) -> Arc<[u8]> {
    let key = format!("{levels:?}{signed:?}{out_signed}");
    let mut guard = ADD_TABLES.lock().unwrap_or_else(|e| e.into_inner());
    let tables = guard.get_or_insert_with(HashMap::new);
    if let Some(table) = tables.get(&key).and_then(Weak::upgrade) {
        return table;
    }
    let level = |byte: usize, signed: bool| {
        if signed {
            i64::from(byte as u8 as i8)
        } else {
            byte as i64
        }
    };
    let table: Arc<[u8]> = (0..256 * 256)
        .map(|i| {
            let y = levels.level(level(i >> 8, signed[0]), level(i & 255, signed[1]));
            // In the result's storage range: the bounds are within it.
            if out_signed { y as i8 as u8 } else { y as u8 }
        })
        .collect();
    tables.retain(|_, t| t.strong_count() > 0);
    tables.insert(key, Arc::downgrade(&table));
    table
}

/// A `quant.add` of two same-shaped 8-bit tensors through a table of its result for every pair
/// of stored operand bytes (64 KiB, computed by the reference's arithmetic, so exact by
/// construction), read by a generated loop.
pub struct QuantAdd {
    kernel: LookupFn,
    table: Arc<[u8]>,
    signed: [bool; 2],
    out_signed: bool,
    fallback: Fallback,
}

/// The table of a `quant.add` (operand types `types`), with whether its operands and its
/// result are stored signed; `None` for operands or a result that are not 8-bit per-tensor.
pub(crate) type AddTable = (Arc<[u8]>, [bool; 2], bool);

/// [`AddTable`] of `op`.
pub(crate) fn add_table_of(
    op: &Operation,
    types: &[&TensorType],
) -> Result<Option<AddTable>, String> {
    let out = &op.results[0];
    let (Some((_, _, ua)), Some((_, _, ub)), Some((_, _, uo))) =
        (params8(types[0]), params8(types[1]), params8(out))
    else {
        return Ok(None);
    };
    let levels = AddLevels::new(
        types[0],
        types[1],
        out,
        qcc_dialects::ops::attrs::clamp(op)?,
    )?;
    Ok(Some((add_table(&levels, [ua, ub], uo), [ua, ub], uo)))
}

impl QuantAdd {
    /// Prepares the op (operand types `types`), or `None` for operands or a result that are not
    /// 8-bit per-tensor.
    pub fn new(op: &Operation, types: &[&TensorType]) -> Result<Option<QuantAdd>, String> {
        let Some((table, signed, out_signed)) = add_table_of(op, types)? else {
            return Ok(None);
        };
        Ok(Some(QuantAdd {
            kernel: lookup_kernel()?,
            table,
            signed,
            out_signed,
            fallback: Fallback::new(op, types),
        }))
    }
}

impl OpKernel for QuantAdd {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let (a, b) = (inputs[0], inputs[1]);
        let (Some((xa, sa)), Some((xb, sb))) = (bytes8(a), bytes8(b)) else {
            return self.fallback.run(inputs);
        };
        if a.shape != b.shape || [sa, sb] != self.signed {
            return self.fallback.run(inputs);
        }
        let mut out = vec![0u8; a.numel()];
        let table = &self.table;
        out.par_chunks_mut(CHUNK)
            .zip(xa.par_chunks(CHUNK).zip(xb.par_chunks(CHUNK)))
            .for_each(|(dst, (xa, xb))| {
                let whole = dst.len() / LOOKUPS;
                // SAFETY: the three slices hold `whole * LOOKUPS` bytes or more; every index
                // `a * 256 + b` of two bytes is inside the 65536-byte table.
                unsafe {
                    (self.kernel)(
                        xa.as_ptr(),
                        xb.as_ptr(),
                        dst.as_mut_ptr(),
                        whole as i64,
                        table.as_ptr(),
                    )
                };
                for i in whole * LOOKUPS..dst.len() {
                    dst[i] = table[usize::from(xa[i]) << 8 | usize::from(xb[i])];
                }
            });
        Ok(tensor8(out, self.out_signed, a.shape.clone()))
    }
}

/// The streaming kernel `define` defines, compiled in the JIT.
pub(crate) fn streaming_fn(
    define: impl FnOnce(&mut dyn Sink) -> Result<FuncId, String>,
) -> Result<StreamFn, String> {
    let code = jit::compile(define)?;
    // SAFETY: every streaming kernel has this signature, in the platform's C ABI.
    Ok(unsafe { std::mem::transmute::<*const u8, StreamFn>(code) })
}

/// Defines the streaming kernel of a per-tensor `quant.quantize` of f32 values to `levels` at
/// `scale` (rounding half away from zero, as the reference) in `sink`.
pub(crate) fn define_quantize(
    sink: &mut dyn Sink,
    s: f32,
    levels: &Levels,
) -> Result<FuncId, String> {
    let name = format!("quantize_f32_s{:08x}_{}", s.to_bits(), levels.tag());
    let levels = *levels;
    let x86 = sink.x86();
    define_streaming(sink, &name, [4, 4, 1], |b, px, _, po| {
        let flags = MemFlagsData::new().with_notrap();
        let little = MemFlagsData::new().with_endianness(Endianness::Little);
        let splat = |b: &mut FunctionBuilder, v: f32| {
            let c = b.ins().f32const(v);
            b.ins().splat(types::F32X4, c)
        };
        let (sv, half, zero) = (splat(b, s), splat(b, 0.5), splat(b, 0.0));
        let one = splat32(b, i64::from(1f32.to_bits()));
        let sign_bit = splat32(b, i64::from(0x8000_0000u32 as i32));
        let (lo, hi) = (splat(b, -2e9), splat(b, 2e9));
        let values = [0, 16].map(|off| {
            let x = b.ins().load(types::F32X4, flags, px, off);
            let v = b.ins().fdiv(x, sv);
            // Round half away from zero, as f32::round.
            let t = b.ins().trunc(v);
            let frac = b.ins().fsub(v, t);
            let frac = b.ins().fabs(frac);
            let up = b.ins().fcmp(FloatCC::GreaterThanOrEqual, frac, half);
            let up = b.ins().bitcast(types::F32X4, little, up);
            // copysign(1.0, v) on the bits (Cranelift has no vector fcopysign on x64).
            let bits = b.ins().bitcast(types::I32X4, little, v);
            let sign = b.ins().band(bits, sign_bit);
            let step = b.ins().bor(sign, one);
            let step = b.ins().bitcast(types::F32X4, little, step);
            let step = b.ins().bitselect(up, step, zero);
            let r = b.ins().fadd(t, step);
            // NaN quantizes as 0 (then the zero point): the reference's saturating cast.
            let number = b.ins().fcmp(FloatCC::Equal, r, r);
            let number = b.ins().bitcast(types::F32X4, little, number);
            let r = b.ins().bitselect(number, r, zero);
            let r = max_ps(b, r, lo);
            let r = min_ps(b, r, hi);
            // In range and not NaN by now: truncation, saturating or not, is the same.
            if x86 {
                b.ins().x86_cvtt2dq(types::I32X4, r)
            } else {
                b.ins().fcvt_to_sint_sat(types::I32X4, r)
            }
        });
        store_levels8(b, values, &levels, po);
    })
}

/// Defines the streaming kernel of a per-tensor `quant.dequantize` of 8-bit values (zero point
/// `zp`, stored signed or not) at `scale` in `sink`.
pub(crate) fn define_dequantize(
    sink: &mut dyn Sink,
    s: f32,
    zp: i64,
    signed: bool,
) -> Result<FuncId, String> {
    let name = format!(
        "dequantize_{}{zp}_s{:08x}",
        if signed { "i" } else { "u" },
        s.to_bits()
    );
    define_streaming(sink, &name, [1, 1, 4], |b, px, _, po| {
        let flags = MemFlagsData::new().with_notrap();
        let zv = splat32(b, zp);
        let c = b.ins().f32const(s);
        let sv = b.ins().splat(types::F32X4, c);
        let x = load8(b, px, signed);
        for (j, v) in x.iter().enumerate() {
            let d = b.ins().isub(*v, zv);
            let f = b.ins().fcvt_from_sint(types::F32X4, d);
            let y = b.ins().fmul(f, sv);
            b.ins().store(flags, y, po, 16 * j as i32);
        }
    })
}

/// A generated per-tensor `quant.quantize` of f32 values.
pub struct Quantize {
    kernel: StreamFn,
    signed: bool,
}

impl Quantize {
    /// Prepares the op, or `None` for a per-axis or non-8-bit result.
    pub fn new(op: &Operation) -> Result<Option<Quantize>, String> {
        let out = &op.results[0];
        let (Some((scale, _, _)), Some(levels)) = (params8(out), levels_of(out, None)) else {
            return Ok(None);
        };
        let kernel = streaming_fn(|sink| define_quantize(sink, scale as f32, &levels))?;
        Ok(Some(Quantize {
            kernel,
            signed: levels.signed,
        }))
    }
}

impl OpKernel for Quantize {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let x = inputs[0]
            .as_f32()
            .ok_or("quant.quantize: the input must be f32")?;
        let bytes = f32_bytes(x);
        let mut out = vec![0u8; x.len()];
        stream(
            self.kernel,
            Some(Lane { bytes, width: 4 }),
            None,
            &mut out,
            1,
        );
        Ok(tensor8(out, self.signed, inputs[0].shape.clone()))
    }
}

/// A generated per-tensor `quant.dequantize` of 8-bit values.
pub struct Dequantize {
    kernel: StreamFn,
    signed: bool,
}

impl Dequantize {
    /// Prepares the op (input type `ty`), or `None` for a per-axis or non-8-bit input.
    pub fn new(ty: &TensorType) -> Result<Option<Dequantize>, String> {
        let Some((scale, zp, signed)) = params8(ty) else {
            return Ok(None);
        };
        let kernel = streaming_fn(|sink| define_dequantize(sink, scale as f32, zp, signed))?;
        Ok(Some(Dequantize { kernel, signed }))
    }
}

impl OpKernel for Dequantize {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let x = inputs[0];
        let (bytes, signed) = bytes8(x).ok_or("quant.dequantize: the input must be 8-bit")?;
        if signed != self.signed {
            return Err("quant.dequantize: the input's storage differs from its type".into());
        }
        let mut values = vec![0f32; x.numel()];
        let out = f32_bytes_mut(&mut values);
        stream(self.kernel, Some(Lane { bytes, width: 1 }), None, out, 4);
        Ok(Tensor::from_f32(x.shape.clone(), values))
    }
}

/// How one operand of a `quant.concat` reaches the output's levels.
enum Part {
    /// Same scale, zero point and storage: its bytes are copied.
    Copy,
    /// Rescaled by a generated kernel: `Z_y + M * (x - Z_x)`, saturated.
    Rescale(StreamFn),
}

/// A generated `quant.concat` of 8-bit tensors with per-tensor types.
pub struct QuantConcat {
    parts: Vec<(Part, bool)>,
    axis: usize,
    out_signed: bool,
    fallback: Fallback,
}

impl QuantConcat {
    /// Prepares the op (operand types `types`), or `None` when an operand or the result is not
    /// 8-bit per-tensor or a multiplier is too large for the vector arithmetic to be exact.
    pub fn new(op: &Operation, types: &[&TensorType]) -> Result<Option<QuantConcat>, String> {
        let out = &op.results[0];
        let (Some((sy, zy, out_signed)), Some(levels)) = (params8(out), levels_of(out, None))
        else {
            return Ok(None);
        };
        let axis = qcc_dialects::ops::attrs::axis(op, 1, out.shape.len())?;
        let mut parts = Vec::with_capacity(types.len());
        for ty in types {
            let Some((s, z, signed)) = params8(ty) else {
                return Ok(None);
            };
            // The reference's rule (runtime/src/kernels/quant.rs, `concat`): same scale and
            // zero point pass the levels through.
            if s == sy && z == zy {
                if signed != out_signed {
                    return Ok(None);
                }
                parts.push((Part::Copy, signed));
                continue;
            }
            let m = Fixed::new(s / sy);
            // `|x - Z_x| <= 510 < 2^10`.
            let Some(pre) = pre_shift(m.m0, m.shift, 10) else {
                return Ok(None);
            };
            let name = format!(
                "qrescale_{}{z}_{}x{}_{}",
                if signed { "i" } else { "u" },
                m.m0,
                m.shift,
                levels.tag()
            );
            let kernel = streaming(&name, [1, 1, 1], |b, px, _, po| {
                let f = Multiplier::shifted(b, m.m0, m.shift, pre);
                let zv = splat32(b, z);
                let x = load8(b, px, signed);
                let levels_of_x = [0, 1].map(|j| {
                    let d = b.ins().isub(x[j], zv);
                    f.apply(b, d)
                });
                store_levels8(b, levels_of_x, &levels, po);
            })?;
            parts.push((Part::Rescale(kernel), signed));
        }
        Ok(Some(QuantConcat {
            parts,
            axis,
            out_signed,
            fallback: Fallback::new(op, types),
        }))
    }
}

impl OpKernel for QuantConcat {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let stored: Option<Vec<&[u8]>> = inputs
            .iter()
            .zip(&self.parts)
            .map(|(t, (_, signed))| bytes8(t).filter(|(_, s)| s == signed).map(|(b, _)| b))
            .collect();
        let layout =
            ConcatLayout::of(inputs, self.axis).filter(|_| inputs.len() == self.parts.len());
        let (
            Some(stored),
            Some(ConcatLayout {
                shape,
                outer,
                blocks,
            }),
        ) = (stored, layout)
        else {
            return self.fallback.run(inputs);
        };
        let row: usize = blocks.iter().sum();
        let mut out = vec![0u8; outer * row];
        for (o, dst) in out.chunks_exact_mut(row.max(1)).enumerate().take(outer) {
            let mut at = 0;
            for ((part, _), (src, block)) in self.parts.iter().zip(stored.iter().zip(&blocks)) {
                let (src, dst) = (&src[o * block..(o + 1) * block], &mut dst[at..at + block]);
                match part {
                    Part::Copy => dst.copy_from_slice(src),
                    Part::Rescale(kernel) => stream(
                        *kernel,
                        Some(Lane {
                            bytes: src,
                            width: 1,
                        }),
                        None,
                        dst,
                        1,
                    ),
                }
                at += block;
            }
        }
        Ok(tensor8(out, self.out_signed, shape))
    }
}
