//! 2-D convolution: Winograd F(2×2, 3×3) for 3×3 stride-1 kernels, im2col + GEMM otherwise.
//!
//! Weight `O×C×kh×kw` (PyTorch's layout), optional bias `O`. On the im2col path each image is
//! lowered to a column matrix `(C·kh·kw)×(OH·OW)` that forward keeps for backward, so backward's
//! weight gradient needs no second im2col. On the Winograd path (see `kernels::winograd`)
//! forward, the input gradient (itself a 3×3 stride-1 convolution) and the weight gradient all
//! use 4/9 of the multiplications; forward keeps no copy of its input, as backward is handed
//! it again (see the contract in `layers`).
//! `CNN_CONV=im2col` turns the Winograd path off, for comparison. Images are processed
//! in parallel in groups whose size depends on the shapes only; the weight gradient is summed
//! over fixed groups of images and then over groups in order, so results do not depend on the
//! thread count.

use super::{BATCH_CHUNK, Layer, Mode, Param};
use crate::kernels::gemm::sgemm;
use crate::kernels::im2col::{col2im, im2col};
use crate::kernels::reference::Window;
use crate::kernels::transpose::transpose;
use crate::kernels::winograd::Winograd;
use crate::kernels::{SendPtr, reduce};
use crate::rng::Rng;
use crate::tensor::{Tensor, data, data_mut, reuse};
use rayon::prelude::*;
use std::sync::OnceLock;

/// Elements per parallel task of the fused ReLU's gradient mask.
const RELU_CHUNK: usize = 1 << 15;

/// Whether 3×3 stride-1 convolutions use Winograd's algorithm (`CNN_CONV=im2col`: no), read once.
fn winograd_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("CNN_CONV").as_deref() != Ok("im2col"))
}

/// Scratch slots a parallel loop needs for [`thread_slot`]: one per worker thread. (Fewer, even
/// when there are fewer tasks than threads, would not do: any worker may pick up a task.)
fn slot_count() -> usize {
    rayon::current_num_threads()
}

/// Makes scratch `buf` at least `len` floats long. New space comes zeroed from the allocator,
/// which leaves fresh pages unmapped until written: a slot no thread uses costs nothing
/// (`Vec::resize` would write every float; `cnn predict` on one image uses one slot of two).
fn grow(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        *buf = vec![0.0; len];
    }
}

/// `buf[slot]` of `len` floats, for the worker thread running this task.
///
/// SAFETY (callers): `buf` holds [`slot_count`]` · len` floats, and the task neither starts
/// parallel work nor yields to rayon while it uses the slot, so no two running tasks share one.
unsafe fn thread_slot<'a>(buf: SendPtr, len: usize) -> &'a mut [f32] {
    let slot = rayon::current_thread_index().unwrap_or(0);
    debug_assert!(slot < slot_count());
    unsafe { std::slice::from_raw_parts_mut(buf.get().add(slot * len), len) }
}

/// `y = conv(x) + bias` by `plan` for a whole batch (`x`: N×C×H×W, `y`: N×O×OH×OW, `u`: the
/// transformed weights), then `max(0, y)` if `relu`: groups of images in parallel, each on its
/// worker thread's slot of `scratch`, which grows if needed.
fn winograd_batch(
    plan: &Winograd,
    u: &[f32],
    x: &[f32],
    y: &mut [f32],
    (bias, relu): (Option<&[f32]>, bool),
    scratch: &mut Vec<f32>,
) {
    let (item_in, item_out) = (plan.input_len(), plan.output_len());
    let n = x.len() / item_in;
    let g = plan.group();
    let slots = slot_count();
    let len = plan.scratch_len(g.min(n));
    grow(scratch, slots * len);
    let buf = SendPtr(scratch.as_mut_ptr());
    let plane = plan.output_plane();
    // One group per task, here and in the other per-image loops: left to itself rayon hands
    // out pieces of a quarter of the batch, and when one thread runs late the other cannot take
    // over part of a piece. mnist-ref's conv2 forward, batch 64, 2 threads, 150 steps: the
    // threads idled 325 and 624 µs per loop on average (two runs), 159 and 193 µs this way.
    y.par_chunks_mut(g * item_out)
        .zip(x.par_chunks(g * item_in))
        .with_max_len(1)
        .for_each(|(y, x)| {
            // SAFETY: see `thread_slot`; the Winograd product runs on this thread only.
            let s = unsafe { thread_slot(buf, len) };
            plan.forward(x, u, s, y);
            finish_output(y, bias, relu, plane);
        });
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

/// One chunk of images for [`Conv2d::backward_by_winograd`]: its weight-gradient partial sum,
/// input gradient, plane sums and, with a fused ReLU, masked output gradient.
type Chunk<'a> = (
    ((&'a mut [f32], &'a mut [f32]), &'a mut [f32]),
    Option<&'a mut [f32]>,
);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub out_channels: usize,
    pub kernel: (usize, usize),
    pub stride: usize,
    pub pad: usize,
    pub bias: bool,
}

