//! Convolution by im2col + GEMM, for any kernel, stride and padding.
//!
//! Each image is lowered to a column matrix `(C·kh·kw)×(OH·OW)` and multiplied by the weight
//! (`O×(C·kh·kw)`). Training keeps every image's columns, so backward's weight gradient needs no
//! second im2col; evaluation needs one column buffer per worker thread only (a batch of 1,000
//! CIFAR images would otherwise take gigabytes). The input gradient is, where the stride is 1,
//! the convolution of the output gradient with the flipped kernel (no scattered adds), else
//! col2im of `Wᵀ · dy`.

use super::{Backward, Forward, Geometry, finish_output, flip_kernel, mask_planes};
use crate::kernels::SendPtr;
use crate::kernels::gemm::sgemm;
use crate::kernels::im2col::{col2im, im2col};
use crate::kernels::reference::Window;
use crate::kernels::scratch::{grow, with_scratch};
use crate::kernels::transpose::transpose;
use crate::layers::BATCH_CHUNK;
use rayon::prelude::*;

/// Elements per parallel task of the fused ReLU's gradient mask.
const RELU_CHUNK: usize = 1 << 15;

#[derive(Default)]
pub(super) struct Im2col {
    /// Training: `N×(C·kh·kw)×(OH·OW)`, every image's columns, kept for the weight gradient and
    /// then reused as scratch for the input gradient. Evaluation: thread scratch instead.
    cols: Vec<f32>,
    /// With a fused ReLU and an input gradient to compute: the masked output gradient.
    dy_masked: Vec<f32>,
    /// One weight-gradient partial sum (`K×O`, transposed) per group of `BATCH_CHUNK` images.
    dw_parts: Vec<f32>,
    /// The kernel of the input gradient (see [`flip_kernel`]).
    flipped: Vec<f32>,
    /// Tests set this to check the two input-gradient paths against each other.
    pub(super) force_col2im: bool,
}

impl Im2col {
    /// `y = conv(x)` then the epilogue, images in parallel. Shapes: x `N×C×H×W` → y
    /// `N×O×OH×OW`.
    pub(super) fn forward(
        &mut self,
        g: &Geometry,
        w: &Forward,
        x: &[f32],
        y: &mut [f32],
        trained: bool,
    ) {
        debug_assert!(w.pool.is_none(), "the im2col path fuses no pooling");
        let (k, p, o) = (g.k(), g.p(), g.o);
        let n = x.len() / g.item_in();
        if trained {
            grow(&mut self.cols, n * k * p);
        }
        let cols = SendPtr(self.cols.as_mut_ptr());
        let (win, (c, h, wd), (oh, ow)) = (g.win, (g.c, g.h, g.w), (g.oh, g.ow));
        let (weight, bias, relu) = (w.weight, w.bias, w.relu);
        // One image per task, here and in the other per-image loops: left to itself rayon
        // hands out pieces of a quarter of the batch, and a thread running late then leaves
        // the other idle.
        y.par_chunks_mut(o * p)
            .zip(x.par_chunks(c * h * wd))
            .enumerate()
            .with_max_len(1)
            .for_each(|(i, (y, x))| {
                let mut run = |cols: &mut [f32]| {
                    im2col(x, (c, h, wd), win, oh, ow, cols);
                    sgemm(o, p, k, weight, false, cols, false, y, false);
                    finish_output(y, bias, relu, p);
                };
                if trained {
                    // SAFETY: each image has its own `k·p` floats of the `n·k·p` grown above.
                    run(unsafe { std::slice::from_raw_parts_mut(cols.get().add(i * k * p), k * p) })
                } else {
                    with_scratch(k * p, run)
                }
            });
    }

    /// The weight gradient from the kept columns, the plane sums and, when asked, the input
    /// gradient.
    pub(super) fn backward(&mut self, g: &Geometry, b: Backward) {
        let Backward {
            weight,
            relu,
            bias,
            y,
            dy,
            needs_dx,
            dx,
            dweight,
            plane_sums,
            ..
        } = b;
        if !needs_dx {
            // A first layer: the mask and the sums happen inside the weight-gradient loop.
            self.weight_grad(g, dy, y, (relu, bias), true, plane_sums, dweight);
            return;
        }
        // Taken out of `self` for the duration, so that `dy` may borrow it.
        let mut masked = std::mem::take(&mut self.dy_masked);
        let dy = mask_and_sum(g, dy, y, (relu, bias), &mut masked, plane_sums);
        self.weight_grad(g, dy, y, (relu, bias), false, plane_sums, dweight);
        if self.transposed_conv_applies(g) {
            self.input_grad_by_convolution(g, weight, dy, dx);
        } else {
            self.input_grad_by_col2im(g, weight, dy, dx);
        }
        self.dy_masked = masked;
    }

    /// Whether the input gradient can be computed as a plain convolution of `dy` (stride 1,
    /// square kernel, padding at most `k − 1`), which avoids col2im's scattered adds.
    pub(super) fn transposed_conv_applies(&self, g: &Geometry) -> bool {
        !self.force_col2im && g.win.stride == 1 && g.win.kh == g.win.kw && g.win.pad < g.win.kh
    }

