//! Steps 1, 2 and 5 of the preparation (see the module docs): the working resolution, the
//! paper's polarity, finding the ink (steps 1–4 together) and the closer look at a small digit.

use super::luma;
use super::paper::background;
use super::stroke::bbox;
use super::threshold::{hysteresis, median, otsu, remove_specks};
use image::RgbImage;
use image::imageops::{self, FilterType};

/// The working resolution's longer side lies in `WORK_MIN..=WORK_MAX`.
const WORK_MIN: u32 = 256;
const WORK_MAX: u32 = 512;

/// Least ink strength (0..255) that can count as ink, whatever the noise.
const MIN_CONTRAST: f32 = 24.0;

/// A digit spans at least this many working pixels; anything smaller is a speck on a blank page.
pub(super) const MIN_DIGIT: usize = 8;

/// Below this longer side (working pixels) the digit is looked at again on a crop of the original.
const REFINE_BELOW: usize = 160;

/// An RGB image as `f32` (0..255) at working resolution, with its scale from the source image
/// (working pixels per source pixel, per axis).
pub(super) struct Work {
    pub(super) w: usize,
    pub(super) h: usize,
    pub(super) sx: f32,
    pub(super) sy: f32,
    pub(super) px: Vec<[f32; 3]>,
}

/// The ink found in an image: a mask at working resolution.
pub(super) struct Ink {
    pub(super) w: usize,
    pub(super) h: usize,
    pub(super) sx: f32,
    pub(super) sy: f32,
    /// True when the paper was light (the ink dark).
    pub(super) light: bool,
    pub(super) mask: Vec<bool>,
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
pub(super) fn find_ink(rgb: &RgbImage, light: Option<bool>) -> Option<Ink> {
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

/// Step 5: when the ink's box is small at working resolution, a crop of the image around it (with
/// a margin of half the box's longer side) that would be analysed at least 1.5× finer.
pub(super) fn refine_crop(rgb: &RgbImage, ink: &Ink) -> Option<RgbImage> {
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
