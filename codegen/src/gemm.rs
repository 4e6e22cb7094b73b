//! The integer matrix multiply every non-depthwise `quant.conv2d` and every `quant.dense` runs
//! on: `C[M, P] = A[M, K] * B[K, P]` with A the i8 weights, B the activations minus their zero
//! point (so both fit i16), accumulated exactly in i32 by `pmaddwd` (two products per lane,
//! never saturating). A generated micro-kernel holds an `MR` x `NR` tile of C in eight
//! independent accumulators; the generated loops around it walk a range of row and column panels,
//! so the caller splits the work over threads.
//!
//! Packing: A as `[M/MR][K/2][MR]` words, each word a pair of consecutive K (so one word splats
//! to every lane); B as `[P/NR][K/2][NR][2]`, each pixel's pair of consecutive K adjacent. Both
//! are zero-padded to whole panels; zeros add nothing to the sums.

use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;
use rayon::prelude::*;

use crate::clif::{Levels, Loop, RECORD, args_of, pmaddwd, requantize8, splat_pair};
use crate::jit;

/// Rows of C per micro-kernel tile.
pub const MR: usize = 4;
/// Columns of C per micro-kernel tile (two vectors of four i32).
pub const NR: usize = 8;

/// Weights packed for the kernel: `[M/MR][K/2][MR]` pairs of i16.
pub struct PackedA {
    words: Vec<u32>,
    /// Rows before padding.
    pub m: usize,
    /// Depth before padding.
    pub k: usize,
}

impl PackedA {
    /// Packs row-major `rows` (`m` rows of `k` weights).
    pub fn new(rows: &[i8], m: usize, k: usize) -> PackedA {
        let (mp, kp) = (m.div_ceil(MR), k.div_ceil(2));
        let mut words = vec![0u32; mp * kp * MR];
        let at = |r: usize, c: usize| -> u16 {
            if r < m && c < k {
                rows[r * k + c] as i16 as u16
            } else {
                0
            }
        };
        for panel in 0..mp {
            for q in 0..kp {
                for i in 0..MR {
                    let r = panel * MR + i;
                    let word = u32::from(at(r, 2 * q)) | (u32::from(at(r, 2 * q + 1)) << 16);
                    words[(panel * kp + q) * MR + i] = word;
                }
            }
        }
        PackedA { words, m, k }
    }

    fn panels(&self) -> usize {
        self.m.div_ceil(MR)
    }
}

/// Packs B from `rows` (`k` rows of `ldp` values, of which the first `p` are real).
pub fn pack_b(rows: &[i16], k: usize, p: usize, ldp: usize) -> Vec<i16> {
    let (pp, kp) = (p.div_ceil(NR), k.div_ceil(2));
    let mut packed = vec![0i16; pp * kp * NR * 2];
    packed
        .par_chunks_mut(kp * NR * 2)
        .enumerate()
        .for_each(|(panel, dst)| {
            let p0 = panel * NR;
            let width = NR.min(p - p0);
            for q in 0..kp {
                let tile = &mut dst[q * NR * 2..(q + 1) * NR * 2];
                for e in 0..2 {
                    let row = 2 * q + e;
                    if row >= k {
                        continue;
                    }
                    let src = &rows[row * ldp + p0..row * ldp + p0 + width];
                    for (i, v) in src.iter().enumerate() {
                        tile[2 * i + e] = *v;
                    }
                }
            }
        });
    packed
}

type GemmFn =
    unsafe extern "C" fn(*const u32, *const i16, *mut u8, i64, i64, i64, i64, i64, *const i32);

/// What a generated multiply does with each finished tile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// Stores the i32 accumulators (rows `ld` values apart).
    Accumulators,
    /// Requantizes them with each row's record and stores output levels (rows `ld` bytes apart).
    Requantize(Levels),
}

