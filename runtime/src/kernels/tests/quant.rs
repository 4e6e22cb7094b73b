//! The integer semantics: hand-computed cases, and property tests that every integer kernel is
//! within one unit of the float computation it stands for.

use super::pool;
use crate::kernels::layers::conv_output;
use crate::kernels::quant::{
    LayerOperands, add, avg_pool2d, concat, conv2d, conv2d_accumulators, dense, global_avg_pool,
};
use crate::quant::{Multiplier, Requant, dequantize, quantize, round_shift, stored_ints};
use proptest::prelude::*;
use qcc_dialects::ops::attrs::{Conv2dAttrs, Window};
use qcc_dialects::{ElemType, QuantParams, QuantType, Storage, Tensor, TensorData, TensorType};

fn qtype(shape: &[usize], storage: Storage, scale: f64, zp: i64) -> TensorType {
    TensorType::new(
        shape.to_vec(),
        ElemType::Quant(QuantType {
            storage,
            params: QuantParams::PerTensor {
                scale,
                zero_point: zp,
            },
        }),
    )
}

fn per_axis(shape: &[usize], scales: Vec<f64>) -> TensorType {
    let n = scales.len();
    TensorType::new(
        shape.to_vec(),
        ElemType::Quant(QuantType {
            storage: Storage::I8,
            params: QuantParams::PerAxis {
                axis: 0,
                scales,
                zero_points: vec![0; n],
            },
        }),
    )
}

fn u8s(shape: &[usize], v: Vec<u8>) -> Tensor {
    Tensor::new(shape.to_vec(), TensorData::U8(v)).expect("consistent")
}

fn i8s(shape: &[usize], v: Vec<i8>) -> Tensor {
    Tensor::new(shape.to_vec(), TensorData::I8(v)).expect("consistent")
}

#[test]
fn rounding_is_half_away_from_zero() {
    assert_eq!(
        [
            round_shift(5, 1),
            round_shift(-5, 1),
            round_shift(4, 1),
            round_shift(7, 2),
            round_shift(-6, 2)
        ],
        [3, -3, 2, 2, -2]
    );
    assert_eq!(round_shift(123, 0), 123);
    assert_eq!(round_shift(i64::MAX / 2, 63), 0);
}

