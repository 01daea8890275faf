//! 3×3 stride-1 convolution by Winograd's minimal filtering algorithm F(2×2, 3×3) (Lavin and
//! Gray 2016, "Fast Algorithms for Convolutional Neural Networks", arXiv:1509.09308).
//!
//! Each 2×2 block ("tile") of output comes from a 4×4 patch `d` of input and the 3×3 kernel `g`
//! as `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`: 16 multiplications per tile and channel pair instead of
//! 36. Summed over input channels, the 16 element-wise products become 16 matrix products,
//! `M_ξ (O×T) = U_ξ (O×C) · V_ξ (C×T)` over the T tiles, so the work is 4/9 of im2col + GEMM's
//! plus the cheap transforms. The transforms only add and halve, so rounding stays close to the
//! direct sum (tested against it below and in the conv layer).
//!
//! Layout: inputs `g×C×H×W` (a group of images), weights `O×C×3×3` → outputs `g×O×OH×OW`,
//! where `OH = H + 2·pad − 2` and `OW = W + 2·pad − 2`. There are `TH×TW` tiles per image
//! (`⌈OH/2⌉×⌈OW/2⌉`). Each padded input channel is split into four phase images,
//! `P_pq[y][x] = padded[2y + p][2x + q]`, rows `TW + 1` long; numbering tile `(ty, tx)`
//! `ty·(TW + 1) + tx`, with one unused tile at the end of each row, makes element `(i, j)` of
//! every tile's patch one contiguous run of a phase image, `P_(i mod 2)(j mod 2)` shifted by
//! `(i/2)·(TW + 1) + j/2`. So every transform is a handful of loops over whole images, which
//! vectorise well even when an image is 4 tiles wide. Within a group, tiles are numbered
//! image-major: `t = image·T + ty·(TW + 1) + tx`, `T = TH·(TW + 1)`.
//!
//! The weight gradient follows from the same identity by the chain rule: with `Z = A dY Aᵀ` for
//! each 2×2 tile of output gradient (zero where the tile hangs over the output),
//! `dg = Gᵀ [Σ_tiles Z ⊙ (Bᵀ d B)] G`, so it is again 16 matrix products,
//! `S_ξ (O×C) += Z_ξ (O×T) · V_ξᵀ (T×C)`, followed by one small transform per kernel.

use super::gemm::sgemm;
use super::small_gemm::product;
#[cfg(target_arch = "x86_64")]
use super::winograd_avx512 as avx512;

/// Tiles per matrix product below which images are grouped: enough columns for the GEMM's
/// micro-kernel to run at speed, few enough for the group's buffers to stay in cache and for
/// a batch to make enough groups to share among threads. Measured with `cnn bench` on
/// cifar-ref and mnist-ref: 32 to 256 are within the machine's noise.
const MIN_TILES: usize = 64;

/// The geometry of one 3×3, stride-1 convolution computed by F(2×2, 3×3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Winograd {
    c: usize,
    h: usize,
    w: usize,
    pad: usize,
    o: usize,
    oh: usize,
    ow: usize,
    /// Tiles down and across one image: `⌈OH/2⌉`, `⌈OW/2⌉`.
    th: usize,
    tw: usize,
}

