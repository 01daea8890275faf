//! Float reductions that vectorise.
//!
//! `iter().sum::<f32>()` adds one value at a time in order: the compiler may not reorder float
//! additions, so the loop runs at one add per add-latency (about 4 cycles). These keep `LANES`
//! independent partial sums, which the compiler maps onto SIMD registers, and combine them in
//! a fixed order at the end: the result depends only on the input, never on the thread count.
//! Batch norm's statistics and the convolutions' bias gradients are such sums.
//! [`first_non_finite`] is the same idea for a search: no early exit inside a block.

/// Partial sums kept side by side; 16 fills one AVX-512 register or four SSE ones.
pub(crate) const LANES: usize = 16;

/// Adds the partial sums pairwise, then the tail.
pub(crate) fn combine(mut acc: [f32; LANES], tail: f32) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0] + tail
}

/// Σ x.
pub fn sum(x: &[f32]) -> f32 {
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    let mut acc = [0.0f32; LANES];
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    combine(acc, tail)
}

/// (Σ a, Σ a·b) in one pass. Shapes: `a` and `b` of equal length.
pub fn sum_and_dot(a: &[f32], b: &[f32]) -> (f32, f32) {
    sum_and_dot_map(a, b, |a, b| (a, b))
}

/// (Σ u, Σ u·v) over `(u, v) = f(a[i], b[i])`, in one pass and in [`sum_and_dot`]'s order, so
/// that values computed on the fly sum exactly as they would from a buffer holding them.
/// Shapes: `a` and `b` of equal length.
#[inline]
pub fn sum_and_dot_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> (f32, f32)) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (mut tail_sum, mut tail_dot) = (0.0f32, 0.0f32);
    for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        let (u, v) = f(x, y);
        tail_sum += u;
        tail_dot += u * v;
    }
    let (mut s, mut d) = ([0.0f32; LANES], [0.0f32; LANES]);
    for (xa, xb) in ca.zip(cb) {
        for i in 0..LANES {
            let (u, v) = f(xa[i], xb[i]);
            s[i] += u;
            d[i] += u * v;
        }
    }
    (combine(s, tail_sum), combine(d, tail_dot))
}

/// The index of the first NaN or infinity in `x`, if any.
///
/// `iter().position(..)` stops at each value to test it and runs one value per cycle or
/// slower; this takes the largest magnitude's bits over each block, which vectorises, and
/// searches a block only when it holds one (the magnitude of a NaN or an infinity is at least
/// the infinity's bits). A model's million weights are checked on every load.
pub fn first_non_finite(x: &[f32]) -> Option<usize> {
    const BLOCK: usize = 1024;
    const INF: u32 = 0x7f80_0000;
    x.chunks(BLOCK).enumerate().find_map(|(b, block)| {
        let top = block
            .iter()
            .fold(0, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
        (top >= INF).then(|| b * BLOCK + block.iter().position(|v| !v.is_finite()).expect("found"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| rng.normal() * 3.0 + 1.5).collect()
    }

    fn close(a: f32, b: f64, n: usize) {
        let tol = 1e-5 * (n as f64).max(1.0) * (b.abs().max(1.0));
        assert!((a as f64 - b).abs() <= tol, "{a} vs {b} (n = {n})");
    }

    #[test]
    fn first_non_finite_finds_the_first_bad_value() {
        assert_eq!(first_non_finite(&[]), None);
        for n in [1, 7, 1023, 1024, 1025, 5000] {
            let mut x = values(n, n as u64);
            x[0] = f32::MAX;
            x[n - 1] = -f32::MAX;
            assert_eq!(first_non_finite(&x), None, "n = {n}");
            for at in [0, n / 2, n - 1] {
                for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut y = x.clone();
                    y[at] = bad;
                    if at + 1 < n {
                        y[n - 1] = f32::NAN;
                    }
                    assert_eq!(first_non_finite(&y), Some(at), "n = {n}, at {at}, {bad}");
                }
            }
        }
    }

    /// Against f64 sums in plain order, on lengths around the lane width (tail only, exact
    /// multiples, both).
    #[test]
    fn reductions_match_plain_f64_sums() {
        for n in [0, 1, 7, 15, 16, 17, 31, 32, 33, 100, 1023, 4096] {
            let (a, b) = (values(n, n as u64), values(n, 99 + n as u64));
            close(sum(&a), a.iter().map(|&v| v as f64).sum(), n);
            let (s, d) = sum_and_dot(&a, &b);
            // Mapped on the fly, the same bits as from buffers holding the mapped values.
            let f = |x: f32, y: f32| (x * 0.5 - y, x + 1.0);
            let (u, v): (Vec<f32>, Vec<f32>) = a.iter().zip(&b).map(|(&x, &y)| f(x, y)).unzip();
            assert_eq!(sum_and_dot_map(&a, &b, f), sum_and_dot(&u, &v));
            close(s, a.iter().map(|&v| v as f64).sum(), n);
            close(
                d,
                a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum(),
                n,
            );
        }
    }

    /// Small integers sum exactly in any order.
    #[test]
    fn reductions_are_exact_on_integers() {
        let a: Vec<f32> = (0..37).map(|i| (i % 5) as f32 - 2.0).collect();
        let b: Vec<f32> = (0..37).map(|i| (i % 3) as f32).collect();
        let want_sum: f32 = a.iter().sum();
        let want_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert_eq!(sum(&a), want_sum);
        assert_eq!(sum_and_dot(&a, &b), (want_sum, want_dot));
    }
}
