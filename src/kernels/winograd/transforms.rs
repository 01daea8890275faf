//! The transforms over whole groups of images, for both tiles: the input's phase split and
//! `Bᵀ d B`, the output's `Aᵀ m A`, and the output gradient's `A dY Aᵀ` (layouts in the parent
//! module's doc). Each is a handful of loops over whole images; the const-generic plane
//! helpers at the end let every plane of F(2×2)'s portable path compile to straight vector code.

#[cfg(target_arch = "x86_64")]
use super::tiles;
use super::{Tile, Winograd, tiles4};
use crate::kernels::isa::Isa;
use crate::kernels::prefetch::prefetch;
use crate::kernels::shuffle;
use crate::kernels::simd::{Kernel, Vector, run_on};

/// Defines `$name(&self, isa, ...)`, which runs the `#[inline(always)]` method `$body::<V>`
/// through `simd::run_on`, at the vector of `isa` (or of the best path the CPU has below it).
/// Where `V` is AVX-512's or AVX2's, the bodies call the hand-written kernels of `tiles` and
/// `tiles4`; the rest of each body is plain loops that the compiler vectorises at the width the
/// instruction set allows (the default x86-64 target allows only 128-bit vectors).
macro_rules! per_isa {
    ($name:ident, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        pub(super) fn $name<'a>(&'a self, isa: Isa, $($arg: $ty),*) {
            struct Body<'a> {
                w: &'a Winograd,
                $($arg: $ty),*
            }
            impl<'a> Kernel for Body<'a> {
                type Out = ();
                #[inline(always)]
                unsafe fn run<V: Vector>(self) {
                    let Body { w, $($arg),* } = self;
                    // SAFETY: `V`'s instruction set is enabled (`Kernel`).
                    unsafe { w.$body::<V>($($arg),*) }
                }
            }
            run_on(isa, Body { w: self, $($arg),* })
        }
    };
}

