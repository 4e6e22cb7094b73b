//! The generated float depthwise `nn.conv2d`, bit for bit the reference's: every output starts
//! from its bias and adds `w * x` tap by tap in row-major order (multiply then add, never fused,
//! because the reference rounds the product before adding it), eight outputs of a row at a time.
//!
//! The reference skips the taps that fall in the padding; the kernel reads staged rows padded
//! with zeros instead, so borders need no code of their own. Adding `w * 0 = ±0` leaves every
//! sum as it is except -0.0 (which +0.0 would turn into +0.0), and a sum that starts from a bias
//! other than -0.0 is never -0.0: a rounded sum is -0.0 only when both terms are. So a layer with
//! a -0.0 bias, or a non-finite weight (whose product with zero is NaN), runs on the reference
//! kernel. The staged rows are split into `stride` column phases (as the integer pairs form's),
//! so every load is four consecutive values. The kernel writes the output plane itself: a row's
//! last one to seven outputs are stored lane by lane.

use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value, types};
use cranelift_frontend::FunctionBuilder;
use qcc_dialects::ops::attrs::Conv2dAttrs;
use qcc_dialects::{Operation, Tensor, TensorType};
use qcc_runtime::OpKernel;
use qcc_runtime::float::{
    Activation, DENSE_BLOCK, canonical_nan, dense_by_blocks, dot, transposed,
};

use crate::clif::Loop;
use crate::depthwise::{Geometry, VECTOR};
use crate::elementwise::{Fallback, f32_bytes, is_f32};
use crate::gemm::Form;
use crate::jit;

/// Channels one task takes at a time (each task stages into buffers of its own).
const PLANES_PER_TASK: usize = 8;

type DepthwiseFn = unsafe extern "C" fn(*const f32, *const f32, *const f32, *mut f32);

/// The generated kernel for `g`: `(staged channel, the channel's weights, its bias, output
/// plane)`, each weight and the bias given as four copies (the f32x4 the kernel multiplies by).
fn kernel(g: &Geometry) -> Result<DepthwiseFn, String> {
    let ptr = jit::pointer();
    let name = format!("fdwconv_{}", g.tag());
    let g = *g;
    let code = jit::kernel(&name, &[ptr; 4], |b, args| build(b, args, &g))?;
    // SAFETY: generated with exactly this signature, in the platform's C ABI.
    Ok(unsafe { std::mem::transmute::<*const u8, DepthwiseFn>(code) })
}

