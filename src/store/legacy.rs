//! Reading files of format 1, cnn's own layout before the safetensors one (models shipped and
//! trained before it), so that they keep loading; cnn no longer writes it. `cnn export MODEL
//! --format safetensors -o MODEL` re-saves one in the current format.
//!
//! # Layout (all integers little-endian; see `docs/MODEL_FORMAT.md`)
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic: `CNNMODEL` (a model) or `CNNCKPT\0` (a training checkpoint) |
//! | 4 | `u32` format version, 1 |
//! | 8 | `u64` header length `L` |
//! | `L` | header: UTF-8 JSON `{"meta": {...}, "tensors": [{"name", "dtype", "shape"}, ...]}` |
//! | `4·Σ` | tensor data: every tensor's `f32` values, little-endian, in directory order |
//! | 32 | SHA-256 of every byte before it |
//!
//! The JSON `meta` becomes the string metadata of a [`Container`]: a model's fields one key each
//! ([`crate::store::model::metadata_from_json`]); a checkpoint's `model` fields the same way,
//! beside its other fields as JSON text.
//!
//! Reading never panics and never allocates more than the file's size: every length is checked
//! against the file size, with overflow-checked arithmetic, before anything is allocated.

use super::container::{Container, Kind, NamedTensor, element_count, hex};
use super::model::metadata_from_json;
use anyhow::{Result, anyhow};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read};

use super::container::{MAX_FILE_BYTES, MAX_HEADER_BYTES};

/// The version of this layout.
pub const FORMAT_VERSION: u32 = 1;
/// Magic, version and header length.
const PREFIX_BYTES: u64 = 8 + 4 + 8;
const CHECKSUM_BYTES: u64 = 32;
/// Values converted from bytes at a time.
const CHUNK_VALUES: usize = 16 * 1024;

/// The 8 bytes a format-1 file of `kind` starts with.
fn magic_of(kind: Kind) -> &'static [u8; 8] {
    match kind {
        Kind::Model => b"CNNMODEL",
        Kind::Checkpoint => b"CNNCKPT\0",
    }
}

/// Whether `bytes` start like a format-1 file of either kind (or are a prefix of that start).
pub fn is_legacy(bytes: &[u8]) -> bool {
    let n = bytes.len().min(8);
    n > 0
        && [Kind::Model, Kind::Checkpoint]
            .iter()
            .any(|&k| bytes[..n] == magic_of(k)[..n])
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

/// Reads a format-1 file of kind `expected` from its bytes, `name` standing for it in errors.
///
/// The checksum is computed on another thread while this one parses: hashing a model is a good
/// part of `cnn predict`'s short run, and needs nothing from the parse.
pub fn read_bytes(bytes: &[u8], name: &str, expected: Kind) -> Result<Container> {
    let body = bytes.len().checked_sub(CHECKSUM_BYTES as usize);
    let (computed, parsed) = rayon::join(
        || body.map(|b| Sha256::digest(&bytes[..b])),
        || parse(bytes, bytes.len() as u64, name, expected),
    );
    let (header, tensors, stored) = parsed?;
    let computed = computed.expect("a parsed file holds a checksum");
    if computed[..] != stored[..] {
        return Err(anyhow!(
            "{name}: corrupt: checksum mismatch (stored SHA-256 {}, computed {})",
            hex(&stored),
            hex(&computed)
        ));
    }
    let meta = convert_meta(header, expected).map_err(|e| anyhow!("{name}: {e}"))?;
    Ok(Container {
        kind: expected,
        meta,
        tensors,
    })
}

/// The string metadata of a format-1 `meta`: see the module docs.
fn convert_meta(meta: Value, kind: Kind) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(mut fields) = meta else {
        return Err("corrupt header: `meta` is not an object".into());
    };
    match kind {
        Kind::Model => Ok(metadata_from_json(&Value::Object(fields))),
        Kind::Checkpoint => {
            let model = fields.remove("model").unwrap_or(Value::Null);
            let mut out = metadata_from_json(&model);
            for (k, v) in fields {
                out.insert(k, v.to_string());
            }
            Ok(out)
        }
    }
}

