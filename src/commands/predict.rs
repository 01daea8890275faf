//! `cnn predict`: the class probabilities of image files.

use super::with_threads;
use crate::commands::cli::PredictArgs;
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

pub fn run(args: PredictArgs) -> Result<()> {
    with_threads(args.threads, || execute(args))
}

fn execute(args: PredictArgs) -> Result<()> {
    crate::kernels::gemm::warm_up_in_background();
    let (model, mut net) = Model::load_with_network(&args.model, &super::build_options())?;
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
    let top_k = args.top_k.unwrap_or(k).clamp(1, k);
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
                if uncertain {
                    let top: Vec<String> = order
                        .iter()
                        .take(2)
                        .map(|&c| format!("{} {:.1}%", model.classes[c], 100.0 * probs[c]))
                        .collect();
                    writeln!(
                        out,
                        "{}: uncertain (top: {})",
                        file.display(),
                        top.join(", ")
                    )?;
                } else {
                    writeln!(
                        out,
                        "{}: {} ({:.1}%)",
                        file.display(),
                        model.classes[pred],
                        100.0 * probs[pred]
                    )?;
                }
                if let Some(path) = &explanation {
                    writeln!(out, "  explanation: {}", path.display())?;
                }
                for &c in order.iter().take(top_k) {
                    let mark = if c == pred { "*" } else { " " };
                    writeln!(out, "  {mark} {:<12} {:.4}", model.classes[c], probs[c])?;
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
