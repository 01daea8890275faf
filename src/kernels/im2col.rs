//! im2col / col2im: turn a convolution into a matrix multiply.
//!
//! Layout: for one image `C×H×W` and a `kh×kw` window with stride `s` and zero padding `p`, the
//! column matrix has `C·kh·kw` rows, ordered `(c, ki, kj)` like the weight tensor `O×C×kh×kw`, and
//! `OH·OW` columns, ordered like the output pixels. Then `y (O×OH·OW) = w (O×C·kh·kw) · cols`.

use super::reference::Window;

/// Shapes: x `C×H×W` → cols `(C·kh·kw)×(OH·OW)`.
pub fn im2col(
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    win: Window,
    oh: usize,
    ow: usize,
    cols: &mut [f32],
) {
    let p = oh * ow;
    debug_assert_eq!(x.len(), c * h * w);
    debug_assert_eq!(cols.len(), c * win.kh * win.kw * p);
    let pad = win.pad as isize;
    for ch in 0..c {
        let plane = &x[ch * h * w..(ch + 1) * h * w];
        for ki in 0..win.kh {
            for kj in 0..win.kw {
                let row = ((ch * win.kh + ki) * win.kw + kj) * p;
                let out = &mut cols[row..row + p];
                for i in 0..oh {
                    let yy = (i * win.stride + ki) as isize - pad;
                    let dst = &mut out[i * ow..(i + 1) * ow];
                    if yy < 0 || yy >= h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[yy as usize * w..(yy as usize + 1) * w];
                    // Output columns j whose input column j*s + kj - pad lies inside [0, w).
                    let x0 = kj as isize - pad;
                    if win.stride == 1 {
                        let lo = (-x0).clamp(0, ow as isize) as usize;
                        let hi = ((w as isize - x0).clamp(0, ow as isize) as usize).max(lo);
                        dst[..lo].fill(0.0);
                        dst[hi..].fill(0.0);
                        let start = (lo as isize + x0) as usize;
                        dst[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
                    } else {
                        for (j, d) in dst.iter_mut().enumerate() {
                            let xx = (j * win.stride) as isize + x0;
                            *d = if xx >= 0 && xx < w as isize {
                                src[xx as usize]
                            } else {
                                0.0
                            };
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every column entry back onto the pixel it was copied from.
///
/// Shapes: cols `(C·kh·kw)×(OH·OW)` → dx `C×H×W` (accumulated into; zero it first).
pub fn col2im(
    cols: &[f32],
    (c, h, w): (usize, usize, usize),
    win: Window,
    oh: usize,
    ow: usize,
    dx: &mut [f32],
) {
    let p = oh * ow;
    let pad = win.pad as isize;
    for ch in 0..c {
        let plane = &mut dx[ch * h * w..(ch + 1) * h * w];
        for ki in 0..win.kh {
            for kj in 0..win.kw {
                let row = ((ch * win.kh + ki) * win.kw + kj) * p;
                let src = &cols[row..row + p];
                for i in 0..oh {
                    let yy = (i * win.stride + ki) as isize - pad;
                    if yy < 0 || yy >= h as isize {
                        continue;
                    }
                    let dst = &mut plane[yy as usize * w..(yy as usize + 1) * w];
                    let x0 = kj as isize - pad;
                    for j in 0..ow {
                        let xx = (j * win.stride) as isize + x0;
                        if xx >= 0 && xx < w as isize {
                            dst[xx as usize] += src[i * ow + j];
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{gemm::sgemm, reference};
    use crate::rng::Rng;

    /// im2col + GEMM against the direct convolution, on many awkward geometries.
    #[test]
    fn im2col_gemm_matches_direct_convolution() {
        let mut r = Rng::new(3);
        for &(c, h, w, o, kh, kw, stride, pad) in &[
            (1, 1, 1, 1, 1, 1, 1, 0),
            (1, 5, 7, 2, 3, 3, 1, 0),
            (3, 7, 5, 4, 3, 3, 2, 1),
            (2, 9, 9, 3, 5, 5, 1, 2),
            (2, 8, 6, 5, 2, 3, 2, 0),
            (4, 6, 11, 3, 3, 1, 3, 1),
            (1, 4, 4, 2, 3, 3, 1, 3),
        ] {
            let win = Window {
                kh,
                kw,
                stride,
                pad,
            };
            let (oh, ow) = (win.out_len(h, kh).unwrap(), win.out_len(w, kw).unwrap());
            let x: Vec<f32> = (0..c * h * w).map(|_| r.below(9) as f32 - 4.0).collect();
            let wt: Vec<f32> = (0..o * c * kh * kw)
                .map(|_| r.below(5) as f32 - 2.0)
                .collect();
            let mut want = vec![0.0; o * oh * ow];
            reference::conv2d(&x, (c, h, w), &wt, None, o, win, &mut want);
            let k = c * kh * kw;
            let mut cols = vec![f32::NAN; k * oh * ow];
            im2col(&x, (c, h, w), win, oh, ow, &mut cols);
            let mut got = vec![f32::NAN; o * oh * ow];
            sgemm(o, oh * ow, k, &wt, false, &cols, false, &mut got, false);
            assert_eq!(
                got, want,
                "c={c} h={h} w={w} k={kh}x{kw} s={stride} p={pad}"
            );
        }
    }

    /// col2im is the adjoint of im2col: <im2col(x), g> == <x, col2im(g)> for all x, g.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        let mut r = Rng::new(4);
        for &(c, h, w, kh, kw, stride, pad) in &[
            (1, 5, 7, 3, 3, 1, 0),
            (3, 7, 5, 3, 3, 2, 1),
            (2, 6, 9, 2, 4, 3, 2),
        ] {
            let win = Window {
                kh,
                kw,
                stride,
                pad,
            };
            let (oh, ow) = (win.out_len(h, kh).unwrap(), win.out_len(w, kw).unwrap());
            let x: Vec<f32> = (0..c * h * w).map(|_| r.below(9) as f32 - 4.0).collect();
            let g: Vec<f32> = (0..c * kh * kw * oh * ow)
                .map(|_| r.below(9) as f32 - 4.0)
                .collect();
            let mut cols = vec![0.0; g.len()];
            im2col(&x, (c, h, w), win, oh, ow, &mut cols);
            let mut dx = vec![0.0; x.len()];
            col2im(&g, (c, h, w), win, oh, ow, &mut dx);
            let lhs: f32 = cols.iter().zip(&g).map(|(a, b)| a * b).sum();
            let rhs: f32 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert_eq!(lhs, rhs);
        }
    }
}
