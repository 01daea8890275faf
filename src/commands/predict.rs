//! `cnn predict`: the class probabilities of image files.

use super::with_threads;
use crate::commands::cli::{Layout, PredictArgs};
use crate::data::digits;
use crate::data::{self, Dataset};
use crate::infer::explain::{OcclusionConfig, occlusion};
use crate::infer::metrics::argmax;
use crate::infer::tta::{self, Tta};
use crate::net::loss::softmax;
use crate::store::Model;
use crate::tensor::{Tensor, data};
use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};

const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp", "gif", "webp"];

/// Text output lists every class up to this many, else the top 5 (unless `--top-k`).
const FULL_LIST: usize = 20;
/// More images than this print one line each (unless `--layout`).
const COMPACT_ABOVE: usize = 10;
/// Characters of a probability bar.
const BAR: usize = 24;

/// One image's answer, for the text layouts.
struct Shown<'a> {
    file: &'a Path,
    classes: &'a [String],
    probs: &'a [f32],
    /// Classes by falling probability.
    order: &'a [usize],
    pred: usize,
    uncertain: bool,
}

impl Shown<'_> {
    /// `FILE: CLASS (P%)` (or `uncertain`), then a line per class: a mark on the predicted one,
    /// its name, a bar as long as its probability and the number.
    fn write_full(&self, out: &mut impl Write, top_k: usize, name_width: usize) -> Result<()> {
        writeln!(out, "{}: {}", self.file.display(), self.answer())?;
        for &c in self.order.iter().take(top_k) {
            let mark = if c == self.pred { "*" } else { " " };
            let name = &self.classes[c];
            let pad = name_width.saturating_sub(name.chars().count());
            writeln!(
                out,
                "  {mark} {name}{:pad$}  {} {:.4}",
                "",
                bar(self.probs[c], BAR),
                self.probs[c]
            )?;
        }
        Ok(())
    }

    /// One line: the file, the answer with its bar, and the next two classes.
    fn write_compact(&self, out: &mut impl Write, file_width: usize) -> Result<()> {
        let file = self.file.display().to_string();
        let pad = file_width.saturating_sub(file.chars().count());
        let next: Vec<String> = self
            .order
            .iter()
            .filter(|&&c| c != self.pred)
            .take(2)
            .map(|&c| format!("{} {:.1}%", self.classes[c], 100.0 * self.probs[c]))
            .collect();
        writeln!(
            out,
            "{file}{:pad$}  {} {}  (then {})",
            "",
            bar(self.probs[self.pred], BAR / 2),
            self.answer(),
            next.join(", ")
        )?;
        Ok(())
    }

    /// `3 (97.1%)`, or `uncertain (top: 3 45.0%, 5 30.1%)` below `--min-confidence`.
    fn answer(&self) -> String {
        if self.uncertain {
            let top: Vec<String> = self
                .order
                .iter()
                .take(2)
                .map(|&c| format!("{} {:.1}%", self.classes[c], 100.0 * self.probs[c]))
                .collect();
            format!("uncertain (top: {})", top.join(", "))
        } else {
            format!(
                "{} ({:.1}%)",
                self.classes[self.pred],
                100.0 * self.probs[self.pred]
            )
        }
    }
}

/// A bar `width` characters wide, filled in eighths of a character to `p` of its width.
fn bar(p: f32, width: usize) -> String {
    const EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (p.clamp(0.0, 1.0) * (8 * width) as f32).round() as usize;
    let (full, part) = (eighths / 8, eighths % 8);
    let mut s: String = "█".repeat(full);
    if full < width {
        s.push(EIGHTHS[part]);
        s.extend(std::iter::repeat_n(' ', width - full - 1));
    }
    s
}

pub fn run(args: PredictArgs) -> Result<()> {
    with_threads(args.threads, || execute(args))
}

