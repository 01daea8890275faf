//! Helpers shared by the integration tests that drive the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The project's root (where `data/` and `models/` are).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The shipped MNIST subset, as a `--data-dir` argument.
pub fn mini() -> String {
    repo().join("data/mnist-mini").display().to_string()
}

/// `cnn train` on the shipped MNIST subset, then `extra` (architecture, batch size, ...).
pub fn train_on_mini(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--dataset", "mnist", "--data-dir", &mini()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The words that start the `cnn` binary: its path, after the runner cargo started this test
/// with, if one is set for this architecture (`CARGO_TARGET_<TRIPLE>_RUNNER`, such as
/// `qemu-aarch64 -L /usr/aarch64-linux-gnu` for a cross-compiled build), since a binary this
/// machine cannot execute needs the same emulator as the test.
pub fn cnn_argv() -> Vec<String> {
    let arch = std::env::consts::ARCH.to_uppercase();
    let runner = std::env::vars().find(|(k, _)| {
        k.starts_with("CARGO_TARGET_") && k.ends_with("_RUNNER") && k.contains(&arch)
    });
    let mut argv: Vec<String> = runner
        .map(|(_, v)| v.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    argv.push(env!("CARGO_BIN_EXE_cnn").to_string());
    argv
}

/// A command that runs the `cnn` binary (through the runner, see [`cnn_argv`]).
pub fn cnn_command() -> Command {
    let argv = cnn_argv();
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

/// Runs `cnn ARGS` in `dir`.
pub fn cnn<S: AsRef<std::ffi::OsStr>>(dir: &Path, args: &[S]) -> Output {
    cnn_command()
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run cnn")
}

/// Stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Asserts the exit code, that stderr contains every needle, and that nothing panicked.
pub fn assert_fails(o: &Output, code: i32, needles: &[&str]) {
    let (out, err) = text(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
    assert!(!err.contains("panicked"), "panic:\n{err}");
}

/// The `weights-sha256:` line of `cnn summary --model MODEL` (run in `dir`).
pub fn digest(dir: &Path, model: &str) -> String {
    let o = cnn(dir, &["summary", "--model", model]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{model} does not load: {err}");
    out.lines()
        .find_map(|l| l.strip_prefix("weights-sha256: "))
        .unwrap_or_else(|| panic!("no digest in:\n{out}"))
        .to_string()
}

/// The value of the environment variable an opt-in test needs, or `None` after saying on the
/// test's output that the part needing it was skipped.
pub fn opt_in(var: &str) -> Option<String> {
    let v = std::env::var(var).ok();
    if v.is_none() {
        println!("skipped: {var} is not set");
    }
    v
}

/// `CNN_MNIST_DIR` and `CNN_CIFAR_DIR` for an opt-in test on the full datasets: either may be
/// missing (that part is skipped, and says so), not both.
pub fn mnist_and_cifar_dirs() -> (Option<String>, Option<String>) {
    let (mnist, cifar) = (opt_in("CNN_MNIST_DIR"), opt_in("CNN_CIFAR_DIR"));
    assert!(
        mnist.is_some() || cifar.is_some(),
        "set CNN_MNIST_DIR and/or CNN_CIFAR_DIR (see the test's comment)"
    );
    (mnist, cifar)
}