/// Tensors of the file and its JSON `meta`.
type Parsed = (Value, Vec<NamedTensor>, [u8; 32]);

/// Parses a container of `len` bytes from `inner`; `shown` names the file in errors. Returns its
/// `meta` and tensors with the checksum stored at its end, for the caller to compare with the
/// bytes' SHA-256.
fn parse(inner: impl Read, len: u64, shown: &str, expected: Kind) -> Result<Parsed> {
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
    if got == 8 && &magic == magic_of(expected.other()) {
        return Err(fail(expected.mistaken().into()));
    }
    if magic[..got] != magic_of(expected)[..got] {
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
            data: values.into(),
        });
    }

    // The checksum of everything before it.
    let mut stored = [0u8; 32];
    r.read_exact(&mut stored).map_err(io_fail)?;
    Ok((header.meta, tensors, stored))
}

fn check_version(version: u32) -> Result<(), String> {
    match version {
        FORMAT_VERSION => Ok(()),
        v => Err(format!(
            "corrupt: cnn's old layout (before safetensors) has only format {FORMAT_VERSION}, not {v}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A format-1 file laid out by hand.
    fn craft(magic: &[u8; 8], header: &Value, values: &[f32]) -> Vec<u8> {
        let header = serde_json::to_vec(header).unwrap();
        let mut f = magic.to_vec();
        f.extend(1u32.to_le_bytes());
        f.extend((header.len() as u64).to_le_bytes());
        f.extend(&header);
        f.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        let digest = Sha256::digest(&f);
        f.extend(digest);
        f
    }

    #[test]
    fn a_model_of_format_1_reads_with_its_fields_as_metadata() {
        let header = json!({
            "meta": {"arch": "input 1 1 2\nflatten\ndense classes\n", "input": [1, 1, 2],
                     "classes": ["a", "b"], "norm": {"mean": [0.5], "std": [0.25]}},
            "tensors": [{"name": "dense1.weight", "dtype": "f32", "shape": [2, 2]},
                        {"name": "dense1.bias", "shape": [2]}]
        });
        let bytes = craft(b"CNNMODEL", &header, &[1.0, 2.0, 3.0, 4.0, -0.0, 0.5]);
        assert!(is_legacy(&bytes) && is_legacy(b"CNN") && !is_legacy(b"{}"));
        let c = read_bytes(&bytes, "old.cnn", Kind::Model).unwrap();
        assert_eq!(c.meta["arch"], "input 1 1 2\nflatten\ndense classes\n");
        assert_eq!(c.meta["input"], "[1,1,2]");
        assert_eq!(c.meta["norm"], r#"{"mean":[0.5],"std":[0.25]}"#);
        assert_eq!(c.tensors[1].name, "dense1.bias");
        assert_eq!(c.tensors[1].data[0].to_bits(), (-0.0f32).to_bits());
        let msg = read_bytes(&bytes, "old.cnn", Kind::Checkpoint).unwrap_err();
        assert!(
            msg.to_string()
                .contains("is a model file, not a training checkpoint")
        );
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        let msg = read_bytes(&flipped, "old.cnn", Kind::Model).unwrap_err();
        assert!(format!("{msg:#}").starts_with("old.cnn: "), "{msg:#}");
    }

    #[test]
    fn a_checkpoint_of_format_1_keeps_its_model_fields_and_state() {
        let header = json!({
            "meta": {"model": {"arch": "x", "classes": ["a", "b"]}, "state": {"epoch": 2},
                     "optimizer_steps": 7},
            "tensors": []
        });
        let bytes = craft(b"CNNCKPT\0", &header, &[]);
        let c = read_bytes(&bytes, "run.ckpt", Kind::Checkpoint).unwrap();
        assert_eq!(c.meta["arch"], "x");
        assert_eq!(c.meta["classes"], r#"["a","b"]"#);
        assert_eq!(c.meta["state"], r#"{"epoch":2}"#);
        assert_eq!(c.meta["optimizer_steps"], "7");
    }
}
