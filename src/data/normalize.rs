//! Per-channel input normalisation: `x = (p/255 − mean[c]) / std[c]`.
//!
//! The statistics come from the training set and are stored in the model file, so evaluation and
//! prediction preprocess exactly as training did. For reference, MNIST's are mean 0.1307 and
//! std 0.3081 (the figures quoted with the data and in the PyTorch MNIST example).

use super::Dataset;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Mean and standard deviation of each channel, of pixel values scaled to [0, 1].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalization {
    /// Leaves pixels at `p/255` (mean 0, std 1) for `channels` channels.
    pub fn identity(channels: usize) -> Self {
        Normalization {
            mean: vec![0.0; channels],
            std: vec![1.0; channels],
        }
    }

    /// Statistics of `ds` (population std over every pixel of each channel). Counts a histogram
    /// of byte values per channel, so the sums are exact; a constant channel gets std 1.
    pub fn from_dataset(ds: &Dataset) -> Self {
        let [c, h, w] = ds.shape;
        let plane = h * w;
        let mut hist = vec![[0u64; 256]; c];
        for img in ds.images.chunks_exact(c * plane) {
            for (ch, pixels) in img.chunks_exact(plane).enumerate() {
                let hc = &mut hist[ch];
                for &p in pixels {
                    hc[p as usize] += 1;
                }
            }
        }
        let (mut mean, mut std) = (Vec::with_capacity(c), Vec::with_capacity(c));
        for hc in &hist {
            let n: u64 = hc.iter().sum();
            let (mut s, mut s2) = (0f64, 0f64);
            for (v, &k) in hc.iter().enumerate() {
                let x = v as f64 / 255.0;
                s += k as f64 * x;
                s2 += k as f64 * x * x;
            }
            let m = if n > 0 { s / n as f64 } else { 0.0 };
            let var = if n > 0 {
                (s2 / n as f64 - m * m).max(0.0)
            } else {
                0.0
            };
            let sd = var.sqrt();
            mean.push(m as f32);
            std.push(if sd > 1e-6 { sd as f32 } else { 1.0 });
        }
        Normalization { mean, std }
    }

    /// Checks the statistics fit `channels` channels and are usable (finite, std > 0), e.g.
    /// after reading them from a model file.
    pub fn check(&self, channels: usize) -> Result<()> {
        if self.mean.len() != channels || self.std.len() != channels {
            bail!(
                "normalisation has {} means and {} standard deviations for {channels} channels",
                self.mean.len(),
                self.std.len()
            );
        }
        if let Some(c) = (0..channels)
            .find(|&c| !(self.mean[c].is_finite() && self.std[c].is_finite() && self.std[c] > 0.0))
        {
            bail!(
                "normalisation of channel {c} is unusable: mean {}, std {}",
                self.mean[c],
                self.std[c]
            );
        }
        Ok(())
    }

    /// `(scale, bias)` of channel `c` such that `x = p·scale + bias`; a std that is zero or not
    /// finite counts as 1.
    pub fn affine(&self, c: usize) -> (f32, f32) {
        let sd = self.std[c];
        let sd = if sd.is_finite() && sd > 0.0 { sd } else { 1.0 };
        (1.0 / (255.0 * sd), -self.mean[c] / sd)
    }

    /// Normalises one `C×H×W` image into `out` (same length).
    pub fn apply(&self, image: &[u8], shape: [usize; 3], out: &mut [f32]) {
        let plane = shape[1] * shape[2];
        debug_assert_eq!(image.len(), shape[0] * plane);
        debug_assert_eq!(out.len(), image.len());
        for (c, (src, dst)) in image
            .chunks_exact(plane)
            .zip(out.chunks_exact_mut(plane))
            .enumerate()
        {
            let (scale, bias) = self.affine(c);
            for (d, &p) in dst.iter_mut().zip(src) {
                *d = p as f32 * scale + bias;
            }
        }
    }
}
