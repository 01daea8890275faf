//! 2-D convolution, one layer over two algorithms, each in its own file owning its buffers:
//! [`im2col`] (im2col + GEMM, any kernel, stride and padding) and [`winograd`] (Winograd's
//! F(2×2, 3×3) for 3×3 stride-1 kernels on 8 channels or more).
//!
//! Weight `O×C×kh×kw` (PyTorch's layout), optional bias `O`. This file holds what both share:
//! the geometry, the parameters, the fused epilogue (bias, then ReLU) on the way out and its
//! mirror on the way back in ([`mask_planes`]), and the bias gradient. The Winograd path can
//! also take over a max pooling after the epilogue ([`Layer::fuse_max_pool`]): each group's
//! output is written to scratch and pooled from there, and backward spreads the pooled
//! gradient back into scratch ([`unpool_planes`]), so the full-size output and its gradient
//! never reach memory. Images are processed in
//! parallel in groups whose size depends on the shapes only, and the weight gradient is summed
//! over fixed groups of images and then over groups in order, so results never depend on the
//! thread count.

mod im2col;
#[cfg(test)]
mod tests;
mod winograd;

use super::maxpool::{disjoint, max_pool_plane, pool_geometry, unpool_plane};
use super::{Activation, Layer, Mode, Param, ParamKind, WeightInit};
use crate::kernels::reduce;
use crate::kernels::reference::Window;
use crate::tensor::{Tensor, data, data_mut, fmt_shape, reuse};
use im2col::Im2col;
use winograd::WinogradConv;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2dConfig {
    pub out_channels: usize,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub pad: usize,
    pub bias: bool,
    /// How the weight is drawn (the bias starts at zero).
    pub init: WeightInit,
    /// Learning-rate multiplier of the weight and bias (see [`Param::lr_scale`]).
    pub lr_scale: f32,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig {
            out_channels: 1,
            kernel: (3, 3),
            stride: 1,
            pad: 0,
            bias: true,
            init: WeightInit::Auto,
            lr_scale: 1.0,
        }
    }
}

/// Input item `C×H×W`, output item `O×OH×OW`, and the window between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Geometry {
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    oh: usize,
    ow: usize,
    win: Window,
}

impl Geometry {
    /// Rows of an image's column matrix, `C·kh·kw`.
    fn k(&self) -> usize {
        self.c * self.win.kh * self.win.kw
    }

    /// Values of one output plane, `OH·OW`.
    fn p(&self) -> usize {
        self.oh * self.ow
    }

    fn item_in(&self) -> usize {
        self.c * self.h * self.w
    }
}

/// A fused max pooling's geometry: `k×k` windows moved by `stride` over each `OH×OW` output
/// plane, `plane` (`PH·PW`) values out per plane, rows `pw` long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PoolPlan {
    k: usize,
    stride: usize,
    plane: usize,
    pw: usize,
}

/// A fused max pooling and the winner of every pooled output within its plane, as
/// [`super::MaxPool2d`] keeps them.
struct Pool {
    plan: PoolPlan,
    argmax: Vec<u32>,
}

/// What forward reads of the layer, whichever the algorithm, and with a fused pooling, where
/// it writes the winners (`N×O×PH×PW`, as the output).
struct Forward<'a> {
    weight: &'a [f32],
    bias: Option<&'a [f32]>,
    relu: bool,
    pool: Option<(PoolPlan, &'a mut [u32])>,
}

/// What backward reads and writes, whichever the algorithm: the batch's input `x`, output `y`
/// and output gradient `dy` (`N×…`, pooled with a fused pooling, whose winners are `pool`'s);
/// it adds the weight gradient into `dweight`, writes the input gradient into `dx` when
/// `needs_dx`, and with a bias each output-gradient plane's sum (after the fused ReLU's mask)
/// into `plane_sums` (`N×O`).
struct Backward<'a> {
    weight: &'a [f32],
    relu: bool,
    pool: Option<(PoolPlan, &'a [u32])>,
    bias: bool,
    x: &'a [f32],
    y: &'a [f32],
    dy: &'a [f32],
    needs_dx: bool,
    dx: &'a mut [f32],
    dweight: &'a mut [f32],
    plane_sums: &'a mut Vec<f32>,
}

