//! `cnn eval`: measure a saved model on a dataset's test split.

use super::init_threads;
use super::train::evaluate;
use crate::cli::EvalArgs;
use crate::data::{self, LoadOptions, Normalization};
use crate::metrics::Report;
use crate::model_file::Model;
use anyhow::{Result, bail};
use std::io::Write;

pub fn run(args: EvalArgs) -> Result<()> {
    init_threads(args.threads)?;
    let model = Model::load(&args.model)?;
    let mut net = model.build_network()?;
    let dataset = args
        .dataset
        .clone()
        .unwrap_or_else(|| model.provenance.dataset.clone());
    let opts = LoadOptions {
        skip_bad: args.skip_bad,
        val_split: 0.0,
        seed: 0,
    };
    let (ds, skipped) = data::load_eval(&dataset, args.data_dir.as_deref(), model.input, &opts)?;
    if ds.classes != model.classes {
        bail!(
            "{}: the model's classes ({}) differ from the dataset's ({})",
            args.model.display(),
            model.classes.join(", "),
            ds.classes.join(", ")
        );
    }
    let norm = Normalization {
        mean: model.norm_mean.clone(),
        std: model.norm_std.clone(),
    };
    let top_k = args.top_k.clamp(1, model.classes.len());
    let report = evaluate(&mut net, &ds, &norm, args.batch_size.max(1), top_k);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
    } else {
        print_report(&mut out, &report, &ds.name)?;
        if skipped > 0 {
            writeln!(out, "({skipped} unreadable images skipped)")?;
        }
    }
    Ok(())
}

fn print_report(out: &mut impl Write, r: &Report, source: &str) -> Result<()> {
    writeln!(out, "dataset:   {source} ({} images)", r.images)?;
    writeln!(out, "accuracy:  {:.4}", r.accuracy)?;
    writeln!(out, "top-{}:     {:.4}", r.top_k, r.top_k_accuracy)?;
    writeln!(out, "loss:      {:.4} (mean cross-entropy)", r.loss)?;
    writeln!(out, "brier:     {:.4}", r.brier)?;
    writeln!(out, "ece:       {:.4} (15 bins)", r.ece)?;
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
