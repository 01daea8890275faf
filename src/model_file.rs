//! The model (`.cnn`) and checkpoint (`.ckpt`) file format: one self-describing binary container
//! that holds everything needed to rebuild the same network and preprocessing.
//!
//! # Layout (all integers little-endian; see `docs/MODEL_FORMAT.md` for the full description)
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic: `CNNMODEL` (a model) or `CNNCKPT\0` (a training checkpoint) |
//! | 4 | `u32` format version, [`FORMAT_VERSION`] |
//! | 8 | `u64` header length `L` |
//! | `L` | header: UTF-8 JSON `{"meta": {...}, "tensors": [{"name", "dtype", "shape"}, ...]}` |
//! | `4·Σ` | tensor data: every tensor's `f32` values, little-endian, in directory order |
//! | 32 | SHA-256 of every byte before it |
//!
//! Two layers of API: [`Container`] with [`write`] / [`read`] knows only the layout (the
//! training code stores its checkpoints with it), and [`Model`] gives the `meta` of a model file
//! its typed fields and rebuilds a [`Network`] from it.
//!
//! Reading never panics and never allocates more than the file's size: every length is checked
//! against the file size, with overflow-checked arithmetic, before anything is allocated.

use crate::fsutil::atomic_write;
use crate::graph::{BuildLimits, Network};
use crate::spec::fmt_shape;
use crate::tensor::Tensor;
use anyhow::{Result, anyhow, bail};
use ndarray::IxDyn;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

/// The format version this cnn writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The largest header (JSON) cnn writes or reads.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;
/// The largest file cnn writes or reads.
pub const MAX_FILE_BYTES: u64 = 4 << 30;
/// Magic, version and header length.
const PREFIX_BYTES: u64 = 8 + 4 + 8;
const CHECKSUM_BYTES: u64 = 32;
/// Values converted to bytes at a time while streaming tensor data.
const CHUNK_VALUES: usize = 16 * 1024;

/// What a file holds; each kind has its own magic so that one is never mistaken for the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Model,
    Checkpoint,
}

impl Kind {
    /// The 8 bytes a file of this kind starts with.
    pub fn magic(self) -> &'static [u8; 8] {
        match self {
            Kind::Model => b"CNNMODEL",
            Kind::Checkpoint => b"CNNCKPT\0",
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::Model => "cnn model file",
            Kind::Checkpoint => "cnn training checkpoint",
        }
    }

    fn other(self) -> Kind {
        match self {
            Kind::Model => Kind::Checkpoint,
            Kind::Checkpoint => Kind::Model,
        }
    }
}

/// A tensor stored by name: `data` holds the `shape`'s product of values in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The generic content of a model or checkpoint file: free-form JSON plus named tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub kind: Kind,
    pub meta: Value,
    pub tensors: Vec<NamedTensor>,
}

/// The header as written: borrowed, so that writing copies nothing.
#[derive(Serialize)]
struct HeaderOut<'a> {
    meta: &'a Value,
    tensors: Vec<EntryOut<'a>>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    name: &'a str,
    dtype: &'static str,
    shape: &'a [usize],
}

/// The header as read. Unknown fields are ignored (see the version policy in the docs).
#[derive(Deserialize)]
struct HeaderIn {
    meta: Value,
    tensors: Vec<EntryIn>,
}

#[derive(Deserialize)]
struct EntryIn {
    name: String,
    #[serde(default = "dtype_f32")]
    dtype: String,
    shape: Vec<usize>,
}

fn dtype_f32() -> String {
    "f32".into()
}

/// The number of values of a tensor of `shape`, or `None` if it overflows `usize`.
fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Writes `container` to `path` atomically (see [`atomic_write`]), streaming the tensor data.
pub fn write(path: &Path, container: &Container) -> Result<()> {
    let tensors: Vec<&NamedTensor> = container.tensors.iter().collect();
    write_borrowed(path, container.kind, &container.meta, &tensors)
}