enum Path {
    Im2col(Im2col),
    Winograd(Box<WinogradConv>),
}

pub struct Conv2d {
    cfg: Conv2dConfig,
    geom: Geometry,
    weight: Param,
    bias: Option<Param>,
    /// Whether the output goes through a ReLU (fused, see [`Layer::fuse_activation`]).
    relu: bool,
    /// The max pooling after the epilogue, when fused (see the module doc).
    pool: Option<Pool>,
    needs_dx: bool,
    /// Whether the last forward was in training mode (backward needs one).
    trained: bool,
    /// `[O, OH, OW]`, or the pooled `[O, PH, PW]`, for [`Layer::out_shape`].
    out: [usize; 3],
    y: Tensor,
    dx: Tensor,
    /// With a bias: the sum of each output-gradient plane (N×O), for the bias gradient.
    plane_sums: Vec<f32>,
    path: Path,
}

/// Whether a weight is trained: a frozen one (a buffer) needs no gradient.
fn trained(p: &Param) -> bool {
    p.kind == ParamKind::Trainable
}

impl Conv2d {
    /// Shapes: input item `C×H×W` → output item `O×OH×OW`. With `winograd`, a 3×3 stride-1
    /// kernel takes Winograd's path where it pays; the weights are declared, not drawn.
    pub fn new(input: &[usize], cfg: Conv2dConfig, winograd: bool) -> Result<Self, String> {
        let &[c, h, w] = input else {
            return Err(format!("needs a C×H×W input, got {}", fmt_shape(input)));
        };
        let (kh, kw) = cfg.kernel;
        if kh == 0 || kw == 0 || cfg.stride == 0 || cfg.out_channels == 0 {
            return Err("kernel, stride and channel count must be at least 1".into());
        }
        let win = Window {
            kh,
            kw,
            stride: cfg.stride,
            pad: cfg.pad,
        };
        let (Some(oh), Some(ow)) = (win.out_len(h, kh), win.out_len(w, kw)) else {
            return Err(format!(
                "a {kh}×{kw} kernel with padding {} does not fit a {h}×{w} input",
                cfg.pad
            ));
        };
        let o = cfg.out_channels;
        let geom = Geometry {
            c,
            h,
            w,
            o,
            oh,
            ow,
            win,
        };
        let path = match WinogradConv::new(&geom).filter(|_| winograd) {
            Some(p) => Path::Winograd(Box::new(p)),
            None => Path::Im2col(Im2col::default()),
        };
        Ok(Conv2d {
            cfg,
            geom,
            weight: Param::trainable("weight", &[o, c, kh, kw], cfg.init.rule(c * kh * kw))
                .with_lr_scale(cfg.lr_scale),
            bias: cfg.bias.then(|| {
                Param::trainable("bias", &[o], super::Init::Zeros).with_lr_scale(cfg.lr_scale)
            }),
            relu: false,
            pool: None,
            needs_dx: true,
            trained: false,
            out: [o, oh, ow],
            y: Tensor::zeros(vec![0]),
            dx: Tensor::zeros(vec![0]),
            plane_sums: Vec::new(),
            path,
        })
    }

    pub fn config(&self) -> Conv2dConfig {
        self.cfg
    }

    /// Makes the weight a fixed buffer (saved, never trained, no gradient computed), for a
    /// layer whose filters come from elsewhere (the whitening layer).
    pub fn freeze_weight(&mut self) {
        self.weight.kind = ParamKind::Buffer;
    }

    /// The weight (`O×C×kh×kw`) and, if any, the bias, for a layer built on this one.
    pub fn params_mut(&mut self) -> (&mut Param, Option<&mut Param>) {
        (&mut self.weight, self.bias.as_mut())
    }

