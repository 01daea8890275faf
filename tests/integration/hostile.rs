//! Hostile inputs and failing environments, through the real binary: odd and malicious image
//! files for `predict`, determinism across thread counts, outputs that cannot be written, a full
//! disk, a missing dataset, kills at random moments, a diverging learning rate, networks too
//! large to build or to train, and batch sizes larger than the dataset. Each case checks the
//! exit code, that the message names the file or value, and that nothing already on disk is
//! damaged.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{assert_fails, cnn, cnn_argv, cnn_command, digest, repo, text, train_on_mini};

/// `cnn train` on the shipped MNIST subset with LeNet-5, batch 100, quietly, plus `extra`.
fn train_args(extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--arch", "lenet5", "--batch-size", "100", "--quiet"];
    args.extend(extra);
    train_on_mini(&args)
}

fn train(dir: &Path, extra: &[&str]) -> Output {
    cnn(dir, &train_args(extra))
}

/// A model and its checkpoint from one epoch, trained once for the whole file.
fn trained() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let o = train(
            dir.path(),
            &["--epochs", "1", "--keep", "last", "--out", "m.cnn"],
        );
        assert!(o.status.success(), "{}", text(&o).1);
        dir
    })
    .path()
}

/// A fresh folder holding a copy of the trained model and checkpoint.
fn with_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["m.cnn", "m.cnn.ckpt"] {
        std::fs::copy(trained().join(f), dir.path().join(f)).unwrap();
    }
    dir
}

/// The bytes of the model and checkpoint, to show that a failed run changed neither.
fn snapshot(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    (
        std::fs::read(dir.join("m.cnn")).unwrap(),
        std::fs::read(dir.join("m.cnn.ckpt")).unwrap(),
    )
}

/// Names in `dir` that look like the atomic writer's temporary files.
fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Images for predict.

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    out.extend(kind);
    out.extend(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend(crc.sum().to_be_bytes());
}

/// A 100-byte PNG whose header declares `w`×`h` RGB pixels; its image data is a stub.
fn png_declaring(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit, RGB, deflate, adaptive filter, no interlace
    png_chunk(&mut v, b"IHDR", &ihdr);
    png_chunk(
        &mut v,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut v, b"IEND", &[]);
    v
}

/// A vertical stroke on a 28×28 page, like a digit one.
fn ink(x: u32, y: u32) -> bool {
    (13..16).contains(&x) && (4..24).contains(&y)
}

/// Writes the hostile image files into `dir`; returns each name and whether it must predict
/// (`Some(true)`), must fail (`Some(false)`) or may do either as long as it is clean (`None`).
fn hostile_images(dir: &Path) -> Vec<(&'static str, Option<bool>)> {
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    write("empty.png", b"");
    write("not-an-image.png", b"this is text, not a picture\n");
    write("huge.png", &png_declaring(30_000, 30_000));
    let grey = image::GrayImage::from_fn(28, 28, |x, y| {
        image::Luma([if ink(x, y) { 255 } else { 0 }])
    });
    grey.save(dir.join("ok.png")).unwrap();
    let full = std::fs::read(dir.join("ok.png")).unwrap();
    write("truncated.png", &full[..full.len() / 2]);
    let deep = image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(28, 28, |x, y| {
        image::Luma([if ink(x, y) { 65535 } else { 0 }])
    });
    image::DynamicImage::ImageLuma16(deep)
        .save(dir.join("sixteen-bit.png"))
        .unwrap();
    let alpha = image::RgbaImage::from_fn(28, 28, |x, y| {
        image::Rgba(if ink(x, y) {
            [0, 0, 0, 255]
        } else {
            [0, 0, 0, 0]
        })
    });
    alpha.save(dir.join("alpha.png")).unwrap();
    for f in ["palette.png", "cmyk.jpg", "animated.gif"] {
        std::fs::copy(repo().join("tests/fixtures/hostile").join(f), dir.join(f)).unwrap();
    }
    vec![
        ("empty.png", Some(false)),
        ("not-an-image.png", Some(false)),
        ("huge.png", Some(false)),
        ("truncated.png", Some(false)),
        ("ok.png", Some(true)),
        ("sixteen-bit.png", Some(true)),
        ("alpha.png", Some(true)),
        ("palette.png", Some(true)),
        ("cmyk.jpg", None),
        ("animated.gif", Some(true)),
    ]
}

