//! The ONNX importer on the models of `tests/filetests/onnx/` (made by bench/make_onnx_fixtures.py):
//! each imported module is snapshotted and, run on the model's input, must reproduce ONNX
//! Runtime's output; each `error_*` model must fail with a clear message and write nothing.

use std::path::Path;

use proptest::prelude::*;
use qcc_dialects::{SourceFile, parse_module};
use qcc_runtime::Interpreter;
use qcc_runtime::io::read_npy;
use qcc_tests::{qcc, relative_to_root, workspace_root};

fn check(path: &Path) -> String {
    let rel = relative_to_root(path);
    let stem = path
        .file_stem()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    if stem.starts_with("error_") {
        let dir = std::env::temp_dir().join(format!("qcc-onnx-{stem}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let out = qcc(&[
            "import",
            &rel,
            "-o",
            &dir.join("out.ir").display().to_string(),
        ]);
        assert_eq!(
            out.code, 1,
            "{rel}: the import should fail:\n{}",
            out.stderr
        );
        assert_eq!(
            std::fs::read_dir(&dir).expect("dir").count(),
            0,
            "{rel}: a failed import wrote files"
        );
        return out.stderr;
    }
    let out = qcc(&[&rel]);
    assert_eq!(out.code, 0, "{rel}: import failed:\n{}", out.stderr);
    let module = parse_module(&SourceFile::new("imported.ir", out.stdout.clone()), None)
        .unwrap_or_else(|d| panic!("{rel}: the printed module does not parse: {}", d[0].message));
    let input = path.with_file_name(format!("{stem}.input.npy"));
    let expected =
        read_npy(&path.with_file_name(format!("{stem}.output.npy"))).expect("expected output");
    let x = read_npy(&input).expect("input");
    let got = Interpreter::new(&module, "main")
        .expect("prepares")
        .run(&[x])
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert_eq!(got[0].shape, expected.shape, "{rel}: output shape");
    let (g, e) = (
        got[0].as_f32().expect("f32"),
        expected.as_f32().expect("f32"),
    );
    let scale = e.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = g
        .iter()
        .zip(e)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-5 * scale,
        "{rel}: differs from ONNX Runtime by {diff}"
    );
    out.stdout
}

#[test]
fn onnx_models_import_and_match_onnx_runtime() {
    std::env::set_current_dir(workspace_root()).expect("workspace root exists");
    insta::glob!("../filetests", "onnx/*.onnx", |path| {
        insta::assert_snapshot!(check(path));
    });
}

fn corpus() -> Vec<Vec<u8>> {
    let dir = workspace_root().join("tests/filetests/onnx");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("readable"))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Truncated and bit-flipped ONNX bytes give an error or a module, never a panic.
    #[test]
    fn damaged_onnx_never_panics(file in any::<usize>(), cut in any::<usize>(), flips in proptest::collection::vec((any::<usize>(), 0u8..8), 0..6)) {
        let files = corpus();
        let mut bytes = files[file % files.len()].clone();
        for (at, bit) in flips {
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] ^= 1 << bit;
            }
        }
        if cut % 3 == 0 && !bytes.is_empty() {
            bytes.truncate(cut % bytes.len());
        }
        if let Ok(imported) = qcc_compiler::onnx::import_bytes(&bytes, "damaged.onnx") {
            prop_assert!(qcc_dialects::verify_module(&imported.module).is_ok());
        }
    }
}