    /// The weight gradient, plane sums and input gradient by the layer's algorithm.
    fn backward_by_path(&mut self, x: &Tensor, dy: &Tensor) {
        let g = self.geom;
        let (weight, dweight) = self.weight.value_and_grad();
        let b = Backward {
            weight,
            relu: self.relu,
            pool: self.pool.as_ref().map(|p| (p.plan, &p.argmax[..])),
            bias: self.bias.is_some(),
            x: data(x),
            y: data(&self.y),
            dy: data(dy),
            needs_dx: self.needs_dx,
            dx: data_mut(&mut self.dx),
            dweight,
            plane_sums: &mut self.plane_sums,
        };
        match &mut self.path {
            Path::Im2col(p) => p.backward(&g, b),
            Path::Winograd(p) => p.backward(&g, b),
        }
    }
}

impl Layer for Conv2d {
    fn out_shape(&self) -> &[usize] {
        &self.out
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> &Tensor {
        let g = self.geom;
        let n = x.shape()[0];
        debug_assert_eq!(x.shape()[1..], [g.c, g.h, g.w]);
        let [o, oh, ow] = self.out;
        reuse(&mut self.y, &[n, o, oh, ow]);
        self.trained = matches!(mode, Mode::Train { .. });
        let pool = self.pool.as_mut().map(|p| {
            p.argmax.resize(n * o * p.plan.plane, 0);
            (p.plan, &mut p.argmax[..])
        });
        let w = Forward {
            weight: &self.weight.value,
            bias: self.bias.as_ref().map(|b| &*b.value),
            relu: self.relu,
            pool,
        };
        let y = data_mut(&mut self.y);
        match &mut self.path {
            Path::Im2col(p) => p.forward(&g, &w, data(x), y, self.trained),
            Path::Winograd(p) => p.forward(&g, w, data(x), y),
        }
        &self.y
    }

    fn output(&self) -> &Tensor {
        &self.y
    }

    fn backward(&mut self, x: &Tensor, dy: &Tensor) -> &Tensor {
        assert!(
            self.trained,
            "conv backward needs the columns of a training-mode forward"
        );
        let g = self.geom;
        let n = dy.shape()[0];
        assert_eq!(x.shape(), [n, g.c, g.h, g.w], "conv backward: input shape");
        reuse(&mut self.dx, &[n, g.c, g.h, g.w]);
        if trained(&self.weight) || self.needs_dx {
            self.backward_by_path(x, dy);
        } else {
            // A frozen weight and no input gradient: only the bias learns, from the plane sums.
            self.plane_sums.resize(n * g.o, 0.0);
            if self.bias.is_some() {
                let (y, relu) = (data(&self.y), self.relu);
                let pool = self.pool.as_ref().map(|p| (p.plan, &p.argmax[..]));
                bias_sums(data(dy), y, relu, pool, g.p(), &mut self.plane_sums);
            }
        }
        if let Some(b) = &mut self.bias {
            // Each channel summed over the images in order.
            for (oc, grad) in b.grad_mut().iter_mut().enumerate() {
                self.plane_sums[oc..]
                    .iter()
                    .step_by(g.o)
                    .for_each(|s| *grad += s);
            }
        }
        &self.dx
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.weight);
        if let Some(b) = &mut self.bias {
            f(b);
        }
    }

    fn macs(&self) -> u64 {
        (self.geom.o * self.geom.p() * self.geom.k()) as u64
    }

    /// Per image the larger column matrix (forward's, or the transposed convolution's of the
    /// input gradient); per group of `BATCH_CHUNK` images a weight-gradient partial sum, and the
    /// flipped kernel; a fused pooling's winners. The Winograd path keeps no column
    /// matrix, so this is an upper bound there.
    fn kept_values(&self, n: usize) -> u128 {
        let n = n as u128;
        let groups = n.div_ceil(super::BATCH_CHUNK as u128);
        let kernel = self.weight.len();
        let winners = self
            .pool
            .as_ref()
            .map_or(0, |p| (self.geom.o * p.plan.plane) as u128);
        (groups + 1) * kernel + n * (self.item_buffer_values() + winners)
    }

