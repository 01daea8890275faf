//! The integration tests: one crate (one link of the library), modules by theme. Most drive the
//! real binary (`CARGO_BIN_EXE_cnn`) in temporary folders on the shipped MNIST subset; the
//! opt-in ones that need the full datasets are `#[ignore]`d and say how to run them.

mod calibration;
mod cli;
mod common;
mod data;
mod export;
mod fuzz_corpus;
mod hostile;
mod model_file;
mod preprocess;
mod recipes;
