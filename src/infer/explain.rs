//! Occlusion maps: which pixels a prediction rests on (Zeiler & Fergus 2014).
//!
//! A square patch slides over the normalised input; under the patch every channel is set to 0,
//! the training set's mean after normalisation (a neutral grey, or black background for digits).
//! Each position costs one forward pass. A pixel's heat is the drop in the predicted class's
//! probability, averaged over every patch position that covers it: positive where hiding the
//! pixel hurts the prediction (evidence for it), negative where hiding it helps.

use crate::infer::tta::{self, Tta};
use crate::net::graph::Network;
use crate::net::loss::softmax;
use crate::tensor::{Tensor, data_mut};

/// Patch geometry, how many occluded copies go through the network at once, and the
/// test-time augmentation the prediction being explained used (the map must measure the same
/// probability the prediction reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OcclusionConfig {
    pub patch: usize,
    pub stride: usize,
    pub batch: usize,
    pub tta: Tta,
}

impl OcclusionConfig {
    /// A patch of about a seventh of the image side (4 pixels on 28×28: a stroke's width),
    /// moved one pixel at a time on small inputs.
    pub fn for_input(h: usize, w: usize) -> Self {
        let side = h.max(w);
        let patch = ((side as f64 / 7.0).round() as usize).clamp(2, side.max(2));
        OcclusionConfig {
            patch,
            stride: (side / 64).max(1),
            batch: 128,
            tta: Tta::None,
        }
    }
}

/// Start offsets of a patch of `patch` along an axis of `len`, `stride` apart, the last flush
/// with the end so that every pixel is covered.
fn starts(len: usize, patch: usize, stride: usize) -> Vec<usize> {
    let last = len.saturating_sub(patch);
    let mut v: Vec<usize> = (0..=last).step_by(stride.max(1)).collect();
    if v.last() != Some(&last) {
        v.push(last);
    }
    v
}

/// The occlusion map of one normalised image for `class`, with probabilities
/// `softmax(logits / temperature)`.
///
/// Shapes: `x` is one image `C×H×W` (flat) → heat `H×W` (flat).
pub fn occlusion(
    net: &mut Network,
    x: &[f32],
    [c, h, w]: [usize; 3],
    class: usize,
    temperature: f32,
    cfg: &OcclusionConfig,
) -> Vec<f32> {
    let k = net.classes;
    let len = c * h * w;
    debug_assert_eq!(x.len(), len);
    let patch = cfg.patch.min(h).min(w).max(1);
    let mut scratch = Tensor::zeros(vec![0]);
    let mut prob = |net: &mut Network, batch: &Tensor| -> Vec<f32> {
        let mut logits = Vec::new();
        tta::logits(net, batch, cfg.tta, &mut scratch, &mut logits);
        logits.iter_mut().for_each(|z| *z /= temperature);
        let mut p = vec![0f32; logits.len()];
        softmax(&logits, k, &mut p);
        p.chunks(k).map(|row| row[class]).collect()
    };
    let one = Tensor::from_shape_vec(vec![1, c, h, w], x.to_vec()).expect("C×H×W image");
    let base = prob(net, &one)[0];
    let positions: Vec<(usize, usize)> = starts(h, patch, cfg.stride)
        .into_iter()
        .flat_map(|top| {
            starts(w, patch, cfg.stride)
                .into_iter()
                .map(move |left| (top, left))
        })
        .collect();
    let (mut sum, mut count) = (vec![0f32; h * w], vec![0u32; h * w]);
    let mut batch = Tensor::zeros(vec![0]);
    for chunk in positions.chunks(cfg.batch.max(1)) {
        crate::tensor::reuse(&mut batch, &[chunk.len(), c, h, w]);
        for (img, &(top, left)) in data_mut(&mut batch).chunks_mut(len).zip(chunk) {
            img.copy_from_slice(x);
            for plane in img.chunks_mut(h * w) {
                for row in plane.chunks_mut(w).skip(top).take(patch) {
                    row[left..left + patch].fill(0.0);
                }
            }
        }
        for (&(top, left), p) in chunk.iter().zip(prob(net, &batch)) {
            for y in top..top + patch {
                for xx in left..left + patch {
                    sum[y * w + xx] += base - p;
                    count[y * w + xx] += 1;
                }
            }
        }
    }
    sum.iter()
        .zip(&count)
        .map(|(&s, &n)| s / n.max(1) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::spec;

    #[test]
    fn patch_positions_cover_every_pixel() {
        assert_eq!(starts(28, 4, 1).len(), 25);
        assert_eq!(starts(10, 4, 3), vec![0, 3, 6]);
        assert_eq!(starts(11, 4, 3), vec![0, 3, 6, 7]);
        assert_eq!(starts(3, 4, 1), vec![0]);
    }

    /// A network that reads one pixel: flatten, then a dense layer whose class-0 logit is
    /// 5 × pixel (0, 0) and class-1 logit 0. Hiding that pixel is the only thing that matters.
    #[test]
    fn only_the_pixel_the_network_reads_lights_up() {
        let s = spec::parse("input 1 6 6\nflatten\ndense classes\n").expect("spec");
        let mut net =
            Network::build(&s, 2, Some(1), &crate::net::BuildOptions::default()).expect("build");
        net.visit_params(&mut |name, p| {
            let v = p.value.to_mut();
            v.fill(0.0);
            if name.ends_with("weight") {
                // Dense weight: classes × features (row-major); feature 0 is pixel (0, 0).
                v[0] = 5.0;
            }
        });
        let mut x = vec![0f32; 36];
        x[0] = 1.0;
        let cfg = OcclusionConfig {
            patch: 2,
            stride: 1,
            batch: 7,
            tta: Tta::None,
        };
        let heat = occlusion(&mut net, &x, [1, 6, 6], 0, 1.0, &cfg);
        // Base p0 = σ(5) = 0.99331; with the pixel hidden, p0 = 1/2: a drop of 0.49331, and
        // pixel (0, 0) lies under one patch position only.
        assert!((heat[0] - 0.493_307).abs() < 1e-4, "{}", heat[0]);
        // Pixel (1, 1) lies under 4 positions, one of which hides (0, 0).
        assert!((heat[7] - 0.493_307 / 4.0).abs() < 1e-4, "{}", heat[7]);
        assert!(heat[14..].iter().all(|&v| v.abs() < 1e-6));

        // With flip test-time augmentation the probability is that of the mean logit,
        // ½(5·x(0,0) + 5·x(0,5)) = 2.5: base σ(2.5) = 0.924142, hidden 1/2; the map measures
        // that drop, the one the prediction reports.
        let flip = OcclusionConfig {
            tta: Tta::Flip,
            ..cfg
        };
        let heat = occlusion(&mut net, &x, [1, 6, 6], 0, 1.0, &flip);
        assert!((heat[0] - 0.424_142).abs() < 1e-4, "{}", heat[0]);
    }
}
