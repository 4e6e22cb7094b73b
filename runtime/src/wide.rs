//! Loops compiled for the widest vectors the CPU has: the crates are built for baseline x86-64
//! (SSE2), so a hot loop that vectorizes gets AVX-512 or AVX2 only through a function compiled
//! with that target feature and chosen at run time.

/// Calls `f`, compiled with AVX-512F or AVX2 when the CPU has it (else as built). `f` is inlined
/// into the caller that has the feature, with whatever it inlines itself, so its loops use the
/// wider vectors; what it computes is the same on every path (the features change the
/// instructions, never the IEEE operations or their order).
#[inline(always)]
pub fn widest<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            return unsafe { avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use crate::float::{Activation, add_bias_then};

    /// Values with every case a vector min/max or an addition could treat differently from the
    /// scalar code: NaN, signed zeros, infinities, the bounds themselves, a length with a tail.
    fn awkward() -> Vec<f32> {
        let mut v: Vec<f32> = (0..1003).map(|i| (i as f32 - 500.0) * 0.0173).collect();
        for (i, x) in [
            f32::NAN,
            -0.0,
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            6.0,
            -6.0,
        ]
        .into_iter()
        .enumerate()
        {
            v[i * 131] = x;
        }
        v
    }

    #[test]
    fn activations_in_wide_vectors_are_the_scalar_ones_bit_for_bit() {
        let activations = [
            Activation::Relu,
            Activation::Clip(0.0, 6.0),
            Activation::Clip(-1.5, 2.25),
            Activation::HardSigmoid(0.2, 0.5),
            Activation::HardSwish,
        ];
        for f in activations {
            for bias in [None, Some(0.75), Some(-0.0)] {
                let mut got = awkward();
                match bias {
                    Some(b) => add_bias_then(&mut got, b, Some(f)),
                    None => f.apply_to(&mut got),
                }
                let want: Vec<f32> = awkward()
                    .into_iter()
                    .map(|v| f.apply(bias.map_or(v, |b| v + b)))
                    .collect();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{f:?} with bias {bias:?}");
            }
        }
    }
}
