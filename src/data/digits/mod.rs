//! Preparing a user's drawing or photo of a digit the way MNIST digits were prepared.
//!
//! An MNIST digit is 28×28 bytes, white ink (255) on black (0): the digit was scaled, aspect ratio
//! kept, to fit a 20×20 box with anti-aliasing, then "centered in a 28x28 image by computing the
//! center of mass of the pixels, and translating the image so as to position this point at the
//! center of the 28x28 field" (LeCun, Cortes and Burges, *The MNIST database*). Measured on the
//! training set, the centre of mass in pixel-index coordinates averages (14.0, 14.0) with a spread
//! of ±0.5 px (an integer translation), and the box's longer side is always 20 px.
//!
//! A user's digit is usually dark ink on light paper, of any size, anywhere on the page, in
//! coloured ink, under uneven light, JPEG-compressed. [`prepare_digit`] turns it into MNIST's form:
//! 1. composite transparency onto white and resample to a *working* resolution (longer side
//!    256..=512 px): large photos shrink for speed, small drawings grow so masks have smooth edges;
//! 2. decide the polarity: the border's median luma is the paper; if more pixels are much darker
//!    than it than much brighter, the ink is dark (and is treated as bright from here on);
//! 3. model the paper colour per channel on a grid of blocks (a high percentile for light paper),
//!    with a robust quadratic surface standing in for blocks spoiled by ink, interpolated
//!    bilinearly; *ink strength* is the largest per-channel difference from the paper in the ink's
//!    direction, so blue, red and yellow ink on white are found even where luma barely changes;
//! 4. threshold: Otsu's threshold, raised to a noise floor, with hysteresis (pixels above half the
//!    threshold join when connected to strong ink), then connected components far smaller than the
//!    largest, or far from it, are dropped as specks;
//! 5. if the digit is small on the page, repeat 1–4 (up to twice) on a crop around it, so a
//!    small digit in a large photo is not analysed at a few working pixels;
//! 6. normalise stroke width: estimate it as `8·area / (π·boundary edges)` (the `π/4` is Crofton's
//!    mean projection factor for edges counted on the pixel grid) and dilate or erode with a disc
//!    (by a Euclidean distance transform) so width / box side comes to MNIST's median of 0.125
//!    when it lies outside MNIST's 5–95 % range of 0.085–0.19 (measured with the same estimator on
//!    training digits upsampled ×10);
//! 7. crop to the ink, area-average the longer side down to 20 px, stretch so the strongest pixel is
//!    255, and translate by whole pixels so the centre of mass lands on (14, 14), clamped so the
//!    digit stays inside the 28×28 field.
//!
//! Data layout: every plane here is row-major `H×W` (index `y·W + x`), of `f32`, `bool` or
//! `[f32; 3]` (RGB, 0..255). The result is `1×28×28` bytes, as [`crate::data::image::to_input`]
//! would give for an MNIST image.

use crate::data::image::{flatten_alpha, to_input};
use image::imageops::{self, FilterType};
use image::{DynamicImage, GenericImageView, RgbImage};

/// Side of MNIST's images.
pub const SIDE: usize = 28;
/// Side of the box the digit is scaled into.
pub const BOX: usize = 20;
/// Where the centre of mass goes, in pixel-index coordinates (MNIST's training-set mean).
const CENTRE: f32 = 14.0;
/// The working resolution's longer side lies in `WORK_MIN..=WORK_MAX`.
const WORK_MIN: u32 = 256;
const WORK_MAX: u32 = 512;
/// Stroke width / box longer side: MNIST's median, and the range left alone (5th–95th percentile).
const STROKE_RATIO: f32 = 0.125;
const STROKE_LOW: f32 = 0.085;
const STROKE_HIGH: f32 = 0.19;
/// Least ink strength (0..255) that can count as ink, whatever the noise.
const MIN_CONTRAST: f32 = 24.0;
/// A digit spans at least this many working pixels; anything smaller is a speck on a blank page.
const MIN_DIGIT: usize = 8;
/// Below this longer side (working pixels) the digit is looked at again on a crop of the original.
const REFINE_BELOW: usize = 160;