fn build(b: &mut FunctionBuilder, args: &[Value], g: &Geometry) {
    let (x, weights, bias, out) = (args[0], args[1], args[2], args[3]);
    let flags = MemFlagsData::new().with_notrap();
    // The staged input, the weights and the bias are not written while the kernel runs, and are
    // valid wherever it reads them: loads Cranelift may place next to their use (else every load
    // of an iteration is issued first and the values spill).
    let fixed = flags.with_readonly().with_can_move();
    let [kh, kw] = g.kernel;
    let [sy, sx] = g.strides;
    let [dy, dx] = g.dilations;
    let [oh, ow] = g.output;
    let (rows, width) = (g.rows() as i64, g.phase_width() as i64);
    // Byte offset of each tap's values from the output row's first staged value.
    let offsets: Vec<i32> = (0..kh * kw)
        .map(|t| {
            let (ky, kx) = ((t / kw) as i64, (t % kw) as i64);
            let (phase, col) = ((kx * dx as i64) % sx as i64, (kx * dx as i64) / sx as i64);
            (((phase * rows + ky * dy as i64) * width + col) * 4) as i32
        })
        .collect();
    // The bias and the weights, loaded once before the loops by loads that stay there (a splat,
    // or a load that may move, is placed next to its use: inside the loops, once per group).
    let bias = b.ins().load(types::F32X4, flags, bias, 0);
    let taps: Vec<Value> = (0..offsets.len())
        .map(|t| b.ins().load(types::F32X4, flags, weights, (16 * t) as i32))
        .collect();
    // The eight outputs from column `ox` of the row whose staged input starts at `row_in`.
    let group = |b: &mut FunctionBuilder, row_in: Value, ox: Value| {
        let at = b.ins().ishl_imm_u(ox, 2);
        let src = b.ins().iadd(row_in, at);
        let mut accs = [bias, bias];
        for (offset, &w) in offsets.iter().zip(&taps) {
            for (half, acc) in accs.iter_mut().enumerate() {
                let v = b
                    .ins()
                    .load(types::F32X4, fixed, src, offset + 16 * half as i32);
                let product = b.ins().fmul(w, v);
                *acc = b.ins().fadd(*acc, product);
            }
        }
        (accs, at)
    };
    let ptr = jit::pointer();
    let zero = b.ins().iconst(ptr, 0);
    let last = b.ins().iconst(ptr, oh as i64);
    let rows = [(x, sy as i64 * width * 4), (out, ow as i64 * 4)];
    let (lines, rows_at) = Loop::carrying(b, (zero, last, 1), &rows);
    let (row_in, row_out) = (rows_at[0], rows_at[1]);
    // Whole groups of eight, then the row's last few outputs stored lane by lane, so that the
    // kernel writes the output plane as it is (no padded rows to copy out).
    let whole = ow / VECTOR * VECTOR;
    let end = b.ins().iconst(ptr, whole as i64);
    let first = b.ins().iconst(ptr, 0);
    let columns = Loop::stepped(b, first, end, VECTOR as i64);
    let (accs, at) = group(b, row_in, columns.index);
    let dst = b.ins().iadd(row_out, at);
    b.ins().store(flags, accs[0], dst, 0);
    b.ins().store(flags, accs[1], dst, 16);
    columns.close(b);
    if whole < ow {
        let ox = b.ins().iconst(ptr, whole as i64);
        let (accs, at) = group(b, row_in, ox);
        let dst = b.ins().iadd(row_out, at);
        store_first(b, accs, ow - whole, dst);
    }
    lines.close(b);
    b.ins().return_(&[]);
}

/// Stores the first `count` (1 to 7) of the eight values in `accs` at `dst`.
fn store_first(b: &mut FunctionBuilder, accs: [Value; 2], count: usize, dst: Value) {
    let flags = MemFlagsData::new().with_notrap();
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let (mut vector, mut left, mut offset) = (accs[0], count, 0);
    if left >= 4 {
        b.ins().store(flags, accs[0], dst, 0);
        (vector, left, offset) = (accs[1], left - 4, 16);
    }
    let mut lane = 0;
    if left >= 2 {
        let pairs = b.ins().bitcast(types::I64X2, little, vector);
        let low = b.ins().extractlane(pairs, 0);
        b.ins().store(flags, low, dst, offset);
        (left, lane, offset) = (left - 2, 2, offset + 8);
    }
    if left == 1 {
        let value = b.ins().extractlane(vector, lane);
        b.ins().store(flags, value, dst, offset);
    }
}

/// A generated float depthwise `nn.conv2d`.
pub struct FloatDepthwise {
    attrs: Conv2dAttrs,
    fallback: Fallback,
}

impl FloatDepthwise {
    /// Prepares `op` (a depthwise convolution with operand types `types`), or `None` when it is
    /// not one.
    pub fn new(op: &Operation, types: &[&TensorType]) -> Result<Option<FloatDepthwise>, String> {
        let attrs = Conv2dAttrs::of(op)?;
        let (x, w) = (&types[0].shape, &types[1].shape);
        let depthwise = x.len() == 4
            && w.len() == 4
            && w[1] == 1
            && attrs.groups == x[1]
            && w[0] == x[1]
            && attrs.groups > 1;
        if !depthwise {
            return Ok(None);
        }
        kernel(&Geometry::of(&attrs, [x[2], x[3]], [w[2], w[3]])?)?;
        Ok(Some(FloatDepthwise {
            attrs,
            fallback: Fallback::new(op, types),
        }))
    }
}

fn f32s<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], String> {
    t.as_f32().ok_or_else(|| format!("the {what} must be f32"))
}