/// [`write`] from borrowed parts, so that a checkpoint can list a model's parameters and the
/// optimizer state without copying either.
pub fn write_borrowed(
    path: &Path,
    kind: Kind,
    meta: &Value,
    tensors: &[&NamedTensor],
) -> Result<()> {
    let shown = path.display();
    let mut names = HashSet::new();
    let mut data_bytes: u64 = 0;
    for t in tensors {
        let n = element_count(&t.shape);
        if n != Some(t.data.len()) {
            bail!(
                "{shown}: cannot write tensor `{}`: shape {} does not hold its {} values",
                t.name,
                fmt_shape(&t.shape),
                t.data.len()
            );
        }
        if !names.insert(t.name.as_str()) {
            bail!("{shown}: cannot write: tensor `{}` is listed twice", t.name);
        }
        data_bytes = data_bytes.saturating_add(4u64.saturating_mul(t.data.len() as u64));
    }
    let header = HeaderOut {
        meta,
        tensors: tensors
            .iter()
            .map(|t| EntryOut {
                name: &t.name,
                dtype: "f32",
                shape: &t.shape,
            })
            .collect(),
    };
    let header = serde_json::to_vec(&header)
        .map_err(|e| anyhow!("{shown}: cannot encode the header: {e}"))?;
    let header_len = header.len() as u64;
    if header_len > MAX_HEADER_BYTES {
        bail!(
            "{shown}: cannot write: the header would be {header_len} bytes, over the {MAX_HEADER_BYTES}-byte limit"
        );
    }
    let total = (PREFIX_BYTES + header_len + CHECKSUM_BYTES).saturating_add(data_bytes);
    if total > MAX_FILE_BYTES {
        bail!(
            "{shown}: cannot write: the file would be {total} bytes, over the {MAX_FILE_BYTES}-byte limit"
        );
    }
    atomic_write(path, |w| {
        let mut w = HashingWriter {
            inner: w,
            hasher: Sha256::new(),
        };
        w.write_all(kind.magic())?;
        w.write_all(&FORMAT_VERSION.to_le_bytes())?;
        w.write_all(&header_len.to_le_bytes())?;
        w.write_all(&header)?;
        let mut bytes = Vec::with_capacity(CHUNK_VALUES * 4);
        for t in tensors {
            for chunk in t.data.chunks(CHUNK_VALUES) {
                bytes.clear();
                bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
                w.write_all(&bytes)?;
            }
        }
        let digest = w.hasher.finalize();
        w.inner.write_all(&digest)?;
        Ok(())
    })
}