    fn item_buffer_values(&self) -> u128 {
        let g = &self.geom;
        let khw = g.win.kh as u128 * g.win.kw as u128;
        let (c, o) = (g.c as u128, g.o as u128);
        (c * khw * g.p() as u128).max(o * khw * (g.h * g.w) as u128)
    }

    fn set_needs_input_grad(&mut self, needed: bool) {
        self.needs_dx = needed;
    }

    /// A ReLU only: its derivative is known from the output alone.
    fn fuse_activation(&mut self, act: Activation) -> bool {
        self.relu = act == Activation::Relu;
        self.relu
    }

    /// On the Winograd path, whose groups of images have their output in scratch anyway.
    fn fuse_max_pool(&mut self, k: usize, stride: usize) -> bool {
        if self.pool.is_some() || !matches!(self.path, Path::Winograd(_)) {
            return false;
        }
        let Ok((o, _, _, ph, pw)) = pool_geometry(&self.out, k, stride) else {
            return false;
        };
        let plan = PoolPlan {
            k,
            stride,
            plane: ph * pw,
            pw,
        };
        self.pool = Some(Pool {
            plan,
            argmax: Vec::new(),
        });
        self.out = [o, ph, pw];
        true
    }
}

/// Adds `bias[o]` to every element of each `p`-long output plane of `y` (`…×O×P`), then applies
/// a fused ReLU, while the planes are still in cache.
fn finish_output(y: &mut [f32], bias: Option<&[f32]>, relu: bool, p: usize) {
    if let Some(b) = bias {
        for (row, &bv) in y.chunks_mut(p).zip(b.iter().cycle()) {
            row.iter_mut().for_each(|v| *v += bv);
        }
    }
    if relu {
        y.iter_mut().for_each(|v| *v = v.max(0.0));
    }
}

/// Planes (`p` floats each) of the output gradient `dy` and the layer's output `y`: with
/// `masked` (a fused ReLU), `masked` = `dy` where `y` > 0, else 0; with `sums`, the sum of each
/// (masked) plane, for the bias gradient. One plane at a time, so the sum reads it from L1.
/// Returns the gradient to go on with.
fn mask_planes<'a>(
    dy: &'a [f32],
    y: &[f32],
    masked: Option<&'a mut [f32]>,
    mut sums: Option<&mut [f32]>,
    p: usize,
) -> &'a [f32] {
    let Some(masked) = masked else {
        if let Some(sums) = sums {
            for (s, plane) in sums.iter_mut().zip(dy.chunks(p)) {
                *s = reduce::sum(plane);
            }
        }
        return dy;
    };
    for (i, ((m, dy), y)) in masked
        .chunks_mut(p)
        .zip(dy.chunks(p))
        .zip(y.chunks(p))
        .enumerate()
    {
        for ((m, &g), &y) in m.iter_mut().zip(dy).zip(y) {
            *m = if y > 0.0 { g } else { 0.0 };
        }
        if let Some(sums) = sums.as_deref_mut() {
            sums[i] = reduce::sum(m);
        }
    }
    masked
}

/// Pools each `p`-long output plane of `full` (`…×O×OH×OW`, row length `ow`, the epilogue
/// applied) into `y` (`…×O×PH×PW`), each winner's index within its plane into `arg`.
fn pool_planes(full: &[f32], p: usize, ow: usize, pool: PoolPlan, y: &mut [f32], arg: &mut [u32]) {
    let PoolPlan {
        k,
        stride,
        plane,
        pw,
    } = pool;
    for ((full, y), arg) in full
        .chunks(p)
        .zip(y.chunks_mut(plane))
        .zip(arg.chunks_mut(plane))
    {
        max_pool_plane(full, ow, k, stride, y, arg, pw);
    }
}