#[test]
fn hostile_images_predict_or_fail_with_one_line_naming_the_file() {
    let dir = with_model();
    let d = dir.path();
    for (name, expect) in hostile_images(d) {
        let t = Instant::now();
        let o = cnn(d, &["predict", "--model", "m.cnn", name]);
        let elapsed = t.elapsed();
        let (out, err) = text(&o);
        assert!(!err.contains("panicked"), "{name}: panic:\n{err}");
        if o.status.success() {
            assert_ne!(expect, Some(false), "{name} should fail:\n{out}");
            assert!(out.starts_with(&format!("{name}: ")), "{name}:\n{out}");
        } else {
            assert_ne!(expect, Some(true), "{name} should predict:\n{err}");
            assert_eq!(o.status.code(), Some(1), "{name}:\n{err}");
            let lines: Vec<&str> = err.lines().collect();
            assert!(
                lines.iter().all(|l| l.starts_with("error: ")),
                "{name}:\n{err}"
            );
            assert!(
                lines[0].starts_with(&format!("error: {name}: ")),
                "the first line names the file: {err}"
            );
        }
        if name == "huge.png" {
            // Refused from the header alone: no 2.7 GB of pixels decoded.
            assert!(
                err.contains("30000×30000") && err.contains("67108864"),
                "{err}"
            );
            assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
        }
    }
    // All at once: the readable ones are predicted, each unreadable one named, exit code 1.
    let names: Vec<&str> = hostile_images(d).iter().map(|n| n.0).collect();
    let mut args = vec!["predict", "--model", "m.cnn"];
    args.extend(&names);
    let o = cnn(d, &args);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for name in [
        "ok.png",
        "sixteen-bit.png",
        "alpha.png",
        "palette.png",
        "animated.gif",
    ] {
        assert!(
            out.contains(&format!("{name}: ")),
            "{name} not predicted:\n{out}"
        );
    }
    for name in ["empty.png", "not-an-image.png", "huge.png", "truncated.png"] {
        assert!(err.contains(&format!("error: {name}: ")), "{name}:\n{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Determinism.

/// The kernels split work into pieces of fixed size and sum them in a fixed order, so the
/// thread count must not change a single bit of the trained weights.
#[test]
fn one_and_two_threads_train_bit_identical_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (threads, out) in [("1", "t1.cnn"), ("2", "t2.cnn")] {
        let o = train(
            d,
            &[
                "--epochs",
                "1",
                "--keep",
                "last",
                "--threads",
                threads,
                "--out",
                out,
            ],
        );
        assert!(o.status.success(), "{}", text(&o).1);
    }
    assert_eq!(digest(d, "t1.cnn"), digest(d, "t2.cnn"));
}

// ---------------------------------------------------------------------------------------------
// Failures that must leave no damage.

#[test]
fn an_output_under_a_regular_file_fails_naming_it() {
    let dir = with_model();
    let d = dir.path();
    std::fs::write(d.join("plain-file"), b"not a folder").unwrap();
    let o = train(d, &["--epochs", "1", "--out", "plain-file/m.cnn"]);
    assert_fails(&o, 1, &["plain-file"]);
    assert_eq!(
        std::fs::read(d.join("plain-file")).unwrap(),
        b"not a folder"
    );
}

/// `ulimit -f` makes every write past the limit fail with EFBIG; cnn ignores SIGXFSZ, so it
/// reports the error (instead of dying silently) and keeps the old model and checkpoint.
#[test]
fn a_file_size_limit_fails_cleanly_and_keeps_the_old_files() {
    let dir = with_model();
    let d = dir.path();
    let before = snapshot(d);
    let want = digest(d, "m.cnn");
    let args = train_args(&["--epochs", "1", "--seed", "9", "--out", "m.cnn"]);
    // 64 blocks of 512 bytes (POSIX sh): far below the 250 kB model.
    let o = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 64 && exec \"$0\" \"$@\"")
        .args(cnn_argv())
        .args(&args)
        .current_dir(d)
        .output()
        .unwrap();
    assert_fails(&o, 1, &["m.cnn", "File too large"]);
    assert_eq!(snapshot(d), before, "the old files changed");
    assert_eq!(digest(d, "m.cnn"), want);
    assert_eq!(temporaries(d), Vec::<String>::new());
}

/// A real full disk where the machine allows mounting a small tmpfs (root on Linux); skipped
/// elsewhere, where the file-size limit above stands in for it.
#[test]
fn a_full_disk_fails_cleanly_and_keeps_the_old_files() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=400k", "tmpfs"])
        .arg(&small)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(small.clone());
    // The model (250 kB) fits; a second copy beside it and the checkpoint do not.
    std::fs::copy(trained().join("m.cnn"), small.join("m.cnn")).unwrap();
    let before = std::fs::read(small.join("m.cnn")).unwrap();
    let o = train(&small, &["--epochs", "1", "--seed", "9", "--out", "m.cnn"]);
    assert_fails(&o, 1, &["m.cnn", "No space left on device"]);
    assert_eq!(std::fs::read(small.join("m.cnn")).unwrap(), before);
    assert_eq!(temporaries(&small), Vec::<String>::new());
}

