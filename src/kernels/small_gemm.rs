//! `C = A·B` for the small, row-major products of Winograd's convolution (`M_ξ = U_ξ · V_ξ`:
//! tens of rows, a few hundred columns, a reduction of tens), written with AVX-512 intrinsics
//! where the CPU has them, else handed to [`super::gemm::sgemm`].
//!
//! Why by hand: the `gemm` crate packs both operands into panels on every call, which products
//! this small cannot amortise. These operands are already in the order a micro-kernel reads
//! them: a block of `B` rows (`k × 48` floats, 6 KB for `k = 32`) stays in L1 while every row
//! block of `A` passes over it, so nothing is copied. Each element of `C` is a sum over `k` in order, one fused multiply-add per step.

use super::gemm::sgemm;

/// `c (m×n) = a (m×k) · b (k×n)`, all row-major and contiguous.
pub fn product(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "product: buffer too small"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F; the lengths are asserted above.
        return unsafe { avx512::product(m, n, k, a, b, c) };
    }
    sgemm(m, n, k, a, false, b, false, c, false);
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Rows of `C` per register block.
    const MR: usize = 8;
    /// Vectors of 16 columns per register block: `MR × NV` = 24 accumulators of 32 registers.
    const NV: usize = 3;

    /// See [`super::product`].
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a`, `b`, `c` hold at least `m·k`, `k·n`, `m·n` floats.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn product(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
        for j in (0..n).step_by(16 * NV) {
            // The last block of columns is as many vectors wide as it needs.
            // SAFETY: as this function's.
            unsafe {
                match (n - j).div_ceil(16) {
                    1 => columns::<1>(m, j, (n, k), a, b, c),
                    2 => columns::<2>(m, j, (n, k), a, b, c),
                    _ => columns::<NV>(m, j, (n, k), a, b, c),
                }
            }
        }
    }

    /// Columns `j..j + 16·V` of `C` (fewer if `n` ends first), all rows.
    ///
    /// # Safety
    /// As [`product`]'s.
    #[inline(always)]
    unsafe fn columns<const V: usize>(
        m: usize,
        j: usize,
        nk: (usize, usize),
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
    ) {
        // The lanes of each vector that hold columns below `n`.
        let masks: [__mmask16; V] =
            std::array::from_fn(|v| match nk.0.saturating_sub(j + 16 * v) {
                0 => 0,
                left if left >= 16 => 0xFFFF,
                left => (1u16 << left) - 1,
            });
        let mut i = 0;
        // SAFETY: as this function's; each block's rows end at or before `m`.
        unsafe {
            while i + MR <= m {
                block::<MR, V>(i, j, masks, nk, a, b, c);
                i += MR;
            }
            match m - i {
                0 => {}
                1 => block::<1, V>(i, j, masks, nk, a, b, c),
                2 => block::<2, V>(i, j, masks, nk, a, b, c),
                3 => block::<3, V>(i, j, masks, nk, a, b, c),
                4 => block::<4, V>(i, j, masks, nk, a, b, c),
                5 => block::<5, V>(i, j, masks, nk, a, b, c),
                6 => block::<6, V>(i, j, masks, nk, a, b, c),
                _ => block::<7, V>(i, j, masks, nk, a, b, c),
            }
        }
    }

    /// Rows `i..i + R` and the `V` vectors of columns from `j` (lanes `masks`) of `C`.
    ///
    /// # Safety
    /// As [`product`]'s, with `i + R ≤ m`.
    #[inline(always)]
    unsafe fn block<const R: usize, const V: usize>(
        i: usize,
        j: usize,
        masks: [__mmask16; V],
        (n, k): (usize, usize),
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
    ) {
        // SAFETY: masked-off lanes are neither read nor written (and do not fault), so every
        // access is within `b` (`p·n + j + lane < k·n` for an unmasked lane) and `c`; `a` is
        // read at `(i + r)·k + p < m·k`. Pointers past the end are formed with `wrapping_add`
        // and only used under a zero mask.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            let (ap, bp) = (a.as_ptr().add(i * k), b.as_ptr());
            for p in 0..k {
                let row = bp.wrapping_add(p * n + j);
                let bv: [__m512; V] = std::array::from_fn(|v| {
                    _mm512_maskz_loadu_ps(masks[v], row.wrapping_add(16 * v))
                });
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*ap.add(r * k + p));
                    for (acc, &bv) in acc.iter_mut().zip(&bv) {
                        *acc = _mm512_fmadd_ps(av, bv, *acc);
                    }
                }
            }
            let cp = c.as_mut_ptr();
            for (r, acc) in acc.iter().enumerate() {
                let row = cp.wrapping_add((i + r) * n + j);
                for (v, &acc) in acc.iter().enumerate() {
                    _mm512_mask_storeu_ps(row.wrapping_add(16 * v), masks[v], acc);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;

    /// Against the triple loop, on sizes around every block edge: rows 1, below, at and past
    /// a multiple of 8; columns within one vector, at 16 and 48, past them; reductions of 1 up.
    #[test]
    fn product_matches_the_triple_loop() {
        let mut rng = crate::rng::Rng::new(5);
        for m in [1, 3, 7, 8, 9, 17, 64] {
            for n in [1, 5, 15, 16, 17, 47, 48, 49, 100, 156] {
                for k in [1, 2, 9, 32] {
                    let a: Vec<f32> = (0..m * k).map(|_| rng.uniform() - 0.5).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.uniform() - 0.5).collect();
                    let mut want = vec![0.0; m * n];
                    reference::gemm(m, n, k, &a, false, &b, false, &mut want);
                    // Extra space after `c` must stay untouched.
                    let mut got = vec![f32::NAN; m * n + 20];
                    product(m, n, k, &a, &b, &mut got);
                    for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                            "{m}×{n}×{k}, element {idx}: {g} vs {w}"
                        );
                    }
                    assert!(got[m * n..].iter().all(|v| v.is_nan()), "{m}×{n}×{k}");
                }
            }
        }
    }
}
