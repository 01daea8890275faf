//! `C = A·B` (or `C += A·B`) for the small, row-major products of Winograd's convolution
//! (`M_ξ = U_ξ · V_ξ`: tens of rows, a few hundred columns, a reduction of tens; and on AVX-512
//! the weight gradient's `S_ξ += Z_ξ · V_ξᵀ`, a reduction of 72 to 144 tiles, with `V_ξ`
//! transposed by the caller), written once over `simd::Vector` and run through `simd::run_on`
//! at AVX-512's or AVX2's width; on the portable path handed to [`super::gemm::sgemm`].
//!
//! Why by hand: the `gemm` crate packs both operands into panels on every call, which products
//! this small cannot amortise. These operands are already in the order a micro-kernel reads
//! them: a block of `B` rows (`k × 3·16` floats on AVX-512, 6 KB for `k = 32`) stays in L1 while
//! every row block of `A` passes over it, so nothing is copied. Each element of `C` is a sum over
//! `k` in order, one fused multiply-add per step, so AVX-512 and AVX2 give bit-identical results
//! (the portable path's `sgemm` sums in another order).
//!
//! May use: `kernels::{gemm, isa, simd}`.

use super::gemm::sgemm;
use super::isa::{self, Isa};
use super::simd::{Kernel, Vector, run_on};

/// `c (m×n) = a (m×k) · b (k×n)`, all row-major and contiguous, on the active path.
pub fn product(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    product_on(isa::active(), m, n, k, a, b, c, false)
}

/// [`product`], or `c += a · b` when `accumulate` (each element's sum then starts from its old
/// value), on the path `isa` (or the best the CPU has below it).
#[allow(clippy::too_many_arguments)]
pub fn product_on(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "product: buffer too small"
    );
    run_on(
        isa,
        Product {
            mnk: (m, n, k),
            a,
            b,
            c,
            accumulate,
        },
    )
}

/// One call of [`product_on`], whose lengths it has checked.
struct Product<'a> {
    mnk: (usize, usize, usize),
    a: &'a [f32],
    b: &'a [f32],
    c: &'a mut [f32],
    accumulate: bool,
}

impl Kernel for Product<'_> {
    type Out = ();
    #[inline(always)]
    unsafe fn run<V: Vector>(self) {
        let Product {
            mnk,
            a,
            b,
            c,
            accumulate: acc,
        } = self;
        // SAFETY: `V`'s instruction set is enabled (`Kernel`); `product_on` checked the lengths.
        unsafe {
            match V::ISA {
                // 8 rows × 3 vectors: 24 accumulators of 32 registers.
                Isa::Avx512 => blocked::<V, 8, 3>(mnk, a, b, c, acc),
                // 6 rows × 2 vectors: 12 accumulators of 16 registers (two more for `B`'s row,
                // one for the broadcast of `A`).
                Isa::Avx2 => blocked::<V, 6, 2>(mnk, a, b, c, acc),
                Isa::Portable => {
                    let (m, n, k) = mnk;
                    sgemm(m, n, k, a, false, b, false, c, acc)
                }
            }
        }
    }
}

/// Blocks of `MR` rows × `NV` vectors of columns.
///
/// # Safety
/// `V`'s instruction set is enabled in the caller; `a`, `b`, `c` hold at least `m·k`, `k·n`,
/// `m·n` floats.
#[inline(always)]
unsafe fn blocked<V: Vector, const MR: usize, const NV: usize>(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    acc: bool,
) {
    for j in (0..n).step_by(V::LANES * NV) {
        // The last block of columns is as many vectors wide as it needs.
        // SAFETY: as this function's.
        unsafe {
            match (n - j).div_ceil(V::LANES) {
                1 => columns::<V, MR, 1>(m, j, (n, k), a, b, c, acc),
                2 if NV > 2 => columns::<V, MR, 2>(m, j, (n, k), a, b, c, acc),
                _ => columns::<V, MR, NV>(m, j, (n, k), a, b, c, acc),
            }
        }
    }
}

/// Columns `j..j + LANES·W` of `C` (fewer if `n` ends first), all rows.
///
/// # Safety
/// As [`blocked`]'s.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn columns<V: Vector, const MR: usize, const W: usize>(
    m: usize,
    j: usize,
    nk: (usize, usize),
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    acc: bool,
) {
    // SAFETY: as this function's; each block's rows end at or before `m`.
    unsafe {
        // The lanes of each vector that hold columns below `n`.
        let masks: [V::Mask; W] =
            std::array::from_fn(|v| V::mask(nk.0.saturating_sub(j + V::LANES * v)));
        let mut i = 0;
        while i + MR <= m {
            block::<V, MR, W>(i, j, masks, nk, a, b, c, acc);
            i += MR;
        }
        match m - i {
            0 => {}
            1 => block::<V, 1, W>(i, j, masks, nk, a, b, c, acc),
            2 => block::<V, 2, W>(i, j, masks, nk, a, b, c, acc),
            3 => block::<V, 3, W>(i, j, masks, nk, a, b, c, acc),
            4 => block::<V, 4, W>(i, j, masks, nk, a, b, c, acc),
            5 => block::<V, 5, W>(i, j, masks, nk, a, b, c, acc),
            6 => block::<V, 6, W>(i, j, masks, nk, a, b, c, acc),
            _ => block::<V, 7, W>(i, j, masks, nk, a, b, c, acc),
        }
    }
}

