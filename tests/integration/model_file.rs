//! The model and checkpoint file format through its public API: round trips, and every kind of
//! damaged or foreign file refused with a one-line error that names the file.

use cnn::layers::Mode;
use cnn::net::graph::{BuildOptions, Network};
use cnn::net::spec::parse;
use cnn::store::atomic::atomic_write;
use cnn::store::container::{self as model_file, Container, Kind, NamedTensor, reseal};
use cnn::store::model::metadata_from_json;
use cnn::store::params::weights_sha256;
use cnn::store::{Model, Provenance};
use cnn::tensor::Tensor;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Small but complete: a conv with bias, batch norm (whose running statistics are buffers),
/// pooling and two dense layers; 136 values in all.
const ARCH: &str = "input 2 5 5\nconv 3 3 pad=1\nbatchnorm\nrelu\nmaxpool 2\nflatten\ndense 4\nrelu\ndense classes\n";

fn classes() -> Vec<String> {
    vec!["cat".into(), "dog".into(), "bird".into()]
}

fn input(n: usize) -> Tensor {
    Tensor::from_shape_fn(vec![n, 2, 5, 5], |ix| {
        ((ix[0] * 50 + ix[1] * 25 + ix[2] * 5 + ix[3]) as f32 * 0.37).sin()
    })
}

/// A network whose batch-norm running statistics have moved away from their initial values.
fn trained_net(seed: u64) -> Network {
    let mut net = Network::build(
        &parse(ARCH).unwrap(),
        3,
        Some(seed),
        &BuildOptions::default(),
    )
    .unwrap();
    net.forward(&input(4), Mode::Train { seed: 1 });
    net
}

fn model_of(net: &mut Network) -> Model {
    let mut provenance = Provenance::new("tests/fixture", 3, 42);
    provenance.metrics.insert("test_accuracy".into(), 0.5);
    provenance
        .extra
        .insert("command".into(), "cnn train ...".into());
    Model::from_network(net, classes(), vec![0.5, 0.25], vec![0.2, 0.3], provenance)
}

/// A saved model: its path and bytes.
fn saved_model(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("small.cnn");
    model_of(&mut trained_net(7)).save(&path).unwrap();
    let bytes = fs::read(&path).unwrap();
    (path, bytes)
}

/// The error as the binary would print it, checked to be one line naming `path`.
fn err_text<T: std::fmt::Debug>(result: anyhow::Result<T>, path: &Path) -> String {
    let msg = format!("{:#}", result.expect_err("expected an error"));
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(msg.contains(&*name), "error does not name the file: {msg}");
    assert!(!msg.contains('\n'), "error is not one line: {msg}");
    msg
}

/// A file in the safetensors layout laid out by hand, of `kind` and format version `version`,
/// with `tensors` as the header's tensor entries and a valid digest, to get past the digest to
/// the checks behind it.
fn craft(kind: Kind, version: &str, tensors: Value, data: &[u8]) -> Vec<u8> {
    let mut header = json!({"__metadata__": {
        "format": kind.format(), "format_version": version, "sha256": "0".repeat(64)}});
    if let Value::Object(t) = tensors {
        header.as_object_mut().unwrap().extend(t);
    }
    craft_raw(&serde_json::to_vec(&header).unwrap(), data)
}

/// A file of header bytes `header` and data `data`, resealed if the header allows.
fn craft_raw(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut f = (header.len() as u64).to_le_bytes().to_vec();
    f.extend_from_slice(header);
    f.extend_from_slice(data);
    reseal(&mut f);
    f
}

/// The same model in cnn's format 1 (`CNNMODEL`, version, header length, JSON, data, SHA-256),
/// as cnn wrote it before the safetensors layout.
fn legacy_bytes(model: &Model) -> Vec<u8> {
    let meta: serde_json::Map<String, Value> = model
        .meta()
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "arch" {
                Value::String(v)
            } else {
                serde_json::from_str(&v).unwrap()
            };
            (k, v)
        })
        .collect();
    let tensors: Vec<Value> = model
        .params
        .iter()
        .map(|t| json!({"name": t.name, "dtype": "f32", "shape": t.shape}))
        .collect();
    let header = serde_json::to_vec(&json!({"meta": meta, "tensors": tensors})).unwrap();
    let mut f = b"CNNMODEL".to_vec();
    f.extend(1u32.to_le_bytes());
    f.extend((header.len() as u64).to_le_bytes());
    f.extend(&header);
    for t in &model.params {
        f.extend(t.data.iter().flat_map(|v| v.to_le_bytes()));
    }
    let digest = Sha256::digest(&f);
    f.extend(digest);
    f
}

fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

#[test]
fn round_trip_gives_identical_weights_and_forward_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.cnn");
    let mut net = trained_net(7);
    let model = model_of(&mut net);
    model.save(&path).unwrap();

    assert_eq!(Model::load(&path).unwrap(), model);
    let (loaded, mut net2) = Model::load_with_network(&path, &BuildOptions::default()).unwrap();
    assert!(
        loaded.params.is_empty(),
        "the weights move into the network"
    );
    assert_eq!(loaded.arch, parse(ARCH).unwrap().to_string());
    assert_eq!(weights_sha256(&mut net2), weights_sha256(&mut net));
    // A network built with another seed differs until the weights are loaded.
    assert_ne!(
        weights_sha256(&mut trained_net(8)),
        weights_sha256(&mut net)
    );

    let x = input(3);
    let a = net.forward(&x, Mode::Eval).clone();
    let b = net2.forward(&x, Mode::Eval).clone();
    let bits = |t: &Tensor| t.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a), bits(&b));
}

#[test]
fn the_header_is_safetensors_json_listing_every_parameter_and_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = saved_model(dir.path());
    let n = header_len(&bytes);
    assert_eq!(n % 8, 0, "the data starts 8-byte aligned");
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let meta = &header["__metadata__"];
    assert_eq!(meta["format"], "cnn model");
    assert_eq!(meta["format_version"], "2");
    assert_eq!(meta["classes"], r#"["cat","dog","bird"]"#);
    assert_eq!(meta["input"], "[2,5,5]");
    assert_eq!(meta["temperature"], "1.0");
    assert_eq!(meta["arch"], parse(ARCH).unwrap().to_string());
    assert_eq!(meta["sha256"].as_str().unwrap().len(), 64);
    let mut entries: Vec<(&str, &Value)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    entries.sort_by_key(|(_, v)| v["data_offsets"][0].as_u64().unwrap());
    let names: Vec<&str> = entries.iter().map(|(k, _)| *k).collect();
    assert_eq!(
        names,
        [
            "conv1.weight",
            "conv1.bias",
            "bn1.weight",
            "bn1.bias",
            "bn1.running_mean",
            "bn1.running_var",
            "dense1.weight",
            "dense1.bias",
            "dense2.weight",
            "dense2.bias"
        ]
    );
    assert_eq!(
        header["conv1.weight"],
        json!({"dtype": "F32", "shape": [3, 2, 3, 3], "data_offsets": [0, 216]})
    );
    // 8 bytes of header length + header + 136 values.
    assert_eq!(bytes.len(), 8 + n + 136 * 4);
}

#[test]
fn every_truncation_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = saved_model(dir.path());
    let path = dir.path().join("cut.cnn");
    for n in 0..bytes.len() {
        fs::write(&path, &bytes[..n]).unwrap();
        let msg = err_text(Model::load(&path), &path);
        assert!(
            msg.contains("truncated") || msg.contains("empty"),
            "length {n}: {msg}"
        );
    }
}

#[test]
fn any_flipped_byte_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = saved_model(dir.path());
    let path = dir.path().join("flipped.cnn");
    let hl = header_len(&bytes);
    for pos in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[pos] ^= mask;
            fs::write(&path, &damaged).unwrap();
            let msg = err_text(Model::load(&path), &path);
            // Past the header, nothing but the checksum can notice.
            if pos >= 8 + hl {
                assert!(
                    msg.contains("checksum mismatch"),
                    "byte {pos} ^ {mask:#x}: {msg}"
                );
            }
        }
    }
}

#[test]
fn foreign_files_are_not_cnn_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photo.png");
    fs::write(
        &path,
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR and then lots more bytes of an image",
    )
    .unwrap();
    assert!(err_text(Model::load(&path), &path).contains("not a cnn model file"));
    assert!(
        err_text(model_file::read(&path, Kind::Checkpoint), &path)
            .contains("not a cnn training checkpoint")
    );
    fs::write(&path, b"CNN").unwrap();
    assert!(err_text(Model::load(&path), &path).contains("truncated"));
    fs::write(&path, b"").unwrap();
    assert!(err_text(Model::load(&path), &path).contains("empty"));
    let missing = dir.path().join("missing.cnn");
    assert!(err_text(Model::load(&missing), &missing).contains("cannot open"));
    assert!(err_text(Model::load(dir.path()), dir.path()).contains("directory"));
}

