//! What a generated object checks before it runs: that the CPU has every x86-64 feature its code
//! was generated with (CPUID bits) and that the operating system saves the vector registers those
//! features use (XCR0), so that an object built for one CPU returns an error on another instead
//! of stopping on an illegal instruction.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value, types,
};
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{FuncId, Module};

use crate::emit::{Shape, Sink};

/// A register CPUID returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Reg {
    Eax = 0,
    Ebx = 1,
    Ecx = 2,
}

/// One CPUID bit: leaf, subleaf, register, bit.
type Bit = (u32, u32, Reg, u32);

/// The CPUID bit of a Cranelift x86-64 feature flag (its name without `has_`).
fn bit_of(feature: &str) -> Option<Bit> {
    use Reg::*;
    Some(match feature {
        "sse3" => (1, 0, Ecx, 0),
        "ssse3" => (1, 0, Ecx, 9),
        "fma" => (1, 0, Ecx, 12),
        "cmpxchg16b" => (1, 0, Ecx, 13),
        "sse41" => (1, 0, Ecx, 19),
        "sse42" => (1, 0, Ecx, 20),
        "popcnt" => (1, 0, Ecx, 23),
        "avx" => (1, 0, Ecx, 28),
        "bmi1" => (7, 0, Ebx, 3),
        "avx2" => (7, 0, Ebx, 5),
        "bmi2" => (7, 0, Ebx, 8),
        "avx512f" => (7, 0, Ebx, 16),
        "avx512dq" => (7, 0, Ebx, 17),
        "avx512vl" => (7, 0, Ebx, 31),
        "avx512vbmi" => (7, 0, Ecx, 1),
        "avx512vnni" => (7, 0, Ecx, 11),
        "avx512bitalg" => (7, 0, Ecx, 12),
        "avx_vnni" => (7, 1, Eax, 4),
        "lzcnt" => (0x8000_0001, 0, Ecx, 5),
        _ => return None,
    })
}

/// CPUID leaf 1's OSXSAVE bit: the OS enabled XGETBV and manages extended state.
const OSXSAVE: Bit = (1, 0, Reg::Ecx, 27);
/// XCR0 bits for SSE and AVX state.
const XCR0_AVX: u64 = 0x6;
/// XCR0 bits for AVX-512 state (opmask, upper halves of ZMM0-15, ZMM16-31) on top of AVX's.
const XCR0_AVX512: u64 = 0xe6;

/// The checks an object makes before it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuCheck {
    bits: Vec<Bit>,
    xcr0: u64,
    /// The features, as named.
    pub features: Vec<String>,
}

impl CpuCheck {
    /// The checks for code generated with `features` (Cranelift's x86-64 flag names without
    /// `has_`); an error names a feature it cannot check.
    pub fn x86(features: &[String]) -> Result<CpuCheck, String> {
        let mut bits = Vec::new();
        let mut xcr0 = 0;
        for f in features {
            bits.push(bit_of(f).ok_or_else(|| {
                format!("the code would use the CPU feature {f}, which qcc cannot check for")
            })?);
            if f.starts_with("avx") || f == "fma" {
                xcr0 |= XCR0_AVX;
            }
            if f.starts_with("avx512") {
                xcr0 |= XCR0_AVX512;
            }
        }
        if xcr0 != 0 {
            bits.push(OSXSAVE);
        }
        bits.sort();
        bits.dedup();
        Ok(CpuCheck {
            bits,
            xcr0,
            features: features.to_vec(),
        })
    }

    /// Defines the helpers the check calls (`cpuid` and `xgetbv`, a few bytes of machine code
    /// each) in `sink`.
    pub fn helpers(&self, sink: &mut dyn Sink) -> Result<Helpers, String> {
        let ptr = sink.pointer();
        // push rbx; mov r8, rdx; mov eax, edi; mov ecx, esi; cpuid;
        // mov [r8], eax; mov [r8+4], ebx; mov [r8+8], ecx; mov [r8+12], edx; pop rbx; ret
        let cpuid = [
            0x53, 0x49, 0x89, 0xd0, 0x89, 0xf8, 0x89, 0xf1, 0x0f, 0xa2, 0x41, 0x89, 0x00, 0x41,
            0x89, 0x58, 0x04, 0x41, 0x89, 0x48, 0x08, 0x41, 0x89, 0x50, 0x0c, 0x5b, 0xc3,
        ];
        // xor ecx, ecx; xgetbv; shl rdx, 32; or rax, rdx; ret
        let xgetbv = [
            0x31, 0xc9, 0x0f, 0x01, 0xd0, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0xc3,
        ];
        let cpuid = sink.machine_code(
            "cpuid",
            &Shape::kernel(&[types::I32, types::I32, ptr]),
            &cpuid,
        )?;
        let xgetbv = sink.machine_code(
            "xgetbv",
            &Shape {
                params: &[],
                returns: &[types::I64],
                export: false,
            },
            &xgetbv,
        )?;
        Ok(Helpers { cpuid, xgetbv })
    }