/// Converts an image to a network input, preparing it as an MNIST digit when that applies.
///
/// With `digits && preprocess`, a `1×28×28` input, and an image that is not already MNIST-like
/// (see [`looks_like_mnist`]), uses [`prepare_digit`]; otherwise the plain conversion rule of
/// [`to_input`].
///
/// Shapes: image of any size → `C×H×W` (`input`).
pub fn prepare(img: &DynamicImage, input: [usize; 3], digits: bool, preprocess: bool) -> Vec<u8> {
    if digits && preprocess && input == [1, SIDE, SIDE] && !looks_like_mnist(img) {
        prepare_digit(img)
    } else {
        to_input(img, input)
    }
}

/// True when the image already is an MNIST-style digit: 28×28, grey (or RGB that looks grey), a
/// dark border (mean of the outer two-pixel frame at most 40) and bright ink (some pixel ≥ 128).
pub fn looks_like_mnist(img: &DynamicImage) -> bool {
    if img.dimensions() != (SIDE as u32, SIDE as u32) {
        return false;
    }
    let rgb = to_rgb(img);
    let mut chroma_sum = 0.0;
    let mut chroma_max = 0.0f32;
    let mut border = (0.0, 0usize);
    let mut brightest = 0.0f32;
    for (x, y, p) in rgb.enumerate_pixels() {
        let c = p.0.map(f32::from);
        let chroma = c[0].max(c[1]).max(c[2]) - c[0].min(c[1]).min(c[2]);
        chroma_sum += chroma;
        chroma_max = chroma_max.max(chroma);
        let l = luma(c);
        brightest = brightest.max(l);
        let (x, y) = (x as usize, y as usize);
        if x < 2 || y < 2 || x >= SIDE - 2 || y >= SIDE - 2 {
            border = (border.0 + l, border.1 + 1);
        }
    }
    let grey = chroma_sum / (SIDE * SIDE) as f32 <= 8.0 && chroma_max <= 64.0;
    grey && border.0 / border.1 as f32 <= 40.0 && brightest >= 128.0
}

/// Prepares a drawn or photographed digit as MNIST prepared its digits (see the module docs).
/// An image without ink (a blank page, a 0×0 image) gives all zeros.
///
/// Shapes: image of any size → `28×28` bytes, row-major.
pub fn prepare_digit(img: &DynamicImage) -> Vec<u8> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return vec![0; SIDE * SIDE];
    }
    let rgb = to_rgb(img);
    let Some(first) = find_ink(&rgb, None) else {
        return vec![0; SIDE * SIDE];
    };
    // Up to two closer looks (the first may have seen only part of a thin digit).
    let (mut ink, mut image) = (first, rgb);
    for _ in 0..2 {
        let Some(crop) = refine_crop(&image, &ink) else {
            break;
        };
        let Some(closer) = find_ink(&crop, Some(ink.light)) else {
            break;
        };
        (ink, image) = (closer, crop);
    }
    render(&ink.mask, ink.w, ink.h)
}

/// Composites transparency onto white; 16-bit and palette images become 8-bit RGB.
fn to_rgb(img: &DynamicImage) -> RgbImage {
    if img.color().has_alpha() {
        flatten_alpha(img)
    } else {
        img.to_rgb8()
    }
}

/// BT.709 luma, as `to_input` and the image crate's `to_luma8`.
fn luma([r, g, b]: [f32; 3]) -> f32 {
    0.2126 * r + 0.7152 * g + 0.0722 * b
}

/// An RGB image as `f32` (0..255) at working resolution, with its scale from the source image
/// (working pixels per source pixel, per axis).
struct Work {
    w: usize,
    h: usize,
    sx: f32,
    sy: f32,
    px: Vec<[f32; 3]>,
}

/// The ink found in an image: a mask at working resolution.
struct Ink {
    w: usize,
    h: usize,
    sx: f32,
    sy: f32,
    /// True when the paper was light (the ink dark).
    light: bool,
    mask: Vec<bool>,
}

/// Working pixels per source pixel for an image whose longer side is `long`.
fn working_scale(long: u32) -> f32 {
    let long = long.max(1) as f32;
    if long > WORK_MAX as f32 {
        WORK_MAX as f32 / long
    } else if long < WORK_MIN as f32 {
        WORK_MIN as f32 / long
    } else {
        1.0
    }
}

