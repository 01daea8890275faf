//! What the general recipe decides once the training set is loaded and its size known: a
//! smaller batch for a small set, and no augmentation for a run too short to profit from it
//! (the measurements behind both are in `train::recipe`). Each decision is written back into
//! the run's settings, so that a checkpoint resumes with it, and explained in one phrase for
//! the run's header.

use super::config::TrainConfig;
use crate::data::Augment;

/// The smallest batch the adaptation goes down to.
const MIN_BATCH: usize = 16;

/// Halves the batch (not below 16, nor below 1 for a tiny set) until an epoch of `images` has
/// `cfg.min_epoch_steps` steps, scaling the learning rate with it; why, when it changed.
pub fn fit_batch(cfg: &mut TrainConfig, images: usize) -> Option<String> {
    let wanted = std::mem::take(&mut cfg.min_epoch_steps);
    if wanted == 0 {
        return None;
    }
    let old = cfg.batch_size;
    let batch = smaller_batch(old, images, wanted);
    if batch == old {
        return None;
    }
    if let Some(exponent) = cfg.lr_batch_exponent {
        cfg.lr = super::recipe::scale_lr(cfg.lr, old, batch, exponent);
    }
    cfg.batch_size = batch;
    Some(format!(
        "from {old}: {images} images made {} steps an epoch, under {wanted}; --batch-size sets it",
        images.div_ceil(old)
    ))
}

/// `batch`, halved until `images` make `min_steps` steps of it or it reaches 16, and until it
/// is no larger than `images`.
fn smaller_batch(mut batch: usize, images: usize, min_steps: u64) -> usize {
    while (batch > MIN_BATCH && (images.div_ceil(batch) as u64) < min_steps) || batch > images {
        batch /= 2;
    }
    batch.max(1)
}

/// Drops the augmentation when the run plans fewer than `cfg.augment_from_steps` steps; why,
/// when it did.
pub fn augmentation(cfg: &mut TrainConfig, steps_per_epoch: u64) -> Option<String> {
    let from = std::mem::take(&mut cfg.augment_from_steps);
    let planned = cfg.epochs * steps_per_epoch;
    if planned >= from || cfg.augment.is_none() {
        return None;
    }
    let why = format!(
        "none ({} left out: {planned} steps planned, under the {from} it pays from; --augment \
         auto keeps it)",
        cfg.augment.describe()
    );
    cfg.augment = Augment::none();
    Some(why)
}

#[cfg(test)]
mod tests {
    use super::smaller_batch;

    #[test]
    fn a_small_set_gets_a_smaller_batch() {
        // 2,000 CIFAR images less 10%: 15 steps of 128, 57 of 32.
        assert_eq!(smaller_batch(128, 1800, 50), 32);
        // mnist-mini: 43 steps of 64, 85 of 32.
        assert_eq!(smaller_batch(64, 2698, 50), 32);
        // Large sets keep theirs; the floor is 16 however few the steps.
        assert_eq!(smaller_batch(128, 45_000, 50), 128);
        assert_eq!(smaller_batch(64, 3200, 50), 64);
        assert_eq!(smaller_batch(128, 450, 50), 16);
        // Never larger than the set.
        assert_eq!(smaller_batch(64, 10, 50), 8);
        assert_eq!(smaller_batch(64, 1, 50), 1);
    }
}
