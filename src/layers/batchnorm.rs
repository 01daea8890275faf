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
//!
//! A max pooling after that can be applied here too ([`Layer::fuse_max_pool`]): each plane is
//! normalised into scratch and pooled from there, and backward spreads the pooled gradient back
//! through the winners one plane at a time, so the full-size output and its gradient never
//! reach memory (four passes over the largest maps fewer, with bit-identical results).
//!
//! Memory traffic is most of what it costs (the maps are larger than the caches): forward reads
//! its input twice (statistics, then the normalised output) and writes once; backward reads `dy`
//! and the input twice and writes `dx` once (with a fused pooling, the first pass spreads the
//! pooled `dy` into `dx`, where the second reads it). Nothing but the per-channel statistics is
//! kept: `x̂` is recomputed from the forward input, which the network hands to backward. The
//! passes over a run are `kernels::batch_norm`'s, vectorised at the instruction set's width.

use super::maxpool::{disjoint, max_pool_plane, pool_geometry, unpool_plane};
use super::{Activation, Init, Layer, Mode, Param};
use crate::kernels::batch_norm::{self, Affine};
use crate::kernels::math::{gelu, gelu_grad};
use crate::kernels::prefetch::prefetch;
use crate::kernels::scratch::with_scratch;
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
    /// The statistics forward normalised with (the batch's, or the running ones in eval), for
    /// backward to recompute `x̂ = (x − mean)·inv_std` from its input.
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    trained: bool,
    /// Whether the output goes through a ReLU (fused, see the module doc).
    act: Option<Activation>,
    /// The max pooling applied after the activation, when fused (see the module doc).
    pool: Option<Pool>,
    /// The output item's shape: the input's, or the pooled one.
    out: Vec<usize>,
    y: Tensor,
    dx: Tensor,
}

/// A fused max pooling: `k×k` windows moved by `stride` over each `H×W` plane (row length
/// `w`), `OH×OW` out.
struct Pool {
    k: usize,
    stride: usize,
    w: usize,
    out_plane: usize,
    ow: usize,
    /// The winner of every output within its plane, as [`super::MaxPool2d`] keeps it.
    argmax: Vec<u32>,
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
            mean: Vec::new(),
            inv_std: Vec::new(),
            trained: false,
            act: None,
            pool: None,
            out: input.to_vec(),
            y: Tensor::zeros(vec![0]),
            dx: Tensor::zeros(vec![0]),
        })
    }
}