/// Resamples to working resolution (triangle filter, which area-averages when shrinking).
///
/// Shapes: `H×W` → `h×w` with `max(h, w)` in `WORK_MIN..=WORK_MAX`.
fn to_working(rgb: &RgbImage) -> Work {
    let (w, h) = rgb.dimensions();
    let s = working_scale(w.max(h));
    let nw = ((w as f32 * s).round() as u32).clamp(1, WORK_MAX);
    let nh = ((h as f32 * s).round() as u32).clamp(1, WORK_MAX);
    let scaled;
    let src = if (nw, nh) == (w, h) {
        rgb
    } else {
        scaled = imageops::resize(rgb, nw, nh, FilterType::Triangle);
        &scaled
    };
    Work {
        w: nw as usize,
        h: nh as usize,
        sx: nw as f32 / w as f32,
        sy: nh as f32 / h as f32,
        px: src.pixels().map(|p| p.0.map(f32::from)).collect(),
    }
}

/// Steps 1–4: finds the ink in an image, or `None` when there is nothing digit-sized.
/// `light` fixes the polarity instead of deciding it (used on crops, whose border may be ink).
fn find_ink(rgb: &RgbImage, light: Option<bool>) -> Option<Ink> {
    let work = to_working(rgb);
    let (w, h) = (work.w, work.h);
    let light = light.unwrap_or_else(|| light_paper(&work));
    let bg = background(&work, light);
    // Ink strength, signed: positive where some channel departs from the paper towards the ink.
    let sign = if light { 1.0 } else { -1.0 };
    let strength: Vec<f32> = work
        .px
        .iter()
        .zip(&bg)
        .map(|(p, b)| {
            (0..3)
                .map(|c| sign * (b[c] - p[c]))
                .fold(f32::MIN, f32::max)
        })
        .collect();
    // Noise: the spread of the (mostly paper) strengths, by the median absolute deviation.
    let mut scratch = strength.clone();
    let centre = median(&mut scratch);
    scratch
        .iter_mut()
        .zip(&strength)
        .for_each(|(d, s)| *d = (s - centre).abs());
    let sigma = 1.4826 * median(&mut scratch);
    let floor = (centre + 6.0 * sigma).max(MIN_CONTRAST);
    let strong = otsu(&strength).max(floor);
    let weak = (0.5 * strong).max(floor);
    let mask = hysteresis(&strength, w, h, strong, weak);
    let mask = remove_specks(&mask, w, h)?;
    Some(Ink {
        w,
        h,
        sx: work.sx,
        sy: work.sy,
        light,
        mask,
    })
}

/// Step 2: true when the paper is light. The paper's luma is the border's median; the ink is
/// whichever side of it holds more pixels far (over 32 levels) from it; a tie (a blank page)
/// goes by the paper's own brightness.
fn light_paper(work: &Work) -> bool {
    let (w, h) = (work.w, work.h);
    let frame = (w.min(h) / 20).max(1);
    let mut border: Vec<f32> = Vec::new();
    for y in 0..h {
        for x in 0..w {
            if x < frame || y < frame || x >= w - frame || y >= h - frame {
                border.push(luma(work.px[y * w + x]));
            }
        }
    }
    let paper = median(&mut border);
    let (mut darker, mut brighter) = (0usize, 0usize);
    for &p in &work.px {
        let l = luma(p);
        darker += (l < paper - 32.0) as usize;
        brighter += (l > paper + 32.0) as usize;
    }
    if darker != brighter {
        darker > brighter
    } else {
        paper >= 128.0
    }
}

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
fn background(work: &Work, light: bool) -> Vec<[f32; 3]> {
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

/// The `q`-quantile (0..=1) of `values`, reordering them; 0 for an empty slice.
fn percentile(values: &mut [f32], q: f32) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    let k = ((values.len() - 1) as f32 * q).round() as usize;
    *values.select_nth_unstable_by(k, f32::total_cmp).1
}

fn median(values: &mut [f32]) -> f32 {
    percentile(values, 0.5)
}

/// Otsu's threshold over strengths clipped to 0..=255 in 256 bins: the level maximising the
/// between-class variance `w0·w1·(μ0 − μ1)²`. Values above the returned level are the upper class.
fn otsu(values: &[f32]) -> f32 {
    let mut hist = [0.0f64; 256];
    for &v in values {
        hist[v.clamp(0.0, 255.0) as usize] += 1.0;
    }
    let total: f64 = hist.iter().sum();
    let sum_all: f64 = hist.iter().enumerate().map(|(i, n)| i as f64 * n).sum();
    let (mut w0, mut sum0, mut best, mut level) = (0.0, 0.0, -1.0, 0usize);
    for (t, &n) in hist.iter().enumerate() {
        w0 += n;
        sum0 += t as f64 * n;
        let w1 = total - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (sum0 / w0, (sum_all - sum0) / w1);
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best {
            best = between;
            level = t;
        }
    }
    level as f32 + 1.0
}

