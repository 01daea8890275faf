//! PNG plots: training curves, confusion matrix, reliability diagram, occlusion maps.
//!
//! Each plot is drawn by `plotters` into an RGB buffer (`H×W×3` bytes, row-major), encoded as
//! PNG by `image` and written atomically. Text uses DejaVu Sans, embedded in the binary
//! (`assets/fonts`), so plotting needs no system font libraries.

use crate::infer::metrics::Bin;
use crate::train::config::EpochRecord;
use anyhow::{Result, anyhow};
use image::ImageEncoder;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::error::Error;
use std::path::Path;

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn Error>>;

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const SANS: &str = "sans-serif";

const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180); // blue
const VAL_COLOUR: RGBColor = RGBColor(214, 39, 40); // red
const GRID: RGBColor = RGBColor(225, 225, 225);
const FINE_GRID: RGBColor = RGBColor(246, 246, 246);

fn init_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The font is ours and valid; should it ever fail to parse, text is simply missing.
        let _ = plotters::style::register_font(SANS, FontStyle::Normal, FONT);
    });
}

/// Draws with `draw` on a white `w×h` canvas and writes it to `path` as PNG.
fn render(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<()> {
    init_font();
    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let fail = |e: Box<dyn Error>| anyhow!("{}: cannot draw the plot: {e}", path.display());
        draw(&root).map_err(fail)?;
        root.present().map_err(|e| fail(e.into()))?;
    }
    crate::store::atomic::atomic_write(path, |out| {
        image::codecs::png::PngEncoder::new(out)
            .write_image(&buf, w, h, image::ExtendedColorType::Rgb8)
            .map_err(|e| anyhow!("{}: cannot encode PNG: {e}", path.display()))
    })
}

fn text_style(size: u32, colour: RGBColor, h: HPos, v: VPos) -> TextStyle<'static> {
    TextStyle {
        font: (SANS, size).into_font(),
        color: colour.to_backend_color(),
        pos: Pos::new(h, v),
    }
}

/// One named line of a line chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
    pub colour: RGBColor,
}

/// A line chart of `series` against an integer x (epochs), with markers on every point.
pub fn line_chart(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    series: &[Series],
    legend_at: SeriesLabelPosition,
) -> Result<()> {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let x_max = points().map(|p| p.0).fold(1.0, f64::max);
    let (mut y0, mut y1) = points().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
        (a.min(p.1), b.max(p.1))
    });
    if !(y0.is_finite() && y1.is_finite()) {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.08).max(1e-3);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let x_range = 0.7..x_max.max(2.0) + 0.3;
    render(path, (900, 560), |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (SANS, 28))
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(80)
            .build_cartesian_2d(x_range, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .axis_desc_style((SANS, 20))
            .label_style((SANS, 16))
            .light_line_style(FINE_GRID)
            .bold_line_style(GRID)
            // Epochs are whole numbers: label only the whole ticks.
            .x_label_formatter(&|v| {
                if (v - v.round()).abs() < 1e-6 {
                    format!("{v:.0}")
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| format!("{v:.2}"))
            .draw()?;
        for s in series {
            let c = s.colour;
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(3)))?
                .label(s.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 28, y)], c.stroke_width(3))
                });
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(legend_at)
            .label_font((SANS, 18))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// `dir/loss.png` and `dir/accuracy.png`: per-epoch training and validation curves.
pub fn training_curves(dir: &Path, history: &[EpochRecord]) -> Result<()> {
    let curve = |f: &dyn Fn(&EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.epoch as f64, v)))
            .collect()
    };
    for (file, what, train, val, legend) in [
        (
            "loss.png",
            "loss (mean cross-entropy)",
            curve(&|r| Some(r.train_loss)),
            curve(&|r| r.val_loss),
            SeriesLabelPosition::UpperRight,
        ),
        (
            "accuracy.png",
            "accuracy",
            curve(&|r| Some(r.train_accuracy)),
            curve(&|r| r.val_accuracy),
            SeriesLabelPosition::LowerRight,
        ),
    ] {
        let mut series = vec![Series {
            name: "training (running, with augmentation)",
            points: train,
            colour: TRAIN_COLOUR,
        }];
        if !val.is_empty() {
            series.push(Series {
                name: "validation",
                points: val,
                colour: VAL_COLOUR,
            });
        }
        let title = format!(
            "Training {} per epoch",
            what.split(' ').next().unwrap_or(what)
        );
        line_chart(&dir.join(file), &title, ("epoch", what), &series, legend)?;
    }
    Ok(())
}

