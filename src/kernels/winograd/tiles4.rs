//! F(4×4, 3×3)'s transforms: the kernel's `G g Gᵀ` and the weight gradient's `Gᵀ S G`
//! (scalar, once per step), and the input's `Bᵀ d B`, the output's `Aᵀ m A` and the output
//! gradient's `A dY Aᵀ` over runs of tiles, written once over `simd::Vector` and compiled for
//! AVX-512, AVX2 and the portable 4-lane vector. The matrices are those of Lavin
//! and Gray (2016), section 4.2, interpolation points 0, ±1, ±2:
//!
//! ```text
//! Bᵀ = [4  0 −5  0 1 0]   G = [ 1/4     0    0]   Aᵀ = [1 1  1 1  1 0]
//!      [0 −4 −4  1 1 0]       [−1/6 −1/6 −1/6]        [0 1 −1 2 −2 0]
//!      [0  4 −4 −1 1 0]       [−1/6  1/6 −1/6]        [0 1  1 4  4 0]
//!      [0 −2 −1  2 1 0]       [1/24 1/12  1/6]        [0 1 −1 8 −8 1]
//!      [0  2 −1 −2 1 0]       [1/24 −1/12 1/6]
//!      [0  4  0 −5 0 1]       [   0     0    1]
//! ```
//!
//! The vector transforms multiply and add separately (no fused multiply-add), in one fixed
//! order, so every path gives the same bits (tested in `kernels::winograd`); all their factors
//! but 5 are powers of two, exact in any case.
//!
//! May use: `kernels::simd`.

use crate::kernels::simd::Vector;

/// `Bᵀ d` for one column `d` of six values (or `d B` for one row).
///
/// # Safety
/// As [`input_tiles`]'s.
#[inline(always)]
unsafe fn input_1d<V: Vector>(d: [V; 6]) -> [V; 6] {
    // SAFETY: the caller's instruction set is enabled (see `input_tiles`).
    unsafe {
        let (four, five, two) = (V::splat(4.0), V::splat(5.0), V::splat(2.0));
        let a = d[4].sub(d[2].mul(four));
        let b = d[3].sub(d[1].mul(four));
        let c = d[4].sub(d[2]);
        let e = d[3].sub(d[1]).mul(two);
        [
            d[0].mul(four).sub(d[2].mul(five)).add(d[4]),
            a.add(b),
            a.sub(b),
            c.add(e),
            c.sub(e),
            d[1].mul(four).sub(d[3].mul(five)).add(d[5]),
        ]
    }
}

/// `Aᵀ m` for one column `m` of six values (or `m A` for one row).
///
/// # Safety
/// As [`input_tiles`]'s.
#[inline(always)]
unsafe fn output_1d<V: Vector>(m: [V; 6]) -> [V; 4] {
    // SAFETY: as in `input_1d`.
    unsafe {
        let (s1, d1) = (m[1].add(m[2]), m[1].sub(m[2]));
        let (s2, d2) = (m[3].add(m[4]), m[3].sub(m[4]));
        [
            m[0].add(s1).add(s2),
            d1.add(d2.mul(V::splat(2.0))),
            s1.add(s2.mul(V::splat(4.0))),
            d1.add(d2.mul(V::splat(8.0))).add(m[5]),
        ]
    }
}

/// `v[ξ·stride + k] = (Bᵀ d B)[ξ]` of tile `k < t` for all 36 planes `ξ = 6I + J`, where
/// `d[i][j]` holds element (i, j) of every tile's patch. Each plane's run may be written up to
/// `room ≥ t` floats (past `t` left garbage), as in F(2×2)'s `tiles::input_tiles`; likewise
/// below.
///
/// # Safety
/// Called only from a function compiled with `V`'s instruction set (see `simd`).
#[inline(always)]
pub unsafe fn input_tiles<V: Vector>(
    d: &[[&[f32]; 6]; 6],
    t: usize,
    room: usize,
    v: &mut [f32],
    stride: usize,
) {
    assert!(d.iter().flatten().all(|r| r.len() >= t) && room >= t && v.len() >= 35 * stride + room);
    let vp = v.as_mut_ptr();
    for s in (0..t).step_by(V::LANES) {
        // SAFETY: lanes at or past `t` are masked off, so every access is within the slices
        // (lengths asserted above); the instruction set is enabled by the caller.
        unsafe {
            let k = V::mask(t - s);
            let ks = V::room_mask(k, s, room);
            // Row i of d B, for each patch row i.
            let rows: [[V; 6]; 6] = std::array::from_fn(|i| {
                input_1d(std::array::from_fn(|j| V::load(k, d[i][j].as_ptr().add(s))))
            });
            let cols: [[V; 6]; 6] = std::array::from_fn(|j| std::array::from_fn(|i| rows[i][j]));
            for (j, col) in cols.into_iter().enumerate() {
                for (i, o) in input_1d(col).into_iter().enumerate() {
                    o.store(ks, vp.add((6 * i + j) * stride + s));
                }
            }
        }
    }
}

/// The 16 output phases `(a, b)` of `Aᵀ m A` for tiles `k < t`, into `out[4a + b]`: the output
/// pixel at row `4ty + a`, column `4tx + b` of each tile, from its 36 planes `m[6i + j]`.
///
/// # Safety
/// As [`input_tiles`]'s.
#[inline(always)]
pub unsafe fn output_phases<V: Vector>(
    m: &[&[f32]; 36],
    t: usize,
    room: usize,
    out: &mut [&mut [f32]; 16],
) {
    assert!(m.iter().all(|r| r.len() >= t) && room >= t && out.iter().all(|o| o.len() >= room));
    let op: [*mut f32; 16] = std::array::from_fn(|i| out[i].as_mut_ptr());
    for s in (0..t).step_by(V::LANES) {
        // SAFETY: as in `input_tiles`.
        unsafe {
            let k = V::mask(t - s);
            let ks = V::room_mask(k, s, room);
            // Column j of Aᵀ m, for each plane column j.
            let cols: [[V; 4]; 6] = std::array::from_fn(|j| {
                output_1d(std::array::from_fn(|i| {
                    V::load(k, m[6 * i + j].as_ptr().add(s))
                }))
            });
            for a in 0..4 {
                let row = output_1d(std::array::from_fn(|j| cols[j][a]));
                for (b, o) in row.into_iter().enumerate() {
                    o.store(ks, op[4 * a + b].add(s));
                }
            }
        }
    }
}