/// The 8-neighbours of `i` in a `w×h` plane.
fn neighbours(i: usize, w: usize, h: usize) -> impl Iterator<Item = usize> {
    let (x, y) = ((i % w) as isize, (i / w) as isize);
    (-1..=1isize)
        .flat_map(move |dy| (-1..=1isize).map(move |dx| (x + dx, y + dy)))
        .filter(move |&(nx, ny)| {
            (nx, ny) != (x, y) && nx >= 0 && ny >= 0 && nx < w as isize && ny < h as isize
        })
        .map(move |(nx, ny)| ny as usize * w + nx as usize)
}

/// Pixels at or above `strong`, grown through 8-connected pixels at or above `weak`.
fn hysteresis(strength: &[f32], w: usize, h: usize, strong: f32, weak: f32) -> Vec<bool> {
    let mut mask = vec![false; w * h];
    let mut stack: Vec<usize> = Vec::new();
    for (i, &s) in strength.iter().enumerate() {
        if s >= strong {
            mask[i] = true;
            stack.push(i);
        }
    }
    while let Some(i) = stack.pop() {
        for j in neighbours(i, w, h) {
            if !mask[j] && strength[j] >= weak {
                mask[j] = true;
                stack.push(j);
            }
        }
    }
    mask
}

/// An 8-connected component: its pixel count and bounding box `[x0, y0, x1, y1)`.
#[derive(Clone, Copy, Debug)]
struct Component {
    area: usize,
    bbox: [usize; 4],
}

/// Labels the 8-connected components of a mask (label `u32::MAX` = background).
fn components(mask: &[bool], w: usize, h: usize) -> (Vec<u32>, Vec<Component>) {
    let mut labels = vec![u32::MAX; w * h];
    let mut found = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !mask[start] || labels[start] != u32::MAX {
            continue;
        }
        let label = found.len() as u32;
        let mut c = Component {
            area: 0,
            bbox: [usize::MAX, usize::MAX, 0, 0],
        };
        labels[start] = label;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            c.area += 1;
            c.bbox = [
                c.bbox[0].min(x),
                c.bbox[1].min(y),
                c.bbox[2].max(x + 1),
                c.bbox[3].max(y + 1),
            ];
            for j in neighbours(i, w, h) {
                if mask[j] && labels[j] == u32::MAX {
                    labels[j] = label;
                    stack.push(j);
                }
            }
        }
        found.push(c);
    }
    (labels, found)
}

/// Drops specks: components small next to the largest one, the more so the further they lie from
/// it (gap between boxes, in units of the largest box's longer side `L`): within 0.1·L a piece of
/// 1 % of the largest area stays (a broken stroke), within 0.5·L one of 10 %, beyond that 40 %.
/// `None` when even the largest component is too small to be a digit.
fn remove_specks(mask: &[bool], w: usize, h: usize) -> Option<Vec<bool>> {
    let (labels, comps) = components(mask, w, h);
    let main = *comps.iter().max_by_key(|c| c.area)?;
    let [mx0, my0, mx1, my1] = main.bbox;
    let long = (mx1 - mx0).max(my1 - my0);
    if long < MIN_DIGIT || main.area < 2 * MIN_DIGIT {
        return None;
    }
    let keep: Vec<bool> = comps
        .iter()
        .map(|c| {
            let [x0, y0, x1, y1] = c.bbox;
            let gap_x = x0.saturating_sub(mx1).max(mx0.saturating_sub(x1));
            let gap_y = y0.saturating_sub(my1).max(my0.saturating_sub(y1));
            let gap = gap_x.max(gap_y) as f32 / long as f32;
            let share = c.area as f32 / main.area as f32;
            if gap <= 0.1 {
                share >= 0.01 && c.area >= 2
            } else if gap <= 0.5 {
                share >= 0.1
            } else {
                share >= 0.4
            }
        })
        .collect();
    Some(
        labels
            .iter()
            .map(|&l| l != u32::MAX && keep[l as usize])
            .collect(),
    )
}

