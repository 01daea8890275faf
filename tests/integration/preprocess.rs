//! Tests of MNIST-style digit preparation (`cnn::data::digits`).
//!
//! Synthetic digits are drawn here as thick polylines; `tests/fixtures/digits/` holds 40 drawn and
//! "photographed" digits made by `scripts/make-digit-images.py` (none from MNIST).
//! Reference figures for MNIST (measured on the first 10,000 training digits): the centre of mass
//! in pixel-index coordinates is (14.0, 14.0) ± 0.5, the ink's box has a longer side of 20 px, and
//! the ink mass (sum of pixels / 255) has 5th–95th percentiles of 52 and 164 px.

use cnn::data::digits::{looks_like_mnist, prepare, prepare_digit};
use cnn::data::image::{decode, to_input};
use image::{DynamicImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba};
use std::path::{Path, PathBuf};

const MNIST: [usize; 3] = [1, 28, 28];

/// Draws a polyline of the given width (round caps) into an RGB image, with 4×4 supersampling so
/// edges are anti-aliased like a real drawing.
fn draw(img: &mut RgbImage, points: &[(f32, f32)], width: f32, ink: [u8; 3]) {
    let r = width / 2.0;
    let (w, h) = img.dimensions();
    let xs = points.iter().map(|p| p.0);
    let ys = points.iter().map(|p| p.1);
    let x0 = (xs.clone().fold(f32::MAX, f32::min) - r - 1.0).max(0.0) as u32;
    let x1 = ((xs.fold(f32::MIN, f32::max) + r + 2.0) as u32).min(w);
    let y0 = (ys.clone().fold(f32::MAX, f32::min) - r - 1.0).max(0.0) as u32;
    let y1 = ((ys.fold(f32::MIN, f32::max) + r + 2.0) as u32).min(h);
    let dist = |px: f32, py: f32| {
        points
            .windows(2)
            .map(|s| {
                let ((ax, ay), (bx, by)) = (s[0], s[1]);
                let (dx, dy) = (bx - ax, by - ay);
                let len2 = (dx * dx + dy * dy).max(1e-9);
                let t = (((px - ax) * dx + (py - ay) * dy) / len2).clamp(0.0, 1.0);
                ((px - ax - t * dx).powi(2) + (py - ay - t * dy).powi(2)).sqrt()
            })
            .fold(f32::MAX, f32::min)
    };
    for y in y0..y1 {
        for x in x0..x1 {
            let mut cover = 0.0;
            for sy in 0..4 {
                for sx in 0..4 {
                    let (px, py) = (
                        x as f32 + (sx as f32 + 0.5) / 4.0,
                        y as f32 + (sy as f32 + 0.5) / 4.0,
                    );
                    cover += (dist(px, py) <= r) as u8 as f32 / 16.0;
                }
            }
            if cover > 0.0 {
                let p = img.get_pixel_mut(x, y);
                for (v, &k) in p.0.iter_mut().zip(&ink) {
                    *v = (*v as f32 * (1.0 - cover) + k as f32 * cover).round() as u8;
                }
            }
        }
    }
}

/// A "2" as a polyline in a unit box (y down), placed at (x, y) with height `size`.
fn two(x: f32, y: f32, size: f32) -> Vec<(f32, f32)> {
    [
        (0.2, 0.25),
        (0.35, 0.05),
        (0.6, 0.03),
        (0.76, 0.2),
        (0.7, 0.42),
        (0.2, 0.95),
        (0.85, 0.95),
    ]
    .iter()
    .map(|&(u, v)| (x + (u - 0.5) * size, y + (v - 0.5) * size))
    .collect()
}

/// A "7" as a polyline, as [`two`].
fn seven(x: f32, y: f32, size: f32) -> Vec<(f32, f32)> {
    [(0.15, 0.05), (0.85, 0.05), (0.45, 0.95)]
        .iter()
        .map(|&(u, v)| (x + (u - 0.5) * size, y + (v - 0.5) * size))
        .collect()
}

fn page(w: u32, h: u32, colour: [u8; 3]) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb(colour))
}

/// Centre of mass (pixel-index coordinates), bounding box `[x0, y0, x1, y1)`, peak and ink mass.
struct Stats {
    com: (f32, f32),
    bbox: [usize; 4],
    peak: u8,
    mass: f32,
}

