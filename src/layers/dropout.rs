//! Inverted dropout: in training each element is zeroed with probability `p` and the survivors
//! are scaled by `1/(1−p)`, so evaluation is the identity.
//!
//! The mask of element `i` comes from word `i` of the ChaCha8 stream of the step's seed (see
//! [`crate::rng`]), a pure function of the seed and `i`: the same step always drops the same
//! elements, whatever the thread count, which makes resumed runs and gradient checks exact.

use super::{Layer, Mode};
use crate::rng::Rng;
use crate::tensor::{Tensor, data, data_mut, par_copy, reuse};
use rayon::prelude::*;

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

pub struct Dropout {
    p: f32,
    shape: Vec<usize>,
    /// Per element: 0 or 1/(1−p) from the last training forward; empty after an eval forward.
    mask: Vec<f32>,
    y: Tensor,
    dx: Tensor,
}

impl Dropout {
    /// Shapes: unchanged.
    pub fn new(input: &[usize], p: f32) -> Result<Self, String> {
        if !(0.0..1.0).contains(&p) {
            return Err(format!("probability must be in [0, 1), got {p}"));
        }
        Ok(Dropout {
            p,
            shape: input.to_vec(),
            mask: Vec::new(),
            y: Tensor::zeros(vec![0]),
            dx: Tensor::zeros(vec![0]),
        })
    }
}

impl Layer for Dropout {
    fn out_shape(&self) -> &[usize] {
        &self.shape
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> &Tensor {
        reuse(&mut self.y, x.shape());
        let y = data_mut(&mut self.y);
        match mode {
            Mode::Train { seed } if self.p > 0.0 => {
                let keep = 1.0 / (1.0 - self.p);
                // Element i is dropped when word i of the step's stream, as a 32-bit uniform,
                // is below p.
                let threshold = (self.p as f64 * (1u64 << 32) as f64) as u64;
                self.mask.resize(x.len(), 0.0);
                // Each element's mask depends on its index alone, so chunks can run anywhere.
                self.mask
                    .par_chunks_mut(CHUNK)
                    .zip(y.par_chunks_mut(CHUNK))
                    .zip(data(x).par_chunks(CHUNK))
                    .enumerate()
                    .for_each(|(c, ((mask, y), x))| {
                        let mut rng = Rng::at(seed, (c * CHUNK) as u64);
                        // Words a block at a time, into a buffer on the stack.
                        let mut words = [0u32; 256];
                        let parts = mask.chunks_mut(256).zip(y.chunks_mut(256));
                        for ((mask, y), x) in parts.zip(x.chunks(256)) {
                            let words = &mut words[..mask.len()];
                            rng.fill_words(words);
                            for (((m, &u), y), &x) in mask.iter_mut().zip(&*words).zip(y).zip(x) {
                                // Branch-free (a branch on a random bit mispredicts a quarter
                                // of the time): `u − threshold` wraps, setting bit 63, iff u < p.
                                let dropped = ((u as u64).wrapping_sub(threshold) >> 63) as u32;
                                *m = f32::from_bits(keep.to_bits() & dropped.wrapping_sub(1));
                                *y = x * *m;
                            }
                        }
                    });
            }
            _ => {
                self.mask.clear();
                par_copy(data(x), y);
            }
        }
        &self.y
    }

    /// The mask.
    fn kept_values(&self, n: usize) -> u128 {
        n as u128 * self.shape.iter().map(|&d| d as u128).product::<u128>()
    }

    fn output(&self) -> &Tensor {
        &self.y
    }

    fn backward(&mut self, _x: &Tensor, dy: &Tensor) -> &Tensor {
        reuse(&mut self.dx, dy.shape());
        let dx = data_mut(&mut self.dx);
        if self.mask.is_empty() {
            par_copy(data(dy), dx);
        } else {
            dx.par_chunks_mut(CHUNK)
                .zip(data(dy).par_chunks(CHUNK))
                .zip(self.mask.par_chunks(CHUNK))
                .for_each(|((dx, dy), mask)| {
                    for ((d, &g), &m) in dx.iter_mut().zip(dy).zip(mask) {
                        *d = g * m;
                    }
                });
        }
        &self.dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check_layer, seeded};

    #[test]
    fn dropout_grad_in_training_and_eval() {
        check_layer(
            &mut Dropout::new(&[3, 5], 0.4).unwrap(),
            &[3, 3, 5],
            Mode::Train { seed: 5 },
        );
        check_layer(&mut Dropout::new(&[7], 0.5).unwrap(), &[1, 7], Mode::Eval);
    }

    #[test]
    fn dropout_drops_about_p_and_keeps_the_mean() {
        let x = Tensor::ones(vec![100, 1000]);
        let mut d = Dropout::new(&[1000], 0.25).unwrap();
        let y = d.forward(&x, Mode::Train { seed: 1 });
        let zeros = data(y).iter().filter(|&&v| v == 0.0).count() as f64 / 1e5;
        let mean = data(y).iter().map(|&v| v as f64).sum::<f64>() / 1e5;
        assert!((zeros - 0.25).abs() < 0.01, "dropped {zeros}");
        assert!((mean - 1.0).abs() < 0.02, "mean {mean}");
        // Elements 2j and 2j + 1 share a 64-bit draw: its halves must drop independently.
        let both = data(y)
            .chunks(2)
            .filter(|pair| pair[0] == 0.0 && pair[1] == 0.0)
            .count() as f64
            / 5e4;
        assert!(
            (both - 0.0625).abs() < 0.006,
            "pairs dropped together {both}"
        );
        // Same seed, same mask; another seed, another mask.
        let a = d.forward(&x, Mode::Train { seed: 1 }).clone();
        assert_eq!(a, d.forward(&x, Mode::Train { seed: 1 }));
        assert_ne!(a, d.forward(&x, Mode::Train { seed: 2 }));
        let x = seeded(&[2, 1000], 3);
        assert_eq!(d.forward(&x, Mode::Eval), &x);
    }
}
