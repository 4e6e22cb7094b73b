//! Any bytes as a `.ir` module: an error or a module that prints back, verifies, runs and goes
//! through the passes, never a panic (`qcc_tests::fuzz::ir_case`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    qcc_tests::fuzz::ir_case(&String::from_utf8_lossy(data), None);
});
