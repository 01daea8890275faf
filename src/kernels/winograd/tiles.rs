//! F(2×2, 3×3)'s transforms of `kernels::winograd` written once over `simd::Vector`, run at
//! AVX-512's width (16 tiles per vector) and AVX2's (8): all 16 planes of a transform from one load of its
//! inputs, and a masked last vector.
//!
//! Why by hand: the portable loops compute one plane per pass (re-reading inputs 16 times), and
//! the compiler's vectorised loops run 64 tiles per iteration, leaving the rest of a run to a
//! scalar loop (an image of 12 × 13 tiles: 28 of 156 tiles, taking as long as the rest). Each
//! function does exactly the portable code's additions in the same order, so the results are
//! bit-identical on every path (tested in `kernels::winograd`).
//!
//! May use: `kernels::simd`.

#![cfg(target_arch = "x86_64")]

use crate::kernels::simd::Vector;

/// `v[ξ·stride + k] = (Bᵀ d B)[ξ]` of tile `k < t` for all 16 planes `ξ = 4I + J`, where `d[i][j]`
/// holds element (i, j) of every tile's patch (see `input_plane`). Each plane's run may be
/// written up to `room ≥ t` floats (past `t` left garbage): whole vectors store faster than
/// masked ones, and the caller overwrites or ignores the rest; likewise below.
///
/// # Safety
/// Called only from a function compiled with `V`'s instruction set (see `simd`).
#[inline(always)]
pub unsafe fn input_tiles<V: Vector>(
    d: &[[&[f32]; 4]; 4],
    t: usize,
    room: usize,
    v: &mut [f32],
    stride: usize,
) {
    assert!(d.iter().flatten().all(|r| r.len() >= t) && room >= t && v.len() >= 15 * stride + room);
    let vp = v.as_mut_ptr();
    for s in (0..t).step_by(V::LANES) {
        // SAFETY: lanes at or past `t` are masked off, so every access is within the slices
        // (lengths asserted above); the instruction set is enabled by the caller.
        unsafe {
            let k = V::mask(t - s);
            let ks = V::room_mask(k, s, room);
            let x: [[V; 4]; 4] = std::array::from_fn(|i| {
                std::array::from_fn(|j| V::load(k, d[i][j].as_ptr().add(s)))
            });
            // Columns of d B for each patch row i (`input_col`).
            let c: [[V; 4]; 4] = std::array::from_fn(|i| {
                let r = &x[i];
                [
                    r[0].sub(r[2]),
                    r[1].add(r[2]),
                    r[2].sub(r[1]),
                    r[1].sub(r[3]),
                ]
            });
            let [c0, c1, c2, c3] = c;
            for j in 0..4 {
                let out = [
                    c0[j].sub(c2[j]),
                    c1[j].add(c2[j]),
                    c2[j].sub(c1[j]),
                    c1[j].sub(c3[j]),
                ];
                for (i, o) in out.into_iter().enumerate() {
                    o.store(ks, vp.add((4 * i + j) * stride + s));
                }
            }
        }
    }
}

/// The four output phases `(A, B)` of `Aᵀ m A` for tiles `k < t` (see `output_phase`), into
/// `out[2A + B]`.
///
/// # Safety
/// As [`input_tiles`]'s.
#[inline(always)]
pub unsafe fn output_phases<V: Vector>(
    m: &[&[f32]; 16],
    t: usize,
    room: usize,
    out: [&mut [f32]; 4],
) {
    assert!(m.iter().all(|r| r.len() >= t) && room >= t && out.iter().all(|o| o.len() >= room));
    let op = out.map(|o| o.as_mut_ptr());
    for s in (0..t).step_by(V::LANES) {
        // SAFETY: as in `input_tiles`.
        unsafe {
            let k = V::mask(t - s);
            let ks = V::room_mask(k, s, room);
            let x: [V; 16] = std::array::from_fn(|xi| V::load(k, m[xi].as_ptr().add(s)));
            // Rows A of Aᵀ applied to column j of m.
            let r0: [V; 4] = std::array::from_fn(|j| x[j].add(x[4 + j]).add(x[8 + j]));
            let r1: [V; 4] = std::array::from_fn(|j| x[4 + j].sub(x[8 + j]).sub(x[12 + j]));
            for (a, r) in [r0, r1].iter().enumerate() {
                let even = r[0].add(r[1]).add(r[2]);
                let odd = r[1].sub(r[2]).sub(r[3]);
                even.store(ks, op[2 * a].add(s));
                odd.store(ks, op[2 * a + 1].add(s));
            }
        }
    }
}

/// `z[ξ·stride + k] = (A dy Aᵀ)[ξ]` of tile `k < t` for all 16 planes, where `e[a][b]` holds the
/// output gradient at row `2ty + a`, column `2tx + b` of every tile (see `grad_plane`).
///
/// # Safety
/// As [`input_tiles`]'s.
#[inline(always)]
pub unsafe fn grad_tiles<V: Vector>(
    e: &[[&[f32]; 2]; 2],
    t: usize,
    room: usize,
    z: &mut [f32],
    stride: usize,
) {
    assert!(e.iter().flatten().all(|r| r.len() >= t) && room >= t && z.len() >= 15 * stride + room);
    let zp = z.as_mut_ptr();
    for s in (0..t).step_by(V::LANES) {
        // SAFETY: as in `input_tiles`.
        unsafe {
            let k = V::mask(t - s);
            let ks = V::room_mask(k, s, room);
            let x: [[V; 2]; 2] = std::array::from_fn(|a| {
                std::array::from_fn(|b| V::load(k, e[a][b].as_ptr().add(s)))
            });
            for j in 0..4 {
                // Row j of A applied to row a of the tile.
                let r: [V; 2] = std::array::from_fn(|a| match j {
                    0 => x[a][0],
                    1 => x[a][0].add(x[a][1]),
                    2 => x[a][0].sub(x[a][1]),
                    _ => x[a][1].neg(),
                });
                let out = [r[0], r[0].add(r[1]), r[0].sub(r[1]), r[1].neg()];
                for (i, o) in out.into_iter().enumerate() {
                    o.store(ks, zp.add((4 * i + j) * stride + s));
                }
            }
        }
    }
}
