//! Small reshuffles between the Winograd transforms' phase images and plain rows: a 4×4
//! transpose (F(4×4)'s four phases) and the two-way interleave and its inverse (F(2×2)'s two).
//! On x86-64 they run in SSE registers (part of the baseline instruction set); elsewhere they
//! are plain loops. As plain loops over slices they compiled to one scalar load and store per
//! value, each behind a bounds check, and the stores stalled where they missed the cache.

/// `dst[j][i] = src[i][j]` for `i, j < 4`: four rows of four floats, transposed.
#[inline(always)]
pub fn transpose4(src: [&[f32]; 4], dst: [&mut [f32]; 4]) {
    assert!(src.iter().all(|r| r.len() >= 4) && dst.iter().all(|r| r.len() >= 4));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: every row holds at least 4 floats (asserted); SSE is part of x86-64.
    unsafe {
        use std::arch::x86_64::*;
        let [a0, a1, a2, a3] = src.map(|r| _mm_loadu_ps(r.as_ptr()));
        let (t0, t1) = (_mm_unpacklo_ps(a0, a1), _mm_unpacklo_ps(a2, a3));
        let (t2, t3) = (_mm_unpackhi_ps(a0, a1), _mm_unpackhi_ps(a2, a3));
        let out = [
            _mm_movelh_ps(t0, t1),
            _mm_movehl_ps(t1, t0),
            _mm_movelh_ps(t2, t3),
            _mm_movehl_ps(t3, t2),
        ];
        for (row, v) in dst.into_iter().zip(out) {
            _mm_storeu_ps(row.as_mut_ptr(), v);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    for (j, row) in dst.into_iter().enumerate() {
        for (i, v) in row[..4].iter_mut().enumerate() {
            *v = src[i][j];
        }
    }
}

/// `even[k] = src[2k]`, `odd[k] = src[2k + 1]` for `k < 4`.
#[inline(always)]
pub fn deinterleave2(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    assert!(src.len() >= 8 && even.len() >= 4 && odd.len() >= 4);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: 8 floats from `src`, 4 into each half (asserted); SSE is part of x86-64.
    unsafe {
        use std::arch::x86_64::*;
        let (a, b) = (
            _mm_loadu_ps(src.as_ptr()),
            _mm_loadu_ps(src.as_ptr().add(4)),
        );
        _mm_storeu_ps(even.as_mut_ptr(), _mm_shuffle_ps::<0b10_00_10_00>(a, b));
        _mm_storeu_ps(odd.as_mut_ptr(), _mm_shuffle_ps::<0b11_01_11_01>(a, b));
    }
    #[cfg(not(target_arch = "x86_64"))]
    for k in 0..4 {
        even[k] = src[2 * k];
        odd[k] = src[2 * k + 1];
    }
}

/// `dst[2k] = even[k]`, `dst[2k + 1] = odd[k]` for `k < 4`: the inverse of [`deinterleave2`].
#[inline(always)]
pub fn interleave2(even: &[f32], odd: &[f32], dst: &mut [f32]) {
    assert!(dst.len() >= 8 && even.len() >= 4 && odd.len() >= 4);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: 4 floats from each half, 8 into `dst` (asserted); SSE is part of x86-64.
    unsafe {
        use std::arch::x86_64::*;
        let (a, b) = (_mm_loadu_ps(even.as_ptr()), _mm_loadu_ps(odd.as_ptr()));
        _mm_storeu_ps(dst.as_mut_ptr(), _mm_unpacklo_ps(a, b));
        _mm_storeu_ps(dst.as_mut_ptr().add(4), _mm_unpackhi_ps(a, b));
    }
    #[cfg(not(target_arch = "x86_64"))]
    for k in 0..4 {
        dst[2 * k] = even[k];
        dst[2 * k + 1] = odd[k];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the definitions, on rows that are longer than 4 (only the first 4 change).
    #[test]
    fn reshuffles_match_their_definitions() {
        let src: Vec<Vec<f32>> = (0..4)
            .map(|i| (0..6).map(|j| (10 * i + j) as f32).collect())
            .collect();
        let mut dst = vec![vec![-1.0f32; 5]; 4];
        {
            let [d0, d1, d2, d3] = &mut dst[..] else {
                unreachable!()
            };
            transpose4(
                std::array::from_fn(|i| &src[i][..]),
                [&mut d0[..], &mut d1[..], &mut d2[..], &mut d3[..]],
            );
        }
        for (j, row) in dst.iter().enumerate() {
            let want: Vec<f32> = (0..4).map(|i| src[i][j]).chain([-1.0]).collect();
            assert_eq!(row, &want);
        }
        let flat: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let (mut even, mut odd) = ([9.0f32; 5], [9.0f32; 4]);
        deinterleave2(&flat, &mut even, &mut odd);
        assert_eq!(even, [0.0, 2.0, 4.0, 6.0, 9.0]);
        assert_eq!(odd, [1.0, 3.0, 5.0, 7.0]);
        let mut back = [-1.0f32; 9];
        interleave2(&even, &odd, &mut back);
        assert_eq!(back[..8], flat[..8]);
        assert_eq!(back[8], -1.0);
    }
}
