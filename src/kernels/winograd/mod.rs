//! 3×3 stride-1 convolution by Winograd's minimal filtering algorithm F(m×m, 3×3), m = 2 or 4
//! (Lavin and Gray 2016, "Fast Algorithms for Convolutional Neural Networks", arXiv:1509.09308).
//!
//! Each m×m block ("tile") of output comes from an n×n patch `d` of input (n = m + 2) and the
//! 3×3 kernel `g` as `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`: n² multiplications per tile and channel
//! pair instead of 9m², 16 for 36 with F(2×2), 36 for 144 with F(4×4). Summed over input
//! channels, the n² element-wise products become n² matrix products,
//! `M_ξ (O×T) = U_ξ (O×C) · V_ξ (C×T)` over the T tiles, so the work is 4/9 (1/4) of
//! im2col + GEMM's plus the transforms. F(2×2)'s transforms only add and halve; F(4×4)'s also
//! scale by 2, 4, 5 and 8 and its kernel transform divides by 6 and 24, so its rounding error is
//! up to 20 times larger (both tested against the direct sum below and in the conv layer).
//! [`Winograd::fastest`] picks the tile for a geometry: F(4×4) wastes more on the tiles that
//! hang over a small map, and its runs of tiles there are too short for the vectors.
//!
//! Layout: inputs `g×C×H×W`, weights `O×C×3×3` → outputs `g×O×OH×OW`, where
//! `OH = H + 2·pad − 2` and `OW = W + 2·pad − 2`. There are `TH×TW` tiles per image
//! (`⌈OH/m⌉×⌈OW/m⌉`). Each padded input channel is split into m² phase images,
//! `P_pq[y][x] = padded[m·y + p][m·x + q]`, rows `TW + 1` long; numbering tile `(ty, tx)`
//! `ty·(TW + 1) + tx`, with one unused tile at the end of each row, makes element `(i, j)` of
//! every tile's patch one contiguous run of a phase image, `P_(i mod m)(j mod m)` shifted by
//! `(i/m)·(TW + 1) + j/m` (as `i, j < m + 2 ≤ 2m`). So every transform is a handful of loops
//! over whole images, which vectorise well even when an image is 4 tiles wide. Within a group,
//! tiles are numbered image-major: `t = image·T + ty·(TW + 1) + tx`, `T = TH·(TW + 1)`.
//!
//! The weight gradient follows from the same identity by the chain rule: with `Z = A dY Aᵀ` for
//! each m×m tile of output gradient (zero where the tile hangs over the output),
//! `dg = Gᵀ [Σ_tiles Z ⊙ (Bᵀ d B)] G`, so it is again `(m + 2)²` matrix products,
//! `S_ξ (O×C) += Z_ξ (O×T) · V_ξᵀ (T×C)`, followed by one small transform per kernel.

#[cfg(test)]
mod tests;
mod tiles;
mod tiles4;
mod transforms;

use super::gemm::sgemm;
use super::isa;
use super::small_gemm::{product, product_on};
use super::transpose::transpose;
use rayon::prelude::*;

/// Tiles per matrix product below which images are grouped: enough columns for the GEMM's
/// micro-kernel to run at speed, few enough for the group's buffers to stay in cache and for
/// a batch to make enough groups to share among threads; anything from 32 to 256 does about as
/// well.
const MIN_TILES: usize = 64;

/// The output tile of a plan: F(2×2, 3×3) or F(4×4, 3×3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    F2,
    F4,
}

impl Tile {
    /// The side `m` of an output tile.
    pub fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Planes of the transformed tiles: `(m + 2)²`.
    pub fn planes(self) -> usize {
        (self.m() + 2).pow(2)
    }
}

/// Fewest F(4×4) tiles per image (counting the unused ones) for which it is chosen: on an
/// 8×8 map (6 tiles) it multiplies 0.68 times as much as F(2×2) but took as long, its runs of
/// tiles too short for the vectors; on 16×16 (20 tiles, 0.63 times) it took 0.7–0.8 times as
/// long (AMD EPYC Zen 3, AVX2, one thread).
const MIN_F4_TILES: usize = 16;