impl Default for Conv2dConfig {
    fn default() -> Self {
        Conv2dConfig {
            out_channels: 1,
            kernel: (3, 3),
            stride: 1,
            pad: 0,
            bias: true,
        }
    }
}

pub struct Conv2d {
    cfg: Conv2dConfig,
    win: Window,
    input: (usize, usize, usize),
    out: [usize; 3],
    weight: Param,
    bias: Option<Param>,
    needs_dx: bool,
    /// im2col path: N×(C·kh·kw)×(OH·OW), the lowered input, kept for the weight gradient, then
    /// reused as scratch for the input gradient. Winograd path and evaluation: one scratch slot
    /// per worker thread.
    cols: Vec<f32>,
    /// F(2×2, 3×3) plans for forward and for the input gradient, when the kernel is 3×3 with
    /// stride 1 and padding at most 2 (the input gradient's padding is `2 − pad`).
    winograd: Option<(Winograd, Winograd)>,
    /// The plans' transformed weights (forward, input gradient).
    u: Vec<f32>,
    u_dx: Vec<f32>,
    y: Tensor,
    dx: Tensor,
    /// One weight-gradient partial sum per group of BATCH_CHUNK images.
    dw_parts: Vec<f32>,
    /// The weights rearranged for the input gradient (see `input_grad_by_convolution`).
    flipped: Vec<f32>,
    /// Tests set this to check the two input-gradient paths against each other.
    pub(crate) force_col2im: bool,
    /// Whether the last forward was in training mode (and so kept every image's columns).
    trained: bool,
    /// Whether the output goes through a ReLU (fused, see [`Layer::fuse_relu`]).
    relu: bool,
    /// With a fused ReLU: the incoming gradient where the output was positive, else 0 (on the
    /// Winograd path only when tests force another input-gradient path: it masks a few images
    /// at a time into thread scratch).
    dy_masked: Vec<f32>,
    /// im2col path: one image's output gradient transposed (P×O), per worker thread.
    dy_t: Vec<f32>,
    /// With a bias: the sum of each output-gradient plane (N×O), for the bias gradient.
    plane_sums: Vec<f32>,
}

