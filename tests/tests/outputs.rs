//! What qcc promises about the files it writes: a module and its weights appear together or not
//! at all, a failed write leaves the folder as it was, every output path is checked before any
//! work, and the same inputs give the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use qcc_compiler::output::write_module;
use qcc_dialects::{Tensor, parse_file};
use qcc_runtime::io::npy_bytes;
use qcc_tests::{qcc, random_f32, workspace_root};

fn scratch(name: &str) -> PathBuf {
    qcc_tests::scratch_dir(&format!("outputs-{name}"))
}

fn fixture(rel: &str) -> String {
    workspace_root().join(rel).display().to_string()
}

/// Every entry of `dir` (recursively) with its contents; folders map to `None`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.insert(path.clone(), None);
            out.extend(snapshot(&path));
        } else {
            out.insert(path.clone(), Some(std::fs::read(&path).expect("file")));
        }
    }
    out
}

/// A module whose weights a pass changed, so writing it writes a weights file too.
fn module_with_new_weights() -> qcc_dialects::Module {
    let mut module = parse_file(Path::new(&fixture(
        "tests/filetests/fold-batchnorm/named_weights.ir",
    )))
    .unwrap_or_else(|(_, d)| panic!("{}", d[0].message));
    let steps = qcc_passes::parse_pipeline("fold-batchnorm").expect("pipeline");
    qcc_passes::PassManager::new(steps)
        .run(
            &mut module,
            &mut qcc_passes::PassContext::default(),
            &mut |_, _| {},
        )
        .expect("fold-batchnorm runs");
    assert!(module.weights.modified);
    module
}

/// The module cannot be renamed into place (a folder has its name) after its weights were:
/// the weights file that was there before comes back, and no temporary file is left.
#[test]
fn a_failed_module_write_restores_the_weights_it_replaced() {
    let dir = scratch("restore");
    std::fs::create_dir(dir.join("x.ir")).expect("folder named like the module");
    std::fs::write(dir.join("x.safetensors"), b"the user's old weights").expect("old weights");
    let before = snapshot(&dir);
    let mut module = module_with_new_weights();
    let failed = write_module(&mut module, &dir.join("x.ir"));
    let why = failed.expect_err("a folder cannot be replaced by the module");
    assert!(why.contains("x.ir"), "{why}");
    assert_eq!(snapshot(&dir), before, "the folder changed");
}

#[test]
fn a_failed_module_write_removes_the_weights_it_added() {
    let dir = scratch("remove");
    std::fs::create_dir(dir.join("x.ir")).expect("folder named like the module");
    let before = snapshot(&dir);
    let mut module = module_with_new_weights();
    assert!(write_module(&mut module, &dir.join("x.ir")).is_err());
    assert_eq!(snapshot(&dir), before, "the folder changed");
}

#[test]
fn a_module_and_its_weights_are_written_together() {
    let dir = scratch("together");
    std::fs::write(dir.join("x.safetensors"), b"old").expect("old weights");
    let mut module = module_with_new_weights();
    let written = write_module(&mut module, &dir.join("x.ir")).expect("written");
    assert_eq!(written, [dir.join("x.safetensors"), dir.join("x.ir")]);
    let back = parse_file(&dir.join("x.ir")).unwrap_or_else(|(_, d)| panic!("{}", d[0].message));
    assert!(back.weights.tensors.contains_key("stem.weight.folded"));
    let names: Vec<_> = snapshot(&dir).into_keys().collect();
    assert_eq!(
        names,
        [dir.join("x.ir"), dir.join("x.safetensors")],
        "nothing else"
    );
}