/// White → dark blue by `t` in [0, 1].
fn blues(t: f64) -> RGBColor {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0))
}

/// A confusion-matrix heatmap: rows are the actual classes, columns the predicted ones, each
/// cell shaded by its share of the row and labelled with its count.
///
/// Shapes: `matrix` is `K×K`, `classes` has `K` names.
pub fn confusion(
    path: &Path,
    title: &str,
    classes: &[String],
    matrix: &[Vec<usize>],
) -> Result<()> {
    let k = classes.len().max(1);
    let cell = (640 / k as i32).clamp(12, 64);
    let label_size = cell.clamp(10, 26) as u32 * 16 / 26 + 4;
    // Room for the row names (≈0.6 em per character) and the column names, staggered on two
    // lines when they are wider than a cell.
    let longest = classes.iter().map(|c| c.chars().count()).max().unwrap_or(1) as i32;
    let name_px = longest * label_size as i32 * 6 / 10;
    let stagger = name_px > cell - 4;
    let left = 50 + name_px + 12;
    let top = 80;
    let bottom = 50
        + if stagger {
            2 * label_size as i32 + 12
        } else {
            label_size as i32 + 8
        };
    let side = cell * k as i32;
    let (w, h) = ((left + side + 40).max(480), (top + side + bottom).max(360));
    let show_counts = cell >= 22;
    render(path, (w as u32, h as u32), |root| {
        root.fill(&WHITE)?;
        root.draw(&Text::new(
            title.to_string(),
            (w / 2, 22),
            text_style(24, BLACK, HPos::Center, VPos::Center),
        ))?;
        root.draw(&Text::new(
            "rows: actual class · columns: predicted · shade: share of the row",
            (w / 2, 52),
            text_style(15, RGBColor(90, 90, 90), HPos::Center, VPos::Center),
        ))?;
        for (i, row) in matrix.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            for (j, &n) in row.iter().enumerate() {
                let (x, y) = (left + j as i32 * cell, top + i as i32 * cell);
                let share = n as f64 / total;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    blues(share).filled(),
                ))?;
                if show_counts && n > 0 {
                    let ink = if share > 0.5 { WHITE } else { BLACK };
                    root.draw(&Text::new(
                        n.to_string(),
                        (x + cell / 2, y + cell / 2),
                        text_style(
                            label_size.min(cell as u32 / 3 + 4),
                            ink,
                            HPos::Center,
                            VPos::Center,
                        ),
                    ))?;
                }
            }
        }
        root.draw(&Rectangle::new(
            [(left, top), (left + side, top + side)],
            BLACK.stroke_width(1),
        ))?;
        for (i, name) in classes.iter().enumerate() {
            let mid = i as i32 * cell + cell / 2;
            root.draw(&Text::new(
                name.clone(),
                (left - 8, top + mid),
                text_style(label_size, BLACK, HPos::Right, VPos::Center),
            ))?;
            let drop = if stagger && i % 2 == 1 {
                label_size as i32 + 4
            } else {
                0
            };
            root.draw(&Text::new(
                name.clone(),
                (left + mid, top + side + 8 + drop),
                text_style(label_size, BLACK, HPos::Center, VPos::Top),
            ))?;
        }
        root.draw(&Text::new(
            "predicted class",
            (left + side / 2, h - 22),
            text_style(20, BLACK, HPos::Center, VPos::Center),
        ))?;
        root.draw(&Text::new(
            "actual class",
            (16, top + side / 2),
            TextStyle {
                font: (SANS, 20).into_font().transform(FontTransform::Rotate270),
                ..text_style(20, BLACK, HPos::Center, VPos::Center)
            },
        ))?;
        Ok(())
    })
}

