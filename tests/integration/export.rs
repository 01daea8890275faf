//! `cnn export`: ONNX graphs and re-saved model files. The ONNX graph of every preset, of an
//! architecture using every layer kind and of the shipped models runs in onnxruntime and gives
//! `cnn predict`'s probabilities (opt-in: needs Python with onnxruntime, see
//! [`onnxruntime_gives_the_probabilities_of_predict`]).

use crate::common::{assert_fails, cnn, digest, opt_in, repo, text};
use cnn::layers::Mode;
use cnn::net::graph::{BuildOptions, Network};
use cnn::net::presets::{PRESETS, preset};
use cnn::net::spec::parse;
use cnn::store::{Model, Provenance};
use cnn::tensor::Tensor;
use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};

/// Every layer kind and option the presets leave out, on a small colour input.
const EVERY_LAYER: &str = "input 3 12 12\nwhiten 2\ngelu\nconv 6 3 pad=1 stride=1\nbatchnorm scale=no\nrelu\navgpool 2\nconv 8 3x1 stride=2 bias=no\nbatchnorm\ngelu\nmaxpool 2 stride=1\ndropout 0.3\nscale 0.5\nglobal_avgpool\ndense 12\nbatchnorm\nrelu\ndense classes\n";

/// Normalisation of the random models.
const MEAN: f32 = 0.45;
const STD: f32 = 0.22;

/// A model of `arch` with random weights, whitening fitted to and batch-norm statistics moved
/// (by `steps` training-mode passes) toward the images `images` (as the model normalises them),
/// its temperature `temperature`, trained (it says) for test-time augmentation `tta`.
fn random_model(
    dir: &Path,
    name: &str,
    arch: &str,
    images: &[PathBuf],
    steps: usize,
    temperature: f32,
    tta: Option<&str>,
) -> PathBuf {
    let spec = parse(arch).unwrap();
    let mut net = Network::build(&spec, 10, Some(5), &BuildOptions::default()).unwrap();
    let [c, h, w] = spec.input;
    let mut values = Vec::new();
    for path in images {
        let img = image::open(path).unwrap();
        let bytes = if c == 1 {
            img.to_luma8().into_raw()
        } else {
            img.to_rgb8().into_raw()
        };
        // Interleaved (H×W×C) to planes (C×H×W).
        for ch in 0..c {
            values.extend(
                bytes
                    .iter()
                    .skip(ch)
                    .step_by(c)
                    .map(|&p| (p as f32 / 255.0 - MEAN) / STD),
            );
        }
    }
    let x = Tensor::from_shape_vec(vec![images.len(), c, h, w], values).unwrap();
    if net.data_images() > 0 {
        net.fit_to_data(&x);
    }
    for seed in 0..steps as u64 {
        net.forward(&x, Mode::Train { seed });
    }
    let classes = (0..10).map(|i| format!("class{i}")).collect();
    let mut p = Provenance::new("random", 0, 5);
    if let Some(t) = tta {
        p.extra.insert("tta".into(), t.into());
    }
    let mut model = Model::from_network(&mut net, classes, vec![MEAN; c], vec![STD; c], p);
    model.temperature = temperature;
    let path = dir.join(format!("{name}.cnn"));
    model.save(&path).unwrap();
    path
}

/// The images for a model of input `c×h×w`: the shipped digit samples for 28×28 grey, else six
/// generated colour ones.
fn images_for(dir: &Path, samples: &[PathBuf], [c, h, w]: [usize; 3]) -> Vec<PathBuf> {
    if c == 1 && h == 28 && w == 28 {
        samples.to_vec()
    } else {
        assert_eq!(c, 3);
        colour_images(dir, 6, h as u32, w as u32)
    }
}

/// `n` colour images of `h`×`w` pixels, CIFAR-like (smooth colour fields with texture), as PNGs.
fn colour_images(dir: &Path, n: usize, h: u32, w: u32) -> Vec<PathBuf> {
    (0..n)
        .map(|i| {
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let f = |k: f32| {
                    let v = 128.0
                        + 90.0 * ((x as f32 * 0.21 + k) * (i as f32 + 1.0) * 0.37).sin()
                        + 30.0 * ((y as f32 * 0.43 - k) * 1.7).cos()
                        + ((x * 31 + y * 17 + i as u32 * 7) % 23) as f32;
                    v.clamp(0.0, 255.0) as u8
                };
                image::Rgb([f(0.0), f(1.3), f(2.9)])
            });
            let path = dir.join(format!("colour-{h}x{w}-{i}.png"));
            img.save(&path).unwrap();
            path
        })
        .collect()
}

fn export(dir: &Path, model: &Path, format: &str, out: &Path) {
    let o = cnn(
        dir,
        &[
            "export",
            &model.display().to_string(),
            "--format",
            format,
            "-o",
            &out.display().to_string(),
        ],
    );
    let (stdout, err) = text(&o);
    assert!(o.status.success(), "export of {}: {err}", model.display());
    assert!(stdout.contains(&out.display().to_string()), "{stdout}");
}

