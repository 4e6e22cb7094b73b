//! Small pieces of CLIF the kernels are built from: counted loops, and the instruction trees
//! Cranelift's x64 backend folds into single SIMD instructions.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{Block, BlockArg, Endianness, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

use crate::jit;

/// A counted loop `for index in (begin..end).step_by(step)` whose body is emitted between
/// [`Loop::new`] and [`Loop::close`].
pub struct Loop {
    header: Block,
    exit: Block,
    step: i64,
    /// The loop counter, valid inside the body.
    pub index: Value,
    /// Values the loop carries from one iteration to the next, each with what it adds per
    /// iteration (see [`Loop::carrying`]).
    carried: Vec<(Value, i64)>,
}

impl Loop {
    /// Opens a loop with step 1 and leaves the builder in its body.
    pub fn new(b: &mut FunctionBuilder, begin: Value, end: Value) -> Loop {
        Loop::stepped(b, begin, end, 1)
    }

    /// Opens a loop that steps by `step` (the body runs while `index < end`).
    pub fn stepped(b: &mut FunctionBuilder, begin: Value, end: Value, step: i64) -> Loop {
        Loop::carrying(b, (begin, end, step), &[]).0
    }

    /// Opens a loop like [`Loop::stepped`] that also carries pointer-sized values: each starts at
    /// its given value and adds its stride per iteration; returns the loop and their values in
    /// the body. A value derived from the counter (`base + index * stride`) is computed again
    /// on every iteration of an inner loop, since Cranelift rematerializes it there; a carried
    /// one is a register.
    pub fn carrying(
        b: &mut FunctionBuilder,
        (begin, end, step): (Value, Value, i64),
        carried: &[(Value, i64)],
    ) -> (Loop, Vec<Value>) {
        let header = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        let ptr = jit::pointer();
        for _ in 0..=carried.len() {
            b.append_block_param(header, ptr);
        }
        let start: Vec<BlockArg> = std::iter::once(begin)
            .chain(carried.iter().map(|(v, _)| *v))
            .map(BlockArg::from)
            .collect();
        b.ins().jump(header, &start);
        b.switch_to_block(header);
        let params = b.block_params(header).to_vec();
        let index = params[0];
        let more = b.ins().icmp(IntCC::SignedLessThan, index, end);
        b.ins().brif(more, body, &[], exit, &[]);
        b.switch_to_block(body);
        b.seal_block(body);
        let values = params[1..].to_vec();
        let carried = values
            .iter()
            .zip(carried)
            .map(|(v, (_, stride))| (*v, *stride))
            .collect();
        (
            Loop {
                header,
                exit,
                step,
                index,
                carried,
            },
            values,
        )
    }

    /// Closes the loop (steps the counter and the carried values, jumps back) and continues
    /// after it.
    pub fn close(self, b: &mut FunctionBuilder) {
        let next = b.ins().iadd_imm_s(self.index, self.step);
        let mut args = vec![BlockArg::from(next)];
        for (v, stride) in &self.carried {
            args.push(BlockArg::from(b.ins().iadd_imm_s(*v, *stride)));
        }
        b.ins().jump(self.header, &args);
        b.seal_block(self.header);
        b.switch_to_block(self.exit);
        b.seal_block(self.exit);
    }
}

/// `pmaddwd x, y` on i16x8: products of lanes, adjacent pairs summed into i32x4 (exact).
pub fn pmaddwd(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    let xl = b.ins().swiden_low(x);
    let yl = b.ins().swiden_low(y);
    let lo = b.ins().imul(xl, yl);
    let xh = b.ins().swiden_high(x);
    let yh = b.ins().swiden_high(y);
    let hi = b.ins().imul(xh, yh);
    b.ins().iadd_pairwise(lo, hi)
}

/// `c + dot`, where lane i of `dot` sums the four products of bytes `4i..4i+4` of `w` (i8) and
/// `u` (u8): the exact tree Cranelift folds into one `vpdpbusd` (signed operand first,
/// accumulator last); without VNNI it lowers to an exact longer sequence.
pub fn dot_u8_i8(b: &mut FunctionBuilder, w: Value, u: Value, c: Value) -> Value {
    let w_lo = b.ins().swiden_low(w);
    let u_lo = b.ins().uwiden_low(u);
    let lo = b.ins().imul(w_lo, u_lo);
    let w_hi = b.ins().swiden_high(w);
    let u_hi = b.ins().uwiden_high(u);
    let hi = b.ins().imul(w_hi, u_hi);
    let lo_lo = b.ins().swiden_low(lo);
    let lo_hi = b.ins().swiden_high(lo);
    let pairs_lo = b.ins().iadd_pairwise(lo_lo, lo_hi);
    let hi_lo = b.ins().swiden_low(hi);
    let hi_hi = b.ins().swiden_high(hi);
    let pairs_hi = b.ins().iadd_pairwise(hi_lo, hi_hi);
    let dot = b.ins().iadd_pairwise(pairs_lo, pairs_hi);
    b.ins().iadd(dot, c)
}

