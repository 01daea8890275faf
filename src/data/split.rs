//! Holding out a validation set from the training set.
//!
//! Stratified and seeded: from each class, `round(fraction · count)` images chosen by a seeded
//! shuffle go to validation (at least one image overall), so the class balance of both parts
//! follows the original and the same seed always holds out the same images. Both parts keep the
//! original order of their images.

use super::Dataset;
use crate::rng::{Rng, derive};
use anyhow::{Result, bail};

/// Stream label separating the split's randomness from the other uses of the run seed.
const SPLIT_STREAM: u64 = 0x0053_504C_4954; // "SPLIT"

/// Which images of `ds` go to validation: `is_val[i]`.
pub fn val_mask(ds: &Dataset, fraction: f32, seed: u64) -> Vec<bool> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); ds.classes.len()];
    for (i, &l) in ds.labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut rng = Rng::new(derive(seed, SPLIT_STREAM));
    let mut is_val = vec![false; ds.len()];
    let mut any = false;
    for members in &mut by_class {
        rng.shuffle(members);
        let take = (members.len() as f64 * fraction as f64).round() as usize;
        for &i in &members[..take.min(members.len())] {
            is_val[i] = true;
            any = true;
        }
    }
    if !any && fraction > 0.0 {
        // Tiny sets: hold out one image of the largest class rather than none.
        if let Some(members) = by_class
            .iter()
            .max_by_key(|m| m.len())
            .filter(|m| !m.is_empty())
        {
            is_val[members[0]] = true;
        }
    }
    is_val
}

/// Splits `ds` into (train, validation) holding out `fraction` of each class, seeded.
pub fn carve(ds: &Dataset, fraction: f32, seed: u64) -> Result<(Dataset, Dataset)> {
    let is_val = val_mask(ds, fraction, seed);
    let (val, train): (Vec<usize>, Vec<usize>) = (0..ds.len()).partition(|&i| is_val[i]);
    if train.is_empty() || val.is_empty() {
        bail!(
            "{}: a validation split of {fraction} of {} images leaves {} for training and {} \
             for validation",
            ds.name,
            ds.len(),
            train.len(),
            val.len()
        );
    }
    let pct = fraction * 100.0;
    let train_name = format!("{} less {pct:.0}% held out", ds.name);
    let val_name = format!("{pct:.0}% of {} held out", ds.name);
    Ok((ds.subset(&train, train_name), ds.subset(&val, val_name)))
}
