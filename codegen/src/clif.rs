//! Small pieces of CLIF the kernels are built from: counted loops, and the instruction trees
//! Cranelift's x64 backend folds into single SIMD instructions.

use cranelift_codegen::ir::condcodes::IntCC;
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
}

impl Loop {
    /// Opens a loop with step 1 and leaves the builder in its body.
    pub fn new(b: &mut FunctionBuilder, begin: Value, end: Value) -> Loop {
        Loop::stepped(b, begin, end, 1)
    }

    /// Opens a loop that steps by `step` (the body runs while `index < end`).
    pub fn stepped(b: &mut FunctionBuilder, begin: Value, end: Value, step: i64) -> Loop {
        let header = b.create_block();
        let body = b.create_block();
        let exit = b.create_block();
        b.append_block_param(header, jit::pointer());
        b.ins().jump(header, &[begin.into()]);
        b.switch_to_block(header);
        let index = b.block_params(header)[0];
        let more = b.ins().icmp(IntCC::SignedLessThan, index, end);
        b.ins().brif(more, body, &[], exit, &[]);
        b.switch_to_block(body);
        b.seal_block(body);
        Loop {
            header,
            exit,
            step,
            index,
        }
    }

    /// Closes the loop (steps the counter, jumps back) and continues after it.
    pub fn close(self, b: &mut FunctionBuilder) {
        let next = b.ins().iadd_imm_s(self.index, self.step);
        b.ins().jump(self.header, &[next.into()]);
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

/// The 32-bit word at `ptr + offset` in every lane, seen as i16x8 (one pair of i16 repeated).
pub fn splat_pair(b: &mut FunctionBuilder, ptr: Value, offset: i32) -> Value {
    let word = b
        .ins()
        .load(types::I32, MemFlagsData::new().with_notrap(), ptr, offset);
    let lanes = b.ins().splat(types::I32X4, word);
    b.ins().bitcast(
        types::I16X8,
        MemFlagsData::new().with_endianness(Endianness::Little),
        lanes,
    )
}

/// Values as the arguments of a jump.
pub fn args_of(values: &[Value]) -> Vec<BlockArg> {
    values.iter().map(|v| BlockArg::Value(*v)).collect()
}