/// The 32-bit word at `ptr + offset` in every lane, seen as i8x16 (four bytes repeated).
pub fn splat_quad(b: &mut FunctionBuilder, ptr: Value, offset: i32) -> Value {
    splat_word(b, ptr, offset, types::I8X16)
}

fn splat_word(b: &mut FunctionBuilder, ptr: Value, offset: i32, ty: types::Type) -> Value {
    let word = b
        .ins()
        .load(types::I32, MemFlagsData::new().with_notrap(), ptr, offset);
    let lanes = b.ins().splat(types::I32X4, word);
    b.ins().bitcast(
        ty,
        MemFlagsData::new().with_endianness(Endianness::Little),
        lanes,
    )
}

/// Values as the arguments of a jump.
pub fn args_of(values: &[Value]) -> Vec<BlockArg> {
    values.iter().map(|v| BlockArg::Value(*v)).collect()
}

/// The output constants a fused requantization is specialised on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Levels {
    /// Output zero point.
    pub zero_point: i32,
    /// Smallest and largest output level (clamp within the storage range).
    pub bounds: (i32, i32),
    /// Whether the output is stored as i8 (else u8).
    pub signed: bool,
    /// Whether each channel's upper level comes from its record (a layer's `channel_max`)
    /// rather than `bounds.1`.
    pub channel_hi: bool,
    /// Whether the layers' f32 epilogue ([`requantize8`]) clamps to `bounds` before rounding.
    /// Not needed at an end where the bound is the storage's own and every scaled sum is known
    /// to stay below 2^22 in magnitude (where the rounding is exact): the narrowing packs
    /// saturate there.
    pub clamp: Clamp,
}

/// Which ends of [`Levels::bounds`] the layers' f32 epilogue clamps to in f32 (see there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Clamp {
    /// Clamp from below.
    pub lo: bool,
    /// Clamp from above.
    pub hi: bool,
}

impl Clamp {
    /// Both ends: always exact.
    pub const BOTH: Clamp = Clamp { lo: true, hi: true };
}

impl Levels {
    /// A name fragment that tells kernels of different constants apart.
    pub fn tag(&self) -> String {
        format!(
            "z{}_lo{}_hi{}{}_{}{}{}",
            self.zero_point,
            self.bounds.0,
            self.bounds.1,
            if self.channel_hi { "c" } else { "" },
            if self.signed { "i8" } else { "u8" },
            if self.clamp.lo { "" } else { "_packlo" },
            if self.clamp.hi { "" } else { "_packhi" },
        )
    }
}

/// One output channel's requantization record as the kernels read it, [`RECORD_WORDS`] words
/// (48 bytes): the bias in four i32 lanes, the channel's f32 scale in four lanes, then its
/// largest output level less the zero point as f32 in four lanes (read when
/// [`Levels::channel_hi`]).
pub fn record(bias: i32, scale: f32, hi: f32) -> [i32; RECORD_WORDS] {
    let mut r = [0i32; RECORD_WORDS];
    r[..4].fill(bias);
    r[4..8].fill(scale.to_bits() as i32);
    r[8..].fill(hi.to_bits() as i32);
    r
}

/// i32 words of one [`record`].
pub const RECORD_WORDS: usize = 12;
/// Bytes of one [`record`].
pub const RECORD: i32 = 4 * RECORD_WORDS as i32;

/// `(m0', s')` with `s' = max(shift, 32)` and `m0' = m0 * 2^(s' - shift)`: the same multiplier
/// (`m0' / 2^s' = m0 / 2^shift`), its shift at least 32 so the kernels take the high half of
/// each 64-bit product for free. `m0 < 2^31` and `shift >= 31` keep `m0' < 2^32`.
fn widened(m0: i64, shift: u32) -> (u64, u32) {
    let wide = shift.max(32);
    ((m0 as u64) << (wide - shift), wide)
}

/// A fixed-point multiplier's constants as vector operands.
pub struct Multiplier {
    /// `m0'` in every u32 lane.
    m0: Value,
    /// `2^(s' - 1)` in both u64 lanes.
    half: Value,
    /// `s' - 32` (i32).
    shift: Value,
    /// How far [`Multiplier::apply`] shifts its operand left first (see [`pre_shift`]).
    pre: u32,
}

