//! The integer matrix multiply every non-depthwise `quant.conv2d` and every `quant.dense` runs
//! on: `C[M, P] = A[M, K] * B[K, P]`, A the i8 weights, B the activations, accumulated exactly in
//! i32. A generated micro-kernel holds an `MR` x `NR` tile of C in eight independent accumulators;
//! the generated loops around it walk a range of row and column panels, so the caller splits the
//! work over threads. Two forms, chosen by the CPU ([`Form::for_depth`]):
//!
//! - [`Form::Quads`] (AVX-VNNI or AVX512-VNNI): `vpdpbusd`, four u8 x i8 products per lane. B holds
//!   the stored activations shifted to u8 (`x` for u8 storage, `x + 128` for i8), so the kernel
//!   sums `u * w`; the caller removes `Z_u * sum_k w` per row (folded into the bias).
//!   A is `[M/MR][K/4][MR]` words of four weights (one vector per step, each row's word spread
//!   over the lanes by one `pshufd`); B is `[P/NR][K/4][NR][4]` bytes.
//! - [`Form::Pairs`] (every x86-64): `pmaddwd`, two i16 products per lane. B holds `x - Z_x`
//!   (which fits i16). A is `[M/MR][K/2][MR]` words of two i16 weights; B is `[P/NR][K/2][NR][2]`.
//!
//! Both are zero-padded to whole panels; zero weights add nothing to the sums.

use std::mem::MaybeUninit;

use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;
use rayon::prelude::*;

use crate::clif::{
    Levels, Loop, RECORD, RECORD_WORDS, args_of, dot_u8_i8, pmaddwd, requantize8, splat_quad,
};
use crate::emit::{Shape, Sink};
use crate::jit;
use crate::pool::{Poolable, Pooled};
use cranelift_module::FuncId;

/// Rows of C per micro-kernel tile.
pub const MR: usize = 4;
// One step's words of a row panel are one vector (see `step`).
const _: () = assert!(MR * 4 == 16);
/// Columns of C per micro-kernel tile (two vectors of four i32).
pub const NR: usize = 8;

/// How the kernel multiplies: see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    /// `pmaddwd` on i16 pairs.
    Pairs,
    /// `vpdpbusd` on u8 x i8 quads.
    Quads,
}

impl Form {
    /// The form for a product over `k`: quads where the CPU has VNNI and the sums of `u * w`
    /// (up to `k * 255 * 128`, weights of -128 included) cannot overflow i32, else pairs.
    pub fn for_depth(k: usize) -> Form {
        Form::for_depth_on(k, jit::features().is_ok_and(|f| f.vnni))
    }

    /// [`Form::for_depth`] on a CPU with VNNI or without (`vnni`).
    pub fn for_depth_on(k: usize, vnni: bool) -> Form {
        if vnni && (k as u64) * 255 * 128 < 1 << 31 {
            Form::Quads
        } else {
            Form::Pairs
        }
    }

    /// Values of K per word.
    fn per_word(self) -> usize {
        match self {
            Form::Pairs => 2,
            Form::Quads => 4,
        }
    }
}

/// Weights packed for the kernel.
pub struct PackedA {
    words: Vec<u32>,
    /// The form it is packed for.
    pub form: Form,
    /// Rows before padding.
    pub m: usize,
    /// Depth before padding.
    pub k: usize,
    /// `sum_k w` of every row (what [`Form::Quads`] corrects for).
    pub row_sums: Vec<i64>,
}

impl PackedA {
    /// Packs row-major `rows` (`m` rows of `k` weights) for `form`.
    pub fn new(rows: &[i8], m: usize, k: usize, form: Form) -> PackedA {
        let per = form.per_word();
        let (mp, kw) = (m.div_ceil(MR), k.div_ceil(per));
        let mut words = vec![0u32; mp * kw * MR];
        let at = |r: usize, c: usize| -> i8 { if r < m && c < k { rows[r * k + c] } else { 0 } };
        for panel in 0..mp {
            for q in 0..kw {
                for i in 0..MR {
                    let r = panel * MR + i;
                    let word = match form {
                        Form::Pairs => {
                            let lo = at(r, 2 * q) as i16 as u16;
                            let hi = at(r, 2 * q + 1) as i16 as u16;
                            u32::from(lo) | (u32::from(hi) << 16)
                        }
                        Form::Quads => {
                            u32::from_le_bytes([0, 1, 2, 3].map(|e| at(r, 4 * q + e) as u8))
                        }
                    };
                    words[(panel * kw + q) * MR + i] = word;
                }
            }
        }
        let row_sums = (0..m)
            .map(|r| rows[r * k..(r + 1) * k].iter().map(|w| i64::from(*w)).sum())
            .collect();
        PackedA {
            words,
            form,
            m,
            k,
            row_sums,
        }
    }