/// Defines `$name`, which runs the `#[inline(always)]` method `$body` compiled for AVX-512 when
/// the CPU has it: the transforms are plain loops that the compiler vectorises, and the default
/// x86-64 target allows only 128-bit vectors. (The GEMM crate dispatches the same way.)
macro_rules! with_avx512 {
    ($name:ident, $fast:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        fn $name(&self, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                return unsafe { self.$fast($($arg),*) };
            }
            self.$body($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        unsafe fn $fast(&self, $($arg: $ty),*) {
            self.$body($($arg),*)
        }
    };
    // A body with a `const AVX512: bool` parameter: `true` where the CPU has AVX-512, for the
    // hand-written kernels of `winograd_avx512`, `false` (the portable loops) elsewhere.
    ($name:ident, $fast:ident, $body:ident::<AVX512>, ($($arg:ident: $ty:ty),*)) => {
        fn $name(&self, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                return unsafe { self.$fast($($arg),*) };
            }
            self.$body::<false>($($arg),*)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        unsafe fn $fast(&self, $($arg: $ty),*) {
            self.$body::<true>($($arg),*)
        }
    };
}

impl Winograd {
    with_avx512!(prepare, prepare_avx512, prepare_body, (x: &[f32], buf: &mut [f32]));
    with_avx512!(
        transform_input,
        transform_input_avx512,
        transform_input_body::<AVX512>,
        (prepared: &[f32], g: usize, v: &mut [f32])
    );
    with_avx512!(
        transform_output,
        transform_output_avx512,
        transform_output_body::<AVX512>,
        (m: &[f32], g: usize, phases: &mut [f32], y: &mut [f32])
    );
    with_avx512!(
        transform_grad,
        transform_grad_avx512,
        transform_grad_body::<AVX512>,
        (dy: &[f32], g: usize, phases: &mut [f32], z: &mut [f32])
    );

    /// The plan for input `C×H×W`, `O` output channels, padding `pad`; `None` when a 3×3 kernel
    /// does not fit the padded input.
    pub fn new((c, h, w): (usize, usize, usize), o: usize, pad: usize) -> Option<Self> {
        let (oh, ow) = ((h + 2 * pad).checked_sub(2)?, (w + 2 * pad).checked_sub(2)?);
        if oh == 0 || ow == 0 || c == 0 || o == 0 {
            return None;
        }
        Some(Winograd {
            c,
            h,
            w,
            pad,
            o,
            oh,
            ow,
            th: oh.div_ceil(2),
            tw: ow.div_ceil(2),
        })
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

    /// Images per group (per set of 16 matrix products). It depends on the geometry only, so
    /// results do not depend on the thread count.
    pub fn group(&self) -> usize {
        MIN_TILES.div_ceil(self.tiles()).max(1)
    }

    /// Floats of one phase image: `TH + 1` rows of `TW + 1`, and one more that the last
    /// (unused) tile's shifted reads reach.
    fn phase_len(&self) -> usize {
        (self.th + 1) * self.pitch() + 1
    }

    /// Floats of one prepared image: four phase images per channel.
    fn prepared_len(&self) -> usize {
        self.c * 4 * self.phase_len()
    }

    /// Scratch floats [`Self::forward`] needs for a group of `g` images.
    pub fn scratch_len(&self, g: usize) -> usize {
        let nt = g * self.tiles();
        g * self.prepared_len() + 16 * self.c * nt + 16 * self.o * nt + 4 * self.tiles()
    }

    /// The number of floats of the transformed weights `U`.
    pub fn weights_len(&self) -> usize {
        16 * self.o * self.c
    }

    /// `U_ξ = G g Gᵀ` for every kernel `g` of `weight` (`O×C×3×3`), stored `16×O×C`.
    pub fn transform_weights(&self, weight: &[f32], u: &mut [f32]) {
        let (o, c) = (self.o, self.c);
        assert!(weight.len() >= o * c * 9 && u.len() >= 16 * o * c);
        for oc in 0..o {
            for ic in 0..c {
                let g = &weight[(oc * c + ic) * 9..][..9];
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
                        u[((4 * i + j) * o + oc) * c + ic] = v;
                    }
                }
            }
        }
    }

    /// `y (g×O×OH×OW) = conv(x (g×C×H×W))` without bias, for `g = x.len() / (C·H·W)` images,
    /// with `u` from [`Self::transform_weights`] and at least [`Self::scratch_len`]`(g)` floats
    /// of scratch.
    pub fn forward(&self, x: &[f32], u: &[f32], scratch: &mut [f32], y: &mut [f32]) {
        let g = x.len() / self.input_len();
        assert!(y.len() == g * self.output_len() && u.len() >= self.weights_len());
        let (v, m, phases) = self.input_transformed(x, scratch);
        let (o, c, nt) = (self.o, self.c, g * self.tiles());
        for xi in 0..16 {
            product(
                o,
                nt,
                c,
                &u[xi * o * c..][..o * c],
                &v[xi * c * nt..][..c * nt],
                &mut m[xi * o * nt..][..o * nt],
            );
        }
        self.transform_output(m, g, phases, y);
    }

    /// Splits the scratch for the `g` images of `x` (`g×C×H×W`, at least
    /// [`Self::scratch_len`]`(g)` floats) into `V` (`16×C×NT`), a `16×O×NT` buffer and a `4×T`
    /// one, and fills `V` with the transformed input.
    fn input_transformed<'s>(
        &self,
        x: &[f32],
        scratch: &'s mut [f32],
    ) -> (&'s mut [f32], &'s mut [f32], &'s mut [f32]) {
        let item = self.input_len();
        let g = x.len() / item;
        assert!(x.len() == g * item && scratch.len() >= self.scratch_len(g));
        let nt = g * self.tiles();
        let (prepared, rest) = scratch.split_at_mut(g * self.prepared_len());
        let (v, rest) = rest.split_at_mut(16 * self.c * nt);
        let (out, rest) = rest.split_at_mut(16 * self.o * nt);
        let phases = &mut rest[..4 * self.tiles()];
        for (img, buf) in x
            .chunks_exact(item)
            .zip(prepared.chunks_exact_mut(self.prepared_len()))
        {
            self.prepare(img, buf);
        }
        self.transform_input(prepared, g, v);
        (v, out, phases)
    }

    /// Images per partial sum of the weight gradient: a fixed number (never the thread count),
    /// so the sum order is fixed; enough images that the `16×O×C` partials stay few, and at
    /// least one group.
    pub fn grad_chunk(&self) -> usize {
        self.group().max(8)
    }

    /// Floats of one weight-gradient partial sum `S` (`16×O×C`).
    pub fn grad_len(&self) -> usize {
        16 * self.o * self.c
    }

    /// `S_ξ (O×C) (+)= Σ_tiles Z_ξ · V_ξᵀ` for `g` images `x` (`g×C×H×W`) and their output
    /// gradients `dy` (`g×O×OH×OW`), with [`Self::scratch_len`]`(g)` floats of scratch; `s` is
    /// overwritten unless `accumulate`. [`Self::weight_grad`] turns the sum into `dW`.
    pub fn accumulate_weight_grad(
        &self,
        x: &[f32],
        dy: &[f32],
        scratch: &mut [f32],
        s: &mut [f32],
        accumulate: bool,
    ) {
        let g = x.len() / self.input_len();
        assert!(dy.len() == g * self.output_len() && s.len() >= self.grad_len());
        let (v, z, phases) = self.input_transformed(x, scratch);
        self.transform_grad(dy, g, phases, z);
        let (o, c, nt) = (self.o, self.c, g * self.tiles());
        for xi in 0..16 {
            sgemm(
                o,
                c,
                nt,
                &z[xi * o * nt..][..o * nt],
                false,
                &v[xi * c * nt..][..c * nt],
                true,
                &mut s[xi * o * c..][..o * c],
                accumulate,
            );
        }
    }

    /// `dW (O×C×3×3) += Gᵀ S G` for every kernel, `S` (`16×O×C`) from
    /// [`Self::accumulate_weight_grad`].
    pub fn weight_grad(&self, s: &[f32], dw: &mut [f32]) {
        let (o, c) = (self.o, self.c);
        assert!(s.len() >= 16 * o * c && dw.len() >= o * c * 9);
        for (k, g) in dw.chunks_exact_mut(9).take(o * c).enumerate() {
            let at = |xi: usize| s[xi * o * c + k];
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

    /// Splits each channel of one zero-padded image into its four phase images (module doc):
    /// phase `2p + q` of channel `ch` is at `buf[(4·ch + 2p + q)·phase_len..]`. Each source
    /// row is split into its even and odd columns in one pass (phases `2p` and `2p + 1`), which
    /// compiles to vector shuffles; a stride-2 gather per phase compiled to scalar moves.
    #[inline(always)]
    fn prepare_body(&self, x: &[f32], buf: &mut [f32]) {
        let (h, w, pad, pitch, len) = (self.h, self.w, self.pad, self.pitch(), self.phase_len());
        // Padded column `2x + q` holds source column `2x + q − pad`: with `pad = 2a` source
        // pairs land at `x = k + a` (even, odd); with `pad = 2a + 1`, the pair's first element
        // is odd column `k + a`, its second even column `k + a + 1`.
        let a = pad / 2;
        for (plane, phases) in x.chunks_exact(h * w).zip(buf.chunks_exact_mut(4 * len)) {
            phases.fill(0.0);
            for (p, rows) in phases.chunks_exact_mut(2 * len).enumerate() {
                let (even, odd) = rows.split_at_mut(len);
                for y in 0..=self.th {
                    let Some(sy) = (2 * y + p).checked_sub(pad).filter(|&sy| sy < h) else {
                        continue;
                    };
                    let src = &plane[sy * w..][..w];
                    let (e, o) = (
                        &mut even[y * pitch..][..pitch],
                        &mut odd[y * pitch..][..pitch],
                    );
                    let (first, second) = if pad % 2 == 0 {
                        (&mut e[a..], &mut o[a..])
                    } else {
                        (&mut o[a..], &mut e[a + 1..])
                    };
                    for ((pair, f), s) in src.chunks_exact(2).zip(first.iter_mut()).zip(second) {
                        *f = pair[0];
                        *s = pair[1];
                    }
                    if w % 2 == 1 {
                        // The last column starts a pair of its own: its first element.
                        let last = if pad % 2 == 0 { e } else { o };
                        last[a + w / 2] = src[w - 1];
                    }
                }
            }
        }
    }

    /// `V_ξ[c][t] = (Bᵀ d B)[ξ]` for every tile and channel of the prepared group, `16×C×NT`.
    #[inline(always)]
    fn transform_input_body<const AVX512: bool>(&self, prepared: &[f32], g: usize, v: &mut [f32]) {
        let (c, t, nt, pitch, len) = (
            self.c,
            self.tiles(),
            g * self.tiles(),
            self.pitch(),
            self.phase_len(),
        );
        for img in 0..g {
            for ch in 0..c {
                let phases = &prepared[(img * c + ch) * 4 * len..][..4 * len];
                // Element (i, j) of every tile's patch, one run per (i, j).
                let d: [[&[f32]; 4]; 4] = std::array::from_fn(|i| {
                    std::array::from_fn(|j| {
                        let phase = &phases[(2 * (i % 2) + j % 2) * len..][..len];
                        &phase[(i / 2) * pitch + j / 2..][..t]
                    })
                });
                let at = img * t;
                #[cfg(target_arch = "x86_64")]
                if AVX512 {
                    // SAFETY: `AVX512` is true only where the CPU has AVX-512F.
                    unsafe { avx512::input_tiles(&d, t, &mut v[ch * nt + at..], c * nt) };
                    continue;
                }
                // One call per plane: the indices must be constants (see `input_plane`).
                macro_rules! planes {
                    ($($i:literal $j:literal),*) => {$(
                        let xi = 4 * $i + $j;
                        input_plane::<$i, $j>(&d, &mut v[(xi * c + ch) * nt + at..][..t]);
                    )*};
                }
                planes!(0 0, 0 1, 0 2, 0 3, 1 0, 1 1, 1 2, 1 3, 2 0, 2 1, 2 2, 2 3, 3 0, 3 1, 3 2, 3 3);
            }
        }
    }

    /// `y = Aᵀ m A` for every tile and output channel, `m_ξ` read from `M (16×O×NT)`: first the
    /// four output phases over whole images into `phases` (`4×T`), then interleaved into `y`,
    /// dropping the unused tiles and what hangs over an odd-sized output.
    #[inline(always)]
    fn transform_output_body<const AVX512: bool>(
        &self,
        m: &[f32],
        g: usize,
        phases: &mut [f32],
        y: &mut [f32],
    ) {
        let (o, t, nt, pitch) = (self.o, self.tiles(), g * self.tiles(), self.pitch());
        let (oh, ow, tw) = (self.oh, self.ow, self.tw);
        for (plane_index, plane) in y.chunks_exact_mut(oh * ow).enumerate() {
            let (img, oc) = (plane_index / o, plane_index % o);
            let mm: [&[f32]; 16] =
                std::array::from_fn(|xi| &m[(xi * o + oc) * nt + img * t..][..t]);
            let (p0, rest) = phases.split_at_mut(t);
            let (p1, rest) = rest.split_at_mut(t);
            let (p2, p3) = rest.split_at_mut(t);
            let p3 = &mut p3[..t];
            if AVX512 {
                // SAFETY: `AVX512` is true only where the CPU has AVX-512F (so never off x86-64).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    avx512::output_phases(&mm, t, [&mut *p0, &mut *p1, &mut *p2, &mut *p3])
                };
            } else {
                output_phase::<0, 0>(&mm, p0);
                output_phase::<0, 1>(&mm, p1);
                output_phase::<1, 0>(&mm, p2);
                output_phase::<1, 1>(&mm, p3);
            }
            let phase = [[&*p0, &*p1], [&*p2, &*p3]];
            for ty in 0..self.th {
                for (a, cols) in phase.iter().enumerate() {
                    let yr = 2 * ty + a;
                    if yr >= oh {
                        break;
                    }
                    let row = &mut plane[yr * ow..][..ow];
                    let (even, odd) = (&cols[0][ty * pitch..][..tw], &cols[1][ty * pitch..][..tw]);
                    for ((pair, &e), &od) in row.chunks_exact_mut(2).zip(even).zip(odd) {
                        pair[0] = e;
                        pair[1] = od;
                    }
                    if ow % 2 == 1 {
                        row[ow - 1] = even[tw - 1];
                    }
                }
            }
        }
    }

    /// `Z_ξ[o][t] = (A dy Aᵀ)[ξ]` for every tile and output channel of `dy` (`g×O×OH×OW`),
    /// into `z` (`16×O×NT`): first the tile's four pixels over whole planes into `phases`
    /// (`4×T`, zero for the unused tiles and past an odd-sized output), then the 16 planes.
    #[inline(always)]
    fn transform_grad_body<const AVX512: bool>(
        &self,
        dy: &[f32],
        g: usize,
        phases: &mut [f32],
        z: &mut [f32],
    ) {
        let (o, t, nt, pitch) = (self.o, self.tiles(), g * self.tiles(), self.pitch());
        let (oh, ow, tw) = (self.oh, self.ow, self.tw);
        for (plane_index, plane) in dy[..g * self.output_len()]
            .chunks_exact(oh * ow)
            .enumerate()
        {
            let (img, oc) = (plane_index / o, plane_index % o);
            phases.fill(0.0);
            let (p0, rest) = phases.split_at_mut(t);
            let (p1, rest) = rest.split_at_mut(t);
            let (p2, p3) = rest.split_at_mut(t);
            let mut phase = [[p0, p1], [p2, &mut p3[..t]]];
            for ty in 0..self.th {
                for (a, cols) in phase.iter_mut().enumerate() {
                    let yr = 2 * ty + a;
                    if yr >= oh {
                        break;
                    }
                    let row = &plane[yr * ow..][..ow];
                    let [even, odd] = cols;
                    let (even, odd) = (&mut even[ty * pitch..][..tw], &mut odd[ty * pitch..][..tw]);
                    for ((pair, e), od) in
                        row.chunks_exact(2).zip(even.iter_mut()).zip(odd.iter_mut())
                    {
                        *e = pair[0];
                        *od = pair[1];
                    }
                    if ow % 2 == 1 {
                        even[tw - 1] = row[ow - 1];
                    }
                }
            }
            let e = [
                [&*phase[0][0], &*phase[0][1]],
                [&*phase[1][0], &*phase[1][1]],
            ];
            let at = img * t;
            #[cfg(target_arch = "x86_64")]
            if AVX512 {
                // SAFETY: `AVX512` is true only where the CPU has AVX-512F.
                unsafe { avx512::grad_tiles(&e, t, &mut z[oc * nt + at..], o * nt) };
                continue;
            }
            macro_rules! planes {
                ($($i:literal $j:literal),*) => {$(
                    let xi = 4 * $i + $j;
                    grad_plane::<$i, $j>(&e, &mut z[(xi * o + oc) * nt + at..][..t]);
                )*};
            }
            planes!(0 0, 0 1, 0 2, 0 3, 1 0, 1 1, 1 2, 1 3, 2 0, 2 1, 2 2, 2 3, 3 0, 3 1, 3 2, 3 3);
        }
    }
}

