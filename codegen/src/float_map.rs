//! Generated float elementwise kernels, eight values per iteration (two f32x4) through the
//! operations of `qcc_runtime::float`'s definitions in their order, so that the bits are the
//! reference's, NaN and signed zeros included:
//!
//! - the activations `nn.relu`, `nn.clip`, `nn.sigmoid` (`qcc_runtime::float::exp`'s steps:
//!   Cranelift has no `exp`, and libm's differs between platforms), `nn.hardsigmoid` and
//!   `nn.hardswish`, and the arithmetic `nn.add`, `nn.sub`, `nn.mul` and `nn.div` of same-shaped
//!   tensors ([`FloatMap`]); when the interpreter lends the first operand's buffer (the op is
//!   that value's last reader) the kernel writes over it;
//! - arithmetic whose operands broadcast, in blocks over which each operand varies or stays
//!   one value ([`FloatBroadcast`]);
//! - `nn.batch_norm` and `nn.clip` with per-channel bounds, each channel plane with that
//!   channel's constants ([`FloatBatchNorm`], [`FloatChannelClip`]).
//!
//! An arithmetic result that is NaN is `f32::NAN`, as in the reference.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;
use qcc_dialects::{Operation, Tensor, TensorType};
use qcc_runtime::OpKernel;
use qcc_runtime::float::{Activation, Arith};
use rayon::prelude::*;

use crate::clif::{canonical_nan_ps, max_ps, min_ps, splat_f32};
use crate::elementwise::{
    Fallback, GROUP, Lane, StreamFn, define_streaming, f32_bytes, f32_bytes_mut, is_f32, stream,
    streaming_fn,
};

/// What one kernel computes per value.
#[derive(Clone, Copy, Debug)]
enum Map {
    /// An activation of the one operand.
    Unary(Activation),
    /// Arithmetic on the two operands.
    Binary(Arith),
}

impl Map {
    /// The kernel's name: the op and every constant it is specialised on.
    fn name(self) -> String {
        let bits = |v: f32| format!("{:08x}", v.to_bits());
        match self {
            Map::Unary(Activation::Relu) => "fmap_relu".into(),
            Map::Unary(Activation::Clip(lo, hi)) => format!("fmap_clip_{}_{}", bits(lo), bits(hi)),
            Map::Unary(Activation::HardSigmoid(a, b)) => {
                format!("fmap_hardsigmoid_{}_{}", bits(a), bits(b))
            }
            Map::Unary(Activation::HardSwish) => "fmap_hardswish".into(),
            Map::Unary(Activation::Sigmoid) => "fmap_sigmoid".into(),
            Map::Binary(f) => format!("fmap_{f:?}").to_lowercase(),
        }
    }
}

/// `v.clamp(0.0, 1.0)`: `v < 0 ? 0 : v`, then `v > 1 ? 1 : v` (NaN and -0.0 pass through).
fn clamp01(b: &mut FunctionBuilder, v: Value) -> Value {
    let (zero, one) = (splat_f32(b, 0.0), splat_f32(b, 1.0));
    let low = max_ps(b, zero, v);
    min_ps(b, one, low)
}

