//! 2-D max pooling (no padding). Forward records the argmax of every window, so backward
//! routes each output gradient to exactly the input that won.

use super::{Layer, Mode};
use crate::tensor::{Tensor, data, data_mut, reuse};
use rayon::prelude::*;

/// Window geometry shared by the pooling layers: `(C, H, W, OH, OW)` for a `k×k` window moved
/// by `stride`, or an error when it does not fit.
pub(crate) fn pool_geometry(
    input: &[usize],
    k: usize,
    stride: usize,
) -> Result<(usize, usize, usize, usize, usize), String> {
    let &[c, h, w] = input else {
        return Err(format!(
            "needs a C×H×W input, got {}",
            crate::tensor::fmt_shape(input)
        ));
    };
    if k == 0 || stride == 0 {
        return Err("kernel and stride must be at least 1".into());
    }
    if h < k || w < k {
        return Err(format!("a {k}×{k} window does not fit a {h}×{w} input"));
    }
    Ok((c, h, w, (h - k) / stride + 1, (w - k) / stride + 1))
}

pub struct MaxPool2d {
    k: usize,
    stride: usize,
    input: [usize; 3],
    out: [usize; 3],
    /// For each output element, the index within its plane of the winning input.
    argmax: Vec<u32>,
    y: Tensor,
    dx: Tensor,
}

impl MaxPool2d {
    /// Shapes: `C×H×W` → `C×OH×OW`, `OH = (H − k) / stride + 1`.
    pub fn new(input: &[usize], k: usize, stride: usize) -> Result<Self, String> {
        let (c, h, w, oh, ow) = pool_geometry(input, k, stride)?;
        Ok(MaxPool2d {
            k,
            stride,
            input: [c, h, w],
            out: [c, oh, ow],
            argmax: Vec::new(),
            y: Tensor::zeros(vec![0]),
            dx: Tensor::zeros(vec![0]),
        })
    }
}

/// Max of each `k×k` window of one `H×W` plane `x` (row length `w`) moved by `s`, into `y`
/// (`OH×OW`, row length `ow`), with the winner's index within the plane in `arg`. `>` keeps
/// the first maximum, as PyTorch does; NaN never wins, so an all-NaN window yields -inf, which
/// the loss check catches. The plain version of [`pool_plane_2x2`].
fn pool_plane(x: &[f32], w: usize, k: usize, s: usize, y: &mut [f32], arg: &mut [u32], ow: usize) {
    for (i, (y, arg)) in y.chunks_mut(ow).zip(arg.chunks_mut(ow)).enumerate() {
        for (j, (y, arg)) in y.iter_mut().zip(arg.iter_mut()).enumerate() {
            let (mut best, mut at) = (f32::NEG_INFINITY, 0);
            for di in 0..k {
                let row = (i * s + di) * w + j * s;
                for (dj, &v) in x[row..row + k].iter().enumerate() {
                    if v > best {
                        best = v;
                        at = row + dj;
                    }
                }
            }
            *y = best;
            *arg = at as u32;
        }
    }
}

/// Max pooling of one `H×W` plane `x` (row length `w`) by `k×k` windows moved by `s`, into `y`
/// (`OH×OW`, row length `ow`), each winner's index within the plane in `arg`: the one
/// definition of the pooling, shared with the pooling that batch norm and the Winograd
/// convolution fuse
/// ([`Layer::fuse_max_pool`](super::Layer::fuse_max_pool)).
pub(crate) fn max_pool_plane(
    x: &[f32],
    w: usize,
    k: usize,
    s: usize,
    y: &mut [f32],
    arg: &mut [u32],
    ow: usize,
) {
    if k == 2 && s == 2 {
        pool_plane_2x2(x, w, y, arg, ow);
    } else {
        pool_plane(x, w, k, s, y, arg, ow);
    }
}

/// The gradient of [`max_pool_plane`]: `dx` (the input plane) is zero but at the winners, each
/// of which gets the sum of its windows' `dy`, added in output order (overlapping windows may
/// share a winner). With `disjoint` windows (see [`disjoint`]) each winner has one window, whose
/// `dy` is stored rather than added: an add reads back what the zeroing has just stored and
/// waits for those stores to finish (the fill's `rep stosb` does not forward to loads).
pub(crate) fn unpool_plane(dy: &[f32], arg: &[u32], dx: &mut [f32], disjoint: bool) {
    dx.fill(0.0);
    if disjoint {
        for (&g, &a) in dy.iter().zip(arg) {
            dx[a as usize] = g;
        }
    } else {
        for (&g, &a) in dy.iter().zip(arg) {
            dx[a as usize] += g;
        }
    }
}

/// Whether `k×k` windows moved by `s` share no input value.
pub(crate) fn disjoint(k: usize, s: usize) -> bool {
    k <= s
}

