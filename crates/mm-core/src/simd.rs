//! Run-time dispatch of vectorised kernels: a function body written once, compiled for
//! AVX-512 and for AVX2+FMA, and picked by the CPU it runs on (plain code elsewhere).

/// Defines `fn $name` whose body is compiled three times (AVX-512, AVX2+FMA, baseline); each
/// call runs the best version the CPU supports. Write the body as simple loops over
/// fixed-width chunks so the compiler vectorises it.
macro_rules! dispatch {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$doc])*
        pub fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn generic($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn v4($($arg: $ty),*) -> $ret { generic($($arg),*) }
                #[target_feature(enable = "avx2,fma,f16c")]
                fn v3($($arg: $ty),*) -> $ret { generic($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has the features the function is compiled for.
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
                {
                    // SAFETY: as above.
                    return unsafe { v3($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

pub(crate) use dispatch;
