//! Single-precision matrix products through the `gemm` crate.

use std::mem::MaybeUninit;

/// `c[m x n] = a[m x k] * b[k x n]` for `[m, k, n]`, `b` and `c` given with the distance between
/// their rows (`(b, ldb)`, `(c, ldc)`), `a` row-major. Only the `m x n` block of `c` is written
/// (nothing is read), so the rest of the slice may be uninitialized and the block is initialized
/// after.
pub fn sgemm_into(
    dims: [usize; 3],
    a: &[f32],
    b: (&[f32], usize),
    c: (&mut [MaybeUninit<f32>], usize),
) {
    gemm(dims, (a, dims[1]), b, c);
}

/// `c` as cells for [`gemm`], which only ever writes numbers into them.
fn as_cells(c: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; the one writer of the cells (`gemm`) leaves every one a valid f32.
    unsafe { &mut *(c as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// `c = a * b` for `[m, k, n]`, each row-major with rows `lda`, `ldb` and `ldc` apart; panics when
/// an operand is too short for its rows.
fn gemm(
    [m, k, n]: [usize; 3],
    (a, lda): (&[f32], usize),
    (b, ldb): (&[f32], usize),
    (c, ldc): (&mut [MaybeUninit<f32>], usize),
) {
    // Elements from the first row's first to the last row's last.
    let spans = |rows: usize, ld: usize, cols: usize| match rows {
        0 => 0,
        _ => (rows - 1) * ld + cols,
    };
    assert!(
        a.len() >= spans(m, lda, k) && b.len() >= spans(k, ldb, n) && c.len() >= spans(m, ldc, n),
        "gemm operand sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the assert keeps every index the kernel reads or writes inside the slices, given
    // the row strides passed; with `read_dst` false it reads nothing of `c`. (`gemm` computes
    // `dst = alpha * dst + beta * lhs * rhs`, strides given column then row.)
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr().cast::<f32>(),
            1,
            ldc as isize,
            false,
            a.as_ptr(),
            1,
            lda as isize,
            b.as_ptr(),
            1,
            ldb as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    };
}

/// `c[m x n] = a[m x k] * b[k x n]` exactly, for integer-valued `a` and `b` with `|a| <= max_a` and
/// `|b| <= max_b` (and `k * max_a * max_b < 2^31`). An f32 GEMM is exact while every partial sum
/// stays below 2^24, so `k` is cut into chunks that keep it there and the chunks' results are
/// added in i32. `scratch` holds one chunk's f32 result.
pub fn exact_int_gemm(
    [m, k, n]: [usize; 3],
    (a, max_a): (&[f32], u32),
    (b, max_b): (&[f32], u32),
    c: &mut [i32],
    scratch: &mut Vec<f32>,
) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm operand sizes"
    );
    let product = (u64::from(max_a) * u64::from(max_b)).max(1);
    let chunk = ((1u64 << 24) / product).clamp(1, k.max(1) as u64) as usize;
    scratch.resize(m * n, 0.0);
    c[..m * n].fill(0);
    for k0 in (0..k).step_by(chunk) {
        let kc = chunk.min(k - k0);
        // Columns k0..k0+kc of `a`'s rows, rows k0..k0+kc of `b`, into `scratch`.
        gemm(
            [m, kc, n],
            (&a[k0..], k),
            (&b[k0 * n..], n),
            (as_cells(scratch), n),
        );
        for (d, s) in c.iter_mut().zip(scratch.iter()) {
            *d += *s as i32;
        }
    }
}
