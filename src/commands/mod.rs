//! The command line's edge: the CLI definitions ([`cli`]), one thin driver per subcommand, the
//! plots, and all printing. Each driver resolves its flags into values, calls the library and
//! reports; no driver imports another (what two share lives in this file, [`format`] or below).
//! The environment switches are read here ([`build_options`]) and nowhere else.
//!
//! May use: everything below it.

pub mod bench;
pub mod calibrate;
pub mod cli;
pub mod eval;
pub mod export;
pub mod format;
pub mod plot;
pub mod predict;
pub mod summary;
pub mod train;

use crate::commands::cli::{Cli, Command};
use crate::kernels::isa::{self, Isa};
use crate::net::graph::{BuildOptions, Network};
use crate::net::presets;
use crate::net::spec::{self, ArchSpec};
use crate::store::Model;
use crate::usage;
use anyhow::{Context, Result};
use std::path::Path;

pub fn run(cli: Cli) -> Result<()> {
    limit_isa()?;
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Calibrate(a) => calibrate::run(a),
        Command::Summary(a) => summary::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Export(a) => export::run(a),
    }
}

/// True when the error is a write to a closed pipe (`cnn predict ... | head`): not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Sets the worker thread count (default: all cores), then runs `f` on a worker of that pool.
///
/// Why on a worker: a parallel loop started from outside the pool hands its work over and puts
/// the caller to sleep until it ends, two thread wake-ups per loop, and a training step has
/// about a hundred loops; on a worker the loop starts on the calling thread at once.
pub fn with_threads<R: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> Result<R> + Send,
) -> Result<R> {
    if threads == Some(0) {
        usage!("--threads must be at least 1");
    }
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(t) = threads {
        b = b.num_threads(t);
    }
    // A second call (tests driving several commands in one process) keeps the first pool.
    let _ = b.build_global();
    // `scope` runs its body on a worker of the global pool when called from outside it.
    rayon::scope(|_| f())
}

/// How networks are built: the fast paths, unless an environment switch turns one off to
/// compare (`CNN_FUSE=off`: no layer fusion; `CNN_CONV=im2col`: no Winograd convolution). The
/// one place that reads them.
pub fn build_options() -> BuildOptions {
    let var = |name| std::env::var(name).ok();
    BuildOptions {
        fuse: var("CNN_FUSE").as_deref() != Some("off"),
        winograd: var("CNN_CONV").as_deref() != Some("im2col"),
        ..BuildOptions::default()
    }
}

/// Caps the kernels' instruction set at `CNN_ISA` (`portable`, `avx2` or `avx512`; unset: the
/// best the CPU has), so any machine can run and compare every lower path. The one place that
/// reads it; a name the CPU cannot run is refused rather than quietly lowered.
pub fn limit_isa() -> Result<()> {
    let Ok(name) = std::env::var("CNN_ISA") else {
        return Ok(());
    };
    let names: Vec<&str> = Isa::ALL.iter().map(|isa| isa.name()).collect();
    let Some(isa) = Isa::from_name(&name) else {
        usage!("CNN_ISA={name}: unknown; known: {}", names.join(", "));
    };
    if isa > Isa::detected() {
        usage!(
            "CNN_ISA={name}: this CPU has only {}",
            Isa::detected().name()
        );
    }
    isa::limit(isa);
    Ok(())
}

/// The digit model built into the binary (`models/mnist.cnn` at build time), so that `cnn
/// predict` works from any folder and after `cargo install`.
const BUILT_IN_MODEL: &[u8] = include_bytes!("../../models/mnist.cnn");

/// What `--model` names in messages when it is not given.
pub const BUILT_IN_MODEL_NAME: &str = "the built-in digit model";

/// The model at `path` and its network, or without a path the built-in digit model.
pub fn load_model(path: Option<&Path>) -> Result<(Model, Network)> {
    match path {
        Some(p) => Model::load_with_network(p, &build_options()),
        None => Model::embedded_with_network(BUILT_IN_MODEL, BUILT_IN_MODEL_NAME, &build_options()),
    }
}

/// A preset name or an architecture file, parsed.
pub fn load_arch(arch: &str) -> Result<ArchSpec> {
    if let Some(text) = presets::preset(arch) {
        return Ok(spec::parse(text).expect("presets parse"));
    }
    let path = Path::new(arch);
    if !path.exists() {
        let names: Vec<&str> = presets::PRESETS.iter().map(|p| p.0).collect();
        usage!(
            "--arch {arch}: neither a preset ({}) nor an existing file",
            names.join(", ")
        );
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{arch}: cannot read"))?;
    spec::parse(&text).map_err(|e| anyhow::anyhow!("{arch}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::container::{Kind, read_bytes};

    /// The one check `cnn predict` skips for the built-in model, made here.
    #[test]
    fn the_built_in_model_passes_its_digest() {
        let (model, _) = load_model(None).unwrap();
        assert_eq!(model.classes.len(), 10);
        read_bytes(BUILT_IN_MODEL, BUILT_IN_MODEL_NAME, Kind::Model).unwrap();
    }
}
