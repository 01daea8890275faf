//! Step 3: a model of the paper's colour under uneven light, and the robust surface fit that
//! stands in for blocks spoiled by ink.

use super::ink::Work;
use super::luma;
use super::threshold::{median, percentile};

/// Step 3: the paper colour at every pixel.
///
/// The image is cut into up to 8×8 blocks; each block's paper colour is a per-channel percentile
/// (90th on light paper, 10th on dark) that ignores ink covering under 90 % of the block. A
/// quadratic surface is fitted per channel to the blocks, repeatedly dropping blocks that lie far
/// on the ink's side of it; dropped blocks take the surface's value, kept blocks their own (so a
/// shadow that is not quadratic is still followed). Blocks with little spread and nearer paper than
/// ink are never dropped: they are plain paper in a shadow. Values are interpolated bilinearly
/// between block centres.
///
/// Shapes: `h×w` RGB → `h×w` RGB.
pub(super) fn background(work: &Work, light: bool) -> Vec<[f32; 3]> {
    let (w, h) = (work.w, work.h);
    let (nx, ny) = ((w / 32).clamp(1, 8), (h / 32).clamp(1, 8));
    let q = if light { 0.9 } else { 0.1 };
    let sign = if light { 1.0 } else { -1.0 };
    let mut blocks: Vec<[f32; 3]> = Vec::with_capacity(nx * ny);
    let mut spread: Vec<f32> = Vec::with_capacity(nx * ny);
    let mut features: Vec<[f64; 6]> = Vec::with_capacity(nx * ny);
    let mut values: [Vec<f32>; 3] = Default::default();
    let mut lumas: Vec<f32> = Vec::new();
    for by in 0..ny {
        let (y0, y1) = (by * h / ny, (by + 1) * h / ny);
        for bx in 0..nx {
            let (x0, x1) = (bx * w / nx, (bx + 1) * w / nx);
            values.iter_mut().for_each(Vec::clear);
            lumas.clear();
            for y in y0..y1 {
                for &p in &work.px[y * w + x0..y * w + x1] {
                    (0..3).for_each(|c| values[c].push(p[c]));
                    lumas.push(luma(p));
                }
            }
            blocks.push([0, 1, 2].map(|c| percentile(&mut values[c], q)));
            spread.push(percentile(&mut lumas, 0.95) - percentile(&mut lumas, 0.05));
            // Block centre in [-1, 1]².
            let u = ((x0 + x1) as f64 / w as f64) - 1.0;
            let v = ((y0 + y1) as f64 / h as f64) - 1.0;
            features.push([1.0, u, v, u * u, u * v, v * v]);
        }
    }

    // A block with little spread is plain paper (perhaps in shadow) unless it is nearer the
    // darkest ink than the brightest paper: then it lies wholly inside a thick stroke.
    let n = blocks.len();
    let block_luma: Vec<f32> = blocks.iter().map(|&b| sign * luma(b)).collect();
    let paper = block_luma.iter().copied().fold(f32::MIN, f32::max);
    let ink = work
        .px
        .iter()
        .map(|&p| sign * luma(p))
        .fold(f32::MAX, f32::min);
    let uniform: Vec<bool> = (0..n)
        .map(|i| spread[i] < 24.0 && block_luma[i] > 0.5 * (paper + ink))
        .collect();
    // Robust quadratic fit, one surface per channel, one inlier set for all three, starting from
    // the half of the blocks nearest the paper.
    let middle = median(&mut block_luma.clone());
    let mut inlier: Vec<bool> = block_luma.iter().map(|&l| l >= middle).collect();
    let mut fitted = vec![[0.0f32; 3]; n];
    for _ in 0..6 {
        for c in 0..3 {
            let ys: Vec<f64> = blocks.iter().map(|b| b[c] as f64).collect();
            let coef = fit_weighted(&features, &ys, &inlier);
            for (f, feat) in fitted.iter_mut().zip(&features) {
                f[c] = feat.iter().zip(&coef).map(|(a, b)| a * b).sum::<f64>() as f32;
            }
        }
        let mut next = vec![true; n];
        for c in 0..3 {
            // Residual towards the ink: positive when a block is darker (light paper) than the fit.
            let r: Vec<f32> = (0..n)
                .map(|i| sign * (fitted[i][c] - blocks[i][c]))
                .collect();
            let mut abs: Vec<f32> = (0..n).filter(|&i| inlier[i]).map(|i| r[i].abs()).collect();
            let scale = (1.4826 * median(&mut abs)).max(1.0);
            for i in 0..n {
                next[i] &= uniform[i] || r[i] <= 2.5 * scale + 3.0;
            }
        }
        if next == inlier || next.iter().filter(|&&k| k).count() < (n / 4).max(1) {
            break;
        }
        inlier = next;
    }
    let grid: Vec<[f32; 3]> = (0..n)
        .map(|i| if inlier[i] { blocks[i] } else { fitted[i] })
        .collect();

    // Bilinear interpolation between block centres, held constant beyond the outer centres.
    let axis = |i: usize, len: usize, blocks: usize| {
        let g =
            ((i as f32 + 0.5) / len as f32 * blocks as f32 - 0.5).clamp(0.0, (blocks - 1) as f32);
        let lo = g.floor() as usize;
        (lo, (lo + 1).min(blocks - 1), g - lo as f32)
    };
    let xs: Vec<_> = (0..w).map(|x| axis(x, w, nx)).collect();
    let mut out = Vec::with_capacity(w * h);
    for y in 0..h {
        let (j0, j1, ty) = axis(y, h, ny);
        for &(i0, i1, tx) in &xs {
            let at = |j: usize, i: usize| grid[j * nx + i];
            let (a, b, c, d) = (at(j0, i0), at(j0, i1), at(j1, i0), at(j1, i1));
            out.push([0, 1, 2].map(|k| {
                let top = a[k] + (b[k] - a[k]) * tx;
                let bottom = c[k] + (d[k] - c[k]) * tx;
                top + (bottom - top) * ty
            }));
        }
    }
    out
}