impl OpKernel for FloatDepthwise {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        self.convolve(inputs, None)
    }

    fn run_then(&self, inputs: &[&Tensor], then: Activation) -> Result<Tensor, String> {
        self.convolve(inputs, Some(then))
    }
}

impl FloatDepthwise {
    /// The convolution of `inputs`, then `then` applied to each output plane as it is written.
    fn convolve(&self, inputs: &[&Tensor], then: Option<Activation>) -> Result<Tensor, String> {
        let (x, w) = (inputs[0], inputs[1]);
        let (xv, wv) = (f32s(x, "input")?, f32s(w, "weight")?);
        let bias = inputs.get(2).map(|b| f32s(b, "bias")).transpose()?;
        let negative_zero = |v: &f32| *v == 0.0 && v.is_sign_negative();
        if !wv.iter().all(|v| v.is_finite()) || bias.is_some_and(|b| b.iter().any(negative_zero)) {
            let mut t = self.fallback.run(inputs)?;
            if let (Some(f), Some(values)) = (then, t.as_f32_mut()) {
                f.apply_to(values);
            }
            return Ok(t);
        }
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
        let g = Geometry::of(&self.attrs, [h, wd], [w.shape[2], w.shape[3]])?;
        let f = kernel(&g)?;
        let [oh, ow] = g.output;
        let (plane_in, plane_out, taps) = (h * wd, oh * ow, w.shape[2] * w.shape[3]);
        let len = n * c * plane_out;
        // The kernel writes every output (whole planes): no zeroing pass first.
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let sizes = (g.staged_len(Form::Pairs), PLANES_PER_TASK);
        let planes = &mut out.spare_capacity_mut()[..len];
        // Every weight and bias as the four copies the kernel loads.
        let fours = |v: &[f32]| v.iter().flat_map(|x| [*x; 4]).collect::<Vec<f32>>();
        let (weights, biases) = (fours(wv), bias.map_or_else(|| vec![0.0; 4 * c], fours));
        g.each_plane(planes, (sizes, true), |i, staged, line, target, fresh| {
            let ch = i % c;
            let plane = &xv[i * plane_in..(i + 1) * plane_in];
            let copy = |s: &[f32], d: &mut [f32]| d.copy_from_slice(s);
            g.stage_phases(plane, (0.0, copy), (staged, line), fresh);
            let (w, b) = (&weights[4 * ch * taps..], &biases[4 * ch..]);
            // SAFETY: `staged` and the target have the sizes the kernel was generated for; `w`
            // holds the channel's taps and `b` its bias, four copies each.
            unsafe { f(staged.as_ptr(), w.as_ptr(), b.as_ptr(), target) };
            if let Some(f) = then {
                // SAFETY: the target is the channel's output plane, just written.
                f.apply_to(unsafe { std::slice::from_raw_parts_mut(target, plane_out) });
            }
        });
        // SAFETY: every plane of the first `len` values was written by its kernel call.
        unsafe { out.set_len(len) };
        Ok(Tensor::from_f32(vec![n, c, oh, ow], out))
    }
}

/// Outputs one call of the generated dense kernel computes per iteration.
const DENSE_ROWS: usize = 4;

type DenseFn = unsafe extern "C" fn(*const f32, *const f32, *mut f32, i64);

