//! `cnn calibrate`: fit the softmax temperature on validation images and store it in the model.
//!
//! The logits of the validation images are computed once; the temperature that minimises their
//! negative log-likelihood is found by [`calibration::fit_temperature`]. The test split is never
//! read, so `cnn eval` afterwards measures the calibrated model on unseen images.

use super::with_threads;
use crate::commands::cli::CalibrateArgs;
use crate::data::{self, LoadOptions};
use crate::infer::calibration;
use crate::infer::evaluate::infer_logits;
use crate::infer::metrics::Report;
use crate::infer::tta::Tta;
use crate::rng;
use crate::store::Model;
use crate::usage;
use anyhow::{Result, anyhow, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// Validation fraction when neither `--val-split` nor the model's provenance gives one (the
/// training default).
const DEFAULT_VAL_SPLIT: f32 = 0.1;

/// The figures that calibration changes, on the validation images.
#[derive(Serialize)]
struct Figures {
    temperature: f64,
    nll: f64,
    ece: f64,
    brier: f64,
    accuracy: f64,
}

impl Figures {
    fn of(logits: &[f32], labels: &[usize], classes: &[String], t: f32) -> Figures {
        let mut z = logits.to_vec();
        calibration::scale(&mut z, t);
        let r = Report::from_logits(&z, labels, classes, 1);
        Figures {
            temperature: calibration::readable(t),
            nll: r.nll,
            ece: r.ece,
            brier: r.brier,
            accuracy: r.accuracy,
        }
    }
}

pub fn run(args: CalibrateArgs) -> Result<()> {
    with_threads(args.threads, || execute(args))
}

fn execute(args: CalibrateArgs) -> Result<()> {
    let mut model = Model::load(&args.model)?;
    let mut net = model
        .build_network(&super::build_options())
        .map_err(|e| anyhow!("{}: {e:#}", args.model.display()))?;
    let dataset = args
        .data
        .dataset
        .clone()
        .unwrap_or_else(|| model.provenance.dataset.clone());
    let recorded = model
        .provenance
        .extra
        .get("val_split")
        .and_then(|v| v.parse::<f32>().ok());
    if recorded == Some(0.0) && args.val_split.is_none() {
        eprintln!(
            "warning: {} was trained on its whole training split (--val-split 0): unless the \
             dataset has a val/ folder, the images used here were seen in training, and the \
             fitted temperature comes out too low",
            args.model.display()
        );
    }
    if let Some(w) = other_streams_warning(&model.provenance.extra) {
        eprintln!("warning: {}: {w}", args.model.display());
    }
    let val_split = args
        .val_split
        .or(recorded.filter(|v| *v > 0.0))
        .unwrap_or(DEFAULT_VAL_SPLIT);
    if !(val_split > 0.0 && val_split < 0.9) {
        usage!("--val-split must be in (0, 0.9) for calibration, got {val_split}");
    }
    let seed = args.seed.unwrap_or(model.provenance.seed);
    let opts = LoadOptions {
        skip_bad: args.data.skip_bad,
        val_split,
        seed,
    };
    // Validation only: `data::load` carves it from the training split (or reads a folder's
    // val/); the test split is loaded alongside but never used.
    let splits = data::load(&dataset, args.data.data_dir.as_deref(), model.input, &opts)?;
    let Some(val) = splits.val else {
        bail!("{dataset}: no validation images to calibrate on");
    };
    model.check_classes(&args.model, &val.classes)?;
    let norm = model.normalization();
    let logits = infer_logits(&mut net, &val, &norm, args.batch_size.max(1), Tta::None);
    let labels: Vec<usize> = val.labels.iter().map(|&l| l as usize).collect();
    let before = Figures::of(&logits, &labels, &model.classes, model.temperature);
    let t = calibration::fit_temperature(&logits, &labels, model.classes.len()) as f32;
    let after = Figures::of(&logits, &labels, &model.classes, t);
    let at_bound = t <= calibration::T_MIN as f32 * 1.01 || t >= calibration::T_MAX as f32 * 0.99;

    model.temperature = t;
    let p = &mut model.provenance;
    p.extra.insert(
        "calibration".into(),
        format!(
            "temperature fitted on {} ({} images, validation split {val_split}, seed {seed})",
            val.name,
            val.len()
        ),
    );
    p.metrics
        .insert("calibration_ece_before".into(), before.ece);
    p.metrics.insert("calibration_ece_after".into(), after.ece);
    p.metrics
        .insert("calibration_nll_before".into(), before.nll);
    p.metrics.insert("calibration_nll_after".into(), after.nll);
    let out_path = args.out.clone().unwrap_or_else(|| args.model.clone());
    model.save(&out_path)?;

    let mut out = std::io::stdout().lock();
    if args.json {
        let line = serde_json::json!({
            "model": out_path.display().to_string(),
            "validation": val.name,
            "images": val.len(),
            "temperature": calibration::readable(t),
            "before": before,
            "after": after,
        });
        writeln!(out, "{line}")?;
    } else {
        writeln!(out, "validation: {} ({} images)", val.name, val.len())?;
        writeln!(
            out,
            "{:<16} {:>11} {:>8} {:>8} {:>8}",
            "", "temperature", "nll", "ece", "brier"
        )?;
        for (name, f) in [("before", &before), ("after", &after)] {
            writeln!(
                out,
                "{name:<16} {:>11.4} {:>8.4} {:>8.4} {:>8.4}",
                f.temperature, f.nll, f.ece, f.brier
            )?;
        }
        writeln!(
            out,
            "accuracy {:.4} (unchanged: a temperature never changes the top class)",
            after.accuracy
        )?;
        writeln!(out, "temperature {t:.4} saved to {}", out_path.display())?;
    }
    if at_bound {
        eprintln!(
            "warning: the temperature {t:.4} is at the edge of the search range [{}, {}]: the \
             validation set may be too small or the model predicts every image correctly",
            calibration::T_MIN,
            calibration::T_MAX
        );
    }
    Ok(())
}

/// Why a model's held-out split cannot be recreated here, if it cannot: it was drawn by another
/// random generator than this cnn's (see [`rng::STREAMS_KEY`]).
fn other_streams_warning(extra: &BTreeMap<String, String>) -> Option<String> {
    let streams = extra.get(rng::STREAMS_KEY).map(String::as_str);
    (streams != Some(rng::STREAMS)).then(|| {
        format!(
            "trained with other random streams ({}): the validation images drawn here are not \
             the ones it held out, so some were seen in training and the fitted temperature \
             comes out too low (unless the dataset has a val/ folder)",
            streams.unwrap_or("cnn's earlier SplitMix64")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_from_other_random_streams_is_warned_about() {
        let mut extra = BTreeMap::new();
        let old = other_streams_warning(&extra).expect("a file without the key");
        assert!(old.contains("SplitMix64"), "{old}");
        extra.insert(rng::STREAMS_KEY.to_string(), "pcg".to_string());
        assert!(other_streams_warning(&extra).unwrap().contains("(pcg)"));
        extra.insert(rng::STREAMS_KEY.to_string(), rng::STREAMS.to_string());
        assert_eq!(other_streams_warning(&extra), None);
    }
}