/// Floats after each output phase's run of tiles (see `transforms`) that the vector code may
/// overwrite: one widest vector.
const SLACK: usize = 16;

/// Floats after the last row of each phase image (see [`Winograd::phase_len`]).
const PHASE_SLACK: usize = 8;

/// The geometry of one 3×3, stride-1 convolution computed by F(m×m, 3×3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Winograd {
    tile: Tile,
    c: usize,
    h: usize,
    w: usize,
    pad: usize,
    o: usize,
    oh: usize,
    ow: usize,
    /// Tiles down and across one image: `⌈OH/m⌉`, `⌈OW/m⌉`.
    th: usize,
    tw: usize,
}

impl Winograd {
    /// The F(2×2) plan for input `C×H×W`, `O` output channels, padding `pad`; `None` when a
    /// 3×3 kernel does not fit the padded input.
    pub fn new(chw: (usize, usize, usize), o: usize, pad: usize) -> Option<Self> {
        Self::with_tile(chw, o, pad, Tile::F2)
    }

    /// F(4×4) where it multiplies less and an image has at least [`MIN_F4_TILES`] of its
    /// tiles, else F(2×2).
    pub fn fastest(chw: (usize, usize, usize), o: usize, pad: usize) -> Option<Self> {
        let f2 = Self::new(chw, o, pad)?;
        let f4 = Self::with_tile(chw, o, pad, Tile::F4)?;
        let cost = |p: &Winograd| p.tile.planes() * p.tiles();
        Some(if f4.tiles() >= MIN_F4_TILES && cost(&f4) < cost(&f2) {
            f4
        } else {
            f2
        })
    }

    /// The plan for input `C×H×W`, `O` output channels, padding `pad` and output tile `tile`;
    /// `None` when a 3×3 kernel does not fit the padded input.
    pub fn with_tile(
        (c, h, w): (usize, usize, usize),
        o: usize,
        pad: usize,
        tile: Tile,
    ) -> Option<Self> {
        let (oh, ow) = ((h + 2 * pad).checked_sub(2)?, (w + 2 * pad).checked_sub(2)?);
        if oh == 0 || ow == 0 || c == 0 || o == 0 {
            return None;
        }
        let m = tile.m();
        Some(Winograd {
            tile,
            c,
            h,
            w,
            pad,
            o,
            oh,
            ow,
            th: oh.div_ceil(m),
            tw: ow.div_ceil(m),
        })
    }

    /// The output tile.
    pub fn tile(&self) -> Tile {
        self.tile
    }

    /// Floats of one input image, `C·H·W`.
    pub fn input_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Floats of one output image, `O·OH·OW`.
    pub fn output_len(&self) -> usize {
        self.o * self.output_plane()
    }

    /// Floats of one output channel, `OH·OW`.
    pub fn output_plane(&self) -> usize {
        self.oh * self.ow
    }

    /// Tiles per row, counting the unused one (see the module doc).
    fn pitch(&self) -> usize {
        self.tw + 1
    }

    /// Tiles per image, counting the unused ones.
    fn tiles(&self) -> usize {
        self.th * self.pitch()
    }

    /// Images per group (per set of matrix products). It depends on the geometry only, so
    /// results do not depend on the thread count.
    pub fn group(&self) -> usize {
        MIN_TILES.div_ceil(self.tiles()).max(1)
    }

    /// Floats of one phase image: `TH + 1` rows of `TW + 1`, and [`PHASE_SLACK`] more: the
    /// last (unused) tile's shifted reads reach one, and the AVX-512 input split's last vector
    /// of a row may write up to 7 past it (see `transforms`).
    fn phase_len(&self) -> usize {
        (self.th + 1) * self.pitch() + PHASE_SLACK
    }

    /// Phase images per channel, and output phases per tile: `m²`.
    fn phases(&self) -> usize {
        self.tile.m().pow(2)
    }

    /// Floats of one prepared image: `m²` phase images per channel.
    fn prepared_len(&self) -> usize {
        self.c * self.phases() * self.phase_len()
    }

