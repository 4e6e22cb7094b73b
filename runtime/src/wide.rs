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
