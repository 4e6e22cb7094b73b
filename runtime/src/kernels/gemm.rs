//! Single-precision matrix products through `matrixmultiply`.

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
    // SAFETY: the asserts above keep every index the kernel reads or writes inside the slices,
    // given the row/column strides passed here.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            rsb,
            csb,
            if accumulate { 1.0 } else { 0.0 },
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `c[m x n] = a[m x k] * b[k x n]` in f64 for `[m, k, n]`. Integer operands of up to 2^53 in every
/// partial sum give exact integer results, which the integer kernels rely on.
pub fn dgemm([m, k, n]: [usize; 3], a: &[f64], b: &[f64], c: &mut [f64]) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm operand sizes"
    );
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the assert above keeps every index inside the slices for these strides.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}