    /// Scratch floats [`Self::forward`] needs for a group of `g` images.
    pub fn scratch_len(&self, g: usize) -> usize {
        let planes = self.tile.planes();
        g * self.prepared_len()
            + planes * self.plane_stride(self.c, g)
            + planes * self.plane_stride(self.o, g)
            + self.phases() * self.phase_stride(g)
    }

    /// Scratch floats [`Self::accumulate_weight_grad`] needs for a group of `g` images:
    /// [`Self::scratch_len`]'s and one plane of `V` transposed (`NT×C`).
    pub fn grad_scratch_len(&self, g: usize) -> usize {
        self.scratch_len(g) + self.c * g * self.tiles()
    }

    /// Floats from one plane of `V`, `M` or `Z` (`rows×NT` for a group of `g` images) to the
    /// next: an odd number of cache lines, so that the transforms' 16 to 36 streams, one per
    /// plane, fall in different sets of the L1 cache. (Unpadded, mnist-ref's second conv put
    /// F(4×4)'s 36 planes 21,504 bytes apart, in 4 of the 64 sets of 8 lines.)
    fn plane_stride(&self, rows: usize, g: usize) -> usize {
        ((rows * g * self.tiles()).div_ceil(16) | 1) * 16
    }

    /// Floats between the output phases of the `phases` scratch for a group of `g` images:
    /// their tiles and [`SLACK`].
    fn phase_stride(&self, g: usize) -> usize {
        g * self.tiles() + SLACK
    }

    /// The number of floats of the transformed weights `U`.
    pub fn weights_len(&self) -> usize {
        self.tile.planes() * self.o * self.c
    }

    /// `U_ξ = G g Gᵀ` for every kernel `g` of `weight` (`O×C×3×3`), stored `(m + 2)²×O×C`;
    /// ranges of kernels in parallel.
    pub fn transform_weights(&self, weight: &[f32], u: &mut [f32]) {
        let kernels = self.o * self.c;
        assert!(weight.len() >= kernels * 9 && u.len() >= self.weights_len());
        match self.tile {
            Tile::F4 => par_kernels(planes(u, kernels), 0, &|k0, u| {
                tiles4::transform_weights(&weight[k0 * 9..], u)
            }),
            Tile::F2 => par_kernels(planes(u, kernels), 0, &|k0, u| {
                transform_weights_f2(&weight[k0 * 9..], u)
            }),
        }
    }

    /// `y (g×O×OH×OW) = conv(x (g×C×H×W))` without bias, for `g = x.len() / (C·H·W)` images,
    /// with `u` from [`Self::transform_weights`] and at least [`Self::scratch_len`]`(g)` floats
    /// of scratch.
    pub fn forward(&self, x: &[f32], u: &[f32], scratch: &mut [f32], y: &mut [f32]) {
        let g = x.len() / self.input_len();
        assert!(y.len() == g * self.output_len() && u.len() >= self.weights_len());
        let isa = isa::active();
        let (v, m, phases) = self.input_transformed(isa, x, scratch);
        let (o, c, nt) = (self.o, self.c, g * self.tiles());
        let (sv, sm) = (self.plane_stride(c, g), self.plane_stride(o, g));
        for xi in 0..self.tile.planes() {
            product(
                o,
                nt,
                c,
                &u[xi * o * c..][..o * c],
                &v[xi * sv..][..c * nt],
                &mut m[xi * sm..][..o * nt],
            );
        }
        self.transform_output(isa, m, g, phases, y);
    }