impl Conv2d {
    /// Shapes: input item `C×H×W` → output item `O×OH×OW`.
    pub fn new(input: &[usize], cfg: Conv2dConfig, rng: Option<&mut Rng>) -> Result<Self, String> {
        let &[c, h, w] = input else {
            return Err(format!(
                "needs a C×H×W input, got {}",
                crate::tensor::fmt_shape(input)
            ));
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
        // With fewer than 8 input channels (a first layer) the 16 products are too thin for the
        // transforms to pay: measured slower than im2col + GEMM on cifar-ref's 3-channel conv1.
        let winograd = (kh == 3 && kw == 3 && cfg.stride == 1 && cfg.pad <= 2 && c >= 8)
            .then(|| {
                Some((
                    Winograd::new((c, h, w), o, cfg.pad)?,
                    Winograd::new((o, oh, ow), c, 2 - cfg.pad)?,
                ))
            })
            .flatten()
            .filter(|_| winograd_enabled());
        let fan_in = c * kh * kw;
        let weight = Param::kaiming("weight", &[o, c, kh, kw], fan_in, rng);
        let bias = cfg
            .bias
            .then(|| Param::trainable("bias", Tensor::zeros(vec![o])));
        Ok(Conv2d {
            cfg,
            win,
            input: (c, h, w),
            out: [o, oh, ow],
            weight,
            bias,
            needs_dx: true,
            cols: Vec::new(),
            winograd,
            u: Vec::new(),
            u_dx: Vec::new(),
            y: Tensor::zeros(vec![0]),
            dx: Tensor::zeros(vec![0]),
            dw_parts: Vec::new(),
            flipped: Vec::new(),
            force_col2im: false,
            trained: false,
            relu: false,
            dy_masked: Vec::new(),
            dy_t: Vec::new(),
            plane_sums: Vec::new(),
        })
    }

    fn k(&self) -> usize {
        self.input.0 * self.win.kh * self.win.kw
    }

    fn p(&self) -> usize {
        self.out[1] * self.out[2]
    }

    /// Whether the input gradient can be computed as a plain convolution of `dy` (stride 1,
    /// square kernel, padding at most `k − 1`), which avoids col2im's scattered adds.
    fn transposed_conv_applies(&self) -> bool {
        !self.force_col2im
            && self.win.stride == 1
            && self.win.kh == self.win.kw
            && self.win.pad < self.win.kh
    }

    /// dx = the convolution of dy (O×OH×OW) with the kernel flipped in space and with input and
    /// output channels swapped, `w'[c][o][i][j] = w[o][c][kh−1−i][kw−1−j]`, padding `k − 1 − p`:
    /// exactly the adjoint of the forward convolution when the stride is 1.
    fn input_grad_by_convolution(&mut self, dy: &[f32], n: usize) {
        let (c, h, w) = self.input;
        let [o, oh, ow] = self.out;
        let (kh, kw) = (self.win.kh, self.win.kw);
        let k2 = o * kh * kw;
        self.flip_weights();
        let win = Window {
            kh,
            kw,
            stride: 1,
            pad: kh - 1 - self.win.pad,
        };
        let hw = h * w;
        grow(&mut self.cols, n * k2 * hw);
        let flipped = &self.flipped;
        data_mut(&mut self.dx)
            .par_chunks_mut(c * hw)
            .zip(self.cols.par_chunks_mut(k2 * hw))
            .zip(dy.par_chunks(o * oh * ow))
            .with_max_len(1)
            .for_each(|((dx, cols), dy)| {
                im2col(dy, (o, oh, ow), win, h, w, cols);
                sgemm(c, hw, k2, flipped, false, cols, false, dx, false);
            });
    }

    /// `flipped` (C×O×kh×kw) = the kernel flipped in space with input and output channels
    /// swapped, `w'[c][o][i][j] = w[o][c][kh−1−i][kw−1−j]`.
    fn flip_weights(&mut self) {
        let (c, o) = (self.input.0, self.out[0]);
        let (kh, kw) = (self.win.kh, self.win.kw);
        self.flipped.resize(c * o * kh * kw, 0.0);
        let weight = data(&self.weight.value);
        for oc in 0..o {
            for ic in 0..c {
                for i in 0..kh {
                    for j in 0..kw {
                        self.flipped[((ic * o + oc) * kh + i) * kw + j] =
                            weight[((oc * c + ic) * kh + (kh - 1 - i)) * kw + (kw - 1 - j)];
                    }
                }
            }
        }
    }

    /// dW = Σ_n dy_n (O×P) · cols_nᵀ (P×K) from the columns forward kept, summed per group of
    /// BATCH_CHUNK images, then over groups in order.
    ///
    /// With `mask`, `dy` is the incoming gradient, masked and summed here ([`mask_planes`]) one
    /// image at a time into thread scratch, for a layer whose input gradient is not needed (a
    /// first layer): a pass of its own wrote and re-read the whole batch's gradient (mnist-ref's
    /// conv1 backward, batch 64: 1.70 → 1.19 ms on 1 thread, 1.15 → 0.77 on 2).
    fn weight_grad_by_im2col(&mut self, dy: &[f32], mask: bool) {
        let (k, p, o) = (self.k(), self.p(), self.out[0]);
        let n = dy.len() / (o * p);
        let groups = n.div_ceil(BATCH_CHUNK);
        self.dw_parts.resize(groups * o * k, 0.0);
        let slots = slot_count();
        let (relu, bias) = (self.relu, self.bias.is_some());
        let own_len = if mask && relu { o * p } else { 0 };
        grow(&mut self.dy_t, slots * (p * o + own_len));
        let dy_t = SendPtr(self.dy_t.as_mut_ptr());
        self.plane_sums.resize(n * o, 0.0);
        let (cols, y) = (&self.cols, data(&self.y));
        self.dw_parts
            .par_chunks_mut(o * k)
            .zip(dy.par_chunks(BATCH_CHUNK * o * p))
            .zip(cols.par_chunks(BATCH_CHUNK * k * p))
            .zip(y.par_chunks(BATCH_CHUNK * o * p))
            .zip(self.plane_sums.par_chunks_mut(BATCH_CHUNK * o))
            .with_max_len(1)
            .for_each(|((((part, dy), cols), y), sums)| {
                // SAFETY: see `thread_slot`; transpose and sgemm run on this thread only.
                let slot = unsafe { thread_slot(dy_t, p * o + own_len) };
                let (dy_t, own) = slot.split_at_mut(p * o);
                let images = dy.chunks(o * p).zip(cols.chunks(k * p));
                for (i, ((dy, cols), (y, sums))) in images
                    .zip(y.chunks(o * p).zip(sums.chunks_mut(o)))
                    .enumerate()
                {
                    let dy = if mask {
                        let own = relu.then_some(&mut own[..]);
                        mask_planes(dy, y, own, bias.then_some(sums), p)
                    } else {
                        dy
                    };
                    // Computed transposed, dWᵀ (K×O) = cols_n (K×P) · dy_nᵀ (P×O), with dy_n
                    // transposed first: both operands then in the layout the GEMM runs fastest
                    // on (see `kernels::transpose`).
                    transpose(dy, o, p, dy_t);
                    sgemm(k, o, p, cols, false, dy_t, false, part, i > 0);
                }
            });
        // Rows of dW in parallel, each element summing the (transposed) partials in order.
        let parts = &self.dw_parts;
        self.weight
            .grad_mut()
            .par_chunks_mut(k)
            .enumerate()
            .for_each(|(oc, row)| {
                for part in parts.chunks(o * k) {
                    row.iter_mut()
                        .enumerate()
                        .for_each(|(j, g)| *g += part[j * o + oc]);
                }
            });
    }

    /// The whole backward by Winograd's algorithm (`plans`: forward, and input gradient as the
    /// convolution of `dy` with the flipped kernel, input O×OH×OW, C outputs, padding
    /// `2 − pad`), in one pass over the batch: fixed chunks of images in parallel, and within a
    /// chunk, a few images at a time, their output gradient masked and summed
    /// ([`mask_planes`]; masked into the thread's scratch), added into the chunk's `16×O×C`
    /// weight-gradient partial sum and turned into their input gradient, while it is in cache.
    /// The partials are then summed in order and transformed back. When tests want the input
    /// gradient by another path (`force_col2im`), the masked gradient is kept in `masked` and
    /// returned for it.
    ///
    /// As three passes over the batch, each image's gradient came from memory three times and
    /// each pass ended with the threads waiting for each other: mnist-ref's second convolution,
    /// batch 64, took 25.2 ms backward at 1 thread, 14.5 at 2; in one pass 23.8 and 13.9, and
    /// 22.7 and 12.2 with the masked gradient in thread scratch rather than a batch-sized buffer.
    fn backward_by_winograd<'a>(
        &mut self,
        x: &[f32],
        dy: &'a [f32],
        masked: &'a mut Vec<f32>,
        (plan, plan_dx): (Winograd, Winograd),
    ) -> Option<&'a [f32]> {
        let with_dx = self.needs_dx && !self.force_col2im;
        let (relu, keep) = (self.relu, self.needs_dx && !with_dx);
        if with_dx {
            self.flip_weights();
            self.u_dx.resize(plan_dx.weights_len(), 0.0);
            plan_dx.transform_weights(&self.flipped, &mut self.u_dx);
        }
        let y = data(&self.y);
        let (item_in, item_out, o, p) =
            (plan.input_len(), plan.output_len(), self.out[0], self.p());
        let n = x.len() / item_in;
        let (chunk, len) = (plan.grad_chunk(), plan.grad_len());
        let (g, g_dx) = (plan.group(), plan_dx.group());
        let step = if with_dx { g.max(g_dx) } else { g };
        let slots = slot_count();
        let mut scratch = plan.scratch_len(g.min(n));
        if with_dx {
            scratch = scratch.max(plan_dx.scratch_len(g_dx.min(n)));
        }
        // Then the masked gradient of `step` images, unless it goes to `masked`.
        let own_len = if relu && !keep { step * item_out } else { 0 };
        grow(&mut self.cols, slots * (scratch + own_len));
        let buf = SendPtr(self.cols.as_mut_ptr());
        self.dw_parts.resize(n.div_ceil(chunk) * len, 0.0);
        self.plane_sums.resize(n * o, 0.0);
        let bias = self.bias.is_some();
        masked.resize(if relu && keep { dy.len() } else { 0 }, 0.0);
        let u_dx = &self.u_dx;
        let work = |(((part, dx), sums), mut masked): Chunk, i: usize| {
            let m = sums.len() / o;
            let at = i * chunk;
            let (x, dy, y) = (
                &x[at * item_in..][..m * item_in],
                &dy[at * item_out..][..m * item_out],
                &y[at * item_out..][..m * item_out],
            );
            // SAFETY: see `thread_slot`; the products run on this thread only.
            let (slot, own) = unsafe { thread_slot(buf, scratch + own_len) }.split_at_mut(scratch);
            for j in (0..m).step_by(step) {
                let k = step.min(m - j);
                let (a, b) = (j * item_out, k * item_out);
                let masked = match masked.as_deref_mut() {
                    Some(kept) => Some(&mut kept[a..][..b]),
                    None => relu.then(|| &mut own[..b]),
                };
                let sums = bias.then(|| &mut sums[j * o..][..k * o]);
                let dy = mask_planes(&dy[a..][..b], &y[a..][..b], masked, sums, p);
                let x = &x[j * item_in..][..k * item_in];
                for (q, (x, dy)) in x
                    .chunks(g * item_in)
                    .zip(dy.chunks(g * item_out))
                    .enumerate()
                {
                    plan.accumulate_weight_grad(x, dy, slot, part, j + q > 0);
                }
                if with_dx {
                    let dx = &mut dx[j * item_in..][..k * item_in];
                    for (dy, dx) in dy
                        .chunks(g_dx * item_out)
                        .zip(dx.chunks_mut(g_dx * item_in))
                    {
                        plan_dx.forward(dy, u_dx, slot, dx);
                    }
                }
            }
        };
        let chunks = self
            .dw_parts
            .par_chunks_mut(len)
            .zip(data_mut(&mut self.dx).par_chunks_mut(chunk * item_in))
            .zip(self.plane_sums.par_chunks_mut(chunk * o));
        if relu && keep {
            chunks
                .zip(masked.par_chunks_mut(chunk * item_out).map(Some))
                .enumerate()
                .with_max_len(1)
                .for_each(|(i, c)| work(c, i));
        } else {
            chunks
                .enumerate()
                .with_max_len(1)
                .for_each(|(i, c)| work((c, None), i));
        }
        // Element-wise in parallel, each element summing the partials in order.
        let (first, rest) = self.dw_parts.split_at_mut(len);
        const CHUNK: usize = 1 << 12;
        first
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(i, sum)| {
                for part in rest.chunks(len) {
                    let part = &part[i * CHUNK..][..sum.len()];
                    sum.iter_mut().zip(part).for_each(|(a, b)| *a += b);
                }
            });
        plan.weight_grad(first, self.weight.grad_mut());
        keep.then_some(if relu { masked } else { dy })
    }

    fn forward_by_winograd(&mut self, x: &Tensor, plan: Winograd) {
        self.u.resize(plan.weights_len(), 0.0);
        plan.transform_weights(data(&self.weight.value), &mut self.u);
        let bias = self.bias.as_ref().map(|b| data(&b.value));
        let y = data_mut(&mut self.y);
        winograd_batch(
            &plan,
            &self.u,
            data(x),
            y,
            (bias, self.relu),
            &mut self.cols,
        );
    }

    /// [`mask_planes`] over the output gradient `dy` (`N×O×P`), planes in parallel.
    fn mask_and_sum<'a>(&mut self, dy: &'a [f32], masked: &'a mut Vec<f32>) -> &'a [f32] {
        let (p, bias) = (self.p(), self.bias.is_some());
        let per_task = (RELU_CHUNK / p).max(1);
        self.plane_sums.resize(dy.len() / p, 0.0);
        let sums = self.plane_sums.par_chunks_mut(per_task);
        let y = data(&self.y);
        if self.relu {
            masked.resize(dy.len(), 0.0);
            masked
                .par_chunks_mut(per_task * p)
                .zip(dy.par_chunks(per_task * p))
                .zip(y.par_chunks(per_task * p))
                .zip(sums)
                .for_each(|(((m, dy), y), s)| {
                    mask_planes(dy, y, Some(m), bias.then_some(s), p);
                });
            return masked;
        }
        if bias {
            sums.zip(dy.par_chunks(per_task * p)).for_each(|(s, dy)| {
                mask_planes(dy, y, None, Some(s), p);
            });
        }
        dy
    }

    /// Tests use this to run the im2col path beside the Winograd one.
    #[cfg(test)]
    pub(crate) fn without_winograd(mut self) -> Self {
        self.winograd = None;
        self
    }

    /// dx_n = col2im(Wᵀ (K×O) · dy_n (O×P)), for any stride and padding.
    fn input_grad_by_col2im(&mut self, dy: &[f32]) {
        let (k, p, o) = (self.k(), self.p(), self.out[0]);
        let (c, h, w) = self.input;
        let (win, (oh, ow)) = (self.win, (self.out[1], self.out[2]));
        let weight = data(&self.weight.value);
        // The column buffer is free again after the weight gradient: reuse it (on the Winograd
        // path it holds per-thread slots only, so it may need to grow).
        let n = dy.len() / (o * p);
        grow(&mut self.cols, n * k * p);
        data_mut(&mut self.dx)
            .par_chunks_mut(c * h * w)
            .zip(self.cols.par_chunks_mut(k * p))
            .zip(dy.par_chunks(o * p))
            .with_max_len(1)
            .for_each(|((dx, dcols), dy)| {
                sgemm(k, p, o, weight, true, dy, false, dcols, false);
                dx.fill(0.0);
                col2im(dcols, (c, h, w), win, oh, ow, dx);
            });
    }
}