impl Layer for BatchNorm {
    fn out_shape(&self) -> &[usize] {
        &self.out
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> &Tensor {
        let (c, plane) = (self.channels, self.plane);
        let n = x.shape()[0];
        // `N×` the item's shape (1 or 3 axes), without allocating.
        let mut shape = [n; 4];
        shape[1..=self.out.len()].copy_from_slice(&self.out);
        reuse(&mut self.y, &shape[..=self.out.len()]);
        self.trained = matches!(mode, Mode::Train { .. });
        let (trained, act) = (self.trained, self.act);
        let x = data(x);
        let eps = self.cfg.eps;
        let gamma = self.gamma.as_ref().map(|g| &*g.value);
        let beta = &*self.beta.value;
        let (rmean, rvar) = (&self.running_mean.value, &self.running_var.value);
        let y_ptr = SendPtr(data_mut(&mut self.y).as_mut_ptr());
        let pool = self.pool.as_mut().map(|p| {
            p.argmax.resize(n * c * p.out_plane, 0);
            let arg_ptr = SendPtr(p.argmax.as_mut_ptr());
            ((p.k, p.stride, p.w, p.ow, p.out_plane), arg_ptr)
        });
        // Channels in parallel; each task reads and writes only its own channel's runs.
        let stats: Vec<(f32, f32, f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let runs = (0..n).map(|i| (i * c + ch) * plane);
                let (mean, inv_std, batch_mean, unbiased) = if trained {
                    let (mean, sq) = channel_moments(x, runs.clone(), plane);
                    let m = (n * plane) as f64;
                    let var = sq / m;
                    let unbiased = if m > 1.0 { sq / (m - 1.0) } else { var };
                    let inv_std = (1.0 / (var + eps as f64).sqrt()) as f32;
                    (mean as f32, inv_std, mean, unbiased)
                } else {
                    (rmean[ch], 1.0 / (rvar[ch] + eps).sqrt(), 0.0, 0.0)
                };
                let a = Affine {
                    g: gamma.map_or(1.0, |g| g[ch]),
                    b: beta[ch],
                    mean,
                    inv_std,
                    relu: act == Some(Activation::Relu),
                };
                let normalise = |x: &[f32], out: &mut [f32]| normalise_run(act, &a, x, out);
                match &pool {
                    None => {
                        for s in runs {
                            // SAFETY: run [s, s+plane) belongs to channel `ch` alone.
                            let y = unsafe {
                                std::slice::from_raw_parts_mut(y_ptr.get().add(s), plane)
                            };
                            normalise(&x[s..s + plane], y);
                        }
                    }
                    // Each plane normalised into the thread's scratch, then pooled from there.
                    Some(((k, stride, w, ow, out_plane), arg_ptr)) => with_scratch(plane, |z| {
                        for s in runs {
                            normalise(&x[s..s + plane], z);
                            let r = s / plane * out_plane;
                            // SAFETY: pooled run [r, r+out_plane) belongs to channel `ch` alone.
                            let (y, arg) = unsafe {
                                (
                                    std::slice::from_raw_parts_mut(y_ptr.get().add(r), *out_plane),
                                    std::slice::from_raw_parts_mut(
                                        arg_ptr.get().add(r),
                                        *out_plane,
                                    ),
                                )
                            };
                            max_pool_plane(z, *w, *k, *stride, y, arg, *ow);
                        }
                    }),
                }
                (mean, inv_std, batch_mean, unbiased)
            })
            .collect();
        self.mean.resize(c, 0.0);
        self.inv_std.resize(c, 0.0);
        let momentum = self.cfg.momentum;
        for (ch, (mean, inv_std, batch_mean, unbiased)) in stats.into_iter().enumerate() {
            self.mean[ch] = mean;
            self.inv_std[ch] = inv_std;
            if trained {
                let rm = &mut self.running_mean.value.to_mut()[ch];
                *rm = (1.0 - momentum) * *rm + momentum * batch_mean as f32;
                let rv = &mut self.running_var.value.to_mut()[ch];
                *rv = (1.0 - momentum) * *rv + momentum * unbiased as f32;
            }
        }
        &self.y
    }

    fn output(&self) -> &Tensor {
        &self.y
    }

