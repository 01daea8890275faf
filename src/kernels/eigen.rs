//! Eigen-decomposition of a small symmetric matrix by the cyclic Jacobi method (Golub and Van
//! Loan, *Matrix Computations*, 4th ed., §8.5): plane rotations zero the off-diagonal entries one
//! pair at a time until they are negligible. Slow for large matrices, exact to rounding and
//! simple for the 12×12 patch covariances it serves (the whitening layer).
//!
//! Layout: `a` is `n×n` row-major (only symmetry is assumed, not checked); the result's vectors
//! are the columns of an `n×n` row-major matrix, `vectors[i·n + k]` = component `i` of vector `k`.

/// Eigenvalues in descending order and their unit eigenvectors (columns), of the symmetric
/// `n×n` matrix `a`.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), n * n, "symmetric_eigen: a is not n×n");
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum::<f64>()
            .sqrt();
        if off <= 1e-15 * scale.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation (c, s) that zeroes a[p][q] (Golub and Van Loan, Algorithm 8.5.1).
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&k| a[k * n + k]).collect();
    let mut vectors = vec![0.0; n * n];
    for (new, &old) in order.iter().enumerate() {
        for i in 0..n {
            vectors[i * n + new] = v[i * n + old];
        }
    }
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Hand-worked: [[2, 1], [1, 2]] has eigenvalues 3 and 1, vectors (1, 1)/√2 and (1, −1)/√2.
    #[test]
    fn two_by_two_hand_worked() {
        let (values, vectors) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((values[0] - 3.0).abs() < 1e-14 && (values[1] - 1.0).abs() < 1e-14);
        let h = 0.5f64.sqrt();
        assert!((vectors[0].abs() - h).abs() < 1e-14 && (vectors[2].abs() - h).abs() < 1e-14);
        assert!((vectors[0] * vectors[2]) > 0.0, "first vector along (1, 1)");
        assert!((vectors[1] * vectors[3]) < 0.0, "second along (1, −1)");
    }

    /// A random covariance-like matrix (`BᵀB`, 12×12, and an awkward 7×7 with a repeated
    /// eigenvalue): `A·v = λ·v` for every pair, the vectors orthonormal, values descending.
    #[test]
    fn random_symmetric_matrices_are_reconstructed() {
        let mut rng = Rng::new(4);
        for n in [12, 7, 1] {
            let b: Vec<f64> = (0..n * n).map(|_| rng.normal() as f64).collect();
            let mut a = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    a[i * n + j] = (0..n).map(|k| b[k * n + i] * b[k * n + j]).sum();
                }
            }
            if n == 7 {
                // Eigenvalue 0 twice over: two zero rows and columns.
                for k in 0..n {
                    for r in [2, 5] {
                        a[r * n + k] = 0.0;
                        a[k * n + r] = 0.0;
                    }
                }
            }
            let (values, v) = symmetric_eigen(&a, n);
            assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
            for k in 0..n {
                for i in 0..n {
                    let av: f64 = (0..n).map(|j| a[i * n + j] * v[j * n + k]).sum();
                    assert!((av - values[k] * v[i * n + k]).abs() < 1e-9, "n={n} k={k}");
                }
                for l in 0..n {
                    let dot: f64 = (0..n).map(|i| v[i * n + k] * v[i * n + l]).sum();
                    let want = if k == l { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-12, "n={n}: v{k}·v{l} = {dot}");
                }
            }
        }
    }
}