/// How far values below 2^`bits` in magnitude must be shifted left so that the multiplier
/// `m0 / 2^shift` applies to them in the form [`Multiplier::apply`] computes exactly (a shift of
/// 31 or more; shifting the product's dividend and divisor alike rounds the same): `None` for a
/// zero multiplier, or one too large for the shifted values to stay below 2^31.
pub fn pre_shift(m0: i64, shift: u32, bits: u32) -> Option<u32> {
    let pre = 31u32.saturating_sub(shift);
    (m0 != 0 && bits + pre <= 31).then_some(pre)
}

impl Multiplier {
    /// From constants (`shift` at least 31).
    pub fn constant(b: &mut FunctionBuilder, m0: i64, shift: u32) -> Multiplier {
        Multiplier::shifted(b, m0, shift, 0)
    }

    /// From constants, applied to operands shifted left by `pre` first (from [`pre_shift`], so
    /// that `shift + pre` is at least 31).
    pub fn shifted(b: &mut FunctionBuilder, m0: i64, shift: u32, pre: u32) -> Multiplier {
        let (m0, wide) = widened(m0, shift + pre);
        let m0 = b.ins().iconst(types::I32, m0 as u32 as i64);
        let m0 = b.ins().splat(types::I32X4, m0);
        let half = b.ins().iconst(types::I64, 1i64 << (wide - 1));
        let half = b.ins().splat(types::I64X2, half);
        let shift = b.ins().iconst(types::I32, i64::from(wide - 32));
        Multiplier {
            m0,
            half,
            shift,
            pre,
        }
    }

    /// `round_shift(t * m0, shift)` in every lane of `t` (i32x4), rounding ties away from zero as
    /// `qcc_runtime::quant::round_shift` does. Exact when `|t| < 2^31` and the shift is at least
    /// 31 (then the result fits 31 bits); callers check.
    ///
    /// `|t| * m0' + 2^(s' - 1)` in u64 (`pmuludq` on the widened lanes: below 2^63 + 2^62), its
    /// high halves gathered (a shift by 32), shifted right by `s' - 32`, the sign restored.
    pub fn apply(&self, b: &mut FunctionBuilder, t: Value) -> Value {
        let t = if self.pre > 0 {
            b.ins().ishl_imm_u(t, i64::from(self.pre))
        } else {
            t
        };
        let little = MemFlagsData::new().with_endianness(Endianness::Little);
        // The high dwords of two u64x2, in lane order.
        let high = b
            .func
            .dfg
            .immediates
            .push(vec![4u8, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31].into());
        let sign = b.ins().sshr_imm_u(t, 31);
        let magnitude = b.ins().iabs(t);
        let a_lo = b.ins().uwiden_low(magnitude);
        let m_lo = b.ins().uwiden_low(self.m0);
        let p_lo = b.ins().imul(a_lo, m_lo);
        let a_hi = b.ins().uwiden_high(magnitude);
        let m_hi = b.ins().uwiden_high(self.m0);
        let p_hi = b.ins().imul(a_hi, m_hi);
        let p_lo = b.ins().iadd(p_lo, self.half);
        let p_hi = b.ins().iadd(p_hi, self.half);
        let r_lo = b.ins().bitcast(types::I8X16, little, p_lo);
        let r_hi = b.ins().bitcast(types::I8X16, little, p_hi);
        let r = b.ins().shuffle(r_lo, r_hi, high);
        let r = b.ins().bitcast(types::I32X4, little, r);
        let r = b.ins().ushr(r, self.shift);
        let r = b.ins().bxor(r, sign);
        b.ins().isub(r, sign)
    }
}

/// `i32x4` with `v` in every lane.
pub fn splat32(b: &mut FunctionBuilder, v: i64) -> Value {
    let c = b.ins().iconst(types::I32, v);
    b.ins().splat(types::I32X4, c)
}

/// Stores eight output levels (`levels`' zero point added, clamped to its bounds, narrowed to its
/// storage) from two i32x4 at `dst`.
pub fn store_levels8(b: &mut FunctionBuilder, values: [Value; 2], levels: &Levels, dst: Value) {
    let zp = splat32(b, i64::from(levels.zero_point));
    let lo = splat32(b, i64::from(levels.bounds.0));
    let hi = splat32(b, i64::from(levels.bounds.1));
    let clamped = values.map(|v| {
        let y = b.ins().iadd(v, zp);
        let y = b.ins().smax(y, lo);
        b.ins().smin(y, hi)
    });
    store_bytes8(b, clamped, levels.signed, dst);
}

