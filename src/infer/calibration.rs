//! Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks"): one number
//! `T > 0` divides every logit before the softmax, `p = softmax(z / T)`.
//!
//! `T > 1` softens overconfident probabilities, `T < 1` sharpens underconfident ones; the argmax,
//! hence the accuracy, never changes. `T` is fitted on held-out images (a validation split, never
//! the test set) by minimising the mean negative log-likelihood of the true classes.
//!
//! Layout: logits are `N×K` flat, row-major, as everywhere (see the crate's shape legend).

use crate::net::loss::log_sum_exp;

/// The search interval for `T`: wide enough for any sensible network (a fitted value at either
/// end means something else is wrong: a constant model, or labels unrelated to the logits).
pub const T_MIN: f64 = 0.05;
pub const T_MAX: f64 = 20.0;

/// Mean negative log-likelihood of `softmax(z / t)` for the true classes, in `f64`.
///
/// Shapes: logits `N×K`, labels `N`.
pub fn nll(logits: &[f32], labels: &[usize], k: usize, t: f64) -> f64 {
    debug_assert_eq!(logits.len(), labels.len() * k);
    let mut scaled = vec![0f32; k];
    let mut total = 0f64;
    for (z, &y) in logits.chunks_exact(k).zip(labels) {
        for (s, &v) in scaled.iter_mut().zip(z) {
            *s = (v as f64 / t) as f32;
        }
        total += (log_sum_exp(&scaled) - scaled[y]) as f64;
    }
    total / labels.len().max(1) as f64
}

/// The temperature in `[T_MIN, T_MAX]` that minimises [`nll`].
///
/// With `β = 1/T`, the NLL is `mean(log Σ_k exp(β z_k) − β z_y)`: a log-sum-exp of functions
/// linear in `β` minus a linear term, hence convex in `β`. A convex function of `β` is unimodal
/// in any monotone reparametrisation, so a golden-section search on `log T` finds the minimum;
/// searching in `log T` spends its steps evenly on ratios (0.5 is as far from 1 as 2 is).
///
/// Shapes: logits `N×K`, labels `N`.
pub fn fit_temperature(logits: &[f32], labels: &[usize], k: usize) -> f64 {
    let f = |log_t: f64| nll(logits, labels, k, log_t.exp());
    let phi = (5f64.sqrt() - 1.0) / 2.0; // 0.618…, the golden ratio's inverse
    let (mut a, mut b) = (T_MIN.ln(), T_MAX.ln());
    let (mut c, mut d) = (b - phi * (b - a), a + phi * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    // The interval shrinks by 0.618 per step: 40 steps take 6 (its width in log T) to 2e-8.
    for _ in 0..40 {
        if fc <= fd {
            (b, d, fd) = (d, c, fc);
            c = b - phi * (b - a);
            fc = f(c);
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + phi * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}

/// `x` as the `f64` that prints as `x` does (1.37, not 1.3700000047683716), for JSON output.
pub fn readable(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// Divides every logit by `t` in place.
pub fn scale(logits: &mut [f32], t: f32) {
    if t != 1.0 {
        logits.iter_mut().for_each(|z| *z /= t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::loss::softmax;
    use crate::rng::Rng;

    /// Logits `N×K` of spread `scale`, and labels drawn from `softmax(z / t0)`: data whose best
    /// temperature is `t0` (up to sampling noise, which shrinks as 1/√N).
    fn synthetic(n: usize, k: usize, t0: f32, seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut rng = Rng::new(seed);
        let logits: Vec<f32> = (0..n * k).map(|_| 4.0 * (rng.uniform() - 0.5)).collect();
        let mut p = vec![0f32; k];
        let labels = logits
            .chunks(k)
            .map(|z| {
                let scaled: Vec<f32> = z.iter().map(|v| v / t0).collect();
                softmax(&scaled, k, &mut p);
                let (u, mut acc) = (rng.uniform(), 0.0);
                p.iter()
                    .position(|&q| {
                        acc += q;
                        u < acc
                    })
                    .unwrap_or(k - 1)
            })
            .collect();
        (logits, labels)
    }

    #[test]
    fn fitting_recovers_a_known_temperature() {
        // 20,000 images of 10 classes: the fitted T lands within 5% of the true one whether the
        // logits are overconfident (T0 > 1), underconfident (T0 < 1) or already right.
        for (t0, seed) in [(2.5f32, 1), (0.4, 2), (1.0, 3)] {
            let (logits, labels) = synthetic(20_000, 10, t0, seed);
            let t = fit_temperature(&logits, &labels, 10);
            assert!(
                (t / t0 as f64 - 1.0).abs() < 0.05,
                "fitted T {t:.4}, true T {t0}"
            );
            // And the fit is a minimum: nudging T either way costs NLL.
            let best = nll(&logits, &labels, 10, t);
            assert!(best <= nll(&logits, &labels, 10, t * 1.05));
            assert!(best <= nll(&logits, &labels, 10, t / 1.05));
        }
    }

    /// Hand-worked: two classes, logits (0, ln 3) and label 1: at T = 1 the NLL is −ln(3/4);
    /// at T = 0.5 the logits double, p = 9/10, NLL −ln(0.9).
    #[test]
    fn nll_hand_worked() {
        let z = [0.0, 3f32.ln()];
        assert!((nll(&z, &[1], 2, 1.0) - 0.287_682).abs() < 1e-6);
        assert!((nll(&z, &[1], 2, 0.5) - 0.105_361).abs() < 1e-6);
    }

    #[test]
    fn fitting_stays_in_range_when_every_prediction_is_right() {
        // Always right: the NLL keeps falling as T shrinks, so the fit stops at the bound.
        let logits = [3.0, 0.0, 0.0, 3.0];
        let t = fit_temperature(&logits, &[0, 1], 2);
        assert!((t - T_MIN).abs() < 1e-3, "{t}");
    }
}