/// [`pool_plane`] for `k = s = 2`, the common case: the four candidates in a fixed order,
/// each comparison a select on the running best and its index (as in [`pool_plane`], the
/// index stays 0 if nothing beats −∞), so that the compiler emits selects, not branches.
fn pool_plane_2x2(x: &[f32], w: usize, y: &mut [f32], arg: &mut [u32], ow: usize) {
    for (i, (y, arg)) in y.chunks_mut(ow).zip(arg.chunks_mut(ow)).enumerate() {
        let r = 2 * i * w;
        let (top, bottom) = (&x[r..][..2 * ow], &x[r + w..][..2 * ow]);
        let pairs = top.chunks_exact(2).zip(bottom.chunks_exact(2));
        for (j, ((y, arg), (t, b))) in y.iter_mut().zip(arg.iter_mut()).zip(pairs).enumerate() {
            let at = (r + 2 * j) as u32;
            let cands = [
                (t[0], at),
                (t[1], at + 1),
                (b[0], at + w as u32),
                (b[1], at + w as u32 + 1),
            ];
            let (mut best, mut won) = (f32::NEG_INFINITY, 0u32);
            for (v, idx) in cands {
                let wins = v > best;
                best = if wins { v } else { best };
                won = if wins { idx } else { won };
            }
            *y = best;
            *arg = won;
        }
    }
}

impl Layer for MaxPool2d {
    fn out_shape(&self) -> &[usize] {
        &self.out
    }

    fn forward(&mut self, x: &Tensor, _mode: Mode) -> &Tensor {
        let n = x.shape()[0];
        let [c, h, w] = self.input;
        let [_, oh, ow] = self.out;
        let (k, s) = (self.k, self.stride);
        reuse(&mut self.y, &[n, c, oh, ow]);
        self.argmax.resize(n * c * oh * ow, 0);
        data_mut(&mut self.y)
            .par_chunks_mut(oh * ow)
            .zip(self.argmax.par_chunks_mut(oh * ow))
            .zip(data(x).par_chunks(h * w))
            .for_each(|((y, arg), x)| max_pool_plane(x, w, k, s, y, arg, ow));
        &self.y
    }

    /// The winners.
    fn kept_values(&self, n: usize) -> u128 {
        n as u128 * self.out.iter().map(|&d| d as u128).product::<u128>()
    }

    fn output(&self) -> &Tensor {
        &self.y
    }

    fn backward(&mut self, _x: &Tensor, dy: &Tensor) -> &Tensor {
        let n = dy.shape()[0];
        let [c, h, w] = self.input;
        let out_plane = self.out[1] * self.out[2];
        let (k, s) = (self.k, self.stride);
        reuse(&mut self.dx, &[n, c, h, w]);
        data_mut(&mut self.dx)
            .par_chunks_mut(h * w)
            .zip(data(dy).par_chunks(out_plane))
            .zip(self.argmax.par_chunks(out_plane))
            .for_each(|((dx, dy), arg)| unpool_plane(dy, arg, dx, disjoint(k, s)));
        &self.dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check_layer_on, no_ties};
    use crate::rng::Rng;

    #[test]
    fn maxpool_grad_batch1_odd_nonsquare() {
        check_layer_on(
            &mut MaxPool2d::new(&[2, 5, 7], 2, 2).unwrap(),
            &no_ties(&[1, 2, 5, 7]),
            Mode::Eval,
        );
    }

    #[test]
    fn maxpool_grad_batch3_overlapping_stride1() {
        check_layer_on(
            &mut MaxPool2d::new(&[3, 6, 5], 3, 1).unwrap(),
            &no_ties(&[3, 3, 6, 5]),
            Mode::Eval,
        );
    }

    /// Hand-worked: the 4×4 input 0..15 pooled 2×2 keeps the bottom-right of each window.
    #[test]
    fn maxpool_hand_worked() {
        let x =
            Tensor::from_shape_vec(vec![1, 1, 4, 4], (0..16).map(|v| v as f32).collect()).unwrap();
        let mut p = MaxPool2d::new(&[1, 4, 4], 2, 2).unwrap();
        assert_eq!(data(p.forward(&x, Mode::Eval)), &[5., 7., 13., 15.]);
        let dy = Tensor::from_shape_vec(vec![1, 1, 2, 2], vec![1., 2., 3., 4.]).unwrap();
        let mut want = [0.0f32; 16];
        (want[5], want[7], want[13], want[15]) = (1., 2., 3., 4.);
        assert_eq!(data(p.backward(&x, &dy)), &want);
    }

    /// The 2×2 fast path against the plain one: odd and even sizes, many ties, NaNs, -inf.
    #[test]
    fn maxpool_2x2_path_matches_the_plain_path() {
        let mut rng = Rng::new(3);
        for (h, w) in [(2, 2), (5, 7), (8, 6), (3, 9)] {
            let x: Vec<f32> = (0..h * w)
                .map(|_| match rng.below(10) {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    v => (v % 3) as f32,
                })
                .collect();
            let (oh, ow) = (h / 2, w / 2);
            let (mut y1, mut a1) = (vec![0.0; oh * ow], vec![0; oh * ow]);
            let (mut y2, mut a2) = (vec![1.0; oh * ow], vec![1; oh * ow]);
            pool_plane(&x, w, 2, 2, &mut y1, &mut a1, ow);
            pool_plane_2x2(&x, w, &mut y2, &mut a2, ow);
            assert_eq!(a1, a2, "{h}×{w}");
            assert!(y1.iter().zip(&y2).all(|(a, b)| a == b), "{h}×{w}");
        }
    }

    #[test]
    fn maxpool_on_a_too_small_input_is_refused() {
        let err = MaxPool2d::new(&[8, 1, 1], 2, 2).err().unwrap();
        assert!(err.contains("2×2") && err.contains("1×1"), "{err}");
    }
}