/// `1.5 * 2^23`: adding it to an f32 of magnitude below 2^22 rounds it to an integer (to
/// nearest, ties to even, as every f32 addition rounds), which then sits in the low bits of the
/// sum's representation.
const MAGIC: f32 = 12_582_912.0;

/// `x < y ? x : y` on f32x4 (the tree Cranelift folds into `minps`: `y` when either is NaN).
pub fn min_ps(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let less = b.ins().fcmp(FloatCC::LessThan, x, y);
    let mask = b.ins().bitcast(types::F32X4, little, less);
    b.ins().bitselect(mask, x, y)
}

/// `y < x ? x : y` on f32x4 (folded into `maxps`: `y` when either is NaN).
pub fn max_ps(b: &mut FunctionBuilder, x: Value, y: Value) -> Value {
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let less = b.ins().fcmp(FloatCC::LessThan, y, x);
    let mask = b.ins().bitcast(types::F32X4, little, less);
    b.ins().bitselect(mask, x, y)
}

/// `f32x4` with every lane `v`.
pub(crate) fn splat_f32(b: &mut FunctionBuilder, v: f32) -> Value {
    let c = b.ins().f32const(v);
    b.ins().splat(types::F32X4, c)
}

/// `v` (f32x4) with every NaN lane `f32::NAN` (`qcc_runtime::float::canonical_nan`).
pub(crate) fn canonical_nan_ps(b: &mut FunctionBuilder, v: Value) -> Value {
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let unordered = b.ins().fcmp(FloatCC::Unordered, v, v);
    let mask = b.ins().bitcast(types::F32X4, little, unordered);
    let nan = splat_f32(b, f32::NAN);
    b.ins().bitselect(mask, nan, v)
}

/// Requantizes eight accumulators of one channel (`accs`, two i32x4) exactly as
/// `qcc_runtime::quant::Requant` does and stores the eight output levels at `dst`:
/// `f32(acc + bias) * scale` clamped to `[lo - Z_y, hi - Z_y]`, rounded to nearest even by the
/// magic addition, `Z_y` added by the same subtraction that takes the magic number out.
///
/// `record` points at the channel's [`record`]; accumulators that started from the bias
/// (`biased`) do not add it again. Exact when `|acc + bias| < 2^31` (the sum is formed in i32);
/// the caller checks.
pub fn requantize8(
    b: &mut FunctionBuilder,
    accs: [Value; 2],
    (record, biased): (Value, bool),
    levels: &Levels,
    dst: Value,
) {
    let flags = MemFlagsData::new().with_notrap();
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let bias = (!biased).then(|| b.ins().load(types::I32X4, flags, record, 0));
    let scale = b.ins().load(types::F32X4, flags, record, 16);
    let zp = levels.zero_point;
    let lo = splat_f32(b, (levels.bounds.0 - zp) as f32);
    let hi = if levels.channel_hi {
        b.ins().load(types::F32X4, flags, record, 32)
    } else {
        splat_f32(b, (levels.bounds.1 - zp) as f32)
    };
    let magic = splat_f32(b, MAGIC);
    let unbias = splat32(b, i64::from(MAGIC.to_bits() as i32 - zp));
    let values = accs.map(|acc| {
        let t = match bias {
            Some(bias) => b.ins().iadd(acc, bias),
            None => acc,
        };
        let f = b.ins().fcvt_from_sint(types::F32X4, t);
        let f = b.ins().fmul(f, scale);
        let f = if levels.clamp.lo { max_ps(b, f, lo) } else { f };
        let f = if levels.clamp.hi { min_ps(b, f, hi) } else { f };
        let f = b.ins().fadd(f, magic);
        let bits = b.ins().bitcast(types::I32X4, little, f);
        b.ins().isub(bits, unbias)
    });
    store_bytes8(b, values, levels.signed, dst);
}

/// Stores eight values (two i32x4, each within the 8-bit storage range) as bytes at `dst`.
fn store_bytes8(b: &mut FunctionBuilder, values: [Value; 2], signed: bool, dst: Value) {
    let narrow = b.ins().snarrow(values[0], values[1]);
    let bytes = if signed {
        b.ins().snarrow(narrow, narrow)
    } else {
        b.ins().unarrow(narrow, narrow)
    };
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let words = b.ins().bitcast(types::I64X2, little, bytes);
    let low = b.ins().extractlane(words, 0);
    b.ins()
        .store(MemFlagsData::new().with_notrap(), low, dst, 0);
}