/// The generated float dot products of one input row of `k` values: `(row, weights of the first
/// output, outputs, groups of DENSE_ROWS outputs)`, each output [`dot`]'s
/// order exactly (eight running sums in two f32x4, products rounded before they are added), four
/// outputs at a time so that their eight sums run side by side.
fn dense_kernel(k: usize) -> Result<DenseFn, String> {
    let ptr = jit::pointer();
    let code = jit::kernel(&format!("fdense_k{k}"), &[ptr; 4], |b, args| {
        let (x, w, out, groups) = (args[0], args[1], args[2], args[3]);
        let flags = MemFlagsData::new().with_notrap();
        let row_bytes = (k * 4) as i64;
        let zero = b.ins().iconst(ptr, 0);
        let outer = crate::clif::Loop::new(b, zero, groups);
        let first = b
            .ins()
            .imul_imm_s(outer.index, DENSE_ROWS as i64 * row_bytes);
        let first = b.ins().iadd(w, first);
        let sums: Vec<_> = (0..2 * DENSE_ROWS)
            .map(|_| b.declare_var(types::F32X4))
            .collect();
        let none = b.ins().f32const(0.0);
        let none = b.ins().splat(types::F32X4, none);
        for v in &sums {
            b.def_var(*v, none);
        }
        let whole = (k / 8 * 32) as i64;
        let end = b.ins().iconst(ptr, whole);
        let inner = crate::clif::Loop::stepped(b, zero, end, 32);
        let xp = b.ins().iadd(x, inner.index);
        let wp = b.ins().iadd(first, inner.index);
        let xs = [0, 16].map(|off| b.ins().load(types::F32X4, flags, xp, off));
        for r in 0..DENSE_ROWS {
            for (half, xv) in xs.iter().enumerate() {
                let offset = (r as i64 * row_bytes) as i32 + 16 * half as i32;
                let wv = b.ins().load(types::F32X4, flags, wp, offset);
                let product = b.ins().fmul(*xv, wv);
                let v = sums[2 * r + half];
                let acc = b.use_var(v);
                let acc = b.ins().fadd(acc, product);
                b.def_var(v, acc);
            }
        }
        inner.close(b);
        let dst = b.ins().imul_imm_s(outer.index, (DENSE_ROWS * 4) as i64);
        let dst = b.ins().iadd(out, dst);
        for r in 0..DENSE_ROWS {
            let (low, high) = (b.use_var(sums[2 * r]), b.use_var(sums[2 * r + 1]));
            let c = b.ins().fadd(low, high);
            let lane = |b: &mut FunctionBuilder, l: u8| b.ins().extractlane(c, l);
            let (c0, c1, c2, c3) = (lane(b, 0), lane(b, 1), lane(b, 2), lane(b, 3));
            let even = b.ins().fadd(c0, c2);
            let odd = b.ins().fadd(c1, c3);
            let mut total = b.ins().fadd(even, odd);
            for i in k / 8 * 8..k {
                let xi = b.ins().load(types::F32, flags, x, (i * 4) as i32);
                let offset = (r as i64 * row_bytes) as i32 + (i * 4) as i32;
                let wi = b.ins().load(types::F32, flags, first, offset);
                let product = b.ins().fmul(xi, wi);
                total = b.ins().fadd(total, product);
            }
            b.ins().store(flags, total, dst, (r * 4) as i32);
        }
        outer.close(b);
        b.ins().return_(&[]);
    })?;
    // SAFETY: generated with exactly this signature, in the platform's C ABI.
    Ok(unsafe { std::mem::transmute::<*const u8, DenseFn>(code) })
}

/// A generated float `nn.dense`.
pub struct FloatDense {
    kernel: DenseFn,
    k: usize,
}

impl FloatDense {
    /// Prepares a dense with operand types `types`, or `None` when its input is not a matrix.
    pub fn new(types: &[&TensorType]) -> Result<Option<FloatDense>, String> {
        let (x, w) = (&types[0].shape, &types[1].shape);
        if x.len() != 2 || w.len() != 2 || x[1] != w[1] || x[1] == 0 {
            return Ok(None);
        }
        Ok(Some(FloatDense {
            kernel: dense_kernel(x[1])?,
            k: x[1],
        }))
    }
}