/// Step 5: when the ink's box is small at working resolution, a crop of the image around it (with
/// a margin of half the box's longer side) that would be analysed at least 1.5× finer.
fn refine_crop(rgb: &RgbImage, ink: &Ink) -> Option<RgbImage> {
    let [x0, y0, x1, y1] = bbox(&ink.mask, ink.w, ink.h)?;
    if (x1 - x0).max(y1 - y0) >= REFINE_BELOW {
        return None;
    }
    let (w, h) = rgb.dimensions();
    let (ox0, ox1) = (x0 as f32 / ink.sx, x1 as f32 / ink.sx);
    let (oy0, oy1) = (y0 as f32 / ink.sy, y1 as f32 / ink.sy);
    // Thin strokes can fade below the threshold at a coarse scale, leaving only part of the
    // digit: the margin is also at least 16 working pixels.
    let margin = (0.5 * (ox1 - ox0).max(oy1 - oy0)).max(16.0 / ink.sx.min(ink.sy)) + 2.0;
    let cx0 = (ox0 - margin).floor().max(0.0) as u32;
    let cy0 = (oy0 - margin).floor().max(0.0) as u32;
    let cx1 = ((ox1 + margin).ceil() as u32).min(w);
    let cy1 = ((oy1 + margin).ceil() as u32).min(h);
    if cx1 <= cx0 || cy1 <= cy0 {
        return None;
    }
    let (cw, ch) = (cx1 - cx0, cy1 - cy0);
    if working_scale(cw.max(ch)) < 1.5 * working_scale(w.max(h)) {
        return None;
    }
    Some(imageops::crop_imm(rgb, cx0, cy0, cw, ch).to_image())
}

/// Bounding box `[x0, y0, x1, y1)` of the true pixels, `None` if there are none.
fn bbox(mask: &[bool], w: usize, h: usize) -> Option<[usize; 4]> {
    let mut b = [usize::MAX, usize::MAX, 0, 0];
    for y in 0..h {
        for x in 0..w {
            if mask[y * w + x] {
                b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
            }
        }
    }
    (b[0] != usize::MAX).then_some(b)
}

/// Mean stroke width of a mask, `8·area / (π·edges)`, where `edges` counts the sides of true
/// pixels that face a false pixel (or the plane's edge). A band of width `s` and length `ℓ` has
/// area `s·ℓ` and perimeter `2ℓ`; counted on the grid, a perimeter at a random angle is `4/π` times
/// longer on average (Crofton), hence the `π/4`.
fn stroke_width(mask: &[bool], w: usize, h: usize) -> f32 {
    let at = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && (x as usize) < w
            && (y as usize) < h
            && mask[y as usize * w + x as usize]
    };
    let (mut area, mut edges) = (0usize, 0usize);
    for y in 0..h as isize {
        for x in 0..w as isize {
            if at(x, y) {
                area += 1;
                edges += [(1, 0), (-1, 0), (0, 1), (0, -1)]
                    .iter()
                    .filter(|(dx, dy)| !at(x + dx, y + dy))
                    .count();
            }
        }
    }
    if edges == 0 {
        0.0
    } else {
        8.0 * area as f32 / (std::f32::consts::PI * edges as f32)
    }
}

/// Squared Euclidean distance from every pixel to the nearest `true` pixel of `feature`
/// (`f32::INFINITY` if there is none), by Felzenszwalb and Huttenlocher's lower envelope of
/// parabolas, one pass along rows and one along columns.
fn distance_sq(feature: &[bool], w: usize, h: usize) -> Vec<f32> {
    let mut d: Vec<f32> = feature
        .iter()
        .map(|&f| if f { 0.0 } else { f32::INFINITY })
        .collect();
    let mut line = Vec::new();
    for y in 0..h {
        line.clear();
        line.extend_from_slice(&d[y * w..(y + 1) * w]);
        let out = envelope(&line);
        d[y * w..(y + 1) * w].copy_from_slice(&out);
    }
    for x in 0..w {
        line.clear();
        line.extend((0..h).map(|y| d[y * w + x]));
        for (y, v) in envelope(&line).into_iter().enumerate() {
            d[y * w + x] = v;
        }
    }
    d
}

