//! Any bytes as an ONNX model: an error or a module that verifies, runs and goes through the
//! passes, never a panic (`qcc_tests::fuzz::onnx_case`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    qcc_tests::fuzz::onnx_case(data);
});
