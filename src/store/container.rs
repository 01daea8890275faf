//! The byte container of model (`.cnn`) and checkpoint (`.ckpt`) files: named `f32` tensors in
//! the [safetensors](https://github.com/huggingface/safetensors) layout, with cnn's metadata and
//! a SHA-256 in its `__metadata__`, so that any safetensors reader (Python's
//! `safetensors.numpy.load_file`) returns every weight by name.
//!
//! # Layout (see `docs/MODEL_FORMAT.md` for the full description)
//!
//! | bytes | content |
//! |---|---|
//! | 8 | `u64` little-endian header length `N`, a multiple of 8 |
//! | `N` | header: UTF-8 JSON, padded with spaces: `{"__metadata__": {...}, "<tensor>": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...}` |
//! | rest | tensor data: each tensor's `f32` values, little-endian, row-major, in offset order |
//!
//! `__metadata__` maps strings to strings: [`FORMAT_KEY`] says which [`Kind`] of file this is,
//! [`VERSION_KEY`] the format version, [`DIGEST_KEY`] the SHA-256 of the whole file with that
//! value's 64 hex digits replaced by `0`s (so a flipped byte anywhere is caught); the rest is the
//! caller's ([`Container::meta`]).
//!
//! This file knows only the layout: [`Container`] with [`write`] / [`read`]. Files of format 1
//! (cnn's own layout before this one) are read by [`super::legacy`].
//!
//! Reading never panics and never allocates more than the file's size: the header length is
//! checked against [`MAX_HEADER_BYTES`] and the file size before the header is parsed, and the
//! tensors' offsets (validated by the `safetensors` crate, overflow-checked) against the bytes
//! the file holds before any tensor is allocated.

use super::atomic::atomic_write;
use super::legacy;
use crate::tensor::fmt_shape;
use anyhow::{Result, anyhow, bail};
use safetensors::Dtype;
use safetensors::tensor::Metadata;
use serde::Serialize;
use serde::ser::SerializeMap;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// The format version this cnn writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 2;
/// The largest header (JSON) cnn writes or reads.
pub const MAX_HEADER_BYTES: u64 = 16 << 20;
/// The largest file cnn writes or reads.
pub const MAX_FILE_BYTES: u64 = 4 << 30;
/// The `u64` header length in front of the header.
const PREFIX_BYTES: u64 = 8;
/// Values converted to bytes at a time while streaming tensor data.
pub(crate) const CHUNK_VALUES: usize = 16 * 1024;

/// `__metadata__` key: `cnn model` or `cnn checkpoint`.
pub const FORMAT_KEY: &str = "format";
/// `__metadata__` key: the format version, in decimal.
pub const VERSION_KEY: &str = "format_version";
/// `__metadata__` key: the file's SHA-256 (see the module docs), 64 lowercase hex digits.
pub const DIGEST_KEY: &str = "sha256";
/// The keys the container owns; a caller's metadata may not use them.
const RESERVED_KEYS: [&str; 3] = [FORMAT_KEY, VERSION_KEY, DIGEST_KEY];
/// The safetensors header's own key for the metadata, hence no tensor's name.
const METADATA_NAME: &str = "__metadata__";

/// What a file holds; each kind has its own `format` value so that one is never mistaken for the
/// other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Model,
    Checkpoint,
}

impl Kind {
    /// The value of [`FORMAT_KEY`] in a file of this kind.
    pub fn format(self) -> &'static str {
        match self {
            Kind::Model => "cnn model",
            Kind::Checkpoint => "cnn checkpoint",
        }
    }

    pub(crate) fn noun(self) -> &'static str {
        match self {
            Kind::Model => "cnn model file",
            Kind::Checkpoint => "cnn training checkpoint",
        }
    }

    pub(crate) fn other(self) -> Kind {
        match self {
            Kind::Model => Kind::Checkpoint,
            Kind::Checkpoint => Kind::Model,
        }
    }

    /// The error for a file of the other kind.
    pub(crate) fn mistaken(self) -> &'static str {
        match self {
            Kind::Model => "is a training checkpoint, not a model file",
            Kind::Checkpoint => "is a model file, not a training checkpoint",
        }
    }
}

/// A tensor stored by name: `data` holds the `shape`'s product of values in row-major order,
/// borrowed where it lies in place in a file built into the binary ([`read_embedded`]).
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Cow<'static, [f32]>,
}