/// One-dimensional squared distance transform: `out[q] = min_p (q − p)² + f[p]`.
fn envelope(f: &[f32]) -> Vec<f32> {
    let n = f.len();
    let finite: Vec<usize> = (0..n).filter(|&p| f[p].is_finite()).collect();
    if finite.is_empty() {
        return vec![f32::INFINITY; n];
    }
    // v: parabola vertices in the envelope; z: where each takes over from the previous one.
    let mut v: Vec<usize> = Vec::with_capacity(finite.len());
    let mut z: Vec<f32> = Vec::with_capacity(finite.len() + 1);
    let cross = |p: usize, q: usize| {
        ((f[q] + (q * q) as f32) - (f[p] + (p * p) as f32)) / (2.0 * (q as f32 - p as f32))
    };
    for &q in &finite {
        while let Some(&p) = v.last() {
            let s = cross(p, q);
            if v.len() > 1 && s <= z[z.len() - 1] {
                v.pop();
                z.pop();
            } else {
                z.push(s);
                break;
            }
        }
        if v.is_empty() {
            z.clear();
            z.push(f32::NEG_INFINITY);
        }
        v.push(q);
    }
    z.push(f32::INFINITY);
    // Now z[k] is where parabola v[k] starts (z[0] = −∞) and z[k + 1] where it ends.
    let mut k = 0;
    (0..n)
        .map(|q| {
            while z[k + 1] < q as f32 {
                k += 1;
            }
            let d = q as f32 - v[k] as f32;
            d * d + f[v[k]]
        })
        .collect()
}

/// Dilation by a disc of radius `r`: pixels within `r` of the mask.
fn dilate(mask: &[bool], w: usize, h: usize, r: f32) -> Vec<bool> {
    distance_sq(mask, w, h)
        .into_iter()
        .map(|d| d <= r * r)
        .collect()
}

/// Erosion by a disc of radius `r`: mask pixels further than `r` from the background (beyond the
/// plane's edge counts as background, so callers pad the mask by a pixel).
fn erode(mask: &[bool], w: usize, h: usize, r: f32) -> Vec<bool> {
    let background: Vec<bool> = mask.iter().map(|&m| !m).collect();
    distance_sq(&background, w, h)
        .into_iter()
        .map(|d| d > r * r)
        .collect()
}

/// The change of stroke width, as a disc radius (positive: dilate, negative: erode), that brings
/// width / box side to [`STROKE_RATIO`] when it lies outside MNIST's usual range; both the width
/// and the box side grow by `2r`, hence `r = (ρ·L − s) / (2·(1 − ρ))`.
fn stroke_radius(width: f32, long: f32) -> f32 {
    let ratio = width / long;
    if (STROKE_LOW..=STROKE_HIGH).contains(&ratio) || long <= 0.0 {
        0.0
    } else {
        (STROKE_RATIO * long - width) / (2.0 * (1.0 - STROKE_RATIO))
    }
}

/// Steps 6–7: from a mask at working resolution to the 28×28 bytes.
fn render(mask: &[bool], w: usize, h: usize) -> Vec<u8> {
    let Some([x0, y0, x1, y1]) = bbox(mask, w, h) else {
        return vec![0; SIDE * SIDE];
    };
    let width = stroke_width(mask, w, h);
    let r = stroke_radius(width, (x1 - x0).max(y1 - y0) as f32);
    // Crop with room for the dilation (and one background pixel for the erosion).
    let pad = r.max(0.0).ceil() as usize + 1;
    let (cw, ch) = (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad);
    let mut crop = vec![false; cw * ch];
    for y in y0..y1 {
        for x in x0..x1 {
            crop[(y - y0 + pad) * cw + (x - x0 + pad)] = mask[y * w + x];
        }
    }
    if r >= 0.5 {
        crop = dilate(&crop, cw, ch, r);
    } else if r <= -0.5 {
        // Erosion can wipe out strokes thinner than the average: give up on it if far more goes
        // than the thinning itself would remove.
        let area = crop.iter().filter(|&&m| m).count() as f32;
        let eroded = erode(&crop, cw, ch, -r);
        let left = eroded.iter().filter(|&&m| m).count() as f32;
        if left >= 0.5 * area * (width + 2.0 * r) / width {
            crop = eroded;
        }
    }
    let Some([bx0, by0, bx1, by1]) = bbox(&crop, cw, ch) else {
        return vec![0; SIDE * SIDE];
    };
    let (bw, bh) = (bx1 - bx0, by1 - by0);
    let plane: Vec<f32> = (by0..by1)
        .flat_map(|y| (bx0..bx1).map(move |x| (y, x)))
        .map(|(y, x)| if crop[y * cw + x] { 1.0 } else { 0.0 })
        .collect();
    let (dw, dh) = if bw >= bh {
        (
            BOX,
            ((bh * BOX) as f32 / bw as f32).round().max(1.0) as usize,
        )
    } else {
        (
            ((bw * BOX) as f32 / bh as f32).round().max(1.0) as usize,
            BOX,
        )
    };
    let small = resize_area(&plane, bw, bh, dw, dh);
    centre(&small, dw, dh)
}