    /// `x` is the forward input: `x̂ = (x − mean)·inv_std` is recomputed from it, exactly as
    /// forward computed it, rather than kept (one activation-sized buffer and one write fewer).
    fn backward(&mut self, x: &Tensor, dy: &Tensor) -> &Tensor {
        let (c, plane) = (self.channels, self.plane);
        let n = dy.shape()[0];
        let m = (n * plane) as f32;
        reuse(&mut self.dx, x.shape());
        let (dy, x) = (data(dy), data(x));
        let dx_ptr = SendPtr(data_mut(&mut self.dx).as_mut_ptr());
        let gamma = self.gamma.as_ref().map(|g| &*g.value);
        let beta = &*self.beta.value;
        let (mean, inv_std, trained, act) = (&self.mean, &self.inv_std, self.trained, self.act);
        let dy = match &self.pool {
            None => Dy::Plain(dy),
            Some(p) => Dy::Pooled {
                dy,
                argmax: &p.argmax,
                out_plane: p.out_plane,
                disjoint: disjoint(p.k, p.stride),
            },
        };
        // Where the GELU's path spreads a pooled dy back (the others use dx's runs).
        let pooled_gelu = self.pool.is_some() && act == Some(Activation::Gelu);
        let scratch = if pooled_gelu { plane } else { 0 };
        let sums: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let runs = (0..n).map(|i| (i * c + ch) * plane);
                let (g, b, mu, k_std) = (
                    gamma.map_or(1.0, |g| g[ch]),
                    beta[ch],
                    mean[ch],
                    inv_std[ch],
                );
                let ch = Channel {
                    runs,
                    plane,
                    mu,
                    k_std,
                    g,
                    m,
                    trained,
                };
                // SAFETY: run [s, s+plane) of dx belongs to channel `ch` alone.
                let dx_run = |s: usize| unsafe {
                    std::slice::from_raw_parts_mut(dx_ptr.get().add(s), plane)
                };
                // The gradient reaching the normalised value: dy, times the fused activation's
                // derivative (a ReLU's: 1 where its output was positive; the vector kernels
                // compute it, a GELU's is computed here).
                with_scratch(scratch, |scratch| match act {
                    Some(Activation::Gelu) => {
                        ch.backward_stored(x, &dy, scratch, dx_run, |d, xh| {
                            d * gelu_grad(g * xh + b)
                        })
                    }
                    relu => {
                        let relu = relu == Some(Activation::Relu);
                        ch.backward(relu, b, x, &dy, dx_run)
                    }
                })
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

    fn fuse_max_pool(&mut self, k: usize, stride: usize) -> bool {
        let Ok((c, _, w, oh, ow)) = pool_geometry(&self.shape, k, stride) else {
            return false;
        };
        if self.pool.is_some() {
            return false;
        }
        self.pool = Some(Pool {
            k,
            stride,
            w,
            out_plane: oh * ow,
            ow,
            argmax: Vec::new(),
        });
        self.out = vec![c, oh, ow];
        true
    }

    /// The fused pooling's winners.
    fn kept_values(&self, n: usize) -> u128 {
        self.pool
            .as_ref()
            .map_or(0, |p| (n * self.channels * p.out_plane) as u128)
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

/// One channel's part of backward: its runs (`plane` values from each start) and statistics.
struct Channel<R> {
    runs: R,
    plane: usize,
    mu: f32,
    k_std: f32,
    g: f32,
    /// Values per channel in the batch.
    m: f32,
    trained: bool,
}

impl<R: Iterator<Item = usize> + Clone> Channel<R> {
    /// Writes the channel's `dx` runs (through `dx_run(start)`) and returns (Σ dz, Σ dz·x̂),
    /// where `dz` is the gradient at the normalised value: `dy`, or through a fused ReLU (with
    /// `relu`, `b` the shift) `dy` where `γ·x̂ + b > 0`. Two passes of the vector kernels: the
    /// sums, then `dx`.
    fn backward<'a>(
        self,
        relu: bool,
        b: f32,
        x: &[f32],
        dy: &Dy,
        dx_run: impl Fn(usize) -> &'a mut [f32],
    ) -> (f32, f32) {
        let plane = self.plane;
        let a = Affine {
            g: self.g,
            b,
            mean: self.mu,
            inv_std: self.k_std,
            relu,
        };
        let (mut sum_dz, mut sum_dz_xhat) = (0.0f32, 0.0f32);
        for (s, next) in with_next(self.runs.clone()) {
            if let Some(next) = next {
                prefetch(&x[next..next + plane]);
                dy.prefetch(next, plane);
            }
            // A pooled dy is spread back into dx's run, where the second pass reads it.
            let dy = dy.run(s, plane, dx_run(s));
            let (sd, sdx) = batch_norm::grad_sums(&a, dy, &x[s..s + plane]);
            sum_dz += sd;
            sum_dz_xhat += sdx;
        }
        let line = self.line(sum_dz, sum_dz_xhat);
        for s in self.runs {
            let x = &x[s..s + plane];
            match *dy {
                Dy::Plain(dy) => batch_norm::grad_apply(&a, &line, &dy[s..][..plane], x, dx_run(s)),
                Dy::Pooled { .. } => batch_norm::grad_apply_in_place(&a, &line, x, dx_run(s)),
            }
        }
        (sum_dz, sum_dz_xhat)
    }

    /// As [`Channel::backward`] for any activation's gradient `grad(dy, x̂)`, computed once: the
    /// first pass keeps `dz` in `dx` for the second. That pays where `grad` costs more than a
    /// pass over the channel's runs, which stay in cache between the two passes when they are
    /// small (a GELU's derivative, an exponential and a rational function).
    #[inline(always)]
    fn backward_stored<'a>(
        self,
        x: &[f32],
        dy: &Dy,
        scratch: &mut [f32],
        dx_run: impl Fn(usize) -> &'a mut [f32],
        grad: impl Fn(f32, f32) -> f32,
    ) -> (f32, f32) {
        let (plane, mu, k_std) = (self.plane, self.mu, self.k_std);
        let (mut sum_dz, mut sum_dz_xhat) = (0.0f32, 0.0f32);
        for (s, next) in with_next(self.runs.clone()) {
            if let Some(next) = next {
                prefetch(&x[next..next + plane]);
                dy.prefetch(next, plane);
            }
            let dy = dy.run(s, plane, scratch);
            let dz = dx_run(s);
            for ((dz, &d), &v) in dz.iter_mut().zip(dy).zip(&x[s..s + plane]) {
                *dz = grad(d, (v - mu) * k_std);
            }
            let (sd, sdx) =
                reduce::sum_and_dot_map(dz, &x[s..s + plane], |d, v| (d, (v - mu) * k_std));
            sum_dz += sd;
            sum_dz_xhat += sdx;
        }
        let (k, shift, slope) = self.line(sum_dz, sum_dz_xhat);
        for s in self.runs {
            for (dx, &v) in dx_run(s).iter_mut().zip(&x[s..s + plane]) {
                *dx = k * *dx + shift + slope * ((v - mu) * k_std);
            }
        }
        (sum_dz, sum_dz_xhat)
    }

    /// `(k, shift, slope)` of `dx = k·dz + shift + slope·x̂`. In eval `dx = k·dz`; in training
    /// the mean and variance depend on x too: dx = k/m · (m·dz − Σdz − x̂·Σ(dz·x̂)).
    fn line(&self, sum_dz: f32, sum_dz_xhat: f32) -> (f32, f32, f32) {
        let k = self.g * self.k_std;
        if self.trained {
            (k, -k * sum_dz / self.m, -k * sum_dz_xhat / self.m)
        } else {
            (k, 0.0, 0.0)
        }
    }
}

/// The gradient reaching the output: `dy` itself, or through the fused pooling, a pooled `dy`
/// that each plane's winners spread back (into scratch, one plane at a time, exactly as
/// [`super::MaxPool2d`] would have written it).
enum Dy<'a> {
    Plain(&'a [f32]),
    Pooled {
        dy: &'a [f32],
        argmax: &'a [u32],
        out_plane: usize,
        /// See [`disjoint`].
        disjoint: bool,
    },
}

impl Dy<'_> {
    /// What [`Dy::run`] reads for the run at `s`: `dy`'s run itself, or the pooled plane's
    /// gradient and its winners.
    fn reads(&self, s: usize, plane: usize) -> (&[f32], Option<&[u32]>) {
        match *self {
            Dy::Plain(dy) => (&dy[s..s + plane], None),
            Dy::Pooled {
                dy,
                argmax,
                out_plane,
                ..
            } => {
                let r = s / plane * out_plane;
                (&dy[r..][..out_plane], Some(&argmax[r..][..out_plane]))
            }
        }
    }