/// Element (I, J) of `A dy Aᵀ` (A = [[1, 0], [1, 1], [1, −1], [0, −1]]) for a run of tiles:
/// `e[a][b]` is the output gradient at row `2ty + a`, column `2tx + b` of every tile.
#[inline(always)]
fn grad_plane<const I: usize, const J: usize>(e: &[[&[f32]; 2]; 2], out: &mut [f32]) {
    let n = out.len();
    let e: [[&[f32]; 2]; 2] = std::array::from_fn(|a| std::array::from_fn(|b| &e[a][b][..n]));
    for (t, v) in out.iter_mut().enumerate() {
        // Row J of A applied to row a of the tile.
        let r = |a: usize| match J {
            0 => e[a][0][t],
            1 => e[a][0][t] + e[a][1][t],
            2 => e[a][0][t] - e[a][1][t],
            _ => -e[a][1][t],
        };
        *v = match I {
            0 => r(0),
            1 => r(0) + r(1),
            2 => r(0) - r(1),
            _ => -r(1),
        };
    }
}

/// Column `J` of `d B` (B as in `Bᵀ` = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]])
/// for one patch row `r` (its four columns), at tile `t`.
#[inline(always)]
fn input_col<const J: usize>(r: &[&[f32]; 4], t: usize) -> f32 {
    match J {
        0 => r[0][t] - r[2][t],
        1 => r[1][t] + r[2][t],
        2 => r[2][t] - r[1][t],
        _ => r[1][t] - r[3][t],
    }
}

