//! Storage: the files cnn writes and reads back.
//!
//! - [`atomic`]: every file is written to a temporary beside it, synced and renamed, so a crash
//!   never leaves a partial file;
//! - [`container`]: the byte layout of model and checkpoint files, with every size read from a
//!   file checked before anything is allocated (safetensors, with cnn's metadata and digest);
//! - [`model`]: the typed model (architecture, classes, normalisation, temperature,
//!   provenance) and the checks that make a loaded one usable;
//! - [`legacy`]: reading files of format 1, cnn's layout before the safetensors one;
//! - [`params`]: a network's parameters as named tensors and back;
//! - [`onnx`]: a model's inference path as an ONNX graph, for other runtimes.
//!
//! May use: `net` (parse an architecture, build a network, visit its parameters by name; never a
//! layer's internals), `data` (the normalisation type), `kernels::reduce` (the finite check of
//! every weight), `tensor`, `error`. Prints nothing.

pub mod atomic;
pub mod container;
pub mod legacy;
pub mod model;
pub mod onnx;
pub mod params;

pub use model::{Model, Provenance};
