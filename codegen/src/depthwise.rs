//! The depthwise convolution (one input channel per output channel): a generated kernel per
//! layer geometry that computes one channel's output plane, eight outputs of a row at a time in
//! two i32x4 accumulators. Two forms, as the GEMM's ([`Form`]):
//!
//! - **Quads** (`vpdpbusd`): the plane is staged as u8 rows padded with the (shifted) zero point.
//!   Per kernel row and group of up to four taps, one load and one `pshufb` give each of four
//!   output lanes its four input bytes (lane `j`, tap `e`: byte `j * stride + e * dilation`),
//!   multiplied by the taps' weights (pre-splatted; a missing fourth tap has weight 0) and summed
//!   into the lane by one `vpdpbusd`. An iteration computes two output rows; the input rows they
//!   share (all but one at vertical stride 1, one at stride 2) are loaded and shuffled once. The
//!   accumulators start at `-Z_u * sum w`, so they are the exact `sum (x - Z_x) * w` (padding
//!   reads `Z_u`, which that start cancels).
//! - **Pairs** (`pmaddwd`, every CPU): the taps unrolled two at a time, the two taps' inputs
//!   interleaved (`punpcklwd`/`punpckhwd`) and multiplied by the pair's weights, exact since
//!   `|x - Z_x| * |w| <= 255 * 128` fits i16 pairs summed in i32. The plane is staged as i16
//!   (`x - Z_x`, zero where the window reads padding) and split into `stride` column phases, so
//!   that a stride-2 layer also reads contiguous vectors: output column `ox` of tap column `kx`
//!   reads phase `(kx * dilation) % stride` at column `ox + (kx * dilation) / stride`.

use cranelift_codegen::ir::{Endianness, Immediate, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;

use std::collections::HashMap;
use std::mem::MaybeUninit;

use qcc_dialects::ops::attrs::Conv2dAttrs;
use rayon::prelude::*;

use crate::clif::{Loop, dot_u8_i8, pmaddwd, requantize8};
use crate::emit::{Shape, Sink};
use crate::gemm::{Epilogue, Form};
use crate::jit;
use crate::pool::{Poolable, Pooled};
use cranelift_module::FuncId;

/// Output columns per iteration of the generated row loop.
pub(crate) const VECTOR: usize = 8;

/// The geometry of one depthwise layer, everything its kernel is specialised on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Input height and width.
    pub input: [usize; 2],
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Output height and width.
    pub output: [usize; 2],
    /// Vertical and horizontal stride.
    pub strides: [usize; 2],
    /// Vertical and horizontal dilation.
    pub dilations: [usize; 2],
    /// Top and left padding (the bottom and right follow from the output size).
    pub pads: [usize; 2],
}

impl Geometry {
    /// The geometry of a depthwise layer with `attrs` over an `input`-sized plane and a
    /// `kernel`-sized window.
    pub fn of(
        attrs: &Conv2dAttrs,
        input: [usize; 2],
        kernel: [usize; 2],
    ) -> Result<Geometry, String> {
        let win = &attrs.window;
        let (oh, ow) = win.output(input[0], input[1], kernel[0], kernel[1], false)?;
        Ok(Geometry {
            input,
            kernel,
            output: [oh, ow],
            strides: win.strides,
            dilations: win.dilations,
            pads: [win.pads[0], win.pads[1]],
        })
    }