    /// The packed words as the kernel reads them (little-endian bytes).
    pub fn bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Row panels (of [`MR`] rows).
    pub fn panels(&self) -> usize {
        self.m.div_ceil(MR)
    }
}

/// Activations packed for the kernel (see the module documentation).
pub enum PackedB {
    /// For [`Form::Pairs`]: `x - Z_x`.
    Pairs(Pooled<i16>),
    /// For [`Form::Quads`]: `x` shifted to u8.
    Quads(Pooled<u8>),
}

impl PackedB {
    fn as_ptr(&self) -> *const u8 {
        match self {
            PackedB::Pairs(v) => v.as_ptr() as *const u8,
            PackedB::Quads(v) => v.as_ptr(),
        }
    }
}

/// Packs B from `rows` (`k` rows of `ldp` values, of which the first `p` are real), `per` values
/// of K per pixel word. `whole` may write a whole tile (eight pixels, `per` rows of K, given the
/// rows) itself and say so; the tiles it leaves are written one value at a time.
fn pack<T: Poolable + Send + Sync>(
    rows: &[T],
    k: usize,
    p: usize,
    ldp: usize,
    per: usize,
    whole: impl Fn(&[&[T]], &mut [T]) -> bool + Sync,
) -> Pooled<T> {
    let (pp, kw) = (p.div_ceil(NR), k.div_ceil(per));
    let mut packed = Pooled::dirty(pp * kw * NR * per);
    packed
        .par_chunks_mut(kw * NR * per)
        .enumerate()
        .for_each(|(panel, dst)| {
            let p0 = panel * NR;
            let width = NR.min(p - p0);
            for (q, tile) in dst.chunks_exact_mut(NR * per).enumerate() {
                let present = per.min(k.saturating_sub(per * q));
                let row = |e: usize| &rows[(per * q + e) * ldp + p0..][..width];
                if width == NR && present == per {
                    // Up to four rows of K per word (the first `per` are meant).
                    let sources: [&[T]; 4] = std::array::from_fn(|e| row(e.min(per - 1)));
                    if whole(&sources[..per], tile) {
                        continue;
                    }
                } else {
                    // The padding of a partial tile multiplies zero weights, but must be a number.
                    tile.fill(T::default());
                }
                for e in 0..present {
                    for (i, v) in row(e).iter().enumerate() {
                        tile[per * i + e] = *v;
                    }
                }
            }
        });
    packed
}

/// Packs centred activations (`x - Z_x`, `k` rows of `ldp`) for [`Form::Pairs`].
pub fn pack_pairs(rows: &[i16], k: usize, p: usize, ldp: usize) -> PackedB {
    PackedB::Pairs(pack(rows, k, p, ldp, 2, |_, _| false))
}

/// Packs u8-shifted activations (`k` rows of `ldp`) for [`Form::Quads`]; whole tiles with byte
/// interleaves.
pub fn pack_quads(rows: &[u8], k: usize, p: usize, ldp: usize) -> PackedB {
    PackedB::Quads(pack(rows, k, p, ldp, 4, |r, tile| {
        interleave4([r[0], r[1], r[2], r[3]], tile);
        true
    }))
}

