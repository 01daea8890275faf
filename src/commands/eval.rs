//! `cnn eval`: measure a saved model on a dataset's test split.

use super::with_threads;
use crate::commands::cli::EvalArgs;
use crate::commands::plot;
use crate::data::{self, LoadOptions};
use crate::infer::calibration;
use crate::infer::evaluate::infer_logits;
use crate::infer::metrics::{self, Coverage, ECE_BINS, Report};
use anyhow::{Context, Result};
use std::io::Write;

/// Confidence thresholds of the coverage/accuracy table.
const THRESHOLDS: [f64; 5] = [0.5, 0.8, 0.9, 0.95, 0.99];

/// What eval adds to the report about probabilities: the temperature and the figures without
/// it, and the coverage/accuracy trade-off of answering only above a confidence threshold.
struct Confidence {
    temperature: f32,
    uncalibrated: Report,
    table: Vec<Coverage>,
    chosen: Option<Coverage>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    with_threads(args.threads, || execute(args))
}

fn execute(args: EvalArgs) -> Result<()> {
    let (model, mut net) = super::load_model(args.model.as_deref())?;
    let model_path = args
        .model
        .clone()
        .unwrap_or_else(|| super::BUILT_IN_MODEL_NAME.into());
    let dataset = args
        .data
        .dataset
        .clone()
        .unwrap_or_else(|| model.provenance.dataset.clone());
    let opts = LoadOptions {
        skip_bad: args.data.skip_bad,
        val_split: 0.0,
        seed: 0,
    };
    let (ds, skipped) =
        data::load_eval(&dataset, args.data.data_dir.as_deref(), model.input, &opts)?;
    model.check_classes(&model_path, &ds.classes)?;
    let norm = model.normalization();
    let top_k = args.top_k.clamp(1, model.classes.len());
    let tta = crate::infer::tta::choose(args.tta, &model);
    let mut logits = infer_logits(&mut net, &ds, &norm, args.batch_size.max(1), tta);
    let labels: Vec<usize> = ds.labels.iter().map(|&l| l as usize).collect();
    let uncalibrated = Report::from_logits(&logits, &labels, &ds.classes, top_k);
    // Every figure below uses the model's probabilities, softmax(logits / T); the top class,
    // hence accuracy and the confusion matrix, does not depend on T.
    let t = model.temperature;
    calibration::scale(&mut logits, t);
    let report = Report::from_logits(&logits, &labels, &ds.classes, top_k);
    let cc = &report.confidence_correct;
    let conf = Confidence {
        temperature: t,
        table: THRESHOLDS
            .iter()
            .map(|&p| metrics::coverage(cc, p))
            .collect(),
        chosen: args
            .min_confidence
            .map(|p| metrics::coverage(cc, calibration::readable(p))),
        uncalibrated,
    };
    let plots = match &args.plots {
        Some(dir) => write_plots(dir, &report, &conf, &ds.name)?,
        None => Vec::new(),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(m) = v.as_object_mut() {
            use serde_json::json;
            m.insert("temperature".into(), json!(calibration::readable(t)));
            m.insert("tta".into(), json!(tta.name()));
            m.insert("ece_uncalibrated".into(), json!(conf.uncalibrated.ece));
            m.insert("nll_uncalibrated".into(), json!(conf.uncalibrated.nll));
            m.insert("coverage_table".into(), json!(conf.table));
            if let Some(c) = &conf.chosen {
                m.insert("min_confidence".into(), json!(c.threshold));
                m.insert("coverage".into(), json!(c.coverage));
                m.insert("covered_accuracy".into(), json!(c.accuracy));
            }
        }
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
    } else {
        print_report(&mut out, &report, &conf, &ds.name)?;
        if tta != crate::infer::tta::Tta::None {
            writeln!(out, "(test-time augmentation: {})", tta.name())?;
        }
        if skipped > 0 {
            writeln!(out, "({skipped} unreadable images skipped)")?;
        }
        for p in &plots {
            writeln!(out, "plot: {}", p.display())?;
        }
    }
    Ok(())
}