/// The generated multiply for depth `k`, `(a, b, out, ld, pb, pe, mb, me, records)`: computes
/// the tiles of column panels `[pb, pe)` and row panels `[mb, me)` and finishes them by
/// `epilogue`.
pub fn kernel(k: usize, epilogue: Epilogue) -> Result<GemmFn, String> {
    let kp = k.div_ceil(2).max(1);
    let ptr = jit::pointer();
    let name = match epilogue {
        Epilogue::Accumulators => format!("qgemm_i16_{MR}x{NR}_k{kp}_acc"),
        Epilogue::Requantize(l) => format!("qgemm_i16_{MR}x{NR}_k{kp}_{}", l.tag()),
    };
    let code = jit::kernel(&name, &[ptr; 9], |b, args| {
        build(b, args, kp as i64, epilogue)
    })?;
    // SAFETY: the code was generated with exactly this signature, in the platform's C ABI.
    Ok(unsafe { std::mem::transmute::<*const u8, GemmFn>(code) })
}

fn build(b: &mut FunctionBuilder, args: &[Value], kp: i64, epilogue: Epilogue) {
    let (a, bm, out, ld, pb, pe, mb, me, records) = (
        args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8],
    );
    let flags = MemFlagsData::new().with_notrap();
    let (mr, nr) = (MR as i64, NR as i64);
    let columns = Loop::new(b, pb, pe);
    let pp = columns.index;
    let b_panel = {
        let off = b.ins().imul_imm_s(pp, kp * nr * 4);
        b.ins().iadd(bm, off)
    };
    let rows = Loop::new(b, mb, me);
    let mp = rows.index;
    let a_panel = {
        let off = b.ins().imul_imm_s(mp, kp * mr * 4);
        b.ins().iadd(a, off)
    };
    // The K loop: eight accumulators, A and B pointers, a countdown.
    let zero = b.ins().iconst(types::I32, 0);
    let zero = b.ins().splat(types::I32X4, zero);
    let body = b.create_block();
    let done = b.create_block();
    for _ in 0..2 * MR {
        b.append_block_param(body, types::I32X4);
        b.append_block_param(done, types::I32X4);
    }
    let ptr = jit::pointer();
    for _ in 0..3 {
        b.append_block_param(body, ptr);
    }
    let count = b.ins().iconst(ptr, kp);
    let mut start = vec![zero; 2 * MR];
    start.extend([a_panel, b_panel, count]);
    b.ins().jump(body, &args_of(&start));
    b.switch_to_block(body);
    let params = b.block_params(body).to_vec();
    let (accs, ap, bp, left) = (
        &params[..2 * MR],
        params[2 * MR],
        params[2 * MR + 1],
        params[2 * MR + 2],
    );
    let b0 = b.ins().load(types::I16X8, flags, bp, 0);
    let b1 = b.ins().load(types::I16X8, flags, bp, 16);
    let mut next = Vec::with_capacity(2 * MR + 3);
    for r in 0..MR {
        let w = splat_pair(b, ap, 4 * r as i32);
        let d0 = pmaddwd(b, w, b0);
        let d1 = pmaddwd(b, w, b1);
        next.push(b.ins().iadd(accs[2 * r], d0));
        next.push(b.ins().iadd(accs[2 * r + 1], d1));
    }
    let finished = args_of(&next);
    let ap2 = b.ins().iadd_imm_s(ap, mr * 4);
    let bp2 = b.ins().iadd_imm_s(bp, nr * 4);
    let left2 = b.ins().iadd_imm_s(left, -1);
    next.extend([ap2, bp2, left2]);
    b.ins().brif(left2, body, &args_of(&next), done, &finished);
    b.switch_to_block(done);
    let accs = b.block_params(done).to_vec();
    // Row mp*MR + r, columns pp*NR ..
    let row0 = b.ins().imul_imm_s(mp, mr);
    let col0 = b.ins().imul_imm_s(pp, nr);
    let first = b.ins().imul(row0, ld);
    let first = b.ins().iadd(first, col0);
    match epilogue {
        Epilogue::Accumulators => {
            let stride = b.ins().ishl_imm_u(ld, 2);
            let base = b.ins().ishl_imm_u(first, 2);
            let mut row = b.ins().iadd(out, base);
            for r in 0..MR {
                if r > 0 {
                    row = b.ins().iadd(row, stride);
                }
                for j in 0..2 {
                    b.ins().store(flags, accs[2 * r + j], row, 16 * j as i32);
                }
            }
        }
        Epilogue::Requantize(levels) => {
            let mut row = b.ins().iadd(out, first);
            let record0 = b.ins().imul_imm_s(row0, i64::from(RECORD));
            let mut record = b.ins().iadd(records, record0);
            for r in 0..MR {
                if r > 0 {
                    row = b.ins().iadd(row, ld);
                    record = b.ins().iadd_imm_s(record, i64::from(RECORD));
                }
                requantize8(b, [accs[2 * r], accs[2 * r + 1]], record, &levels, row);
            }
        }
    }
    rows.close(b);
    columns.close(b);
    b.ins().return_(&[]);
}

