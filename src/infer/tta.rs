//! Test-time augmentation: classify an image from several views and average the logits.
//!
//! A network trained on randomly mirrored (and shifted) images sees a photograph and its mirror
//! image as equally likely; averaging its logits over several views cancels part of its error
//! (about a point on CIFAR-10, see models/README.md). Averaging logits, not probabilities,
//! keeps the result a logit vector, so temperature scaling and every metric apply unchanged:
//! the averaged model is simply another model. Never use a flip with a model whose classes
//! change under mirroring (digits, letters).

use crate::data::augment::reflect;
use crate::layers::Mode;
use crate::net::Network;
use crate::tensor::{Tensor, data, data_mut, reuse};

/// Which views of each image to classify.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Tta {
    /// The image as it is.
    #[default]
    None,
    /// The image and its left–right mirror image, equally weighted.
    Flip,
    /// Six views (airbench's, Jordan 2024): the image and its mirror (¼ each), and both moved one
    /// pixel down-right and one up-left with the edges mirrored in (⅛ each).
    FlipShift,
}

/// One view: the image moved `(dy, dx)` pixels (edges mirrored in), then mirrored if `flip`.
struct View {
    dy: isize,
    dx: isize,
    flip: bool,
    weight: f32,
}

impl Tta {
    fn views(self) -> &'static [View] {
        const fn v(dy: isize, dx: isize, flip: bool, weight: f32) -> View {
            View {
                dy,
                dx,
                flip,
                weight,
            }
        }
        const NONE: [View; 1] = [v(0, 0, false, 1.0)];
        const FLIP: [View; 2] = [v(0, 0, false, 0.5), v(0, 0, true, 0.5)];
        const FLIP_SHIFT: [View; 6] = [
            v(0, 0, false, 0.25),
            v(0, 0, true, 0.25),
            v(1, 1, false, 0.125),
            v(1, 1, true, 0.125),
            v(-1, -1, false, 0.125),
            v(-1, -1, true, 0.125),
        ];
        match self {
            Tta::None => &NONE,
            Tta::Flip => &FLIP,
            Tta::FlipShift => &FLIP_SHIFT,
        }
    }

    /// The name `--tta` takes, as stored in a model's provenance.
    pub fn name(self) -> &'static str {
        match self {
            Tta::None => "none",
            Tta::Flip => "flip",
            Tta::FlipShift => "flip-shift",
        }
    }

    /// The views, for a graph that computes them itself ([`crate::store::onnx::export`]).
    pub fn onnx_views(self) -> Vec<crate::store::onnx::View> {
        self.views()
            .iter()
            .map(|v| crate::store::onnx::View {
                dy: v.dy,
                dx: v.dx,
                flip: v.flip,
                weight: v.weight,
            })
            .collect()
    }

    /// The inverse of [`Tta::name`].
    pub fn from_name(s: &str) -> Option<Tta> {
        [Tta::None, Tta::Flip, Tta::FlipShift]
            .into_iter()
            .find(|t| t.name() == s)
    }
}

/// The key of a model's provenance that names the test-time augmentation it was trained for.
pub const MODEL_KEY: &str = "tta";

/// The test-time augmentation to use: `asked` if given, else the one `model` was trained for
/// (none when it names none, or one this cnn does not know).
pub fn choose(asked: Option<Tta>, model: &crate::store::Model) -> Tta {
    asked
        .or_else(|| {
            let name = model.provenance.extra.get(MODEL_KEY)?;
            Tta::from_name(name)
        })
        .unwrap_or_default()
}

/// Mirrors every row of an `N×C×H×W` batch left to right, in place; applying it twice
/// restores the batch exactly.
pub fn mirror(x: &mut Tensor) {
    let w = *x.shape().last().unwrap_or(&1);
    data_mut(x)
        .chunks_exact_mut(w.max(1))
        .for_each(|row| row.reverse());
}

/// `out` = every plane of `x` (`N×C×H×W`) moved `(dy, dx)` with the edges mirrored in, then
/// mirrored left to right if `flip`.
fn view_of(x: &Tensor, v: &View, out: &mut Tensor) {
    let s = x.shape();
    let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
    reuse(out, s);
    for (src, dst) in data(x)
        .chunks_exact(h * w)
        .zip(data_mut(out).chunks_exact_mut(h * w))
    {
        for (y, row) in dst.chunks_exact_mut(w).enumerate() {
            let sy = reflect(y as isize - v.dy, h);
            for (x, d) in row.iter_mut().enumerate() {
                let ox = if v.flip { w - 1 - x } else { x };
                *d = src[sy * w + reflect(ox as isize - v.dx, w)];
            }
        }
    }
}

