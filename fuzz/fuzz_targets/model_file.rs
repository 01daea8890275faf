//! libFuzzer target: see `cnn_fuzz::model_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cnn_fuzz::model_file(data));