/// Writes `[r0[i], r1[i], r2[i], r3[i]]` for the eight `i` of four rows into `dst` (32 bytes).
fn interleave4(rows: [&[u8]; 4], dst: &mut [u8]) {
    assert!(rows.iter().all(|r| r.len() >= NR) && dst.len() >= 4 * NR);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of x86-64; the loads read 8 bytes of each row and the stores write
    // the 32 bytes of `dst`, all checked above.
    unsafe {
        use std::arch::x86_64::*;
        let load = |r: &[u8]| _mm_loadl_epi64(r.as_ptr() as *const __m128i);
        let (r0, r1, r2, r3) = (load(rows[0]), load(rows[1]), load(rows[2]), load(rows[3]));
        let a = _mm_unpacklo_epi8(r0, r1);
        let b = _mm_unpacklo_epi8(r2, r3);
        _mm_storeu_si128(dst.as_mut_ptr() as *mut __m128i, _mm_unpacklo_epi16(a, b));
        _mm_storeu_si128(
            dst.as_mut_ptr().add(16) as *mut __m128i,
            _mm_unpackhi_epi16(a, b),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    for i in 0..NR {
        for (e, r) in rows.iter().enumerate() {
            dst[4 * i + e] = r[i];
        }
    }
}

type GemmFn =
    unsafe extern "C" fn(*const u32, *const u8, *mut u8, i64, i64, i64, i64, i64, *const i32);

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
pub fn kernel(k: usize, form: Form, epilogue: Epilogue) -> Result<GemmFn, String> {
    let code = jit::compile(|s| define(s, k, form, epilogue))?;
    // SAFETY: the code was generated with exactly this signature, in the platform's C ABI.
    Ok(unsafe { std::mem::transmute::<*const u8, GemmFn>(code) })
}

/// Defines [`kernel`]'s function in `sink`.
pub fn define(
    sink: &mut dyn Sink,
    k: usize,
    form: Form,
    epilogue: Epilogue,
) -> Result<FuncId, String> {
    let kw = k.div_ceil(form.per_word()).max(1);
    let ptr = sink.pointer();
    let prefix = match form {
        Form::Pairs => format!("qgemm_pmaddwd_{MR}x{NR}_k{kw}"),
        Form::Quads => format!("qgemm_vpdpbusd_{MR}x{NR}_k{kw}"),
    };
    let name = match epilogue {
        Epilogue::Accumulators => format!("{prefix}_acc"),
        Epilogue::Requantize(l) => format!("{prefix}_{}", l.tag()),
    };
    sink.function(&name, &Shape::kernel(&[ptr; 9]), &mut |b, args, _| {
        build(b, args, kw as i64, form, epilogue);
        Ok(())
    })
}

fn build(b: &mut FunctionBuilder, args: &[Value], kp: i64, form: Form, epilogue: Epilogue) {
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
    // The K loop: eight accumulators (from zero, or when requantizing from each row's bias), A
    // and B pointers, a countdown.
    let zero = b.ins().iconst(types::I32, 0);
    let zero = b.ins().splat(types::I32X4, zero);
    let row0 = b.ins().imul_imm_s(mp, mr);
    let record0 = b.ins().imul_imm_s(row0, i64::from(RECORD));
    let record0 = b.ins().iadd(records, record0);
    let mut start: Vec<Value> = (0..MR)
        .flat_map(|r| {
            let init = match epilogue {
                Epilogue::Accumulators => zero,
                Epilogue::Requantize(_) => {
                    b.ins()
                        .load(types::I32X4, flags, record0, RECORD * r as i32)
                }
            };
            [init, init]
        })
        .collect();
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
    let mut next = step(b, form, accs, ap, bp);
    let finished = args_of(&next);
    let ap2 = b.ins().iadd_imm_s(ap, mr * 4);
    let bp2 = b.ins().iadd_imm_s(bp, nr * 4);
    let left2 = b.ins().iadd_imm_s(left, -1);
    next.extend([ap2, bp2, left2]);
    b.ins().brif(left2, body, &args_of(&next), done, &finished);
    b.switch_to_block(done);
    let accs = b.block_params(done).to_vec();
    // Row mp*MR + r, columns pp*NR ..
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
            let mut record = record0;
            for r in 0..MR {
                if r > 0 {
                    row = b.ins().iadd(row, ld);
                    record = b.ins().iadd_imm_s(record, i64::from(RECORD));
                }
                let accs = [accs[2 * r], accs[2 * r + 1]];
                requantize8(b, accs, (record, true), &levels, row);
            }
        }
    }
    rows.close(b);
    columns.close(b);
    b.ins().return_(&[]);
}

/// One word of K for the whole tile: the accumulators `accs` plus A's word of each row (at
/// `a`) times B's words of the tile's columns (at `bm`).
fn step(b: &mut FunctionBuilder, form: Form, accs: &[Value], a: Value, bm: Value) -> Vec<Value> {
    let flags = MemFlagsData::new().with_notrap();
    let lanes = match form {
        Form::Pairs => types::I16X8,
        Form::Quads => types::I8X16,
    };
    let b0 = b.ins().load(lanes, flags, bm, 0);
    let b1 = b.ins().load(lanes, flags, bm, 16);
    let mut next = Vec::with_capacity(2 * MR + 3);
    // The step's word of every row in one load, each spread over the lanes by a `pshufd`: a
    // word loaded alone and splatted became a scalar load, a move and a `vpbroadcastd`, because
    // it feeds two products and Cranelift folds a load into the broadcast only for one.
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let words = b.ins().load(types::I8X16, flags, a, 0);
    for r in 0..MR {
        let lane: Vec<u8> = (0..16).map(|i| (4 * r + i % 4) as u8).collect();
        let mask = b.func.dfg.immediates.push(lane.into());
        let w = b.ins().shuffle(words, words, mask);
        let w = b.ins().bitcast(lanes, little, w);
        match form {
            Form::Pairs => {
                let d0 = pmaddwd(b, w, b0);
                let d1 = pmaddwd(b, w, b1);
                next.push(b.ins().iadd(accs[2 * r], d0));
                next.push(b.ins().iadd(accs[2 * r + 1], d1));
            }
            Form::Quads => {
                next.push(dot_u8_i8(b, w, b0, accs[2 * r]));
                next.push(dot_u8_i8(b, w, b1, accs[2 * r + 1]));
            }
        }
    }
    next
}