#[test]
fn checkpoints_and_models_are_not_mistaken_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let (model_path, _) = saved_model(dir.path());
    let ckpt = dir.path().join("run.ckpt");
    model_file::write(
        &ckpt,
        &Container {
            kind: Kind::Checkpoint,
            meta: BTreeMap::new(),
            tensors: vec![],
        },
    )
    .unwrap();
    let msg = err_text(Model::load(&ckpt), &ckpt);
    assert!(
        msg.contains("is a training checkpoint, not a model file"),
        "{msg}"
    );
    let msg = err_text(model_file::read(&model_path, Kind::Checkpoint), &model_path);
    assert!(
        msg.contains("is a model file, not a training checkpoint"),
        "{msg}"
    );
}

#[test]
fn a_huge_header_length_is_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = saved_model(dir.path());
    let path = dir.path().join("huge.cnn");
    for (claimed, expected) in [
        (u64::MAX, "over the 16777216-byte limit"),
        (1 << 40, "over the 16777216-byte limit"),
        ((16 << 20) + 1, "over the 16777216-byte limit"),
        (16 << 20, "truncated: the header alone needs"),
        (bytes.len() as u64, "truncated: the header alone needs"),
    ] {
        let mut damaged = bytes.clone();
        damaged[..8].copy_from_slice(&claimed.to_le_bytes());
        fs::write(&path, &damaged).unwrap();
        let msg = err_text(Model::load(&path), &path);
        assert!(msg.contains(expected), "header length {claimed}: {msg}");
    }
}

#[test]
fn a_tensor_directory_that_disagrees_with_the_data_size_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sizes.ckpt");
    let data = [0u8; 16]; // four values
    let f32s = |shape: Value, begin: u64, end: u64| json!({"dtype": "F32", "shape": shape, "data_offsets": [begin, end]});
    let cases = [
        (
            json!({"w": f32s(json!([1000]), 0, 4000)}),
            "needs 4000 bytes of tensor data but the file holds 16",
        ),
        (
            json!({"w": f32s(json!([2, 2]), 0, 16), "v": f32s(json!([1]), 16, 20)}),
            "needs 20 bytes",
        ),
        (
            json!({"w": f32s(json!([2, 2]), 0, 12)}),
            "invalid shape, data type, or offset",
        ),
        (
            json!({"w": f32s(json!([1u64 << 40, 1u64 << 40]), 0, 16)}),
            "overflow",
        ),
        (
            json!({"w": f32s(json!([1]), 0, 4), "v": f32s(json!([2]), 8, 16)}),
            "invalid offset for tensor `v`",
        ),
        (
            json!({"w": f32s(json!([3]), 0, 12)}),
            "4 unexpected bytes after the 12 bytes of tensor data",
        ),
        (
            json!({"w": {"dtype": "F16", "shape": [8], "data_offsets": [0, 16]}}),
            "dtype F16; this cnn reads only F32",
        ),
        (
            json!({"w": {"dtype": "Q4", "shape": [8], "data_offsets": [0, 16]}}),
            "corrupt header",
        ),
        (json!({"w": f32s(json!([-4]), 0, 16)}), "corrupt header"),
        (json!({"w": [4]}), "corrupt header"),
    ];
    for (tensors, expected) in cases {
        fs::write(&path, craft(Kind::Checkpoint, "2", tensors.clone(), &data)).unwrap();
        let msg = err_text(model_file::read(&path, Kind::Checkpoint), &path);
        assert!(msg.contains(expected), "{tensors}: {msg}");
    }
    // The same layout with matching sizes is accepted, proving the crafting is right.
    let ok = json!({"w": f32s(json!([2, 2]), 0, 16)});
    fs::write(&path, craft(Kind::Checkpoint, "2", ok, &data)).unwrap();
    assert_eq!(
        *model_file::read(&path, Kind::Checkpoint).unwrap().tensors[0].data,
        [0.0; 4]
    );
    // Invalid UTF-8 in the header; no metadata; a digest written twice.
    fs::write(&path, craft_raw(b"{\"__metadata__\": \"\xff\"}", &[])).unwrap();
    assert!(err_text(model_file::read(&path, Kind::Checkpoint), &path).contains("corrupt header"));
    fs::write(&path, craft_raw(b"{}", &[])).unwrap();
    assert!(
        err_text(model_file::read(&path, Kind::Checkpoint), &path)
            .contains("a safetensors file without cnn's `__metadata__`")
    );
    let mut twice = craft(Kind::Checkpoint, "2", json!({}), &[]);
    let hl = header_len(&twice);
    let digest =
        serde_json::from_slice::<Value>(&twice[8..8 + hl]).unwrap()["__metadata__"]["sha256"]
            .as_str()
            .unwrap()
            .to_string();
    let header = format!(
        r#"{{"__metadata__":{{"format":"cnn checkpoint","format_version":"2","sha256":"{digest}","note":"{digest}"}}}}"#
    );
    twice = (header.len() as u64).to_le_bytes().to_vec();
    twice.extend(header.as_bytes());
    fs::write(&path, &twice).unwrap();
    assert!(
        err_text(model_file::read(&path, Kind::Checkpoint), &path)
            .contains("does not appear exactly once")
    );
}