fn stats(out: &[u8]) -> Stats {
    assert_eq!(out.len(), 784);
    let (mut m, mut mx, mut my) = (0.0f32, 0.0f32, 0.0f32);
    let mut bbox = [usize::MAX, usize::MAX, 0, 0];
    for (i, &v) in out.iter().enumerate() {
        let (x, y) = (i % 28, i / 28);
        m += v as f32;
        mx += v as f32 * x as f32;
        my += v as f32 * y as f32;
        if v > 0 {
            bbox = [
                bbox[0].min(x),
                bbox[1].min(y),
                bbox[2].max(x + 1),
                bbox[3].max(y + 1),
            ];
        }
    }
    let peak = out.iter().copied().max().unwrap_or(0);
    Stats {
        com: (mx / m.max(1.0), my / m.max(1.0)),
        bbox,
        peak,
        mass: m / 255.0,
    }
}

/// ASCII picture of a 28×28 output, for failure messages.
fn picture(out: &[u8]) -> String {
    out.chunks(28)
        .map(|row| {
            row.iter()
                .map(|&v| [' ', '.', ':', 'o', '#'][(v as usize * 5 / 256).min(4)])
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("|\n")
}

/// Asserts the output looks like an MNIST digit: centre of mass within 1 px of (14, 14), box's
/// longer side 20 ± 1, strongest pixel 255. (The border may be touched: a 7's heavy top bar puts
/// its foot on row 26 or 27, in MNIST too.)
fn assert_mnist_like(out: &[u8], what: &str) -> Stats {
    let s = stats(out);
    let long = (s.bbox[2] - s.bbox[0]).max(s.bbox[3] - s.bbox[1]);
    let pic = picture(out);
    assert_eq!(s.peak, 255, "{what}: peak {}\n{pic}", s.peak);
    assert!(
        (s.com.0 - 14.0).abs() <= 1.0 && (s.com.1 - 14.0).abs() <= 1.0,
        "{what}: centre of mass {:?}\n{pic}",
        s.com
    );
    assert!(
        (19..=21).contains(&long),
        "{what}: box {:?}, longer side {long}\n{pic}",
        s.bbox
    );
    s
}

/// Intersection over union of the pixels above 64 in two outputs.
fn overlap(a: &[u8], b: &[u8]) -> f32 {
    let inter = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x > 64 && **y > 64)
        .count();
    let union = a
        .iter()
        .zip(b)
        .filter(|(x, y)| **x > 64 || **y > 64)
        .count();
    inter as f32 / union.max(1) as f32
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest().join("tests/fixtures/digits"))
        .expect("tests/fixtures/digits exists")
        .map(|e| e.unwrap().path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("png" | "jpg")))
        .collect();
    files.sort();
    files
}

/// The digit a fixture shows, from its name `<digit>_<scene>.<ext>`.
fn label(path: &Path) -> u8 {
    path.file_name().unwrap().to_str().unwrap().as_bytes()[0] - b'0'
}

#[test]
fn shipped_mnist_samples_pass_through_unchanged() {
    // The project's own samples and the shared mirror's, whichever exist, and one made here (a
    // white bar on black) so the test never checks nothing.
    let mut images: Vec<(String, DynamicImage)> = Vec::new();
    for dir in [
        manifest().join("data/samples"),
        manifest().join("../shared/data/mnist-samples"),
    ] {
        for entry in std::fs::read_dir(&dir).into_iter().flatten() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("png") {
                images.push((path.display().to_string(), decode(&path).unwrap()));
            }
        }
    }
    let mut made = ImageBuffer::<Luma<u8>, _>::new(28, 28);
    for y in 5..23 {
        for x in 12..16 {
            made.put_pixel(x, y, Luma([if x == 12 { 120 } else { 255 }]));
        }
    }
    images.push(("synthetic".into(), DynamicImage::ImageLuma8(made)));
    for (name, img) in &images {
        assert!(looks_like_mnist(img), "{name} should look like MNIST");
        let raw = img.to_luma8().into_raw();
        assert_eq!(prepare(img, MNIST, true, true), raw, "{name} changed");
        assert_eq!(
            to_input(img, MNIST),
            raw,
            "{name}: the plain rule changed it"
        );
    }
}