/// Weighted least squares (weights 0 or 1) for `y ≈ features · coef`, with a small ridge on the
/// non-constant terms so that a degenerate grid (one row of blocks) still has a solution.
fn fit_weighted(features: &[[f64; 6]], ys: &[f64], keep: &[bool]) -> [f64; 6] {
    let mut a = [[0.0f64; 7]; 6]; // the normal equations, augmented with the right-hand side
    for ((f, &y), _) in features.iter().zip(ys).zip(keep).filter(|(_, k)| **k) {
        for i in 0..6 {
            for j in 0..6 {
                a[i][j] += f[i] * f[j];
            }
            a[i][6] += f[i] * y;
        }
    }
    for (i, row) in a.iter_mut().enumerate().skip(1) {
        row[i] += 1e-3 * (1.0 + ys.len() as f64);
    }
    a[0][0] += 1e-9;
    // Gaussian elimination with partial pivoting.
    for col in 0..6 {
        let pivot = (col..6)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        let d = a[col][col];
        if d.abs() < 1e-12 {
            continue;
        }
        let pivot_row = a[col];
        for (r, row) in a.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / d;
                for (x, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    std::array::from_fn(|i| {
        if a[i][i].abs() < 1e-12 {
            0.0
        } else {
            a[i][6] / a[i][i]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quadratic_fit_recovers_a_surface() {
        let coef = [100.0, 10.0, -5.0, 3.0, 2.0, -1.0];
        let mut feats = Vec::new();
        let mut ys = Vec::new();
        for i in 0..8 {
            for j in 0..8 {
                let (u, v) = (i as f64 / 3.5 - 1.0, j as f64 / 3.5 - 1.0);
                let f = [1.0, u, v, u * u, u * v, v * v];
                ys.push(f.iter().zip(&coef).map(|(a, b)| a * b).sum());
                feats.push(f);
            }
        }
        let fit = fit_weighted(&feats, &ys, &[true; 64]);
        for (a, b) in fit.iter().zip(&coef) {
            assert!((a - b).abs() < 0.05, "{fit:?}");
        }
    }
}
