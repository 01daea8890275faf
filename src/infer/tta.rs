//! Test-time augmentation: classify an image from several views and average the logits.
//!
//! A network trained on randomly mirrored images sees a photograph and its mirror image as
//! equally likely; averaging its logits over both views cancels part of its error (about a
//! point on CIFAR-10, see models/README.md). Averaging logits, not probabilities,
//! keeps the result a logit vector, so temperature scaling and every metric apply unchanged:
//! the averaged model is simply another model. Never use `flip` with a model whose classes
//! change under mirroring (digits, letters).

use crate::layers::Mode;
use crate::net::graph::Network;
use crate::tensor::{Tensor, data, data_mut};

/// Which views of each image to classify.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Tta {
    /// The image as it is.
    #[default]
    None,
    /// The image and its left–right mirror image.
    Flip,
}

/// Mirrors every row of an `N×C×H×W` batch left to right, in place; applying it twice
/// restores the batch exactly.
pub fn mirror(x: &mut Tensor) {
    let w = *x.shape().last().unwrap_or(&1);
    data_mut(x)
        .chunks_exact_mut(w.max(1))
        .for_each(|row| row.reverse());
}

/// The network's logits (N×K) for the batch `x` (N×C×H×W), averaged over the views of `tta`,
/// appended to `out`. `x` is mirrored and mirrored back, so it is unchanged on return.
pub fn logits(net: &mut Network, x: &mut Tensor, tta: Tta, out: &mut Vec<f32>) {
    let start = out.len();
    out.extend_from_slice(data(net.forward(x, Mode::Eval)));
    if tta == Tta::Flip {
        mirror(x);
        let z = data(net.forward(x, Mode::Eval));
        for (o, v) in out[start..].iter_mut().zip(z) {
            *o = 0.5 * (*o + v);
        }
        mirror(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::spec;

    #[test]
    fn mirror_reverses_rows_and_is_its_own_inverse() {
        // N=1, C=2, H=2, W=3, awkward (odd) width.
        let v: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let mut x = Tensor::from_shape_vec(vec![1, 2, 2, 3], v.clone()).unwrap();
        mirror(&mut x);
        assert_eq!(
            data(&x),
            &[2., 1., 0., 5., 4., 3., 8., 7., 6., 11., 10., 9.]
        );
        mirror(&mut x);
        assert_eq!(data(&x), v.as_slice());
    }

    #[test]
    fn flip_averages_the_logits_of_both_views() {
        let spec =
            spec::parse("input 2 5 6\nconv 3 3 pad=1\nrelu\nflatten\ndense classes\n").unwrap();
        let mut net =
            Network::build(&spec, 4, Some(7), &crate::net::BuildOptions::default()).unwrap();
        let v: Vec<f32> = (0..2 * 2 * 5 * 6)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0)
            .collect();
        let mut x = Tensor::from_shape_vec(vec![2, 2, 5, 6], v.clone()).unwrap();
        let plain = data(net.forward(&x, Mode::Eval)).to_vec();
        let mut m = x.clone();
        mirror(&mut m);
        let mirrored = data(net.forward(&m, Mode::Eval)).to_vec();
        assert_ne!(
            plain, mirrored,
            "the test needs a network that is not symmetric"
        );

        let mut out = vec![9.0];
        logits(&mut net, &mut x, Tta::Flip, &mut out);
        assert_eq!(out.len(), 1 + plain.len());
        for ((o, a), b) in out[1..].iter().zip(&plain).zip(&mirrored) {
            assert!((o - 0.5 * (a + b)).abs() < 1e-6);
        }
        assert_eq!(data(&x), v.as_slice(), "the batch is restored");

        let mut none = Vec::new();
        logits(&mut net, &mut x, Tta::None, &mut none);
        assert_eq!(none, plain);
    }
}
