//! The byte container of model (`.cnn`) and checkpoint (`.ckpt`) files: free-form JSON metadata
//! and named `f32` tensors, with a checksum.
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
//! This file knows only the layout: [`Container`] with [`write`] / [`read`]. The training code
//! stores its checkpoints with it, and [`super::model::Model`] gives the `meta` of a model file
//! its typed fields.
//!
//! Reading never panics and never allocates more than the file's size: every length is checked
//! against the file size, with overflow-checked arithmetic, before anything is allocated.

use super::atomic::atomic_write;
use crate::tensor::fmt_shape;
use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
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
pub(crate) const CHUNK_VALUES: usize = 16 * 1024;

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
/// The checksum is computed on another thread while this one parses: hashing a model is a good
/// part of `cnn predict`'s short run, and needs nothing from the parse.
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

pub(crate) fn hex(bytes: &[u8]) -> String {
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
    fn hex_is_lowercase_two_digits_per_byte() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
