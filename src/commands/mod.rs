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
    if matches!(
        cli.command,
        Command::Train(_) | Command::Eval(_) | Command::Calibrate(_) | Command::Bench(_)
    ) {
        huge_pages(true);
    }
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

/// Turns transparent huge pages on or off for this process (Linux; elsewhere nothing happens).
///
/// `main` turns them off before its first allocation and the commands that stream megabytes
/// per batch (train, eval, calibrate, bench) back on. The allocator advises its whole arena for
/// huge pages, so a short command that touches a few megabytes here and there gets a 2 MB page
/// for every region it touches, each zeroed whole: one `cnn predict`, 2.6 MB of heap, peaked
/// at 28 MB that way and at 12 MB with 4 KB pages (docs/PERFORMANCE.md). Training wants them:
/// gigabytes of activations with fewer faults and TLB misses.
pub fn huge_pages(on: bool) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: PR_SET_THP_DISABLE takes an integer flag and touches no memory of ours; a kernel
    // without it returns an error, and then the pages stay as they were.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, libc::c_ulong::from(!on), 0, 0, 0);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = on;
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
static BUILT_IN_MODEL: &[u8] = &BUILT_IN_MODEL_ALIGNED.0;

/// Bytes aligned like the `f32`s they hold, so that the model's weights are used where they lie
/// (see `store::container::read_embedded`).
#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);
static BUILT_IN_MODEL_ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!("../../models/mnist.cnn"));

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

    /// The built-in model's weights are used where they lie in the binary, not copied.
    #[test]
    fn the_built_in_model_lends_its_weights() {
        let (_, mut net) = load_model(None).unwrap();
        let mut lent = 0;
        net.visit_params(&mut |name, p| {
            let borrowed = matches!(p.value, std::borrow::Cow::Borrowed(_));
            assert_eq!(borrowed, cfg!(target_endian = "little"), "{name}");
            lent += usize::from(borrowed) * p.value.len();
        });
        assert!(cfg!(target_endian = "big") || lent * 4 > BUILT_IN_MODEL.len() * 9 / 10);
    }

    /// `main` runs with huge pages off; the heavy commands turn them on. Where the flag does not
    /// exist (qemu-user does not emulate it) both calls must still return quietly.
    #[cfg(target_os = "linux")]
    #[test]
    fn huge_pages_switch_the_process_flag() {
        // SAFETY: PR_GET_THP_DISABLE reads a flag of this process.
        let disabled = || unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        let before = disabled();
        if before < 0 {
            huge_pages(false);
            huge_pages(true);
            assert!(disabled() < 0);
            return;
        }
        huge_pages(false);
        assert_eq!(disabled(), 1);
        huge_pages(true);
        assert_eq!(disabled(), 0);
        huge_pages(before == 0);
    }

    /// The one check `cnn predict` skips for the built-in model, made here.
    #[test]
    fn the_built_in_model_passes_its_digest() {
        let (model, _) = load_model(None).unwrap();
        assert_eq!(model.classes.len(), 10);
        read_bytes(BUILT_IN_MODEL, BUILT_IN_MODEL_NAME, Kind::Model).unwrap();
    }
}