#[test]
fn mnist_lookalike_test_rejects_other_images() {
    // Dark ink on light paper at 28×28 is not MNIST-like: it must be inverted.
    let mut light = page(28, 28, [255; 3]);
    draw(&mut light, &seven(14.0, 14.0, 20.0), 3.0, [0; 3]);
    assert!(!looks_like_mnist(&DynamicImage::ImageRgb8(light.clone())));
    // Another size, or a colourful image, is not either.
    let mut dark = page(56, 56, [0; 3]);
    draw(&mut dark, &seven(28.0, 28.0, 40.0), 6.0, [255; 3]);
    assert!(!looks_like_mnist(&DynamicImage::ImageRgb8(dark)));
    let mut red = page(28, 28, [0; 3]);
    draw(&mut red, &seven(14.0, 14.0, 20.0), 3.0, [255, 0, 0]);
    assert!(!looks_like_mnist(&DynamicImage::ImageRgb8(red)));
    // And the inverted 28×28 drawing is prepared, not passed through.
    let img = DynamicImage::ImageRgb8(light);
    let out = prepare(&img, MNIST, true, true);
    assert_ne!(out, to_input(&img, MNIST));
    assert_mnist_like(&out, "28×28 dark on light");
}

#[test]
fn prepare_uses_the_plain_rule_unless_asked_for_digits() {
    let mut img = page(200, 240, [250; 3]);
    draw(&mut img, &two(100.0, 120.0, 150.0), 12.0, [10; 3]);
    let img = DynamicImage::ImageRgb8(img);
    assert_eq!(prepare(&img, MNIST, false, true), to_input(&img, MNIST));
    assert_eq!(prepare(&img, MNIST, true, false), to_input(&img, MNIST));
    assert_eq!(
        prepare(&img, [3, 32, 32], true, true),
        to_input(&img, [3, 32, 32])
    );
    assert_eq!(
        prepare(&img, [1, 32, 32], true, true),
        to_input(&img, [1, 32, 32])
    );
    assert_eq!(prepare(&img, MNIST, true, true), prepare_digit(&img));
}

#[test]
fn dark_digit_on_light_page_becomes_centred_light_on_dark() {
    let mut img = page(300, 240, [245, 245, 240]);
    draw(&mut img, &two(110.0, 100.0, 150.0), 14.0, [20, 20, 30]);
    let out = prepare_digit(&DynamicImage::ImageRgb8(img));
    let s = assert_mnist_like(&out, "dark 2 on light");
    // The digit is taller than wide, so the height is the 20 px side.
    assert_eq!(s.bbox[3] - s.bbox[1], 20, "box {:?}", s.bbox);
    assert!(s.mass > 52.0 && s.mass < 164.0, "ink mass {}", s.mass);
}

#[test]
fn bright_digit_on_dark_page_keeps_its_polarity() {
    let mut dark = page(280, 280, [0; 3]);
    draw(&mut dark, &seven(140.0, 140.0, 200.0), 20.0, [255; 3]);
    let out_dark = prepare_digit(&DynamicImage::ImageRgb8(dark));
    assert_mnist_like(&out_dark, "white 7 on black");
    let mut light = page(280, 280, [255; 3]);
    draw(&mut light, &seven(140.0, 140.0, 200.0), 20.0, [0; 3]);
    let out_light = prepare_digit(&DynamicImage::ImageRgb8(light));
    assert!(
        overlap(&out_dark, &out_light) > 0.9,
        "the same digit either way round"
    );
}

#[test]
fn tiny_digit_off_centre_on_a_huge_page_is_found_and_centred() {
    let mut img = page(3000, 2000, [240, 238, 230]);
    draw(&mut img, &two(2600.0, 300.0, 50.0), 4.0, [30; 3]);
    let out = prepare_digit(&DynamicImage::ImageRgb8(img));
    let s = assert_mnist_like(&out, "tiny 2 on a huge page");
    assert!(
        s.mass > 52.0 && s.mass < 164.0,
        "thin strokes thickened: ink mass {}",
        s.mass
    );
    // It is the same digit as a large, plain drawing of it.
    let mut plain = page(300, 300, [255; 3]);
    draw(&mut plain, &two(150.0, 150.0, 200.0), 20.0, [0; 3]);
    let reference = prepare_digit(&DynamicImage::ImageRgb8(plain));
    assert!(
        overlap(&out, &reference) > 0.6,
        "IoU {}\n{}",
        overlap(&out, &reference),
        picture(&out)
    );
}

#[test]
fn a_speck_of_dust_does_not_move_the_digit() {
    let mut clean = page(600, 450, [245; 3]);
    draw(&mut clean, &seven(250.0, 220.0, 280.0), 12.0, [20; 3]);
    let mut dusty = clean.clone();
    draw(&mut dusty, &[(560.0, 40.0), (562.0, 41.0)], 6.0, [40; 3]);
    draw(&mut dusty, &[(30.0, 420.0), (30.0, 420.0)], 4.0, [60; 3]);
    let a = prepare_digit(&DynamicImage::ImageRgb8(clean));
    let b = prepare_digit(&DynamicImage::ImageRgb8(dusty));
    assert_mnist_like(&b, "dusty 7");
    assert!(overlap(&a, &b) > 0.95, "IoU {}", overlap(&a, &b));
}