/// `cnn predict --json --no-preprocess` on `images`: each image's probabilities in class order.
fn predict(dir: &Path, model: &Path, classes: &[String], images: &[PathBuf]) -> Vec<Value> {
    let mut args = vec![
        "predict".to_string(),
        "--model".into(),
        model.display().to_string(),
        "--json".into(),
        "--no-preprocess".into(),
    ];
    args.extend(images.iter().map(|p| p.display().to_string()));
    let o = cnn(dir, &args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "predict: {err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), images.len(), "{out}");
    lines
        .iter()
        .zip(images)
        .map(|(l, file)| {
            let probs: Vec<f64> = classes
                .iter()
                .map(|c| l["probabilities"][c].as_f64().unwrap())
                .collect();
            json!({"file": file, "probabilities": probs})
        })
        .collect()
}

#[test]
fn export_writes_onnx_and_re_saves_models_refusing_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shipped = repo().join("models/mnist.cnn");
    let onnx = d.join("mnist.onnx");
    export(d, &shipped, "onnx", &onnx);
    let bytes = fs::read(&onnx).unwrap();
    assert!(bytes.len() > 100_000, "{} bytes", bytes.len());
    // Re-saved, a model keeps its weights; re-saving in place works too.
    let copy = d.join("mnist.cnn");
    export(d, &shipped, "safetensors", &copy);
    assert_eq!(
        digest(d, "mnist.cnn"),
        digest(d, &shipped.display().to_string())
    );
    export(d, &copy, "safetensors", &copy);
    assert_eq!(
        digest(d, "mnist.cnn"),
        digest(d, &shipped.display().to_string())
    );

    let o = cnn(
        d,
        &["export", "missing.cnn", "--format", "onnx", "-o", "x.onnx"],
    );
    assert_fails(&o, 1, &["missing.cnn: cannot open"]);
    let o = cnn(
        d,
        &["export", "mnist.cnn", "--format", "tflite", "-o", "x.onnx"],
    );
    assert_fails(&o, 2, &["tflite"]);
    let o = cnn(
        d,
        &[
            "export",
            "mnist.cnn",
            "--format",
            "safetensors",
            "--tta",
            "flip",
            "-o",
            "y.cnn",
        ],
    );
    assert_fails(&o, 2, &["--tta applies to --format onnx only"]);
    let o = cnn(
        d,
        &[
            "export",
            "mnist.cnn",
            "--format",
            "onnx",
            "-o",
            "no/such/dir/x.onnx",
        ],
    );
    assert_fails(&o, 1, &["does not exist"]);
    fs::write(d.join("broken.cnn"), &bytes[..100]).unwrap();
    let o = cnn(
        d,
        &["export", "broken.cnn", "--format", "onnx", "-o", "x.onnx"],
    );
    assert_fails(&o, 1, &["broken.cnn"]);
    for leftover in ["x.onnx", "y.cnn"] {
        assert!(!d.join(leftover).exists(), "{leftover} was written");
    }
}

/// Opt-in: set `CNN_ONNX_PYTHON` to a Python with numpy, onnxruntime and safetensors (`.ci/run`
/// makes one). Exports every preset (random weights, temperature 1.3; cifar-fast 0.01, with its
/// flip-shift test-time augmentation), an architecture with every layer kind and the shipped
/// models (re-saved in the current format first), and runs `tests/python/onnx_matches_predict.py`:
/// onnxruntime's probabilities equal `cnn predict --json --no-preprocess`'s within 1e-5 on the
/// shipped digit samples and on CIFAR-like colour images, and safetensors' Python reader returns
/// every weight by name.
#[test]
fn onnxruntime_gives_the_probabilities_of_predict() {
    let Some(python) = opt_in("CNN_ONNX_PYTHON") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut samples: Vec<PathBuf> = fs::read_dir(repo().join("data/samples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    samples.sort();
    assert!(samples.len() >= 10);

    let mut models: Vec<PathBuf> = Vec::new();
    let mut cases: Vec<(&str, &str, usize, f32, Option<&str>)> = PRESETS
        .iter()
        .map(|(name, _, _)| {
            // cifar-fast's head divides by 9 the small logits of its random weights: a low
            // temperature spreads its probabilities.
            let fast = name.starts_with("cifar-fast");
            let temperature = if fast { 0.01 } else { 1.3 };
            (
                *name,
                preset(name).unwrap(),
                1,
                temperature,
                fast.then_some("flip-shift"),
            )
        })
        .collect();
    cases.push(("every-layer", EVERY_LAYER, 20, 2.0, Some("flip")));
    for (name, arch, steps, temperature, tta) in cases {
        let images = images_for(d, &samples, parse(arch).unwrap().input);
        models.push(random_model(
            d,
            name,
            arch,
            &images,
            steps,
            temperature,
            tta,
        ));
    }
    for shipped in ["mnist", "cifar10"] {
        let resaved = d.join(format!("shipped-{shipped}.cnn"));
        export(
            d,
            &repo().join(format!("models/{shipped}.cnn")),
            "safetensors",
            &resaved,
        );
        models.push(resaved);
    }

    let mut jobs = Vec::new();
    for model_path in &models {
        let model = Model::load(model_path).unwrap();
        let [c, h, w] = model.input;
        let images = images_for(d, &samples, [c, h, w]);
        let onnx = model_path.with_extension("onnx");
        export(d, model_path, "onnx", &onnx);
        let tensors: Vec<Value> = model
            .params
            .iter()
            .map(|t| {
                let sum: f64 = t.data.iter().map(|&v| f64::from(v)).sum();
                json!({"name": t.name, "shape": t.shape, "first": t.data[0],
                       "last": t.data[t.data.len() - 1], "sum": sum})
            })
            .collect();
        jobs.push(json!({
            "model": model_path,
            "onnx": onnx,
            "classes": model.classes,
            "tensors": tensors,
            "images": predict(d, model_path, &model.classes, &images),
        }));
    }
    let job = d.join("job.json");
    fs::write(&job, json!({"tolerance": 1e-5, "models": jobs}).to_string()).unwrap();
    let o = std::process::Command::new(&python)
        .arg(repo().join("tests/python/onnx_matches_predict.py"))
        .arg(&job)
        .output()
        .expect("run the Python check");
    let (out, err) = text(&o);
    print!("{out}");
    assert!(o.status.success(), "{out}\n{err}");
    assert_eq!(out.lines().count(), models.len(), "{out}");
}