/// For each destination index, the source indices it covers and their weights (summing to 1),
/// when `src` samples are averaged down (or spread up) to `dst`: destination sample `j` covers
/// `[j·src/dst, (j+1)·src/dst)` in source units.
fn area_weights(src: usize, dst: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|j| {
            let (a, b) = (j as f64 * scale, (j + 1) as f64 * scale);
            (a.floor() as usize..(b.ceil() as usize).min(src))
                .filter_map(|i| {
                    let overlap = (b.min(i as f64 + 1.0) - a.max(i as f64)) / scale;
                    (overlap > 1e-9).then_some((i, overlap as f32))
                })
                .collect()
        })
        .collect()
}

/// Resizes a plane by area averaging (each output pixel is the mean of the source area it covers).
///
/// Shapes: `sh×sw` → `dh×dw`.
fn resize_area(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
    let (wx, wy) = (area_weights(sw, dw), area_weights(sh, dh));
    let mut rows = vec![0.0f32; sh * dw]; // horizontal pass: sh×dw
    for y in 0..sh {
        for (x, ws) in wx.iter().enumerate() {
            rows[y * dw + x] = ws.iter().map(|&(i, k)| k * src[y * sw + i]).sum();
        }
    }
    let mut out = vec![0.0f32; dh * dw];
    for (y, ws) in wy.iter().enumerate() {
        for x in 0..dw {
            out[y * dw + x] = ws.iter().map(|&(i, k)| k * rows[i * dw + x]).sum();
        }
    }
    out
}

