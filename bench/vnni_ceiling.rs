//! The 128-bit `vpdpbusd` ceiling of one core: how many multiply-accumulates per second a loop of
//! nothing but xmm `vpdpbusd` on N independent accumulators retires (16 u8 x i8 products each).
//! The engine's GEMM and depthwise kernels are measured against it (`bench/RESULTS.md`).
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

fn measure<const N: usize>() {
    const INSTRUCTIONS: usize = 800_000_000;
    let mut rates = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        // SAFETY: the CPU's features were checked in `main`.
        let sum = unsafe { products::<N>(INSTRUCTIONS / N) };
        std::hint::black_box(sum);
        rates.push(INSTRUCTIONS as f64 * 16.0 / started.elapsed().as_secs_f64() / 1e9);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "{N:2} accumulators: median {:.1} GMAC/s (min {:.1}, max {:.1})",
        rates[2], rates[0], rates[4]
    );
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