/// The generic content of a model or checkpoint file: string metadata plus named tensors, in the
/// order of their data.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    pub kind: Kind,
    /// `__metadata__` without the container's own keys ([`FORMAT_KEY`], [`VERSION_KEY`],
    /// [`DIGEST_KEY`]).
    pub meta: BTreeMap<String, String>,
    pub tensors: Vec<NamedTensor>,
}

/// The number of values of a tensor of `shape`, or `None` if it overflows `usize`.
pub(crate) fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// Writes `container` to `path` atomically (see [`atomic_write`]), streaming the tensor data.
pub fn write(path: &Path, container: &Container) -> Result<()> {
    let tensors: Vec<&NamedTensor> = container.tensors.iter().collect();
    write_borrowed(path, container.kind, &container.meta, &tensors)
}

/// The header as written: the metadata first, then the tensors in data order (safetensors
/// readers order tensors by offset, so the file keeps the network's visit order).
struct HeaderOut<'a> {
    meta: &'a BTreeMap<&'a str, &'a str>,
    tensors: &'a [&'a NamedTensor],
}

#[derive(Serialize)]
struct EntryOut<'a> {
    dtype: &'static str,
    shape: &'a [usize],
    data_offsets: [u64; 2],
}

impl Serialize for HeaderOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.tensors.len() + 1))?;
        map.serialize_entry(METADATA_NAME, self.meta)?;
        let mut offset = 0u64;
        for t in self.tensors {
            let end = offset + 4 * t.data.len() as u64;
            map.serialize_entry(
                &t.name,
                &EntryOut {
                    dtype: "F32",
                    shape: &t.shape,
                    data_offsets: [offset, end],
                },
            )?;
            offset = end;
        }
        map.end()
    }
}

/// [`write`] from borrowed parts, so that a checkpoint can list a model's parameters and the
/// optimizer state without copying either.
pub fn write_borrowed(
    path: &Path,
    kind: Kind,
    meta: &BTreeMap<String, String>,
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
        if t.name == METADATA_NAME {
            bail!("{shown}: cannot write: a tensor may not be named `{METADATA_NAME}`");
        }
        if !names.insert(t.name.as_str()) {
            bail!("{shown}: cannot write: tensor `{}` is listed twice", t.name);
        }
        data_bytes = data_bytes.saturating_add(4u64.saturating_mul(t.data.len() as u64));
    }
    if let Some(k) = RESERVED_KEYS.iter().find(|k| meta.contains_key(**k)) {
        bail!("{shown}: cannot write: metadata key `{k}` is the container's own");
    }
    let version = FORMAT_VERSION.to_string();
    let zeros = "0".repeat(64);
    let mut all: BTreeMap<&str, &str> =
        meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.insert(FORMAT_KEY, kind.format());
    all.insert(VERSION_KEY, &version);
    all.insert(DIGEST_KEY, &zeros);
    let mut header = serde_json::to_vec(&HeaderOut {
        meta: &all,
        tensors,
    })
    .map_err(|e| anyhow!("{shown}: cannot encode the header: {e}"))?;
    // Safetensors pads the header with spaces so that the data starts 8-byte aligned.
    header.resize(header.len().next_multiple_of(8), b' ');
    let header_len = header.len() as u64;
    if header_len > MAX_HEADER_BYTES {
        bail!(
            "{shown}: cannot write: the header would be {header_len} bytes, over the {MAX_HEADER_BYTES}-byte limit"
        );
    }
    let total = (PREFIX_BYTES + header_len).saturating_add(data_bytes);
    if total > MAX_FILE_BYTES {
        bail!(
            "{shown}: cannot write: the file would be {total} bytes, over the {MAX_FILE_BYTES}-byte limit"
        );
    }
    // A JSON string cannot hold an unescaped quote, so this pattern is the digest's entry.
    let placeholder = format!("\"{DIGEST_KEY}\":\"{zeros}\"");
    let at = find(&header, placeholder.as_bytes())
        .map(|i| i + DIGEST_KEY.len() + 4)
        .ok_or_else(|| anyhow!("{shown}: cannot write: the digest is missing from the header"))?;

    // The digest covers the file as written with zeros in its place: one pass over the data to
    // compute it, a second to write.
    let mut hasher = Sha256::new();
    hasher.update(header_len.to_le_bytes());
    hasher.update(&header);
    let mut bytes = Vec::with_capacity(CHUNK_VALUES * 4);
    for_each_chunk(tensors, &mut bytes, |b| {
        hasher.update(b);
        Ok(())
    })?;
    header[at..at + 64].copy_from_slice(hex(&hasher.finalize()).as_bytes());

    atomic_write(path, |w| {
        w.write_all(&header_len.to_le_bytes())?;
        w.write_all(&header)?;
        for_each_chunk(tensors, &mut bytes, |b| Ok(w.write_all(b)?))
    })
}

