//! The softmax head and its losses.
//!
//! Softmax turns the `K` logits of an image into probabilities: `p_k = exp(z_k − m) / Σ_j
//! exp(z_j − m)` with `m = max_j z_j` (the log-sum-exp trick: no overflow, exact same value).
//!
//! - Cross-entropy with targets `t` (one-hot, or smoothed: `t = (1−ε)·onehot + ε/K`):
//!   `L = −Σ_k t_k log p_k`, computed as `−Σ_k t_k (z_k − m − log Σ_j exp(z_j − m))`, finite even
//!   for logits of ±1000. Its gradient with respect to the logits is simply `p − t`.
//! - Squared error on the softmax output, `L = Σ_k (p_k − t_k)²`, kept to show why cross-entropy
//!   trains better: its gradient passes through the softmax Jacobian and vanishes when the
//!   network is confidently wrong.
//!
//! Losses and gradients are averaged over the batch.

use crate::tensor::{Tensor, data, data_mut, reuse};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LossKind {
    CrossEntropy,
    Mse,
}

/// Writes the softmax of each row of `logits` into `probs`.
///
/// Shapes: logits `N×K` → probs `N×K`.
pub fn softmax(logits: &[f32], k: usize, probs: &mut [f32]) {
    for (z, p) in logits.chunks(k).zip(probs.chunks_mut(k)) {
        let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for (p, &z) in p.iter_mut().zip(z) {
            *p = (z - m).exp();
            sum += *p;
        }
        p.iter_mut().for_each(|p| *p /= sum);
    }
}

/// `log Σ_j exp(z_j)` of one row, stably.
pub fn log_sum_exp(z: &[f32]) -> f32 {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m + z.iter().map(|&v| (v - m).exp()).sum::<f32>().ln()
}

/// Softmax head with a selectable loss; owns its buffers (probabilities and the logit gradient).
pub struct Loss {
    pub kind: LossKind,
    pub label_smoothing: f32,
    probs: Tensor,
    dlogits: Tensor,
}

impl Loss {
    pub fn new(kind: LossKind, label_smoothing: f32) -> Self {
        Loss {
            kind,
            label_smoothing,
            probs: Tensor::zeros(vec![0]),
            dlogits: Tensor::zeros(vec![0]),
        }
    }

    /// Mean loss over the batch; computes and keeps the probabilities and the logit gradient.
    ///
    /// Shapes: logits `N×K`, labels `N` (each `< K`).
    pub fn forward(&mut self, logits: &Tensor, labels: &[usize]) -> f32 {
        let (n, k) = (logits.shape()[0], logits.shape()[1]);
        assert_eq!(
            labels.len(),
            n,
            "batch size mismatch between logits ({n}) and labels ({})",
            labels.len()
        );
        reuse(&mut self.probs, &[n, k]);
        reuse(&mut self.dlogits, &[n, k]);
        let z = data(logits);
        softmax(z, k, data_mut(&mut self.probs));
        let probs = data(&self.probs);
        let eps = self.label_smoothing;
        // Target probability of class `c` for an image labelled `label`.
        let target = |c: usize, label: usize| {
            if c == label {
                1.0 - eps + eps / k as f32
            } else {
                eps / k as f32
            }
        };
        let mut total = 0.0f64;
        for (i, &label) in labels.iter().enumerate() {
            debug_assert!(label < k);
            let (zi, pi) = (&z[i * k..(i + 1) * k], &probs[i * k..(i + 1) * k]);
            let di = &mut data_mut(&mut self.dlogits)[i * k..(i + 1) * k];
            match self.kind {
                LossKind::CrossEntropy => {
                    let lse = log_sum_exp(zi);
                    for c in 0..k {
                        let t = target(c, label);
                        if t > 0.0 {
                            total -= (t * (zi[c] - lse)) as f64;
                        }
                        di[c] = (pi[c] - t) / n as f32;
                    }
                }
                LossKind::Mse => {
                    // g_c = dL/dp_c = 2(p_c − t_c); through the softmax Jacobian:
                    // dL/dz_j = p_j (g_j − Σ_c g_c p_c).
                    let mut dot = 0.0;
                    for c in 0..k {
                        let g = 2.0 * (pi[c] - target(c, label));
                        total += ((pi[c] - target(c, label)) as f64).powi(2);
                        dot += g * pi[c];
                        di[c] = g;
                    }
                    for c in 0..k {
                        di[c] = pi[c] * (di[c] - dot) / n as f32;
                    }
                }
            }
        }
        (total / n as f64) as f32
    }

