//! The reference kernels against straightforward definitions.

use super::pool;
use crate::Tensor;
use crate::kernels::elementwise::{Arith, binary, softmax};
use crate::kernels::layers::conv2d;
use crate::kernels::layout::{pad, transpose};
use crate::kernels::pool::{PoolKind, pool2d};
use qcc_dialects::ops::attrs::PadMode;
use qcc_dialects::ops::attrs::{Conv2dAttrs, Window};

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 17) as f32 - 8.0)
        .collect()
}

/// Convolution by its definition, one output at a time.
#[allow(clippy::too_many_arguments)]
fn conv_by_definition(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    g: &Conv2dAttrs,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    let [n, c, h, wd] = xs;
    let [o, cg, kh, kw] = ws;
    let mut out = Vec::new();
    for b in 0..n {
        for oc in 0..o {
            let grp = oc / (o / g.groups);
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = 0.0;
                    for icg in 0..cg {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (y * g.window.strides[0] + ky * g.window.dilations[0])
                                    as isize
                                    - g.window.pads[0] as isize;
                                let ix = (xo * g.window.strides[1] + kx * g.window.dilations[1])
                                    as isize
                                    - g.window.pads[1] as isize;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                                    let ic = grp * cg + icg;
                                    acc += x[((b * c + ic) * h + iy as usize) * wd + ix as usize]
                                        * w[((oc * cg + icg) * kh + ky) * kw + kx];
                                }
                            }
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    out
}

#[test]
fn conv2d_matches_its_definition() {
    for (groups, stride, dil, pads) in [
        (1, 1, 1, [1, 1, 1, 1]),
        (2, 2, 1, [0, 0, 1, 1]),
        (4, 1, 2, [2, 1, 0, 2]),
        (1, 3, 1, [0; 4]),
        // Pads wider than the input: whole rows and columns of the window outside it.
        (1, 2, 3, [4, 7, 3, 8]),
    ] {
        let xs = [2, 4, 7, 6];
        let ws = [4, 4 / groups, 3, 3];
        let g = Conv2dAttrs {
            window: Window {
                strides: [stride, stride],
                pads,
                dilations: [dil, dil],
            },
            groups,
        };
        let x = values(xs.iter().product(), 1);
        let w = values(ws.iter().product(), 2);
        let got = conv2d(&x, &xs, &w, &ws, None, &g, None);
        let (oh, ow) = (got.shape[2], got.shape[3]);
        assert_eq!(
            got.as_f32().expect("f32"),
            conv_by_definition(&x, xs, &w, ws, &g, oh, ow).as_slice()
        );
    }
}

#[test]
fn conv2d_over_several_row_blocks_matches_its_definition() {
    // 40x40 outputs of 64 (3x3, im2col) and 96 (1x1) channels: more than one block of rows each.
    for (kernel, pads) in [(3, [1, 1, 1, 1]), (1, [0; 4])] {
        let xs = [1, 8, 40, 40];
        let o = if kernel == 3 { 64 } else { 96 };
        let ws = [o, 8, kernel, kernel];
        let g = Conv2dAttrs {
            window: Window {
                strides: [1, 1],
                pads,
                dilations: [1, 1],
            },
            groups: 1,
        };
        let x = values(xs.iter().product(), 3);
        let w = values(ws.iter().product(), 4);
        let bias = values(o, 5);
        let got = conv2d(&x, &xs, &w, &ws, Some(&bias), &g, None);
        let plane = 40 * 40;
        let want: Vec<f32> = conv_by_definition(&x, xs, &w, ws, &g, 40, 40)
            .iter()
            .enumerate()
            .map(|(i, v)| v + bias[i / plane])
            .collect();
        assert_eq!(
            got.as_f32().expect("f32"),
            want.as_slice(),
            "{kernel}x{kernel}"
        );
    }
}

#[test]
fn average_pooling_counts_padding_only_when_asked() {
    let x = vec![1.0, 2.0, 3.0, 4.0];
    let g = pool([2, 2], [1, 1], [1, 1, 0, 0], [1, 1], [2, 2]);
    let excl = pool2d(&x, &[1, 1, 2, 2], &g, PoolKind::Avg);
    assert_eq!(excl.as_f32().expect("f32"), &[1.0, 1.5, 2.0, 2.5]);
    let mut g = g;
    g.attrs.count_include_pad = true;
    let incl = pool2d(&x, &[1, 1, 2, 2], &g, PoolKind::Avg);
    assert_eq!(incl.as_f32().expect("f32"), &[0.25, 0.75, 1.0, 2.5]);
    let max = pool2d(&x, &[1, 1, 2, 2], &g, PoolKind::Max);
    assert_eq!(max.as_f32().expect("f32"), &[1.0, 2.0, 3.0, 4.0]);
}

#[test]
fn padding_modes() {
    let x = [1.0, 2.0, 3.0];
    assert_eq!(
        pad(&x, &[3], &[2, 1], PadMode::Constant(9.0))
            .as_f32()
            .expect("f32"),
        &[9.0, 9.0, 1.0, 2.0, 3.0, 9.0]
    );
    assert_eq!(
        pad(&x, &[3], &[2, 1], PadMode::Reflect)
            .as_f32()
            .expect("f32"),
        &[3.0, 2.0, 1.0, 2.0, 3.0, 2.0]
    );
    assert_eq!(
        pad(&x, &[3], &[2, 1], PadMode::Edge).as_f32().expect("f32"),
        &[1.0, 1.0, 1.0, 2.0, 3.0, 3.0]
    );
}

#[test]
fn broadcasting_binary_ops() {
    let a = Tensor::from_f32(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = Tensor::from_f32(vec![3], vec![10.0, 20.0, 30.0]);
    let c = Tensor::from_f32(vec![2, 1], vec![100.0, 200.0]);
    assert_eq!(
        binary(&a, &b, Arith::Add)
            .expect("broadcasts")
            .as_f32()
            .expect("f32"),
        &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0]
    );
    assert_eq!(
        binary(&a, &c, Arith::Add)
            .expect("broadcasts")
            .as_f32()
            .expect("f32"),
        &[101.0, 102.0, 103.0, 204.0, 205.0, 206.0]
    );
    assert!(binary(&a, &Tensor::from_f32(vec![2], vec![0.0, 0.0]), Arith::Add).is_err());
}

#[test]
fn softmax_rows_sum_to_one_and_transpose_permutes() {
    let s = softmax(&[1.0, 2.0, 3.0, 1000.0, 1000.0, 1000.0], &[2, 3], 1);
    let v = s.as_f32().expect("f32");
    assert!((v[..3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    assert!(v[3..].iter().all(|p| (p - 1.0 / 3.0).abs() < 1e-6));
    let t = transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3], &[1, 0]);
    assert_eq!(t.shape, vec![3, 2]);
    assert_eq!(t.as_f32().expect("f32"), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
}

/// A pooling window's taps (found by the fuzz tests: the kernels visited every tap, so a window of
/// 2^31 x 2^31 over a 1x1 input never finished) agree with walking the whole window.
#[test]
fn pooling_taps_match_walking_the_whole_window() {
    use proptest::prelude::*;
    let mut runner = proptest::test_runner::TestRunner::default();
    let geometry = (
        1usize..6,
        1usize..4,
        0usize..5,
        0usize..5,
        1usize..3,
        0usize..8,
        0usize..7,
    );
    runner
        .run(
            &geometry,
            |(kernel, stride, pad, pad_end, dilation, len, o)| {
                let g = pool(
                    [kernel, 1],
                    [stride, 1],
                    [pad, 0, pad_end, 0],
                    [dilation, 1],
                    [o + 1, 1],
                );
                let (mut inside, mut padded) = (Vec::new(), 0);
                for k in 0..kernel {
                    let i = (o * stride + k * dilation) as isize - pad as isize;
                    if i < (len + pad_end) as isize {
                        padded += 1;
                    }
                    if i >= 0 && (i as usize) < len {
                        inside.push(i as usize);
                    }
                }
                let taps = g.taps(0, o, len);
                prop_assert_eq!(taps.positions().collect::<Vec<_>>(), inside);
                prop_assert_eq!(taps.padded, padded);
                Ok(())
            },
        )
        .expect("taps agree");
}

#[test]
fn a_window_far_larger_than_its_input_costs_no_more_than_the_input() {
    let huge = 1usize << 31;
    let g = pool(
        [huge, huge],
        [1, 1],
        [huge - 1, huge - 1, huge - 1, huge - 1],
        [1, 1],
        [2, 2],
    );
    let max = pool2d(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2], &g, PoolKind::Max);
    // The first two outputs of each axis see the input's first one and two positions.
    assert_eq!(max.as_f32().expect("f32"), &[1.0, 2.0, 3.0, 4.0]);
    let avg = pool2d(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2], &g, PoolKind::Avg);
    assert_eq!(avg.as_f32().expect("f32"), &[1.0, 1.5, 2.0, 2.5]);
}

/// Found by the fuzz tests: reflect padding of a one-element axis read past it.
#[test]
fn padding_an_axis_of_one_or_none() {
    assert_eq!(
        pad(&[5.0], &[1], &[2, 1], PadMode::Reflect)
            .as_f32()
            .expect("f32"),
        &[5.0; 4]
    );
    assert_eq!(
        pad(&[], &[0], &[1, 1], PadMode::Edge)
            .as_f32()
            .expect("f32"),
        &[0.0, 0.0]
    );
}

#[test]
fn a_product_over_an_empty_depth_is_zero() {
    let mut c = vec![std::mem::MaybeUninit::new(f32::NAN); 6];
    crate::kernels::gemm::sgemm_into([2, 0, 3], &[], (&[], 3), (&mut c, 3));
    // SAFETY: f32 cells, every one initialized above.
    let c: Vec<f32> = c.iter().map(|v| unsafe { v.assume_init() }).collect();
    assert_eq!(c, vec![0.0; 6]);
    let m = crate::kernels::layers::matmul(&[], &[2, 0], &[], &[0, 3]);
    assert_eq!(m.shape, vec![2, 3]);
    assert_eq!(m.as_f32().expect("f32"), &[0.0; 6]);
}

#[test]
fn a_matrix_product_is_the_dense_layer_of_its_transposed_right_operand() {
    // Rows of 11 (a group of eight and a tail), a leading batch axis, NaN made canonical.
    let a: Vec<f32> = (0..2 * 3 * 11).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut b: Vec<f32> = (0..11 * 5).map(|i| (i as f32 * 0.11).cos()).collect();
    b[7] = -f32::NAN;
    let m = crate::kernels::layers::matmul(&a, &[2, 3, 11], &b, &[11, 5]);
    assert_eq!(m.shape, vec![2, 3, 5]);
    let bt = crate::float::transposed(&b, 11, 5);
    let d = crate::kernels::layers::dense(&a, 6, 11, &bt, 5, None);
    let bits = |t: &Tensor| -> Vec<u32> {
        t.as_f32()
            .expect("f32")
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    assert_eq!(bits(&m), bits(&d));
    assert!(
        m.as_f32()
            .expect("f32")
            .iter()
            .any(|v| v.to_bits() == f32::NAN.to_bits())
    );
}

/// ULPs between two finite f32 of the same sign.
fn ulps(a: f32, b: f32) -> u32 {
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

#[test]
fn exp_is_within_two_ulp_of_the_true_value_over_the_normal_range() {
    use crate::float::exp;
    // Every 97th f32 bit pattern from -87.3 to 88.7 (normal results), both signs.
    let mut worst = (0u32, 0f32);
    for bits in (0u32..0x42B1_0000).step_by(97) {
        for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
            if !(-87.3..=88.7).contains(&x) {
                continue;
            }
            let truth = (x as f64).exp() as f32;
            let u = ulps(exp(x), truth);
            if u > worst.0 {
                worst = (u, x);
            }
        }
    }
    assert!(worst.0 <= 2, "{} ulp at x = {:e}", worst.0, worst.1);
}

#[test]
fn exp_saturates_and_passes_nan_through() {
    use crate::float::exp;
    assert_eq!(exp(0.0), 1.0);
    assert_eq!(exp(-0.0), 1.0);
    assert_eq!(exp(89.0), f32::INFINITY);
    assert_eq!(exp(1e30), f32::INFINITY);
    assert_eq!(exp(f32::INFINITY), f32::INFINITY);
    assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp(-200.0), 0.0);
    assert!(exp(f32::NAN).is_nan());
    // Subnormal results: within a few units of the smallest subnormal.
    for x in [-88.0f32, -95.0, -100.0, -103.0] {
        let truth = (x as f64).exp();
        let got = exp(x) as f64;
        assert!(
            (got - truth).abs() <= 2.0 * f32::from_bits(1) as f64,
            "{x}: {got:e} vs {truth:e}"
        );
    }
    // The largest finite results.
    let x = 88.72f32;
    assert!(ulps(exp(x), (x as f64).exp() as f32) <= 2);
}
