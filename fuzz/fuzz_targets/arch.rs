//! libFuzzer target: see `cnn_fuzz::arch`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnn_fuzz::arch(data));