/// `-o` is checked before the model is even loaded: a pipeline that would fail later (quantize
/// without --calib) is never reached, and the error names the path the user typed.
#[test]
fn output_paths_are_checked_before_any_work() {
    let dir = scratch("early");
    std::fs::create_dir(dir.join("x.ir")).expect("folder");
    let model = fixture("tests/filetests/quantize/conv_relu6.ir");
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![
                "--passes=quantize".into(),
                model.clone(),
                "-o".into(),
                dir.join("x.ir").display().to_string(),
            ],
            format!("-o '{}' is a folder", dir.join("x.ir").display()),
        ),
        (
            vec![
                "--passes=quantize".into(),
                model.clone(),
                "-o".into(),
                dir.join("late/y.ir").display().to_string(),
            ],
            format!(
                "-o '{}': the folder '{}' does not exist",
                dir.join("late/y.ir").display(),
                dir.join("late").display()
            ),
        ),
        (
            vec![
                "import".into(),
                fixture("tests/filetests/onnx/conv_batchnorm.onnx"),
                "-o".into(),
                dir.join("late/m.ir").display().to_string(),
            ],
            format!("-o '{}': the folder", dir.join("late/m.ir").display()),
        ),
        (
            vec![
                "run".into(),
                model.clone(),
                "--input".into(),
                "no/such/data.npy".into(),
                "-o".into(),
                dir.join("late/out.npy").display().to_string(),
            ],
            format!("-o '{}': the folder", dir.join("late/out.npy").display()),
        ),
        (
            vec![
                "report".into(),
                model.clone(),
                "--reference".into(),
                model.clone(),
                "--data".into(),
                "no/such/data.npy".into(),
                "-o".into(),
                dir.join("x.ir").display().to_string(),
            ],
            format!("-o '{}' is a folder", dir.join("x.ir").display()),
        ),
    ];
    let before = snapshot(&dir);
    for (args, want) in cases {
        let run = qcc(&args);
        assert_eq!(run.code, 1, "{args:?}");
        assert!(run.stderr.contains(&want), "{args:?}:\n{}", run.stderr);
        assert!(
            !run.stderr.contains("calib") && !run.stderr.contains("no/such"),
            "the work started before the output check: {}",
            run.stderr
        );
    }
    assert_eq!(snapshot(&dir), before, "a failed command wrote something");
}

/// The weights go beside the module as OUT.safetensors: a folder there is caught up front too.
#[test]
fn a_folder_where_the_weights_go_is_caught_up_front() {
    let dir = scratch("weights-folder");
    std::fs::create_dir(dir.join("m.safetensors")).expect("folder");
    let run = qcc(&[
        "--passes=fold-batchnorm",
        &fixture("tests/filetests/fold-batchnorm/named_weights.ir"),
        "-o",
        &dir.join("m.ir").display().to_string(),
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("m.safetensors', which is a folder"),
        "{}",
        run.stderr
    );
    assert!(!dir.join("m.ir").exists());
}

/// Quantization, calibration and bias correction run in parallel, yet the same inputs give the
/// same bytes: the module, its weights and `run`'s outputs.
#[test]
fn the_same_inputs_give_the_same_bytes() {
    let model = fixture("examples/stem/model.ir");
    let data = scratch("determinism-data");
    let calib = data.join("calib.npy");
    let inputs = Tensor::from_f32(vec![6, 3, 32, 32], random_f32(6 * 3 * 32 * 32, 7));
    std::fs::write(&calib, npy_bytes(&inputs).expect("npy")).expect("calibration data");
    let calib = calib.display().to_string();
    let mut results = Vec::new();
    for attempt in 0..2 {
        let dir = scratch(&format!("determinism{attempt}"));
        let out = dir.join("q.ir").display().to_string();
        let run = qcc(&[
            "--passes=quantize{granularity=per-tensor},bias-correct",
            "--calib",
            &calib,
            &model,
            "-o",
            &out,
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let npy = dir.join("out.npy").display().to_string();
        let run = qcc(&["run", &out, "--input", &calib, "-o", &npy, "--quiet"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let files: Vec<(String, Vec<u8>)> = snapshot(&dir)
            .into_iter()
            .map(|(p, bytes)| {
                let name = p.file_name().expect("name").to_string_lossy().into_owned();
                (name, bytes.expect("a file"))
            })
            .collect();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["out.npy", "q.ir", "q.safetensors"]);
        results.push(files);
    }
    assert!(results[0] == results[1], "two runs wrote different bytes");
}
