//! The transforms of F(2×2, 3×3) over whole groups of images: the input's phase split and
//! `Bᵀ d B`, the output's `Aᵀ m A`, and the output gradient's `A dY Aᵀ` (layouts in the parent
//! module's doc). Each is a handful of loops over whole images; the const-generic plane helpers
//! at the end let every plane compile to straight vector code.

use super::Winograd;
#[cfg(target_arch = "x86_64")]
use super::tiles;
use crate::kernels::isa::Isa;
#[cfg(target_arch = "x86_64")]
use crate::kernels::simd::{F32x8, F32x16};

/// Defines `$name(&self, isa, ...)`, which runs the `#[inline(always)]` method `$body::<LANES>`
/// compiled for `isa` (or the best path the CPU has below it): `LANES` is 16 for AVX-512, 8 for
/// AVX2 + FMA, where the body calls the hand-written kernels of `tiles`, and 0 for the portable
/// loops. The rest of each body is plain loops that the compiler vectorises at the width the
/// instruction set allows; the default x86-64 target allows only 128-bit vectors. (The GEMM
/// crate dispatches the same way.)
macro_rules! per_isa {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        pub(super) fn $name(&self, isa: Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512(w: &Winograd, $($arg: $ty),*) {
                    w.$body::<16>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2(w: &Winograd, $($arg: $ty),*) {
                    w.$body::<8>($($arg),*)
                }
                match isa.supported() {
                    // SAFETY: `supported` returns only paths the CPU has.
                    Isa::Avx512 => return unsafe { avx512(self, $($arg),*) },
                    // SAFETY: as above.
                    Isa::Avx2 => return unsafe { avx2(self, $($arg),*) },
                    Isa::Portable => {}
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = isa;
            self.$body::<0>($($arg),*)
        }
    };
}

/// Calls the generic kernel `tiles::$kernel` at the vector type of `LANES` (16 or 8).
#[cfg(target_arch = "x86_64")]
macro_rules! tiles_at {
    ($lanes:expr, $kernel:ident($($arg:expr),*)) => {
        match $lanes {
            16 => tiles::$kernel::<F32x16>($($arg),*),
            _ => tiles::$kernel::<F32x8>($($arg),*),
        }
    };
}

impl Winograd {
    per_isa!(prepare, prepare_body, (x: &[f32], buf: &mut [f32]));
    per_isa!(transform_input, transform_input_body, (prepared: &[f32], g: usize, v: &mut [f32]));
    per_isa!(
        transform_output,
        transform_output_body,
        (m: &[f32], g: usize, phases: &mut [f32], y: &mut [f32])
    );
    per_isa!(
        transform_grad,
        transform_grad_body,
        (dy: &[f32], g: usize, phases: &mut [f32], z: &mut [f32])
    );

    /// Splits each channel of one zero-padded image into its four phase images (module doc):
    /// phase `2p + q` of channel `ch` is at `buf[(4·ch + 2p + q)·phase_len..]`. Each source
    /// row is split into its even and odd columns in one pass (phases `2p` and `2p + 1`), which
    /// compiles to vector shuffles; a stride-2 gather per phase compiled to scalar moves.
    #[inline(always)]
    fn prepare_body<const LANES: usize>(&self, x: &[f32], buf: &mut [f32]) {
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
    fn transform_input_body<const LANES: usize>(&self, prepared: &[f32], g: usize, v: &mut [f32]) {
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
                if LANES > 0 {
                    // SAFETY: `LANES` is non-zero only in the bodies compiled for its
                    // instruction set (`per_isa`).
                    unsafe { tiles_at!(LANES, input_tiles(&d, t, &mut v[ch * nt + at..], c * nt)) };
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
    fn transform_output_body<const LANES: usize>(
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
            if LANES > 0 {
                // SAFETY: as in `transform_input_body` (and `LANES` is 0 off x86-64).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    tiles_at!(
                        LANES,
                        output_phases(&mm, t, [&mut *p0, &mut *p1, &mut *p2, &mut *p3])
                    )
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
    fn transform_grad_body<const LANES: usize>(
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
            if LANES > 0 {
                // SAFETY: as in `transform_input_body`.
                unsafe { tiles_at!(LANES, grad_tiles(&e, t, &mut z[oc * nt + at..], o * nt)) };
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
