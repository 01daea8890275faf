//! Training-time augmentation: random translations (crop of a zero-padded image, or a small
//! shift) and horizontal flips.
//!
//! Every transform here is a [`Placement`]: an optional horizontal flip followed by a
//! translation by `(dy, dx)` pixels, with pixels that come from outside the image set to 0
//! (black, before normalisation). A random crop of `H×W` from the image zero-padded by `p` on
//! every side is exactly a translation by an offset uniform in `[-p, p]` on each axis, so both
//! `pad_crop` and `shift` are drawn as offsets and added.
//!
//! Every random choice is a pure function of `(seed, epoch, index of the image in the dataset)`,
//! so a resumed run replays the same augmentations and the thread count does not matter.

use super::DatasetKind;
use crate::rng::{Rng, derive};
use serde::{Deserialize, Serialize};

/// Stream label separating augmentation's randomness from the other uses of the run seed.
const AUGMENT_STREAM: u64 = 0x0041_5547_4D45_4E54; // "AUGMENT"

/// Which random transforms to apply to training images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    /// Random crop from the image zero-padded by this many pixels on each side (CIFAR: 4).
    pub pad_crop: usize,
    /// Horizontal flip with probability 1/2.
    pub flip: bool,
    /// Random translation by up to ± this many pixels on each axis (digits: 2).
    pub shift: usize,
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Self {
        Augment::default()
    }

    /// The usual recipe for a dataset: pad-4 crops and flips for colour photographs (CIFAR-10
    /// and 3-channel folders), ±2-pixel shifts for digits and other grey images (flips would turn
    /// digits into other shapes), and shifts plus flips for Fashion-MNIST's garments, which
    /// are left–right symmetric.
    pub fn for_dataset(kind: &DatasetKind, channels: usize) -> Self {
        match kind {
            DatasetKind::Mnist => Augment {
                shift: 2,
                ..Self::none()
            },
            DatasetKind::FashionMnist => Augment {
                shift: 2,
                flip: true,
                ..Self::none()
            },
            DatasetKind::Cifar10 => Augment {
                pad_crop: 4,
                flip: true,
                ..Self::none()
            },
            DatasetKind::Folder(_) if channels == 3 => Augment {
                pad_crop: 4,
                flip: true,
                ..Self::none()
            },
            DatasetKind::Folder(_) => Augment {
                shift: 2,
                ..Self::none()
            },
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Self::none()
    }

    /// The seed of one epoch's augmentations, from the run seed.
    pub fn epoch_seed(seed: u64, epoch: u64) -> u64 {
        derive(derive(seed, AUGMENT_STREAM), epoch)
    }

    /// The transform of image `index` (its index in the dataset, not in the batch) in the epoch
    /// whose seed is `epoch_seed` (see [`Augment::epoch_seed`]).
    pub fn placement(&self, epoch_seed: u64, index: usize) -> Placement {
        if self.is_none() {
            return Placement::IDENTITY;
        }
        let mut rng = Rng::new(derive(epoch_seed, index as u64));
        let flip = self.flip && rng.next_u64() >> 63 == 1;
        let offset = |rng: &mut Rng, r: usize| rng.below(2 * r + 1) as isize - r as isize;
        let (mut dy, mut dx) = (0, 0);
        if self.pad_crop > 0 {
            dy += offset(&mut rng, self.pad_crop);
            dx += offset(&mut rng, self.pad_crop);
        }
        if self.shift > 0 {
            dy += offset(&mut rng, self.shift);
            dx += offset(&mut rng, self.shift);
        }
        Placement { flip, dy, dx }
    }
}

/// A horizontal flip (first, if `flip`), then a translation moving content `dy` pixels down and
/// `dx` pixels right: `out(y, x) = flipped(y − dy, x − dx)`, or 0 where that is outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub flip: bool,
    pub dy: isize,
    pub dx: isize,
}

impl Placement {
    pub const IDENTITY: Placement = Placement {
        flip: false,
        dy: 0,
        dx: 0,
    };

    /// Where output column `x` reads from in the source row, if anywhere.
    #[inline]
    pub fn source_x(&self, x: usize, w: usize) -> Option<usize> {
        let sx = x as isize - self.dx;
        if sx < 0 || sx >= w as isize {
            return None;
        }
        Some(if self.flip {
            w - 1 - sx as usize
        } else {
            sx as usize
        })
    }

    /// Where output row `y` reads from, if anywhere.
    #[inline]
    pub fn source_y(&self, y: usize, h: usize) -> Option<usize> {
        let sy = y as isize - self.dy;
        (sy >= 0 && sy < h as isize).then_some(sy as usize)
    }

    /// The plain reference: applies the placement to a `C×H×W` byte image.
    pub fn apply(&self, image: &[u8], [c, h, w]: [usize; 3]) -> Vec<u8> {
        let mut out = vec![0u8; c * h * w];
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    if let (Some(sy), Some(sx)) = (self.source_y(y, h), self.source_x(x, w)) {
                        out[(ch * h + y) * w + x] = image[(ch * h + sy) * w + sx];
                    }
                }
            }
        }
        out
    }
}