impl FloatDense {
    /// The `[n, m]` outputs of `x [n, K]` times `w [m, K]` transposed, plus `bias`.
    fn outputs(
        &self,
        xv: &[f32],
        n: usize,
        wv: &[f32],
        m: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let k = self.k;
        dense_by_blocks(n, m, DENSE_BLOCK, |first, len, part| {
            let groups = len / DENSE_ROWS;
            for (row, values) in part.chunks_mut(len).enumerate() {
                let xr = &xv[row * k..(row + 1) * k];
                // SAFETY: the row holds k values, and the weights `groups * DENSE_ROWS` rows of
                // k from output `first` on; `values` holds that many outputs.
                unsafe {
                    (self.kernel)(
                        xr.as_ptr(),
                        wv[first * k..].as_ptr(),
                        values.as_mut_ptr(),
                        groups as i64,
                    )
                };
                for (i, o) in values.iter_mut().enumerate().skip(groups * DENSE_ROWS) {
                    let j = first + i;
                    *o = dot(xr, &wv[j * k..(j + 1) * k]);
                }
                for (i, o) in values.iter_mut().enumerate() {
                    *o = canonical_nan(bias.map_or(*o, |b| *o + b[first + i]));
                }
            }
        })
    }
}

impl OpKernel for FloatDense {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let (x, w) = (inputs[0], inputs[1]);
        let (xv, wv) = (f32s(x, "input")?, f32s(w, "weight")?);
        let bias = inputs.get(2).map(|b| f32s(b, "bias")).transpose()?;
        let (n, k, m) = (x.shape[0], self.k, w.shape[0]);
        if x.shape[1] != k || w.shape[1] != k || bias.is_some_and(|b| b.len() != m) {
            return Err(format!(
                "dense of shapes {:?} and {:?} does not fit its kernel (K = {k})",
                x.shape, w.shape
            ));
        }
        Ok(Tensor::from_f32(
            vec![n, m],
            self.outputs(xv, n, wv, m, bias),
        ))
    }
}

/// A generated float `nn.matmul` of `x [..., K]` and `w [K, N]`: the dense layer of `w`
/// transposed (each output [`dot`] of its row and column, the reference's bits), on every row
/// of `x`. A constant `w` is transposed once, when the op is prepared, and remembered by its
/// contents (as `layers.rs` remembers packed integer weights): a run given other values
/// transposes those.
pub struct FloatMatMul {
    dense: FloatDense,
    /// The constant right operand as given and transposed (`[N, K]`).
    constant: Option<(Vec<f32>, Vec<f32>)>,
}

impl FloatMatMul {
    /// Prepares a matmul with operand types `types` (the right one's value `weight` when it is a
    /// constant), or `None` unless both are f32, the right one a matrix, and the depth K not
    /// zero.
    pub fn new(
        types: &[&TensorType],
        weight: Option<&Tensor>,
    ) -> Result<Option<FloatMatMul>, String> {
        let (x, w) = (types[0], types[1]);
        let k = x.shape.last().copied().unwrap_or(0);
        if !(is_f32(x) && is_f32(w))
            || x.shape.len() < 2
            || w.shape.len() != 2
            || w.shape[0] != k
            || k == 0
        {
            return Ok(None);
        }
        let constant = weight
            .filter(|t| t.shape == w.shape)
            .and_then(Tensor::as_f32)
            .map(|v| (v.to_vec(), transposed(v, k, w.shape[1])));
        Ok(Some(FloatMatMul {
            dense: FloatDense {
                kernel: dense_kernel(k)?,
                k,
            },
            constant,
        }))
    }
}

impl OpKernel for FloatMatMul {
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String> {
        let (x, w) = (inputs[0], inputs[1]);
        let (xv, wv) = (f32s(x, "input")?, f32s(w, "weight")?);
        let k = self.dense.k;
        if x.shape.last() != Some(&k) || w.shape.len() != 2 || w.shape[0] != k {
            return Err(format!(
                "matmul of shapes {:?} and {:?} does not fit its kernel (K = {k})",
                x.shape, w.shape
            ));
        }
        let (rows, n) = (xv.len() / k, w.shape[1]);
        let mut shape = x.shape.clone();
        *shape.last_mut().expect("rank >= 2") = n;
        let wt = match &self.constant {
            Some((source, t)) if f32_bytes(source) == f32_bytes(wv) => {
                std::borrow::Cow::Borrowed(t.as_slice())
            }
            _ => std::borrow::Cow::Owned(transposed(wv, k, n)),
        };
        Ok(Tensor::from_f32(
            shape,
            self.dense.outputs(xv, rows, &wt, n, None),
        ))
    }
}