impl Layer for Conv2d {
    fn out_shape(&self) -> &[usize] {
        &self.out
    }

    fn forward(&mut self, x: &Tensor, mode: Mode) -> &Tensor {
        let n = x.shape()[0];
        let (k, p, o) = (self.k(), self.p(), self.out[0]);
        let (c, h, w) = self.input;
        debug_assert_eq!(x.shape()[1..], [c, h, w]);
        reuse(&mut self.y, &[n, o, self.out[1], self.out[2]]);
        self.trained = matches!(mode, Mode::Train { .. });
        if let Some((plan, _)) = self.winograd {
            self.forward_by_winograd(x, plan);
            return &self.y;
        }
        // Training keeps every image's columns for backward; evaluation needs one column buffer
        // per worker thread only (a batch of 1,000 CIFAR images would otherwise take gigabytes).
        let slots = if self.trained { n } else { slot_count() };
        grow(&mut self.cols, slots * k * p);
        let cols = SendPtr(self.cols.as_mut_ptr());
        let trained = self.trained;
        let (win, (oh, ow)) = (self.win, (self.out[1], self.out[2]));
        let weight = data(&self.weight.value);
        let bias = self.bias.as_ref().map(|b| data(&b.value));
        let relu = self.relu;
        data_mut(&mut self.y)
            .par_chunks_mut(o * p)
            .zip(data(x).par_chunks(c * h * w))
            .enumerate()
            .with_max_len(1)
            .for_each(|(i, (y, x))| {
                // SAFETY: in training each image has its own slot; in evaluation each worker
                // thread does (see `thread_slot`: im2col and sgemm run on this thread only).
                let cols = unsafe {
                    if trained {
                        std::slice::from_raw_parts_mut(cols.get().add(i * k * p), k * p)
                    } else {
                        thread_slot(cols, k * p)
                    }
                };
                im2col(x, (c, h, w), win, oh, ow, cols);
                sgemm(o, p, k, weight, false, cols, false, y, false);
                finish_output(y, bias, relu, p);
            });
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
        let n = dy.shape()[0];
        let o = self.out[0];
        let (c, h, w) = self.input;
        assert_eq!(x.shape(), [n, c, h, w], "conv backward: input shape");
        // The buffer is taken out of `self` for the duration, so that `dy` may borrow it.
        let mut masked = std::mem::take(&mut self.dy_masked);
        reuse(&mut self.dx, &[n, c, h, w]);
        // The gradient for an input gradient still to compute.
        let rest = match self.winograd {
            Some(plans) => self.backward_by_winograd(data(x), data(dy), &mut masked, plans),
            None if !self.needs_dx => {
                self.weight_grad_by_im2col(data(dy), true);
                None
            }
            None => {
                let dy = self.mask_and_sum(data(dy), &mut masked);
                self.weight_grad_by_im2col(dy, false);
                Some(dy)
            }
        };
        if let Some(b) = &mut self.bias {
            // Each channel summed over the images in order.
            for (oc, g) in b.grad_mut().iter_mut().enumerate() {
                self.plane_sums[oc..]
                    .iter()
                    .step_by(o)
                    .for_each(|s| *g += s);
            }
        }
        if let Some(dy) = rest {
            if self.transposed_conv_applies() {
                self.input_grad_by_convolution(dy, n);
            } else {
                self.input_grad_by_col2im(dy);
            }
        }
        self.dy_masked = masked;
        &self.dx
    }

