//! Batch normalisation (Ioffe & Szegedy, 2015) over channels of `N×C×H×W` activations or over
//! features of `N×F` ones (then `H·W = 1`).
//!
//! Training normalises with the batch mean and biased variance over the `M = N·H·W` values of a
//! channel and updates the running statistics, `r ← (1 − momentum)·r + momentum·batch`, with the
//! unbiased variance; eval uses the running statistics. Defaults follow PyTorch (`momentum =
//! 0.1`, `eps = 1e-5`). The scale `γ` may be left out (`scale=no`: fixed at 1, as in fast CIFAR
//! recipes where only the shift trains).
//!
//! A ReLU or GELU that follows can be applied here ([`Layer::fuse_activation`]): on the way out
//! of the normalising pass, and on the way in of backward's, which saves the activation's two
//! passes over memory. Its input `z = γ·x̂ + β` is recomputed from `x̂`, exactly as the separate
//! layer would have seen it.

use super::{Activation, Init, Layer, Mode, Param};
use crate::kernels::math::{gelu, gelu_grad};
use crate::kernels::{SendPtr, reduce};
use crate::tensor::{Tensor, data, data_mut, reuse};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormConfig {
    /// Weight of the batch's statistics in the running ones (PyTorch's convention).
    pub momentum: f32,
    /// Added to the variance before its square root.
    pub eps: f32,
    /// Whether the scale `γ` is a trained parameter (else it is 1).
    pub scale: bool,
    /// Learning-rate multiplier of the trained parameters (see [`Param::lr_scale`]).
    pub lr_scale: f32,
}

impl Default for BatchNormConfig {
    /// PyTorch's defaults.
    fn default() -> Self {
        BatchNormConfig {
            momentum: 0.1,
            eps: 1e-5,
            scale: true,
            lr_scale: 1.0,
        }
    }
}

pub struct BatchNorm {
    cfg: BatchNormConfig,
    shape: Vec<usize>,
    channels: usize,
    /// Values per channel in one item (`H·W`, or 1 after a dense layer).
    plane: usize,
    /// `None` with `scale=no` (γ = 1).
    gamma: Option<Param>,
    beta: Param,
    running_mean: Param,
    running_var: Param,
    /// Normalised input `(x − mean) · inv_std`, kept for backward.
    xhat: Tensor,
    inv_std: Vec<f32>,
    trained: bool,
    /// Whether the output goes through a ReLU (fused, see the module doc).
    act: Option<Activation>,
    y: Tensor,
    dx: Tensor,
}

impl BatchNorm {
    /// Shapes: unchanged (`C×H×W` or `F`).
    pub fn new(input: &[usize], cfg: BatchNormConfig) -> Result<Self, String> {
        let (channels, plane) = match *input {
            [c, h, w] => (c, h * w),
            [f] => (f, 1),
            _ => {
                return Err(format!(
                    "needs a C×H×W or flat input, got {}",
                    crate::tensor::fmt_shape(input)
                ));
            }
        };
        if !(cfg.eps > 0.0 && cfg.eps.is_finite() && (0.0..=1.0).contains(&cfg.momentum)) {
            return Err(format!(
                "needs eps > 0 and momentum in [0, 1], got eps {} and momentum {}",
                cfg.eps, cfg.momentum
            ));
        }
        let lr = cfg.lr_scale;
        Ok(BatchNorm {
            cfg,
            shape: input.to_vec(),
            channels,
            plane,
            gamma: cfg
                .scale
                .then(|| Param::trainable("weight", &[channels], Init::Ones).with_lr_scale(lr)),
            beta: Param::trainable("bias", &[channels], Init::Zeros).with_lr_scale(lr),
            running_mean: Param::buffer("running_mean", &[channels], Init::Zeros),
            running_var: Param::buffer("running_var", &[channels], Init::Ones),
            xhat: Tensor::zeros(vec![0]),
            inv_std: Vec::new(),
            trained: false,
            act: None,
            y: Tensor::zeros(vec![0]),
            dx: Tensor::zeros(vec![0]),
        })
    }
}