    /// Emits the check: returns `code` (i32) from the function when the CPU or the OS lacks
    /// something; continues otherwise.
    pub fn emit(
        &self,
        b: &mut FunctionBuilder,
        m: &mut dyn Module,
        helpers: &Helpers,
        ptr: types::Type,
        code: i32,
    ) {
        let slot =
            b.create_sized_stack_slot(StackSlotData::new(StackSlotKind::ExplicitSlot, 16, 4));
        let out = b.ins().stack_addr(ptr, slot, 0);
        let cpuid = m.declare_func_in_func(helpers.cpuid, b.func);
        let query = |b: &mut FunctionBuilder, leaf: u32, sub: u32| -> [Value; 3] {
            let l = b.ins().iconst(types::I32, i64::from(leaf as i32));
            let s = b.ins().iconst(types::I32, i64::from(sub));
            b.ins().call(cpuid, &[l, s, out]);
            [0, 4, 8].map(|o| b.ins().load(types::I32, MemFlagsData::trusted(), out, o))
        };
        let require = |b: &mut FunctionBuilder, ok: Value| {
            let good = b.create_block();
            let bad = b.create_block();
            b.ins().brif(ok, good, &[], bad, &[]);
            b.switch_to_block(bad);
            let v = b.ins().iconst(types::I32, i64::from(code));
            b.ins().return_(&[v]);
            b.switch_to_block(good);
        };
        let at_least = |b: &mut FunctionBuilder, v: Value, n: u32| {
            let ok = b
                .ins()
                .icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, v, i64::from(n as i32));
            require(b, ok);
        };
        // The highest leaves the CPU answers.
        let basic = self
            .bits
            .iter()
            .filter(|b| b.0 < 0x8000_0000)
            .map(|b| b.0)
            .max();
        if let Some(max) = basic {
            let [eax, _, _] = query(b, 0, 0);
            at_least(b, eax, max);
        }
        if let Some(max) = self
            .bits
            .iter()
            .filter(|b| b.0 >= 0x8000_0000)
            .map(|b| b.0)
            .max()
        {
            let [eax, _, _] = query(b, 0x8000_0000, 0);
            at_least(b, eax, max);
        }
        if self.bits.iter().any(|b| (b.0, b.1) == (7, 1)) {
            let [eax, _, _] = query(b, 7, 0);
            at_least(b, eax, 1);
        }
        let mut leaves: Vec<(u32, u32)> = self.bits.iter().map(|b| (b.0, b.1)).collect();
        leaves.dedup();
        for (leaf, sub) in leaves {
            let regs = query(b, leaf, sub);
            for reg in [Reg::Eax, Reg::Ebx, Reg::Ecx] {
                let mask = self
                    .bits
                    .iter()
                    .filter(|x| (x.0, x.1, x.2) == (leaf, sub, reg))
                    .fold(0u32, |m, x| m | 1 << x.3);
                if mask == 0 {
                    continue;
                }
                let v = b.ins().band_imm_u(regs[reg as usize], i64::from(mask));
                let ok = b.ins().icmp_imm_u(IntCC::Equal, v, i64::from(mask));
                require(b, ok);
            }
        }
        if self.xcr0 != 0 {
            // Only now: XGETBV faults unless OSXSAVE, checked above, is set.
            let xgetbv = m.declare_func_in_func(helpers.xgetbv, b.func);
            let call = b.ins().call(xgetbv, &[]);
            let x = b.inst_results(call)[0];
            let v = b.ins().band_imm_u(x, self.xcr0 as i64);
            let ok = b.ins().icmp_imm_u(IntCC::Equal, v, self.xcr0 as i64);
            require(b, ok);
        }
    }
}

/// The check's machine-code helpers, defined in a sink.
#[derive(Clone, Copy, Debug)]
pub struct Helpers {
    cpuid: FuncId,
    xgetbv: FuncId,
}