/// Calls `f` on the tensors' data as little-endian bytes, a chunk at a time.
fn for_each_chunk(
    tensors: &[&NamedTensor],
    bytes: &mut Vec<u8>,
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    for t in tensors {
        for chunk in t.data.chunks(CHUNK_VALUES) {
            bytes.clear();
            bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            f(bytes)?;
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
        // Only the start is read: enough to tell a foreign file from one that is too large.
        let mut start = Vec::with_capacity(9);
        (&file)
            .take(9)
            .read_to_end(&mut start)
            .map_err(|e| fail(format!("cannot read: {e}")))?;
        if legacy::is_legacy(&start) || start.get(8) == Some(&b'{') {
            return Err(fail(format!(
                "is {len} bytes; this cnn reads files of at most {MAX_FILE_BYTES} bytes (4 GiB)"
            )));
        }
        return Err(fail(not_ours(expected)));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    read_bytes(&bytes, &shown, expected)
}

fn not_ours(expected: Kind) -> String {
    format!(
        "not a {} (neither the safetensors layout nor cnn's format 1)",
        expected.noun()
    )
}

/// [`read`] on the bytes of a file, with `name` standing for it in error messages: the same
/// checks, for fuzzing and for files already in memory.
pub fn read_bytes(bytes: &[u8], name: &str, expected: Kind) -> Result<Container> {
    if legacy::is_legacy(bytes) {
        return legacy::read_bytes(bytes, name, expected);
    }
    parse(Source::File(bytes), expected).map_err(|msg| anyhow!("{name}: {msg}"))
}

/// [`read_bytes`] for a file compiled into the binary: every check but the digest's (a format-1
/// file, read whole, checks its digest too), and its tensors borrowed in place where the bytes
/// allow it (4-byte aligned, on a little-endian machine; see [`aligned`]). The digest guards a
/// file against damage on its way from the writer; embedded bytes travel inside the code that
/// would check them, and a test checks them once. Hashing them on every start would be a third
/// of `cnn predict`'s time, and copying its weights out a quarter (with 4 KB pages).
pub fn read_embedded(bytes: &'static [u8], name: &str, expected: Kind) -> Result<Container> {
    if legacy::is_legacy(bytes) {
        return legacy::read_bytes(bytes, name, expected);
    }
    parse(Source::BuiltIn(bytes), expected).map_err(|msg| anyhow!("{name}: {msg}"))
}

/// The bytes [`parse`] reads, and what it may do with them.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// A file's bytes: the digest is checked and the tensors are copied out.
    File(&'a [u8]),
    /// Bytes built into the binary: trusted, and lent to the tensors where they can be.
    BuiltIn(&'static [u8]),
}

/// Parses a file already in memory; the error is the message without the file's name.
fn parse(source: Source, expected: Kind) -> Result<Container, String> {
    let bytes = match source {
        Source::File(b) => b,
        Source::BuiltIn(b) => b,
    };
    let len = bytes.len() as u64;
    if len == 0 {
        return Err(format!("is empty, not a {}", expected.noun()));
    }
    if len > MAX_FILE_BYTES {
        return Err(format!(
            "is {len} bytes; this cnn reads files of at most {MAX_FILE_BYTES} bytes (4 GiB)"
        ));
    }
    if len <= PREFIX_BYTES {
        return Err(format!(
            "truncated: only {len} bytes, too short for the header length and a header"
        ));
    }
    if bytes[8] != b'{' {
        return Err(not_ours(expected));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if header_len > MAX_HEADER_BYTES {
        return Err(format!(
            "corrupt: the header length field says {header_len} bytes, over the {MAX_HEADER_BYTES}-byte limit"
        ));
    }
    if PREFIX_BYTES + header_len > len {
        return Err(format!(
            "truncated: the header alone needs {} bytes but the file has {len}",
            PREFIX_BYTES + header_len
        ));
    }
    let data_start = (PREFIX_BYTES + header_len) as usize;
    let header = &bytes[PREFIX_BYTES as usize..data_start];

    // The crate's parser checks every tensor's dtype, shape and offsets (overflow-checked, each
    // tensor starting where the previous one ends); nothing is allocated but the directory.
    let directory: Metadata = serde_json::from_slice(header)
        .map_err(|e| format!("corrupt header (not a safetensors header): {e}"))?;
    let data_bytes = directory.data_len() as u64;
    let available = len - PREFIX_BYTES - header_len;
    if data_bytes > available {
        return Err(format!(
            "truncated or corrupt: the tensor directory needs {data_bytes} bytes of tensor data but the file holds {available}"
        ));
    }
    if data_bytes < available {
        return Err(format!(
            "corrupt: {} unexpected bytes after the {data_bytes} bytes of tensor data",
            available - data_bytes
        ));
    }

    // cnn's metadata: which kind of file, which version, and the digest over everything.
    let Some(mut meta) = directory.metadata().clone() else {
        return Err(format!(
            "not a {}: a safetensors file without cnn's `__metadata__`",
            expected.noun()
        ));
    };
    match meta.remove(FORMAT_KEY) {
        Some(f) if f == expected.format() => {}
        Some(f) if f == expected.other().format() => return Err(expected.mistaken().into()),
        Some(f) => {
            return Err(format!(
                "not a {}: its `{FORMAT_KEY}` is `{}`",
                expected.noun(),
                f.escape_debug()
            ));
        }
        None => {
            return Err(format!(
                "not a {}: a safetensors file whose `__metadata__` lacks `{FORMAT_KEY}`",
                expected.noun()
            ));
        }
    }
    let version = meta.remove(VERSION_KEY).unwrap_or_default();
    match version.parse::<u32>() {
        Ok(FORMAT_VERSION) => {}
        Ok(v) if v > FORMAT_VERSION => {
            return Err(format!(
                "written by a newer cnn (format {v}); this cnn reads formats 1 and {FORMAT_VERSION}"
            ));
        }
        _ => {
            return Err(format!(
                "corrupt: `{VERSION_KEY}` is `{}`, not a format this cnn writes",
                version.escape_debug()
            ));
        }
    }
    let stored = meta.remove(DIGEST_KEY).unwrap_or_default();
    if stored.len() != 64
        || !stored
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(format!(
            "corrupt: `{DIGEST_KEY}` is not 64 lowercase hex digits"
        ));
    }
    let at = find(header, stored.as_bytes())
        .filter(|&i| find(&header[i + 1..], stored.as_bytes()).is_none())
        .ok_or_else(|| {
            format!("corrupt: the `{DIGEST_KEY}` value does not appear exactly once in the header")
        })?;
    let at = PREFIX_BYTES as usize + at;

    // The digest and the tensors in parallel (hashing is a third of loading a model), the digest
    // judged first: a damaged file reports the damage, not what it did to a tensor.
    let digest = || {
        let mut hasher = Sha256::new();
        hasher.update(&bytes[..at]);
        hasher.update([b'0'; 64]);
        hasher.update(&bytes[at + 64..]);
        hex(&hasher.finalize())
    };
    let (computed, tensors) = match source {
        Source::File(b) => {
            let decode = || decode_tensors(&directory, &b[data_start..], copied);
            let (computed, tensors) = rayon::join(digest, decode);
            (Some(computed), tensors)
        }
        Source::BuiltIn(b) => (None, decode_tensors(&directory, &b[data_start..], lent)),
    };
    if let Some(computed) = computed.filter(|c| *c != stored) {
        return Err(format!(
            "corrupt: checksum mismatch (stored SHA-256 {stored}, computed {computed})"
        ));
    }
    Ok(Container {
        kind: expected,
        meta: meta.into_iter().collect(),
        tensors: tensors?,
    })
}

/// The tensors of `directory` from the tensor data `data`, whose size it has been checked
/// against, so allocating them is safe; `values` turns one tensor's bytes into its values.
fn decode_tensors<'a>(
    directory: &Metadata,
    data: &'a [u8],
    values: impl Fn(&'a [u8]) -> Cow<'static, [f32]>,
) -> Result<Vec<NamedTensor>, String> {
    let mut tensors = Vec::new();
    for name in directory.offset_keys() {
        let info = directory.info(&name).expect("a listed tensor");
        if info.dtype != Dtype::F32 {
            return Err(format!(
                "tensor `{}` has dtype {}; this cnn reads only F32",
                name.escape_debug(),
                info.dtype
            ));
        }
        let (begin, end) = info.data_offsets;
        tensors.push(NamedTensor {
            data: values(&data[begin..end]),
            shape: info.shape.clone(),
            name,
        });
    }
    Ok(tensors)
}

/// Little-endian `f32` bytes, decoded into a new buffer.
fn copied(bytes: &[u8]) -> Cow<'static, [f32]> {
    Cow::Owned(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// Little-endian `f32` bytes that live as long as the program, used in place when [`aligned`]
/// allows it, else [`copied`].
fn lent(bytes: &'static [u8]) -> Cow<'static, [f32]> {
    match aligned(bytes) {
        Some(values) => Cow::Borrowed(values),
        None => copied(bytes),
    }
}

/// `bytes` as the `f32`s they encode little-endian, without copying: `None` unless the machine
/// is little-endian and the bytes start 4-byte aligned and hold whole values. (The file layout
/// starts the tensor data 8-byte aligned and each tensor at a multiple of 4 bytes from there,
/// so the data of a file whose bytes are aligned, as the built-in model's are, always is.)
fn aligned(bytes: &[u8]) -> Option<&[f32]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: every bit pattern is a valid f32, and `align_to` puts in `values` only a run of
    // whole, aligned f32s inside `bytes`.
    let (head, values, tail) = unsafe { bytes.align_to::<f32>() };
    (head.is_empty() && tail.is_empty()).then_some(values)
}

/// Recomputes the digest of a file's bytes in place, as [`write`] computes it; `false` (and the
/// bytes unchanged) if they hold no header with one well-formed [`DIGEST_KEY`] value. For tests
/// and the fuzzer, to reach the checks behind the digest with edited files.
pub fn reseal(bytes: &mut [u8]) -> bool {
    let Some(len) = bytes.get(..8) else {
        return false;
    };
    let header_len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    let Some(end) = usize::try_from(header_len)
        .ok()
        .and_then(|n| n.checked_add(8))
        .filter(|&end| end <= bytes.len())
    else {
        return false;
    };
    let Ok(header) = serde_json::from_slice::<serde_json::Value>(&bytes[8..end]) else {
        return false;
    };
    let Some(stored) = header[METADATA_NAME][DIGEST_KEY].as_str() else {
        return false;
    };
    let Some(at) = find(&bytes[8..end], stored.as_bytes()).map(|i| i + 8) else {
        return false;
    };
    if stored.len() != 64 {
        return false;
    }
    bytes[at..at + 64].fill(b'0');
    let digest = hex(&Sha256::digest(&*bytes));
    bytes[at..at + 64].copy_from_slice(digest.as_bytes());
    true
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
            meta: [("train".to_string(), "{\"epoch\": 3}".to_string())]
                .into_iter()
                .chain([("note".to_string(), "ü \"quoted\"".to_string())])
                .collect(),
            tensors: vec![
                NamedTensor {
                    name: "a".into(),
                    shape: vec![2, 2],
                    data: vec![1.0, -0.0, f32::MIN_POSITIVE, 1e-45].into(),
                },
                NamedTensor {
                    name: "empty".into(),
                    shape: vec![0, 3],
                    data: vec![].into(),
                },
                NamedTensor {
                    name: "scalar".into(),
                    shape: vec![],
                    data: vec![f32::NAN].into(),
                },
            ],
        };
        write(&path, &c).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 8, 0);
        let back = read(&path, Kind::Checkpoint).unwrap();
        assert_eq!(back.meta, c.meta);
        assert_eq!(back.tensors.len(), 3);
        for (a, b) in back.tensors.iter().zip(&c.tensors) {
            assert_eq!((&a.name, &a.shape), (&b.name, &b.shape));
            let bits = |t: &NamedTensor| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(a), bits(b));
        }
        // The safetensors crate's own reader accepts the file and finds every tensor.
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("a").unwrap().shape(), [2, 2]);
        assert_eq!(st.len(), 3);
    }

    #[test]
    fn reserved_keys_and_names_are_refused_on_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.cnn");
        let meta = [(DIGEST_KEY.to_string(), "x".to_string())].into();
        let msg = write_borrowed(&path, Kind::Model, &meta, &[]).unwrap_err();
        assert!(msg.to_string().contains("`sha256` is the container's own"));
        let t = NamedTensor {
            name: METADATA_NAME.into(),
            shape: vec![],
            data: vec![0.0].into(),
        };
        let msg = write_borrowed(&path, Kind::Model, &BTreeMap::new(), &[&t]).unwrap_err();
        assert!(msg.to_string().contains("may not be named"));
        assert!(!path.exists());
    }

    #[test]
    fn embedded_bytes_skip_only_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.cnn");
        let c = Container {
            kind: Kind::Model,
            meta: BTreeMap::new(),
            tensors: vec![NamedTensor {
                name: "w".into(),
                shape: vec![3],
                data: vec![1.0, 2.0, 3.0].into(),
            }],
        };
        write(&path, &c).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let sealed: &'static [u8] = Box::leak(bytes.clone().into_boxed_slice());
        assert_eq!(read_embedded(sealed, "m", Kind::Model).unwrap(), c);
        // A changed weight: the digest catches it unless trusted; nothing else changes.
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        let damaged: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        let msg = read_bytes(damaged, "m", Kind::Model)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("checksum mismatch"), "{msg}");
        assert_eq!(
            read_embedded(damaged, "m", Kind::Model).unwrap().tensors[0].data[..2],
            [1.0, 2.0]
        );
        // Every other check still runs.
        let msg = read_embedded(sealed, "m", Kind::Checkpoint)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("is a model file"), "{msg}");
        let msg = read_embedded(&sealed[..sealed.len() - 4], "m", Kind::Model)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("truncated"), "{msg}");
    }

    /// `bytes` copied to `offset` bytes past an 8-byte boundary, for as long as the program runs.
    fn leak_at(bytes: &[u8], offset: usize) -> &'static [u8] {
        let words: &'static mut [u64] = Vec::leak(vec![0u64; (bytes.len() + offset).div_ceil(8)]);
        // SAFETY: a u64 slice is readable and writable as the bytes it spans.
        let all: &'static mut [u8] =
            unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast(), words.len() * 8) };
        all[offset..][..bytes.len()].copy_from_slice(bytes);
        &all[offset..][..bytes.len()]
    }

    /// Built-in bytes lend their tensors where they lie 4-byte aligned and copy them where they
    /// do not, the values the same either way; a file's bytes are always copied.
    #[test]
    fn embedded_tensors_are_used_in_place_when_aligned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.cnn");
        let c = Container {
            kind: Kind::Model,
            meta: BTreeMap::new(),
            tensors: vec![
                NamedTensor {
                    name: "a".into(),
                    shape: vec![3],
                    data: vec![1.0, -0.0, f32::MIN_POSITIVE].into(),
                },
                NamedTensor {
                    name: "b".into(),
                    shape: vec![5],
                    data: vec![-1.5, 1e-45, 7.0, f32::MAX, 0.25].into(),
                },
            ],
        };
        write(&path, &c).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        for offset in [0, 1, 2, 4] {
            let built_in = leak_at(&bytes, offset);
            let read = read_embedded(built_in, "m", Kind::Model).unwrap();
            assert_eq!(read, c, "offset {offset}");
            let in_place = offset % 4 == 0 && cfg!(target_endian = "little");
            for t in &read.tensors {
                assert_eq!(
                    matches!(t.data, Cow::Borrowed(_)),
                    in_place,
                    "offset {offset}"
                );
                if in_place {
                    let at = t.data.as_ptr() as usize - built_in.as_ptr() as usize;
                    assert!(at + 4 * t.data.len() <= built_in.len());
                }
            }
            let copied = read_bytes(built_in, "m", Kind::Model).unwrap();
            assert!(
                copied
                    .tensors
                    .iter()
                    .all(|t| matches!(t.data, Cow::Owned(_)))
            );
        }
    }

    #[test]
    fn aligned_views_only_whole_aligned_values() {
        let words = [1.5f32.to_bits(), (-2.0f32).to_bits(), 0];
        // SAFETY: the array is readable as the bytes it spans.
        let bytes: &[u8] = unsafe { std::slice::from_raw_parts(words.as_ptr().cast(), 12) };
        if cfg!(target_endian = "little") {
            assert_eq!(aligned(&bytes[..8]), Some(&[1.5f32, -2.0][..]));
            assert_eq!(aligned(&bytes[..0]), Some(&[][..]));
        }
        assert_eq!(aligned(&bytes[1..9]), None);
        assert_eq!(aligned(&bytes[..7]), None);
    }

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
