//! The Winograd transforms of `kernels::winograd` written with AVX-512 intrinsics, 16 tiles per
//! vector, all 16 planes of a transform from one load of its inputs, and a masked last vector.
//!
//! Why by hand: the portable loops compute one plane per pass (re-reading inputs 16 times), and
//! the compiler's vectorised loops run 64 tiles per iteration, leaving the rest of a run to a
//! scalar loop (an image of 12 × 13 tiles: 28 of 156 tiles, taking as long as the rest). Each
//! function does exactly the portable code's additions in the same order, so the results are
//! bit-identical (tested in `kernels::winograd`).

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// `−x`, by flipping the sign bit as the portable code's negation compiles to (`0 − x` would
/// turn −0 into +0).
#[inline(always)]
fn neg(x: __m512) -> __m512 {
    // SAFETY: bit casts and an integer xor; callers enable AVX-512F.
    unsafe {
        _mm512_castsi512_ps(_mm512_xor_si512(
            _mm512_castps_si512(x),
            _mm512_set1_epi32(i32::MIN),
        ))
    }
}

/// The lanes of a vector starting at tile `s` that hold tiles below `t`.
#[inline(always)]
fn lanes(s: usize, t: usize) -> __mmask16 {
    if s + 16 <= t {
        0xFFFF
    } else {
        (1u32 << (t - s)) as u16 - 1
    }
}

/// `v[ξ·stride + k] = (Bᵀ d B)[ξ]` of tile `k < t` for all 16 planes `ξ = 4I + J`, where `d[i][j]`
/// holds element (i, j) of every tile's patch (see `input_plane`).
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn input_tiles(d: &[[&[f32]; 4]; 4], t: usize, v: &mut [f32], stride: usize) {
    assert!(d.iter().flatten().all(|r| r.len() >= t) && v.len() >= 15 * stride + t);
    let vp = v.as_mut_ptr();
    for s in (0..t).step_by(16) {
        let k = lanes(s, t);
        // SAFETY: lanes at or past `t` are masked off, so every access is within the slices
        // (lengths asserted above); AVX-512F is enabled.
        unsafe {
            let x: [[__m512; 4]; 4] = std::array::from_fn(|i| {
                std::array::from_fn(|j| _mm512_maskz_loadu_ps(k, d[i][j].as_ptr().add(s)))
            });
            // Columns of d B for each patch row i (`input_col`).
            let c: [[__m512; 4]; 4] = std::array::from_fn(|i| {
                let r = &x[i];
                [
                    _mm512_sub_ps(r[0], r[2]),
                    _mm512_add_ps(r[1], r[2]),
                    _mm512_sub_ps(r[2], r[1]),
                    _mm512_sub_ps(r[1], r[3]),
                ]
            });
            let [c0, c1, c2, c3] = c;
            for j in 0..4 {
                let out = [
                    _mm512_sub_ps(c0[j], c2[j]),
                    _mm512_add_ps(c1[j], c2[j]),
                    _mm512_sub_ps(c2[j], c1[j]),
                    _mm512_sub_ps(c1[j], c3[j]),
                ];
                for (i, o) in out.into_iter().enumerate() {
                    _mm512_mask_storeu_ps(vp.add((4 * i + j) * stride + s), k, o);
                }
            }
        }
    }
}

/// The four output phases `(A, B)` of `Aᵀ m A` for tiles `k < t` (see `output_phase`), into
/// `out[2A + B]`.
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn output_phases(m: &[&[f32]; 16], t: usize, out: [&mut [f32]; 4]) {
    assert!(m.iter().all(|r| r.len() >= t) && out.iter().all(|o| o.len() >= t));
    let op = out.map(|o| o.as_mut_ptr());
    for s in (0..t).step_by(16) {
        let k = lanes(s, t);
        // SAFETY: as in `input_tiles`.
        unsafe {
            let x: [__m512; 16] =
                std::array::from_fn(|xi| _mm512_maskz_loadu_ps(k, m[xi].as_ptr().add(s)));
            // Rows A of Aᵀ applied to column j of m.
            let r0: [__m512; 4] =
                std::array::from_fn(|j| _mm512_add_ps(_mm512_add_ps(x[j], x[4 + j]), x[8 + j]));
            let r1: [__m512; 4] = std::array::from_fn(|j| {
                _mm512_sub_ps(_mm512_sub_ps(x[4 + j], x[8 + j]), x[12 + j])
            });
            for (a, r) in [r0, r1].iter().enumerate() {
                let even = _mm512_add_ps(_mm512_add_ps(r[0], r[1]), r[2]);
                let odd = _mm512_sub_ps(_mm512_sub_ps(r[1], r[2]), r[3]);
                _mm512_mask_storeu_ps(op[2 * a].add(s), k, even);
                _mm512_mask_storeu_ps(op[2 * a + 1].add(s), k, odd);
            }
        }
    }
}

/// `z[ξ·stride + k] = (A dy Aᵀ)[ξ]` of tile `k < t` for all 16 planes, where `e[a][b]` holds the
/// output gradient at row `2ty + a`, column `2tx + b` of every tile (see `grad_plane`).
///
/// # Safety
/// The CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub unsafe fn grad_tiles(e: &[[&[f32]; 2]; 2], t: usize, z: &mut [f32], stride: usize) {
    assert!(e.iter().flatten().all(|r| r.len() >= t) && z.len() >= 15 * stride + t);
    let zp = z.as_mut_ptr();
    for s in (0..t).step_by(16) {
        let k = lanes(s, t);
        // SAFETY: as in `input_tiles`.
        unsafe {
            let x: [[__m512; 2]; 2] = std::array::from_fn(|a| {
                std::array::from_fn(|b| _mm512_maskz_loadu_ps(k, e[a][b].as_ptr().add(s)))
            });
            for j in 0..4 {
                // Row j of A applied to row a of the tile.
                let r: [__m512; 2] = std::array::from_fn(|a| match j {
                    0 => x[a][0],
                    1 => _mm512_add_ps(x[a][0], x[a][1]),
                    2 => _mm512_sub_ps(x[a][0], x[a][1]),
                    _ => neg(x[a][1]),
                });
                let out = [
                    r[0],
                    _mm512_add_ps(r[0], r[1]),
                    _mm512_sub_ps(r[0], r[1]),
                    neg(r[1]),
                ];
                for (i, o) in out.into_iter().enumerate() {
                    _mm512_mask_storeu_ps(zp.add((4 * i + j) * stride + s), k, o);
                }
            }
        }
    }
}