    /// dW += Σ_n dy_n (O×P) · cols_nᵀ (P×K) from the columns forward kept, summed per group of
    /// BATCH_CHUNK images, then over groups in order.
    ///
    /// With `mask`, `dy` is the incoming gradient, masked and summed here ([`mask_planes`]) one
    /// image at a time into thread scratch, for a layer whose input gradient is not needed (a
    /// first layer): a pass of its own would write and re-read the whole batch's gradient.
    #[allow(clippy::too_many_arguments)]
    fn weight_grad(
        &mut self,
        g: &Geometry,
        dy: &[f32],
        y: &[f32],
        (relu, bias): (bool, bool),
        mask: bool,
        plane_sums: &mut Vec<f32>,
        dweight: &mut [f32],
    ) {
        let (k, p, o) = (g.k(), g.p(), g.o);
        let n = dy.len() / (o * p);
        let groups = n.div_ceil(BATCH_CHUNK);
        self.dw_parts.resize(groups * o * k, 0.0);
        let own_len = if mask && relu { o * p } else { 0 };
        plane_sums.resize(n * o, 0.0);
        let cols = &self.cols;
        self.dw_parts
            .par_chunks_mut(o * k)
            .zip(dy.par_chunks(BATCH_CHUNK * o * p))
            .zip(cols.par_chunks(BATCH_CHUNK * k * p))
            .zip(y.par_chunks(BATCH_CHUNK * o * p))
            .zip(plane_sums.par_chunks_mut(BATCH_CHUNK * o))
            .with_max_len(1)
            .for_each(|((((part, dy), cols), y), sums)| {
                with_scratch(p * o + own_len, |slot| {
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
                })
            });
        // Rows of dW in parallel, each element summing the (transposed) partials in order.
        let parts = &self.dw_parts;
        dweight.par_chunks_mut(k).enumerate().for_each(|(oc, row)| {
            for part in parts.chunks(o * k) {
                row.iter_mut()
                    .enumerate()
                    .for_each(|(j, g)| *g += part[j * o + oc]);
            }
        });
    }

    /// dx = the convolution of dy (O×OH×OW) with the flipped kernel ([`flip_kernel`]), padding
    /// `k − 1 − p`: exactly the adjoint of the forward convolution when the stride is 1.
    fn input_grad_by_convolution(
        &mut self,
        g: &Geometry,
        weight: &[f32],
        dy: &[f32],
        dx: &mut [f32],
    ) {
        let (c, h, w, o, oh, ow) = (g.c, g.h, g.w, g.o, g.oh, g.ow);
        let (kh, kw) = (g.win.kh, g.win.kw);
        let k2 = o * kh * kw;
        flip_kernel(weight, g, &mut self.flipped);
        let win = Window {
            kh,
            kw,
            stride: 1,
            pad: kh - 1 - g.win.pad,
        };
        let hw = h * w;
        let n = dy.len() / (o * oh * ow);
        grow(&mut self.cols, n * k2 * hw);
        let flipped = &self.flipped;
        dx.par_chunks_mut(c * hw)
            .zip(self.cols.par_chunks_mut(k2 * hw))
            .zip(dy.par_chunks(o * oh * ow))
            .with_max_len(1)
            .for_each(|((dx, cols), dy)| {
                im2col(dy, (o, oh, ow), win, h, w, cols);
                sgemm(c, hw, k2, flipped, false, cols, false, dx, false);
            });
    }

    /// dx_n = col2im(Wᵀ (K×O) · dy_n (O×P)), for any stride and padding.
    fn input_grad_by_col2im(&mut self, g: &Geometry, weight: &[f32], dy: &[f32], dx: &mut [f32]) {
        let (k, p, o) = (g.k(), g.p(), g.o);
        let (c, h, w) = (g.c, g.h, g.w);
        let (win, (oh, ow)) = (g.win, (g.oh, g.ow));
        // The column buffer is free again after the weight gradient: reuse it.
        let n = dy.len() / (o * p);
        grow(&mut self.cols, n * k * p);
        dx.par_chunks_mut(c * h * w)
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

/// [`mask_planes`] over the output gradient `dy` (`N×O×P`), planes in parallel, into `masked`
/// with a fused ReLU and the sums into `plane_sums` with a bias. Returns the gradient to go on
/// with.
fn mask_and_sum<'a>(
    g: &Geometry,
    dy: &'a [f32],
    y: &[f32],
    (relu, bias): (bool, bool),
    masked: &'a mut Vec<f32>,
    plane_sums: &mut Vec<f32>,
) -> &'a [f32] {
    let p = g.p();
    let per_task = (RELU_CHUNK / p).max(1);
    plane_sums.resize(dy.len() / p, 0.0);
    let sums = plane_sums.par_chunks_mut(per_task);
    if relu {
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