    /// Runs a kernel of this geometry over every output plane of `out`, planes over threads
    /// (`per_task` at a time): `run(i, staged, line, target, fresh)` stages plane `i`'s input
    /// into `staged` (`staged_len` values; `line` is scratch space) and runs the kernel into
    /// `target`, which is the plane itself when the kernel writes planes as they are
    /// (`writes_planes`) or its rows are a multiple of eight, else a padded plane copied into it
    /// afterwards. Staged and padded buffers come from the thread's pool; `fresh` says `staged`
    /// has not been staged into before in this call (later planes find there what the previous
    /// plane's staging left).
    pub(crate) fn each_plane<S: Poolable + Send, O: Poolable + Send + Sync>(
        &self,
        out: &mut [MaybeUninit<O>],
        ((staged_len, per_task), writes_planes): ((usize, usize), bool),
        run: impl Fn(usize, &mut [S], &mut Vec<S>, *mut O, bool) + Sync,
    ) {
        let in_place = writes_planes || self.writes_in_place();
        out.par_chunks_mut((self.output[0] * self.output[1]).max(1))
            .enumerate()
            .with_min_len(per_task)
            .for_each_init(
                || {
                    // Every value is written before it is read: staging fills whole rows, the
                    // kernel whole padded output rows.
                    let staged = Pooled::<S>::dirty(staged_len);
                    let padded = Pooled::<O>::dirty(if in_place { 0 } else { self.out_len() });
                    (staged, padded, Vec::new(), true)
                },
                |(staged, padded, line, fresh), (i, dst)| {
                    let target = if in_place {
                        dst.as_mut_ptr().cast::<O>()
                    } else {
                        padded.as_mut_ptr()
                    };
                    run(i, staged, line, target, *fresh);
                    *fresh = false;
                    if !in_place {
                        self.compact(padded, dst);
                    }
                },
            );
    }

    /// The output rows `lo..hi` whose input row `oy * stride + ky * dilation - pad` lies inside
    /// the input, for kernel row `ky`.
    pub(crate) fn inside_rows(&self, ky: usize) -> (usize, usize) {
        Self::inside(
            self.input[0],
            self.output[0],
            self.strides[0],
            ky * self.dilations[0],
            self.pads[0],
        )
    }

    /// The output columns `lo..hi` whose input column lies inside the input, for kernel column
    /// `kx` (as [`Geometry::inside_rows`]).
    pub(crate) fn inside_columns(&self, kx: usize) -> (usize, usize) {
        Self::inside(
            self.input[1],
            self.output[1],
            self.strides[1],
            kx * self.dilations[1],
            self.pads[1],
        )
    }

    fn inside(
        input: usize,
        output: usize,
        stride: usize,
        tap: usize,
        pad: usize,
    ) -> (usize, usize) {
        let lo = pad.saturating_sub(tap).div_ceil(stride).min(output);
        let hi = (input + pad)
            .checked_sub(tap)
            .map_or(0, |span| span.div_ceil(stride))
            .clamp(lo, output);
        (lo, hi)
    }

    /// A name fragment that spells out the geometry (kernels are cached by name).
    pub fn tag(&self) -> String {
        format!(
            "{}x{}_k{}x{}_s{}x{}_d{}x{}_p{}x{}_o{}x{}",
            self.input[0],
            self.input[1],
            self.kernel[0],
            self.kernel[1],
            self.strides[0],
            self.strides[1],
            self.dilations[0],
            self.dilations[1],
            self.pads[0],
            self.pads[1],
            self.output[0],
            self.output[1]
        )
    }

    /// Output row length including the columns computed past the end.
    pub(crate) fn row(&self) -> usize {
        self.output[1].div_ceil(VECTOR) * VECTOR
    }

    /// Rows of the staged input.
    pub(crate) fn rows(&self) -> usize {
        (self.output[0] - 1) * self.strides[0] + (self.kernel[0] - 1) * self.dilations[0] + 1
    }

    /// Whether the quads form computes this geometry: every byte lane 3 of a group reads lies
    /// within the sixteen loaded.
    pub fn quads_fit(&self) -> bool {
        3 * self.strides[1] + (self.kernel[1].min(4) - 1) * self.dilations[1] <= 15
    }

    /// Groups of up to four taps per kernel row (the quads form).
    fn tap_groups(&self) -> usize {
        self.kernel[1].div_ceil(4)
    }

    /// Bytes of one staged row (the quads form): the last load of a row ends there.
    fn quad_width(&self) -> usize {
        (self.row() - 4) * self.strides[1] + 4 * (self.tap_groups() - 1) * self.dilations[1] + 16
    }

    /// Columns of each staged phase (the pairs form).
    pub(crate) fn phase_width(&self) -> usize {
        self.row() + ((self.kernel[1] - 1) * self.dilations[1]) / self.strides[1] + 1
    }