/// `A e` for one column `e` of four values (or `e Aᵀ` for one row).
///
/// # Safety
/// As [`input_tiles`]'s.
#[inline(always)]
unsafe fn grad_1d<V: Vector>(e: [V; 4]) -> [V; 6] {
    // SAFETY: as in `input_1d`.
    unsafe {
        let (p, q) = (e[0].add(e[2]), e[1].add(e[3]));
        let r = e[0].add(e[2].mul(V::splat(4.0)));
        let s = e[1].add(e[3].mul(V::splat(4.0))).mul(V::splat(2.0));
        [e[0], p.add(q), p.sub(q), r.add(s), r.sub(s), e[3]]
    }
}

/// `z[ξ·stride + k] = (A e Aᵀ)[ξ]` of tile `k < t` for all 36 planes, where `e[4a + b]` holds
/// the output gradient at row `4ty + a`, column `4tx + b` of every tile.
///
/// # Safety
/// As [`input_tiles`]'s.
#[inline(always)]
pub unsafe fn grad_tiles<V: Vector>(
    e: &[&[f32]; 16],
    t: usize,
    room: usize,
    z: &mut [f32],
    stride: usize,
) {
    assert!(e.iter().all(|r| r.len() >= t) && room >= t && z.len() >= 35 * stride + room);
    let zp = z.as_mut_ptr();
    for s in (0..t).step_by(V::LANES) {
        // SAFETY: as in `input_tiles`.
        unsafe {
            let k = V::mask(t - s);
            let ks = V::room_mask(k, s, room);
            // Row a of e Aᵀ, for each tile row a.
            let rows: [[V; 6]; 4] = std::array::from_fn(|a| {
                grad_1d(std::array::from_fn(|b| {
                    V::load(k, e[4 * a + b].as_ptr().add(s))
                }))
            });
            let cols: [[V; 4]; 6] = std::array::from_fn(|j| std::array::from_fn(|a| rows[a][j]));
            for (j, col) in cols.into_iter().enumerate() {
                for (i, o) in grad_1d(col).into_iter().enumerate() {
                    o.store(ks, zp.add((6 * i + j) * stride + s));
                }
            }
        }
    }
}

/// `G g` for one column of three values (or `g Gᵀ` for one row).
fn kernel_1d([g0, g1, g2]: [f32; 3]) -> [f32; 6] {
    [
        g0 / 4.0,
        -(g0 + g1 + g2) / 6.0,
        -(g0 - g1 + g2) / 6.0,
        g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
        g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
        g2,
    ]
}

/// `U_ξ = G g Gᵀ` for the kernels `g` of `weight` (consecutive `3×3` kernels), kernel `k` into
/// `u[ξ][k]` for the `u[_].len()` kernels that `u` has room for (a range of every plane of the
/// `36×O×C` transformed weights).
pub fn transform_weights(weight: &[f32], u: [&mut [f32]; 36]) {
    let n = u[0].len();
    assert!(weight.len() >= n * 9 && u.iter().all(|p| p.len() == n));
    for (k, g) in weight.chunks_exact(9).take(n).enumerate() {
        // Columns of G g, one per kernel column j...
        let cols: [[f32; 6]; 3] = std::array::from_fn(|j| kernel_1d([g[j], g[3 + j], g[6 + j]]));
        // ...then each of its rows times Gᵀ.
        for i in 0..6 {
            let row = kernel_1d([cols[0][i], cols[1][i], cols[2][i]]);
            for (j, v) in row.into_iter().enumerate() {
                u[6 * i + j][k] = v;
            }
        }
    }
}

/// `Gᵀ s` for one column of six values (or `s G` for one row).
fn grad_kernel_1d([s0, s1, s2, s3, s4, s5]: [f32; 6]) -> [f32; 3] {
    [
        s0 / 4.0 - (s1 + s2) / 6.0 + (s3 + s4) / 24.0,
        (s2 - s1) / 6.0 + (s3 - s4) / 12.0,
        (s3 + s4 - s1 - s2) / 6.0 + s5,
    ]
}

/// `dW += Gᵀ S G` for the kernels `k0..` that `dw` holds (consecutive `3×3` kernels), `S`
/// (`36×K`, `K` kernels in all) the weight gradient's sum in Winograd's domain.
pub fn weight_grad(k0: usize, kernels: usize, s: &[f32], dw: &mut [f32]) {
    assert!(s.len() >= 36 * kernels && k0 + dw.len() / 9 <= kernels);
    for (k, g) in dw.chunks_exact_mut(9).enumerate() {
        let at = |xi: usize| s[xi * kernels + k0 + k];
        // Gᵀ applied to each column j of S...
        let cols: [[f32; 3]; 6] =
            std::array::from_fn(|j| grad_kernel_1d(std::array::from_fn(|i| at(6 * i + j))));
        // ...then each row of the result times G.
        for i in 0..3 {
            let row = grad_kernel_1d(std::array::from_fn(|j| cols[j][i]));
            for (v, d) in g[3 * i..][..3].iter_mut().zip(row) {
                *v += d;
            }
        }
    }
}
