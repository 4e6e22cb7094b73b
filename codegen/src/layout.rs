//! Generated float data movement: `nn.concat` and `nn.pad` (any mode) copy their operands'
//! blocks and rows with a generated copy loop ([`FloatConcat`], [`FloatPad`]);
//! `nn.transpose` gathers each output row with a generated strided copy ([`FloatTranspose`]).
//! The values move unchanged, so the results are the reference's by construction.

use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;
use qcc_dialects::ops::attrs::{PadAttrs, PadMode};
use qcc_dialects::{Operation, Tensor, TensorType};
use qcc_runtime::OpKernel;
use rayon::prelude::*;

use crate::clif::Loop;
use crate::elementwise::{
    ConcatLayout, Fallback, StreamFn, define_streaming, is_f32, streaming_fn,
};
use crate::emit::Shape;
use crate::float_map::{Second, stream_here};
use crate::jit;

/// The generated copy loop: eight f32 values per iteration from the first operand to the output.
fn copy_kernel() -> Result<StreamFn, String> {
    streaming_fn(|sink| {
        define_streaming(sink, "fcopy", [4, 4, 4], |b, pa, _, po| {
            let flags = MemFlagsData::new().with_notrap();
            for j in 0..2 {
                let v = b.ins().load(types::F32X4, flags, pa, 16 * j);
                b.ins().store(flags, v, po, 16 * j);
            }
        })
    })
}

/// A generated float `nn.concat`: for every index before the axis, each operand's block copied
/// in order by a generated copy loop (eight values per iteration), as the reference lays it out.
pub struct FloatConcat {
    kernel: StreamFn,
    axis: usize,
    fallback: Fallback,
}

impl FloatConcat {
    /// Prepares `op` (operand types `types`), or `None` unless every operand is f32.
    pub fn new(op: &Operation, types: &[&TensorType]) -> Result<Option<FloatConcat>, String> {
        let out = &op.results[0];
        let f32s = types.iter().all(|t| is_f32(t));
        if !f32s || types.is_empty() || out.shape.is_empty() {
            return Ok(None);
        }
        let axis = qcc_dialects::ops::attrs::axis(op, 1, out.shape.len())?;
        Ok(Some(FloatConcat {
            kernel: copy_kernel()?,
            axis,
            fallback: Fallback::new(op, types),
        }))
    }
}

impl OpKernel for FloatConcat {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let values: Option<Vec<&[f32]>> = inputs.iter().map(|t| t.as_f32()).collect();
        let layout = ConcatLayout::of(inputs, self.axis);
        let (
            Some(values),
            Some(ConcatLayout {
                shape,
                outer,
                blocks,
            }),
        ) = (values, layout)
        else {
            return self.fallback.run(inputs);
        };
        let row: usize = blocks.iter().sum();
        let mut out = vec![0f32; outer * row];
        if row > 0 {
            out.par_chunks_mut(row).enumerate().for_each(|(o, dst)| {
                let mut at = 0;
                for (src, block) in values.iter().zip(&blocks) {
                    let (src, part) = (&src[o * block..(o + 1) * block], &mut dst[at..at + block]);
                    stream_here(self.kernel, src, Second::Values(src), part);
                    at += block;
                }
            });
        }
        Ok(Tensor::from_f32(shape, out))
    }
}

/// A generated float `nn.pad` in any mode: row by row along the last axis, each output row its
/// input row (the one the outer axes' indices map to) copied by the generated copy loop, between
/// the border columns, which take the constant or the input values the mode maps them to; a row
/// that maps to no input row is the constant. Rows over threads.
pub struct FloatPad {
    copy: StreamFn,
    pads: Vec<usize>,
    mode: PadMode,
    fallback: Fallback,
}

impl FloatPad {
    /// Prepares `op` (operand types `types`), or `None` unless it pads an f32 operand of rank 1
    /// or more.
    pub fn new(op: &Operation, types: &[&TensorType]) -> Result<Option<FloatPad>, String> {
        let x = types[0];
        if !is_f32(x) || x.shape.is_empty() {
            return Ok(None);
        }
        let attrs = PadAttrs::of(op, x.shape.len())?;
        Ok(Some(FloatPad {
            copy: copy_kernel()?,
            pads: attrs.pads,
            mode: attrs.mode,
            fallback: Fallback::new(op, types),
        }))
    }
}

