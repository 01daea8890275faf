//! Probabilities through the binary: training curves, `calibrate`, eval's calibration and
//! coverage figures and plots, `predict --min-confidence` and `--explain`. One tiny LeNet-5,
//! trained for two epochs on the shipped MNIST subset, serves every check.

use serde_json::Value;
use std::path::Path;

use crate::common::{cnn, repo};

/// Runs `cnn`, asserts success, returns stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let o = cnn(dir, args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(
        o.status.success(),
        "cnn {}\nstdout:\n{out}\nstderr:\n{err}",
        args.join(" ")
    );
    out
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A readable PNG of at least 400×300 whose pixels are not all the same.
fn check_png(path: &Path) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert!(
        img.width() >= 400 && img.height() >= 300,
        "{}: {}×{}",
        path.display(),
        img.width(),
        img.height()
    );
    let first = img.get_pixel(0, 0);
    assert!(
        img.pixels().any(|p| p != first),
        "{}: a single colour",
        path.display()
    );
}

#[test]
fn calibrate_eval_and_predict_with_confidence() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mini = repo().join("data/mnist-mini").display().to_string();
    let data = ["--dataset", "mnist", "--data-dir", &mini];
    let mut train = vec![
        "train",
        "--arch",
        "lenet5",
        "--epochs",
        "2",
        "--batch-size",
        "50",
        "--quiet",
        "--out",
        "m.cnn",
        "--plots",
        "curves",
    ];
    train.extend(data);
    ok(d, &train);

    // Training curves, and the history behind them in the checkpoint (so a resume keeps it).
    check_png(&d.join("curves/loss.png"));
    check_png(&d.join("curves/accuracy.png"));
    let state = cnn::train::checkpoint::load(&d.join("m.cnn.ckpt"))
        .unwrap()
        .state;
    let epochs: Vec<u64> = state.history.iter().map(|r| r.epoch).collect();
    assert_eq!(epochs, [1, 2]);
    assert!(state.history.iter().all(|r| r.val_accuracy.is_some()));

    // --min-confidence abstains exactly below the threshold: read the probabilities once,
    // put P in the widest gap between two images' top probabilities, and ask again.
    let samples = repo().join("data/samples").display().to_string();
    let first = json_lines(&ok(d, &["predict", "--model", "m.cnn", "--json", &samples]));
    assert_eq!(first.len(), 10);
    assert!(first.iter().all(|v| v["uncertain"] == false));
    let mut conf: Vec<f64> = first
        .iter()
        .map(|v| v["confidence"].as_f64().unwrap())
        .collect();
    conf.sort_by(f64::total_cmp);
    let (gap, i) = conf
        .windows(2)
        .enumerate()
        .map(|(i, w)| (w[1] - w[0], i))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap();
    assert!(gap > 1e-4, "every sample has the same confidence: {conf:?}");
    let p = (conf[i] + conf[i + 1]) / 2.0;
    let ps = format!("{p:.6}");
    let second = json_lines(&ok(
        d,
        &[
            "predict",
            "--model",
            "m.cnn",
            "--json",
            "--min-confidence",
            &ps,
            &samples,
        ],
    ));
    let (mut abstained, mut answered) = (0, 0);
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a["file"], b["file"]);
        let c = a["confidence"].as_f64().unwrap();
        if c < p {
            assert_eq!(b["class"], Value::Null, "{b}");
            assert_eq!(b["uncertain"], true, "{b}");
            abstained += 1;
        } else {
            assert_eq!(b["class"], a["class"], "{b}");
            assert_eq!(b["uncertain"], false, "{b}");
            answered += 1;
        }
    }
    assert!(abstained > 0 && answered > 0);
    let text = ok(
        d,
        &[
            "predict",
            "--model",
            "m.cnn",
            "--min-confidence",
            &ps,
            &samples,
        ],
    );
    assert_eq!(
        text.matches(": uncertain (top: ").count(),
        abstained,
        "{text}"
    );
    let o = cnn(
        d,
        &[
            "predict",
            "--model",
            "m.cnn",
            "--min-confidence",
            "1.5",
            &samples,
        ],
    );
    assert_eq!(o.status.code(), Some(2));

    // Eval at T = 1: the calibration figures and the coverage at P.
    let mut eval = vec![
        "eval",
        "--model",
        "m.cnn",
        "--json",
        "--min-confidence",
        &ps,
    ];
    eval.extend(data);
    let v: Value = serde_json::from_str(ok(d, &eval).trim()).unwrap();
    for key in [
        "nll",
        "brier",
        "ece",
        "ece_uncalibrated",
        "coverage",
        "covered_accuracy",
    ] {
        assert!(v[key].is_number(), "{key} missing: {v}");
    }
    assert_eq!(v["temperature"], 1.0);
    assert_eq!(v["ece"], v["ece_uncalibrated"]);
    let coverage = v["coverage"].as_f64().unwrap();
    assert!(coverage > 0.0 && coverage <= 1.0);
    let accuracy = v["accuracy"].as_f64().unwrap();

    // Calibrate on the validation split into a copy; the original keeps T = 1.
    let mut cal = vec!["calibrate", "--model", "m.cnn", "--out", "c.cnn", "--json"];
    cal.extend(data);
    let c: Value = serde_json::from_str(ok(d, &cal).trim()).unwrap();
    let t = c["temperature"].as_f64().unwrap();
    assert!(t > 0.05 && t < 20.0, "{c}");
    let images = c["images"].as_u64().unwrap();
    assert!(
        (290..=310).contains(&images),
        "10% of 3,000 training images: {c}"
    );
    // The fit minimises the NLL on these images, so it cannot raise it.
    assert!(c["after"]["nll"].as_f64().unwrap() <= c["before"]["nll"].as_f64().unwrap() + 1e-9);
    assert_eq!(c["before"]["accuracy"], c["after"]["accuracy"]);

    // Eval of the calibrated model: same accuracy, both ECEs, plots.
    let mut eval = vec!["eval", "--model", "c.cnn", "--json", "--plots", "ev"];
    eval.extend(data);
    let v: Value = serde_json::from_str(ok(d, &eval).trim()).unwrap();
    assert_eq!(v["accuracy"].as_f64().unwrap(), accuracy);
    assert!((v["temperature"].as_f64().unwrap() - t).abs() < 1e-4);
    assert!(v["ece"].as_f64().unwrap() != v["ece_uncalibrated"].as_f64().unwrap());
    check_png(&d.join("ev/confusion.png"));
    check_png(&d.join("ev/reliability.png"));
    let mut eval = vec!["eval", "--model", "c.cnn"];
    eval.extend(data);
    let text = ok(d, &eval);
    assert!(
        text.contains("ece T=1:") && text.contains("coverage"),
        "{text}"
    );

    // --explain writes <stem>.explain.png into the folder given, and names it.
    let three = repo().join("data/samples/3.png").display().to_string();
    let out = ok(
        d,
        &[
            "predict",
            "--model",
            "c.cnn",
            "--explain-dir",
            "why",
            &three,
        ],
    );
    assert!(out.contains("explanation: why/3.explain.png"), "{out}");
    check_png(&d.join("why/3.explain.png"));
}