/// Raw pointers handed to the threads that fill disjoint tiles of one output.
#[derive(Clone, Copy)]
struct Shared(*mut u8);
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// Runs `f` over every tile of an `[a.m, p]` output at `out` (rows `ld` elements apart), the
/// tiles split over the current thread pool.
fn tiles(f: GemmFn, a: &PackedA, b: &PackedB, p: usize, out: *mut u8, ld: usize, records: &[i32]) {
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
                bp as *const u8,
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

/// `C = A * B` for packed `a` and packed `b` (of `p` columns): C's rows `ld` values apart, with
/// `ld` (row `r`'s `p` values start at `r * ld`; for [`Form::Quads`], the sums of `u * w`, before
/// the zero-point correction). The rows are the kernel's own padded tiles, not copied out.
pub fn multiply(a: &PackedA, b: &PackedB, p: usize) -> Result<(Pooled<i32>, usize), String> {
    if a.k == 0 || p == 0 || a.m == 0 {
        let mut c = Pooled::<i32>::dirty(a.m * p);
        c.fill(0);
        return Ok((c, p));
    }
    let ld = p.div_ceil(NR) * NR;
    let f = kernel(a.k, a.form, Epilogue::Accumulators)?;
    let mut c = Pooled::<i32>::dirty(a.panels() * MR * ld);
    tiles(f, a, b, p, c.as_mut_ptr() as *mut u8, ld, &[]);
    Ok((c, ld))
}

/// The output levels of `A * B` requantized by one record per row of A (see
/// [`crate::clif::record`]), written to `out` as `[a.m][p]` bytes (every one of them, on success).
pub fn multiply_requantized(
    a: &PackedA,
    b: &PackedB,
    p: usize,
    records: &[i32],
    levels: Levels,
    out: &mut [MaybeUninit<u8>],
) -> Result<(), String> {
    let ld = p.div_ceil(NR) * NR;
    let rows = a.panels() * MR;
    if records.len() < rows * RECORD_WORDS {
        return Err("internal error: fewer requantization records than rows".into());
    }
    if out.len() != a.m * p {
        return Err("internal error: the output does not fit the product".into());
    }
    let f = kernel(a.k, a.form, Epilogue::Requantize(levels))?;
    if ld == p && rows == a.m {
        // Whole tiles cover the output exactly: the kernel writes it in place.
        tiles(f, a, b, p, out.as_mut_ptr().cast::<u8>(), ld, records);
        return Ok(());
    }
    let mut padded = Pooled::<u8>::dirty(rows * ld);
    tiles(f, a, b, p, padded.as_mut_ptr(), ld, records);
    for (dst, src) in out.chunks_mut(p.max(1)).zip(padded.chunks(ld.max(1))) {
        for (d, s) in dst.iter_mut().zip(&src[..p]) {
            d.write(*s);
        }
    }
    Ok(())
}

/// Row panels one [`vector_kernel`] iteration computes (independent accumulators).
const GEMV_PANELS: usize = 4;

type GemvFn = unsafe extern "C" fn(*const u32, *const u8, *mut i32, i64);

/// The generated matrix-vector product for depth `k` ([`Form::Quads`]), `(a, x, out, panels)`:
/// `out[r] = sum_k a[r][k] * x[k]` for the rows of the first `panels` row panels (a multiple of
/// `group`), `group` panels (of `MR` rows) at a time, each in an accumulator of its own; `x` is
/// the vector as u8, zero-padded to whole words.
fn vector_kernel(k: usize, group: usize) -> Result<GemvFn, String> {
    let kw = k.div_ceil(4).max(1) as i64;
    let ptr = jit::pointer();
    let name = format!("qgemv_vpdpbusd_{MR}x{group}_k{kw}");
    let code = jit::kernel(&name, &[ptr; 4], |b, args| {
        let (a, x, out, panels) = (args[0], args[1], args[2], args[3]);
        let flags = MemFlagsData::new().with_notrap();
        let zero = b.ins().iconst(ptr, 0);
        let outer = Loop::stepped(b, zero, panels, group as i64);
        let panel_bytes = kw * MR as i64 * 4;
        let first = b.ins().imul_imm_s(outer.index, panel_bytes);
        let first = b.ins().iadd(a, first);
        let z = b.ins().iconst(types::I32, 0);
        let z = b.ins().splat(types::I32X4, z);
        let body = b.create_block();
        let done = b.create_block();
        for _ in 0..group {
            b.append_block_param(body, types::I32X4);
            b.append_block_param(done, types::I32X4);
        }
        for _ in 0..3 {
            b.append_block_param(body, ptr);
        }
        let count = b.ins().iconst(ptr, kw);
        let mut start = vec![z; group];
        start.extend([first, x, count]);
        b.ins().jump(body, &args_of(&start));
        b.switch_to_block(body);
        let params = b.block_params(body).to_vec();
        let (accs, ap, xp, left) = (
            &params[..group],
            params[group],
            params[group + 1],
            params[group + 2],
        );
        let u = splat_quad(b, xp, 0);
        let mut next: Vec<Value> = (0..group)
            .map(|g| {
                let w = b
                    .ins()
                    .load(types::I8X16, flags, ap, (g as i64 * panel_bytes) as i32);
                dot_u8_i8(b, w, u, accs[g])
            })
            .collect();
        let finished = args_of(&next);
        let ap2 = b.ins().iadd_imm_s(ap, MR as i64 * 4);
        let xp2 = b.ins().iadd_imm_s(xp, 4);
        let left2 = b.ins().iadd_imm_s(left, -1);
        next.extend([ap2, xp2, left2]);
        b.ins().brif(left2, body, &args_of(&next), done, &finished);
        b.switch_to_block(done);
        let accs = b.block_params(done).to_vec();
        let row = b.ins().imul_imm_s(outer.index, MR as i64 * 4);
        let dst = b.ins().iadd(out, row);
        for (g, acc) in accs.iter().enumerate() {
            b.ins().store(flags, *acc, dst, (g * MR * 4) as i32);
        }
        outer.close(b);
        b.ins().return_(&[]);
    })?;
    // SAFETY: the code was generated with exactly this signature, in the platform's C ABI.
    Ok(unsafe { std::mem::transmute::<*const u8, GemvFn>(code) })
}

/// Compiles the kernels [`multiply_vector`] runs for depth `k`.
pub fn vector_kernels(k: usize) -> Result<(), String> {
    vector_kernel(k, GEMV_PANELS)?;
    vector_kernel(k, 1)?;
    Ok(())
}

/// `A * x` for weights `a` packed as [`Form::Quads`] and one vector `x` of `a.k` u8 values:
/// `a.m` sums of `u * w` (before the zero-point correction).
pub fn multiply_vector(a: &PackedA, x: &[u8]) -> Result<Vec<i32>, String> {
    if a.form != Form::Quads || x.len() != a.k {
        return Err("internal error: a vector product needs quads weights and k values".into());
    }
    if a.k == 0 {
        return Ok(vec![0; a.m]);
    }
    let kw = a.k.div_ceil(4).max(1);
    let mut padded = Pooled::<u8>::dirty(4 * kw);
    padded[..a.k].copy_from_slice(x);
    padded[a.k..].fill(0);
    let panels = a.panels();
    let mut out = vec![0i32; panels * MR];
    let whole = panels / GEMV_PANELS * GEMV_PANELS;
    let (grouped, single) = (vector_kernel(a.k, GEMV_PANELS)?, vector_kernel(a.k, 1)?);
    // SAFETY: `a` holds `panels` whole panels of `kw` words per row, `padded` `kw` words, `out`
    // `MR` values per panel; each kernel reads and writes only the panels it is given.
    unsafe {
        grouped(
            a.words.as_ptr(),
            padded.as_ptr(),
            out.as_mut_ptr(),
            whole as i64,
        );
        let tail = whole * kw * MR;
        single(
            a.words[tail..].as_ptr(),
            padded.as_ptr(),
            out[whole * MR..].as_mut_ptr(),
            (panels - whole) as i64,
        );
    }
    out.truncate(a.m);
    Ok(out)
}