#[test]
fn a_missing_dataset_fails_naming_it_and_keeps_the_old_files() {
    let dir = with_model();
    let d = dir.path();
    let before = snapshot(d);
    let o = cnn(
        d,
        &[
            "train",
            "--dataset",
            "mnist",
            "--data-dir",
            "no-such-folder",
            "--arch",
            "lenet5",
            "--out",
            "m.cnn",
        ],
    );
    assert_fails(&o, 1, &["no-such-folder"]);
    assert_eq!(snapshot(d), before);
}

/// kill -9 at random moments of a run that overwrites an existing model and checkpoint:
/// whatever the moment, both still load, and the checkpoint resumes to a complete model.
#[test]
fn kills_at_random_moments_never_corrupt_the_model_or_checkpoint() {
    let dir = with_model();
    let d = dir.path();
    let args = train_args(&["--epochs", "3", "--keep", "last", "--out", "m.cnn"]);
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..6 {
        let child = cnn_command()
            .args(&args)
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(50 + rng % 4000));
        let _ = Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status();
        let _ = child.wait_with_output();
        digest(d, "m.cnn");
    }
    let o = cnn(d, &["train", "--resume", "m.cnn.ckpt", "--quiet"]);
    assert!(o.status.success(), "{}", text(&o).1);
    digest(d, "m.cnn");
}

// ---------------------------------------------------------------------------------------------
// Clear limits.

#[test]
fn a_diverging_learning_rate_stops_with_advice_and_keeps_the_checkpoint() {
    let dir = with_model();
    let d = dir.path();
    let before = snapshot(d);
    let o = train(d, &["--epochs", "1", "--lr", "50", "--out", "m.cnn"]);
    assert_fails(&o, 1, &["diverg", "lower --lr (now 50", "m.cnn.ckpt"]);
    assert_eq!(snapshot(d), before);

    let o = train(d, &["--epochs", "1", "--lr", "1e6", "--out", "m.cnn"]);
    assert_fails(&o, 2, &["--lr", "1000000"]);
}

#[test]
fn an_architecture_too_large_for_memory_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 4,096 channels of 28×28: few parameters but about 180 MB of buffers per image, so
    // batches of 2,000 would need some 360 GB.
    std::fs::write(
        d.join("wide.arch"),
        "input 1 28 28\nconv 4096 3 pad=1\nrelu\nglobal_avgpool\ndense classes\n",
    )
    .unwrap();
    let t = Instant::now();
    let args = train_on_mini(&[
        "--arch",
        "wide.arch",
        "--batch-size",
        "2000",
        "--out",
        "w.cnn",
    ]);
    let o = cnn(d, &args);
    assert_fails(
        &o,
        1,
        &[
            "wide.arch",
            "batches of 2000",
            "MB of memory",
            "available",
            "--batch-size",
        ],
    );
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    assert!(!d.join("w.cnn").exists());

    let o = cnn(
        d,
        &[
            "bench",
            "--arch",
            "wide.arch",
            "--batch-size",
            "2000",
            "--reps",
            "1",
        ],
    );
    assert_fails(&o, 1, &["wide.arch", "MB of memory", "--batch-size"]);

    // Too large even to build: a dense layer of 1.6 billion weights.
    std::fs::write(
        d.join("giant.arch"),
        "input 1 28 28\nflatten\ndense 2000000\ndense classes\n",
    )
    .unwrap();
    let o = cnn(d, &["summary", "--arch", "giant.arch"]);
    assert_fails(&o, 1, &["giant.arch", "line 3", "dense1", "over the limit"]);
}

#[test]
fn a_batch_larger_than_the_dataset_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let args = train_on_mini(&["--arch", "lenet5", "--batch-size", "5000"]);
    let o = cnn(dir.path(), &args);
    assert_fails(
        &o,
        2,
        &["--batch-size 5000", "larger than the training set"],
    );
}
