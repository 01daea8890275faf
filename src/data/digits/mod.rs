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

mod ink;
mod paper;
mod render;
mod stroke;
mod threshold;

use crate::data::image::{flatten_alpha, to_input};
use image::{DynamicImage, GenericImageView, RgbImage};
use ink::{find_ink, refine_crop};
use render::render;

/// Side of MNIST's images.
pub const SIDE: usize = 28;

/// Side of the box the digit is scaled into.
pub const BOX: usize = 20;

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
pub(super) fn luma([r, g, b]: [f32; 3]) -> f32 {
    0.2126 * r + 0.7152 * g + 0.0722 * b
}