    /// Values of one staged channel: i16 for pairs, u8 for quads.
    pub fn staged_len(&self, form: Form) -> usize {
        match form {
            Form::Pairs => self.strides[1] * self.rows() * self.phase_width(),
            Form::Quads => self.rows() * self.quad_width(),
        }
    }

    /// Whether the kernel writes its output plane as it is (rows of a multiple of eight).
    pub fn writes_in_place(&self) -> bool {
        self.row() == self.output[1]
    }

    /// i32 values of one channel's padded output.
    pub fn out_len(&self) -> usize {
        self.output[0] * self.row()
    }

    /// Stages one channel for the quads form: `plane` (`H x W` stored values) shifted to u8
    /// into rows of `dst` (`staged_len` bytes), `pad` (the shifted zero point) where the window
    /// reads padding. The padding is written only when `fill_padding` says so: a buffer staged
    /// into before with the same geometry and `pad` still holds it, since the input never lands
    /// there.
    pub fn stage_quads<T: Byte>(&self, plane: &[T], pad: u8, dst: &mut [u8], fill_padding: bool) {
        let (rows, width) = (self.rows(), self.quad_width());
        let [h, w] = self.input;
        let [pt, pl] = self.pads;
        let (first, last) = (pl.min(width), (pl + w).min(width));
        for (row, d) in dst.chunks_exact_mut(width).take(rows).enumerate() {
            let Some(iy) = row.checked_sub(pt).filter(|iy| *iy < h) else {
                if fill_padding {
                    d.fill(pad);
                }
                continue;
            };
            if fill_padding {
                d[..first].fill(pad);
                d[last..].fill(pad);
            }
            T::shift_into(&plane[iy * w..iy * w + last - first], &mut d[first..last]);
        }
    }

    /// Stages one channel for the pairs form (`plane`, `H x W` stored values of zero point
    /// `zero_point`) into `dst` (`staged_len` values of `x - Z_x`); `line` is scratch space.
    /// The padding is written only when `fill_padding` says so (as [`Geometry::stage_phases`]).
    pub fn stage<T: Copy + Into<i16>>(
        &self,
        plane: &[T],
        zero_point: i16,
        (dst, line): (&mut [i16], &mut Vec<i16>),
        fill_padding: bool,
    ) {
        let convert = |s: &[T], d: &mut [i16]| centre(s, zero_point, d);
        self.stage_phases(plane, (0, convert), (dst, line), fill_padding);
    }

    /// Stages `plane` (`H x W`) into `stride` column phases of padded rows (the pairs form's
    /// layout): `convert` turns a run of input values into staged ones, `pad` is what the window
    /// reads outside the input; `line` is scratch space. The padding (of `dst` and of `line`) is
    /// written only when `fill_padding` says so: buffers staged into before with the same
    /// geometry and `pad` still hold it, since the input never lands there.
    pub fn stage_phases<T: Copy, S: Copy + Default>(
        &self,
        plane: &[T],
        (pad, convert): (S, impl Fn(&[T], &mut [S])),
        (dst, line): (&mut [S], &mut Vec<S>),
        fill_padding: bool,
    ) {
        let (rows, width, s) = (self.rows(), self.phase_width(), self.strides[1]);
        let [h, w] = self.input;
        let [pt, pl] = self.pads;
        // One padded input row: column `c` holds input column `c - pl` (`pad` outside), so
        // phase `r` column `j` is padded column `j * s + r`.
        let padded = width * s;
        line.resize(padded, S::default());
        let (first, last) = (pl.min(padded), (pl + w).min(padded));
        for row in 0..rows {
            let Some(iy) = row.checked_sub(pt).filter(|iy| *iy < h) else {
                if fill_padding {
                    for r in 0..s {
                        dst[(r * rows + row) * width..][..width].fill(pad);
                    }
                }
                continue;
            };
            // At stride 1 the padded row is the staged row.
            let padded_row = if s == 1 {
                &mut dst[row * width..(row + 1) * width]
            } else {
                &mut line[..]
            };
            if fill_padding {
                padded_row[..first].fill(pad);
                padded_row[last..].fill(pad);
            }
            convert(
                &plane[iy * w..iy * w + last - first],
                &mut padded_row[first..last],
            );
            if s == 1 {
                continue;
            }
            if s == 2 {
                let (even, odd) = dst.split_at_mut((rows + row) * width);
                let even = &mut even[row * width..(row + 1) * width];
                let odd = &mut odd[..width];
                for ((e, o), pair) in even.iter_mut().zip(odd).zip(line.chunks_exact(2)) {
                    *e = pair[0];
                    *o = pair[1];
                }
            } else {
                for r in 0..s {
                    for (d, v) in dst[(r * rows + row) * width..][..width]
                        .iter_mut()
                        .zip(line[r..].iter().step_by(s))
                    {
                        *d = *v;
                    }
                }
            }
        }
    }