/// Plane `4I + J` of `Bᵀ d B` for a run of tiles: `d[i][j]` is element (i, j) of every tile's
/// patch. Const parameters let every plane compile to straight vector code.
#[inline(always)]
fn input_plane<const I: usize, const J: usize>(d: &[[&[f32]; 4]; 4], out: &mut [f32]) {
    let n = out.len();
    let d: [[&[f32]; 4]; 4] = std::array::from_fn(|i| std::array::from_fn(|j| &d[i][j][..n]));
    for (t, v) in out.iter_mut().enumerate() {
        let c = |i: usize| input_col::<J>(&d[i], t);
        *v = match I {
            0 => c(0) - c(2),
            1 => c(1) + c(2),
            2 => c(2) - c(1),
            _ => c(1) - c(3),
        };
    }
}

/// Element (A, B) of `Aᵀ m A`, Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]], for a run of tiles: the
/// output pixel at row `2ty + A`, column `2tx + B` of each tile.
#[inline(always)]
fn output_phase<const A: usize, const B: usize>(m: &[&[f32]; 16], out: &mut [f32]) {
    let n = out.len();
    let m: [&[f32]; 16] = std::array::from_fn(|xi| &m[xi][..n]);
    for (t, v) in out.iter_mut().enumerate() {
        // Row A of Aᵀ applied to column j of m.
        let r = |j: usize| match A {
            0 => m[j][t] + m[4 + j][t] + m[8 + j][t],
            _ => m[4 + j][t] - m[8 + j][t] - m[12 + j][t],
        };
        *v = match B {
            0 => r(0) + r(1) + r(2),
            _ => r(1) - r(2) - r(3),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference::{self, Window};

    fn seeded(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..len).map(|_| rng.uniform() * 2.0 - 1.0).collect()
    }

    /// (images, C, H, W, O, pad): one image and several, odd and even and non-square outputs,
    /// padding 0, 1 and 2, widths past one 16-lane run, exactly one run (4×14 → 2×8 tiles,
    /// counting the unused column), odd widths with every padding, 1 channel.
    const CASES: &[(usize, usize, usize, usize, usize, usize)] = &[
        (1, 1, 3, 3, 1, 0),
        (1, 2, 5, 7, 3, 0),
        (2, 3, 6, 9, 4, 1),
        (3, 4, 7, 4, 5, 1),
        (1, 2, 4, 37, 2, 1),
        (2, 5, 9, 8, 3, 2),
        (1, 3, 35, 34, 2, 1),
        (1, 1, 1, 1, 2, 1),
        (2, 2, 4, 14, 3, 1),
        (1, 2, 5, 7, 2, 2),
    ];

    /// Against the definition, on the awkward sizes of `CASES`.
    #[test]
    fn winograd_matches_the_direct_convolution() {
        for &(g, c, h, w, o, pad) in CASES {
            let plan = Winograd::new((c, h, w), o, pad).unwrap();
            let x = seeded(g * c * h * w, 3);
            let weight = seeded(o * c * 9, 4);
            let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
            let mut want = vec![0.0; g * o * oh * ow];
            let win = Window {
                kh: 3,
                kw: 3,
                stride: 1,
                pad,
            };
            for (xi, yi) in x.chunks(c * h * w).zip(want.chunks_mut(o * oh * ow)) {
                reference::conv2d(xi, (c, h, w), &weight, None, o, win, yi);
            }
            let mut u = vec![0.0; plan.weights_len()];
            plan.transform_weights(&weight, &mut u);
            let mut scratch = vec![f32::NAN; plan.scratch_len(g)];
            let mut y = vec![f32::NAN; want.len()];
            plan.forward(&x, &u, &mut scratch, &mut y);
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 * (1.0 + b.abs()) * (c * 9) as f32,
                    "g={g} c={c} h={h} w={w} o={o} pad={pad} at {i}: {a} vs {b}"
                );
            }
        }
    }

    /// The weight gradient against its definition, `dW[o][c][i][j] = Σ dy[o][y][x] ·
    /// x_padded[c][y + i][x + j]`, on `CASES`, accumulated over two calls.
    #[test]
    fn winograd_weight_gradient_matches_the_definition() {
        for &(g, c, h, w, o, pad) in CASES {
            let plan = Winograd::new((c, h, w), o, pad).unwrap();
            let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
            let x = seeded(2 * g * c * h * w, 5);
            let dy = seeded(2 * g * o * oh * ow, 6);
            let mut want = vec![0.0f64; o * c * 9];
            for (xi, di) in x.chunks(c * h * w).zip(dy.chunks(o * oh * ow)) {
                for oc in 0..o {
                    for ic in 0..c {
                        for k in 0..9 {
                            let (i, j) = (k / 3, k % 3);
                            for yy in 0..oh {
                                for xx in 0..ow {
                                    let (sy, sx) = (yy + i, xx + j);
                                    if sy < pad || sx < pad || sy - pad >= h || sx - pad >= w {
                                        continue;
                                    }
                                    want[(oc * c + ic) * 9 + k] += di[(oc * oh + yy) * ow + xx]
                                        as f64
                                        * xi[(ic * h + sy - pad) * w + sx - pad] as f64;
                                }
                            }
                        }
                    }
                }
            }
            let mut scratch = vec![f32::NAN; plan.scratch_len(g)];
            let mut s = vec![f32::NAN; plan.grad_len()];
            let (x_item, dy_item) = (g * c * h * w, g * o * oh * ow);
            for half in 0..2 {
                plan.accumulate_weight_grad(
                    &x[half * x_item..][..x_item],
                    &dy[half * dy_item..][..dy_item],
                    &mut scratch,
                    &mut s,
                    half > 0,
                );
            }
            let mut dw = vec![1.0; o * c * 9];
            plan.weight_grad(&s, &mut dw);
            let terms = (2 * g * oh * ow) as f32;
            for (i, (a, b)) in dw.iter().zip(&want).enumerate() {
                let b = *b as f32 + 1.0;
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + b.abs()) * terms,
                    "g={g} c={c} h={h} w={w} o={o} pad={pad} at {i}: {a} vs {b}"
                );
            }
        }
    }

    /// The AVX-512 transforms against the portable ones, bit for bit, on `CASES` (where the CPU
    /// has AVX-512; elsewhere only the portable ones exist). Inputs include zeros, so a −0
    /// turned into +0 would show, and full mantissas, so would a change in the order of a sum.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx512_transforms_match_the_portable_ones_exactly() {
        if !std::arch::is_x86_feature_detected!("avx512f") {
            eprintln!("no AVX-512 on this CPU: nothing to compare");
            return;
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        // Full 24-bit mantissas (`seeded` values have fewer, and sums of those are exact in
        // any order, which would hide a change of order).
        let full = |len, seed| -> Vec<f32> { seeded(len, seed).iter().map(|v| v / 3.0).collect() };
        for &(g, c, h, w, o, pad) in CASES {
            let plan = Winograd::new((c, h, w), o, pad).unwrap();
            let same = |what, a: &[f32], b: &[f32]| {
                let case = (g, c, h, w, o, pad);
                assert_eq!(bits(a), bits(b), "{what} transform, case {case:?}");
            };
            let nt = g * plan.tiles();
            let mut x = full(g * c * h * w, 7);
            x.iter_mut().step_by(5).for_each(|v| *v = 0.0);
            let mut prepared = vec![0.0; g * plan.prepared_len()];
            for (img, buf) in x
                .chunks(c * h * w)
                .zip(prepared.chunks_mut(plan.prepared_len()))
            {
                plan.prepare(img, buf);
            }
            let (mut a, mut b) = (vec![f32::NAN; 16 * c * nt], vec![f32::NAN; 16 * c * nt]);
            plan.transform_input_body::<false>(&prepared, g, &mut a);
            // SAFETY: the CPU has AVX-512F (checked above).
            unsafe { plan.transform_input_avx512(&prepared, g, &mut b) };
            same("input", &a, &b);

            let mut m = full(16 * o * nt, 8);
            m.iter_mut().step_by(3).for_each(|v| *v = -0.0);
            let mut phases = vec![0.0; 4 * plan.tiles()];
            let (mut a, mut b) = (
                vec![f32::NAN; g * plan.output_len()],
                vec![f32::NAN; g * plan.output_len()],
            );
            plan.transform_output_body::<false>(&m, g, &mut phases, &mut a);
            // SAFETY: as above.
            unsafe { plan.transform_output_avx512(&m, g, &mut phases, &mut b) };
            same("output", &a, &b);

            let mut dy = full(g * plan.output_len(), 9);
            dy.iter_mut().step_by(4).for_each(|v| *v = 0.0);
            let (mut a, mut b) = (vec![f32::NAN; 16 * o * nt], vec![f32::NAN; 16 * o * nt]);
            plan.transform_grad_body::<false>(&dy, g, &mut phases, &mut a);
            // SAFETY: as above.
            unsafe { plan.transform_grad_avx512(&dy, g, &mut phases, &mut b) };
            same("gradient", &a, &b);
        }
    }

    #[test]
    fn winograd_declines_what_a_3x3_kernel_does_not_fit() {
        assert!(Winograd::new((1, 2, 5), 1, 0).is_none());
        assert!(Winograd::new((1, 1, 1), 1, 1).is_some());
        assert_eq!(Winograd::new((3, 32, 32), 8, 1).unwrap().group(), 1);
        assert_eq!(Winograd::new((3, 8, 8), 8, 1).unwrap().group(), 4);
    }
}