/// Reads a file of kind `expected`, checking everything listed in the module docs. Every error
/// is one line naming the file and what is wrong with it.
pub fn read(path: &Path, expected: Kind) -> Result<Container> {
    let shown = path.display().to_string();
    let fail = |msg: String| anyhow!("{shown}: {msg}");
    let file = File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let metadata = file
        .metadata()
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if metadata.is_dir() {
        return Err(fail(format!("is a directory, not a {}", expected.noun())));
    }
    let len = metadata.len();
    if len > MAX_FILE_BYTES {
        // Parsing stops, with the right message, before reading much of it.
        let parsed = parse(BufReader::new(file), len, &shown, expected);
        return Err(parsed.err().unwrap_or_else(|| fail("is too large".into())));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    read_bytes(&bytes, &shown, expected)
}

/// [`read`] on the bytes of a file, with `name` standing for it in error messages: the same
/// checks, for fuzzing and for files already in memory.
///
/// The checksum is computed on another thread while this one parses: SHA-256 of a 3.5 MB model
/// takes about 2 ms, a fifth of `cnn predict`'s whole run.
pub fn read_bytes(bytes: &[u8], name: &str, expected: Kind) -> Result<Container> {
    let body = bytes.len().checked_sub(CHECKSUM_BYTES as usize);
    let (computed, parsed) = rayon::join(
        || body.map(|b| Sha256::digest(&bytes[..b])),
        || parse(bytes, bytes.len() as u64, name, expected),
    );
    let (container, stored) = parsed?;
    let computed = computed.expect("a parsed file holds a checksum");
    if computed[..] != stored[..] {
        return Err(anyhow!(
            "{name}: corrupt: checksum mismatch (stored SHA-256 {}, computed {})",
            hex(&stored),
            hex(&computed)
        ));
    }
    Ok(container)
}

/// Parses a container of `len` bytes from `inner`; `shown` names the file in errors. Returns it
/// with the checksum stored at its end, for the caller to compare with the bytes' SHA-256.
fn parse(inner: impl Read, len: u64, shown: &str, expected: Kind) -> Result<(Container, [u8; 32])> {
    let fail = |msg: String| anyhow!("{shown}: {msg}");
    let io_fail = |e: io::Error| fail(format!("cannot read: {e}"));
    let mut r = inner;

    // Magic: which kind of file this is, if any.
    if len == 0 {
        return Err(fail(format!("is empty, not a {}", expected.noun())));
    }
    let mut magic = [0u8; 8];
    let got = len.min(8) as usize;
    r.read_exact(&mut magic[..got]).map_err(io_fail)?;
    if got == 8 && &magic == expected.other().magic() {
        return Err(fail(match expected {
            Kind::Model => "is a training checkpoint, not a model file".to_string(),
            Kind::Checkpoint => "is a model file, not a training checkpoint".to_string(),
        }));
    }
    if magic[..got] != expected.magic()[..got] {
        return Err(fail(format!(
            "not a {} (it does not start with the magic bytes)",
            expected.noun()
        )));
    }
    if len > MAX_FILE_BYTES {
        return Err(fail(format!(
            "is {len} bytes; this cnn reads files of at most {MAX_FILE_BYTES} bytes (4 GiB)"
        )));
    }
    let truncated = || {
        fail(format!(
            "truncated: only {len} bytes, too short for the fixed fields"
        ))
    };
    if len < PREFIX_BYTES + CHECKSUM_BYTES {
        // Report a newer version if we can see it: it explains more than "truncated" does.
        if len >= 12 {
            let mut v = [0u8; 4];
            r.read_exact(&mut v).map_err(io_fail)?;
            check_version(u32::from_le_bytes(v)).map_err(fail)?;
        }
        return Err(truncated());
    }

    // Version and header length.
    let mut v = [0u8; 4];
    r.read_exact(&mut v).map_err(io_fail)?;
    check_version(u32::from_le_bytes(v)).map_err(fail)?;
    let mut hl = [0u8; 8];
    r.read_exact(&mut hl).map_err(io_fail)?;
    let header_len = u64::from_le_bytes(hl);
    if header_len > MAX_HEADER_BYTES {
        return Err(fail(format!(
            "corrupt: the header length field says {header_len} bytes, over the {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    if PREFIX_BYTES + header_len + CHECKSUM_BYTES > len {
        return Err(fail(format!(
            "truncated: the header alone needs {} bytes but the file has {len}",
            PREFIX_BYTES + header_len + CHECKSUM_BYTES
        )));
    }

    // Header: JSON, then the tensor directory's total size against what the file holds.
    let mut header = vec![0u8; header_len as usize];
    r.read_exact(&mut header).map_err(io_fail)?;
    let header: HeaderIn = serde_json::from_slice(&header)
        .map_err(|e| fail(format!("corrupt header (not the expected JSON): {e}")))?;
    let mut names = HashSet::new();
    let mut data_bytes: u64 = 0;
    for e in &header.tensors {
        if e.dtype != "f32" {
            return Err(fail(format!(
                "tensor `{}` has dtype `{}`; this cnn reads only f32",
                e.name.escape_debug(),
                e.dtype.escape_debug()
            )));
        }
        if !names.insert(e.name.as_str()) {
            return Err(fail(format!(
                "corrupt: tensor `{}` is listed twice",
                e.name.escape_debug()
            )));
        }
        data_bytes = element_count(&e.shape)
            .and_then(|n| u64::try_from(n).ok())
            .and_then(|n| n.checked_mul(4))
            .and_then(|b| data_bytes.checked_add(b))
            .ok_or_else(|| {
                fail(format!(
                    "corrupt: tensor `{}` has an impossible shape {:?}",
                    e.name.escape_debug(),
                    e.shape
                ))
            })?;
    }
    let available = len - PREFIX_BYTES - header_len - CHECKSUM_BYTES;
    if data_bytes > available {
        return Err(fail(format!(
            "truncated or corrupt: the tensor directory needs {data_bytes} bytes of tensor data but the file holds {available}"
        )));
    }
    if data_bytes < available {
        return Err(fail(format!(
            "corrupt: {} unexpected bytes after the {data_bytes} bytes of tensor data",
            available - data_bytes
        )));
    }

    // Tensor data: sizes are now known to fit in the file, so allocating them is safe.
    let mut tensors = Vec::with_capacity(header.tensors.len());
    let mut bytes = vec![0u8; CHUNK_VALUES * 4];
    for e in header.tensors {
        let n = element_count(&e.shape).unwrap_or(0);
        let mut values = Vec::with_capacity(n);
        while values.len() < n {
            let take = (n - values.len()).min(CHUNK_VALUES);
            let chunk = &mut bytes[..take * 4];
            r.read_exact(chunk).map_err(io_fail)?;
            values.extend(
                chunk
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        tensors.push(NamedTensor {
            name: e.name,
            shape: e.shape,
            data: values,
        });
    }

    // The checksum of everything before it.
    let mut stored = [0u8; 32];
    r.read_exact(&mut stored).map_err(io_fail)?;
    let container = Container {
        kind: expected,
        meta: header.meta,
        tensors,
    };
    Ok((container, stored))
}

fn check_version(version: u32) -> Result<(), String> {
    match version {
        FORMAT_VERSION => Ok(()),
        0 => Err("corrupt: format version 0 does not exist".into()),
        v => Err(format!(
            "written by a newer cnn (format {v}); this cnn reads format {FORMAT_VERSION}"
        )),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Passes writes through and hashes every byte written.
struct HashingWriter<'a> {
    inner: &'a mut dyn Write,
    hasher: Sha256,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

// ---------------------------------------------------------------------------------------------
// The typed model.

/// Where a model came from. Every field defaults, so fields may be added without a format bump.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Provenance {
    /// The dataset it was trained on (a name or a path).
    pub dataset: String,
    pub epochs: u64,
    pub seed: u64,
    /// Final figures (`test_accuracy`, `test_loss`). JSON has no NaN: a non-finite value is
    /// written as `null` and read back as NaN.
    #[serde(deserialize_with = "nan_for_null")]
    pub metrics: BTreeMap<String, f64>,
    /// The version of cnn that wrote the file.
    pub cnn_version: String,
    /// When the file was written, in seconds since 1970-01-01 UTC.
    pub created_unix: u64,
    /// Anything else worth recording (command line, host).
    pub extra: BTreeMap<String, String>,
}

impl Provenance {
    /// Provenance stamped with this cnn's version and the current time.
    pub fn new(dataset: impl Into<String>, epochs: u64, seed: u64) -> Self {
        let created_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Provenance {
            dataset: dataset.into(),
            epochs,
            seed,
            cnn_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix,
            ..Default::default()
        }
    }
}

fn nan_for_null<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let m = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

/// A trained classifier: the architecture, the class names, the input normalisation and every
/// parameter and buffer by name.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// The architecture in canonical text form (`ArchSpec`'s `Display`).
    pub arch: String,
    /// `C×H×W` of one input image.
    pub input: [usize; 3],
    /// Class names, in the order of the logits.
    pub classes: Vec<String>,
    /// Per-channel normalisation applied to images scaled to [0, 1]: `(x − mean) / std`.
    pub norm_mean: Vec<f32>,
    pub norm_std: Vec<f32>,
    /// Softmax temperature (logits are divided by it); 1.0 until calibrated.
    pub temperature: f32,
    pub provenance: Provenance,
    /// Every parameter and buffer, in the network's visit order.
    pub params: Vec<NamedTensor>,
}

/// The `meta` JSON of a model file. `norm` has the shape of `data::Normalization`. The `f32`
/// settings travel as `f64` (see [`readable`]).
#[derive(Serialize, Deserialize)]
struct ModelMeta {
    arch: String,
    input: [usize; 3],
    classes: Vec<String>,
    norm: NormMeta,
    #[serde(default = "one")]
    temperature: f64,
    #[serde(default)]
    provenance: Provenance,
}

#[derive(Serialize, Deserialize)]
struct NormMeta {
    mean: Vec<f64>,
    std: Vec<f64>,
}

fn one() -> f64 {
    1.0
}

/// An `f64` that reads back as exactly `x` and prints as `x`'s shortest form (0.1307 rather
/// than 0.1307000070810318, the exact value of the nearest `f32`). The shortest decimal is
/// rounded to `f64` and then to `f32` on reading; should that double rounding ever miss `x`,
/// the exact widening is stored instead.
fn readable(x: f32) -> f64 {
    match x.to_string().parse::<f64>() {
        Ok(d) if d as f32 == x => d,
        _ => f64::from(x),
    }
}

impl Model {
    /// Captures a network's architecture and every parameter and buffer, by full name.
    /// `classes` must have one name per logit; [`Model::save`] checks it.
    pub fn from_network(
        net: &mut Network,
        classes: Vec<String>,
        norm_mean: Vec<f32>,
        norm_std: Vec<f32>,
        provenance: Provenance,
    ) -> Model {
        Model {
            arch: net.spec.to_string(),
            input: net.spec.input,
            classes,
            norm_mean,
            norm_std,
            temperature: 1.0,
            provenance,
            params: network_params(net),
        }
    }

    /// Builds the network the model describes and loads every parameter into it. Errors name
    /// the missing, extra or misshapen parameter (the caller adds the file).
    pub fn build_network(&self) -> Result<Network> {
        let mut net = self.empty_network()?;
        load_params(&mut net, self.params.clone())?;
        Ok(net)
    }

    /// The network of this model's architecture, its weights still zero.
    fn empty_network(&self) -> Result<Network> {
        let spec = crate::spec::parse(&self.arch).map_err(|e| anyhow!("architecture {e}"))?;
        if spec.input != self.input {
            bail!(
                "the architecture's input {} differs from the recorded input {}",
                fmt_shape(&spec.input),
                fmt_shape(&self.input)
            );
        }
        // The parameters must all be in the file, so the file's own values bound what building
        // may allocate: a damaged or hostile architecture cannot ask for much more than the
        // file holds. The floor of 2^20 (8 MB with gradients) lets a small mismatch through to
        // `load_params`, which names the parameter and both shapes.
        let stored: u64 = self.params.iter().map(|t| t.data.len() as u64).sum();
        let limits = BuildLimits {
            max_params: stored.max(1 << 20).min(BuildLimits::default().max_params),
            ..BuildLimits::default()
        };
        Network::build_limited(&spec, self.classes.len(), None, &limits)
            .map_err(|e| anyhow!("architecture: {e}"))
    }

    /// The `meta` JSON of this model, for embedding in a checkpoint (`{"model": ..., ...}`).
    pub fn meta(&self) -> Value {
        let meta = ModelMeta {
            arch: self.arch.clone(),
            input: self.input,
            classes: self.classes.clone(),
            norm: NormMeta {
                mean: self.norm_mean.iter().map(|&x| readable(x)).collect(),
                std: self.norm_std.iter().map(|&x| readable(x)).collect(),
            },
            temperature: readable(self.temperature),
            provenance: self.provenance.clone(),
        };
        // Plain strings, numbers and string-keyed maps: serialising to a `Value` cannot fail.
        serde_json::to_value(meta).unwrap_or(Value::Null)
    }

    /// Same as [`Model::meta`].
    pub fn model_meta(&self) -> Value {
        self.meta()
    }

    /// The inverse of [`Model::meta`] plus the parameters: checks everything listed on
    /// [`Model::validate`]. Errors do not name a file; the caller adds it.
    pub fn from_parts(meta: Value, params: Vec<NamedTensor>) -> Result<Model> {
        let model = Model::from_parts_unchecked(meta, params)?;
        model.validate()?;
        Ok(model)
    }

    /// [`Model::from_parts`] without [`Model::validate`]'s checks (the caller makes them).
    fn from_parts_unchecked(meta: Value, params: Vec<NamedTensor>) -> Result<Model> {
        let meta: ModelMeta =
            serde_json::from_value(meta).map_err(|e| anyhow!("model metadata: {e}"))?;
        let model = Model {
            arch: meta.arch,
            input: meta.input,
            classes: meta.classes,
            norm_mean: meta.norm.mean.iter().map(|&x| x as f32).collect(),
            norm_std: meta.norm.std.iter().map(|&x| x as f32).collect(),
            temperature: meta.temperature as f32,
            provenance: meta.provenance,
            params,
        };
        Ok(model)
    }

    /// This model as a [`Container`] of kind [`Kind::Model`] (copies the parameters).
    pub fn to_container(&self) -> Container {
        Container {
            kind: Kind::Model,
            meta: self.meta(),
            tensors: self.params.clone(),
        }
    }

    /// A model from a container's `meta` and tensors; see [`Model::from_parts`].
    pub fn from_container(container: Container) -> Result<Model> {
        Model::from_parts(container.meta, container.tensors)
    }

    /// Checks that the model can be used: at least 2 distinct, non-empty class names; one
    /// normalisation mean and std per input channel, finite, std > 0; temperature positive and
    /// finite; every parameter finite; the architecture parses and builds for these classes; and
    /// the parameters match it exactly by name and shape.
    pub fn validate(&self) -> Result<()> {
        self.check_fields()?;
        self.build_network().map(|_| ())
    }

    /// Every check of [`Model::validate`] but building the network.
    fn check_fields(&self) -> Result<()> {
        if self.classes.len() < 2 {
            bail!(
                "classes: a classifier needs at least 2 classes, got {}",
                self.classes.len()
            );
        }
        let mut seen = HashSet::new();
        for (i, c) in self.classes.iter().enumerate() {
            if c.is_empty() {
                bail!("classes: class {i} has an empty name");
            }
            if !seen.insert(c.as_str()) {
                bail!("classes: `{}` appears twice", c.escape_debug());
            }
        }
        let channels = self.input[0];
        for (what, v) in [("mean", &self.norm_mean), ("std", &self.norm_std)] {
            if v.len() != channels {
                bail!(
                    "normalisation: {what} has {} values but the input has {channels} channels",
                    v.len()
                );
            }
            if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                bail!("normalisation: {what}[{i}] is {x}, not a finite number");
            }
        }
        if let Some((i, s)) = self.norm_std.iter().enumerate().find(|(_, s)| **s <= 0.0) {
            bail!("normalisation: std[{i}] is {s}; every std must be positive");
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            bail!(
                "temperature must be positive and finite, got {}",
                self.temperature
            );
        }
        for t in &self.params {
            if let Some((i, x)) = t.data.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                bail!(
                    "parameter `{}` holds {x} at index {i}; every weight must be finite",
                    t.name.escape_debug()
                );
            }
        }
        Ok(())
    }

    /// Saves the model atomically after [`Model::validate`], so that a file that cannot be
    /// loaded is never written.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate()
            .map_err(|e| anyhow!("{}: cannot save the model: {e:#}", path.display()))?;
        let params: Vec<&NamedTensor> = self.params.iter().collect();
        write_borrowed(path, Kind::Model, &self.meta(), &params)
    }

    /// Loads and validates a model file; every error names the file.
    pub fn load(path: &Path) -> Result<Model> {
        let container = read(path, Kind::Model)?;
        Model::from_container(container).map_err(|e| anyhow!("{}: {e:#}", path.display()))
    }

    /// The input normalisation that training applied, for eval and predict to apply again.
    pub fn normalization(&self) -> crate::data::Normalization {
        crate::data::Normalization {
            mean: self.norm_mean.clone(),
            std: self.norm_std.clone(),
        }
    }

    /// Refuses a dataset whose classes are not the model's, in the same order (`path` is the
    /// model file, for the message).
    pub fn check_classes(&self, path: &Path, dataset_classes: &[String]) -> Result<()> {
        if dataset_classes != self.classes.as_slice() {
            bail!(
                "{}: the model's classes ({}) differ from the dataset's ({})",
                path.display(),
                self.classes.join(", "),
                dataset_classes.join(", ")
            );
        }
        Ok(())
    }

    /// [`Model::load`] and [`Model::build_network`] in one step, building the network once
    /// (building it is also the last of the load checks). The weights move into the network:
    /// the returned model's `params` is empty.
    pub fn load_with_network(path: &Path) -> Result<(Model, Network)> {
        let container = read(path, Kind::Model)?;
        let named = |e: anyhow::Error| anyhow!("{}: {e:#}", path.display());
        let mut model =
            Model::from_parts_unchecked(container.meta, container.tensors).map_err(named)?;
        model.check_fields().map_err(named)?;
        let mut net = model.empty_network().map_err(named)?;
        load_params(&mut net, std::mem::take(&mut model.params)).map_err(named)?;
        Ok((model, net))
    }
}

/// Every parameter and buffer of `net`, by full name, in visit order.
pub fn network_params(net: &mut Network) -> Vec<NamedTensor> {
    let mut params = Vec::new();
    net.visit_params(&mut |name, p| {
        params.push(NamedTensor {
            name: name.to_string(),
            shape: p.value.shape().to_vec(),
            data: p.value.iter().copied().collect(),
        })
    });
    params
}

/// Moves `params` into `net` by name. Every parameter and buffer of the network must be
/// present with the same shape, and no other may be: errors name the parameter and the shapes.
pub fn load_params(net: &mut Network, params: Vec<NamedTensor>) -> Result<()> {
    // Name → (position in the file, tensor); the position makes the "not in the architecture"
    // report name the first such tensor, whatever the map's order.
    let mut by_name: HashMap<String, (usize, NamedTensor)> = HashMap::with_capacity(params.len());
    for (i, t) in params.into_iter().enumerate() {
        if by_name.contains_key(&t.name) {
            bail!("parameter `{}` is listed twice", t.name);
        }
        by_name.insert(t.name.clone(), (i, t));
    }
    let mut problem = None;
    net.visit_params(&mut |name, p| {
        if problem.is_some() {
            return;
        }
        match by_name.remove(name) {
            None => {
                problem = Some(format!(
                    "parameter `{name}` ({}) is missing",
                    fmt_shape(p.value.shape())
                ))
            }
            Some((_, t)) if t.shape != p.value.shape() || t.data.len() != p.value.len() => {
                problem = Some(format!(
                    "parameter `{name}` has shape {} with {} values, but the architecture needs {}",
                    fmt_shape(&t.shape),
                    t.data.len(),
                    fmt_shape(p.value.shape())
                ))
            }
            // Moved, not copied: a prediction touches each weight page once, not twice.
            Some((_, t)) => match Tensor::from_shape_vec(IxDyn(&t.shape), t.data) {
                Ok(v) => p.value = v,
                Err(e) => problem = Some(format!("parameter `{name}`: {e}")),
            },
        }
    });
    if let Some(problem) = problem {
        bail!(problem);
    }
    if let Some((_, extra)) = by_name.values().min_by_key(|(i, _)| *i) {
        bail!(
            "parameter `{}` ({}) is not in the architecture",
            extra.name.escape_debug(),
            fmt_shape(&extra.shape)
        );
    }
    Ok(())
}

/// A 64-hex-digit SHA-256 of every parameter and buffer of `net` in visit order: for each,
/// the name's length (u64) and bytes, the rank (u64) and each dimension (u64), then the values
/// as f32; all little-endian. Two networks with equal digests hold bit-identical weights.
pub fn weights_sha256(net: &mut Network) -> String {
    let mut h = Sha256::new();
    let mut bytes = Vec::with_capacity(CHUNK_VALUES * 4);
    net.visit_params(&mut |name, p| {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((p.value.ndim() as u64).to_le_bytes());
        for &d in p.value.shape() {
            h.update((d as u64).to_le_bytes());
        }
        match p.value.as_slice() {
            Some(values) => {
                for chunk in values.chunks(CHUNK_VALUES) {
                    bytes.clear();
                    bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
                    h.update(&bytes);
                }
            }
            None => p.value.iter().for_each(|v| h.update(v.to_le_bytes())),
        }
    });
    hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_count_refuses_overflow() {
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[2, 0, 5]), Some(0));
        assert_eq!(element_count(&[usize::MAX, 2]), None);
        assert_eq!(element_count(&[1 << 40, 1 << 40]), None);
    }

    #[test]
    fn container_round_trip_keeps_meta_and_bits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.ckpt");
        let c = Container {
            kind: Kind::Checkpoint,
            meta: serde_json::json!({"train": {"epoch": 3}, "note": "ü"}),
            tensors: vec![
                NamedTensor {
                    name: "a".into(),
                    shape: vec![2, 2],
                    data: vec![1.0, -0.0, f32::MIN_POSITIVE, 1e-45],
                },
                NamedTensor {
                    name: "empty".into(),
                    shape: vec![0, 3],
                    data: vec![],
                },
                NamedTensor {
                    name: "scalar".into(),
                    shape: vec![],
                    data: vec![f32::NAN],
                },
            ],
        };
        write(&path, &c).unwrap();
        let back = read(&path, Kind::Checkpoint).unwrap();
        assert_eq!(back.meta, c.meta);
        assert_eq!(back.tensors.len(), 3);
        for (a, b) in back.tensors.iter().zip(&c.tensors) {
            assert_eq!((&a.name, &a.shape), (&b.name, &b.shape));
            let bits = |t: &NamedTensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(a), bits(b));
        }
    }

    #[test]
    fn readable_values_read_back_exactly() {
        for x in [
            0.1307f32,
            0.3081,
            1.0,
            1e-30,
            3.4e38,
            f32::MIN_POSITIVE,
            1e-45,
            0.1 + 0.2,
        ] {
            let d = readable(x);
            assert_eq!((d as f32).to_bits(), x.to_bits(), "{x}");
        }
        assert_eq!(serde_json::to_string(&readable(0.1307)).unwrap(), "0.1307");
        // Exhaustively over a band of mantissas: every one round-trips.
        for bits in (0x3e00_0000u32..0x3e10_0000).step_by(7) {
            let x = f32::from_bits(bits);
            assert_eq!((readable(x) as f32).to_bits(), bits);
        }
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