fn execute(args: PredictArgs) -> Result<()> {
    crate::kernels::gemm::warm_up_in_background();
    let (model, mut net) = super::load_model(args.model.as_deref())?;
    let files = expand(&args.images)?;
    let digits = model
        .classes
        .iter()
        .enumerate()
        .all(|(i, c)| *c == i.to_string())
        && model.classes.len() == 10;
    let input = model.input;
    let tta = tta::choose(args.tta, &model);
    // Decode and prepare in parallel; a file that fails is reported and skipped.
    let prepared: Vec<(PathBuf, Result<Vec<u8>>)> = files
        .into_par_iter()
        .map(|f| {
            let r = data::image::decode(&f)
                .map(|img| digits::prepare(&img, input, digits, !args.no_preprocess));
            (f, r)
        })
        .collect();
    let (ok, failed): (Vec<_>, Vec<_>) = prepared.into_iter().partition(|(_, r)| r.is_ok());
    let norm = model.normalization();
    let k = model.classes.len();
    let mut out = std::io::stdout().lock();
    for (f, r) in &failed {
        if let Err(e) = r {
            eprintln!("error: {}", crate::error::one_line(e));
        } else {
            unreachable!("partitioned on is_err: {}", f.display());
        }
    }
    // JSON lists every class unless asked; text lists up to FULL_LIST classes, else the top 5.
    let top_k = args.top_k.unwrap_or(k).clamp(1, k);
    let text_top_k = args
        .top_k
        .unwrap_or(if k <= FULL_LIST { k } else { 5 })
        .clamp(1, k);
    let layout = match args.layout {
        Some(l) => l,
        None if ok.len() > COMPACT_ABOVE => Layout::Compact,
        None => Layout::Full,
    };
    let name_width = model
        .classes
        .iter()
        .map(|c| c.chars().count())
        .max()
        .unwrap_or(1);
    let file_width = ok
        .iter()
        .map(|(f, _)| f.display().to_string().chars().count())
        .max()
        .unwrap_or(1);
    let explain_dir = match (&args.explain_dir, args.explain) {
        (Some(d), _) => Some(d.clone()),
        (None, true) => Some(PathBuf::from(".")),
        (None, false) => None,
    };
    if let Some(dir) = &explain_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create folder", dir.display()))?;
    }
    let (mut x, mut labels) = (Tensor::zeros(vec![0]), Vec::new());
    let mut scratch = Tensor::zeros(vec![0]);
    let mut probs = vec![0.0f32; k];
    for chunk in ok.chunks(256) {
        let ds = Dataset {
            name: "predict".into(),
            kind: data::DatasetKind::Folder(PathBuf::from(".")),
            shape: input,
            images: chunk
                .iter()
                .flat_map(|(_, r)| r.as_ref().map(|v| v.as_slice()).unwrap_or(&[]))
                .copied()
                .collect(),
            labels: vec![0; chunk.len()],
            classes: model.classes.clone(),
        };
        let idx: Vec<usize> = (0..chunk.len()).collect();
        data::fill_batch(
            &ds,
            &idx,
            &norm,
            &data::Augment::none(),
            0,
            0,
            &mut x,
            &mut labels,
        );
        let mut logits = Vec::with_capacity(chunk.len() * k);
        tta::logits(&mut net, &x, tta, &mut scratch, &mut logits);
        let len = x.len() / chunk.len().max(1);
        for (i, ((file, _), z)) in chunk.iter().zip(logits.chunks(k)).enumerate() {
            let scaled: Vec<f32> = z.iter().map(|v| v / model.temperature).collect();
            softmax(&scaled, k, &mut probs);
            let pred = argmax(&probs);
            let mut order: Vec<usize> = (0..k).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            // Below --min-confidence the answer is `uncertain`, naming the likeliest classes.
            let uncertain = args.min_confidence.is_some_and(|p| probs[pred] < p);
            let explanation = match &explain_dir {
                Some(dir) => {
                    let xi = &data(&x)[i * len..(i + 1) * len];
                    let image = &chunk[i].1;
                    Some(explain(
                        &mut net,
                        &model,
                        file,
                        dir,
                        xi,
                        image,
                        pred,
                        probs[pred],
                        tta,
                    )?)
                }
                None => None,
            };
            if args.json {
                let mut p = serde_json::Map::new();
                for &c in order.iter().take(top_k) {
                    p.insert(model.classes[c].clone(), serde_json::json!(probs[c]));
                }
                let mut line = serde_json::json!({
                    "file": file.display().to_string(),
                    "class": (!uncertain).then(|| &model.classes[pred]),
                    "uncertain": uncertain,
                    "confidence": probs[pred],
                    "probabilities": p,
                });
                if let Some(path) = &explanation {
                    line["explanation"] = serde_json::json!(path.display().to_string());
                }
                writeln!(out, "{line}")?;
            } else {
                let shown = Shown {
                    file,
                    classes: &model.classes,
                    probs: &probs,
                    order: &order,
                    pred,
                    uncertain,
                };
                match layout {
                    Layout::Full => shown.write_full(&mut out, text_top_k, name_width)?,
                    Layout::Compact => shown.write_compact(&mut out, file_width)?,
                }
                if let Some(path) = &explanation {
                    writeln!(out, "  explanation: {}", path.display())?;
                }
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} images could not be read",
            failed.len(),
            failed.len() + ok.len()
        );
    }
    Ok(())
}