    /// Prefetches what [`Dy::run`] will read for the run at `s`.
    fn prefetch(&self, s: usize, plane: usize) {
        let (dy, argmax) = self.reads(s, plane);
        prefetch(dy);
        if let Some(argmax) = argmax {
            prefetch(argmax);
        }
    }

    /// The `plane` values of the output gradient from `s` (the start of a run of the input).
    fn run<'s>(&'s self, s: usize, plane: usize, scratch: &'s mut [f32]) -> &'s [f32] {
        match self.reads(s, plane) {
            (dy, None) => dy,
            (dy, Some(argmax)) => {
                let dz = &mut scratch[..plane];
                let disjoint = matches!(*self, Dy::Pooled { disjoint: true, .. });
                unpool_plane(dy, argmax, dz, disjoint);
                dz
            }
        }
    }
}

/// `out = act(γ·(x − mean)·inv_std + β)` over one run: the vector kernel for a ReLU or none, a
/// plain loop for a GELU.
#[inline(always)]
fn normalise_run(act: Option<Activation>, a: &Affine, x: &[f32], out: &mut [f32]) {
    if act == Some(Activation::Gelu) {
        for (y, &v) in out.iter_mut().zip(x) {
            *y = gelu(a.g * ((v - a.mean) * a.inv_std) + a.b);
        }
    } else {
        batch_norm::normalise(a, x, out)
    }
}

/// Each of `runs` with the one after it, whose memory is prefetched while this one is read:
/// a channel's runs lie a C×H×W image apart, so every run starts where the hardware
/// prefetcher has not looked.
fn with_next<R: Iterator<Item = usize> + Clone>(
    runs: R,
) -> impl Iterator<Item = (usize, Option<usize>)> {
    runs.clone()
        .zip(runs.skip(1).map(Some).chain(std::iter::once(None)))
}