/// `dir/confusion.png` and `dir/reliability.png`; returns their paths.
fn write_plots(
    dir: &std::path::Path,
    r: &Report,
    conf: &Confidence,
    source: &str,
) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create folder", dir.display()))?;
    let (confusion, reliability) = (dir.join("confusion.png"), dir.join("reliability.png"));
    plot::confusion(
        &confusion,
        &format!(
            "{source}: {} images, accuracy {:.2}%",
            r.images,
            100.0 * r.accuracy
        ),
        &r.classes,
        &r.confusion,
    )?;
    let bins = metrics::reliability(&r.confidence_correct, ECE_BINS);
    let scaled = conf.temperature != 1.0;
    let before =
        scaled.then(|| metrics::reliability(&conf.uncalibrated.confidence_correct, ECE_BINS));
    let title = if scaled {
        format!(
            "Reliability: ECE {:.4} at T = {:.3} ({:.4} at T = 1)",
            r.ece, conf.temperature, conf.uncalibrated.ece
        )
    } else {
        format!("Reliability: ECE {:.4} ({} images)", r.ece, r.images)
    };
    plot::reliability(&reliability, &title, &bins, before.as_deref())?;
    Ok(vec![confusion, reliability])
}

fn print_report(out: &mut impl Write, r: &Report, conf: &Confidence, source: &str) -> Result<()> {
    let t = conf.temperature;
    let at_t = if t != 1.0 {
        format!(", at temperature {t:.4}")
    } else {
        String::new()
    };
    writeln!(out, "dataset:   {source} ({} images)", r.images)?;
    writeln!(out, "accuracy:  {:.4}", r.accuracy)?;
    writeln!(out, "top-{}:     {:.4}", r.top_k, r.top_k_accuracy)?;
    writeln!(out, "loss:      {:.4} (mean cross-entropy{at_t})", r.loss)?;
    writeln!(out, "brier:     {:.4}", r.brier)?;
    writeln!(out, "ece:       {:.4} (15 bins{at_t})", r.ece)?;
    if t != 1.0 {
        writeln!(
            out,
            "ece T=1:   {:.4} (before temperature scaling; loss {:.4}, brier {:.4})",
            conf.uncalibrated.ece, conf.uncalibrated.loss, conf.uncalibrated.brier
        )?;
    }
    writeln!(
        out,
        "\nanswering only when the top probability is at least P:\n{:>8} {:>9} {:>9}",
        "P", "coverage", "accuracy"
    )?;
    let row = |c: &Coverage| {
        let acc = c.accuracy.map_or("-".to_string(), |a| format!("{a:.4}"));
        format!("{:>8.2} {:>9.4} {acc:>9}", c.threshold, c.coverage)
    };
    for c in &conf.table {
        writeln!(out, "{}", row(c))?;
    }
    if let Some(c) = &conf.chosen {
        writeln!(out, "{}  (--min-confidence)", row(c))?;
    }
    writeln!(out, "\nconfusion matrix (rows: actual, columns: predicted)")?;
    let width = r
        .classes
        .iter()
        .map(|c| c.len())
        .max()
        .unwrap_or(1)
        .clamp(5, 14);
    let cell = r
        .confusion
        .iter()
        .flatten()
        .max()
        .map_or(1, |m| m.to_string().len())
        .max(3)
        + 1;
    write!(out, "{:>width$}", "")?;
    for (i, _) in r.classes.iter().enumerate() {
        write!(out, "{:>cell$}", i)?;
    }
    writeln!(out)?;
    let numbered = r
        .classes
        .iter()
        .enumerate()
        .all(|(i, c)| *c == i.to_string());
    for (i, row) in r.confusion.iter().enumerate() {
        let label = if numbered {
            r.classes[i].clone()
        } else {
            format!("{i} {}", truncate(&r.classes[i], width - 2))
        };
        write!(out, "{label:>width$}")?;
        for v in row {
            write!(out, "{v:>cell$}")?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "\n{:<width$} {:>9} {:>9} {:>9} {:>8}",
        "class", "precision", "recall", "f1", "support"
    )?;
    for c in &r.per_class {
        writeln!(
            out,
            "{:<width$} {:>9.4} {:>9.4} {:>9.4} {:>8}",
            truncate(&c.class, width),
            c.precision,
            c.recall,
            c.f1,
            c.support
        )?;
    }
    if !r.most_confused.is_empty() {
        writeln!(out, "\nmost confused (actual → predicted)")?;
        for p in &r.most_confused {
            writeln!(out, "  {} → {}: {}", p.actual, p.predicted, p.count)?;
        }
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