#[test]
fn a_newer_format_version_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.cnn");
    fs::write(&path, craft(Kind::Model, "3", json!({}), &[])).unwrap();
    let msg = err_text(Model::load(&path), &path);
    assert!(
        msg.contains("written by a newer cnn (format 3); this cnn reads formats 1 and 2"),
        "{msg}"
    );
    for bad in ["0", "1", "two", ""] {
        fs::write(&path, craft(Kind::Model, bad, json!({}), &[])).unwrap();
        let msg = err_text(Model::load(&path), &path);
        assert!(msg.contains("not a format this cnn writes"), "{bad}: {msg}");
    }
    // The old layout had only format 1.
    fs::write(&path, b"CNNMODEL\x07\0\0\0").unwrap();
    assert!(err_text(Model::load(&path), &path).contains("only format 1, not 7"));
}

#[test]
fn a_safetensors_file_of_another_tool_is_not_a_cnn_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.safetensors");
    let header =
        br#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    fs::write(&path, craft_raw(header, &[0; 4])).unwrap();
    let msg = err_text(Model::load(&path), &path);
    assert!(
        msg.contains("not a cnn model file: its `format` is `pt`"),
        "{msg}"
    );
}

#[test]
fn a_model_of_format_1_loads_the_same_and_is_checked_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.cnn");
    let mut net = trained_net(7);
    let model = model_of(&mut net);
    let bytes = legacy_bytes(&model);
    fs::write(&path, &bytes).unwrap();
    assert_eq!(Model::load(&path).unwrap(), model);
    let (_, mut loaded) = Model::load_with_network(&path, &BuildOptions::default()).unwrap();
    assert_eq!(weights_sha256(&mut loaded), weights_sha256(&mut net));
    // Re-saved, it is a file of the current format holding the same model.
    let new = dir.path().join("new.cnn");
    Model::load(&path).unwrap().save(&new).unwrap();
    assert_eq!(header_len(&fs::read(&new).unwrap()) % 8, 0);
    assert_eq!(Model::load(&new).unwrap(), model);

    let cut = dir.path().join("cut.cnn");
    for n in 0..bytes.len() {
        fs::write(&cut, &bytes[..n]).unwrap();
        let msg = err_text(Model::load(&cut), &cut);
        assert!(
            msg.contains("truncated") || msg.contains("empty"),
            "length {n}: {msg}"
        );
    }
    for pos in 0..bytes.len() {
        let mut damaged = bytes.clone();
        damaged[pos] ^= 0x01;
        fs::write(&cut, &damaged).unwrap();
        err_text(Model::load(&cut), &cut);
    }
}