    /// Copies the real columns of a padded output (`out_len` values) into `dst` (`OH x OW`).
    pub fn compact<T: Copy>(&self, padded: &[T], dst: &mut [MaybeUninit<T>]) {
        let (row, ow) = (self.row(), self.output[1]);
        for (d, s) in dst.chunks_mut(ow).zip(padded.chunks(row)) {
            for (d, s) in d.iter_mut().zip(&s[..ow]) {
                d.write(*s);
            }
        }
    }
}

/// A stored 8-bit value, as the quads form reads it: u8 as it is, i8 plus 128.
pub trait Byte: Copy + Into<i16> + Send + Sync {
    /// `src` shifted to u8, into `dst` (as long).
    fn shift_into(src: &[Self], dst: &mut [u8]);
}

impl Byte for u8 {
    fn shift_into(src: &[u8], dst: &mut [u8]) {
        dst.copy_from_slice(src);
    }
}

impl Byte for i8 {
    fn shift_into(src: &[i8], dst: &mut [u8]) {
        for (d, v) in dst.iter_mut().zip(src) {
            *d = (*v as u8) ^ 0x80;
        }
    }
}

/// `dst[i] = src[i] - zero_point` (a loop the compiler vectorises).
fn centre<T: Copy + Into<i16>>(src: &[T], zero_point: i16, dst: &mut [i16]) {
    for (d, v) in dst.iter_mut().zip(src) {
        *d = (*v).into() - zero_point;
    }
}

/// Words of one channel's packed weights: for pairs a vector of four words per pair of taps
/// (the last pairs with a zero weight when odd); for quads the accumulators' start, then a
/// vector per kernel row and group of taps.
pub fn words_per_channel(g: &Geometry, form: Form) -> usize {
    match form {
        Form::Pairs => 4 * (g.kernel[0] * g.kernel[1]).div_ceil(2),
        Form::Quads => 4 + 4 * g.kernel[0] * g.tap_groups(),
    }
}

/// One channel's weights (`kh x kw` taps) packed for the quads form: `-zero * sum w` in four
/// lanes (`zero` the shifted input zero point), then per kernel row and group of four taps the
/// group's weights as one word (a missing tap weighs 0) in all four lanes.
pub fn quad_words(taps: &[i8], g: &Geometry, zero: i64) -> Vec<u32> {
    let [kh, kw] = g.kernel;
    let sum: i64 = taps.iter().map(|w| i64::from(*w)).sum();
    let mut words = vec![(-zero * sum) as i32 as u32; 4];
    for ky in 0..kh {
        for group in 0..g.tap_groups() {
            let bytes = [0, 1, 2, 3].map(|e| {
                let kx = 4 * group + e;
                if kx < kw { taps[ky * kw + kx] as u8 } else { 0 }
            });
            words.extend([u32::from_le_bytes(bytes); 4]);
        }
    }
    words
}

/// The weights of one channel's taps packed for the kernel: per pair `(w[2i], w[2i + 1])` as two
/// i16 in a word, the word in all four lanes of a vector (the kernel's `pmaddwd` reads it from
/// memory: splatting it in the kernel was done again on every iteration).
pub fn pair_words(taps: &[i8]) -> Vec<u32> {
    taps.chunks(2)
        .flat_map(|p| {
            let lo = p[0] as i16 as u16;
            let hi = p.get(1).map_or(0, |w| *w as i16 as u16);
            [u32::from(lo) | (u32::from(hi) << 16); 4]
        })
        .collect()
}