impl Winograd {
    per_isa!(prepare, prepare_body, (x: &'a [f32], buf: &'a mut [f32]));
    per_isa!(
        transform_input,
        transform_input_body,
        (prepared: &'a [f32], g: usize, v: &'a mut [f32])
    );
    per_isa!(
        transform_output,
        transform_output_body,
        (m: &'a [f32], g: usize, phases: &'a mut [f32], y: &'a mut [f32])
    );
    per_isa!(
        transform_grad,
        transform_grad_body,
        (dy: &'a [f32], g: usize, phases: &'a mut [f32], z: &'a mut [f32])
    );

    /// Splits each channel of one zero-padded image into its `m²` phase images (module doc):
    /// phase `m·p + q` of channel `ch` is at `buf[(m²·ch + m·p + q)·phase_len..]`.
    ///
    /// # Safety
    /// `V`'s instruction set is enabled in the caller (as for every `*_body`).
    #[inline(always)]
    unsafe fn prepare_body<V: Vector>(&self, x: &[f32], buf: &mut [f32]) {
        match self.tile {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `V` is AVX-512's vector, so the caller has AVX-512 enabled.
            Tile::F2 if V::ISA == Isa::Avx512 => unsafe { self.split_avx512::<2>(x, buf) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Tile::F4 if V::ISA == Isa::Avx512 => unsafe { self.split_avx512::<4>(x, buf) },
            Tile::F2 => self.split::<2>(x, buf),
            Tile::F4 => self.split::<4>(x, buf),
        }
    }

    /// [`Self::prepare_body`] for `M = m`. Each source row is split into its `M` column phases
    /// in one pass over whole groups of `M` columns, which compiles to vector shuffles (a
    /// strided gather per phase compiled to scalar moves); the columns before the first whole
    /// group and after the last are placed one by one.
    #[inline(always)]
    fn split<const M: usize>(&self, x: &[f32], buf: &mut [f32]) {
        let (h, w, pad, pitch, len) = (self.h, self.w, self.pad, self.pitch(), self.phase_len());
        // Source column `sx` is padded column `sx + pad`: phase `(sx + pad) mod M`, position
        // `(sx + pad) / M`. Groups start where that phase is 0.
        let lead = ((M - pad % M) % M).min(w);
        let groups = (w - lead) / M;
        let first = (lead + pad) / M;
        for (plane, phases) in prefetched_planes(x, h * w, buf, M * M * len) {
            phases.fill(0.0);
            for (p, rows) in phases.chunks_exact_mut(M * len).enumerate() {
                let mut cols: [&mut [f32]; M] = {
                    let mut it = rows.chunks_exact_mut(len);
                    std::array::from_fn(|_| it.next().unwrap())
                };
                for y in 0..=self.th {
                    let Some(sy) = (M * y + p).checked_sub(pad).filter(|&sy| sy < h) else {
                        continue;
                    };
                    let src = &plane[sy * w..][..w];
                    let mut out: [&mut [f32]; M] =
                        cols.each_mut().map(|c| &mut c[y * pitch..][..pitch]);
                    let mut one_by_one = |sx: usize| {
                        let c = sx + pad;
                        out[c % M][c / M] = src[sx];
                    };
                    (0..lead).for_each(&mut one_by_one);
                    (lead + groups * M..w).for_each(&mut one_by_one);
                    let mut runs: [&mut [f32]; M] =
                        out.each_mut().map(|o| &mut o[first..][..groups]);
                    deinterleave_groups(&src[lead..][..groups * M], &mut runs);
                }
            }
        }
    }

    /// [`Self::split`] in AVX-512 registers: each row is read 16 padded columns at a time by
    /// one load whose mask leaves out the padding (which loads as zero), its `16/M` groups
    /// sorted into their `M` column phases by one permute, and each phase's run stored whole,
    /// so no column is placed one by one and the phase images need no clearing first (the
    /// padding rows are written as zero rows). A row's last vector may write up to `16/M − 1`
    /// places past its end: zeros, into the next row of its phase image (written after it) or
    /// the image's slack ([`Winograd::phase_len`]).
    ///
    /// # Safety
    /// The CPU has AVX-512F and the caller is compiled for it.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn split_avx512<const M: usize>(&self, x: &[f32], buf: &mut [f32]) {
        use std::arch::x86_64::*;
        let (h, w, pad, pitch, len) = (self.h, self.w, self.pad, self.pitch(), self.phase_len());
        let rows_len = (self.th + 1) * pitch;
        // Groups per vector and vectors per row.
        let per = 16 / M;
        let vectors = pitch.div_ceil(per);
        assert!(M == 2 || M == 4);
        assert!(
            vectors * per + self.th * pitch <= len && x.len() / (h * w) * M * M * len <= buf.len()
        );
        // Lane `l` of the permuted vector takes lane `order[l]` of the row: phase `j`'s run is
        // lanes `j·per..(j + 1)·per`.
        let order: [i32; 16] = std::array::from_fn(|l| ((l % per) * M + l / per) as i32);
        // SAFETY: the CPU has AVX-512F (this function's contract). Loads read only the lanes
        // of their row that are source columns (the mask); stores write `per` floats at
        // `y·pitch + v·per ≤ th·pitch + (vectors − 1)·per` into a phase image of `len` floats
        // (asserted above).
        unsafe {
            let order = _mm512_loadu_si512(order.as_ptr().cast());
            for (plane, phases) in prefetched_planes(x, h * w, buf, M * M * len) {
                let out = phases.as_mut_ptr();
                for p in 0..M {
                    for j in 0..M {
                        let image = out.add((p * M + j) * len);
                        for k in rows_len..len {
                            *image.add(k) = 0.0;
                        }
                    }
                    for y in 0..=self.th {
                        let sy = (M * y + p).checked_sub(pad).filter(|&sy| sy < h);
                        let row = plane.as_ptr().wrapping_add(sy.unwrap_or(0) * w);
                        for v in 0..vectors {
                            // Padded columns `c0..c0 + 16`; source column `c − pad`.
                            let c0 = 16 * v;
                            let lo = pad.saturating_sub(c0).min(16);
                            let hi = (w + pad).saturating_sub(c0).min(16);
                            let mask = match sy {
                                Some(_) if hi > lo => ((1u32 << hi) - (1u32 << lo)) as u16,
                                _ => 0,
                            };
                            let src = row.wrapping_add(c0).wrapping_sub(pad);
                            let d = _mm512_maskz_loadu_ps(mask, src);
                            let d = _mm512_permutexvar_ps(order, d);
                            let at = |j: usize| out.add(((p * M + j) * len) + y * pitch + v * per);
                            if M == 4 {
                                _mm_storeu_ps(at(0), _mm512_castps512_ps128(d));
                                _mm_storeu_ps(at(1), _mm512_extractf32x4_ps::<1>(d));
                                _mm_storeu_ps(at(2), _mm512_extractf32x4_ps::<2>(d));
                                _mm_storeu_ps(at(3), _mm512_extractf32x4_ps::<3>(d));
                            } else {
                                let high = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(d));
                                _mm256_storeu_ps(at(0), _mm512_castps512_ps256(d));
                                _mm256_storeu_ps(at(1), _mm256_castpd_ps(high));
                            }
                        }
                    }
                }
            }
        }
    }

    /// `V_ξ[c][t] = (Bᵀ d B)[ξ]` for every tile and channel of the prepared group,
    /// `(m + 2)²×C×NT`.
    #[inline(always)]
    pub(super) unsafe fn transform_input_body<V: Vector>(
        &self,
        prepared: &[f32],
        g: usize,
        v: &mut [f32],
    ) {
        let (nt, sv) = (g * self.tiles(), self.plane_stride(self.c, g));
        if self.tile == Tile::F4 {
            return self.for_each_patch::<4, 6>(prepared, g, |d, t, ch, at| {
                // Runs may spill into the next images' tiles, written after this one.
                let (out, room) = (&mut v[ch * nt + at..], nt - at);
                // SAFETY: `V`'s instruction set is enabled (this function's contract).
                unsafe { tiles4::input_tiles::<V>(d, t, room, out, sv) };
            });
        }
        self.for_each_patch::<2, 4>(prepared, g, |d, t, ch, at| {
            #[cfg(target_arch = "x86_64")]
            if V::ISA != Isa::Portable {
                // SAFETY: as above.
                unsafe { tiles::input_tiles::<V>(d, t, nt - at, &mut v[ch * nt + at..], sv) };
                return;
            }
            // One call per plane: the indices must be constants (see `input_plane`).
            macro_rules! planes {
                ($($i:literal $j:literal),*) => {$(
                    let xi = 4 * $i + $j;
                    input_plane::<$i, $j>(d, &mut v[xi * sv + ch * nt + at..][..t]);
                )*};
            }
            planes!(0 0, 0 1, 0 2, 0 3, 1 0, 1 1, 1 2, 1 3, 2 0, 2 1, 2 2, 2 3, 3 0, 3 1, 3 2, 3 3);
        })
    }

    /// Calls `f(d, T, channel, first tile)` for every channel and image of the prepared group
    /// (`M = m`, `N = m + 2`), where `d[i][j]` is element (i, j) of every tile's patch: a run
    /// of phase `M·(i mod M) + j mod M` (module doc). Channel-major, so that each plane's run
    /// of V is written in order (and a run's spill lands on the next image's, written next).
    #[inline(always)]
    fn for_each_patch<const M: usize, const N: usize>(
        &self,
        prepared: &[f32],
        g: usize,
        mut f: impl FnMut(&[[&[f32]; N]; N], usize, usize, usize),
    ) {
        let (c, t, pitch, len) = (self.c, self.tiles(), self.pitch(), self.phase_len());
        for ch in 0..c {
            for img in 0..g {
                let phases = &prepared[(img * c + ch) * M * M * len..][..M * M * len];
                let d: [[&[f32]; N]; N] = std::array::from_fn(|i| {
                    std::array::from_fn(|j| {
                        let phase = &phases[(M * (i % M) + j % M) * len..][..len];
                        &phase[(i / M) * pitch + j / M..][..t]
                    })
                });
                f(&d, t, ch, img * t);
            }
        }
    }

    /// `y = Aᵀ m A` for every tile and output channel, `m_ξ` read from `M ((m + 2)²×O×NT)`:
    /// channel by channel, first the `m²` output phases of the group's tiles into `phases`
    /// (`m²` runs of [`Self::phase_stride`]), then interleaved into each image's plane of `y`,
    /// dropping the unused tiles and what hangs over the output. (Per image and channel, the
    /// setup cost as much as the work on an 8×8 map.)
    #[inline(always)]
    pub(super) unsafe fn transform_output_body<V: Vector>(
        &self,
        m: &[f32],
        g: usize,
        phases: &mut [f32],
        y: &mut [f32],
    ) {
        let (o, t, nt, sm) = (
            self.o,
            self.tiles(),
            g * self.tiles(),
            self.plane_stride(self.o, g),
        );
        let (planes, stride, len) = (
            self.tile.planes(),
            self.phase_stride(g),
            self.output_plane(),
        );
        let phases = &mut phases[..self.phases() * stride];
        for oc in 0..o {
            let at = |xi: usize| &m[xi * sm + oc * nt..][..nt];
            if self.tile == Tile::F4 {
                let mm: [&[f32]; 36] = std::array::from_fn(at);
                let mut out: [&mut [f32]; 16] = {
                    let mut it = phases.chunks_exact_mut(stride);
                    std::array::from_fn(|_| it.next().unwrap())
                };
                // SAFETY: as in `transform_input_body`.
                unsafe { tiles4::output_phases::<V>(&mm, nt, stride, &mut out) };
            } else {
                debug_assert_eq!(planes, 16);
                let mm: [&[f32]; 16] = std::array::from_fn(at);
                let (p0, rest) = phases.split_at_mut(stride);
                let (p1, rest) = rest.split_at_mut(stride);
                let (p2, p3) = rest.split_at_mut(stride);
                if V::ISA != Isa::Portable {
                    // SAFETY: as in `transform_input_body` (only x86-64 has other paths).
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        tiles::output_phases::<V>(&mm, nt, stride, [p0, p1, p2, p3])
                    };
                } else {
                    output_phase::<0, 0>(&mm, &mut p0[..nt]);
                    output_phase::<0, 1>(&mm, &mut p1[..nt]);
                    output_phase::<1, 0>(&mm, &mut p2[..nt]);
                    output_phase::<1, 1>(&mm, &mut p3[..nt]);
                }
            }
            for img in 0..g {
                let plane = &mut y[(img * o + oc) * len..][..len];
                match self.tile {
                    Tile::F2 => self.interleave::<2>(&phases[img * t..], stride, plane),
                    Tile::F4 => self.interleave::<4>(&phases[img * t..], stride, plane),
                }
            }
        }
    }