/// Rows `i..i + R` and the `W` vectors of columns from `j` (lanes `masks`) of `C`, added
/// to what they hold when `accumulate`.
///
/// # Safety
/// As [`blocked`]'s, with `i + R ≤ m`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn block<V: Vector, const R: usize, const W: usize>(
    i: usize,
    j: usize,
    masks: [V::Mask; W],
    (n, k): (usize, usize),
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) {
    // SAFETY: masked-off lanes are neither read nor written (and do not fault), so every
    // access is within `b` (`p·n + j + lane < k·n` for an unmasked lane) and `c`; `a` is
    // read at `(i + r)·k + p < m·k`. Pointers past the end are formed with `wrapping_add`
    // and only used under a zero mask.
    unsafe {
        let cp = c.as_mut_ptr();
        let mut acc = [[V::zero(); W]; R];
        if accumulate {
            for (r, acc) in acc.iter_mut().enumerate() {
                let row = cp.wrapping_add((i + r) * n + j);
                for (v, acc) in acc.iter_mut().enumerate() {
                    *acc = V::load(masks[v], row.wrapping_add(V::LANES * v));
                }
            }
        }
        let (ap, bp) = (a.as_ptr().add(i * k), b.as_ptr());
        for p in 0..k {
            let row = bp.wrapping_add(p * n + j);
            let bv: [V; W] =
                std::array::from_fn(|v| V::load(masks[v], row.wrapping_add(V::LANES * v)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = V::splat(*ap.add(r * k + p));
                for (acc, &bv) in acc.iter_mut().zip(&bv) {
                    *acc = av.mul_add(bv, *acc);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let row = cp.wrapping_add((i + r) * n + j);
            for (v, &acc) in acc.iter().enumerate() {
                acc.store(masks[v], row.wrapping_add(V::LANES * v));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;

    /// Every path the CPU has against the triple loop, on sizes around every block edge: rows
    /// 1, below, at and past multiples of 6 and 8; columns within one vector, at 8, 16, 48, past
    /// them; reductions of 1 up. Tolerance 1e-5 relative: the sums of up to 32 terms of size
    /// below 0.25 differ from the reference's order by a few ulps. AVX-512 and AVX2 sum in the
    /// same order with the same fused steps, so they must agree bit for bit. Each path also
    /// adds into what `c` holds.
    #[test]
    fn product_matches_the_triple_loop_on_every_path() {
        let mut rng = crate::rng::Rng::new(5);
        let paths = Isa::available();
        eprintln!("paths: {paths:?}");
        for m in [1, 3, 5, 6, 7, 8, 9, 13, 17, 64] {
            for n in [1, 5, 7, 8, 9, 15, 16, 17, 23, 24, 25, 47, 48, 49, 100, 156] {
                for k in [1, 2, 9, 32] {
                    let a: Vec<f32> = (0..m * k).map(|_| rng.uniform() - 0.5).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.uniform() - 0.5).collect();
                    let mut want = vec![0.0; m * n];
                    reference::gemm(m, n, k, &a, false, &b, false, &mut want);
                    let old: Vec<f32> = (0..m * n).map(|_| rng.uniform() - 0.5).collect();
                    let mut fused = None;
                    for (&isa, accumulate) in paths.iter().flat_map(|i| [(i, false), (i, true)]) {
                        // Extra space after `c` must stay untouched; without `accumulate`
                        // the old values (NaN) must not leak in.
                        let mut got = vec![f32::NAN; m * n + 20];
                        if accumulate {
                            got[..m * n].copy_from_slice(&old);
                        }
                        product_on(isa, m, n, k, &a, &b, &mut got, accumulate);
                        for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                            let w = if accumulate { w + old[idx] } else { *w };
                            assert!(
                                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                                "{isa:?} {m}×{n}×{k} accumulate {accumulate}, element {idx}: \
                                 {g} vs {w}"
                            );
                        }
                        assert!(
                            got[m * n..].iter().all(|v| v.is_nan()),
                            "{isa:?} {m}×{n}×{k}"
                        );
                        if isa > Isa::Portable && !accumulate {
                            let bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                            let first = fused.get_or_insert(bits.clone());
                            assert!(*first == bits, "{isa:?} {m}×{n}×{k}: differs from AVX2");
                        }
                    }
                }
            }
        }
    }
}