impl Layer for BatchNorm {
    fn out_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> &Tensor {
        let (c, plane) = (self.channels, self.plane);
        let n = x.shape()[0];
        let m = (n * plane) as f64;
        reuse(&mut self.y, x.shape());
        reuse(&mut self.xhat, x.shape());
        self.trained = matches!(mode, Mode::Train { .. });
        let (trained, act) = (self.trained, self.act);
        let x = data(x);
        let eps = self.cfg.eps;
        let gamma = self.gamma.as_ref().map(|g| data(&g.value));
        let beta = data(&self.beta.value);
        let (rmean, rvar) = (
            data(&self.running_mean.value),
            data(&self.running_var.value),
        );
        let (xhat_ptr, y_ptr) = (
            SendPtr(data_mut(&mut self.xhat).as_mut_ptr()),
            SendPtr(data_mut(&mut self.y).as_mut_ptr()),
        );
        // Channels in parallel; each task reads and writes only its own channel's runs.
        let stats: Vec<(f32, f32, f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let runs = (0..n).map(|i| (i * c + ch) * plane);
                let (mean, inv_std, batch_mean, unbiased) = if trained {
                    // Two passes, summed per run in f32 and across runs in f64.
                    let sum: f64 = runs
                        .clone()
                        .map(|s| reduce::sum(&x[s..s + plane]) as f64)
                        .sum();
                    let mean = sum / m;
                    let mf = mean as f32;
                    let sq: f64 = runs
                        .clone()
                        .map(|s| reduce::sum_sq_dev(&x[s..s + plane], mf) as f64)
                        .sum();
                    let var = sq / m;
                    let unbiased = if m > 1.0 { sq / (m - 1.0) } else { var };
                    (mf, (1.0 / (var + eps as f64).sqrt()) as f32, mean, unbiased)
                } else {
                    (rmean[ch], 1.0 / (rvar[ch] + eps).sqrt(), 0.0, 0.0)
                };
                let (g, b) = (gamma.map_or(1.0, |g| g[ch]), beta[ch]);
                for s in runs {
                    // SAFETY: run [s, s+plane) belongs to channel `ch` alone.
                    let (xh, y) = unsafe {
                        (
                            std::slice::from_raw_parts_mut(xhat_ptr.get().add(s), plane),
                            std::slice::from_raw_parts_mut(y_ptr.get().add(s), plane),
                        )
                    };
                    let values = xh.iter_mut().zip(y.iter_mut()).zip(&x[s..s + plane]);
                    if act == Some(Activation::Relu) {
                        for ((xh, y), &v) in values {
                            *xh = (v - mean) * inv_std;
                            *y = (g * *xh + b).max(0.0);
                        }
                    } else if act == Some(Activation::Gelu) {
                        for ((xh, y), &v) in values {
                            *xh = (v - mean) * inv_std;
                            *y = gelu(g * *xh + b);
                        }
                    } else {
                        for ((xh, y), &v) in values {
                            *xh = (v - mean) * inv_std;
                            *y = g * *xh + b;
                        }
                    }
                }
                (mean, inv_std, batch_mean, unbiased)
            })
            .collect();
        self.inv_std.resize(c, 0.0);
        let momentum = self.cfg.momentum;
        for (ch, (_, inv_std, batch_mean, unbiased)) in stats.into_iter().enumerate() {
            self.inv_std[ch] = inv_std;
            if trained {
                let rm = &mut data_mut(&mut self.running_mean.value)[ch];
                *rm = (1.0 - momentum) * *rm + momentum * batch_mean as f32;
                let rv = &mut data_mut(&mut self.running_var.value)[ch];
                *rv = (1.0 - momentum) * *rv + momentum * unbiased as f32;
            }
        }
        &self.y
    }

    /// The normalised input.
    fn kept_values(&self, n: usize) -> u128 {
        n as u128 * self.shape.iter().map(|&d| d as u128).product::<u128>()
    }

    fn output(&self) -> &Tensor {
        &self.y
    }

    fn backward(&mut self, _x: &Tensor, dy: &Tensor) -> &Tensor {
        let (c, plane) = (self.channels, self.plane);
        let n = dy.shape()[0];
        let m = (n * plane) as f32;
        reuse(&mut self.dx, dy.shape());
        let (dy, xhat) = (data(dy), data(&self.xhat));
        let dx_ptr = SendPtr(data_mut(&mut self.dx).as_mut_ptr());
        let gamma = self.gamma.as_ref().map(|g| data(&g.value));
        let beta = data(&self.beta.value);
        let (inv_std, trained, act) = (&self.inv_std, self.trained, self.act);
        let sums: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let runs = (0..n).map(|i| (i * c + ch) * plane);
                // SAFETY: run [s, s+plane) of dx belongs to channel `ch` alone.
                let dx_run = |s: usize| unsafe {
                    std::slice::from_raw_parts_mut(dx_ptr.get().add(s), plane)
                };
                let (g, b) = (gamma.map_or(1.0, |g| g[ch]), beta[ch]);
                let (mut sum_dy, mut sum_dy_xhat) = (0.0f32, 0.0f32);
                for s in runs.clone() {
                    let xh = &xhat[s..s + plane];
                    // With a fused activation the gradient is multiplied by its derivative (a
                    // ReLU's: 1 where its output was positive); that goes to dx first, to be
                    // read back below.
                    let d = match act {
                        Some(a) => {
                            let masked = dx_run(s);
                            let runs = masked.iter_mut().zip(&dy[s..s + plane]).zip(xh);
                            if a == Activation::Relu {
                                for ((m, &d), &xh) in runs {
                                    *m = if g * xh + b > 0.0 { d } else { 0.0 };
                                }
                            } else {
                                for ((m, &d), &xh) in runs {
                                    *m = d * gelu_grad(g * xh + b);
                                }
                            }
                            &*masked
                        }
                        None => &dy[s..s + plane],
                    };
                    let (sd, sdx) = reduce::sum_and_dot(d, xh);
                    sum_dy += sd;
                    sum_dy_xhat += sdx;
                }
                // dx = k·dy in eval; in training the mean and variance depend on x too:
                // dx = k/m · (m·dy − Σdy − x̂·Σ(dy·x̂)) = k·dy + shift + slope·x̂.
                let k = g * inv_std[ch];
                let (shift, slope) = if trained {
                    (-k * sum_dy / m, -k * sum_dy_xhat / m)
                } else {
                    (0.0, 0.0)
                };
                for s in runs {
                    let (dx, xh) = (dx_run(s), &xhat[s..s + plane]);
                    if act.is_some() {
                        for (dx, &xh) in dx.iter_mut().zip(xh) {
                            *dx = k * *dx + shift + slope * xh;
                        }
                    } else {
                        for ((dx, &d), &xh) in dx.iter_mut().zip(&dy[s..s + plane]).zip(xh) {
                            *dx = k * d + shift + slope * xh;
                        }
                    }
                }
                (sum_dy, sum_dy_xhat)
            })
            .collect();
        for (db, (sum_dy, _)) in self.beta.grad_mut().iter_mut().zip(&sums) {
            *db += sum_dy;
        }
        if let Some(gamma) = &mut self.gamma {
            for (dg, (_, sum_dy_xhat)) in gamma.grad_mut().iter_mut().zip(&sums) {
                *dg += sum_dy_xhat;
            }
        }
        &self.dx
    }

    fn fuse_activation(&mut self, act: Activation) -> bool {
        self.act = Some(act);
        true
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        if let Some(gamma) = &mut self.gamma {
            f(gamma);
        }
        f(&mut self.beta);
        f(&mut self.running_mean);
        f(&mut self.running_var);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check_layer, initialised, seeded};

    fn bn(input: &[usize]) -> BatchNorm {
        bn_with(input, BatchNormConfig::default())
    }

    /// Non-trivial γ and β, so that their effect shows in the checks.
    fn bn_with(input: &[usize], cfg: BatchNormConfig) -> BatchNorm {
        let mut b = initialised(BatchNorm::new(input, cfg).unwrap(), 1);
        let c = b.channels;
        if let Some(g) = &mut b.gamma {
            g.value = Tensor::from_shape_fn(vec![c], |i| 0.5 + 0.3 * i[0] as f32);
        }
        b.beta.value = Tensor::from_shape_fn(vec![c], |i| 0.1 * i[0] as f32 - 0.2);
        b
    }

    #[test]
    fn batchnorm_grad_conv_train_batch3_odd() {
        check_layer(&mut bn(&[2, 3, 5]), &[3, 2, 3, 5], Mode::Train { seed: 0 });
        // Planes longer than the vectorised sums' lane width, with a remainder.
        check_layer(&mut bn(&[2, 5, 7]), &[2, 2, 5, 7], Mode::Train { seed: 0 });
    }

    #[test]
    fn batchnorm_grad_dense_train_and_eval() {
        check_layer(&mut bn(&[4]), &[5, 4], Mode::Train { seed: 0 });
        check_layer(&mut bn(&[2, 1, 3]), &[1, 2, 1, 3], Mode::Eval);
    }

    /// Training output has zero mean and unit variance per channel (before gamma/beta); one step
    /// moves the running statistics 10% of the way to the batch's.
    #[test]
    fn batchnorm_normalises_and_tracks_running_statistics() {
        let x = seeded(&[4, 3, 2, 2], 8).mapv(|v| 3.0 * v + 2.0);
        let mut b = initialised(
            BatchNorm::new(&[3, 2, 2], BatchNormConfig::default()).unwrap(),
            1,
        );
        let y = b.forward(&x, Mode::Train { seed: 0 }).clone();
        for ch in 0..3 {
            let vals: Vec<f32> = (0..4)
                .flat_map(|i| data(&y)[(i * 3 + ch) * 4..][..4].to_vec())
                .collect();
            let mean = vals.iter().sum::<f32>() / 16.0;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 16.0;
            assert!(
                mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
                "channel {ch}: {mean} {var}"
            );
        }
        let rm = data(&b.running_mean.value)[0];
        let xs: Vec<f32> = (0..4)
            .flat_map(|i| data(&x)[i * 12..][..4].to_vec())
            .collect();
        let batch_mean = xs.iter().sum::<f32>() / 16.0;
        assert!((rm - 0.1 * batch_mean).abs() < 1e-5);
        // Eval with running statistics equal to the batch's reproduces the training output.
        let var = xs.iter().map(|v| (v - batch_mean).powi(2)).sum::<f32>() / 16.0;
        b.running_mean.value[0] = batch_mean;
        b.running_var.value[0] = var;
        let e = b.forward(&x, Mode::Eval);
        assert!((data(e)[0] - data(&y)[0]).abs() < 1e-4);
    }

    /// With the scale fixed at 1 there is no `weight` parameter; the gradients still check, and
    /// the running statistics move by the configured momentum.
    #[test]
    fn batchnorm_without_scale_and_with_other_momentum_and_eps() {
        let cfg = BatchNormConfig {
            momentum: 0.4,
            eps: 1e-12,
            scale: false,
            lr_scale: 64.0,
        };
        let mut b = bn_with(&[3, 2, 3], cfg);
        let mut names = Vec::new();
        b.visit_params(&mut |p| names.push((p.name, p.lr_scale)));
        assert_eq!(
            names,
            [("bias", 64.0), ("running_mean", 1.0), ("running_var", 1.0)]
        );
        check_layer(&mut b, &[4, 3, 2, 3], Mode::Train { seed: 0 });
        let x = seeded(&[2, 3, 2, 3], 9).mapv(|v| v + 5.0);
        let mut b = initialised(BatchNorm::new(&[3, 2, 3], cfg).unwrap(), 1);
        b.forward(&x, Mode::Train { seed: 0 });
        let batch_mean = (0..2)
            .flat_map(|i| data(&x)[i * 18..][..6].to_vec())
            .sum::<f32>()
            / 12.0;
        // Running mean starts at 0: 0.6·0 + 0.4·batch.
        assert!((data(&b.running_mean.value)[0] - 0.4 * batch_mean).abs() < 1e-5);
        let err = BatchNorm::new(&[3], BatchNormConfig { eps: 0.0, ..cfg })
            .err()
            .unwrap();
        assert!(err.contains("eps"), "{err}");
    }
}
