//! Step 7: the mask cropped, area-averaged into MNIST's 20×20 box and centred by its centre of
//! mass in the 28×28 field.

use super::stroke::{bbox, dilate, erode, stroke_radius, stroke_width};
use super::{BOX, SIDE};

/// Where the centre of mass goes, in pixel-index coordinates (MNIST's training-set mean).
const CENTRE: f32 = 14.0;

/// Steps 6–7: from a mask at working resolution to the 28×28 bytes.
pub(super) fn render(mask: &[bool], w: usize, h: usize) -> Vec<u8> {
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
pub(super) fn centre(digit: &[f32], dw: usize, dh: usize) -> Vec<u8> {
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
}
