//! Single-precision matrix multiply, row-major, with optional transposes.
//!
//! Layout: a matrix `m×k` is stored row-major (`a[i*k + p]`); "transposed" means the buffer holds
//! the `k×m` matrix instead. The products are the `gemm` crate's (runtime detection of AVX2,
//! AVX-512 and NEON, portable fallback).
//!
//! Threads: [`sgemm`] runs on the calling thread. [`par_sgemm`] splits the output into blocks of
//! a fixed size that depends only on the problem's dimensions, never on the thread count, and
//! multiplies each block on its own; every output element is therefore computed by the same
//! sequence of operations whatever the number of threads, so results are bit-identical.

use super::SendPtr;
use rayon::prelude::*;

/// A matrix operand: pointer, row stride and column stride (in elements).
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

fn operand(ptr: *const f32, rows: usize, cols: usize, trans: bool) -> Mat {
    // Logical `rows×cols`; stored transposed means the buffer is `cols×rows` row-major.
    if trans {
        Mat {
            ptr,
            rs: 1,
            cs: rows as isize,
        }
    } else {
        Mat {
            ptr,
            rs: cols as isize,
            cs: 1,
        }
    }
}

/// `c (m×n) = a·b` or `c += a·b` when `accumulate`; `a` is `m×k` (or `k×m` if `trans_a`), `b` is
/// `k×n` (or `n×k` if `trans_b`).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    c: &mut [f32],
    accumulate: bool,
) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "sgemm: buffer too small"
    );
    let a = operand(a.as_ptr(), m, k, trans_a);
    let b = operand(b.as_ptr(), k, n, trans_b);
    // SAFETY: the asserts above bound every element the strides address.
    unsafe { raw(m, n, k, a, b, c.as_mut_ptr(), n as isize, accumulate) }
}

/// As [`sgemm`], with the output split into fixed-size blocks multiplied in parallel.
#[allow(clippy::too_many_arguments)]
pub fn par_sgemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    trans_a: bool,
    b: &[f32],
    trans_b: bool,
    c: &mut [f32],
    accumulate: bool,
) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "sgemm: buffer too small"
    );
    // Blocks of BLOCK rows or columns (along the longer side): enough tasks to share among
    // threads, each still large enough to run the micro-kernel efficiently.
    const BLOCK: usize = 64;
    let along_rows = m >= n;
    let len = if along_rows { m } else { n };
    let blocks = len.div_ceil(BLOCK).max(1);
    let a = operand(a.as_ptr(), m, k, trans_a);
    let b = operand(b.as_ptr(), k, n, trans_b);
    let (a, b) = (SendMat(a), SendMat(b));
    let cptr = SendPtr(c.as_mut_ptr());
    (0..blocks).into_par_iter().for_each(|i| {
        let (a, b, cptr) = (a, b, cptr);
        let start = i * BLOCK;
        let size = BLOCK.min(len - start);
        // SAFETY: block i writes rows (or columns) [start, start+size) of c only: disjoint.
        unsafe {
            if along_rows {
                let a_i = Mat {
                    ptr: a.0.ptr.offset(start as isize * a.0.rs),
                    ..a.0
                };
                raw(
                    size,
                    n,
                    k,
                    a_i,
                    b.0,
                    cptr.0.add(start * n),
                    n as isize,
                    accumulate,
                );
            } else {
                let b_i = Mat {
                    ptr: b.0.ptr.offset(start as isize * b.0.cs),
                    ..b.0
                };
                raw(
                    m,
                    size,
                    k,
                    a.0,
                    b_i,
                    cptr.0.add(start),
                    n as isize,
                    accumulate,
                );
            }
        }
    });
}

#[derive(Clone, Copy)]
struct SendMat(Mat);
unsafe impl Send for SendMat {}
unsafe impl Sync for SendMat {}

/// Starts, on a worker thread, the backend's one-time set-up (the `gemm` crate reads the CPU's
/// cache sizes from /sys on its first product, about half a millisecond), so that it overlaps
/// whatever the caller does next instead of delaying its first product.
pub fn warm_up_in_background() {
    rayon::spawn(|| {
        const N: usize = 64;
        let (a, mut c) = (vec![0.0f32; N * N], vec![0.0f32; N * N]);
        sgemm(N, N, N, &a, false, &a, false, &mut c, false);
    });
}

/// `c = a·b (+ c)`, with `c` row-major with row stride `c_rs`.
///
/// # Safety
/// Every element addressed through the pointers and strides must be in bounds.
#[allow(clippy::too_many_arguments)]
unsafe fn raw(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: *mut f32, c_rs: isize, acc: bool) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !acc {
            for i in 0..m {
                unsafe { std::slice::from_raw_parts_mut(c.offset(i as isize * c_rs), n).fill(0.0) };
            }
        }
        return;
    }
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            c_rs,
            acc,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;
    use crate::rng::Rng;

    /// Integer-valued inputs keep every product and sum exact, so the fast kernel must match the
    /// triple loop exactly; the output starts as NaN (or a known value when accumulating) to catch
    /// unwritten or wrongly accumulated elements.
    fn check(m: usize, n: usize, k: usize, ta: bool, tb: bool, acc: bool, par: bool) {
        let mut r = Rng::new((m * 131 + n * 17 + k) as u64);
        let mut int = |len: usize| {
            (0..len)
                .map(|_| r.below(7) as f32 - 3.0)
                .collect::<Vec<_>>()
        };
        let a = int(m * k);
        let b = int(k * n);
        let init = if acc {
            int(m * n)
        } else {
            vec![f32::NAN; m * n]
        };
        let mut want = if acc { init.clone() } else { vec![0.0; m * n] };
        reference::gemm(m, n, k, &a, ta, &b, tb, &mut want);
        let mut got = init;
        if par {
            par_sgemm(m, n, k, &a, ta, &b, tb, &mut got, acc);
        } else {
            sgemm(m, n, k, &a, ta, &b, tb, &mut got, acc);
        }
        assert_eq!(
            got, want,
            "m={m} n={n} k={k} ta={ta} tb={tb} acc={acc} par={par}"
        );
    }

    #[test]
    fn sgemm_matches_reference_on_awkward_sizes() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 7, 3),
            (5, 1, 9),
            (3, 5, 0),
            (17, 13, 29),
            (64, 65, 63),
            (130, 3, 70),
            (2, 200, 9),
        ] {
            for flags in 0..16 {
                let (ta, tb, acc, par) = (
                    flags & 1 != 0,
                    flags & 2 != 0,
                    flags & 4 != 0,
                    flags & 8 != 0,
                );
                check(m, n, k, ta, tb, acc, par);
            }
        }
    }
}