    /// The probabilities of the last forward. Shapes: `N×K`.
    pub fn probs(&self) -> &Tensor {
        &self.probs
    }

    /// The gradient of the mean loss with respect to the logits of the last forward. Shapes: `N×K`.
    pub fn backward(&self) -> &Tensor {
        &self.dlogits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{EPS, seeded};

    #[test]
    fn softmax_sums_to_one_and_is_shift_invariant() {
        let z = [1.0, 2.0, 3.0, -1.0];
        let mut p = [0.0; 4];
        softmax(&z, 4, &mut p);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let shifted: Vec<f32> = z.iter().map(|v| v + 100.0).collect();
        let mut q = [0.0; 4];
        softmax(&shifted, 4, &mut q);
        for (a, b) in p.iter().zip(&q) {
            assert!((a - b).abs() < 1e-6);
        }
        // Hand-worked: softmax(0, ln 3) = (1/4, 3/4).
        softmax(&[0.0, 3f32.ln()], 2, &mut p[..2]);
        assert!((p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.75).abs() < 1e-6);
    }

    #[test]
    fn extreme_logits_give_finite_loss_and_gradient() {
        for kind in [LossKind::CrossEntropy, LossKind::Mse] {
            let logits =
                Tensor::from_shape_vec(vec![2, 3], vec![1000., -1000., 0., -1000., 1000., 1000.])
                    .unwrap();
            let mut loss = Loss::new(kind, 0.1);
            let l = loss.forward(&logits, &[1, 0]);
            assert!(l.is_finite(), "{kind:?}: {l}");
            assert!(data(loss.backward()).iter().all(|v| v.is_finite()));
            assert!(
                data(loss.probs())
                    .iter()
                    .all(|v| v.is_finite() && (0.0..=1.0).contains(v))
            );
        }
        // Confidently wrong by 2000: cross-entropy is 2000 (no smoothing), exactly.
        let logits = Tensor::from_shape_vec(vec![1, 2], vec![1000., -1000.]).unwrap();
        assert_eq!(
            Loss::new(LossKind::CrossEntropy, 0.0).forward(&logits, &[1]),
            2000.0
        );
    }

    /// Hand-worked: logits (0, ln 3), label 1: p = (1/4, 3/4), loss = −ln(3/4) = 0.287682,
    /// gradient p − y = (1/4, −1/4).
    #[test]
    fn cross_entropy_hand_worked() {
        let logits = Tensor::from_shape_vec(vec![1, 2], vec![0.0, 3f32.ln()]).unwrap();
        let mut loss = Loss::new(LossKind::CrossEntropy, 0.0);
        assert!((loss.forward(&logits, &[1]) - 0.287_682).abs() < 1e-6);
        let g = data(loss.backward());
        assert!((g[0] - 0.25).abs() < 1e-6 && (g[1] + 0.25).abs() < 1e-6);
    }

    fn grad_check(kind: LossKind, smoothing: f32) {
        let (n, k) = (3, 5);
        let logits = seeded(&[n, k], 21).mapv(|v| 2.0 * v);
        let labels = [4, 0, 2];
        let mut loss = Loss::new(kind, smoothing);
        loss.forward(&logits, &labels);
        let analytic = loss.backward().clone();
        for i in 0..n * k {
            let mut z = logits.clone();
            z.as_slice_mut().unwrap()[i] += EPS;
            let up = loss.forward(&z, &labels) as f64;
            z.as_slice_mut().unwrap()[i] -= 2.0 * EPS;
            let down = loss.forward(&z, &labels) as f64;
            let numeric = (up - down) / (2.0 * EPS as f64);
            let a = data(&analytic)[i] as f64;
            assert!(
                (a - numeric).abs() < 2e-3 * 1f64.max(a.abs()),
                "{kind:?} [{i}]: {a} vs {numeric}"
            );
        }
    }

    #[test]
    fn cross_entropy_grad_batch3_with_and_without_smoothing() {
        grad_check(LossKind::CrossEntropy, 0.0);
        grad_check(LossKind::CrossEntropy, 0.1);
    }

    #[test]
    fn mse_grad_batch3() {
        grad_check(LossKind::Mse, 0.0);
        grad_check(LossKind::Mse, 0.2);
    }
}
