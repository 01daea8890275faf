//! Epoch shuffling and batch filling.
//!
//! An epoch visits the images in the order [`epoch_order`] gives, a fresh permutation per epoch
//! that depends only on `(seed, epoch)`. [`fill_batch`] turns the images at a slice of that order
//! into an `N×C×H×W` `f32` tensor, augmenting and normalising in one pass per image, into buffers
//! that are reused from batch to batch (only the last, smaller batch of an epoch reallocates).

use super::augment::{Augment, Placement};
use super::{Dataset, Normalization};
use crate::rng::{Rng, derive};
use crate::tensor::{self, Tensor};
use rayon::prelude::*;

/// Stream label separating the shuffle's randomness from the other uses of the run seed.
const SHUFFLE_STREAM: u64 = 0x0053_4855_4646_4C45; // "SHUFFLE"

/// The order in which epoch `epoch` visits `n` images: a permutation of `0..n` that depends only
/// on `(seed, epoch)`.
pub fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(derive(derive(seed, SHUFFLE_STREAM), epoch)).shuffle(&mut order);
    order
}

/// Fills `x` with the images of `ds` at `indices`, augmented by `aug` (with the random choices
/// of `(seed, epoch)`; pass [`Augment::none`] for evaluation) and normalised by `norm`, and
/// `labels` with their labels.
///
/// Shapes: `indices.len()` images of `C×H×W` → `x`: `N×C×H×W`, `labels`: `N`.
#[allow(clippy::too_many_arguments)]
pub fn fill_batch(
    ds: &Dataset,
    indices: &[usize],
    norm: &Normalization,
    aug: &Augment,
    seed: u64,
    epoch: u64,
    x: &mut Tensor,
    labels: &mut Vec<usize>,
) {
    let [c, h, w] = ds.shape;
    let len = c * h * w;
    tensor::reuse(x, &[indices.len(), c, h, w]);
    labels.clear();
    labels.extend(indices.iter().map(|&i| ds.labels[i] as usize));
    let epoch_seed = Augment::epoch_seed(seed, epoch);
    tensor::data_mut(x)
        .par_chunks_mut(len)
        .zip(indices.par_iter())
        .with_min_len(8)
        .for_each(|(dst, &i)| {
            let placement = aug.placement(epoch_seed, i);
            place_normalized(ds.image(i), ds.shape, placement, norm, dst);
        });
}

/// Writes the normalised, placed image into `dst`: the fused form of
/// `norm.apply(&placement.apply(image))`.
pub fn place_normalized(
    image: &[u8],
    [c, h, w]: [usize; 3],
    p: Placement,
    norm: &Normalization,
    dst: &mut [f32],
) {
    let plane = h * w;
    for ch in 0..c {
        let (scale, bias) = norm.affine(ch);
        let src = &image[ch * plane..(ch + 1) * plane];
        let out = &mut dst[ch * plane..(ch + 1) * plane];
        for (y, row) in out.chunks_exact_mut(w).enumerate() {
            let Some(sy) = p.source_y(y, h) else {
                row.fill(bias); // a zero pixel, normalised
                continue;
            };
            let src_row = &src[sy * w..(sy + 1) * w];
            if p.dx == 0 && !p.flip {
                for (d, &s) in row.iter_mut().zip(src_row) {
                    *d = s as f32 * scale + bias;
                }
            } else {
                for (x, d) in row.iter_mut().enumerate() {
                    *d = match p.source_x(x, w) {
                        Some(sx) => src_row[sx] as f32 * scale + bias,
                        None => bias,
                    };
                }
            }
        }
    }
}

/// A batch buffer reused across batches: call [`Batcher::fill`], then read `x` and `labels`.
#[derive(Debug)]
pub struct Batcher {
    /// `N×C×H×W` normalised images.
    pub x: Tensor,
    /// `N` class indices.
    pub labels: Vec<usize>,
}

impl Default for Batcher {
    fn default() -> Self {
        Batcher {
            x: Tensor::zeros(vec![0]),
            labels: Vec::new(),
        }
    }
}

impl Batcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// [`fill_batch`] into this batcher's buffers.
    pub fn fill(
        &mut self,
        ds: &Dataset,
        indices: &[usize],
        norm: &Normalization,
        aug: &Augment,
        seed: u64,
        epoch: u64,
    ) {
        fill_batch(
            ds,
            indices,
            norm,
            aug,
            seed,
            epoch,
            &mut self.x,
            &mut self.labels,
        );
    }
}
