//! A first layer fitted to the data: a `k×k` convolution (stride 1, no padding) whose filters
//! whiten the image's `k×k` patches, as in Keller Jordan's airbench ("94% on CIFAR-10 in 3.29
//! Seconds on a Single GPU", 2024).
//!
//! Before training, the uncentred covariance `Σ = E[p pᵀ]` of every `k×k` patch `p` (flattened
//! `(c, dy, dx)`, the weight's own order) of the first images is decomposed, `Σ = V Λ Vᵀ`; filter
//! `i` is `vᵢ / √(λᵢ + ε)` and filter `d + i` its negation (`d = C·k²`), so the layer has `2·d`
//! outputs and a following GELU loses nothing (`gelu(z) − gelu(−z) = z`). The filters stay
//! fixed (a buffer, no gradient); the bias trains, for the first `bias_epochs` epochs only when
//! that is set.
//!
//! Shapes: `C×H×W` → `2·C·k² × (H−k+1) × (W−k+1)`.

use super::conv::{Conv2d, Conv2dConfig};
use super::{Layer, Mode, Param};
use crate::kernels::eigen::symmetric_eigen;
use crate::tensor::{Tensor, data, fmt_shape};
use rayon::prelude::*;

/// Images per partial sum of the covariance: fixed, so the sum's order never depends on the
/// thread count.
const IMAGES_PER_PART: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WhitenConfig {
    /// Side of the patches (and of the kernel).
    pub k: usize,
    /// Added to each eigenvalue before the square root: keeps the filters of near-constant
    /// directions bounded (airbench: 5e-4).
    pub eps: f32,
    /// How many training images (a seeded random sample) the covariance is taken over.
    pub images: usize,
    /// The bias trains in this many epochs, then stays (`None`: always).
    pub bias_epochs: Option<u64>,
}

impl Default for WhitenConfig {
    /// airbench94's settings.
    fn default() -> Self {
        WhitenConfig {
            k: 2,
            eps: 5e-4,
            images: 5000,
            bias_epochs: None,
        }
    }
}

pub struct Whiten {
    cfg: WhitenConfig,
    channels: usize,
    conv: Conv2d,
}

impl Whiten {
    /// Shapes: see the module doc.
    pub fn new(input: &[usize], cfg: WhitenConfig) -> Result<Self, String> {
        let &[c, _, _] = input else {
            return Err(format!("needs a C×H×W input, got {}", fmt_shape(input)));
        };
        if cfg.k == 0 || cfg.images == 0 || !(cfg.eps > 0.0 && cfg.eps.is_finite()) {
            return Err(format!(
                "needs k ≥ 1, images ≥ 1 and eps > 0, got k {}, images {}, eps {}",
                cfg.k, cfg.images, cfg.eps
            ));
        }
        let out = c
            .checked_mul(cfg.k)
            .and_then(|v| v.checked_mul(cfg.k))
            .and_then(|v| v.checked_mul(2))
            .ok_or_else(|| format!("a {0}×{0} window is too large", cfg.k))?;
        let conv_cfg = Conv2dConfig {
            out_channels: out,
            kernel: (cfg.k, cfg.k),
            ..Conv2dConfig::default()
        };
        let mut conv = Conv2d::new(input, conv_cfg, false)?;
        conv.freeze_weight();
        if let (_, Some(bias)) = conv.params_mut() {
            bias.train_epochs = cfg.bias_epochs;
        }
        Ok(Whiten {
            cfg,
            channels: c,
            conv,
        })
    }