#[test]
fn multipliers_by_hand() {
    assert_eq!(
        Multiplier::new(0.5),
        Multiplier {
            m0: 1 << 30,
            shift: 31
        }
    );
    assert_eq!(
        Multiplier::new(1.0),
        Multiplier {
            m0: 1 << 30,
            shift: 30
        }
    );
    let m = Multiplier::new(0.5);
    assert_eq!([m.apply(3), m.apply(-3), m.apply(4)], [2, -2, 2]);
    let third = Multiplier::new(1.0 / 3.0);
    assert!((third.value() - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(third.apply(3_000_000), 1_000_000);
    assert_eq!(Multiplier::new(1e-30).apply(1 << 30), 0);
}

#[test]
fn layer_requantization_rounds_ties_to_even_in_f32() {
    // S_x * S_w / S_y = 0.5 * 1.0 / 1.0: ties at every odd accumulator.
    let rq = Requant::from_types(
        &qtype(&[1], Storage::U8, 0.5, 0),
        &qtype(&[1], Storage::I8, 1.0, 0),
        &qtype(&[1], Storage::U8, 1.0, 10),
        1,
        None,
    )
    .expect("requant");
    let levels = [3, 5, -3, -5, 4].map(|acc| rq.unclamped(0, acc));
    assert_eq!(levels, [12, 12, 8, 8, 12]);
    // 2^24 + 1 is not an f32: it rounds to 2^24 (even) before the multiply.
    assert_eq!(rq.unclamped(0, (1 << 24) + 1), 10 + (1 << 23));
    assert_eq!((rq.one(0, -1000), rq.one(0, 1000)), (0, 255));
    // A ratio beyond f32 saturates to its largest value (never infinity, so 0 * scale is 0).
    assert_eq!(crate::quant::layer_scale(1e300), f32::MAX);
    assert_eq!(crate::quant::layer_scale(f64::NAN), 0.0);
}

#[test]
fn round_even_is_round_ties_even() {
    let ties = (-40..40).map(|i| i as f32 + 0.5);
    let edges = [
        4_194_303.5f32,
        -4_194_303.5,
        4_194_304.5,
        8_388_607.5,
        1e30,
        -0.0,
        0.49999997,
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let random = (0..100_000).map(|_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        f32::from_bits(state as u32)
    });
    for x in ties.chain(edges).chain(random).filter(|x| x.is_finite()) {
        assert_eq!(
            crate::quant::round_even(x),
            x.round_ties_even(),
            "{x:e} ({:08x})",
            x.to_bits()
        );
    }
}

#[test]
fn quantize_and_dequantize_by_hand() {
    let ty = qtype(&[4], Storage::U8, 0.5, 10);
    // 1.25 / 0.5 = 2.5 rounds to 3 and -0.25 / 0.5 to -1 (ties away from zero); -100 saturates
    // to 0 and 200 to 255.
    let q = quantize(&[1.25, -100.0, 200.0, -0.25], &[4], &ty).expect("quantizes");
    assert_eq!(stored_ints(&q), vec![13, 0, 255, 9]);
    assert_eq!(
        dequantize(&q, &ty)
            .expect("dequantizes")
            .as_f32()
            .expect("f32"),
        &[1.5, -5.0, 122.5, -0.5]
    );
}

#[test]
fn one_by_one_conv_by_hand() {
    // x = 0.5 * (q - 128) at two pixels; two output channels with weight scales 0.1 and 0.2.
    let x = u8s(&[1, 1, 1, 2], vec![130, 120]); // real 1.0, -4.0
    let w = i8s(&[2, 1, 1, 1], vec![10, -5]); // real 1.0, -1.0
    let b = Tensor::new(vec![2], TensorData::I32(vec![20, 0])).expect("bias"); // 20 * 0.05 = 1.0 on channel 0
    let (xt, wt, out) = (
        qtype(&[1, 1, 1, 2], Storage::U8, 0.5, 128),
        per_axis(&[2, 1, 1, 1], vec![0.1, 0.2]),
        qtype(&[1, 2, 1, 2], Storage::U8, 0.25, 100),
    );
    let ops = LayerOperands {
        x: (&x, &xt),
        w: (&w, &wt),
        bias: Some(&b),
        out: &out,
    };
    let g = Conv2dAttrs {
        window: Window {
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
        },
        groups: 1,
    };
    let rq = |clamp| Requant::from_types(&xt, &wt, &out, 2, clamp).expect("requant");
    let y = conv2d(&ops, &g, &rq(None)).expect("runs");
    // Channel 0: 1.0*x + 1.0 -> 2.0, -3.0 -> 100 + 8, 100 - 12. Channel 1: -1.0*x -> -1.0, 4.0 -> 96, 116.
    assert_eq!(stored_ints(&y), vec![108, 88, 96, 116]);
    let clamped = conv2d(&ops, &g, &rq(Some([100, 110]))).expect("runs");
    assert_eq!(stored_ints(&clamped), vec![108, 100, 100, 110]);
    // Per-channel upper bounds (channel_max) within the clamp: channel 0 at 105, channel 1 at 110.
    let channels = rq(Some([100, 110]))
        .with_channel_max(Some(vec![105, 110]))
        .expect("two bounds");
    let y = conv2d(&ops, &g, &channels).expect("runs");
    assert_eq!(stored_ints(&y), vec![105, 100, 100, 110]);
    assert_eq!(channels.uniform_bounds(), None);
    assert_eq!(channels.channel_bounds(0), (100, 105));
    assert!(rq(None).with_channel_max(Some(vec![1])).is_err());
}

/// Accumulators at the extremes of u8 x i8 over a K long enough to need several exact f32 chunks
/// (2^24 / (255 * 128) = 514 products each) equal the integer sum computed one product at a time.
#[test]
fn long_accumulations_are_exact() {
    let (k, o) = (1500, 3);
    // Odd products that mostly add up: the sums pass 2^24 and need every low bit.
    let x = u8s(&[1, k, 1, 1], (0..k).map(|i| 255 - (i % 3) as u8).collect());
    let w = i8s(
        &[o, k, 1, 1],
        (0..o * k)
            .map(|i| {
                if i % 11 == i / k {
                    -128
                } else {
                    127 - (i % 2) as i8
                }
            })
            .collect(),
    );
    let xt = qtype(&[1, k, 1, 1], Storage::U8, 1.0, 0);
    let g = Conv2dAttrs {
        window: Window {
            strides: [1, 1],
            pads: [0; 4],
            dilations: [1, 1],
        },
        groups: 1,
    };
    let (acc, shape) = conv2d_accumulators((&x, &xt), &w, &g).expect("fits i32");
    assert_eq!(shape, vec![1, o, 1, 1]);
    let (xv, wv) = (stored_ints(&x), stored_ints(&w));
    let want: Vec<i32> = (0..o)
        .map(|c| (0..k).map(|i| xv[i] * wv[c * k + i]).sum())
        .collect();
    assert_eq!(acc, want);
    // A sum that could leave i32 is refused rather than wrapped.
    let k = 70_000;
    let x = u8s(&[1, k, 1, 1], vec![255; k]);
    let w = i8s(&[1, k, 1, 1], vec![-128; k]);
    let xt = qtype(&[1, k, 1, 1], Storage::U8, 1.0, 0);
    let err = conv2d_accumulators((&x, &xt), &w, &g).expect_err("may overflow");
    assert!(err.contains("i32 accumulators"), "{err}");
}

#[test]
fn add_with_two_scales_by_hand() {
    let (a, b) = (u8s(&[2], vec![10, 0]), u8s(&[2], vec![5, 3]));
    let (at, bt) = (
        qtype(&[2], Storage::U8, 0.1, 0),
        qtype(&[2], Storage::U8, 0.2, 0),
    );
    let out = qtype(&[2], Storage::U8, 0.05, 10);
    // 1.0 + 1.0 = 2.0 -> 10 + 40; 0.0 + 0.6 -> 10 + 12.
    assert_eq!(
        stored_ints(&add((&a, &at), (&b, &bt), &out, &[2], None).expect("adds")),
        vec![50, 22]
    );
}

#[test]
fn average_pool_rounds_half_away_from_zero() {
    let x = u8s(&[1, 1, 1, 2], vec![1, 2]);
    let t = qtype(&[1, 1, 1, 2], Storage::U8, 1.0, 0);
    let out = qtype(&[1, 1, 1, 1], Storage::U8, 1.0, 0);
    let g = pool([1, 2], [1, 1], [0; 4], [1, 1], [1, 1]);
    assert_eq!(
        stored_ints(&avg_pool2d((&x, &t), &out, &g).expect("pools")),
        vec![2]
    );
    assert_eq!(
        stored_ints(&global_avg_pool((&x, &t), &out).expect("pools")),
        vec![2]
    );
}

/// Float model of requantization: real value / output scale + zero point, rounded, clamped.
fn simulate(real: f64, scale: f64, zp: i64) -> i64 {
    ((real / scale).round() as i64 + zp).clamp(0, 255)
}

fn within_one(got: &[i32], want: &[i64]) -> Result<(), TestCaseError> {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        prop_assert!(
            (*g as i64 - w).abs() <= 1,
            "element {i}: integer {g}, float-simulated {w}"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn conv_matches_float_simulation(
        c in 1usize..4, og in 1usize..3, groups in 1usize..3, h in 1usize..6, w in 1usize..6, k in 1usize..4,
        stride in 1usize..3, pad in 0usize..2, seed in any::<u64>(),
        sx in 0.001f64..0.1, zx in 0i64..256, sy in 0.001f64..0.5, zy in 0i64..256,
    ) {
        let (cin, o) = (c * groups, og * groups);
        prop_assume!(h + 2 * pad >= k && w + 2 * pad >= k);
        let mut state = seed;
        let mut next = |m: u64| { state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (state >> 33) % m };
        let xs: Vec<u8> = (0..cin * h * w).map(|_| next(256) as u8).collect();
        let ws: Vec<i8> = (0..o * c * k * k).map(|_| (next(255) as i64 - 127) as i8).collect();
        let scales: Vec<f64> = (0..o).map(|_| 0.001 + next(1000) as f64 * 1e-5).collect();
        let bias: Vec<i32> = (0..o).map(|_| next(2001) as i32 - 1000).collect();
        let xt = qtype(&[1, cin, h, w], Storage::U8, sx, zx);
        let wt = per_axis(&[o, c, k, k], scales.clone());
        let g = Conv2dAttrs { window: Window { strides: [stride, stride], pads: [pad; 4], dilations: [1, 1] }, groups };
        let (oh, ow) = conv_output(&g, h, w, k, k);
        let out = qtype(&[1, o, oh, ow], Storage::U8, sy, zy);
        let (x, wq, b) = (u8s(&[1, cin, h, w], xs.clone()), i8s(&[o, c, k, k], ws.clone()), Tensor::new(vec![o], TensorData::I32(bias.clone())).unwrap());
        let rq = Requant::from_types(&xt, &wt, &out, wt.shape[0], None).unwrap();
        let y = conv2d(&LayerOperands { x: (&x, &xt), w: (&wq, &wt), bias: Some(&b), out: &out }, &g, &rq).unwrap();
        let mut want = Vec::new();
        for oc in 0..o {
            let grp = oc / og;
            for yy in 0..oh {
                for xx in 0..ow {
                    let mut real = bias[oc] as f64 * sx * scales[oc];
                    for ci in 0..c {
                        for ky in 0..k {
                            for kx in 0..k {
                                let (iy, ix) = ((yy * stride + ky) as isize - pad as isize, (xx * stride + kx) as isize - pad as isize);
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    let xv = (xs[((grp * c + ci) * h + iy as usize) * w + ix as usize] as i64 - zx) as f64 * sx;
                                    real += xv * ws[((oc * c + ci) * k + ky) * k + kx] as f64 * scales[oc];
                                }
                            }
                        }
                    }
                    want.push(simulate(real, sy, zy));
                }
            }
        }
        within_one(&stored_ints(&y), &want)?;
    }

    #[test]
    fn dense_matches_float_simulation(n in 1usize..3, k in 1usize..20, m in 1usize..6, seed in any::<u64>(), sx in 0.001f64..0.1, zx in 0i64..256, sy in 0.01f64..1.0, zy in 0i64..256) {
        let mut state = seed;
        let mut next = |r: u64| { state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (state >> 33) % r };
        let xs: Vec<u8> = (0..n * k).map(|_| next(256) as u8).collect();
        let ws: Vec<i8> = (0..m * k).map(|_| (next(255) as i64 - 127) as i8).collect();
        let sw = 0.002 + next(100) as f64 * 1e-4;
        let (x, w) = (u8s(&[n, k], xs.clone()), i8s(&[m, k], ws.clone()));
        let (xt, wt, out) = (qtype(&[n, k], Storage::U8, sx, zx), qtype(&[m, k], Storage::I8, sw, 0), qtype(&[n, m], Storage::U8, sy, zy));
        let rq = Requant::from_types(&xt, &wt, &out, wt.shape[0], None).unwrap();
        let y = dense(&LayerOperands { x: (&x, &xt), w: (&w, &wt), bias: None, out: &out }, &rq).unwrap();
        let want: Vec<i64> = (0..n * m)
            .map(|i| {
                let (r, c) = (i / m, i % m);
                let real: f64 = (0..k).map(|j| (xs[r * k + j] as i64 - zx) as f64 * sx * ws[c * k + j] as f64 * sw).sum();
                simulate(real, sy, zy)
            })
            .collect();
        within_one(&stored_ints(&y), &want)?;
    }

    #[test]
    fn add_matches_float_simulation(vals in proptest::collection::vec((any::<u8>(), any::<u8>()), 1..40), sa in 0.001f64..1.0, za in 0i64..256, sb in 0.001f64..1.0, zb in 0i64..256, sy in 0.001f64..2.0, zy in 0i64..256) {
        let n = vals.len();
        let (a, b) = (u8s(&[n], vals.iter().map(|v| v.0).collect()), u8s(&[n], vals.iter().map(|v| v.1).collect()));
        let (at, bt, out) = (qtype(&[n], Storage::U8, sa, za), qtype(&[n], Storage::U8, sb, zb), qtype(&[n], Storage::U8, sy, zy));
        let y = add((&a, &at), (&b, &bt), &out, &[n], None).unwrap();
        let want: Vec<i64> = vals.iter().map(|(p, q)| simulate((*p as i64 - za) as f64 * sa + (*q as i64 - zb) as f64 * sb, sy, zy)).collect();
        within_one(&stored_ints(&y), &want)?;
    }

    #[test]
    fn pooling_and_concat_match_float_simulation(vals in proptest::collection::vec(any::<u8>(), 16), sx in 0.001f64..1.0, zx in 0i64..256, sy in 0.001f64..1.0, zy in 0i64..256) {
        let x = u8s(&[1, 1, 4, 4], vals.clone());
        let xt = qtype(&[1, 1, 4, 4], Storage::U8, sx, zx);
        let out = qtype(&[1, 1, 2, 2], Storage::U8, sy, zy);
        let g = pool([3, 3], [2, 2], [1, 1, 0, 0], [1, 1], [2, 2]);
        let y = avg_pool2d((&x, &xt), &out, &g).unwrap();
        let mut want = Vec::new();
        for oy in 0..2usize {
            for ox in 0..2usize {
                let (mut s, mut cnt) = (0f64, 0);
                for ky in 0..3usize {
                    for kx in 0..3usize {
                        let (iy, ix) = ((oy * 2 + ky) as isize - 1, (ox * 2 + kx) as isize - 1);
                        if iy >= 0 && ix >= 0 && iy < 4 && ix < 4 {
                            s += (vals[iy as usize * 4 + ix as usize] as i64 - zx) as f64 * sx;
                            cnt += 1;
                        }
                    }
                }
                want.push(simulate(s / cnt as f64, sy, zy));
            }
        }
        within_one(&stored_ints(&y), &want)?;
        let ct = qtype(&[1, 2, 4, 4], Storage::U8, sy, zy);
        let c = concat(&[(&x, &xt), (&x, &xt)], &ct, 1).unwrap();
        let want: Vec<i64> = vals.iter().chain(&vals).map(|v| simulate((*v as i64 - zx) as f64 * sx, sy, zy)).collect();
        within_one(&stored_ints(&c), &want)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn channel_levels_agree_with_the_requantization(
        acc in -(1i64 << 40)..(1i64 << 40), small in -100_000i64..100_000, use_small in any::<bool>(),
        scale in 1e-6f64..2.0, zy in 0i64..256, top in 0i64..256,
    ) {
        let acc = if use_small { small } else { acc };
        let xt = qtype(&[1, 1, 1, 1], Storage::U8, 1.0, 0);
        let wt = per_axis(&[1, 1, 1, 1], vec![scale]);
        let out = qtype(&[1, 1, 1, 1], Storage::U8, 1.0, zy);
        let rq = Requant::from_types(&xt, &wt, &out, 1, Some([0, 255])).unwrap()
            .with_channel_max(Some(vec![top])).unwrap();
        let (level, clamped) = rq.channel(0).offsets(acc as f64);
        prop_assert_eq!(clamped as i64 + zy, rq.one(0, acc));
        let unclamped = rq.unclamped(0, acc) - zy;
        if unclamped.abs() < 1 << 22 {
            prop_assert_eq!(level as i64, unclamped);
        } else {
            prop_assert!(level.abs() == (1 << 22) as f32);
        }
    }
}