/// A reliability diagram: per confidence bin, the accuracy (bars) against the mean confidence,
/// with the diagonal of perfect calibration, and below it the number of images per bin.
/// `before`, when given, adds the bins of the uncalibrated probabilities (T = 1) as points.
pub fn reliability(path: &Path, title: &str, bins: &[Bin], before: Option<&[Bin]>) -> Result<()> {
    render(path, (800, 800), |root| {
        root.fill(&WHITE)?;
        let (upper, lower) = root.split_vertically(590);
        let mut chart = ChartBuilder::on(&upper)
            .caption(title, (SANS, 24))
            .margin(20)
            .x_label_area_size(30)
            .y_label_area_size(75)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .y_desc("accuracy in the bin")
            .axis_desc_style((SANS, 20))
            .label_style((SANS, 16))
            .light_line_style(FINE_GRID)
            .bold_line_style(GRID)
            .x_labels(11)
            .y_labels(11)
            .x_label_formatter(&|v| format!("{v:.1}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()?;
        let bar = RGBColor(70, 130, 200);
        let gap = RGBColor(240, 120, 90);
        chart
            .draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
                Rectangle::new([(b.lo, 0.0), (b.hi, b.accuracy)], bar.mix(0.85).filled())
            }))?
            .label("accuracy (after temperature, if any)")
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], bar.filled()));
        // The gap between confidence and accuracy, which ECE averages.
        chart
            .draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
                let (a, c) = (b.accuracy.min(b.confidence), b.accuracy.max(b.confidence));
                Rectangle::new([(b.lo, a), (b.hi, c)], gap.mix(0.45).filled())
            }))?
            .label("gap to the mean confidence")
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 20, y + 6)], gap.mix(0.45).filled())
            });
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                BLACK.stroke_width(2),
            ))?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        if let Some(before) = before {
            let c = RGBColor(150, 60, 160);
            chart
                .draw_series(
                    before
                        .iter()
                        .filter(|b| b.count > 0)
                        .map(|b| Circle::new((b.confidence, b.accuracy), 6, c.filled())),
                )?
                .label("before temperature (T = 1)")
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((SANS, 16))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;

        let max_count = bins.iter().map(|b| b.count).max().unwrap_or(1).max(1);
        let mut counts = ChartBuilder::on(&lower)
            .margin_left(20)
            .margin_right(20)
            .margin_bottom(10)
            .x_label_area_size(55)
            .y_label_area_size(75)
            .build_cartesian_2d(0f64..1f64, 0f64..(max_count as f64 * 1.15))?;
        counts
            .configure_mesh()
            .x_desc("confidence (top probability)")
            .y_desc("images")
            .axis_desc_style((SANS, 20))
            .label_style((SANS, 16))
            .light_line_style(FINE_GRID)
            .bold_line_style(GRID)
            .x_labels(11)
            .y_labels(4)
            .x_label_formatter(&|v| format!("{v:.1}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
        counts.draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
            Rectangle::new(
                [(b.lo, 0.0), (b.hi, b.count as f64)],
                RGBColor(120, 120, 120).filled(),
            )
        }))?;
        counts.draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
            Text::new(
                b.count.to_string(),
                ((b.lo + b.hi) / 2.0, b.count as f64),
                text_style(13, BLACK, HPos::Center, VPos::Bottom),
            )
        }))?;
        Ok(())
    })
}

/// Blue (negative) → white (0) → red (positive), for `t` in [−1, 1].
fn diverging(t: f64) -> RGBColor {
    let t = t.clamp(-1.0, 1.0);
    let (r, g, b) = if t >= 0.0 {
        (255.0, 255.0 - 200.0 * t, 255.0 - 220.0 * t)
    } else {
        (255.0 + 215.0 * t, 255.0 + 150.0 * t, 255.0)
    };
    RGBColor(r.round() as u8, g.round() as u8, b.round() as u8)
}