    /// Splits the scratch for the `g` images of `x` (`g×C×H×W`, at least
    /// [`Self::scratch_len`]`(g)` floats) into `V` (`(m + 2)²×C×NT`), a `(m + 2)²×O×NT` buffer
    /// and `m²` phases of [`Self::phase_stride`], and fills `V` with the transformed input.
    fn input_transformed<'s>(
        &self,
        isa: isa::Isa,
        x: &[f32],
        scratch: &'s mut [f32],
    ) -> (&'s mut [f32], &'s mut [f32], &'s mut [f32]) {
        let item = self.input_len();
        let g = x.len() / item;
        assert!(x.len() == g * item && scratch.len() >= self.scratch_len(g));
        let planes = self.tile.planes();
        let (prepared, rest) = scratch.split_at_mut(g * self.prepared_len());
        let (v, rest) = rest.split_at_mut(planes * self.plane_stride(self.c, g));
        let (out, rest) = rest.split_at_mut(planes * self.plane_stride(self.o, g));
        let phases = &mut rest[..self.phases() * self.phase_stride(g)];
        for (img, buf) in x
            .chunks_exact(item)
            .zip(prepared.chunks_exact_mut(self.prepared_len()))
        {
            self.prepare(isa, img, buf);
        }
        self.transform_input(isa, prepared, g, v);
        (v, out, phases)
    }

    /// Images per partial sum of the weight gradient: a fixed number (never the thread count),
    /// so the sum order is fixed; enough images that the `(m + 2)²×O×C` partials stay few, and at
    /// least one group.
    pub fn grad_chunk(&self) -> usize {
        self.group().max(8)
    }

    /// Floats of one weight-gradient partial sum `S` (`(m + 2)²×O×C`).
    pub fn grad_len(&self) -> usize {
        self.tile.planes() * self.o * self.c
    }

    /// `S_ξ (O×C) (+)= Σ_tiles Z_ξ · V_ξᵀ` for `g` images `x` (`g×C×H×W`) and their output
    /// gradients `dy` (`g×O×OH×OW`), with [`Self::grad_scratch_len`]`(g)` floats of scratch; `s`
    /// is overwritten unless `accumulate`. [`Self::weight_grad`] turns the sum into `dW`.
    ///
    /// On the AVX-512 path each plane of `V` is transposed first, so that the product is
    /// `small_gemm`'s, which reads its operands in place: the `gemm` crate packs both on every
    /// call, which a reduction this short (`NT`, 72 to 144) cannot amortise. On AVX2 the
    /// `gemm` crate's measured faster (docs/PERFORMANCE.md), so it stays there.
    pub fn accumulate_weight_grad(
        &self,
        x: &[f32],
        dy: &[f32],
        scratch: &mut [f32],
        s: &mut [f32],
        accumulate: bool,
    ) {
        self.accumulate_weight_grad_on(isa::active(), x, dy, scratch, s, accumulate)
    }

    /// [`Self::accumulate_weight_grad`] on the path `isa`.
    fn accumulate_weight_grad_on(
        &self,
        isa: isa::Isa,
        x: &[f32],
        dy: &[f32],
        scratch: &mut [f32],
        s: &mut [f32],
        accumulate: bool,
    ) {
        let g = x.len() / self.input_len();
        assert!(dy.len() == g * self.output_len() && s.len() >= self.grad_len());
        let (o, c, nt) = (self.o, self.c, g * self.tiles());
        let (scratch, vt) = scratch.split_at_mut(self.scratch_len(g));
        let vt = &mut vt[..c * nt];
        let (v, z, phases) = self.input_transformed(isa, x, scratch);
        self.transform_grad(isa, dy, g, phases, z);
        let (sv, sz) = (self.plane_stride(c, g), self.plane_stride(o, g));
        for xi in 0..self.tile.planes() {
            let (z, v) = (&z[xi * sz..][..o * nt], &v[xi * sv..][..c * nt]);
            let s = &mut s[xi * o * c..][..o * c];
            if isa == isa::Isa::Avx512 {
                transpose(v, c, nt, vt);
                product_on(isa, o, c, nt, z, vt, s, accumulate);
            } else {
                sgemm(o, c, nt, z, false, v, true, s, accumulate);
            }
        }
    }

    /// `dW (O×C×3×3) += Gᵀ S G` for every kernel, `S` (`(m + 2)²×O×C`) from
    /// [`Self::accumulate_weight_grad`]; ranges of kernels in parallel.
    pub fn weight_grad(&self, s: &[f32], dw: &mut [f32]) {
        let kernels = self.o * self.c;
        assert!(s.len() >= self.grad_len() && dw.len() >= kernels * 9);
        dw[..kernels * 9]
            .par_chunks_mut(9 * KERNELS_PER_TASK)
            .enumerate()
            .for_each(|(t, dw)| {
                let k0 = t * KERNELS_PER_TASK;
                match self.tile {
                    Tile::F4 => tiles4::weight_grad(k0, kernels, s, dw),
                    Tile::F2 => weight_grad_f2(k0, kernels, s, dw),
                }
            });
    }
}

