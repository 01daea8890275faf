//! Matrix transpose, in parallel.
//!
//! The GEMM crate runs several times below its peak when the right operand is stored with its
//! reduction dimension contiguous (`x·Wᵀ` with a `O×F` weight, or a convolution's weight
//! gradient `dy · colsᵀ`); transposing one operand first costs far less than the difference
//! (figures in docs/PERFORMANCE.md).

use rayon::prelude::*;

/// Source rows (or destination columns) per block: a 16×16 block of floats is 16 cache lines
/// read and 16 written, all in L1.
const BLOCK: usize = 16;

/// `dst (cols×rows) = srcᵀ`, `src` being `rows×cols`, row-major, on the calling thread.
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    if rows == 0 {
        return;
    }
    for c0 in (0..cols).step_by(BLOCK) {
        let width = BLOCK.min(cols - c0);
        transpose_block(src, rows, cols, c0, &mut dst[c0 * rows..][..width * rows]);
    }
}

/// As [`transpose`], blocks of destination rows in parallel. Each task writes its own rows, so
/// the result is the same for any thread count (it is a copy).
pub fn par_transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    if rows == 0 || cols == 0 {
        return;
    }
    dst[..rows * cols]
        .par_chunks_mut(BLOCK * rows)
        .enumerate()
        .for_each(|(block, dst)| transpose_block(src, rows, cols, block * BLOCK, dst));
}

/// Destination rows `c0..c0 + dst.len() / rows` (source columns), a block of source rows at a
/// time: 8×8 tiles in AVX registers on the AVX2 and AVX-512 paths (see `isa`; both have AVX), one float at a time elsewhere.
fn transpose_block(src: &[f32], rows: usize, cols: usize, c0: usize, dst: &mut [f32]) {
    let width = dst.len() / rows;
    assert!(width <= BLOCK && c0 + width <= cols && src.len() >= rows * cols);
    // Set only where the tiles exist (x86-64).
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let (mut rows8, mut width8) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if super::isa::active() >= super::isa::Isa::Avx2 {
        (rows8, width8) = (rows / 8 * 8, width / 8 * 8);
        for r0 in (0..rows8).step_by(8) {
            for j0 in (0..width8).step_by(8) {
                // SAFETY: the CPU has AVX; the tile's rows r0..r0+8 of src (columns
                // c0+j0..+8 ≤ cols) and rows j0..j0+8 of dst (columns r0..r0+8 ≤ rows) are in
                // bounds, by the assert above and the loop limits.
                unsafe {
                    tile8x8(
                        src.as_ptr().add(r0 * cols + c0 + j0),
                        cols,
                        dst.as_mut_ptr().add(j0 * rows + r0),
                        rows,
                    )
                }
            }
        }
    }
    // What the tiles left: the last rows % 8 source rows, and the last width % 8 columns.
    for r in 0..rows {
        let from = if r < rows8 { width8 } else { 0 };
        let row = &src[r * cols + c0..][..width];
        for (j, &v) in row.iter().enumerate().skip(from) {
            dst[j * rows + r] = v;
        }
    }
}

/// Transposes the 8×8 tile at `src` (row stride `ss`) into `dst` (row stride `ds`) in eight
/// AVX registers: interleave pairs of rows, then pairs of pairs, then swap 128-bit halves
/// (the usual unpack/shuffle/permute sequence, as in Intel's optimisation manual).
///
/// # Safety
/// The CPU has AVX; `src + i·ss` and `dst + i·ds` address 8 floats each for i in 0..8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn tile8x8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    unsafe {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * ss)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let out = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (i, v) in out.into_iter().enumerate() {
            _mm256_storeu_ps(dst.add(i * ds), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sizes around the 8×8 tiles and the 16-column blocks, serial and parallel.
    #[test]
    fn transpose_matches_the_definition_on_awkward_sizes() {
        for &(rows, cols) in &[
            (1, 1),
            (1, 17),
            (17, 1),
            (5, 3),
            (8, 8),
            (16, 16),
            (9, 23),
            (33, 70),
            (32, 676),
            (0, 4),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            for parallel in [false, true] {
                let mut dst = vec![f32::NAN; rows * cols];
                if parallel {
                    par_transpose(&src, rows, cols, &mut dst);
                } else {
                    transpose(&src, rows, cols, &mut dst);
                }
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(
                            dst[c * rows + r],
                            src[r * cols + c],
                            "{rows}×{cols} at {r},{c}, parallel {parallel}"
                        );
                    }
                }
            }
        }
    }
}
