//! Convolution by Winograd's minimal filtering (see `kernels::winograd`): forward and the input
//! gradient (itself a 3×3 stride-1 convolution, of the output gradient with the flipped kernel)
//! and the weight gradient, each by F(4×4, 3×3) or F(2×2, 3×3) as `Winograd::fastest` picks for
//! its maps (1/4 to 4/9 of im2col + GEMM's multiplications). Forward keeps no copy of its
//! input: backward is handed it again (see the contract in `layers`).

use super::{
    Backward, Forward, Geometry, finish_output, flip_kernel, mask_planes, pool_planes,
    unpool_planes,
};
use crate::kernels::scratch::with_scratch;
use crate::kernels::winograd::Winograd;
use rayon::prelude::*;

/// Fewest input channels for which the path is taken: with fewer (a first layer) the 16
/// products are too thin to pay for the transforms.
const MIN_CHANNELS: usize = 8;

/// Elements per parallel task of the partial sums' reduction.
const SUM_CHUNK: usize = 1 << 12;

pub(super) struct WinogradConv {
    /// The plans of forward (also the weight gradient's) and of the input gradient (input
    /// `O×OH×OW`, `C` outputs, padding `2 − pad`).
    plan: Winograd,
    plan_dx: Winograd,
    /// The transformed weights of each plan.
    u: Vec<f32>,
    u_dx: Vec<f32>,
    /// The input gradient's kernel (see [`flip_kernel`]).
    flipped: Vec<f32>,
    /// One `(m + 2)²×O×C` weight-gradient partial sum per chunk of images.
    dw_parts: Vec<f32>,
}

/// One chunk of images in [`WinogradConv::backward`]: its weight-gradient partial sum, input
/// gradient and plane sums.
type Chunk<'a> = ((&'a mut [f32], &'a mut [f32]), &'a mut [f32]);

impl WinogradConv {
    /// The path for `g`, when its kernel is 3×3 with stride 1 and padding at most 2 (the input
    /// gradient's padding is `2 − pad`) on enough channels.
    pub(super) fn new(g: &Geometry) -> Option<Self> {
        let w = g.win;
        if !(w.kh == 3 && w.kw == 3 && w.stride == 1 && w.pad <= 2 && g.c >= MIN_CHANNELS) {
            return None;
        }
        Some(WinogradConv {
            plan: Winograd::fastest((g.c, g.h, g.w), g.o, w.pad)?,
            plan_dx: Winograd::fastest((g.o, g.oh, g.ow), g.c, 2 - w.pad)?,
            u: Vec::new(),
            u_dx: Vec::new(),
            flipped: Vec::new(),
            dw_parts: Vec::new(),
        })
    }

    /// `y = conv(x)` then the epilogue (and a fused pooling, from scratch): groups of images in
    /// parallel, each on its worker thread's slot of scratch. Shapes: x `N×C×H×W` → y
    /// `N×O×OH×OW`, or pooled `N×O×PH×PW`.
    pub(super) fn forward(&mut self, g: &Geometry, w: Forward, x: &[f32], y: &mut [f32]) {
        let plan = self.plan;
        self.u.resize(plan.weights_len(), 0.0);
        plan.transform_weights(w.weight, &mut self.u);
        let (item_in, item_out) = (plan.input_len(), plan.output_len());
        let n = x.len() / item_in;
        let group = plan.group();
        let len = plan.scratch_len(group.min(n));
        let (u, bias, relu, p) = (&self.u, w.bias, w.relu, g.p());
        let conv = |x: &[f32], s: &mut [f32], y: &mut [f32]| {
            plan.forward(x, u, s, y);
            finish_output(y, bias, relu, p);
        };
        // One group per task: left to itself rayon hands out pieces of a quarter of the batch,
        // and a thread running late then leaves the other idle.
        match w.pool {
            None => y
                .par_chunks_mut(group * item_out)
                .zip(x.par_chunks(group * item_in))
                .with_max_len(1)
                .for_each(|(y, x)| with_scratch(len, |s| conv(x, s, y))),
            Some((pool, arg)) => {
                let item_y = g.o * pool.plane;
                y.par_chunks_mut(group * item_y)
                    .zip(arg.par_chunks_mut(group * item_y))
                    .zip(x.par_chunks(group * item_in))
                    .with_max_len(1)
                    .for_each(|((y, arg), x)| {
                        let full = x.len() / item_in * item_out;
                        with_scratch(len + full, |s| {
                            let (s, out) = s.split_at_mut(len);
                            conv(x, s, out);
                            pool_planes(out, p, g.ow, pool, y, arg);
                        })
                    });
            }
        }
    }

