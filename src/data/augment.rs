//! Training-time augmentation: random translations (crop of a padded image, or a small shift)
//! and horizontal flips.
//!
//! Every transform here is a [`Placement`]: an optional horizontal flip followed by a
//! translation by `(dy, dx)` pixels, with pixels that come from outside the image set to 0
//! (black, before normalisation) or, with `reflect`, mirrored back in at the edges (PyTorch's
//! `reflect` padding, which does not repeat the edge pixel). A random crop of `H×W` from the
//! image padded by `p` on every side is exactly a translation by an offset uniform in `[-p, p]`
//! on each axis, so both `pad_crop` and `shift` are drawn as offsets and added.
//!
//! Flips are drawn afresh each epoch, or with `alternate_flip` (Jordan 2024) fixed per image and
//! alternating: image `i` is mirrored in epoch `e` when its own random bit XOR `e` is odd, so
//! every image is seen both ways in any two consecutive epochs.
//!
//! Every random choice is a pure function of `(seed, epoch, index of the image in the dataset)`,
//! so a resumed run replays the same augmentations and the thread count does not matter.

use super::DatasetKind;
use crate::rng::{Rng, derive};
use serde::{Deserialize, Serialize};

/// Stream label separating augmentation's randomness from the other uses of the run seed.
const AUGMENT_STREAM: u64 = 0x0041_5547_4D45_4E54; // "AUGMENT"
/// Stream label of the per-image flip bits of alternating flips.
const FLIP_STREAM: u64 = 0x464C_4950; // "FLIP"

/// Which random transforms to apply to training images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Augment {
    /// Random crop from the image zero-padded by this many pixels on each side (CIFAR: 4).
    pub pad_crop: usize,
    /// Horizontal flip with probability 1/2.
    pub flip: bool,
    /// Random translation by up to ± this many pixels on each axis (digits: 2).
    pub shift: usize,
    /// Translations mirror the image at its edges instead of bringing in black.
    #[serde(default)]
    pub reflect: bool,
    /// With `flip`: each image's flip is fixed by its own random bit and alternates with the
    /// epoch, instead of being drawn afresh.
    #[serde(default)]
    pub alternate_flip: bool,
}

/// The random choices of one epoch: its seed, and the run's (for the per-image flip bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochSeed {
    epoch_seed: u64,
    flip_seed: u64,
    odd: bool,
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

    /// In words, for a run's header: "crop (pad 4) + flip", "shift ±2", "none".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.pad_crop > 0 {
            let edge = if self.reflect { "reflect-pad" } else { "pad" };
            parts.push(format!("crop ({edge} {})", self.pad_crop));
        }
        if self.shift > 0 {
            parts.push(format!("shift ±{}", self.shift));
        }
        if self.flip {
            parts.push(
                if self.alternate_flip {
                    "alternating flip"
                } else {
                    "flip"
                }
                .to_string(),
            );
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" + ")
        }
    }

    /// The seeds of one epoch's augmentations, from the run seed.
    pub fn epoch_seed(seed: u64, epoch: u64) -> EpochSeed {
        EpochSeed {
            epoch_seed: derive(derive(seed, AUGMENT_STREAM), epoch),
            flip_seed: derive(seed, FLIP_STREAM),
            odd: epoch % 2 == 1,
        }
    }

    /// The transform of image `index` (its index in the dataset, not in the batch) in the epoch
    /// whose seeds are `seeds` (see [`Augment::epoch_seed`]).
    pub fn placement(&self, seeds: EpochSeed, index: usize) -> Placement {
        if self.is_none() {
            return Placement::IDENTITY;
        }
        let mut rng = Rng::new(derive(seeds.epoch_seed, index as u64));
        let flip = if self.alternate_flip {
            self.flip && (derive(seeds.flip_seed, index as u64) >> 63 == 1) != seeds.odd
        } else {
            self.flip && rng.next_u64() >> 63 == 1
        };
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
        Placement {
            flip,
            dy,
            dx,
            reflect: self.reflect,
        }
    }
}