/// The network's input image and an occlusion map side by side, each pixel drawn as a square.
///
/// Shapes: `image` is the prepared input `C×H×W` (bytes, C = 1 or 3), `heat` is `H×W`: the drop
/// in the predicted class's probability when that pixel is hidden (positive: the pixel
/// supported the prediction).
pub fn explanation(
    path: &Path,
    title: &str,
    image: &[u8],
    [c, h, w]: [usize; 3],
    heat: &[f32],
    class: &str,
) -> Result<()> {
    let scale = (320 / h.max(w)).max(2) as i32;
    let (pw, ph) = (w as i32 * scale, h as i32 * scale);
    let (top, gap, margin) = (90, 40, 30);
    let width = (2 * pw + gap + 2 * margin).max(480);
    let height = (top + ph + 70).max(300);
    let peak = heat.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6) as f64;
    render(path, (width as u32, height as u32), |root| {
        root.fill(&WHITE)?;
        root.draw(&Text::new(
            title.to_string(),
            (width / 2, 22),
            text_style(22, BLACK, HPos::Center, VPos::Center),
        ))?;
        let x0 = (width - (2 * pw + gap)) / 2;
        let x1 = x0 + pw + gap;
        for (x, label) in [
            (x0, "input as the network sees it".to_string()),
            (x1, format!("occlusion: drop in p({class})")),
        ] {
            root.draw(&Text::new(
                label,
                (x + pw / 2, top - 20),
                text_style(17, BLACK, HPos::Center, VPos::Center),
            ))?;
        }
        let plane = h * w;
        for y in 0..h {
            for x in 0..w {
                let px = |ch: usize| image[ch.min(c - 1) * plane + y * w + x];
                let colour = RGBColor(px(0), px(1), px(2));
                let (sx, sy) = (x as i32 * scale, top + y as i32 * scale);
                root.draw(&Rectangle::new(
                    [(x0 + sx, sy), (x0 + sx + scale, sy + scale)],
                    colour.filled(),
                ))?;
                let t = heat[y * w + x] as f64 / peak;
                root.draw(&Rectangle::new(
                    [(x1 + sx, sy), (x1 + sx + scale, sy + scale)],
                    diverging(t).filled(),
                ))?;
            }
        }
        for x in [x0, x1] {
            root.draw(&Rectangle::new(
                [(x, top), (x + pw, top + ph)],
                RGBColor(120, 120, 120).stroke_width(1),
            ))?;
        }
        root.draw(&Text::new(
            format!(
                "red: hiding it lowers p({class}) (up to {:.3}); blue: hiding it raises p",
                peak
            ),
            (width / 2, top + ph + 30),
            text_style(15, RGBColor(70, 70, 70), HPos::Center, VPos::Center),
        ))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a PNG and checks it is at least `min` in size and not a single colour.
    fn check_png(path: &Path, min: (u32, u32)) {
        let img = image::open(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .to_rgb8();
        assert!(
            img.width() >= min.0 && img.height() >= min.1,
            "{}: {}×{}",
            path.display(),
            img.width(),
            img.height()
        );
        let first = img.get_pixel(0, 0);
        let different = img.pixels().filter(|p| *p != first).count();
        // Text, lines and fills: well over 2% of the pixels differ from the background.
        assert!(
            different * 50 > (img.width() * img.height()) as usize,
            "{}: only {different} pixels differ from the corner",
            path.display()
        );
    }

    #[test]
    fn every_plot_is_a_valid_png_of_sensible_size() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let history: Vec<EpochRecord> = (1..=4)
            .map(|e| EpochRecord {
                epoch: e,
                train_loss: 1.0 / e as f64,
                train_accuracy: 1.0 - 0.2 / e as f64,
                val_loss: Some(1.1 / e as f64),
                val_accuracy: Some(0.95 - 0.2 / e as f64),
                lr: 0.01,
                seconds: 1.0,
            })
            .collect();
        training_curves(d, &history).unwrap();
        check_png(&d.join("loss.png"), (400, 300));
        check_png(&d.join("accuracy.png"), (400, 300));
        // A single epoch and no validation still draw.
        training_curves(d, &history[..1]).unwrap();
        check_png(&d.join("loss.png"), (400, 300));

        let classes: Vec<String> = ["airplane", "automobile", "bird"]
            .map(String::from)
            .to_vec();
        let m = vec![vec![50, 3, 1], vec![2, 60, 0], vec![9, 0, 40]];
        confusion(&d.join("confusion.png"), "Confusion", &classes, &m).unwrap();
        check_png(&d.join("confusion.png"), (400, 300));

        let cc: Vec<(f32, bool)> = (0..200)
            .map(|i| (0.3 + 0.0035 * i as f32, i % 4 != 0))
            .collect();
        let bins = crate::infer::metrics::reliability(&cc, 15);
        reliability(
            &d.join("reliability.png"),
            "Reliability",
            &bins,
            Some(&bins),
        )
        .unwrap();
        check_png(&d.join("reliability.png"), (400, 300));

        let img: Vec<u8> = (0..28 * 28).map(|i| (i % 256) as u8).collect();
        let heat: Vec<f32> = (0..28 * 28).map(|i| (i as f32 / 392.0) - 1.0).collect();
        explanation(
            &d.join("x.explain.png"),
            "7 (99%)",
            &img,
            [1, 28, 28],
            &heat,
            "7",
        )
        .unwrap();
        check_png(&d.join("x.explain.png"), (400, 300));
    }

    #[test]
    fn a_plot_into_a_missing_folder_fails_naming_the_file() {
        let e = training_curves(Path::new("/nonexistent-dir/plots"), &[]).unwrap_err();
        assert!(e.to_string().contains("loss.png"), "{e}");
    }
}