    /// The whole backward in one pass over the batch: fixed chunks of images in parallel, and
    /// within a chunk, a few images at a time, their output gradient masked and summed
    /// ([`mask_planes`], or with a fused pooling [`unpool_planes`], into the thread's
    /// scratch), added into the chunk's `(m + 2)²×O×C`
    /// weight-gradient partial sum and turned into their input gradient while it is in cache.
    /// The partials are then summed in order and transformed back.
    pub(super) fn backward(&mut self, g: &Geometry, b: Backward) {
        let Backward {
            weight,
            relu,
            pool,
            bias,
            x,
            y,
            dy,
            needs_dx: with_dx,
            dx,
            dweight,
            plane_sums,
        } = b;
        let (plan, plan_dx) = (self.plan, self.plan_dx);
        if with_dx {
            flip_kernel(weight, g, &mut self.flipped);
            self.u_dx.resize(plan_dx.weights_len(), 0.0);
            plan_dx.transform_weights(&self.flipped, &mut self.u_dx);
        }
        let (item_in, item_out, o, p) = (plan.input_len(), plan.output_len(), g.o, g.p());
        // What `y` and `dy` hold per image: the output, or the pooled output.
        let item_y = pool.map_or(item_out, |(pool, _)| o * pool.plane);
        let n = x.len() / item_in;
        let (chunk, len) = (plan.grad_chunk(), plan.grad_len());
        let (group, group_dx) = (plan.group(), plan_dx.group());
        let step = if with_dx { group.max(group_dx) } else { group };
        let mut scratch = plan.grad_scratch_len(group.min(n));
        if with_dx {
            scratch = scratch.max(plan_dx.scratch_len(group_dx.min(n)));
        }
        // Then the masked (or unpooled) gradient of `step` images.
        let own_len = if relu || pool.is_some() {
            step * item_out
        } else {
            0
        };
        self.dw_parts.resize(n.div_ceil(chunk) * len, 0.0);
        plane_sums.resize(n * o, 0.0);
        let u_dx = &self.u_dx;
        let work = |((part, dx), sums): Chunk, i: usize| {
            let m = sums.len() / o;
            let at = i * chunk;
            let (x, dy, y) = (
                &x[at * item_in..][..m * item_in],
                &dy[at * item_y..][..m * item_y],
                &y[at * item_y..][..m * item_y],
            );
            with_scratch(scratch + own_len, |slot| {
                let (slot, own) = slot.split_at_mut(scratch);
                for j in (0..m).step_by(step) {
                    let k = step.min(m - j);
                    let (a, b) = (j * item_y, k * item_y);
                    let sums = bias.then(|| &mut sums[j * o..][..k * o]);
                    let (dy, y) = (&dy[a..][..b], &y[a..][..b]);
                    let dy = match pool {
                        None => mask_planes(dy, y, relu.then(|| &mut own[..b]), sums, p),
                        Some((pool, arg)) => {
                            let own = &mut own[..k * item_out];
                            let arg = &arg[(at + j) * item_y..][..b];
                            unpool_planes((dy, y, arg), relu, pool, own, sums, p);
                            own
                        }
                    };
                    let x = &x[j * item_in..][..k * item_in];
                    for (q, (x, dy)) in x
                        .chunks(group * item_in)
                        .zip(dy.chunks(group * item_out))
                        .enumerate()
                    {
                        plan.accumulate_weight_grad(x, dy, slot, part, j + q > 0);
                    }
                    if with_dx {
                        let dx = &mut dx[j * item_in..][..k * item_in];
                        for (dy, dx) in dy
                            .chunks(group_dx * item_out)
                            .zip(dx.chunks_mut(group_dx * item_in))
                        {
                            plan_dx.forward(dy, u_dx, slot, dx);
                        }
                    }
                }
            })
        };
        self.dw_parts
            .par_chunks_mut(len)
            .zip(dx.par_chunks_mut(chunk * item_in))
            .zip(plane_sums.par_chunks_mut(chunk * o))
            .enumerate()
            .with_max_len(1)
            .for_each(|(i, c)| work(c, i));
        // Element-wise in parallel, each element summing the partials in order.
        let (first, rest) = self.dw_parts.split_at_mut(len);
        first
            .par_chunks_mut(SUM_CHUNK)
            .enumerate()
            .for_each(|(i, sum)| {
                for part in rest.chunks(len) {
                    let part = &part[i * SUM_CHUNK..][..sum.len()];
                    sum.iter_mut().zip(part).for_each(|(a, b)| *a += b);
                }
            });
        plan.weight_grad(first, dweight);
    }
}