/// The network's logits (N×K) for the batch `x` (N×C×H×W), averaged over the views of `tta`
/// with their weights, appended to `out`; `scratch` holds the views that are not `x` itself.
pub fn logits(net: &mut Network, x: &Tensor, tta: Tta, scratch: &mut Tensor, out: &mut Vec<f32>) {
    let start = out.len();
    for (i, v) in tta.views().iter().enumerate() {
        let z = if v.dy == 0 && v.dx == 0 && !v.flip {
            data(net.forward(x, Mode::Eval))
        } else {
            view_of(x, v, scratch);
            data(net.forward(scratch, Mode::Eval))
        };
        if i == 0 {
            out.extend(z.iter().map(|z| v.weight * z));
        } else {
            for (o, z) in out[start..].iter_mut().zip(z) {
                *o += v.weight * z;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::BuildOptions;
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

    /// Hand-worked on a 3×3 plane 0..9 and a 3×4 one: moved down-right by one with mirrored
    /// edges, row −1 is row 1 and column −1 column 1; the flipped view mirrors the moved one.
    #[test]
    fn shifted_views_mirror_the_edges() {
        let x =
            Tensor::from_shape_vec(vec![1, 1, 3, 3], (0..9).map(|i| i as f32).collect()).unwrap();
        let mut out = Tensor::zeros(vec![0]);
        view_of(&x, &Tta::FlipShift.views()[2], &mut out);
        assert_eq!(data(&out), &[4., 3., 4., 1., 0., 1., 4., 3., 4.]);
        let mut mirrored = out.clone();
        mirror(&mut mirrored);
        view_of(&x, &Tta::FlipShift.views()[3], &mut out);
        assert_eq!(
            out, mirrored,
            "the flipped view is the mirror of the moved one"
        );
        view_of(&x, &Tta::FlipShift.views()[4], &mut out);
        assert_eq!(data(&out), &[4., 5., 4., 7., 8., 7., 4., 5., 4.]);
        let x =
            Tensor::from_shape_vec(vec![1, 1, 3, 4], (0..12).map(|i| i as f32).collect()).unwrap();
        view_of(&x, &Tta::FlipShift.views()[3], &mut out);
        // Moved: [5 4 5 6; 1 0 1 2; 5 4 5 6]; then mirrored.
        assert_eq!(
            data(&out),
            &[6., 5., 4., 5., 2., 1., 0., 1., 6., 5., 4., 5.]
        );
    }

    /// Each mode's logits are the weighted mean of the views' logits, computed one by one.
    #[test]
    fn views_are_averaged_with_their_weights() {
        let spec =
            spec::parse("input 2 5 6\nconv 3 3 pad=1\nrelu\nflatten\ndense classes\n").unwrap();
        let mut net = Network::build(&spec, 4, Some(7), &BuildOptions::default()).unwrap();
        let v: Vec<f32> = (0..2 * 2 * 5 * 6)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0)
            .collect();
        let x = Tensor::from_shape_vec(vec![2, 2, 5, 6], v).unwrap();
        let mut scratch = Tensor::zeros(vec![0]);
        for tta in [Tta::None, Tta::Flip, Tta::FlipShift] {
            let mut want = vec![0.0f32; 8];
            for view in tta.views() {
                let mut moved = Tensor::zeros(vec![0]);
                view_of(&x, view, &mut moved);
                let z = data(net.forward(&moved, Mode::Eval)).to_vec();
                want.iter_mut()
                    .zip(z)
                    .for_each(|(w, z)| *w += view.weight * z);
            }
            let mut out = vec![9.0];
            logits(&mut net, &x, tta, &mut scratch, &mut out);
            assert_eq!(out.len(), 9);
            for (o, w) in out[1..].iter().zip(&want) {
                assert!((o - w).abs() < 1e-6, "{tta:?}: {o} vs {w}");
            }
            let total: f32 = tta.views().iter().map(|v| v.weight).sum();
            assert!((total - 1.0).abs() < 1e-7);
            assert_eq!(Tta::from_name(tta.name()), Some(tta));
        }
        let mut plain = Vec::new();
        logits(&mut net, &x, Tta::None, &mut scratch, &mut plain);
        let mut flip = Vec::new();
        logits(&mut net, &x, Tta::Flip, &mut scratch, &mut flip);
        assert_ne!(
            plain, flip,
            "the test needs a network that is not symmetric"
        );
    }
}