    /// One output plane (`OH×OW`) from its `M²` phases (runs `stride` apart, phase `M·a + b`
    /// holding the pixel at row `M·ty + a`, column `M·tx + b` of each of the image's tiles):
    /// whole rows of tiles at a time, dropping the unused tiles and what hangs over the output.
    #[inline(always)]
    fn interleave<const M: usize>(&self, phases: &[f32], stride: usize, plane: &mut [f32]) {
        let (pitch, oh, ow, tw) = (self.pitch(), self.oh, self.ow, self.tw);
        for (yr, row) in plane.chunks_exact_mut(ow).enumerate().take(oh) {
            let (ty, a) = (yr / M, yr % M);
            let cols: [&[f32]; M] =
                std::array::from_fn(|b| &phases[(M * a + b) * stride + ty * pitch..][..tw]);
            // Four tiles at a time in registers: a 4×4 transpose (F(4×4)), an interleave of two
            // runs of four (F(2×2)); one value at a time, the moves took a quarter of F(4×4)'s
            // output transform.
            let chunk = if M == 4 || M == 2 { 4 * M } else { ow + 1 };
            let done = ow / chunk * chunk;
            for (k, dst) in row[..done].chunks_exact_mut(chunk).enumerate() {
                let k = 4 * k;
                if M == 4 {
                    let (d0, rest) = dst.split_at_mut(4);
                    let (d1, rest) = rest.split_at_mut(4);
                    let (d2, d3) = rest.split_at_mut(4);
                    shuffle::transpose4(std::array::from_fn(|b| &cols[b][k..]), [d0, d1, d2, d3]);
                } else {
                    shuffle::interleave2(&cols[0][k..], &cols[1][k..], dst);
                }
            }
            for x in done..ow {
                row[x] = cols[x % M][x / M];
            }
        }
    }