#[test]
fn stroke_width_is_brought_into_mnist_range() {
    // A hair-thin pen line on a big page and a fat marker both end up with MNIST's ink mass.
    for (what, size, width) in [("hair-thin", 900.0, 2.0), ("fat marker", 300.0, 80.0)] {
        let mut img = page(1200, 1000, [250; 3]);
        draw(&mut img, &seven(600.0, 500.0, size), width, [0; 3]);
        let out = prepare_digit(&DynamicImage::ImageRgb8(img));
        let s = assert_mnist_like(&out, what);
        assert!(
            s.mass > 52.0 && s.mass < 164.0,
            "{what}: ink mass {}\n{}",
            s.mass,
            picture(&out)
        );
    }
}

#[test]
fn coloured_ink_is_found() {
    let mut black = page(400, 300, [250; 3]);
    draw(&mut black, &two(200.0, 150.0, 220.0), 16.0, [0; 3]);
    let reference = prepare_digit(&DynamicImage::ImageRgb8(black));
    // Yellow ink changes luma by only ~40 levels; its blue channel drops by 240.
    for (what, ink) in [
        ("blue", [30, 60, 200]),
        ("red", [210, 30, 30]),
        ("green", [30, 150, 60]),
        ("yellow", [250, 215, 10]),
    ] {
        let mut img = page(400, 300, [250; 3]);
        draw(&mut img, &two(200.0, 150.0, 220.0), 16.0, ink);
        let out = prepare_digit(&DynamicImage::ImageRgb8(img));
        assert_mnist_like(&out, what);
        assert!(
            overlap(&out, &reference) > 0.9,
            "{what}: IoU {}",
            overlap(&out, &reference)
        );
    }
}

#[test]
fn uneven_light_and_a_shadow_are_not_ink() {
    let (w, h) = (800u32, 600u32);
    // Paper lit from the left (250 → 150) with a dark corner (down to 90) bottom right.
    let mut img = RgbImage::from_fn(w, h, |x, y| {
        let light = 250.0 - 100.0 * x as f32 / w as f32;
        let d = (((w - x) as f32).powi(2) + ((h - y) as f32).powi(2)).sqrt() / 400.0;
        let shade = 60.0 * (1.0 - d).max(0.0);
        Rgb([(light - shade) as u8; 3])
    });
    draw(&mut img, &seven(400.0, 300.0, 400.0), 10.0, [25; 3]);
    let out = prepare_digit(&DynamicImage::ImageRgb8(img));
    let mut plain = page(w, h, [250; 3]);
    draw(&mut plain, &seven(400.0, 300.0, 400.0), 10.0, [25; 3]);
    let reference = prepare_digit(&DynamicImage::ImageRgb8(plain));
    assert_mnist_like(&out, "7 in a shadow");
    assert!(
        overlap(&out, &reference) > 0.85,
        "IoU {}\n{}",
        overlap(&out, &reference),
        picture(&out)
    );
}

#[test]
fn blank_pages_give_zeros() {
    let zeros = vec![0u8; 784];
    let blank = |w, h, c| DynamicImage::ImageRgb8(page(w, h, c));
    assert_eq!(prepare_digit(&blank(640, 480, [255; 3])), zeros);
    assert_eq!(prepare_digit(&blank(640, 480, [0; 3])), zeros);
    assert_eq!(prepare_digit(&blank(33, 17, [128, 200, 90])), zeros);
    // Grey paper with a light gradient and a little noise.
    let mut seed = 7u32;
    let noisy = RgbImage::from_fn(700, 500, |x, _| {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let n = (seed >> 28) as f32 - 8.0; // −8..7
        Rgb([(200.0 + 40.0 * x as f32 / 700.0 + n) as u8; 3])
    });
    assert_eq!(prepare_digit(&DynamicImage::ImageRgb8(noisy)), zeros);
    // A fully transparent canvas reads as white paper.
    let clear = ImageBuffer::from_pixel(100, 100, Rgba([0u8, 0, 0, 0]));
    assert_eq!(prepare_digit(&DynamicImage::ImageRgba8(clear)), zeros);
    // An empty image.
    assert_eq!(prepare_digit(&DynamicImage::new_rgb8(0, 0)), zeros);
    assert_eq!(
        prepare(&DynamicImage::new_rgb8(0, 5), MNIST, true, true),
        zeros
    );
}