/// `qcc_runtime::float::exp` of four values, its steps in its order.
pub(crate) fn exp(b: &mut FunctionBuilder, x: Value) -> Value {
    use qcc_runtime::float::{EXP_C1, EXP_C2, EXP_HIGH, EXP_LOW, EXP_MAGIC, EXP_POLY};
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let (low, high) = (splat_f32(b, EXP_LOW), splat_f32(b, EXP_HIGH));
    let above = max_ps(b, x, low);
    let c = min_ps(b, above, high);
    let (log2e, magic) = (
        splat_f32(b, std::f32::consts::LOG2_E),
        splat_f32(b, EXP_MAGIC),
    );
    let scaled = b.ins().fmul(c, log2e);
    let t = b.ins().fadd(scaled, magic);
    let n = b.ins().fsub(t, magic);
    let (c1, c2) = (splat_f32(b, EXP_C1), splat_f32(b, EXP_C2));
    let high_part = b.ins().fmul(n, c1);
    let reduced = b.ins().fsub(c, high_part);
    let low_part = b.ins().fmul(n, c2);
    let r = b.ins().fsub(reduced, low_part);
    let mut p = splat_f32(b, EXP_POLY[0]);
    for coefficient in &EXP_POLY[1..] {
        let k = splat_f32(b, *coefficient);
        let pr = b.ins().fmul(p, r);
        p = b.ins().fadd(pr, k);
    }
    let square = b.ins().fmul(r, r);
    let pz = b.ins().fmul(p, square);
    let pzr = b.ins().fadd(pz, r);
    let one = splat_f32(b, 1.0);
    let y = b.ins().fadd(pzr, one);
    // n as an integer: t's bits less the magic's.
    let t_bits = b.ins().bitcast(types::I32X4, little, t);
    let magic_bits = b.ins().iconst(types::I32, i64::from(EXP_MAGIC.to_bits()));
    let magic_bits = b.ins().splat(types::I32X4, magic_bits);
    let k = b.ins().isub(t_bits, magic_bits);
    let k1 = b.ins().sshr_imm_u(k, 1);
    let k2 = b.ins().isub(k, k1);
    let bias = b.ins().iconst(types::I32, 127);
    let bias = b.ins().splat(types::I32X4, bias);
    let mut e = y;
    for part in [k1, k2] {
        let biased = b.ins().iadd(part, bias);
        let exponent = b.ins().ishl_imm_u(biased, 23);
        let power = b.ins().bitcast(types::F32X4, little, exponent);
        e = b.ins().fmul(e, power);
    }
    let unordered = b.ins().fcmp(FloatCC::Unordered, x, x);
    let mask = b.ins().bitcast(types::F32X4, little, unordered);
    b.ins().bitselect(mask, x, e)
}

/// The activation `f` of four values, as `Activation::apply` computes it.
fn activate(b: &mut FunctionBuilder, f: Activation, v: Value) -> Value {
    match f {
        // `v > 0 ? v : 0`: NaN and -0.0 go to 0.
        Activation::Relu => {
            let zero = splat_f32(b, 0.0);
            max_ps(b, v, zero)
        }
        Activation::Clip(lo, hi) => {
            let (lo, hi) = (splat_f32(b, lo), splat_f32(b, hi));
            let above = max_ps(b, v, lo);
            min_ps(b, above, hi)
        }
        Activation::HardSigmoid(alpha, beta) => {
            let (alpha, beta) = (splat_f32(b, alpha), splat_f32(b, beta));
            let scaled = b.ins().fmul(alpha, v);
            let t = b.ins().fadd(scaled, beta);
            clamp01(b, t)
        }
        Activation::HardSwish => {
            let (six, half) = (splat_f32(b, 6.0), splat_f32(b, 0.5));
            let sixth = b.ins().fdiv(v, six);
            let t = b.ins().fadd(sixth, half);
            let gate = clamp01(b, t);
            b.ins().fmul(v, gate)
        }
        Activation::Sigmoid => {
            let minus = b.ins().fneg(v);
            let e = exp(b, minus);
            let one = splat_f32(b, 1.0);
            let d = b.ins().fadd(one, e);
            b.ins().fdiv(one, d)
        }
    }
}

/// A generated float elementwise op (see the module documentation).
pub struct FloatMap {
    kernel: StreamFn,
    binary: bool,
    fallback: Fallback,
}

impl FloatMap {
    /// Prepares `op` (operand types `types`), or `None` when it is none of the module's ops, its
    /// operands are not f32, a clip bounds each channel apart, or an arithmetic op broadcasts.
    pub fn new(op: &Operation, types: &[&TensorType]) -> Result<Option<FloatMap>, String> {
        let f32s = types.iter().all(|t| is_f32(t));
        let map = match Activation::of(op)? {
            Some(f) => Map::Unary(f),
            None => match op.kind().and_then(Arith::of) {
                Some(f) if types.len() == 2 && types[0].shape == types[1].shape => Map::Binary(f),
                _ => return Ok(None),
            },
        };
        if !f32s {
            return Ok(None);
        }
        let kernel = match map {
            Map::Binary(f) => arith_kernel(f, false)?,
            Map::Unary(f) => streaming_fn(|sink| {
                define_streaming(sink, &map.name(), [4, 4, 4], |b, pa, _, po| {
                    let flags = MemFlagsData::new().with_notrap();
                    for j in 0..2 {
                        let x = b.ins().load(types::F32X4, flags, pa, 16 * j);
                        let y = activate(b, f, x);
                        b.ins().store(flags, y, po, 16 * j);
                    }
                })
            })?,
        };
        Ok(Some(FloatMap {
            kernel,
            binary: matches!(map, Map::Binary(_)),
            fallback: Fallback::new(op, types),
        }))
    }