    /// The inverse of [`Self::interleave`]: one output-gradient plane (`OH×OW`) into its `M²`
    /// phases (`M²×T` at the start of `phases`), zero for the unused tiles and past the
    /// output's edge.
    #[inline(always)]
    fn deinterleave<const M: usize>(&self, plane: &[f32], phases: &mut [f32]) {
        let (t, pitch, ow, tw) = (self.tiles(), self.pitch(), self.ow, self.tw);
        let phases = &mut phases[..M * M * t];
        phases.fill(0.0);
        for (yr, row) in plane.chunks_exact(ow).enumerate() {
            let (ty, a) = (yr / M, yr % M);
            let mut runs = phases[M * a * t..][..M * t].chunks_exact_mut(t);
            let mut cols: [&mut [f32]; M] =
                std::array::from_fn(|_| &mut runs.next().unwrap()[ty * pitch..][..tw]);
            let whole = ow / M * M;
            deinterleave_groups(&row[..whole], &mut cols);
            for (x, &v) in row.iter().enumerate().skip(whole) {
                cols[x % M][x / M] = v;
            }
        }
    }

    /// `Z_ξ[o][t] = (A dy Aᵀ)[ξ]` for every tile and output channel of `dy` (`g×O×OH×OW`),
    /// into `z` (`(m + 2)²×O×NT`): first the tile's `m²` pixels over whole planes into `phases`
    /// (`m²×T`, zero for the unused tiles and past the output's edge), then the planes.
    #[inline(always)]
    pub(super) unsafe fn transform_grad_body<V: Vector>(
        &self,
        dy: &[f32],
        g: usize,
        phases: &mut [f32],
        z: &mut [f32],
    ) {
        let (o, t, nt) = (self.o, self.tiles(), g * self.tiles());
        let (sz, len) = (self.plane_stride(o, g), self.output_plane());
        // Channel-major, so that each plane's run of Z is written in order (and a run's spill
        // lands on the next image's, written next).
        let order = (0..o).flat_map(|oc| (0..g).map(move |img| (oc, img)));
        for ((oc, img), next) in order.clone().zip(order.skip(1).map(Some).chain([None])) {
            // Each plane is read once, and those of 32×32 maps are a 4 KB page each, where the
            // hardware prefetcher starts cold: the next one is asked for ahead.
            if let Some((oc, img)) = next {
                prefetch(&dy[(img * o + oc) * len..][..len]);
            }
            let plane = &dy[(img * o + oc) * len..][..len];
            let at = img * t;
            if self.tile == Tile::F4 {
                self.deinterleave::<4>(plane, phases);
                let e: [&[f32]; 16] = std::array::from_fn(|k| &phases[k * t..][..t]);
                let (out, room) = (&mut z[oc * nt + at..], nt - at);
                // SAFETY: as in `transform_input_body`.
                unsafe { tiles4::grad_tiles::<V>(&e, t, room, out, sz) };
                continue;
            }
            self.deinterleave::<2>(plane, phases);
            let p = |k: usize| &phases[k * t..][..t];
            let e = [[p(0), p(1)], [p(2), p(3)]];
            #[cfg(target_arch = "x86_64")]
            if V::ISA != Isa::Portable {
                // SAFETY: as in `transform_input_body`.
                unsafe { tiles::grad_tiles::<V>(&e, t, nt - at, &mut z[oc * nt + at..], sz) };
                continue;
            }
            macro_rules! planes {
                ($($i:literal $j:literal),*) => {$(
                    let xi = 4 * $i + $j;
                    grad_plane::<$i, $j>(&e, &mut z[xi * sz + oc * nt + at..][..t]);
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

/// The planes of `x` (`plane` floats each), each with its `out` floats of `buf`, the next plane
/// asked for before each is handed out: the input split reads a plane's rows `M` apart, in `M`
/// passes, which the hardware prefetcher does not follow.
fn prefetched_planes<'a>(
    x: &'a [f32],
    plane: usize,
    buf: &'a mut [f32],
    out: usize,
) -> impl Iterator<Item = (&'a [f32], &'a mut [f32])> {
    x.chunks_exact(plane)
        .zip(buf.chunks_exact_mut(out))
        .enumerate()
        .map(move |(i, pair)| {
            if let Some(next) = x.get((i + 1) * plane..(i + 2) * plane) {
                prefetch(next);
            }
            pair
        })
}

/// `runs[j][k] = src[k·M + j]`: the `M` column phases of whole groups of `M` columns, each run
/// as long as there are groups; four groups at a time through [`shuffle`]'s registers.
#[inline(always)]
fn deinterleave_groups<const M: usize>(src: &[f32], runs: &mut [&mut [f32]; M]) {
    let groups = src.len() / M;
    let quads = if M == 2 || M == 4 { groups / 4 } else { 0 };
    for k in (0..quads).map(|q| 4 * q) {
        let src = &src[k * M..];
        if M == 4 {
            let mut rows = runs.iter_mut();
            let rows = std::array::from_fn(|_| &mut rows.next().unwrap()[k..]);
            shuffle::transpose4(std::array::from_fn(|i| &src[4 * i..]), rows);
        } else {
            let [even, odd] = &mut runs[..] else {
                unreachable!()
            };
            shuffle::deinterleave2(src, &mut even[k..], &mut odd[k..]);
        }
    }
    for k in 4 * quads..groups {
        for (j, run) in runs.iter_mut().enumerate() {
            run[k] = src[k * M + j];
        }
    }
}