/// Stretches a digit so its strongest pixel is 255 and places it in the 28×28 field, translated by
/// whole pixels so its centre of mass is nearest (14, 14), clamped to stay inside.
///
/// Shapes: `dh×dw` (each ≤ 28) → `28×28` bytes.
fn centre(digit: &[f32], dw: usize, dh: usize) -> Vec<u8> {
    let mut out = vec![0u8; SIDE * SIDE];
    let peak = digit.iter().copied().fold(0.0f32, f32::max);
    if peak <= 0.0 {
        return out;
    }
    let (mut mass, mut mx, mut my) = (0.0f64, 0.0f64, 0.0f64);
    for (i, &v) in digit.iter().enumerate() {
        mass += v as f64;
        mx += v as f64 * (i % dw) as f64;
        my += v as f64 * (i / dw) as f64;
    }
    let shift = |com: f64, len: usize| {
        ((CENTRE as f64 - com / mass).round().max(0.0) as usize).min(SIDE - len)
    };
    let (ox, oy) = (shift(mx, dw), shift(my, dh));
    for y in 0..dh {
        for x in 0..dw {
            out[(y + oy) * SIDE + x + ox] = (digit[y * dw + x] / peak * 255.0).round() as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute-force squared distance, the reference for the two-pass transform.
    fn distance_sq_naive(feature: &[bool], w: usize, h: usize) -> Vec<f32> {
        (0..w * h)
            .map(|i| {
                let (x, y) = ((i % w) as f32, (i / w) as f32);
                (0..w * h)
                    .filter(|&j| feature[j])
                    .map(|j| {
                        let (u, v) = ((j % w) as f32, (j / w) as f32);
                        (x - u) * (x - u) + (y - v) * (y - v)
                    })
                    .fold(f32::INFINITY, f32::min)
            })
            .collect()
    }

    #[test]
    fn distance_transform_matches_brute_force_on_awkward_sizes() {
        let mut seed = 12345u64;
        for (w, h) in [(1, 1), (1, 7), (9, 1), (5, 3), (13, 11), (17, 4)] {
            for density in [0u64, 3, 30, 90] {
                let feature: Vec<bool> = (0..w * h)
                    .map(|_| {
                        seed = seed
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        (seed >> 33) % 100 < density
                    })
                    .collect();
                let fast = distance_sq(&feature, w, h);
                let slow = distance_sq_naive(&feature, w, h);
                assert_eq!(fast, slow, "{w}×{h}, density {density}%");
            }
        }
    }

    #[test]
    fn area_resize_averages_blocks_and_keeps_the_mean() {
        // 4×2 → 2×1: each output is the mean of a 2×2 block (worked by hand).
        let src = [1.0, 3.0, 0.0, 0.0, 5.0, 7.0, 4.0, 8.0];
        assert_eq!(resize_area(&src, 4, 2, 2, 1), vec![4.0, 3.0]);
        // 3 → 2: output 0 covers source [0, 1.5): (1·a + 0.5·b) / 1.5.
        let out = resize_area(&[3.0, 6.0, 9.0], 3, 1, 2, 1);
        assert!(
            (out[0] - 4.0).abs() < 1e-5 && (out[1] - 8.0).abs() < 1e-5,
            "{out:?}"
        );
        // Any size: the mean is preserved.
        let src: Vec<f32> = (0..37 * 23).map(|i| ((i * 7919) % 13) as f32).collect();
        let out = resize_area(&src, 37, 23, 20, 12);
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!((mean(&src) - mean(&out)).abs() < 1e-3);
    }

    #[test]
    fn stroke_width_of_a_bar_and_a_disc() {
        // A 6×200 bar: 8·1200 / (π·412) = 7.4 (a straight axis-aligned band reads 4/π wide).
        let (w, h) = (20, 220);
        let mask: Vec<bool> = (0..w * h)
            .map(|i| (7..13).contains(&(i % w)) && (10..210).contains(&(i / w)))
            .collect();
        let s = stroke_width(&mask, w, h);
        assert!(
            (s - 8.0 * 1200.0 / (std::f32::consts::PI * 412.0)).abs() < 1e-3,
            "{s}"
        );
        // Dilating by 2 widens the bar to 10 px.
        let wider = dilate(&mask, w, h, 2.0);
        let row: usize = (0..w).filter(|&x| wider[100 * w + x]).count();
        assert_eq!(row, 10);
        let thinner = erode(&mask, w, h, 1.0);
        assert_eq!((0..w).filter(|&x| thinner[100 * w + x]).count(), 4);
    }

    #[test]
    fn otsu_splits_two_clusters() {
        let mut v = vec![10.0; 900];
        v.extend(vec![200.0; 100]);
        let t = otsu(&v);
        assert!(t > 10.0 && t <= 200.0, "{t}");
    }

    #[test]
    fn specks_far_from_the_digit_are_dropped() {
        let (w, h) = (100, 100);
        let mut mask = vec![false; w * h];
        for y in 20..60 {
            for x in 30..36 {
                mask[y * w + x] = true; // the digit: a 6×40 bar, area 240
            }
        }
        for (x, y) in [(90, 90), (91, 90), (90, 91), (91, 91)] {
            mask[y * w + x] = true; // a speck of 4 px, far away
        }
        mask[61 * w + 33] = true; // a 1-px piece next to the bar: too small (< 2 px) to keep
        mask[62 * w + 40] = true; // ...and another
        let kept = remove_specks(&mask, w, h).unwrap();
        assert_eq!(bbox(&kept, w, h), Some([30, 20, 36, 60]));
        assert!(remove_specks(&[false; 16], 4, 4).is_none());
    }

    #[test]
    fn centre_puts_the_centre_of_mass_on_14_14() {
        // A single bright pixel in a 20×20 box lands exactly on (14, 14): shifted by (4, 7).
        let mut digit = vec![0.0; 400];
        digit[7 * 20 + 10] = 0.5;
        let out = centre(&digit, 20, 20);
        assert_eq!(out[14 * SIDE + 14], 255);
        assert_eq!(out.iter().filter(|&&v| v > 0).count(), 1);
        // Shifts are clamped to 0..=8 so the box stays inside: (19, 3) moves by (0, 8).
        let mut digit = vec![0.0; 400];
        digit[3 * 20 + 19] = 1.0;
        assert_eq!(centre(&digit, 20, 20)[11 * SIDE + 19], 255);
    }

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