    /// The second operand's values when this kernel takes `first` and `rest` (f32 values, and
    /// for arithmetic a second operand of the first's shape); `Err` when it does not.
    fn operands<'t>(&self, first: &Tensor, rest: &[&'t Tensor]) -> Result<Option<&'t [f32]>, ()> {
        first.as_f32().ok_or(())?;
        if !self.binary {
            return Ok(None);
        }
        match rest.first() {
            Some(other) if other.shape == first.shape => other.as_f32().map(Some).ok_or(()),
            _ => Err(()),
        }
    }
}

/// The streaming kernel of arithmetic `f`: its second operand eight values like the first, or
/// with `constant` one value (four copies) for every group.
fn arith_kernel(f: Arith, constant: bool) -> Result<StreamFn, String> {
    let name = format!(
        "{}{}",
        Map::Binary(f).name(),
        if constant { "_c" } else { "" }
    );
    let widths = [4, if constant { 0 } else { 4 }, 4];
    streaming_fn(|sink| {
        define_streaming(sink, &name, widths, |b, pa, pb, po| {
            let flags = MemFlagsData::new().with_notrap();
            let fixed = constant.then(|| b.ins().load(types::F32X4, flags, pb, 0));
            for j in 0..2 {
                let x = b.ins().load(types::F32X4, flags, pa, 16 * j);
                let other = match fixed {
                    Some(v) => v,
                    None => b.ins().load(types::F32X4, flags, pb, 16 * j),
                };
                let y = match f {
                    Arith::Add => b.ins().fadd(x, other),
                    Arith::Sub => b.ins().fsub(x, other),
                    Arith::Mul => b.ins().fmul(x, other),
                    Arith::Div => b.ins().fdiv(x, other),
                };
                let y = canonical_nan_ps(b, y);
                b.ins().store(flags, y, po, 16 * j);
            }
        })
    })
}

/// How the operands of a broadcasting arithmetic op (numpy rules) lie under its result: the
/// result cut into blocks of `block` consecutive values (its longest run of trailing axes over
/// which each operand either varies as the result does or stays one value), and where each
/// operand's part of a block starts.
#[derive(Clone, Debug, PartialEq)]
struct Blocks {
    /// The result's shape.
    shape: Vec<usize>,
    /// Values per block.
    block: usize,
    /// The first of the block's axes: the result's axes before it are the outer ones.
    first: usize,
    /// Per operand: its element stride along each outer axis (0 where it broadcasts) and
    /// whether its part of a block is `block` consecutive values (else one value).
    sides: [(Vec<usize>, bool); 2],
}

impl Blocks {
    /// The blocks of `f(a, b)`, or `None` when the shapes are the same (no broadcast), do not
    /// broadcast, or give an empty result.
    fn of(a: &[usize], b: &[usize]) -> Option<Blocks> {
        if a == b {
            return None;
        }
        let rank = a.len().max(b.len());
        let align = |s: &[usize]| -> Vec<usize> {
            std::iter::repeat_n(1, rank - s.len())
                .chain(s.iter().copied())
                .collect()
        };
        let (a, b) = (align(a), align(b));
        let shape: Vec<usize> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| match (*x, *y) {
                (x, y) if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            })
            .collect::<Option<_>>()?;
        if shape.contains(&0) {
            return None;
        }
        // Walk the axes from the last: an axis of one result value fits any block; the block
        // ends at the first axis where an operand changes between varying and staying.
        let mut first = rank;
        let mut classes: Option<(bool, bool)> = None;
        for d in (0..rank).rev() {
            if shape[d] == 1 {
                first = d;
                continue;
            }
            let here = (a[d] == shape[d], b[d] == shape[d]);
            if classes.is_some_and(|c| c != here) {
                break;
            }
            classes = Some(here);
            first = d;
        }
        let (vary_a, vary_b) = classes.unwrap_or((true, true));
        let strides = |s: &[usize]| -> Vec<usize> {
            let mut out = vec![0; first];
            let mut step: usize = s[first..].iter().product();
            for d in (0..first).rev() {
                out[d] = if s[d] == 1 { 0 } else { step };
                step *= s[d];
            }
            out
        };
        Some(Blocks {
            block: shape[first..].iter().product(),
            first,
            sides: [(strides(&a), vary_a), (strides(&b), vary_b)],
            shape,
        })
    }

    /// Where each operand's part of block `k` starts.
    fn starts(&self, k: usize) -> [usize; 2] {
        let (mut rest, mut at) = (k, [0usize; 2]);
        for d in (0..self.first).rev() {
            let i = rest % self.shape[d];
            rest /= self.shape[d];
            for (a, (strides, _)) in at.iter_mut().zip(&self.sides) {
                *a += i * strides[d];
            }
        }
        at
    }
}

