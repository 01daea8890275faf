//! Seeded, counter-based randomness.
//!
//! Every random decision in training (initial weights, shuffling, augmentation, dropout masks) is
//! a pure function of the run's seed and *where* it happens (epoch, step, layer, element). So a
//! run resumed from a checkpoint replays exactly the same decisions from its cursor alone, and
//! work split across threads draws the same numbers whatever the thread count.
//!
//! "Where" becomes a 64-bit seed by [`derive`] (a SplitMix64 hash of the parent seed and a label);
//! each seed keys a ChaCha8 stream ([`Rng`], from `rand_chacha`): the key is the seed's eight
//! little-endian bytes followed by 24 zero bytes, stream 0, and the stream can be entered at any
//! 32-bit word ([`Rng::at`]), which is how a dropout mask is drawn in parallel chunks. The
//! conversions to floats, ranges and normals are written here, so no crate upgrade can change a
//! run's numbers; the tests pin the generator against an independent ChaCha block function.
//!
//! May use: nothing else of this crate.

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng as _, SeedableRng};

/// The model-file key that records which generator drew a run's randomness, and this one's name:
/// `cnn calibrate` can recreate a model's validation split only with the generator that made it.
/// (Files without the key were trained with cnn's earlier SplitMix64 streams.)
pub const STREAMS_KEY: &str = "random_streams";
pub const STREAMS: &str = "chacha8";

/// SplitMix64's increment, 2^64 / φ (Steele, Lea and Flood 2014).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a fast, well-mixed 64-bit hash.
/// Constants from Steele, Lea and Flood, "Fast splittable pseudorandom number generators" (2014).
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(GOLDEN);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives a child seed from a parent seed and a label (e.g. an epoch or a layer index).
pub fn derive(seed: u64, label: u64) -> u64 {
    mix(seed ^ mix(label))
}

/// The ChaCha8 stream keyed by a seed (see the module doc), with the conversions training uses.
#[derive(Clone, Debug)]
pub struct Rng {
    chacha: ChaCha8Rng,
}

impl Rng {
    /// The stream of `seed`, from its first word.
    pub fn new(seed: u64) -> Self {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        Rng {
            chacha: ChaCha8Rng::from_seed(key),
        }
    }

    /// The stream of `seed` entered at 32-bit word `word`: its [`Rng::next_u32`] is the one that
    /// `word` calls on `Rng::new(seed)` would have reached.
    pub fn at(seed: u64, word: u64) -> Self {
        let mut r = Rng::new(seed);
        r.chacha.set_word_pos(word as u128);
        r
    }

    pub fn next_u32(&mut self) -> u32 {
        self.chacha.next_u32()
    }

    /// The next `out.len()` words, in order: the same as as many [`Rng::next_u32`] calls, but a
    /// block at a time.
    pub fn fill_words(&mut self, out: &mut [u32]) {
        let mut bytes = [0u8; 256];
        for words in out.chunks_mut(bytes.len() / 4) {
            let bytes = &mut bytes[..4 * words.len()];
            self.chacha.fill_bytes(bytes);
            for (w, b) in words.iter_mut().zip(bytes.chunks_exact(4)) {
                *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
    }

    /// Two words, the first in the low half.
    pub fn next_u64(&mut self) -> u64 {
        self.chacha.next_u64()
    }

    /// Uniform in [0, 1) with 24 bits of precision (all an f32 holds).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
    }

    /// Uniform integer in [0, n) (n > 0); Lemire's multiply-shift, bias below 2^-32 for our n.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u32() as u64 * n as u64) >> 32) as usize
    }

