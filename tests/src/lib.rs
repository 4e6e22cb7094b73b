//! Shared helpers for qcc's end-to-end tests and filetests.

use std::path::{Path, PathBuf};

pub mod fuzz;

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits inside the workspace")
        .to_path_buf()
}

/// A file of the bundled MobileNetV2 example (`examples/mobilenet_v2/REL`), as a path string.
pub fn bundled_example(rel: &str) -> String {
    workspace_root()
        .join("examples/mobilenet_v2")
        .join(rel)
        .display()
        .to_string()
}

/// `path` relative to the workspace root (as tests name files in snapshots), or as given.
pub fn relative_to_root(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The result of running the `qcc` command line in-process.
pub struct CliOutput {
    /// Exit code.
    pub code: i32,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
}

/// Runs `qcc ARGS...` in-process and captures its output.
pub fn qcc<S: AsRef<str>>(args: &[S]) -> CliOutput {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let argv =
        std::iter::once("qcc".to_string()).chain(args.iter().map(|a| a.as_ref().to_string()));
    let code = qcc_compiler::cli::run(argv, &mut out, &mut err);
    CliOutput {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

/// Deterministic pseudo-random f32 values in [-1, 1) (a 64-bit LCG), for test inputs.
pub fn random_f32(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A fresh, empty folder under the system's temporary folder for one test (`what` and the process
/// id make it unique).
pub fn scratch_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("qcc-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// ONNX fixtures of `tests/filetests/onnx/` whose ops all have integer forms (convolutions of
/// every kind, dense layers, adds, pooling, concat), each quantized by the `quantize` pass
/// calibrated on four random inputs: (fixture name, quantized module). For the QDQ export and
/// import tests.
pub fn quantized_onnx_fixtures() -> Vec<(String, qcc_dialects::Module)> {
    use qcc_dialects::{Tensor, Value};
    use qcc_passes::{PassContext, PassManager, parse_pipeline};
    const NAMES: &[&str] = &[
        "add_two_paths",
        "average_pool_count_include_pad",
        "concat",
        "conv_asymmetric_pads",
        "conv_batchnorm",
        "conv_depthwise",
        "conv_dilations",
        "conv_groups",
        "conv_no_bias",
        "gemm_transb_bias",
        "global_average_pool",
        "matmul_constant",
        "max_pool",
    ];
    NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let path = workspace_root().join(format!("tests/filetests/onnx/{name}.onnx"));
            let mut module = qcc_compiler::onnx::import_file(&path)
                .unwrap_or_else(|e| panic!("{name}: {e}"))
                .module;
            let main = module.function("main").expect("@main");
            let mut shape = main.value_type(Value::of(main.args[0])).shape.clone();
            shape[0] = 4;
            let n: usize = shape.iter().product();
            let calib = Tensor::from_f32(shape, random_f32(n, i as u64 + 1));
            let mut ctx = PassContext {
                calib: Some(calib),
                ..PassContext::default()
            };
            PassManager::new(parse_pipeline("quantize").expect("pipeline"))
                .run(&mut module, &mut ctx, &mut |_, _| {})
                .unwrap_or_else(|e| panic!("{name}: quantize failed in {}", e.location()));
            (name.to_string(), module)
        })
        .collect()
}