/// Raw pointers handed to the threads that fill disjoint tiles of one output.
#[derive(Clone, Copy)]
struct Shared(*mut u8);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// Runs `f` over every tile of an `[a.m, p]` output at `out` (rows `ld` elements apart), the
/// tiles split over the current thread pool.
fn tiles(f: GemmFn, a: &PackedA, b: &[i16], p: usize, out: *mut u8, ld: usize, records: &[i32]) {
    let (mp, pp) = (a.panels(), p.div_ceil(NR));
    let threads = rayon::current_num_threads().max(1);
    let want = threads * 4;
    let p_chunks = pp.min(want).max(1);
    let m_chunks = (want / p_chunks).clamp(1, mp);
    let shared = Shared(out);
    let (ap, bp, rp) = (
        a.words.as_ptr() as usize,
        b.as_ptr() as usize,
        records.as_ptr() as usize,
    );
    (0..p_chunks * m_chunks).into_par_iter().for_each(|t| {
        let (pc, mc) = (t / m_chunks, t % m_chunks);
        let (pb, pe) = (pp * pc / p_chunks, pp * (pc + 1) / p_chunks);
        let (mb, me) = (mp * mc / m_chunks, mp * (mc + 1) / m_chunks);
        if pb == pe || mb == me {
            return;
        }
        let s = shared;
        // SAFETY: the packed buffers hold whole panels, the output whole tiles, the records one
        // per padded row; each task writes only its own tiles.
        unsafe {
            f(
                ap as *const u32,
                bp as *const i16,
                s.0,
                ld as i64,
                pb as i64,
                pe as i64,
                mb as i64,
                me as i64,
                rp as *const i32,
            )
        };
    });
}

/// `C = A * B` for packed `a` and packed `b` (of `p` columns): C as `[a.m][p]` i32.
pub fn multiply(a: &PackedA, b: &[i16], p: usize) -> Result<Vec<i32>, String> {
    if a.k == 0 || p == 0 || a.m == 0 {
        return Ok(vec![0; a.m * p]);
    }
    let ld = p.div_ceil(NR) * NR;
    let f = kernel(a.k, Epilogue::Accumulators)?;
    let mut c = vec![0i32; a.panels() * MR * ld];
    tiles(f, a, b, p, c.as_mut_ptr() as *mut u8, ld, &[]);
    let mut out = vec![0i32; a.m * p];
    for (dst, src) in out.chunks_mut(p).zip(c.chunks(ld)) {
        dst.copy_from_slice(&src[..p]);
    }
    Ok(out)
}

/// The output levels of `A * B` requantized by one record per row of A (`[bias, m0, shift, 0]`,
/// see [`requantize8`]), as `[a.m][p]` bytes.
pub fn multiply_requantized(
    a: &PackedA,
    b: &[i16],
    p: usize,
    records: &[i32],
    levels: Levels,
) -> Result<Vec<u8>, String> {
    let ld = p.div_ceil(NR) * NR;
    let rows = a.panels() * MR;
    if records.len() < rows * 4 {
        return Err("internal error: fewer requantization records than rows".into());
    }
    let f = kernel(a.k, Epilogue::Requantize(levels))?;
    let mut padded = vec![0u8; rows * ld];
    tiles(f, a, b, p, padded.as_mut_ptr(), ld, records);
    let mut out = vec![0u8; a.m * p];
    for (dst, src) in out.chunks_mut(p.max(1)).zip(padded.chunks(ld.max(1))) {
        dst.copy_from_slice(&src[..p]);
    }
    Ok(out)
}