/// A generated float `nn.add`, `nn.sub`, `nn.mul` or `nn.div` whose operands broadcast (numpy
/// rules, either operand): the same arithmetic as [`FloatMap`]'s, streamed block by block
/// ([`Blocks`]), the second operand's part a block of values or one value (a channel's scale or
/// bias, say), the first's one value spread over the block where it broadcasts.
pub struct FloatBroadcast {
    /// The kernels with the second operand varying and with it one value.
    kernels: [StreamFn; 2],
    fallback: Fallback,
}

/// Values of a result that one task computes, at least (blocks can be a few values long).
const TASK: usize = 1 << 14;

impl FloatBroadcast {
    /// Prepares `op` (operand types `types`), or `None` unless it is f32 arithmetic whose
    /// operands broadcast to a shape other than theirs if they were the same.
    pub fn new(op: &Operation, types: &[&TensorType]) -> Result<Option<FloatBroadcast>, String> {
        let (Some(f), [a, b]) = (op.kind().and_then(Arith::of), types) else {
            return Ok(None);
        };
        if !(is_f32(a) && is_f32(b)) || a.shape == b.shape {
            return Ok(None);
        }
        Ok(Some(FloatBroadcast {
            kernels: [arith_kernel(f, false)?, arith_kernel(f, true)?],
            fallback: Fallback::new(op, types),
        }))
    }
}

impl OpKernel for FloatBroadcast {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let (a, b) = (inputs[0], inputs[1]);
        let (Some(av), Some(bv), Some(blocks)) =
            (a.as_f32(), b.as_f32(), Blocks::of(&a.shape, &b.shape))
        else {
            return self.fallback.run(inputs);
        };
        let block = blocks.block;
        let [(_, vary_a), (_, vary_b)] = blocks.sides;
        let kernel = self.kernels[usize::from(!vary_b)];
        let mut out = vec![0f32; blocks.shape.iter().product()];
        let per_task = TASK.div_ceil(block).max(1);
        out.par_chunks_mut(block * per_task)
            .enumerate()
            .for_each(|(task, dst)| {
                // The first operand's one value over a block, where it broadcasts.
                let mut spread = if vary_a {
                    Vec::new()
                } else {
                    vec![0f32; block]
                };
                for (j, dst) in dst.chunks_mut(block).enumerate() {
                    let [at_a, at_b] = blocks.starts(task * per_task + j);
                    let first = if vary_a {
                        &av[at_a..at_a + block]
                    } else {
                        spread.fill(av[at_a]);
                        &spread[..]
                    };
                    let four;
                    let second = if vary_b {
                        Second::Values(&bv[at_b..at_b + block])
                    } else {
                        four = [bv[at_b]; 4];
                        Second::Constants(&four)
                    };
                    stream_here(kernel, first, second, dst);
                }
            });
        Ok(Tensor::from_f32(blocks.shape.clone(), out))
    }
}

