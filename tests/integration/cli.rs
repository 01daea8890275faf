//! End-to-end tests through the real binary, in temporary folders, on the shipped MNIST subset.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{assert_fails, cnn, cnn_command, digest, mini, repo, text, train_on_mini};

/// A small, fast training run: LeNet-5 on 3,000 digits, plus `extra`.
fn train_args(extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--arch", "lenet5", "--batch-size", "50", "--quiet"];
    args.extend(extra);
    train_on_mini(&args)
}

fn train(dir: &Path, extra: &[&str]) -> Output {
    cnn(dir, &train_args(extra))
}

#[test]
fn train_eval_predict_summary_on_the_shipped_subset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mini = mini();
    let o = cnn(
        d,
        &[
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            &mini,
            "--arch",
            "lenet5",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--out",
            "m.cnn",
            "--log",
            "log.csv",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("epoch   2/2") && out.contains("val loss") && out.contains("test: accuracy"),
        "{out}"
    );
    let log = std::fs::read_to_string(d.join("log.csv")).unwrap();
    assert!(
        log.starts_with("epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,seconds\n1,"),
        "{log}"
    );
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(d.join("m.cnn.ckpt").exists());

    let o = cnn(
        d,
        &[
            "eval",
            "--model",
            "m.cnn",
            "--dataset",
            "mnist",
            "--data-dir",
            &mini,
            "--json",
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let acc = v["accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.8 && acc <= 1.0,
        "two epochs of LeNet-5 should pass 80%: {acc}"
    );
    assert!(v["loss"].as_f64().unwrap() > 0.0);
    let confusion = v["confusion"].as_array().unwrap();
    let total: u64 = confusion
        .iter()
        .flat_map(|r| r.as_array().unwrap())
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(total, 500);

    let o = cnn(
        d,
        &[
            "eval",
            "--model",
            "m.cnn",
            "--dataset",
            "mnist",
            "--data-dir",
            &mini,
        ],
    );
    let (out, _) = text(&o);
    assert!(
        out.contains("confusion matrix")
            && out.contains("precision")
            && out.contains("most confused"),
        "{out}"
    );

    let samples = repo().join("data/samples");
    let o = cnn(
        d,
        &[
            "predict",
            "--model",
            "m.cnn",
            "--json",
            samples.to_str().unwrap(),
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10);
    for l in &lines {
        let probs = l["probabilities"].as_object().unwrap();
        assert_eq!(probs.len(), 10);
        let sum: f64 = probs.values().map(|p| p.as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-4, "{l}");
        let class = l["class"].as_str().unwrap();
        let best = probs
            .iter()
            .max_by(|a, b| a.1.as_f64().partial_cmp(&b.1.as_f64()).unwrap())
            .unwrap()
            .0;
        assert_eq!(class, best);
        assert!(l["file"].as_str().unwrap().ends_with(".png"));
    }

    let o = cnn(
        d,
        &[
            "predict",
            "--model",
            "m.cnn",
            "--top-k",
            "3",
            samples.join("7.png").to_str().unwrap(),
        ],
    );
    let (out, _) = text(&o);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(
        out.lines().nth(1).unwrap().trim_start().starts_with('*'),
        "the top class is marked: {out}"
    );

    let o = cnn(d, &["summary", "--model", "m.cnn"]);
    let (out, _) = text(&o);
    assert!(
        out.contains("conv1") && out.contains("classes:    10") && out.contains("weights-sha256: "),
        "{out}"
    );
}

#[test]
fn summary_of_mnist_ref_shows_its_parameter_count() {
    let dir = tempfile::tempdir().unwrap();
    let o = cnn(dir.path(), &["summary", "--arch", "mnist-ref"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(
        out.contains("1,199,882") && out.contains("11,992,448"),
        "{out}"
    );
    let o = cnn(dir.path(), &["summary", "--arch", "cifar-ref"]);
    assert!(text(&o).0.contains("551,018"));
}

#[test]
fn same_seed_gives_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for name in ["a.cnn", "b.cnn"] {
        let o = train(d, &["--epochs", "1", "--keep", "last", "--out", name]);
        assert!(o.status.success(), "{}", text(&o).1);
    }
    assert_eq!(digest(d, "a.cnn"), digest(d, "b.cnn"));
    let o = train(
        d,
        &[
            "--epochs", "1", "--keep", "last", "--out", "c.cnn", "--seed", "2",
        ],
    );
    assert!(o.status.success());
    assert_ne!(digest(d, "a.cnn"), digest(d, "c.cnn"));
}

/// Interrupt a run (Ctrl-C mid-epoch, and kill -9 at a random later moment), resume it, and
/// end with exactly the weights of the uninterrupted run.
#[test]
fn interrupted_and_killed_runs_resume_to_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = train(d, &["--epochs", "4", "--keep", "last", "--out", "full.cnn"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let want = digest(d, "full.cnn");

    // Not quiet: the epoch lines on stdout say when to interrupt.
    let args: Vec<String> = train_args(&["--epochs", "4", "--keep", "last", "--out", "part.cnn"])
        .into_iter()
        .filter(|a| a != "--quiet")
        .collect();
    let spawn = || {
        cnn_command()
            .args(&args)
            .current_dir(d)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let ckpt = d.join("part.cnn.ckpt");

    // Ctrl-C (SIGINT) during epoch 2: a checkpoint at the exact batch, exit code 130. The
    // signal goes as soon as epoch 1's line is out, with three epochs (seconds) still to run.
    let mut child = spawn();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    assert!(first.starts_with("epoch   1/4"), "{first}");
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(130),
        "the run was not interrupted (it printed {rest:?}): {err}"
    );
    assert!(err.contains("--resume") && ckpt.exists(), "{err}");
    assert!(rest.is_empty(), "epochs after the interrupt: {rest:?}");

    // Resume, and kill -9 at several moments of the resumed run; each time resume again.
    let ckpt_s = ckpt.display().to_string();
    let mut rng = 12345u64;
    for _ in 0..3 {
        let child = cnn_command()
            .args(["train", "--resume", &ckpt_s, "--quiet"])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(100 + (rng >> 33) % 1500));
        Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status()
            .unwrap();
        let _ = child.wait_with_output();
        // Whatever the moment, the checkpoint left behind must load: the next resume checks it.
    }
    let o = cnn(d, &["train", "--resume", &ckpt_s, "--quiet"]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert_eq!(digest(d, "part.cnn"), want);
}

#[test]
fn bad_inputs_get_one_line_errors_and_the_right_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = train(d, &["--epochs", "1", "--out", "m.cnn"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let bytes = std::fs::read(d.join("m.cnn")).unwrap();

    std::fs::write(d.join("trunc.cnn"), &bytes[..bytes.len() / 2]).unwrap();
    assert_fails(
        &cnn(d, &["summary", "--model", "trunc.cnn"]),
        1,
        &["trunc.cnn"],
    );
    let mut corrupt = bytes.clone();
    let mid = corrupt.len() / 2;
    corrupt[mid] ^= 0x40;
    std::fs::write(d.join("corrupt.cnn"), &corrupt).unwrap();
    assert_fails(
        &cnn(d, &["predict", "--model", "corrupt.cnn", "x.png"]),
        1,
        &["corrupt.cnn"],
    );
    assert_fails(
        &cnn(d, &["eval", "--model", "missing.cnn"]),
        1,
        &["missing.cnn"],
    );

    assert_fails(
        &cnn(d, &["predict", "--model", "m.cnn", "nothere.png"]),
        1,
        &["nothere.png"],
    );
    std::fs::write(d.join("notes.png"), "this is text, not a picture").unwrap();
    assert_fails(
        &cnn(d, &["predict", "--model", "m.cnn", "notes.png"]),
        1,
        &["notes.png"],
    );

    assert_fails(&cnn(d, &["train", "--frobnicate"]), 2, &["--frobnicate"]);
    assert_fails(&cnn(d, &["train", "--optimizer", "adma"]), 2, &["adma"]);
    assert_fails(
        &cnn(d, &["summary", "--arch", "no-such-net"]),
        2,
        &["no-such-net"],
    );
    std::fs::write(
        d.join("bad.arch"),
        "input 1 28 28\nconv 8 3\nmaxpool 2 stride=0\n",
    )
    .unwrap();
    assert_fails(
        &cnn(d, &["summary", "--arch", "bad.arch"]),
        1,
        &["bad.arch: line 3"],
    );
    let (out, _) = text(&cnn(d, &["--version"]));
    assert!(out.starts_with("cnn "), "{out}");
}

/// The shipped model (`models/mnist.cnn`, the default of `cnn predict`) names every shipped
/// sample digit with more than 95% (its calibrated temperature must not understate a clean
/// digit), and reads at least 9 in 10 of the drawn and photographed test digits.
#[test]
fn the_shipped_model_reads_the_samples_and_drawn_digits() {
    let o = cnn_command()
        .args(["predict", "--json", "data/samples", "tests/fixtures/digits"])
        .current_dir(repo())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let (mut samples, mut drawn, mut drawn_right) = (0, 0, 0);
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let file = PathBuf::from(v["file"].as_str().unwrap());
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        let want = &name[..1];
        let got = v["class"].as_str().unwrap();
        if file.starts_with("data/samples") {
            assert_eq!(got, want, "{name}: {v}");
            let confidence = v["confidence"].as_f64().unwrap();
            assert!(confidence > 0.95, "{name}: {confidence}");
            samples += 1;
        } else {
            drawn += 1;
            drawn_right += (got == want) as usize;
        }
    }
    assert_eq!(samples, 10);
    assert!(
        drawn >= 30 && drawn_right * 10 >= drawn * 9,
        "read {drawn_right} of {drawn} drawn digits"
    );
}

/// `--tta flip` averages the logits of an image and of its mirror image, so a photograph and
/// its mirror image get exactly the same answer (shipped CIFAR-10 model; no dataset needed).
#[test]
fn flip_tta_answers_a_photo_and_its_mirror_image_alike() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // An asymmetric colour pattern, so the model sees two different views.
    let img = image::RgbImage::from_fn(32, 32, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 7 + x * x) as u8, ((x * y) % 251) as u8])
    });
    img.save(d.join("a.png")).unwrap();
    image::imageops::flip_horizontal(&img)
        .save(d.join("b.png"))
        .unwrap();
    let model = repo().join("models/cifar10.cnn");
    let probabilities = |file: &str, tta: &str| -> Vec<f64> {
        let m = model.to_str().unwrap();
        let o = cnn(d, &["predict", "--model", m, "--json", "--tta", tta, file]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let p = v["probabilities"].as_object().unwrap();
        let mut classes: Vec<_> = p.keys().cloned().collect();
        classes.sort();
        classes.iter().map(|c| p[c].as_f64().unwrap()).collect()
    };
    let (a, b) = (
        probabilities("a.png", "none"),
        probabilities("b.png", "none"),
    );
    assert_eq!(a.len(), 10);
    assert_ne!(a, b, "the model should not be mirror-symmetric by itself");
    let (a, b) = (
        probabilities("a.png", "flip"),
        probabilities("b.png", "flip"),
    );
    assert_eq!(a, b);
    assert!((a.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{a:?}");
    assert_fails(
        &cnn(d, &["predict", "--tta", "rotate", "a.png"]),
        2,
        &["rotate"],
    );
}

/// Test accuracy of the shipped models on the full test sets (opt-in: needs the datasets).
///
///   CNN_MNIST_DIR=data/mnist CNN_CIFAR_DIR=data/cifar10-jpg \
///       cargo test --release --test integration -- --ignored shipped_models_reach
///
/// `CNN_MNIST_DIR` holds the MNIST files (`scripts/fetch-data.sh mnist`); `CNN_CIFAR_DIR` is the
/// CIFAR-10 image folder (`scripts/fetch-data.sh cifar10` writes `data/cifar10-jpg`). Either may
/// be left out to skip that model.
#[test]
#[ignore]
fn shipped_models_reach_their_test_accuracy() {
    let eval = |model: &str, dataset: &[&str], want: f64| {
        let mut args = vec!["eval", "--json", "--model", model, "--dataset"];
        args.extend(dataset);
        let o = cnn(&repo(), &args);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let acc = v["accuracy"].as_f64().unwrap();
        println!("{model}: test accuracy {acc:.4} (at least {want})");
        assert!(acc >= want, "{model}: {acc}");
    };
    let (mnist, cifar) = crate::common::mnist_and_cifar_dirs();
    if let Some(dir) = mnist {
        eval("models/mnist.cnn", &["mnist", "--data-dir", &dir], 0.995);
    }
    if let Some(dir) = cifar {
        // models/README.md: 0.9032 with the model's flip-shift TTA, 0.9019 with flip, 0.8912
        // without.
        eval("models/cifar10.cnn", &[&dir], 0.90);
        eval("models/cifar10.cnn", &[&dir, "--tta", "flip"], 0.90);
        eval("models/cifar10.cnn", &[&dir, "--tta", "none"], 0.89);
    }
}

/// `--time-budget` plans the number of epochs from measured speed and ends on time.
#[test]
fn a_time_budget_plans_the_epochs() {
    let dir = tempfile::tempdir().unwrap();
    // The bound follows this machine's speed (under an emulator the same work takes many times
    // longer): one epoch of the same run, timed first.
    let t = Instant::now();
    let one = cnn(
        dir.path(),
        &train_on_mini(&["--arch", "lenet5", "--epochs", "1", "--out", "one.cnn"]),
    );
    assert!(one.status.success(), "{}", text(&one).1);
    let epoch = t.elapsed();
    let t = Instant::now();
    let o = cnn(
        dir.path(),
        &train_on_mini(&["--arch", "lenet5", "--time-budget", "4s", "--out", "m.cnn"]),
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("time budget: planning"), "{err}");
    let epochs = out.lines().filter(|l| l.starts_with("epoch")).count();
    assert!(epochs >= 1, "{out}");
    // Generous: a loaded CI machine may be slow, but the run must not ignore the budget (the
    // preset's default is many epochs).
    let bound = (Duration::from_secs(4) + 3 * epoch).max(Duration::from_secs(30));
    assert!(
        t.elapsed() < bound,
        "took {:?} (one epoch alone: {epoch:?})",
        t.elapsed()
    );
    assert_fails(
        &cnn(dir.path(), &["train", "--time-budget", "soon"]),
        2,
        &["soon"],
    );
}

/// Without `--model`, predict and eval use the digit model built into the binary, from any
/// folder; the text output draws a bar per class, and many images get a line each.
#[test]
fn the_built_in_model_answers_from_any_folder() {
    let dir = tempfile::tempdir().unwrap();
    let sample = repo().join("data/samples/7.png");
    let o = cnn(dir.path(), &["predict", sample.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("7.png: 7 ("), "{out}");
    assert_eq!(lines.len(), 11, "{out}");
    assert!(lines[1].starts_with("  * 7  █"), "{out}");
    let samples = repo().join("data/samples");
    let fixtures = repo().join("tests/fixtures/digits");
    let o = cnn(
        dir.path(),
        &[
            "predict",
            samples.to_str().unwrap(),
            fixtures.to_str().unwrap(),
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        out.lines().count() > 10 && out.lines().all(|l| l.contains("(then ")),
        "{out}"
    );
    let o = cnn(dir.path(), &["predict", "--help"]);
    assert!(text(&o).0.contains("built into cnn"));
}

/// `CNN_ISA` selects the kernels' path, as `cnn bench` reports it, for every path this CPU has;
/// a path it lacks and an unknown name are usage errors naming the variable.
#[test]
fn cnn_isa_selects_every_path_the_cpu_has() {
    use cnn::kernels::isa::Isa;
    let dir = tempfile::tempdir().unwrap();
    let bench = |isa: &str| {
        cnn_command()
            .args(["bench", "--arch", "lenet5", "--batch-size", "8"])
            .args(["--infer-batch-size", "8", "--iters", "1", "--warmup", "0"])
            .args(["--infer-iters", "1", "--reps", "1", "--threads", "1"])
            .env("CNN_ISA", isa)
            .current_dir(dir.path())
            .output()
            .expect("run cnn")
    };
    for isa in Isa::available() {
        let o = bench(isa.name());
        let (out, err) = text(&o);
        assert!(o.status.success(), "{}: {err}", isa.name());
        let wanted = format!("{} kernels", isa.name());
        assert!(out.contains(&wanted), "{wanted:?} not in:\n{out}");
    }
    if let Some(&above) = Isa::ALL.iter().find(|&&isa| isa > Isa::detected()) {
        assert_fails(&bench(above.name()), 2, &["CNN_ISA", "this CPU has only"]);
    }
    assert_fails(
        &bench("sse9"),
        2,
        &["CNN_ISA=sse9", "portable, avx2, avx512"],
    );
}
