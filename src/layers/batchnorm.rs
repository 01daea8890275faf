//! Batch normalisation (Ioffe & Szegedy, 2015) over channels of `N×C×H×W` activations or over
//! features of `N×F` ones (then `H·W = 1`).
//!
//! Training normalises with the batch mean and biased variance over the `M = N·H·W` values of a
//! channel and updates running statistics with momentum 0.1 using the unbiased variance; eval
//! uses the running statistics. Defaults follow PyTorch (`momentum = 0.1`, `eps = 1e-5`).

use super::{Layer, Mode, Param};
use crate::tensor::{Tensor, data, data_mut, reuse};

const MOMENTUM: f32 = 0.1;
const EPS: f32 = 1e-5;

pub struct BatchNorm {
    shape: Vec<usize>,
    channels: usize,
    /// Values per channel in one item (`H·W`, or 1 after a dense layer).
    plane: usize,
    gamma: Param,
    beta: Param,
    running_mean: Param,
    running_var: Param,
    /// Normalised input `(x − mean) · inv_std`, kept for backward.
    xhat: Tensor,
    inv_std: Vec<f32>,
    trained: bool,
    y: Tensor,
    dx: Tensor,
}

impl BatchNorm {
    /// Shapes: unchanged (`C×H×W` or `F`).
    pub fn new(input: &[usize]) -> Result<Self, String> {
        let (channels, plane) = match *input {
            [c, h, w] => (c, h * w),
            [f] => (f, 1),
            _ => return Err(format!("needs a C×H×W or flat input, got {}", crate::spec::fmt_shape(input))),
        };
        Ok(BatchNorm {
            shape: input.to_vec(),
            channels,
            plane,
            gamma: Param::trainable("weight", Tensor::ones(vec![channels])),
            beta: Param::trainable("bias", Tensor::zeros(vec![channels])),
            running_mean: Param::buffer("running_mean", Tensor::zeros(vec![channels])),
            running_var: Param::buffer("running_var", Tensor::ones(vec![channels])),
            xhat: Tensor::zeros(vec![0]),
            inv_std: vec![0.0; channels],
            trained: false,
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
        let x = data(x);
        let (gamma, beta) = (data(&self.gamma.value), data(&self.beta.value));
        self.trained = matches!(mode, Mode::Train { .. });
        for ch in 0..c {
            // The values of channel `ch`: one run of `plane` values per image.
            let runs = (0..n).map(|i| (i * c + ch) * plane);
            let (mean, inv_std) = if self.trained {
                // Two passes in f64: exact enough for any batch, and cheap next to the convs.
                let sum: f64 = runs.clone().map(|s| x[s..s + plane].iter().map(|&v| v as f64).sum::<f64>()).sum();
                let mean = sum / m;
                let sq: f64 = runs
                    .clone()
                    .map(|s| x[s..s + plane].iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>())
                    .sum();
                let var = sq / m;
                let unbiased = if m > 1.0 { sq / (m - 1.0) } else { var };
                let rm = &mut data_mut(&mut self.running_mean.value)[ch];
                *rm = (1.0 - MOMENTUM) * *rm + MOMENTUM * mean as f32;
                let rv = &mut data_mut(&mut self.running_var.value)[ch];
                *rv = (1.0 - MOMENTUM) * *rv + MOMENTUM * unbiased as f32;
                (mean as f32, (1.0 / (var + EPS as f64).sqrt()) as f32)
            } else {
                let var = data(&self.running_var.value)[ch];
                (data(&self.running_mean.value)[ch], 1.0 / (var + EPS).sqrt())
            };
            self.inv_std[ch] = inv_std;
            let (xhat, y) = (data_mut(&mut self.xhat), data_mut(&mut self.y));
            for s in runs {
                for i in s..s + plane {
                    xhat[i] = (x[i] - mean) * inv_std;
                    y[i] = gamma[ch] * xhat[i] + beta[ch];
                }
            }
        }
        &self.y
    }

    fn backward(&mut self, dy: &Tensor) -> &Tensor {
        let (c, plane) = (self.channels, self.plane);
        let n = dy.shape()[0];
        let m = (n * plane) as f32;
        reuse(&mut self.dx, dy.shape());
        let (dy, xhat, dx) = (data(dy), data(&self.xhat), data_mut(&mut self.dx));
        let gamma = data(&self.gamma.value);
        for ch in 0..c {
            let runs = (0..n).map(|i| (i * c + ch) * plane);
            let (mut sum_dy, mut sum_dy_xhat) = (0.0f32, 0.0f32);
            for s in runs.clone() {
                for i in s..s + plane {
                    sum_dy += dy[i];
                    sum_dy_xhat += dy[i] * xhat[i];
                }
            }
            data_mut(&mut self.gamma.grad)[ch] += sum_dy_xhat;
            data_mut(&mut self.beta.grad)[ch] += sum_dy;
            let k = gamma[ch] * self.inv_std[ch];
            for s in runs {
                for i in s..s + plane {
                    dx[i] = if self.trained {
                        // d/dx of the batch-normalised value: the mean and variance depend on x too.
                        k / m * (m * dy[i] - sum_dy - xhat[i] * sum_dy_xhat)
                    } else {
                        k * dy[i]
                    };
                }
            }
        }
        &self.dx
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.gamma);
        f(&mut self.beta);
        f(&mut self.running_mean);
        f(&mut self.running_var);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check_layer, seeded};

    fn bn(input: &[usize]) -> BatchNorm {
        let mut b = BatchNorm::new(input).unwrap();
        let c = b.channels;
        b.gamma.value = Tensor::from_shape_fn(vec![c], |i| 0.5 + 0.3 * i[0] as f32);
        b.beta.value = Tensor::from_shape_fn(vec![c], |i| 0.1 * i[0] as f32 - 0.2);
        b
    }

    #[test]
    fn batchnorm_grad_conv_train_batch3_odd() {
        check_layer(&mut bn(&[2, 3, 5]), &[3, 2, 3, 5], Mode::Train { seed: 0 });
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
        let mut b = BatchNorm::new(&[3, 2, 2]).unwrap();
        let y = b.forward(&x, Mode::Train { seed: 0 }).clone();
        for ch in 0..3 {
            let vals: Vec<f32> = (0..4).flat_map(|i| data(&y)[(i * 3 + ch) * 4..][..4].to_vec()).collect();
            let mean = vals.iter().sum::<f32>() / 16.0;
            let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 16.0;
            assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3, "channel {ch}: {mean} {var}");
        }
        let rm = data(&b.running_mean.value)[0];
        let xs: Vec<f32> = (0..4).flat_map(|i| data(&x)[i * 12..][..4].to_vec()).collect();
        let batch_mean = xs.iter().sum::<f32>() / 16.0;
        assert!((rm - 0.1 * batch_mean).abs() < 1e-5);
        // Eval with running statistics equal to the batch's reproduces the training output.
        let var = xs.iter().map(|v| (v - batch_mean).powi(2)).sum::<f32>() / 16.0;
        b.running_mean.value[0] = batch_mean;
        b.running_var.value[0] = var;
        let e = b.forward(&x, Mode::Eval);
        assert!((data(e)[0] - data(&y)[0]).abs() < 1e-4);
    }
}