    /// `Σ = E[p pᵀ]` over every `k×k` patch of `x` (`N×C×H×W`), `d×d` row-major, `d = C·k²`.
    fn patch_covariance(&self, x: &Tensor) -> Vec<f64> {
        let (c, k) = (self.channels, self.cfg.k);
        let (h, w) = (x.shape()[2], x.shape()[3]);
        let d = c * k * k;
        let (oh, ow) = (h + 1 - k, w + 1 - k);
        let image = c * h * w;
        let parts: Vec<Vec<f64>> = data(x)
            .par_chunks(IMAGES_PER_PART * image)
            .map(|images| {
                let mut sum = vec![0.0f64; d * d];
                let mut p = vec![0.0f64; d];
                for img in images.chunks(image) {
                    for (y, xx) in (0..oh).flat_map(|y| (0..ow).map(move |xx| (y, xx))) {
                        for ch in 0..c {
                            for dy in 0..k {
                                for dx in 0..k {
                                    p[(ch * k + dy) * k + dx] =
                                        img[(ch * h + y + dy) * w + xx + dx] as f64;
                                }
                            }
                        }
                        for i in 0..d {
                            for j in i..d {
                                sum[i * d + j] += p[i] * p[j];
                            }
                        }
                    }
                }
                sum
            })
            .collect();
        let patches = (x.shape()[0] * oh * ow) as f64;
        let mut cov = vec![0.0f64; d * d];
        for part in &parts {
            cov.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
        for i in 0..d {
            for j in i..d {
                let v = cov[i * d + j] / patches;
                cov[i * d + j] = v;
                cov[j * d + i] = v;
            }
        }
        cov
    }
}

impl Layer for Whiten {
    fn out_shape(&self) -> &[usize] {
        self.conv.out_shape()
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> &Tensor {
        self.conv.forward(x, mode)
    }

    fn output(&self) -> &Tensor {
        self.conv.output()
    }

    fn backward(&mut self, x: &Tensor, dy: &Tensor) -> &Tensor {
        self.conv.backward(x, dy)
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        self.conv.visit_params(f)
    }

    fn macs(&self) -> u64 {
        self.conv.macs()
    }

    fn kept_values(&self, n: usize) -> u128 {
        self.conv.kept_values(n)
    }

    fn item_buffer_values(&self) -> u128 {
        self.conv.item_buffer_values()
    }

    fn set_needs_input_grad(&mut self, needed: bool) {
        self.conv.set_needs_input_grad(needed)
    }

    fn data_images(&self) -> usize {
        self.cfg.images
    }

    /// The filters from the patches of `x` (see the module doc).
    fn fit_to_data(&mut self, x: &Tensor) {
        let d = self.channels * self.cfg.k * self.cfg.k;
        let (values, vectors) = symmetric_eigen(&self.patch_covariance(x), d);
        let eps = self.cfg.eps as f64;
        let (weight, _) = self.conv.params_mut();
        let w = weight.value.to_mut();
        for (i, &lambda) in values.iter().enumerate() {
            // Rounding can leave an eigenvalue of a singular covariance slightly negative.
            let scale = 1.0 / (lambda.max(0.0) + eps).sqrt();
            for j in 0..d {
                let v = (vectors[j * d + i] * scale) as f32;
                w[i * d + j] = v;
                w[(d + i) * d + j] = -v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::ParamKind;
    use crate::layers::gradcheck::{check_layer, initialised, seeded};

    fn whiten(input: &[usize], k: usize) -> Whiten {
        let cfg = WhitenConfig {
            k,
            images: 8,
            ..WhitenConfig::default()
        };
        initialised(Whiten::new(input, cfg).unwrap(), 2)
    }

    /// After fitting, the filters' responses to the patches they were fitted on are white: the
    /// first `d` outputs have second moments `λ/(λ + ε)` ≈ 1 and are uncorrelated.
    #[test]
    fn fitted_filters_whiten_their_patches() {
        // Correlated channels: the second is the first plus a little noise.
        let base = seeded(&[8, 1, 6, 7], 3);
        let noise = seeded(&[8, 1, 6, 7], 4);
        let x = Tensor::from_shape_fn(vec![8, 2, 6, 7], |i| {
            let b = base[[i[0], 0, i[2], i[3]]];
            if i[1] == 0 {
                b
            } else {
                b + 0.3 * noise[[i[0], 0, i[2], i[3]]]
            }
        });
        let mut l = whiten(&[2, 6, 7], 2);
        assert_eq!(l.out_shape(), [16, 5, 6]);
        l.fit_to_data(&x);
        let y = l.forward(&x, Mode::Eval).clone();
        let d = 8;
        let per = 5 * 6;
        let mut m = vec![0.0f64; d * d];
        for n in 0..8 {
            for t in 0..per {
                let at = |o: usize| (y[[n, o, t / 6, t % 6]]) as f64;
                for a in 0..d {
                    for b in 0..d {
                        m[a * d + b] += at(a) * at(b) / (8 * per) as f64;
                    }
                }
            }
        }
        for a in 0..d {
            for b in 0..d {
                let want = if a == b { 1.0 } else { 0.0 };
                assert!(
                    (m[a * d + b] - want).abs() < 0.02,
                    "E[y{a} y{b}] = {}",
                    m[a * d + b]
                );
            }
        }
        // The second half negates the first.
        assert_eq!(y[[3, 9, 2, 1]], -y[[3, 1, 2, 1]]);
    }

    /// The weight is a buffer without a gradient; the bias trains, and its gradient (and the
    /// input's, when asked for) checks against finite differences.
    #[test]
    fn only_the_bias_trains() {
        let mut l = whiten(&[3, 5, 4], 2);
        l.fit_to_data(&seeded(&[8, 3, 5, 4], 5));
        let mut kinds = Vec::new();
        l.visit_params(&mut |p| kinds.push((p.name, p.kind)));
        assert_eq!(
            kinds,
            [
                ("weight", ParamKind::Buffer),
                ("bias", ParamKind::Trainable)
            ]
        );
        check_layer(&mut l, &[2, 3, 5, 4], Mode::Train { seed: 0 });
        // As a first layer (no input gradient) the weight's gradient is never computed.
        let mut l = whiten(&[3, 5, 4], 2);
        l.fit_to_data(&seeded(&[8, 3, 5, 4], 5));
        l.set_needs_input_grad(false);
        let x = seeded(&[2, 3, 5, 4], 6);
        let y = l.forward(&x, Mode::Train { seed: 0 }).clone();
        l.visit_params(&mut |p| p.grad.fill(0.0));
        l.backward(&x, &y);
        l.visit_params(&mut |p| {
            if p.name == "bias" {
                // d(Σ y²/2)/d bias_o = Σ y_o over images and positions.
                for (o, g) in p.grad.iter().enumerate() {
                    let want: f32 = (0..2)
                        .flat_map(|n| (0..4).flat_map(move |i| (0..3).map(move |j| (n, i, j))))
                        .map(|(n, i, j)| y[[n, o, i, j]])
                        .sum();
                    assert!(
                        (g - want).abs() < 1e-3 * (1.0 + want.abs()),
                        "{g} vs {want}"
                    );
                }
            } else {
                assert!(p.grad.is_empty(), "no gradient for the frozen weight");
            }
        });
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = WhitenConfig {
            eps: 0.0,
            ..WhitenConfig::default()
        };
        assert!(Whiten::new(&[3, 8, 8], bad).err().unwrap().contains("eps"));
        assert!(Whiten::new(&[12], WhitenConfig::default()).is_err());
    }
}
