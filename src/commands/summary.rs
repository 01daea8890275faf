//! `cnn summary`: an architecture layer by layer, or a saved model's details.

use super::format::group;
use super::load_arch;
use crate::commands::cli::SummaryArgs;
use crate::net::graph::Network;
use crate::store::Model;
use crate::store::params::weights_sha256;
use crate::tensor::fmt_shape;
use anyhow::Result;
use std::io::Write;

pub fn run(args: SummaryArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if let Some(path) = &args.model {
        let (model, mut net) = Model::load_with_network(path, &super::build_options())?;
        let p = &model.provenance;
        writeln!(out, "model:      {}", path.display())?;
        writeln!(
            out,
            "classes:    {} ({})",
            model.classes.len(),
            model.classes.join(", ")
        )?;
        writeln!(out, "input:      {}", fmt_shape(&model.input))?;
        let norm: Vec<String> = model
            .norm_mean
            .iter()
            .zip(&model.norm_std)
            .map(|(m, s)| format!("{m:.4}±{s:.4}"))
            .collect();
        writeln!(out, "normalise:  {}", norm.join(", "))?;
        writeln!(
            out,
            "trained on: {} for {} epochs, seed {}",
            p.dataset, p.epochs, p.seed
        )?;
        for (k, v) in &p.metrics {
            writeln!(out, "  {k}: {v:.4}")?;
        }
        writeln!(out, "written by: cnn {}", p.cnn_version)?;
        writeln!(out)?;
        print_table(&mut out, &mut net)?;
        writeln!(out, "weights-sha256: {}", weights_sha256(&mut net))?;
    } else {
        let arch = args.arch.as_deref().unwrap_or_default();
        let spec = load_arch(arch)?;
        let mut net = Network::build(&spec, args.classes, Some(0), &super::build_options())
            .map_err(|e| anyhow::anyhow!("{arch}: {e}"))?;
        writeln!(out, "architecture: {arch} ({} classes)\n", args.classes)?;
        print_table(&mut out, &mut net)?;
    }
    Ok(())
}

fn print_table(out: &mut impl Write, net: &mut Network) -> Result<()> {
    let input = net.input_shape();
    let rows = net.summary();
    // The spec column as wide as its longest line (28 at least, as before).
    let w = rows
        .iter()
        .map(|r| r.spec.chars().count())
        .max()
        .unwrap_or(0)
        .max(28);
    writeln!(
        out,
        "{:<10} {:<w$} {:>14} {:>12} {:>14}",
        "layer", "spec", "output", "params", "MACs/image"
    )?;
    writeln!(
        out,
        "{:<10} {:<w$} {:>14} {:>12} {:>14}",
        "input",
        "",
        fmt_shape(&input),
        "",
        ""
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<10} {:<w$} {:>14} {:>12} {:>14}",
            r.name,
            r.spec,
            fmt_shape(&r.out_shape),
            group(r.params as u64),
            group(r.macs)
        )?;
    }
    let params: usize = rows.iter().map(|r| r.params).sum();
    let macs: u64 = rows.iter().map(|r| r.macs).sum();
    writeln!(
        out,
        "{:<10} {:<w$} {:>14} {:>12} {:>14}",
        "total",
        "",
        "",
        group(params as u64),
        group(macs)
    )?;
    Ok(())
}
