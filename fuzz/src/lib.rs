//! The fuzz targets' bodies, shared by the libFuzzer binaries (`fuzz_targets/*.rs`, run by
//! `fuzz/run.sh`) and the stable test `tests/integration/fuzz_corpus.rs`, which includes this file.
//!
//! Each function takes arbitrary bytes, runs one reader on them and asserts what every input
//! must satisfy: no panic, no allocation beyond what the input's size implies, errors that name
//! the file, and, where a reader accepts the input, results consistent with it.

use cnn::data::{cifar, idx};
use cnn::layers::Mode;
use cnn::net::graph::{BuildLimits, BuildOptions, Network};
use cnn::net::loss::{Loss, LossKind};
use cnn::store::Model;
use cnn::store::container::{self as model_file, Kind};
use cnn::tensor::Tensor;
use sha2::{Digest, Sha256};
use std::path::Path;

/// The name the readers are given for the input; every error message must start with it.
pub const NAME: &str = "fuzz-input";

/// Deflate expands at most about 1032:1 (see `data::idx`).
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Small enough that building and running any accepted network takes milliseconds.
pub const ARCH_LIMITS: BuildLimits = BuildLimits {
    max_params: 1 << 16,
    max_item_values: 1 << 17,
    max_window: 16,
};

fn assert_names_input(e: &anyhow::Error) {
    let msg = format!("{e:#}");
    assert!(
        msg.starts_with(NAME),
        "error does not name the input: {msg}"
    );
}

/// IDX images and labels, raw or gzip.
pub fn idx(data: &[u8]) {
    let bound = (data.len() as u64).saturating_mul(MAX_DEFLATE_RATIO);
    match idx::parse_images(data, NAME) {
        Ok((images, [rows, cols])) => {
            assert!(rows >= 1 && cols >= 1);
            assert_eq!(images.len() % (rows * cols), 0);
            assert!(images.len() as u64 <= bound);
        }
        Err(e) => assert_names_input(&e),
    }
    match idx::parse_labels(data, 10, NAME) {
        Ok(labels) => {
            assert!(labels.iter().all(|&l| l < 10));
            assert!(labels.len() as u64 <= bound);
        }
        Err(e) => assert_names_input(&e),
    }
}

/// A CIFAR-10 batch file, and the same bytes as a class-name file.
pub fn cifar(data: &[u8]) {
    match cifar::parse_batch(data, NAME) {
        Ok((images, labels)) => {
            assert_eq!(labels.len() * cifar::RECORD_LEN, data.len());
            assert_eq!(images.len(), labels.len() * cifar::IMAGE_LEN);
            assert!(labels.iter().all(|&l| (l as usize) < cifar::CLASS_COUNT));
        }
        Err(e) => assert_names_input(&e),
    }
    match cifar::parse_classes(&String::from_utf8_lossy(data), NAME) {
        Ok(names) => assert_eq!(names.len(), cifar::CLASS_COUNT),
        Err(e) => assert_names_input(&e),
    }
}

/// `data` with its checksum made to match, so that the fuzzer also reaches the header, the
/// tensors and the model checks behind it: the digest in the metadata of the safetensors layout
/// (see `container::reseal`), or for format 1 the last 32 bytes, the SHA-256 of the rest.
pub fn with_checksum(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    if model_file::reseal(&mut v) {
        return v;
    }
    if v.len() >= 32 {
        let body = v.len() - 32;
        let digest = Sha256::digest(&v[..body]);
        v[body..].copy_from_slice(&digest);
    }
    v
}

/// A model or checkpoint file, as given and with its checksum made to match.
pub fn model_file(data: &[u8]) {
    for bytes in [data.to_vec(), with_checksum(data)] {
        for kind in [Kind::Model, Kind::Checkpoint] {
            let c = match model_file::read_bytes(&bytes, NAME, kind) {
                Ok(c) => c,
                Err(e) => {
                    assert_names_input(&e);
                    continue;
                }
            };
            let stored: usize = c.tensors.iter().map(|t| t.data.len()).sum();
            assert!(stored * 4 <= bytes.len());
            match kind {
                Kind::Model => {
                    if let Ok(model) = Model::from_container(c) {
                        run_model(&model);
                    }
                }
                Kind::Checkpoint => {
                    if let Ok(ckpt) = cnn::train::checkpoint::from_container(c, Path::new(NAME))
                        && let Ok(mut net) = ckpt.model.build_network(&BuildOptions::default())
                    {
                        let _ = cnn::train::checkpoint::check_optimizer(
                            Path::new(NAME),
                            &mut net,
                            &ckpt.opt,
                        );
                    }
                }
            }
        }
    }
}

/// Builds an accepted model and, when it is small, runs one image through it.
fn run_model(model: &Model) {
    let mut net = model
        .build_network(&BuildOptions::default())
        .expect("a validated model builds");
    if net.memory_estimate(1) > 64 << 20 {
        return;
    }
    let [c, h, w] = model.input;
    let x = Tensor::zeros(vec![1, c, h, w]);
    let logits = net.forward(&x, Mode::Eval);
    assert_eq!(logits.shape(), [1, model.classes.len()]);
}

/// An architecture file: parse, print and parse back, build within [`ARCH_LIMITS`], and train
/// one step on two blank images.
pub fn arch(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = cnn::net::spec::parse(text) else {
        return;
    };
    let again = cnn::net::spec::parse(&spec.to_string()).expect("the canonical text parses");
    assert_eq!(again.input, spec.input);
    let layers =
        |s: &cnn::net::spec::ArchSpec| s.layers.iter().map(|l| l.1.clone()).collect::<Vec<_>>();
    assert_eq!(layers(&again), layers(&spec));
    let classes = 3;
    let Ok(mut net) = Network::build(
        &spec,
        classes,
        Some(1),
        &BuildOptions {
            limits: ARCH_LIMITS,
            ..BuildOptions::default()
        },
    ) else {
        return;
    };
    let batch = 2;
    assert!(net.memory_estimate(batch) > 0);
    let [c, h, w] = spec.input;
    let x = Tensor::from_shape_fn(vec![batch, c, h, w], |d| (d[2] + d[3]) as f32 * 0.1);
    let mut loss = Loss::new(LossKind::CrossEntropy, 0.0);
    let logits = net.forward(&x, Mode::Train { seed: 7 });
    assert_eq!(logits.shape(), [batch, classes]);
    assert!(logits.iter().all(|v| v.is_finite()), "{logits:?}");
    loss.forward(logits, &[0, 2]);
    net.zero_grad();
    net.backward(&x, loss.backward());
}
