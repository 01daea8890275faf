//! Decoding image files and converting them to a network's input shape.
//!
//! The conversion rule (used by image-folder datasets and by `cnn predict`):
//! - transparency is composited onto white (a drawing on a transparent page reads as ink on paper);
//! - 1 input channel: luma (ITU-R BT.709 weights, as the `image` crate's `to_luma8`); 3 channels:
//!   RGB, a grey image repeated in each channel; 16-bit samples are scaled to 8 bits;
//! - an image of another size is resized to exactly `H×W` with a triangle (bilinear) filter.

use anyhow::{Context, Result, bail};
use image::{DynamicImage, GenericImageView, ImageReader, Limits};
use std::path::Path;

/// Largest image accepted, in pixels (width × height): 64 megapixels, far above any photo a
/// classifier needs, and low enough that decoding stays within a few hundred MB.
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// Decodes an image file (format from its contents), refusing images over [`MAX_PIXELS`].
pub fn decode(path: &Path) -> Result<DynamicImage> {
    let reader = ImageReader::open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("{}: cannot read", path.display()))?;
    if reader.format().is_none() {
        bail!(
            "{}: not an image in a known format (PNG, JPEG, BMP, GIF, WebP)",
            path.display()
        );
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| anyhow::anyhow!("{}: not a readable image: {e}", path.display()))?;
    if w as u64 * h as u64 > MAX_PIXELS {
        bail!(
            "{}: image is {w}×{h}, over the limit of {MAX_PIXELS} pixels",
            path.display()
        );
    }
    let mut reader = ImageReader::open(path)?.with_guessed_format()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(MAX_PIXELS * 16);
    reader.limits(limits);
    reader
        .decode()
        .map_err(|e| anyhow::anyhow!("{}: not a readable image: {e}", path.display()))
}

/// Whether an image is grey: stored with one channel, or with three that barely differ (a scan
/// saved as RGB, or as a JPEG whose compression tinted it: mean chroma at most 3 of 255).
pub fn is_grey(img: &DynamicImage) -> bool {
    if !img.color().has_color() {
        return true;
    }
    let rgb = img.to_rgb8();
    let chroma: u64 = rgb
        .pixels()
        .map(|p| (p[0].max(p[1]).max(p[2]) - p[0].min(p[1]).min(p[2])) as u64)
        .sum();
    chroma <= 3 * rgb.pixels().len() as u64
}

/// Composites transparency onto white and returns 8-bit RGB.
pub fn flatten_alpha(img: &DynamicImage) -> image::RgbImage {
    let rgba = img.to_rgba8();
    let (w, h) = img.dimensions();
    image::RgbImage::from_fn(w, h, |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as u32;
        let blend = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        image::Rgb([blend(p[0]), blend(p[1]), blend(p[2])])
    })
}

/// Converts an image to `C×H×W` bytes (C = 1 or 3) by the rule in the module docs.
///
/// Shapes: image of any size → `C×H×W`.
pub fn to_input(img: &DynamicImage, [c, h, w]: [usize; 3]) -> Vec<u8> {
    debug_assert!(c == 1 || c == 3);
    let rgb = if img.color().has_alpha() {
        flatten_alpha(img)
    } else {
        img.to_rgb8()
    };
    let rgb = if rgb.dimensions() == (w as u32, h as u32) {
        rgb
    } else {
        image::imageops::resize(
            &rgb,
            w as u32,
            h as u32,
            image::imageops::FilterType::Triangle,
        )
    };
    let mut out = vec![0u8; c * h * w];
    for (i, p) in rgb.pixels().enumerate() {
        let [r, g, b] = p.0;
        if c == 1 {
            // BT.709 luma weights, as the image crate's to_luma8.
            out[i] = ((r as u32 * 2126 + g as u32 * 7152 + b as u32 * 722) / 10000) as u8;
        } else {
            out[i] = r;
            out[h * w + i] = g;
            out[2 * h * w + i] = b;
        }
    }
    out
}