#[test]
fn the_weights_digest_sees_a_one_ulp_change() {
    let mut net = trained_net(7);
    let before = weights_sha256(&mut net);
    assert_eq!(before.len(), 64);
    assert!(
        before
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(weights_sha256(&mut net), before);
    let mut first = true;
    net.visit_params(&mut |name, p| {
        if first && name == "dense2.weight" {
            let v = &mut p.value.to_mut()[5];
            *v = f32::from_bits(v.to_bits() + 1);
            first = false;
        }
    });
    assert_ne!(weights_sha256(&mut net), before);
    // A buffer counts too.
    let mut net = trained_net(7);
    net.visit_params(&mut |name, p| {
        if name == "bn1.running_var" {
            let v = &mut p.value.to_mut()[0];
            *v = f32::from_bits(v.to_bits() + 1);
        }
    });
    assert_ne!(weights_sha256(&mut net), before);
}

#[test]
fn a_failed_write_leaves_the_old_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (path, bytes) = saved_model(dir.path());
    let msg = err_text(
        atomic_write(&path, |w| {
            w.write_all(b"CNNMODEL half a file")?;
            anyhow::bail!("No space left on device (os error 28)")
        }),
        &path,
    );
    assert!(
        msg.contains("cannot write: No space left on device"),
        "{msg}"
    );
    // A model that cannot be loaded back is refused before anything is written.
    let mut bad = model_of(&mut trained_net(7));
    bad.params[0].data.to_mut()[0] = f32::NAN;
    let msg = err_text(bad.save(&path), &path);
    assert!(msg.contains("`conv1.weight` holds NaN"), "{msg}");
    assert_eq!(fs::read(&path).unwrap(), bytes);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["small.cnn"], "a temporary file was left behind");
    Model::load(&path).unwrap();

    let nowhere = dir.path().join("no/such/dir/m.cnn");
    let msg = err_text(model_of(&mut trained_net(7)).save(&nowhere), &nowhere);
    assert!(msg.contains("does not exist"), "{msg}");
}