/// The byte shuffle that interleaves the i16 lanes `from..from + 4` of two vectors
/// (`punpcklwd` for 0, `punpckhwd` for 8).
fn interleave_mask(b: &mut FunctionBuilder, from: u8) -> Immediate {
    let mut bytes = Vec::with_capacity(16);
    for lane in 0..4u8 {
        let at = from + 2 * lane;
        bytes.extend([at, at + 1, 16 + at, 17 + at]);
    }
    b.func.dfg.immediates.push(bytes.into())
}

/// A generated depthwise kernel (see [`kernel`]).
pub type DepthwiseFn = unsafe extern "C" fn(*const u8, *const u32, *mut u8, *const i32);

/// The generated kernel for `g` in `form`: `(staged input, packed weights, padded output,
/// record)`; the output is i32 accumulators or, requantized by the channel's record, output
/// levels.
pub fn kernel(g: &Geometry, form: Form, epilogue: Epilogue) -> Result<DepthwiseFn, String> {
    let code = jit::compile(|s| define(s, g, form, epilogue))?;
    // SAFETY: generated with exactly this signature, in the platform's C ABI.
    Ok(unsafe { std::mem::transmute::<*const u8, DepthwiseFn>(code) })
}

/// Defines [`kernel`]'s function in `sink`.
pub fn define(
    sink: &mut dyn Sink,
    g: &Geometry,
    form: Form,
    epilogue: Epilogue,
) -> Result<FuncId, String> {
    let ptr = sink.pointer();
    let name = format!(
        "qdwconv_{}_{}",
        match form {
            Form::Pairs => "pmaddwd",
            Form::Quads => "vpdpbusd",
        },
        g.tag()
    );
    let name = match epilogue {
        Epilogue::Accumulators => format!("{name}_acc"),
        Epilogue::Requantize(l) => format!("{name}_{}", l.tag()),
    };
    let g = *g;
    sink.function(&name, &Shape::kernel(&[ptr; 4]), &mut |b, args, _| {
        match form {
            Form::Pairs => build_pairs(b, args, &g, epilogue),
            Form::Quads => build_quads(b, args, &g, epilogue),
        }
        Ok(())
    })
}

/// The loops of the pairs kernel: over output rows, and in each over groups of
/// [`VECTOR`] outputs; the builder is left in the inner body until [`Rows::close`].
struct Rows {
    rows: Loop,
    cols: Loop,
    /// The group's first output column.
    ox: Value,
    /// Where the current output row's first input row starts.
    input: Value,
    /// Where the current output row starts.
    output: Value,
}

impl Rows {
    /// Opens the loops over `g`'s output rows (of `g.row()` outputs); the input advances
    /// `x.1` bytes and the output `out.1` bytes per output row from `x.0` and `out.0`.
    fn open(b: &mut FunctionBuilder, g: &Geometry, x: (Value, i64), out: (Value, i64)) -> Rows {
        let ptr = jit::pointer();
        let zero = b.ins().iconst(ptr, 0);
        let oh = b.ins().iconst(ptr, g.output[0] as i64);
        let (rows, rows_at) = Loop::carrying(b, (zero, oh, 1), &[x, out]);
        let (input, output) = (rows_at[0], rows_at[1]);
        let first = b.ins().iconst(ptr, 0);
        let end = b.ins().iconst(ptr, g.row() as i64);
        let cols = Loop::stepped(b, first, end, VECTOR as i64);
        let ox = cols.index;
        Rows {
            rows,
            cols,
            ox,
            input,
            output,
        }
    }

    /// Closes both loops.
    fn close(self, b: &mut FunctionBuilder) {
        self.cols.close(b);
        self.rows.close(b);
    }
}