/// Writes `<dir>/<file stem>.explain.png`: the prepared input beside its occlusion map for the
/// predicted class. Returns the path. Shapes: `x` is the normalised input `C×H×W` (flat),
/// `image` the same image as bytes.
#[allow(clippy::too_many_arguments)]
fn explain(
    net: &mut crate::net::graph::Network,
    model: &Model,
    file: &Path,
    dir: &Path,
    x: &[f32],
    image: &Result<Vec<u8>>,
    class: usize,
    prob: f32,
    tta: Tta,
) -> Result<PathBuf> {
    let Ok(image) = image else {
        bail!("{}: no image to explain", file.display());
    };
    let stem = file
        .file_stem()
        .map_or("image".into(), |s| s.to_string_lossy().into_owned());
    let name = format!("{stem}.explain.png");
    let path = if dir == Path::new(".") {
        PathBuf::from(name)
    } else {
        dir.join(name)
    };
    // `.explain.png` is never an input's own name, but a symlink or odd path could make it so.
    if let (Ok(a), Ok(b)) = (path.canonicalize(), file.canonicalize())
        && a == b
    {
        bail!("{}: would overwrite the input image", path.display());
    }
    let [_, h, w] = model.input;
    let cfg = OcclusionConfig {
        tta,
        ..OcclusionConfig::for_input(h, w)
    };
    let heat = occlusion(net, x, model.input, class, model.temperature, &cfg);
    let name = &model.classes[class];
    let title = format!(
        "{}: {name} ({:.1}%)",
        file.file_name()
            .map_or(stem.clone(), |n| n.to_string_lossy().into_owned()),
        100.0 * prob
    );
    crate::commands::plot::explanation(&path, &title, image, model.input, &heat, name)?;
    Ok(path)
}

/// Files as given; folders replaced by the image files inside them (sorted, not recursive).
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("{}: cannot list folder", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && has_image_extension(f))
                .collect();
            if inside.is_empty() {
                bail!(
                    "{}: no image files (png, jpg, bmp, gif, webp) in this folder",
                    p.display()
                );
            }
            inside.sort();
            files.extend(inside);
        } else {
            // A missing file is reported by the decoder, naming it, with the other images read.
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fill_in_eighths() {
        assert_eq!(bar(0.0, 4), "    ");
        assert_eq!(bar(1.0, 4), "████");
        assert_eq!(bar(0.5, 4), "██  ");
        // 0.3 of 32 eighths is 9.6, rounded to 10: one full character and two eighths.
        assert_eq!(bar(0.3, 4), "█▎  ");
        assert_eq!(bar(2.0, 3).chars().count(), 3);
        assert_eq!(bar(f32::NAN, 3).chars().count(), 3);
    }
}