/// What a streaming kernel reads at its second operand.
#[derive(Clone, Copy)]
pub(crate) enum Second<'a> {
    /// As many values as the first operand.
    Values(&'a [f32]),
    /// The same values for every group (constants, as many as the kernel reads).
    Constants(&'a [f32]),
}

/// Runs `kernel` over `a` (and `b`) into `out` on this thread, for a plane or a row: its whole
/// groups in one call, the last partial group through copies on the stack (a stream over
/// threads with buffers on the heap costs more than a small plane's work).
pub(crate) fn stream_here(kernel: StreamFn, a: &[f32], b: Second, out: &mut [f32]) {
    let len = out.len();
    let (a, whole) = (&a[..len], len / GROUP * GROUP);
    let b = match b {
        Second::Values(v) => Second::Values(&v[..len]),
        constants => constants,
    };
    if whole > 0 {
        let second = match b {
            Second::Values(v) | Second::Constants(v) => v.as_ptr(),
        };
        // SAFETY: `a`, `out` and values `b` hold `whole` values (cut to `len` above); constants
        // hold what the kernel reads.
        unsafe {
            kernel(
                a.as_ptr().cast(),
                second.cast(),
                out.as_mut_ptr().cast(),
                (whole / GROUP) as i64,
            )
        };
    }
    let rest = len - whole;
    if rest > 0 {
        let (mut pa, mut pb, mut po) = ([0f32; GROUP], [0f32; GROUP], [0f32; GROUP]);
        pa[..rest].copy_from_slice(&a[whole..]);
        let second = match b {
            Second::Values(v) => {
                pb[..rest].copy_from_slice(&v[whole..]);
                pb.as_ptr()
            }
            Second::Constants(c) => c.as_ptr(),
        };
        // SAFETY: one whole group in stack buffers (constants as above).
        unsafe { kernel(pa.as_ptr().cast(), second.cast(), po.as_mut_ptr().cast(), 1) };
        out[whole..].copy_from_slice(&po[..rest]);
    }
}

/// f32 values as a stream's operand.
fn lane(v: &[f32]) -> Lane<'_> {
    Lane {
        bytes: f32_bytes(v),
        width: 4,
    }
}

impl OpKernel for FloatMap {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let Ok(other) = self.operands(inputs[0], &inputs[1..]) else {
            return self.fallback.run(inputs);
        };
        let x = inputs[0].as_f32().unwrap_or_default();
        let mut out = vec![0f32; x.len()];
        stream(
            self.kernel,
            Some(lane(x)),
            other.map(lane),
            f32_bytes_mut(&mut out),
            4,
        );
        Ok(Tensor::from_f32(inputs[0].shape.clone(), out))
    }

    fn run_in_place(&self, first: &mut Tensor, rest: &[&Tensor]) -> Option<Result<(), String>> {
        let other = self.operands(first, rest).ok()?;
        let values = first.as_f32_mut()?;
        stream(self.kernel, None, other.map(lane), f32_bytes_mut(values), 4);
        Some(Ok(()))
    }
}

/// A generated float `nn.batch_norm` of `[N, C, ...]` values: per channel plane, eight values
/// per iteration, `(v - mean) * scale + beta` in that order with the channel's constants
/// (`qcc_runtime::float::batch_norm_scales`), the same bits as the reference.
pub struct FloatBatchNorm {
    kernel: StreamFn,
    eps: f32,
    fallback: Fallback,
}

impl FloatBatchNorm {
    /// Prepares `op` (operand types `types`), or `None` when its operands are not f32 or its
    /// input has no channel axis.
    pub fn new(op: &Operation, types: &[&TensorType]) -> Result<Option<FloatBatchNorm>, String> {
        let f32s = types.iter().all(|t| is_f32(t));
        if !f32s || types.len() != 5 || types[0].shape.len() < 2 {
            return Ok(None);
        }
        // The operand at `b` holds the channel's mean, scale and beta, four copies each.
        let kernel = streaming_fn(|sink| {
            define_streaming(sink, "fbatchnorm", [4, 0, 4], |b, pa, pb, po| {
                let flags = MemFlagsData::new().with_notrap();
                let constant =
                    |b: &mut FunctionBuilder, k: i32| b.ins().load(types::F32X4, flags, pb, 16 * k);
                let (mean, scale, beta) = (constant(b, 0), constant(b, 1), constant(b, 2));
                for j in 0..2 {
                    let x = b.ins().load(types::F32X4, flags, pa, 16 * j);
                    let centred = b.ins().fsub(x, mean);
                    let scaled = b.ins().fmul(centred, scale);
                    let y = b.ins().fadd(scaled, beta);
                    b.ins().store(flags, y, po, 16 * j);
                }
            })
        })?;
        Ok(Some(FloatBatchNorm {
            kernel,
            eps: qcc_dialects::ops::attrs::epsilon(op)? as f32,
            fallback: Fallback::new(op, types),
        }))
    }
}