/// Stores two accumulators or requantizes them, at column `ox` of output row `out_row`.
fn finish(
    b: &mut FunctionBuilder,
    accs: [Value; 2],
    epilogue: Epilogue,
    (out_row, ox, record): (Value, Value, Value),
) {
    let flags = MemFlagsData::new().with_notrap();
    let dst_off = b.ins().imul_imm_s(ox, width_of(epilogue));
    let dst = b.ins().iadd(out_row, dst_off);
    match epilogue {
        Epilogue::Accumulators => {
            b.ins().store(flags, accs[0], dst, 0);
            b.ins().store(flags, accs[1], dst, 16);
        }
        Epilogue::Requantize(levels) => requantize8(b, accs, (record, false), &levels, dst),
    }
}

/// Output elements' byte width for `epilogue`.
fn width_of(epilogue: Epilogue) -> i64 {
    match epilogue {
        Epilogue::Accumulators => 4,
        Epilogue::Requantize(_) => 1,
    }
}

/// The pshufb mask of the quads form: lane `j`, byte `e` reads byte `j * sx + e * dx` of the
/// load (taps past the kernel's width read byte 0: their weight is 0).
fn quad_mask(b: &mut FunctionBuilder, g: &Geometry, group: usize) -> Immediate {
    let (sx, dx) = (g.strides[1], g.dilations[1]);
    let mut bytes = Vec::with_capacity(16);
    for j in 0..4 {
        for e in 0..4 {
            let tap = 4 * group + e;
            bytes.push(if tap < g.kernel[1] {
                (j * sx + e * dx) as u8
            } else {
                0
            });
        }
    }
    b.func.dfg.immediates.push(bytes.into())
}

fn build_quads(b: &mut FunctionBuilder, args: &[Value], g: &Geometry, epilogue: Epilogue) {
    let (x, words, out, record) = (args[0], args[1], args[2], args[3]);
    let flags = MemFlagsData::new().with_notrap();
    let [kh, _] = g.kernel;
    let [sy, sx] = g.strides;
    let [dy, dx] = g.dilations;
    let (width, row) = (g.quad_width() as i64, g.row() as i64);
    let groups = g.tap_groups();
    let masks: Vec<Immediate> = (0..groups).map(|grp| quad_mask(b, g, grp)).collect();
    // The accumulators' start and the weights, loaded once before the loops (a load emitted in
    // the loop body runs on every group of outputs).
    let start = b.ins().load(types::I32X4, flags, words, 0);
    let weights: Vec<Value> = (0..kh * groups)
        .map(|i| {
            b.ins()
                .load(types::I8X16, flags, words, (16 * (1 + i)) as i32)
        })
        .collect();
    // Output rows per iteration: two (one when the plane has one), whose shared input rows (all
    // but one at vertical stride 1, one at stride 2) are loaded and shuffled once for both.
    let [oh, _] = g.output;
    let per = if oh >= 2 { 2 } else { 1 };
    let out_row = row * width_of(epilogue);
    // Output rows `0..count` from the one whose first input row starts at `input` (its outputs
    // at `output`), eight columns from `ox`.
    let emit = |b: &mut FunctionBuilder, (input, output): (Value, Value), ox: Value, count| {
        let src_off = b.ins().imul_imm_s(ox, sx as i64);
        let src = b.ins().iadd(input, src_off);
        // The shuffled input of (input row, tap group, half), loaded for the first output row
        // that reads it.
        let mut shuffled: HashMap<(usize, usize, usize), Value> = HashMap::new();
        for j in 0..count {
            let mut accs = [start, start];
            for ky in 0..kh {
                let line = j * sy + ky * dy;
                for (grp, mask) in masks.iter().enumerate() {
                    let w = weights[ky * groups + grp];
                    for (half, acc) in accs.iter_mut().enumerate() {
                        let u = *shuffled.entry((line, grp, half)).or_insert_with(|| {
                            let off = line as i64 * width + (4 * grp * dx + 4 * half * sx) as i64;
                            let v = b.ins().load(types::I8X16, flags, src, off as i32);
                            b.ins().shuffle(v, v, *mask)
                        });
                        *acc = dot_u8_i8(b, w, u, *acc);
                    }
                }
            }
            let dst = b.ins().iadd_imm_s(output, j as i64 * out_row);
            finish(b, accs, epilogue, (dst, ox, record));
        }
    };
    let ptr = jit::pointer();
    let columns = |b: &mut FunctionBuilder, rows: (Value, Value), count: usize| {
        let (first, end) = (b.ins().iconst(ptr, 0), b.ins().iconst(ptr, row));
        let cols = Loop::stepped(b, first, end, VECTOR as i64);
        emit(b, rows, cols.index, count);
        cols.close(b);
    };
    let (zero, pairs) = (
        b.ins().iconst(ptr, 0),
        b.ins().iconst(ptr, (oh / per) as i64),
    );
    let steps = [(x, (per * sy) as i64 * width), (out, per as i64 * out_row)];
    let (lines, at) = Loop::carrying(b, (zero, pairs, 1), &steps);
    columns(b, (at[0], at[1]), per);
    lines.close(b);
    if oh % per != 0 {
        // The last output row alone.
        let input = b.ins().iadd_imm_s(x, ((oh - 1) * sy) as i64 * width);
        let output = b.ins().iadd_imm_s(out, (oh - 1) as i64 * out_row);
        columns(b, (input, output), 1);
    }
    b.ins().return_(&[]);
}