/// Kernels per parallel task of the kernel transforms (forward's and the input gradient's each
/// step, and the weight gradient's way back): cifar-ref's largest layer has 16,384 kernels.
const KERNELS_PER_TASK: usize = 512;

/// The `P` planes of `u` (`P×kernels`), one value per kernel each.
fn planes<const P: usize>(u: &mut [f32], kernels: usize) -> [&mut [f32]; P] {
    let mut it = u[..P * kernels].chunks_exact_mut(kernels);
    std::array::from_fn(|_| it.next().expect("P planes"))
}

/// Calls `f(k0, parts)` on consecutive ranges of kernels from `k0`, in parallel, each handed
/// its range of every plane. Each kernel's values depend on that kernel alone, so the split
/// changes no result.
fn par_kernels<const P: usize, F>(planes: [&mut [f32]; P], k0: usize, f: &F)
where
    F: Fn(usize, [&mut [f32]; P]) + Sync,
{
    let len = planes[0].len();
    if len <= KERNELS_PER_TASK {
        return f(k0, planes);
    }
    let mid = len / 2;
    let mut halves = planes.map(|p| p.split_at_mut(mid));
    let left = halves.each_mut().map(|h| std::mem::take(&mut h.0));
    let right = halves.map(|h| h.1);
    rayon::join(
        || par_kernels(left, k0, f),
        || par_kernels(right, k0 + mid, f),
    );
}

/// F(2×2)'s `U_ξ = G g Gᵀ`, as [`tiles4::transform_weights`] (16 planes).
fn transform_weights_f2(weight: &[f32], u: [&mut [f32]; 16]) {
    let n = u[0].len();
    assert!(weight.len() >= n * 9 && u.iter().all(|p| p.len() == n));
    for (k, g) in weight.chunks_exact(9).take(n).enumerate() {
        // G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]], applied to the rows of g...
        let mut t = [[0.0f32; 3]; 4];
        for j in 0..3 {
            let (g0, g1, g2) = (g[j], g[3 + j], g[6 + j]);
            t[0][j] = g0;
            t[1][j] = 0.5 * (g0 + g1 + g2);
            t[2][j] = 0.5 * (g0 - g1 + g2);
            t[3][j] = g2;
        }
        // ...then to its columns (· Gᵀ).
        for (i, &[a, b, d]) in t.iter().enumerate() {
            let row = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
            for (j, v) in row.into_iter().enumerate() {
                u[4 * i + j][k] = v;
            }
        }
    }
}

/// F(2×2)'s `dW += Gᵀ S G`, as [`tiles4::weight_grad`] (`S` `16×K`).
fn weight_grad_f2(k0: usize, kernels: usize, s: &[f32], dw: &mut [f32]) {
    assert!(s.len() >= 16 * kernels && k0 + dw.len() / 9 <= kernels);
    for (k, g) in dw.chunks_exact_mut(9).enumerate() {
        let at = |xi: usize| s[xi * kernels + k0 + k];
        // Gᵀ = [[1, ½, ½, 0], [0, ½, −½, 0], [0, ½, ½, 1]], applied to the columns of S...
        let t: [[f32; 4]; 3] = std::array::from_fn(|i| {
            std::array::from_fn(|j| {
                let (u0, u1, u2, u3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
                match i {
                    0 => u0 + 0.5 * (u1 + u2),
                    1 => 0.5 * (u1 - u2),
                    _ => 0.5 * (u1 + u2) + u3,
                }
            })
        });
        // ...then to its rows (· G).
        for (i, &[u0, u1, u2, u3]) in t.iter().enumerate() {
            g[3 * i] += u0 + 0.5 * (u1 + u2);
            g[3 * i + 1] += 0.5 * (u1 - u2);
            g[3 * i + 2] += 0.5 * (u1 + u2) + u3;
        }
    }
}