    /// Standard normal by Box–Muller.
    pub fn normal(&mut self) -> f32 {
        let u1 = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let u2 = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let r = (-2.0 * (1.0 - u1).ln()).sqrt();
        (r * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ChaCha block function written out from Bernstein's definition (RFC 8439 §2.1–2.3), as
    /// the independent check of the crate: `state` is the 16 input words, `rounds` 8 or 20.
    fn chacha_block(state: [u32; 16], rounds: usize) -> [u32; 16] {
        let mut x = state;
        let quarter = |x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize| {
            x[a] = x[a].wrapping_add(x[b]);
            x[d] = (x[d] ^ x[a]).rotate_left(16);
            x[c] = x[c].wrapping_add(x[d]);
            x[b] = (x[b] ^ x[c]).rotate_left(12);
            x[a] = x[a].wrapping_add(x[b]);
            x[d] = (x[d] ^ x[a]).rotate_left(8);
            x[c] = x[c].wrapping_add(x[d]);
            x[b] = (x[b] ^ x[c]).rotate_left(7);
        };
        for _ in 0..rounds / 2 {
            quarter(&mut x, 0, 4, 8, 12);
            quarter(&mut x, 1, 5, 9, 13);
            quarter(&mut x, 2, 6, 10, 14);
            quarter(&mut x, 3, 7, 11, 15);
            quarter(&mut x, 0, 5, 10, 15);
            quarter(&mut x, 1, 6, 11, 12);
            quarter(&mut x, 2, 7, 8, 13);
            quarter(&mut x, 3, 4, 9, 14);
        }
        std::array::from_fn(|i| x[i].wrapping_add(state[i]))
    }

    /// "expand 32-byte k", then the key words, then words 12–15 as given.
    fn chacha_state(key: [u32; 8], tail: [u32; 4]) -> [u32; 16] {
        let mut s = [0u32; 16];
        s[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
        s[4..12].copy_from_slice(&key);
        s[12..].copy_from_slice(&tail);
        s
    }

    #[test]
    fn the_reference_block_function_gives_rfc_8439s_test_vector() {
        // RFC 8439 §2.3.2: key 00 01 .. 1f, counter 1, nonce 00:00:00:09:00:00:00:4a:00:00:00:00.
        let key =
            std::array::from_fn(|i| u32::from_le_bytes(std::array::from_fn(|b| (4 * i + b) as u8)));
        let out = chacha_block(chacha_state(key, [1, 0x0900_0000, 0x4a00_0000, 0]), 20);
        assert_eq!(
            out[..4],
            [0xe4e7_f110, 0x1559_3bd1, 0x1fdd_0f50, 0xc471_20a3]
        );
        assert_eq!(
            out[12..],
            [0xd19c_12b5, 0xb94e_16de, 0xe883_d0cb, 0x4e3c_50a2]
        );
    }

    #[test]
    fn the_stream_is_chacha8_keyed_by_the_seed() {
        for seed in [0u64, 1, 0xDEAD_BEEF_0123_4567] {
            let key = [seed as u32, (seed >> 32) as u32, 0, 0, 0, 0, 0, 0];
            let mut r = Rng::new(seed);
            // Words 12–13 are the 64-bit block counter, 14–15 the stream (0).
            for block in 0..6u32 {
                let want = chacha_block(chacha_state(key, [block, 0, 0, 0]), 8);
                let got: Vec<u32> = (0..16).map(|_| r.next_u32()).collect();
                assert_eq!(got, want, "seed {seed}, block {block}");
            }
        }
    }

    #[test]
    fn pinned_outputs() {
        // Any change here changes every run's numbers: the README and docs/DEFAULTS.md figures
        // would need re-measuring.
        let mut r = Rng::new(1);
        let words: Vec<u32> = (0..4).map(|_| r.next_u32()).collect();
        assert_eq!(words, PINNED_WORDS);
        let mut r = Rng::new(42);
        let got = (r.below(1000), r.uniform(), r.normal());
        assert_eq!(got, PINNED_DRAWS);
        let mut v: Vec<u8> = (0..10).collect();
        Rng::new(7).shuffle(&mut v);
        assert_eq!(v, PINNED_SHUFFLE);
        assert_eq!(derive(1, 2), PINNED_DERIVE);
    }

    const PINNED_WORDS: [u32; 4] = [2_699_648_719, 1_638_484_553, 3_990_160_702, 1_266_703_218];
    const PINNED_DRAWS: (usize, f32, f32) = (99, 0.348_254_44, -0.819_615_3);
    const PINNED_SHUFFLE: [u8; 10] = [5, 9, 8, 4, 0, 2, 3, 7, 6, 1];
    const PINNED_DERIVE: u64 = 16_171_810_823_986_729_605;

    #[test]
    fn entering_the_stream_at_a_word_matches_drawing_up_to_it() {
        let mut r = Rng::new(99);
        let all: Vec<u32> = (0..300).map(|_| r.next_u32()).collect();
        for word in [0usize, 1, 15, 16, 17, 63, 64, 65, 200] {
            let mut s = Rng::at(99, word as u64);
            let tail: Vec<u32> = (0..all.len() - word).map(|_| s.next_u32()).collect();
            assert_eq!(tail, all[word..], "entered at word {word}");
        }
    }

    #[test]
    fn filling_words_matches_drawing_them() {
        let mut r = Rng::new(5);
        let all: Vec<u32> = (0..203).map(|_| r.next_u32()).collect();
        let mut s = Rng::new(5);
        let (mut a, mut b) = (vec![0u32; 3], vec![0u32; 200]);
        s.fill_words(&mut a);
        s.fill_words(&mut b);
        assert_eq!([a, b].concat(), all);
    }

    #[test]
    fn uniform_and_normal_have_the_right_moments() {
        let mut r = Rng::new(7);
        let n = 100_000;
        let (mut s, mut s2, mut u) = (0.0f64, 0.0f64, 0.0f64);
        for _ in 0..n {
            let x = r.normal() as f64;
            s += x;
            s2 += x * x;
            u += r.uniform() as f64;
        }
        assert!((s / n as f64).abs() < 0.02);
        assert!((s2 / n as f64 - 1.0).abs() < 0.02);
        assert!((u / n as f64 - 0.5).abs() < 0.01);
    }

    #[test]
    fn below_stays_in_range_and_shuffle_is_a_permutation() {
        let mut r = Rng::new(1);
        for n in 1..50 {
            assert!(r.below(n) < n);
        }
        let mut v: Vec<usize> = (0..100).collect();
        r.shuffle(&mut v);
        let mut s = v.clone();
        s.sort();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_ne!(v, s);
    }
}