    fn visit_params(&mut self, f: &mut dyn FnMut(&mut Param)) {
        f(&mut self.weight);
        if let Some(b) = &mut self.bias {
            f(b);
        }
    }

    fn macs(&self) -> u64 {
        (self.out[0] * self.p() * self.k()) as u64
    }

    fn set_needs_input_grad(&mut self, needed: bool) {
        self.needs_dx = needed;
    }

    fn fuse_relu(&mut self) -> bool {
        self.relu = true;
        true
    }
}

impl Conv2d {
    pub fn config(&self) -> Conv2dConfig {
        self.cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::gradcheck::{check_layer, seeded};

    /// Backward needs a training-mode forward; convolution itself has no random choices.
    const TRAIN: Mode = Mode::Train { seed: 0 };

    fn conv(
        input: &[usize],
        o: usize,
        k: (usize, usize),
        stride: usize,
        pad: usize,
        bias: bool,
    ) -> Conv2d {
        let cfg = Conv2dConfig {
            out_channels: o,
            kernel: k,
            stride,
            pad,
            bias,
        };
        let mut c = Conv2d::new(input, cfg, Some(&mut Rng::new(1))).unwrap();
        // Non-zero biases so their effect is visible to the check.
        c.visit_params(&mut |p| {
            if p.name == "bias" {
                p.value
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, v)| *v = 0.1 * i as f32 - 0.2);
            }
        });
        c
    }

    /// Evaluation shares one column buffer per thread; it must give what training gives.
    #[test]
    fn conv_eval_forward_matches_training_forward() {
        let x = seeded(&[7, 3, 9, 8], 5);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            let mut c = conv(&[3, 9, 8], 5, (3, 3), 1, 1, true);
            let train = c.forward(&x, TRAIN).clone();
            assert_eq!(c.forward(&x, Mode::Eval), &train);
        });
    }

    #[test]
    fn conv_grad_batch1_odd_nonsquare() {
        check_layer(
            &mut conv(&[2, 5, 7], 3, (3, 3), 1, 0, true),
            &[1, 2, 5, 7],
            TRAIN,
        );
    }

    #[test]
    fn conv_grad_batch3_stride2_padding() {
        check_layer(
            &mut conv(&[3, 7, 6], 4, (3, 3), 2, 1, true),
            &[3, 3, 7, 6],
            TRAIN,
        );
    }

    #[test]
    fn conv_grad_nonsquare_kernel_no_bias_many_groups() {
        // Batch 9 spans three BATCH_CHUNK groups of the weight-gradient reduction.
        check_layer(
            &mut conv(&[2, 6, 5], 2, (2, 3), 1, 2, false),
            &[9, 2, 6, 5],
            TRAIN,
        );
    }

    /// Hand-worked: a 3×3 input 1..9, a 2×2 kernel [[1,0],[0,-1]], bias 0.5, stride 1, no pad.
    /// y[i][j] = x[i][j] - x[i+1][j+1] + 0.5 = -4 + 0.5 everywhere.
    /// With padding 1 and stride 2 the output is 2×2: corners see only one of the two taps:
    /// y[0][0] = -x[0][0] + .5 = -0.5, y[0][1] = -x[0][2]... see the table below.
    #[test]
    fn conv_hand_worked() {
        let x =
            Tensor::from_shape_vec(vec![1, 1, 3, 3], (1..=9).map(|v| v as f32).collect()).unwrap();
        let mut c = conv(&[1, 3, 3], 1, (2, 2), 1, 0, true);
        c.visit_params(&mut |p| match p.name {
            "weight" => p
                .value
                .assign(&Tensor::from_shape_vec(vec![1, 1, 2, 2], vec![1., 0., 0., -1.]).unwrap()),
            _ => p.value.fill(0.5),
        });
        assert_eq!(data(c.forward(&x, TRAIN)), &[-3.5; 4]);

        let mut c = conv(&[1, 3, 3], 1, (2, 2), 2, 1, true);
        c.visit_params(&mut |p| match p.name {
            "weight" => p
                .value
                .assign(&Tensor::from_shape_vec(vec![1, 1, 2, 2], vec![1., 0., 0., -1.]).unwrap()),
            _ => p.value.fill(0.5),
        });
        // Padded input is 5×5 with x in the centre; windows start at (0,0), (0,2), (2,0), (2,2):
        // tap (0,0) reads padded(r,c), tap (1,1) reads padded(r+1,c+1) = x[r][c].
        // (0,0): 0 - x00 = -1; (0,2): 0 - x01... padded(1,3) = x[0][2] = 3 → -3;
        // (2,0): 0 - x[2][0] = -7; (2,2): x[1][1] - x[2][2] = 5 - 9 = -4.
        assert_eq!(data(c.forward(&x, TRAIN)), &[-0.5, -2.5, -6.5, -3.5]);
    }

    /// The two input-gradient paths agree (to rounding) wherever the faster one applies.
    #[test]
    fn conv_input_gradient_paths_agree() {
        for &(c, h, w, o, k, pad) in &[
            (3, 7, 5, 4, 3, 1),
            (2, 6, 9, 5, 3, 0),
            (1, 5, 5, 2, 5, 2),
            (4, 8, 8, 3, 3, 2),
            (2, 4, 3, 3, 1, 0),
        ] {
            let x = seeded(&[3, c, h, w], 7);
            let grads = |force: bool| {
                let mut l = conv(&[c, h, w], o, (k, k), 1, pad, true);
                assert!(l.transposed_conv_applies());
                l.force_col2im = force;
                let y = l.forward(&x, TRAIN).clone();
                l.backward(&x, &y).clone()
            };
            let (a, b) = (grads(false), grads(true));
            for (u, v) in a.iter().zip(b.iter()) {
                assert!(
                    (u - v).abs() <= 1e-4 * (1.0 + v.abs()),
                    "c={c} h={h} w={w} k={k} pad={pad}: {u} vs {v}"
                );
            }
        }
    }

    #[test]
    fn conv_grad_winograd_path() {
        let mut l = conv(&[8, 4, 5], 2, (3, 3), 1, 1, true);
        if winograd_enabled() {
            assert!(l.winograd.is_some());
        }
        check_layer(&mut l, &[2, 8, 4, 5], TRAIN);
        // A first layer (fewer than 8 channels) keeps im2col + GEMM.
        assert!(conv(&[3, 8, 8], 4, (3, 3), 1, 1, true).winograd.is_none());
    }

    /// The Winograd path gives what im2col + GEMM gives, to rounding: output, input gradient,
    /// weight and bias gradients; batch 1, odd and non-square sizes, padding 0–2, and batches
    /// that fill one group of images, several, and a partial last one.
    #[test]
    fn conv_winograd_matches_im2col() {
        // (N, C, H, W, O, pad): the last three with several chunks of images for the weight
        // gradient, the second of them with different group sizes for the two plans (8 and 5),
        // the last in chunks of several groups of one image, and a last chunk of one.
        for &(n, c, h, w, o, pad) in &[
            (1, 8, 3, 3, 1, 0),
            (3, 8, 5, 7, 3, 1),
            (5, 9, 9, 6, 4, 2),
            (2, 8, 8, 8, 2, 0),
            (2, 8, 34, 33, 2, 1),
            (70, 8, 4, 4, 2, 1),
            (13, 8, 5, 7, 3, 0),
            (9, 8, 18, 18, 2, 1),
        ] {
            let x = seeded(&[n, c, h, w], 11);
            // With and without a bias and a fused ReLU, and the Winograd layer's input
            // gradient by the transposed convolution instead.
            for (bias, relu, col2im) in [
                (true, false, false),
                (true, true, false),
                (false, true, false),
                (false, false, true),
            ] {
                let layer = || {
                    let mut l = conv(&[c, h, w], o, (3, 3), 1, pad, bias);
                    if relu {
                        assert!(l.fuse_relu());
                    }
                    l
                };
                let run = |mut l: Conv2d| {
                    let y = l.forward(&x, TRAIN).clone();
                    let dx = l.backward(&x, &seeded(y.shape(), 12)).clone();
                    let mut grads = Vec::new();
                    l.visit_params(&mut |p| grads.push(p.grad.clone()));
                    (y, dx, grads)
                };
                let mut fast = layer();
                if winograd_enabled() {
                    assert!(fast.winograd.is_some());
                }
                fast.force_col2im = col2im;
                let (a, b) = (run(fast), run(layer().without_winograd()));
                let close = |u: &Tensor, v: &Tensor, what: &str| {
                    assert_eq!(u.shape(), v.shape());
                    for (p, q) in u.iter().zip(v.iter()) {
                        assert!(
                            (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                            "{what}, n={n} c={c} h={h} w={w} o={o} pad={pad} bias={bias} \
                             relu={relu} col2im={col2im}: {p} vs {q}"
                        );
                    }
                };
                close(&a.0, &b.0, "output");
                close(&a.1, &b.1, "input gradient");
                assert_eq!(a.2.len(), b.2.len());
                for (ga, gb) in a.2.iter().zip(&b.2) {
                    close(ga, gb, "parameter gradient");
                }
            }
        }
    }

    /// A layer without an input gradient (a first layer) masks and sums its incoming gradient
    /// inside the weight-gradient loop: the same parameter gradients as the separate pass.
    #[test]
    fn conv_without_input_gradient_matches_the_separate_mask_pass() {
        // (N, C, H, W, O, kernel, stride, pad): a batch that is no multiple of BATCH_CHUNK,
        // non-square, strided.
        for &(n, c, h, w, o, k, stride, pad) in
            &[(5, 1, 7, 6, 3, (3, 3), 1, 0), (3, 2, 9, 8, 4, (3, 2), 2, 1)]
        {
            for (bias, relu) in [(true, true), (true, false), (false, true), (false, false)] {
                let x = seeded(&[n, c, h, w], 21);
                let grads = |needs_dx: bool| {
                    let mut l = conv(&[c, h, w], o, k, stride, pad, bias);
                    assert!(l.winograd.is_none());
                    if relu {
                        assert!(l.fuse_relu());
                    }
                    l.set_needs_input_grad(needs_dx);
                    let y = l.forward(&x, TRAIN).clone();
                    l.backward(&x, &seeded(y.shape(), 22));
                    let mut g = Vec::new();
                    l.visit_params(&mut |p| g.push(p.grad.clone()));
                    g
                };
                assert_eq!(
                    grads(false),
                    grads(true),
                    "n={n} c={c} bias={bias} relu={relu}"
                );
            }
        }
    }

    #[test]
    fn conv_grad_same_padding_uses_the_transposed_convolution() {
        let mut l = conv(&[2, 6, 5], 3, (3, 3), 1, 1, true);
        assert!(l.transposed_conv_applies());
        check_layer(&mut l, &[3, 2, 6, 5], TRAIN);
    }

    #[test]
    fn conv_rejects_a_kernel_larger_than_the_input() {
        let cfg = Conv2dConfig {
            out_channels: 1,
            kernel: (5, 5),
            ..Default::default()
        };
        let err = Conv2d::new(&[1, 3, 3], cfg, Some(&mut Rng::new(1)))
            .err()
            .unwrap();
        assert!(err.contains("5×5") && err.contains("3×3"), "{err}");
    }

    /// im2col (3 channels) and Winograd (8 channels) paths, with fewer groups of images than
    /// threads (where per-thread scratch once collided).
    #[test]
    fn conv_results_do_not_depend_on_thread_count() {
        for channels in [3, 8] {
            let x = seeded(&[7, channels, 9, 8], 5);
            let run = |threads| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                pool.install(|| {
                    let mut c = conv(&[channels, 9, 8], 5, (3, 3), 1, 1, true);
                    let y = c.forward(&x, TRAIN).clone();
                    let dx = c.backward(&x, &y).clone();
                    let mut grads = Vec::new();
                    c.visit_params(&mut |p| grads.push(p.grad.clone()));
                    (y, dx, grads)
                })
            };
            let one = run(1);
            for threads in [3, 4] {
                let many = run(threads);
                assert_eq!(one.0, many.0, "{channels} channels, {threads} threads");
                assert_eq!(one.1, many.1, "{channels} channels, {threads} threads");
                assert_eq!(one.2, many.2, "{channels} channels, {threads} threads");
            }
        }
    }
}
