//! Elementary functions for activations, in `f32`, branch-free so that loops over them
//! vectorise: the error function and the GELU built on it.

/// `erf(x)` as the rational function `x·P(x²)/Q(x²)` on `[−4, 4]` (beyond, erf is ±1 in `f32`),
/// with the coefficients of Eigen's `generic_fast_erf_float` (also XLA's and TVM's): within a few
/// units in the last place of the true value (the test bounds it against an `f64` series).
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.9546e-3,
        -1.609_603_3e-2,
    ] {
        p = p * x2 + c;
    }
    let mut q = -1.456_607_2e-5_f32;
    for c in [-2.133_740_6e-4, -1.682_827e-3, -7.373_329e-3, -1.426_474e-2] {
        q = q * x2 + c;
    }
    x * p / q
}

/// `eˣ`, branch-free so that loops over it vectorise (the standard library's calls libm, one
/// element at a time): `x = k·ln 2 + r` with `|r| ≤ ½ln 2`, a degree-6 polynomial for `eʳ` and
/// `2ᵏ` put straight into the exponent bits. Coefficients and the two-part `ln 2` are Cephes's
/// `expf` (S. L. Moshier); within 2 units in the last place on `[−87, 88]` (tested), 0 below.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Adding and taking away 1.5·2²³ rounds to the nearest integer in any instruction set
    // (`floor` needs SSE4.1, and the baseline x86-64 target would call libm for it).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let k = t - ROUND;
    let r = x - k * 0.693_359_4 - k * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4_f32;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = p * r + c;
    }
    let e = p * r * r + r + 1.0;
    // `t`'s bits are those of 1.5·2²³ plus the integer `k` (its unit is the last place), so
    // `k + 127`, the exponent of `2ᵏ`, is an integer sum away: `k as i32` would be a saturating
    // conversion, which the compiler does one lane at a time.
    let biased = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    e * f32::from_bits(biased << 23)
}

/// `1/√2`.
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`, the standard normal density's factor.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// The exact GELU (Hendrycks and Gimpel 2016, PyTorch's `approximate='none'`): `x·Φ(x)`, with
/// `Φ(x) = ½(1 + erf(x/√2))` the standard normal distribution function.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    x * 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2))
}

/// `d gelu / dx = Φ(x) + x·φ(x)`, with `φ(x) = e^{−x²/2}/√(2π)` the standard normal density.
#[inline(always)]
pub fn gelu_grad(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * FRAC_1_SQRT_2)) + x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in `f64` by its Maclaurin series, `2/√π · Σ (−1)ⁿ x^{2n+1} / (n! (2n+1))`, summed to
    /// full precision (the terms are small enough for |x| ≤ 4 that cancellation stays below
    /// 1e-9), and 1 beyond (erf(4) = 1 − 1.5e-8).
    fn erf_f64(x: f64) -> f64 {
        if x.abs() > 4.0 {
            return x.signum();
        }
        let (mut term, mut sum) = (x, x);
        for n in 1..200 {
            term *= -x * x / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-18 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_within_two_ulp() {
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            assert!(
                ((got - want) / want).abs() <= 2.5e-7,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.0137;
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-1000.0), exp(-87.0));
        assert!(exp(-87.0) > 0.0 && exp(-87.0) < 2e-38);
    }

    #[test]
    fn erf_matches_the_series_within_a_few_ulp() {
        let mut worst = 0.0f64;
        for i in -5000..=5000 {
            let x = i as f32 * 1e-3;
            let (got, want) = (erf(x) as f64, erf_f64(x as f64));
            worst = worst.max((got - want).abs());
            // Relative near 0 too (erf is odd and linear there).
            assert!(
                (got - want).abs() <= 4e-7 * want.abs().max(1e-3),
                "erf({x}) = {got}, want {want}"
            );
        }
        assert!(worst < 4e-7, "{worst}");
        assert_eq!(erf(0.0), 0.0);
        assert_eq!(erf(-3.0), -erf(3.0));
        assert_eq!(erf(100.0), erf(4.0));
        assert!(erf(f32::NAN).is_nan());
    }

    /// Hand-worked: Φ(1) = 0.841344746, so gelu(1) = 0.841344746 and gelu(−1) = −0.158655254;
    /// gelu'(0) = ½; the derivative against its formula in `f64`, and the formula against
    /// central differences (where `erf_f64`'s series is exact enough for them).
    #[test]
    fn gelu_hand_worked_and_its_derivative() {
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-1.0) + 0.158_655_25).abs() < 1e-6);
        assert_eq!(gelu(0.0), 0.0);
        assert!((gelu_grad(0.0) - 0.5).abs() < 1e-7);
        let phi = |x: f64| 0.5 * (1.0 + erf_f64(x / 2f64.sqrt()));
        let grad64 =
            |x: f64| phi(x) + x * (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        for i in -80..=80 {
            let x = i as f64 * 0.1;
            let got = gelu_grad(x as f32) as f64;
            assert!(
                (got - grad64(x)).abs() < 1e-6,
                "gelu'({x}) = {got}, want {}",
                grad64(x)
            );
            assert!((gelu(x as f32) as f64 - x * phi(x)).abs() < 1e-6 * (1.0 + x.abs()));
            if x.abs() <= 3.0 {
                let h = 1e-4;
                let numeric = ((x + h) * phi(x + h) - (x - h) * phi(x - h)) / (2.0 * h);
                assert!((numeric - grad64(x)).abs() < 1e-7, "formula at {x}");
            }
        }
    }
}