#[test]
fn tiny_and_extreme_shapes_do_not_panic() {
    for (w, h) in [
        (1, 1),
        (1, 2),
        (2, 1),
        (3, 3),
        (5000, 3),
        (3, 5000),
        (10_000, 1),
        (1, 28),
        (28, 1),
    ] {
        for c in [[0u8; 3], [255; 3]] {
            let out = prepare_digit(&DynamicImage::ImageRgb8(page(w, h, c)));
            assert_eq!(out.len(), 784, "{w}×{h}");
        }
    }
    // A black pixel on white, 1×1 and in a corner: too small to be a digit.
    let mut dot = page(1, 1, [255; 3]);
    dot.put_pixel(0, 0, Rgb([0; 3]));
    assert_eq!(prepare_digit(&DynamicImage::ImageRgb8(dot)), vec![0; 784]);
    // A digit in an extremely wide strip is still found.
    let mut strip = page(4000, 120, [250; 3]);
    draw(&mut strip, &seven(3000.0, 60.0, 100.0), 8.0, [0; 3]);
    assert_mnist_like(
        &prepare_digit(&DynamicImage::ImageRgb8(strip)),
        "7 in a 4000×120 strip",
    );
}

#[test]
fn sixteen_bit_and_palette_images_work() {
    let mut rgb = page(160, 200, [240; 3]);
    draw(&mut rgb, &two(80.0, 100.0, 150.0), 12.0, [10; 3]);
    let reference = prepare_digit(&DynamicImage::ImageRgb8(rgb.clone()));
    let grey16 = ImageBuffer::<Luma<u16>, _>::from_fn(160, 200, |x, y| {
        Luma([rgb.get_pixel(x, y).0[0] as u16 * 257])
    });
    let out = prepare_digit(&DynamicImage::ImageLuma16(grey16));
    assert_eq!(out, reference, "16-bit grey");
    let rgba16 = ImageBuffer::<Rgba<u16>, _>::from_fn(160, 200, |x, y| {
        let v = rgb.get_pixel(x, y).0[0] as u16 * 257;
        Rgba([v, v, v, 65535])
    });
    assert_eq!(
        prepare_digit(&DynamicImage::ImageRgba16(rgba16)),
        reference,
        "16-bit RGBA"
    );
    // The fixtures include a 16-bit grey and two palette PNGs, decoded through the crate's reader.
    for name in [
        "3_grey16.png",
        "7_grey16.png",
        "3_palette.png",
        "8_palette.png",
    ] {
        let img = decode(&manifest().join("tests/fixtures/digits").join(name)).unwrap();
        assert_mnist_like(&prepare(&img, MNIST, true, true), name);
    }
}

#[test]
fn every_fixture_becomes_a_centred_mnist_style_digit() {
    let files = fixtures();
    assert!(files.len() >= 30, "only {} fixtures", files.len());
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let img = decode(path).unwrap();
        assert!(!looks_like_mnist(&img), "{name}");
        let out = prepare(&img, MNIST, true, true);
        let s = assert_mnist_like(&out, &name);
        assert!(
            s.mass > 35.0 && s.mass < 200.0,
            "{name}: ink mass {}\n{}",
            s.mass,
            picture(&out)
        );
        // A "1" is tall and narrow, the other digits are not.
        let width = s.bbox[2] - s.bbox[0];
        if label(path) == 1 {
            assert!(
                width <= 12,
                "{name}: a 1 {width} px wide\n{}",
                picture(&out)
            );
        } else {
            assert!(width >= 10, "{name}: {width} px wide\n{}", picture(&out));
        }
    }
}

/// Writes each fixture's prepared 28×28 image as `<name>.png` into `$PREPROCESS_DUMP`, to look at
/// them or feed them to a model: `PREPROCESS_DUMP=/tmp/out cargo test --test integration -- --ignored dump_prepared`.
#[test]
#[ignore]
fn dump_prepared_fixtures() {
    let dir = std::env::var("PREPROCESS_DUMP")
        .expect("set PREPROCESS_DUMP to the folder to write into (see this test's comment)");
    std::fs::create_dir_all(&dir).unwrap();
    for path in fixtures() {
        let out = prepare(&decode(&path).unwrap(), MNIST, true, true);
        let img = ImageBuffer::<Luma<u8>, _>::from_raw(28, 28, out).unwrap();
        let stem = path.file_stem().unwrap().to_string_lossy();
        img.save(Path::new(&dir).join(format!("{stem}.png")))
            .unwrap();
    }
}