impl OpKernel for FloatPad {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let x = inputs[0];
        let rank = x.shape.len();
        let Some(values) = x
            .as_f32()
            .filter(|_| rank >= 1 && 2 * rank == self.pads.len())
        else {
            return self.fallback.run(inputs);
        };
        let (begins, ends) = self.pads.split_at(rank);
        let out_shape: Vec<usize> = (0..rank)
            .map(|d| x.shape[d] + begins[d] + ends[d])
            .collect();
        let (width, out_width) = (x.shape[rank - 1], out_shape[rank - 1]);
        let (mode, fill) = (self.mode, self.mode.fill());
        let mut out = vec![0f32; out_shape.iter().product()];
        if out_width > 0 {
            let outer = &out_shape[..rank - 1];
            out.par_chunks_mut(out_width)
                .enumerate()
                .for_each(|(row, dst)| {
                    // The input row this output row copies, if any.
                    let (mut at, mut rest, mut stride) = (Some(0usize), row, 1usize);
                    for d in (0..rank - 1).rev() {
                        let i = (rest % outer[d]) as isize - begins[d] as isize;
                        rest /= outer[d];
                        at = match (at, mode.source(i, x.shape[d])) {
                            (Some(a), Some(j)) => Some(a + j * stride),
                            _ => None,
                        };
                        stride *= x.shape[d];
                    }
                    match at {
                        Some(r) if width > 0 => {
                            let left = begins[rank - 1];
                            let src = &values[r * width..(r + 1) * width];
                            stream_here(
                                self.copy,
                                src,
                                Second::Values(src),
                                &mut dst[left..left + width],
                            );
                            // The border columns: a few per row, each the value its index maps to.
                            let border = (0..left).chain(left + width..out_width);
                            for j in border {
                                dst[j] = mode
                                    .source(j as isize - left as isize, width)
                                    .map_or(fill, |k| src[k]);
                            }
                        }
                        _ => dst.fill(fill),
                    }
                });
        }
        Ok(Tensor::from_f32(out_shape, out))
    }
}

type GatherFn = unsafe extern "C" fn(*const f32, *mut f32, i64, i64);

/// The generated strided copy: `(src, dst, count, stride)` copies `count` f32 values, the k-th
/// from `src + k * stride` bytes, to consecutive places from `dst`, four per iteration and the
/// rest one by one.
fn gather_kernel() -> Result<GatherFn, String> {
    let code = jit::compile(|sink| {
        let ptr = sink.pointer();
        sink.function("fgather", &Shape::kernel(&[ptr; 4]), &mut |b, args, _| {
            let (src, dst, count, stride) = (args[0], args[1], args[2], args[3]);
            let flags = MemFlagsData::new().with_notrap();
            let zero = b.ins().iconst(ptr, 0);
            let quads = b.ins().band_imm_s(count, -4);
            let copy = |b: &mut FunctionBuilder, k: Value, lanes: i64| {
                let from = b.ins().imul(k, stride);
                let from = b.ins().iadd(src, from);
                let to = b.ins().ishl_imm_u(k, 2);
                let to = b.ins().iadd(dst, to);
                for lane in 0..lanes {
                    let at = b.ins().imul_imm_s(stride, lane);
                    let at = b.ins().iadd(from, at);
                    let v = b.ins().load(types::F32, flags, at, 0);
                    b.ins().store(flags, v, to, 4 * lane as i32);
                }
            };
            let four = Loop::stepped(b, zero, quads, 4);
            copy(b, four.index, 4);
            four.close(b);
            let one = Loop::new(b, quads, count);
            copy(b, one.index, 1);
            one.close(b);
            b.ins().return_(&[]);
            Ok(())
        })
    })?;
    // SAFETY: generated with exactly this signature, in the platform's C ABI.
    Ok(unsafe { std::mem::transmute::<*const u8, GatherFn>(code) })
}

/// A generated float `nn.transpose`: each output row along the last axis gathered from the
/// input at that axis' stride by a generated strided copy; rows over threads.
pub struct FloatTranspose {
    gather: GatherFn,
    perm: Vec<usize>,
    fallback: Fallback,
}

impl FloatTranspose {
    /// Prepares `op` (operand types `types`), or `None` unless its operand is f32 of rank 1 or
    /// more.
    pub fn new(op: &Operation, types: &[&TensorType]) -> Result<Option<FloatTranspose>, String> {
        let x = types[0];
        if !is_f32(x) || x.shape.is_empty() {
            return Ok(None);
        }
        Ok(Some(FloatTranspose {
            gather: gather_kernel()?,
            perm: qcc_dialects::ops::attrs::perm(op, x.shape.len())?,
            fallback: Fallback::new(op, types),
        }))
    }
}

impl OpKernel for FloatTranspose {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let x = inputs[0];
        let rank = x.shape.len();
        let Some(values) = x.as_f32().filter(|_| rank >= 1 && rank == self.perm.len()) else {
            return self.fallback.run(inputs);
        };
        let mut in_strides = vec![1usize; rank];
        for d in (0..rank - 1).rev() {
            in_strides[d] = in_strides[d + 1] * x.shape[d + 1];
        }
        let out_shape: Vec<usize> = self.perm.iter().map(|p| x.shape[*p]).collect();
        let len = out_shape[rank - 1];
        let step = in_strides[self.perm[rank - 1]];
        let mut out = vec![0f32; values.len()];
        if len > 0 {
            out.par_chunks_mut(len).enumerate().for_each(|(row, dst)| {
                let (mut first, mut rest) = (0usize, row);
                for d in (0..rank - 1).rev() {
                    first += (rest % out_shape[d]) * in_strides[self.perm[d]];
                    rest /= out_shape[d];
                }
                // SAFETY: the row's `len` values lie at `first + k * step`, the offsets of valid
                // indices of the input (`values` holds the whole of it), and `dst` holds `len`
                // values.
                unsafe {
                    (self.gather)(
                        values[first..].as_ptr(),
                        dst.as_mut_ptr(),
                        len as i64,
                        (step * 4) as i64,
                    )
                };
            });
        }
        Ok(Tensor::from_f32(out_shape, out))
    }
}
