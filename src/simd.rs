//! Which vector instructions this build uses on this CPU, and [`multiversioned`], which
//! compiles a plain loop once per instruction set (AVX-512, AVX2 + FMA, the x86-64 baseline) and
//! runs the best one the CPU has. The build keeps the baseline target, so the binary runs
//! everywhere; a build without the `avx512` feature stops at AVX2 + FMA.
//!
//! Shared by the model's element-wise maths (`models::vector_math`) and image resizing
//! (`imagery::resample`): plain Rust the compiler vectorises, not intrinsics.

use std::sync::OnceLock;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    Avx512,
    Avx2Fma,
    Baseline,
}

/// The vector instruction set this build uses on this CPU: `AVX-512`, `AVX2+FMA` or
/// `baseline` (the same choice the `gemm` crate makes for the matrix products), for reports.
pub fn instruction_set() -> &'static str {
    match isa() {
        Isa::Avx512 => "AVX-512",
        Isa::Avx2Fma => "AVX2+FMA",
        Isa::Baseline => "baseline",
    }
}

pub(crate) fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2Fma;
            }
        }
        Isa::Baseline
    })
}

/// Defines `pub fn $name` calling `$plain` (an `#[inline(always)]` function) compiled for the
/// best instruction set the CPU has: the plain body is inlined into each `#[target_feature]`
/// copy, where the compiler vectorises it for that set.
macro_rules! multiversioned_impl {
    ($(#[$doc:meta])* fn $name:ident $(<$g:ident: $bound:path>)? ($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $plain:ident) => {
        $(#[$doc])*
        pub fn $name $(<$g: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512 $(<$g: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                    $plain($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2 $(<$g: $bound>)? ($($arg: $ty),*) $(-> $ret)? {
                    $plain($($arg),*)
                }
                match $crate::simd::isa() {
                    // SAFETY: `isa` saw the CPU report these features.
                    $crate::simd::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::simd::Isa::Avx2Fma => return unsafe { avx2($($arg),*) },
                    $crate::simd::Isa::Baseline => {}
                }
            }
            $plain($($arg),*)
        }
    };
}

pub(crate) use multiversioned_impl as multiversioned;

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn reports_name_the_instruction_set_this_build_uses_here() {
        // Without the `avx512` feature an AVX-512 CPU runs (and reports) the AVX2 code.
        let expected = if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f")
        {
            "AVX-512"
        } else if std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            "AVX2+FMA"
        } else {
            "baseline"
        };
        assert_eq!(instruction_set(), expected);
    }
}