#[test]
fn a_checkpoint_embeds_a_model_and_optimizer_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let model = model_of(&mut trained_net(7));
    let optim: Vec<NamedTensor> = model
        .params
        .iter()
        .map(|p| NamedTensor {
            name: format!("optim/{}/0", p.name),
            shape: p.shape.clone(),
            data: vec![0.125; p.data.len()].into(),
        })
        .collect();
    let mut meta = model.meta();
    meta.insert("train".into(), r#"{"epoch":2,"optimizer":"adam"}"#.into());
    let tensors: Vec<&NamedTensor> = model.params.iter().chain(&optim).collect();
    model_file::write_borrowed(&path, Kind::Checkpoint, &meta, &tensors).unwrap();

    let back = model_file::read(&path, Kind::Checkpoint).unwrap();
    assert_eq!(back.meta["train"], r#"{"epoch":2,"optimizer":"adam"}"#);
    let (params, state): (Vec<_>, Vec<_>) = back
        .tensors
        .into_iter()
        .partition(|t| !t.name.starts_with("optim/"));
    assert_eq!(state, optim);
    let restored = Model::from_parts(back.meta, params).unwrap();
    assert_eq!(restored, model);
    // The container form of a model reads back as the same model.
    let m = dir.path().join("m.cnn");
    model_file::write(&m, &model.to_container()).unwrap();
    assert_eq!(
        Model::from_container(model_file::read(&m, Kind::Model).unwrap()).unwrap(),
        model
    );
}

/// The model's metadata as one JSON object (every field but `arch` is JSON text).
fn meta_json(meta: &BTreeMap<String, String>) -> Value {
    meta.iter()
        .map(|(k, v)| {
            let v = match k.as_str() {
                "arch" => Value::String(v.clone()),
                _ => serde_json::from_str(v).unwrap(),
            };
            (k.clone(), v)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Writes `model`'s container after `edit` of its metadata as JSON (bypassing `save`'s
/// validation) and returns the load error.
fn load_error(dir: &Path, edit: impl FnOnce(&mut Value, &mut Vec<NamedTensor>)) -> String {
    let path = dir.join("edited.cnn");
    let mut c = model_of(&mut trained_net(7)).to_container();
    let mut meta = meta_json(&c.meta);
    edit(&mut meta, &mut c.tensors);
    c.meta = metadata_from_json(&meta);
    model_file::write(&path, &c).unwrap();
    err_text(Model::load(&path), &path)
}

#[test]
fn invalid_models_are_refused_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    type Edit = Box<dyn FnOnce(&mut Value, &mut Vec<NamedTensor>)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|m, _| m["classes"] = json!(["cat", "dog", "cat"])),
            "`cat` appears twice",
        ),
        (
            Box::new(|m, _| m["classes"] = json!(["cat"])),
            "at least 2 classes, got 1",
        ),
        (
            Box::new(|m, _| m["classes"] = json!(["cat", "", "dog"])),
            "class 1 has an empty name",
        ),
        (
            Box::new(|m, _| m["classes"] = json!(["a", "b", "c", "d"])),
            "parameter `dense2.weight` has shape 3×4",
        ),
        (
            Box::new(|m, _| m["norm"]["std"] = json!([0.2, 0.0])),
            "std[1] is 0",
        ),
        (
            Box::new(|m, _| m["norm"]["mean"] = json!([0.5])),
            "mean has 1 values but the input has 2 channels",
        ),
        (
            Box::new(|m, _| m["temperature"] = json!(-1.0)),
            "temperature must be positive",
        ),
        (
            Box::new(|m, _| {
                m["input"] = json!([3, 5, 5]);
                m["norm"] = json!({"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]});
            }),
            "differs from the recorded input 3×5×5",
        ),
        (
            Box::new(|m, _| m["arch"] = json!("input 2 5 5\nconv 3 0\n")),
            "architecture line 2",
        ),
        (Box::new(|m, _| m["input"] = json!("big")), "model metadata"),
        (
            Box::new(|m, _| *m = json!({"arch": "x"})),
            "model metadata: missing field",
        ),
        (
            Box::new(|_, t| t[3].data.to_mut()[1] = f32::INFINITY),
            "`bn1.bias` holds inf at index 1",
        ),
        (
            Box::new(|_, t| drop(t.remove(4))),
            "parameter `bn1.running_mean` (3) is missing",
        ),
        (
            Box::new(|_, t| {
                t.push(NamedTensor {
                    name: "conv9.weight".into(),
                    shape: vec![1],
                    data: vec![0.0].into(),
                })
            }),
            "parameter `conv9.weight` (1) is not in the architecture",
        ),
        (
            Box::new(|_, t| {
                t[1].shape = vec![1, 3];
            }),
            "parameter `conv1.bias` has shape 1×3 with 3 values, but the architecture needs 3",
        ),
    ];
    for (edit, expected) in cases {
        let msg = load_error(d, edit);
        assert!(msg.contains(expected), "expected `{expected}` in: {msg}");
    }
}

#[test]
fn missing_optional_fields_default_and_unknown_fields_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old-and-new.cnn");
    let model = model_of(&mut trained_net(7));
    let mut c = model.to_container();
    c.meta.remove("temperature");
    c.meta.remove("provenance");
    c.meta.insert(
        "calibration".into(),
        r#"{"method": "from a future cnn"}"#.into(),
    );
    model_file::write(&path, &c).unwrap();
    let loaded = Model::load(&path).unwrap();
    assert_eq!(loaded.temperature, 1.0);
    assert_eq!(loaded.provenance, Provenance::default());
    assert_eq!(loaded.params, model.params);

    // A non-finite metric is stored as null and read back as NaN.
    let mut m = model.clone();
    m.provenance.metrics.insert("test_loss".into(), f64::NAN);
    m.save(&path).unwrap();
    assert!(Model::load(&path).unwrap().provenance.metrics["test_loss"].is_nan());
}

#[test]
fn random_garbage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = saved_model(dir.path());
    let path = dir.path().join("garbage.cnn");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..300 {
        // A valid file with a few random bytes overwritten, cut at a random length, with
        // its checksum sometimes repaired so that the structural checks run.
        let mut f = bytes.clone();
        for _ in 0..1 + next() % 4 {
            let pos = (next() % f.len() as u64) as usize;
            f[pos] = next() as u8;
        }
        f.truncate((next() % (f.len() as u64 + 1)) as usize);
        if next() % 2 == 0 {
            reseal(&mut f);
        }
        fs::write(&path, &f).unwrap();
        let _ = Model::load(&path);
        let _ = model_file::read(&path, Kind::Checkpoint);
    }
}

/// The parameters must all be in the file, so an architecture asking for far more values than
/// the file holds (over 2^20 here) is refused before the network is built: a damaged or hostile
/// model cannot make loading allocate (here, 2.5 billion weights, 20 GB with their gradients).
#[test]
fn an_architecture_larger_than_the_file_is_refused_before_building() {
    let dir = tempfile::tempdir().unwrap();
    let t = std::time::Instant::now();
    let msg = load_error(dir.path(), |m, _| {
        m["arch"] = json!("input 2 5 5\nflatten\ndense 50000000\ndense classes\n");
    });
    assert!(
        msg.contains("line 3: dense1") && msg.contains("over the limit of 1048576"),
        "{msg}"
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}
