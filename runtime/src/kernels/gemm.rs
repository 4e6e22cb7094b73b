//! Single-precision matrix products through `matrixmultiply`.

use std::mem::MaybeUninit;

/// `c[m x n] (+)= a[m x k] * b[k x n]` for `[m, k, n]`; `b_transposed` reads `b` as stored `[n x k]`.
pub fn sgemm(
    [m, k, n]: [usize; 3],
    a: &[f32],
    b: &[f32],
    b_transposed: bool,
    c: &mut [f32],
    accumulate: bool,
) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm operand sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    let (rsb, csb) = if b_transposed {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    let beta = if accumulate { 1.0 } else { 0.0 };
    // SAFETY: the asserts above keep every index the kernel reads or writes inside the slices,
    // given the row/column strides passed here.
    unsafe {
        gemm(
            [m, k, n],
            (a.as_ptr(), k),
            (b.as_ptr(), rsb, csb),
            beta,
            (c.as_mut_ptr(), n),
        )
    };
}

/// `c = beta * c + a * b` for `[m, k, n]`: `a` with rows `lda` apart, `b` with its row and
/// column strides, `c` with rows `ldc` apart.
///
/// # Safety
/// Every element the dimensions and strides reach is inside its operand, and `c`'s are
/// initialized unless `beta` is zero.
unsafe fn gemm(
    [m, k, n]: [usize; 3],
    (a, lda): (*const f32, usize),
    (b, rsb, csb): (*const f32, isize, isize),
    beta: f32,
    (c, ldc): (*mut f32, usize),
) {
    // SAFETY: as the caller promises.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a,
            lda as isize,
            1,
            b,
            rsb,
            csb,
            beta,
            c,
            ldc as isize,
            1,
        )
    };
}

/// `c[m x n] += a[m x k] * b[k x n]` for `[m, k, n]`, `b` and `c` given with the distance
/// between their rows (`(b, ldb)`, `(c, ldc)`), `a` row-major. Only the `m x n` block of `c` is
/// read or written; the rest of the slice may be uninitialized.
///
/// # Safety
/// Every element of the block (`n` values from each `ldc`-th of `c`, `m` rows) is initialized.
pub unsafe fn sgemm_onto(
    [m, k, n]: [usize; 3],
    a: &[f32],
    (b, ldb): (&[f32], usize),
    (c, ldc): (&mut [MaybeUninit<f32>], usize),
) {
    let spans = |rows: usize, ld: usize| if rows == 0 { 0 } else { (rows - 1) * ld + n };
    assert!(
        a.len() >= m * k && b.len() >= spans(k, ldb) && c.len() >= spans(m, ldc),
        "gemm operand sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above keep every index the kernel reads or writes inside the slices,
    // given the row strides passed here; the caller has initialized the block it reads.
    unsafe {
        gemm(
            [m, k, n],
            (a.as_ptr(), k),
            (b.as_ptr(), ldb as isize, 1),
            1.0,
            (c.as_mut_ptr().cast::<f32>(), ldc),
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
        // SAFETY: rows of `a` are read at stride k from column k0 for kc columns, rows k0..k0+kc
        // of `b`, and m x n of `scratch`; the asserts and resize above keep these in bounds.
        unsafe {
            gemm(
                [m, kc, n],
                (a.as_ptr().add(k0), k),
                (b.as_ptr().add(k0 * n), n as isize, 1),
                0.0,
                (scratch.as_mut_ptr(), n),
            )
        };
        for (d, s) in c.iter_mut().zip(scratch.iter()) {
            *d += *s as i32;
        }
    }
}
