//! The depthwise convolution (one input channel per output channel): a generated kernel per
//! layer geometry that computes one channel's output plane, eight outputs of a row at a time in
//! two i32x4 accumulators. The taps of the window are unrolled two at a time: the two taps'
//! inputs interleaved (`punpcklwd`/`punpckhwd`) and multiplied by the pair's weights with
//! `pmaddwd`, exact since `|x - Z_x| * |w| <= 255 * 127` fits i16 pairs summed in i32.
//!
//! The input plane is staged as i16 (`x - Z_x`, zero where the window reads padding) and split
//! into `stride` column phases, so that a stride-2 layer also reads contiguous vectors: output
//! column `ox` of tap column `kx` reads phase `(kx * dilation) % stride` at column
//! `ox + (kx * dilation) / stride`.

use cranelift_codegen::ir::{InstBuilder, MemFlagsData, types};
use cranelift_frontend::FunctionBuilder;

use cranelift_codegen::ir::{Endianness, Immediate};

use crate::clif::{Loop, pmaddwd, requantize8};
use crate::gemm::Epilogue;
use crate::jit;

/// Output columns per iteration of the generated row loop.
const VECTOR: usize = 8;

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
    /// Output row length including the columns computed past the end.
    fn row(&self) -> usize {
        self.output[1].div_ceil(VECTOR) * VECTOR
    }

    /// Rows of the staged input.
    fn rows(&self) -> usize {
        (self.output[0] - 1) * self.strides[0] + (self.kernel[0] - 1) * self.dilations[0] + 1
    }

    /// Columns of each staged phase.
    fn phase_width(&self) -> usize {
        self.row() + ((self.kernel[1] - 1) * self.dilations[1]) / self.strides[1] + 1
    }

    /// i16 values of one staged channel.
    pub fn staged_len(&self) -> usize {
        self.strides[1] * self.rows() * self.phase_width()
    }

    /// i32 values of one channel's padded output.
    pub fn out_len(&self) -> usize {
        self.output[0] * self.row()
    }

    /// Stages one channel (`plane`, `H x W` stored values of zero point `zero_point`) into
    /// `dst` (`staged_len` values of `x - Z_x`); `line` is scratch space.
    pub fn stage<T: Copy + Into<i16>>(
        &self,
        plane: &[T],
        zero_point: i16,
        dst: &mut [i16],
        line: &mut Vec<i16>,
    ) {
        let (rows, width, s) = (self.rows(), self.phase_width(), self.strides[1]);
        let [h, w] = self.input;
        let [pt, pl] = self.pads;
        // One padded input row: column `c` holds input column `c - pl` (zero outside), so
        // phase `r` column `j` is padded column `j * s + r`.
        let padded = width * s;
        line.resize(padded, 0);
        let (first, last) = (pl.min(padded), (pl + w).min(padded));
        for row in 0..rows {
            let Some(iy) = row.checked_sub(pt).filter(|iy| *iy < h) else {
                for r in 0..s {
                    dst[(r * rows + row) * width..][..width].fill(0);
                }
                continue;
            };
            // At stride 1 the padded row is the staged row.
            let padded_row = if s == 1 {
                &mut dst[row * width..(row + 1) * width]
            } else {
                &mut line[..]
            };
            padded_row[..first].fill(0);
            padded_row[last..].fill(0);
            centre(
                &plane[iy * w..iy * w + last - first],
                zero_point,
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
    pub fn compact<T: Copy>(&self, padded: &[T], dst: &mut [T]) {
        let (row, ow) = (self.row(), self.output[1]);
        for (d, s) in dst.chunks_mut(ow).zip(padded.chunks(row)) {
            d.copy_from_slice(&s[..ow]);
        }
    }
}

/// `dst[i] = src[i] - zero_point` (a loop the compiler vectorises).
fn centre<T: Copy + Into<i16>>(src: &[T], zero_point: i16, dst: &mut [i16]) {
    for (d, v) in dst.iter_mut().zip(src) {
        *d = (*v).into() - zero_point;
    }
}

/// Words of one channel's packed weights for `taps` taps: a vector of four words per pair of
/// taps (the last pairs with a zero weight when odd).
pub fn words_per_channel(taps: usize) -> usize {
    4 * taps.div_ceil(2)
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
pub type DepthwiseFn = unsafe extern "C" fn(*const i16, *const u32, *mut u8, *const i32);

/// The generated kernel for `g`: `(staged input, taps as i32, padded output, record)`; the
/// output is i32 accumulators or, requantized by the channel's record, output levels.
pub fn kernel(g: &Geometry, epilogue: Epilogue) -> Result<DepthwiseFn, String> {
    let ptr = jit::pointer();
    let name = format!(
        "qdwconv_{}x{}_k{}x{}_s{}x{}_d{}x{}_p{}x{}_o{}x{}",
        g.input[0],
        g.input[1],
        g.kernel[0],
        g.kernel[1],
        g.strides[0],
        g.strides[1],
        g.dilations[0],
        g.dilations[1],
        g.pads[0],
        g.pads[1],
        g.output[0],
        g.output[1]
    );
    let name = match epilogue {
        Epilogue::Accumulators => format!("{name}_acc"),
        Epilogue::Requantize(l) => format!("{name}_{}", l.tag()),
    };
    let g = *g;
    let code = jit::kernel(&name, &[ptr; 4], |b, args| build(b, args, &g, epilogue))?;
    // SAFETY: generated with exactly this signature, in the platform's C ABI.
    Ok(unsafe { std::mem::transmute::<*const u8, DepthwiseFn>(code) })
}

fn build(
    b: &mut FunctionBuilder,
    args: &[cranelift_codegen::ir::Value],
    g: &Geometry,
    epilogue: Epilogue,
) {
    let (x, taps, out, record) = (args[0], args[1], args[2], args[3]);
    let width_of = match epilogue {
        Epilogue::Accumulators => 4,
        Epilogue::Requantize(_) => 1,
    };
    let flags = MemFlagsData::new().with_notrap();
    let ptr = jit::pointer();
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
    let zero = b.ins().iconst(ptr, 0);
    let oh = b.ins().iconst(ptr, g.output[0] as i64);
    let oy_loop = Loop::new(b, zero, oh);
    let oy = oy_loop.index;
    let in_row = b.ins().imul_imm_s(oy, sy as i64 * width * 2);
    let in_row = b.ins().iadd(x, in_row);
    let out_row = b.ins().imul_imm_s(oy, row * width_of);
    let out_row = b.ins().iadd(out, out_row);
    let zero_col = b.ins().iconst(ptr, 0);
    let end_col = b.ins().iconst(ptr, row);
    let ox_loop = Loop::stepped(b, zero_col, end_col, VECTOR as i64);
    let ox = ox_loop.index;
    let src_off = b.ins().ishl_imm_u(ox, 1);
    let src = b.ins().iadd(in_row, src_off);
    let zero32 = b.ins().iconst(types::I32, 0);
    let mut acc0 = b.ins().splat(types::I32X4, zero32);
    let mut acc1 = acc0;
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let (low, high) = (interleave_mask(b, 0), interleave_mask(b, 8));
    for pair in 0..pairs {
        let w = b.ins().load(types::I16X8, flags, taps, (16 * pair) as i32);
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
    let dst_off = b.ins().imul_imm_s(ox, width_of);
    let dst = b.ins().iadd(out_row, dst_off);
    match epilogue {
        Epilogue::Accumulators => {
            b.ins().store(flags, acc0, dst, 0);
            b.ins().store(flags, acc1, dst, 16);
        }
        Epilogue::Requantize(levels) => requantize8(b, [acc0, acc1], record, &levels, dst),
    }
    ox_loop.close(b);
    oy_loop.close(b);
    b.ins().return_(&[]);
}
