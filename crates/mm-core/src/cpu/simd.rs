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

/// `exp(x)` for `x ≤ 88`, relative error about 2e-7 (Cephes' `expf` polynomial, with a
/// branch-free range reduction that vectorises). Inputs below -87 give about 1.6e-38.
///
/// The polynomial is evaluated with fused multiply-adds ([`f32::mul_add`]): one instruction
/// each in the AVX-512 and AVX2+FMA versions of [`dispatch`]ed kernels, a library call in the
/// baseline version, which only x86 CPUs without FMA (made before 2013) run.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let (t, r) = reduction::split(x);
    let mut p = 1.987_569_1e-4_f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    reduction::times_power((p * r).mul_add(r, r + 1.0), t)
}

/// The range reduction of [`exp`] and [`exp_bf16`]: `x = n · ln 2 + r`, `n` the nearest
/// integer to `x · log₂e` (`x · log₂e + ROUND` rounds it), `ln 2` in two parts.
pub(crate) mod reduction {
    pub const LOG2E: f32 = std::f32::consts::LOG2_E;
    pub const ROUND: f32 = 12_582_912.0; // 1.5 · 2²³
    pub const LN2_HI: f32 = 0.693_359_4;
    pub const LN2_LO: f32 = -2.121_944_4e-4;
    /// `exp(r)` for `|r| ≤ ln 2 / 2` as `1 + r(1 + r(C[3] + r(C[2] + r(C[1] + r·C[0]))))`
    /// (Taylor's coefficients: 2.4e-6 at the ends).
    pub const EXP_BF16: [f32; 4] = [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5];

    /// `(n + ROUND, r)` for `x` clamped to -87 and above.
    #[inline(always)]
    pub fn split(x: f32) -> (f32, f32) {
        let x = if x < -87.0 { -87.0 } else { x };
        let t = x.mul_add(LOG2E, ROUND);
        let n = t - ROUND;
        (t, n.mul_add(-LN2_LO, n.mul_add(-LN2_HI, x)))
    }

    /// `y · 2ⁿ` for `t = n + ROUND` ([`split`]'s).
    #[inline(always)]
    pub fn times_power(y: f32, t: f32) -> f32 {
        let exponent = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
        y * f32::from_bits(((exponent + 127) << 23) as u32)
    }
}

/// `exp(x)` to 4e-6 relative error for `x ≤ 0` (inputs below -87 give about 1.6e-38),
/// for values that are rounded to bf16 next (which keeps 2⁻⁹): [`exp`]'s range reduction
/// with a polynomial of degree 5 instead of 7. Bit for bit what attention's AVX512-BF16
/// kernel computes.
#[inline(always)]
pub(crate) fn exp_bf16(x: f32) -> f32 {
    use reduction::*;
    let (t, r) = split(x);
    let mut p = EXP_BF16[0];
    for c in &EXP_BF16[1..] {
        p = p.mul_add(r, *c);
    }
    times_power(p.mul_add(r, 1.0).mul_add(r, 1.0), t)
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_is_accurate() {
        let mut worst = 0.0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = ((super::exp(x) - x.exp()) / x.exp()).abs();
            worst = worst.max(rel);
            x += 0.001_7;
        }
        assert!(worst < 5e-7, "{worst}");
        assert!(super::exp(-1e30) < 2e-38);
    }

    #[test]
    fn exp_bf16_is_accurate_enough() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let want = f64::from(x).exp();
            worst = worst.max(((f64::from(super::exp_bf16(x)) - want) / want).abs());
            x += 0.000_37;
        }
        assert!(worst < 4e-6, "{worst}");
        assert!(super::exp_bf16(-1e30) < 2e-38);
    }
}