fn build_pairs(b: &mut FunctionBuilder, args: &[Value], g: &Geometry, epilogue: Epilogue) {
    let (x, taps, out, record) = (args[0], args[1], args[2], args[3]);
    let flags = MemFlagsData::new().with_notrap();
    let [kh, kw] = g.kernel;
    let [sy, sx] = g.strides;
    let [dy, dx] = g.dilations;
    let (rows, width, row) = (g.rows() as i64, g.phase_width() as i64, g.row() as i64);
    let pairs = (kh * kw).div_ceil(2);
    // Byte offset of each tap from the start of the output row's first input row.
    let offsets: Vec<i32> = (0..kh * kw)
        .map(|t| {
            let (ky, kx) = ((t / kw) as i64, (t % kw) as i64);
            let (r, off) = ((kx * dx as i64) % sx as i64, (kx * dx as i64) / sx as i64);
            (((r * rows + ky * dy as i64) * width + off) * 2) as i32
        })
        .collect();
    // The pairs' weights, loaded once before the loops.
    let weights: Vec<Value> = (0..pairs)
        .map(|pair| b.ins().load(types::I16X8, flags, taps, (16 * pair) as i32))
        .collect();
    let rows = Rows::open(
        b,
        g,
        (x, sy as i64 * width * 2),
        (out, row * width_of(epilogue)),
    );
    let src_off = b.ins().ishl_imm_u(rows.ox, 1);
    let src = b.ins().iadd(rows.input, src_off);
    let zero32 = b.ins().iconst(types::I32, 0);
    let mut acc0 = b.ins().splat(types::I32X4, zero32);
    let mut acc1 = acc0;
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let (low, high) = (interleave_mask(b, 0), interleave_mask(b, 8));
    for (pair, &w) in weights.iter().enumerate() {
        // Eight outputs' inputs of two taps, interleaved so each lane holds (tap a, tap b).
        let a = offsets[2 * pair];
        let bo = offsets.get(2 * pair + 1).copied().unwrap_or(a);
        let xa = b.ins().load(types::I8X16, flags, src, a);
        let xb = b.ins().load(types::I8X16, flags, src, bo);
        let lo = b.ins().shuffle(xa, xb, low);
        let hi = b.ins().shuffle(xa, xb, high);
        let lo = b.ins().bitcast(types::I16X8, little, lo);
        let hi = b.ins().bitcast(types::I16X8, little, hi);
        let d0 = pmaddwd(b, lo, w);
        let d1 = pmaddwd(b, hi, w);
        acc0 = b.ins().iadd(acc0, d0);
        acc1 = b.ins().iadd(acc1, d1);
    }
    finish(b, [acc0, acc1], epilogue, (rows.output, rows.ox, record));
    rows.close(b);
    b.ins().return_(&[]);
}
