//! The fast recipe's parts through the binary, on a small network that has them all (a
//! whitening layer fitted to the data, GELU, batch norm without scale and with its own momentum
//! and learning-rate scale, identity-initialised convolutions, a scaled bias-free head) trained
//! with lookahead, reflect-padded crops with alternating flips, the linear schedule and label
//! smoothing: it learns, gives the same weights on one thread and two, and resumes after Ctrl-C
//! to exactly the weights of the uninterrupted run (lookahead's slow copy included).

use crate::common::{cnn, cnn_command, digest, text, train_on_mini};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const ARCH: &str = "\
input 1 28 28
whiten 2 images=500 bias_epochs=1
gelu
conv 8 3 pad=1 bias=no init=dirac
maxpool 2
batchnorm momentum=0.4 eps=1e-12 scale=no lr_scale=8
gelu
conv 16 3 pad=1 bias=no init=dirac
maxpool 2
batchnorm momentum=0.4 eps=1e-12 scale=no lr_scale=8
gelu
maxpool 6
flatten
dense classes bias=no init=uniform
scale 1/9
";

fn args(out: &str, extra: &[&str]) -> Vec<String> {
    let mut a = vec![
        "--arch",
        "fast.arch",
        "--epochs",
        "4",
        "--batch-size",
        "100",
        "--lr",
        "0.5",
        "--momentum",
        "0.85",
        "--lookahead",
        "true",
        "--augment",
        "reflect-crop",
        "--schedule",
        "linear",
        "--label-smoothing",
        "0.2",
        "--keep",
        "last",
        "--tta",
        "flip-shift",
        "--out",
        out,
    ];
    a.extend(extra);
    train_on_mini(&a)
}

#[test]
fn the_fast_recipe_learns_repeats_across_threads_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("fast.arch"), ARCH).unwrap();
    let o = cnn(d, &args("two.cnn", &["--threads", "2"]));
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let acc: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("test: accuracy "))
        .and_then(|l| l.split(',').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no test line in {out}"));
    assert!(acc > 0.5, "learned too little: {acc}\n{out}");
    assert!(out.contains("with --tta flip-shift"), "{out}");
    let want = digest(d, "two.cnn");
    let o = cnn(d, &args("one.cnn", &["--threads", "1", "--quiet"]));
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(
        digest(d, "one.cnn"),
        want,
        "1 thread and 2 give other weights"
    );

    // Ctrl-C after epoch 1's line, then resume: the same weights.
    let mut child = cnn_command()
        .args(args("part.cnn", &[]))
        .current_dir(d)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    assert!(first.starts_with("epoch   1/4"), "{first}");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "not interrupted: {rest:?}");
    let o = cnn(d, &["train", "--resume", "part.cnn.ckpt", "--quiet"]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(
        digest(d, "part.cnn"),
        want,
        "the resumed run ends elsewhere"
    );
    // The model remembers its test-time augmentation.
    let o = cnn(d, &["summary", "--model", "part.cnn"]);
    assert!(o.status.success());
}

/// The general recipe leaves augmentation out of a run too short to profit from it, says so in
/// the header, and `--augment auto` puts it back: the default run's weights are those of
/// `--augment none`, and differ from `--augment auto`'s.
#[test]
fn a_short_run_trains_without_augmentation_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |out: &str, extra: &[&str]| {
        let mut a = vec!["--arch", "lenet5", "--epochs", "1", "--out", out];
        a.extend(extra);
        let o = cnn(d, &train_on_mini(&a));
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{stdout}\n{stderr}");
        (digest(d, out), stderr)
    };
    let (default, header) = run("default.cnn", &[]);
    assert!(
        header.contains("augmentation none (shift ±2 left out: 85 steps planned, under the 500"),
        "{header}"
    );
    assert!(
        header.contains("batch 32 (from 64: 2698 images made 43 steps an epoch, under 50;"),
        "{header}"
    );
    assert!(
        header.contains("recipe: init uniform, cosine schedule"),
        "{header}"
    );
    let (none, _) = run("none.cnn", &["--augment", "none"]);
    assert_eq!(default, none);
    let (auto, header) = run("auto.cnn", &["--augment", "auto"]);
    assert!(header.contains("augmentation shift ±2\n"), "{header}");
    assert_ne!(default, auto);
}

/// `--recipe cifar-fast` lends the preset's recipe to a network written in a file: the same
/// weights as its every setting spelled out in flags, other weights than the general recipe's
/// (which `--recipe general` names), and the flags still override it.
#[test]
fn a_presets_recipe_can_train_a_network_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("fast.arch"), ARCH).unwrap();
    let run = |out: &str, extra: &[&str]| {
        let mut a = vec![
            "--arch",
            "fast.arch",
            "--epochs",
            "2",
            "--batch-size",
            "100",
            "--lr",
            "0.5",
            "--out",
            out,
        ];
        a.extend(extra);
        let o = cnn(d, &train_on_mini(&a));
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{stdout}\n{stderr}");
        (digest(d, out), stderr)
    };
    let (lent, header) = run("lent.cnn", &["--recipe", "cifar-fast"]);
    assert!(
        header.contains("batch 100, Sgd lr 0.5")
            && header.contains("recipe: init uniform, linear schedule, augmentation crop"),
        "{header}"
    );
    // airbench94's settings (`train::recipe`): weight decay 0.0153 / 11.5 in f32.
    let (spelled, _) = run(
        "spelled.cnn",
        &[
            "--momentum",
            "0.85",
            "--nesterov",
            "true",
            "--weight-decay",
            "0.0013304348",
            "--init",
            "uniform",
            "--schedule",
            "linear",
            "--warmup",
            "0",
            "--label-smoothing",
            "0.2",
            "--augment",
            "reflect-crop",
            "--lookahead",
            "true",
            "--val-split",
            "0",
            "--keep",
            "last",
            "--tta",
            "flip-shift",
        ],
    );
    assert_eq!(lent, spelled, "the lent recipe is not airbench94's");
    let (general, _) = run("general.cnn", &[]);
    assert_ne!(lent, general);
    let (named, _) = run("named.cnn", &["--recipe", "general"]);
    assert_eq!(general, named);
    let o = cnn(d, &train_on_mini(&["--recipe", "airbench"]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
}