/// A horizontal flip (first, if `flip`), then a translation moving content `dy` pixels down and
/// `dx` pixels right: `out(y, x) = flipped(y − dy, x − dx)`; where that is outside, 0, or with
/// `reflect` the pixel mirrored at the edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub flip: bool,
    pub dy: isize,
    pub dx: isize,
    pub reflect: bool,
}

/// Index `i` of an axis of `len` pixels mirrored back inside it, without repeating the edge
/// (`−1 → 1`, `len → len − 2`; period `2·(len − 1)`).
pub fn reflect(i: isize, len: usize) -> usize {
    if len == 1 {
        return 0;
    }
    let period = 2 * (len as isize - 1);
    let m = i.rem_euclid(period);
    (if m >= len as isize { period - m } else { m }) as usize
}

impl Placement {
    pub const IDENTITY: Placement = Placement {
        flip: false,
        dy: 0,
        dx: 0,
        reflect: false,
    };

    /// Where output column `x` reads from in the source row, if anywhere.
    #[inline]
    pub fn source_x(&self, x: usize, w: usize) -> Option<usize> {
        let sx = x as isize - self.dx;
        let sx = if sx >= 0 && sx < w as isize {
            sx as usize
        } else if self.reflect {
            reflect(sx, w)
        } else {
            return None;
        };
        Some(if self.flip { w - 1 - sx } else { sx })
    }

    /// Where output row `y` reads from, if anywhere.
    #[inline]
    pub fn source_y(&self, y: usize, h: usize) -> Option<usize> {
        let sy = y as isize - self.dy;
        if sy >= 0 && sy < h as isize {
            Some(sy as usize)
        } else {
            self.reflect.then(|| reflect(sy, h))
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflection_does_not_repeat_the_edge() {
        assert_eq!(
            [-3, -2, -1, 0, 4, 5, 6, 7].map(|i| reflect(i, 5)),
            [3, 2, 1, 0, 4, 3, 2, 1]
        );
        assert_eq!(reflect(-7, 1), 0);
        // A row a b c d moved 2 right: c b a b (PyTorch's reflect-padded crop at offset −2).
        let p = Placement {
            flip: false,
            dy: 0,
            dx: 2,
            reflect: true,
        };
        assert_eq!(p.apply(&[1, 2, 3, 4], [1, 1, 4]), [3, 2, 1, 2]);
        // Moved up by one on a 3-row column: rows 1, 2, then 1 again.
        let p = Placement { dx: 0, dy: -1, ..p };
        assert_eq!(p.apply(&[10, 20, 30], [1, 3, 1]), [20, 30, 20]);
        // Flipped and moved: flip first, then mirror at the edge.
        let p = Placement {
            flip: true,
            dy: 0,
            dx: 1,
            reflect: true,
        };
        assert_eq!(p.apply(&[1, 2, 3, 4], [1, 1, 4]), [3, 4, 3, 2]);
    }

    /// Alternating flips: about half the images mirrored in epoch 0, exactly the others in
    /// epoch 1, and epoch 2 like epoch 0; plain random flips differ between even epochs.
    #[test]
    fn alternating_flips_alternate() {
        let alt = Augment {
            flip: true,
            alternate_flip: true,
            pad_crop: 2,
            reflect: true,
            ..Augment::none()
        };
        let flips = |aug: &Augment, epoch| -> Vec<bool> {
            (0..1000)
                .map(|i| aug.placement(Augment::epoch_seed(7, epoch), i).flip)
                .collect()
        };
        let (e0, e1, e2) = (flips(&alt, 0), flips(&alt, 1), flips(&alt, 2));
        let half = e0.iter().filter(|&&f| f).count();
        assert!((430..570).contains(&half), "{half}");
        assert!(e0.iter().zip(&e1).all(|(a, b)| a != b));
        assert_eq!(e0, e2);
        let random = Augment {
            alternate_flip: false,
            ..alt
        };
        assert_ne!(flips(&random, 0), flips(&random, 2));
        // Offsets still change from epoch to epoch.
        let d = |epoch| alt.placement(Augment::epoch_seed(7, epoch), 5);
        assert!((0..8).any(|e| (d(e).dx, d(e).dy) != (d(e + 2).dx, d(e + 2).dy)));
    }
}
