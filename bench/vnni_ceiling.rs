//! The 128-bit `vpdpbusd` ceiling of one core: how many multiply-accumulates per second a loop of
//! nothing but xmm `vpdpbusd` on N independent accumulators retires (16 u8 x i8 products each).
//! The engine's GEMM and depthwise kernels are measured against it (`bench/RESULTS.md`). Then the
//! same with zmm registers (64 products each), the width ONNX Runtime's int8 kernels use on such
//! a CPU and Cranelift cannot emit.
//!
//!     rustc -O bench/vnni_ceiling.rs -o target/vnni_ceiling && target/vnni_ceiling
//!
//! Needs a CPU with AVX512-VNNI (the check below says so otherwise).

use std::arch::x86_64::*;
use std::time::Instant;

#[target_feature(enable = "avx512vnni,avx512vl,avx512f")]
fn products<const N: usize>(steps: usize) -> i32 {
    let mut acc = [_mm_setzero_si128(); N];
    let u = _mm_set1_epi32(0x0102_0304);
    let w = _mm_set1_epi32(0x0101_0101);
    for _ in 0..steps {
        for a in acc.iter_mut() {
            *a = _mm_dpbusd_epi32(*a, u, w);
        }
    }
    let sum = acc.iter().fold(_mm_setzero_si128(), |s, a| _mm_add_epi32(s, *a));
    _mm_cvtsi128_si32(sum)
}

#[target_feature(enable = "avx512vnni,avx512f")]
fn wide_products<const N: usize>(steps: usize) -> i32 {
    let mut acc = [_mm512_setzero_si512(); N];
    let u = _mm512_set1_epi32(0x0102_0304);
    let w = _mm512_set1_epi32(0x0101_0101);
    for _ in 0..steps {
        for a in acc.iter_mut() {
            *a = _mm512_dpbusd_epi32(*a, u, w);
        }
    }
    let sum = acc.iter().fold(_mm512_setzero_si512(), |s, a| _mm512_add_epi32(s, *a));
    _mm512_reduce_add_epi32(sum)
}

fn measure<const N: usize>() {
    const INSTRUCTIONS: usize = 800_000_000;
    for (width, products_each) in [("xmm", 16.0), ("zmm", 64.0)] {
        let mut rates = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            // SAFETY: the CPU's features were checked in `main`.
            let sum = unsafe {
                if width == "xmm" {
                    products::<N>(INSTRUCTIONS / N)
                } else {
                    wide_products::<N>(INSTRUCTIONS / N)
                }
            };
            std::hint::black_box(sum);
            rates.push(INSTRUCTIONS as f64 * products_each / started.elapsed().as_secs_f64() / 1e9);
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "{width}, {N:2} accumulators: median {:.1} GMAC/s (min {:.1}, max {:.1})",
            rates[2], rates[0], rates[4]
        );
    }
}

fn main() {
    if !(is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")) {
        eprintln!("error: this CPU has no AVX512-VNNI");
        std::process::exit(1);
    }
    measure::<4>();
    measure::<8>();
    measure::<12>();
    measure::<16>();
}
