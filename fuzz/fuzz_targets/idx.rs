//! libFuzzer target: see `cnn_fuzz::idx`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnn_fuzz::idx(data));