/// The mirror of [`pool_planes`] and the fused ReLU: each `p`-long plane of `out` is zero but
/// at its plane's winners (`arg`), which get the pooled gradient `dy` of the windows they won,
/// in output order, where the pooled output `y` is positive (a winner's output is its windows'
/// pooled value), as [`super::MaxPool2d`] and [`mask_planes`] one after the other would give;
/// with `sums`, the sum of each plane, for the bias gradient.
fn unpool_planes(
    (dy, y, arg): (&[f32], &[f32], &[u32]),
    relu: bool,
    pool: PoolPlan,
    out: &mut [f32],
    mut sums: Option<&mut [f32]>,
    p: usize,
) {
    let (plane, disjoint) = (pool.plane, disjoint(pool.k, pool.stride));
    for (i, out) in out.chunks_mut(p).enumerate() {
        let r = i * plane..(i + 1) * plane;
        let (dy, arg) = (&dy[r.clone()], &arg[r.clone()]);
        if relu {
            out.fill(0.0);
            // A select, not a branch (which a ReLU's signs would mispredict): a winner's
            // windows share its sign, so adding zeros leaves the masked ones +0 and the others
            // their exact sums. Disjoint windows store, as `unpool_plane` does.
            let masked = dy
                .iter()
                .zip(&y[r])
                .map(|(&g, &y)| if y > 0.0 { g } else { 0.0 });
            if disjoint {
                for (g, &a) in masked.zip(arg) {
                    out[a as usize] = g;
                }
            } else {
                for (g, &a) in masked.zip(arg) {
                    out[a as usize] += g;
                }
            }
        } else {
            unpool_plane(dy, arg, out, disjoint);
        }
        if let Some(sums) = sums.as_deref_mut() {
            sums[i] = reduce::sum(out);
        }
    }
}

/// With a bias and nothing else to learn: each `p`-long plane of the output gradient `dy`
/// summed (after the fused ReLU's mask, from the output `y`, and with a fused pooling spread
/// back through its winners) into `sums`, planes in parallel, masking into thread scratch.
fn bias_sums(
    dy: &[f32],
    y: &[f32],
    relu: bool,
    pool: Option<(PoolPlan, &[u32])>,
    p: usize,
    sums: &mut [f32],
) {
    use crate::kernels::scratch::with_scratch;
    use rayon::prelude::*;
    let q = pool.map_or(p, |(plan, _)| plan.plane);
    sums.par_iter_mut().enumerate().for_each(|(i, s)| {
        let sum = Some(std::slice::from_mut(s));
        let (dy, y) = (&dy[i * q..][..q], &y[i * q..][..q]);
        match pool {
            Some((plan, arg)) => with_scratch(p, |m| {
                unpool_planes((dy, y, &arg[i * q..][..q]), relu, plan, m, sum, p);
            }),
            None if relu => with_scratch(p, |m| {
                mask_planes(dy, y, Some(m), sum, p);
            }),
            None => {
                mask_planes(dy, y, None, sum, p);
            }
        }
    });
}

/// `flipped` (C×O×kh×kw) = the kernel `weight` (O×C×kh×kw) flipped in space with input and
/// output channels swapped, `w'[c][o][i][j] = w[o][c][kh−1−i][kw−1−j]`: the kernel of the input
/// gradient as a convolution of the output gradient (stride 1).
fn flip_kernel(weight: &[f32], g: &Geometry, flipped: &mut Vec<f32>) {
    let (c, o, kh, kw) = (g.c, g.o, g.win.kh, g.win.kw);
    flipped.resize(c * o * kh * kw, 0.0);
    for oc in 0..o {
        for ic in 0..c {
            for i in 0..kh {
                for j in 0..kw {
                    flipped[((ic * o + oc) * kh + i) * kw + j] =
                        weight[((oc * c + ic) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)];
                }
            }
        }
    }
}