/// The mean and the sum of squared deviations of one channel, in f64: each run (`plane`
/// values from each start in `runs`) takes one pass while it is in cache, and the runs
/// are combined by the pairwise update of Chan, Golub & LeVeque (1979, "Updating formulae and
/// a pairwise algorithm for computing sample variances"), so memory is read once.
fn channel_moments(
    x: &[f32],
    runs: impl Iterator<Item = usize> + Clone,
    plane: usize,
) -> (f64, f64) {
    let (mut mean, mut m2) = (0.0f64, 0.0f64);
    for (k, (s, next)) in with_next(runs).enumerate() {
        if let Some(next) = next {
            prefetch(&x[next..next + plane]);
        }
        let run = &x[s..s + plane];
        // Deviations from a first guess of the mean, summed too: that corrects the guess (so
        // the join below is not biased where the mean is large), and the squares lose no
        // digits to a mean far from zero. The guess is the mean of the run's first 16 values,
        // whose squared deviations from the run's mean alone sum to at least
        // 16·(guess − mean)², so the correction cancels at most plane/16 times m2 (a first
        // pass for the exact mean cost more: cifar-ref's batch norm forward 6.5 → 5.9 ms a
        // step without it, AVX-512 Zen 5).
        let head = &run[..plane.min(16)];
        let c = head.iter().sum::<f32>() / head.len() as f32;
        let (dev, dev_sq) = batch_norm::moments(run, c);
        let p = plane as f64;
        let run_mean = c as f64 + dev as f64 / p;
        let run_m2 = (dev_sq as f64 - (dev as f64).powi(2) / p).max(0.0);
        // Joining k runs (k·plane values) and one more (plane values) of equal size.
        let (delta, k) = (run_mean - mean, k as f64);
        mean += delta / (k + 1.0);
        m2 += run_m2 + delta * delta * k * p / (k + 1.0);
    }
    (mean, m2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check_layer, check_layer_on, initialised, no_ties, seeded};

    fn bn(input: &[usize]) -> BatchNorm {
        bn_with(input, BatchNormConfig::default())
    }

    /// Non-trivial γ and β, so that their effect shows in the checks.
    fn bn_with(input: &[usize], cfg: BatchNormConfig) -> BatchNorm {
        let mut b = initialised(BatchNorm::new(input, cfg).unwrap(), 1);
        let c = b.channels;
        if let Some(g) = &mut b.gamma {
            g.value = (0..c).map(|i| 0.5 + 0.3 * i as f32).collect();
        }
        b.beta.value = (0..c).map(|i| 0.1 * i as f32 - 0.2).collect();
        b
    }

    #[test]
    fn batchnorm_grad_conv_train_batch3_odd() {
        check_layer(&mut bn(&[2, 3, 5]), &[3, 2, 3, 5], Mode::Train { seed: 0 });
        // Planes longer than the vectorised sums' lane width, with a remainder.
        check_layer(&mut bn(&[2, 5, 7]), &[2, 2, 5, 7], Mode::Train { seed: 0 });
    }

    /// With a max pooling fused: 2×2 windows on odd planes (the last row and column dropped)
    /// and overlapping 3×3 windows moved by 2, after a GELU or no activation, in training and
    /// evaluation, and after a ReLU in evaluation. The inputs are far enough apart that no
    /// probe changes a window's winner (within a channel, normalising keeps their order); with
    /// the ReLU, β puts its kink midway between two inputs, beyond any probe's reach (in training
    /// the batch statistics would move it: that case is checked bit for bit against the
    /// separate layers in `net::graph`). A flat input cannot pool.
    #[test]
    fn batchnorm_grad_with_fused_max_pool() {
        let train = Mode::Train { seed: 0 };
        let cases = [
            (2, 2, Some(Activation::Gelu), train),
            (3, 2, None, train),
            (2, 2, Some(Activation::Gelu), Mode::Eval),
            (3, 2, None, Mode::Eval),
            (2, 2, Some(Activation::Relu), Mode::Eval),
            (3, 2, Some(Activation::Relu), Mode::Eval),
        ];
        for (k, stride, act, mode) in cases {
            let mut b = bn(&[2, 5, 7]);
            if let Some(act) = act {
                assert!(b.fuse_activation(act));
            }
            if act == Some(Activation::Relu) {
                // z = γ·x + β is 0 at x = −0.025, midway between inputs (0.05·i − 5.25).
                let gamma = b.gamma.as_ref().unwrap().value.to_vec();
                b.beta.value = gamma.iter().map(|g| 0.025 * g).collect();
            }
            assert!(b.fuse_max_pool(k, stride));
            assert_eq!(b.out_shape(), [2, 2, 3]);
            check_layer_on(&mut b, &no_ties(&[3, 2, 5, 7]), mode);
        }
        assert!(!bn(&[4]).fuse_max_pool(2, 2));
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
        let rm = b.running_mean.value[0];
        let xs: Vec<f32> = (0..4)
            .flat_map(|i| data(&x)[i * 12..][..4].to_vec())
            .collect();
        let batch_mean = xs.iter().sum::<f32>() / 16.0;
        assert!((rm - 0.1 * batch_mean).abs() < 1e-5);
        // Eval with running statistics equal to the batch's reproduces the training output.
        let var = xs.iter().map(|v| (v - batch_mean).powi(2)).sum::<f32>() / 16.0;
        b.running_mean.value.to_mut()[0] = batch_mean;
        b.running_var.value.to_mut()[0] = var;
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
        assert!((b.running_mean.value[0] - 0.4 * batch_mean).abs() < 1e-5);
        let err = BatchNorm::new(&[3], BatchNormConfig { eps: 0.0, ..cfg })
            .err()
            .unwrap();
        assert!(err.contains("eps"), "{err}");
    }

    #[test]
    fn with_next_pairs_each_run_with_the_following_one() {
        let pairs: Vec<_> = with_next([0, 12, 24].into_iter()).collect();
        assert_eq!(pairs, [(0, Some(12)), (12, Some(24)), (24, None)]);
        assert_eq!(with_next([5].into_iter()).collect::<Vec<_>>(), [(5, None)]);
        assert_eq!(with_next(std::iter::empty()).count(), 0);
    }

    /// The per-run two-pass statistics joined by Chan's update match the plain f64 two-pass
    /// mean and variance, also where the mean dwarfs the spread (a one-pass Σx² would lose
    /// every digit there), on runs of 1, odd and lane-multiple lengths.
    #[test]
    fn channel_moments_match_plain_two_pass_in_f64() {
        for (n, plane, offset) in [
            (1, 1, 0.0),
            (5, 1, 3.0),
            (3, 7, 1e4),
            (4, 16, -2.0),
            (2, 33, 1e5),
        ] {
            let x = seeded(&[n * plane], 11).mapv(|v| v + offset);
            let x = data(&x);
            let (mean, m2) = channel_moments(x, (0..n).map(|i| i * plane), plane);
            let want_mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
            let want_m2: f64 = x.iter().map(|&v| (v as f64 - want_mean).powi(2)).sum();
            assert!(
                (mean - want_mean).abs() <= 1e-6 * want_mean.abs().max(1.0),
                "{mean} {want_mean}"
            );
            assert!(
                (m2 - want_m2).abs() <= 1e-4 * want_m2.max(1e-6),
                "n {n} plane {plane}: {m2} {want_m2}"
            );
        }
        // The first guess of each run's mean (its first 16 values) far off: 32×32 planes whose
        // first 16 values sit 40 deviations above the rest, on a mean of 1000.
        let mut x = data(&seeded(&[3 * 1024], 12)).to_vec();
        for (i, v) in x.iter_mut().enumerate() {
            *v += if i % 1024 < 16 { 1040.0 } else { 1000.0 };
        }
        let (mean, m2) = channel_moments(&x, [0, 1024, 2048].into_iter(), 1024);
        let want_mean = x.iter().map(|&v| v as f64).sum::<f64>() / x.len() as f64;
        let want_m2: f64 = x.iter().map(|&v| (v as f64 - want_mean).powi(2)).sum();
        assert!(
            (mean - want_mean).abs() <= 1e-6 * want_mean,
            "{mean} {want_mean}"
        );
        assert!((m2 - want_m2).abs() <= 1e-4 * want_m2, "{m2} {want_m2}");
        // Hand-worked: runs [1, 3] and [5, 7]: mean 4, squared deviations 9 + 1 + 1 + 9.
        assert_eq!(
            channel_moments(&[1.0, 3.0, 5.0, 7.0], [0, 2].into_iter(), 2),
            (4.0, 20.0)
        );
    }
}