impl OpKernel for FloatBatchNorm {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let x = inputs[0];
        let params: Option<Vec<&[f32]>> = inputs[1..].iter().map(|t| t.as_f32()).collect();
        let (Some(values), Some(params)) = (x.as_f32(), params) else {
            return self.fallback.run(inputs);
        };
        let c = x.shape[1];
        if params.len() != 4 || params.iter().any(|p| p.len() < c) {
            return self.fallback.run(inputs);
        }
        let [gamma, beta, mean, var] = [params[0], params[1], params[2], params[3]];
        let scale = qcc_runtime::float::batch_norm_scales(&gamma[..c], &var[..c], self.eps);
        // Per channel: its mean, scale and beta, four copies each.
        Ok(per_channel(self.kernel, x, values, |ch| {
            fours::<3, 12>([mean[ch], scale[ch], beta[ch]])
        }))
    }
}

/// Four copies of each of `values`, as a kernel loads a constant.
fn fours<const N: usize, const M: usize>(values: [f32; N]) -> [f32; M] {
    std::array::from_fn(|i| values[i / 4])
}

/// `x` (`values`, `[N, C, ...]`) with each channel plane streamed through `kernel`, whose second
/// operand is that channel's constants (`constants(c)`).
fn per_channel<const M: usize>(
    kernel: StreamFn,
    x: &Tensor,
    values: &[f32],
    constants: impl Fn(usize) -> [f32; M] + Sync,
) -> Tensor {
    let c = x.shape[1].max(1);
    let plane: usize = x.shape[2..].iter().product();
    let mut out = vec![0f32; values.len()];
    if plane > 0 {
        out.par_chunks_mut(plane)
            .zip(values.par_chunks(plane))
            .enumerate()
            .for_each(|(i, (dst, src))| {
                let channel = constants(i % c);
                stream_here(kernel, src, Second::Constants(&channel), dst);
            });
    }
    Tensor::from_f32(x.shape.clone(), out)
}

/// A generated float `nn.clip` with an upper bound per channel (`channel_max`): each channel
/// plane streamed with its bounds, `min(max(v, lo), hi[c])` as `Activation::Clip` computes it.
pub struct FloatChannelClip {
    kernel: StreamFn,
    /// Per channel: the lower and the upper bound.
    bounds: Vec<[f32; 2]>,
    fallback: Fallback,
}

impl FloatChannelClip {
    /// Prepares `op` (operand types `types`), or `None` when it is not an `nn.clip` with
    /// per-channel bounds of an f32 `[N, C, ...]` tensor.
    pub fn new(op: &Operation, types: &[&TensorType]) -> Result<Option<FloatChannelClip>, String> {
        let x = types[0];
        if !op.is(qcc_dialects::OpKind::Clip) {
            return Ok(None);
        }
        let bounds = qcc_dialects::ops::attrs::clip_bounds(op)?;
        if bounds.channel_hi.is_none() || !is_f32(x) || x.shape.len() < 2 {
            return Ok(None);
        }
        let kernel = streaming_fn(|sink| {
            define_streaming(sink, "fclip_channel", [4, 0, 4], |b, pa, pb, po| {
                let flags = MemFlagsData::new().with_notrap();
                let lo = b.ins().load(types::F32X4, flags, pb, 0);
                let hi = b.ins().load(types::F32X4, flags, pb, 16);
                for j in 0..2 {
                    let v = b.ins().load(types::F32X4, flags, pa, 16 * j);
                    let above = max_ps(b, v, lo);
                    let y = min_ps(b, above, hi);
                    b.ins().store(flags, y, po, 16 * j);
                }
            })
        })?;
        let bounds = (0..x.shape[1])
            .map(|ch| [bounds.lo as f32, bounds.hi_of(ch) as f32])
            .collect();
        Ok(Some(FloatChannelClip {
            kernel,
            bounds,
            fallback: Fallback::new(op, types),
        }))
    }
}

impl OpKernel for FloatChannelClip {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let x = inputs[0];
        match x.as_f32() {
            Some(values) if x.shape.len() >= 2 && x.shape[1] == self.bounds.len() => {
                Ok(per_channel(self.kernel, x, values, |ch| {
                    fours::<2, 8>(self.bounds[ch])
                }))
            }
            _ => self.fallback.run(inputs),
        }
    }
}
