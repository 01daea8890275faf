//! libFuzzer target: see `cnn_fuzz::cifar`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnn_fuzz::cifar(data));
