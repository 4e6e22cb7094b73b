//! ONNX Runtime, a real client, runs what `qcc export` writes: the bundled example quantized and
//! bias-corrected by qcc, exported as QDQ ONNX, must pass the ONNX checker, fuse into ONNX
//! Runtime's int8 kernels and agree with `qcc run`.
//!
//! ONNX Runtime comes from a Python virtual environment: `QCC_ORT_PYTHON` names its interpreter,
//! else `target/ort-venv/bin/python`, which `.ci/run` creates. Without one the test says so and
//! passes, except under CI (`CI` set), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use qcc_runtime::io::read_npy;
use qcc_tests::{bundled_example as example, qcc, scratch_dir, workspace_root};

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("QCC_ORT_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = workspace_root().join("target/ort-venv/bin/python");
    venv.exists().then_some(venv)
}

fn npy(path: &Path) -> Vec<f32> {
    read_npy(path)
        .expect("outputs written")
        .as_f32()
        .expect("f32")
        .to_vec()
}

fn top1(logits: &[f32]) -> Vec<usize> {
    logits
        .chunks(1000)
        .map(|row| {
            (0..row.len())
                .max_by(|a, b| row[*a].total_cmp(&row[*b]))
                .expect("1000 classes")
        })
        .collect()
}

fn agreement(a: &[f32], b: &[f32]) -> usize {
    top1(a)
        .iter()
        .zip(top1(b))
        .filter(|(x, y)| **x == *y)
        .count()
}

/// Signal to noise of `q` against the float logits `f`, in dB.
fn sqnr(f: &[f32], q: &[f32]) -> f64 {
    let signal: f64 = f.iter().map(|v| (*v as f64).powi(2)).sum();
    let noise: f64 = f
        .iter()
        .zip(q)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    10.0 * (signal / noise).log10()
}

#[test]
fn onnx_runtime_runs_the_exported_bundled_example_like_qcc() {
    let Some(python) = python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the ONNX Runtime interop test: .ci/run creates target/ort-venv"
        );
        eprintln!(
            "skipped: no ONNX Runtime (set QCC_ORT_PYTHON or create target/ort-venv as .ci/run does)"
        );
        return;
    };
    let dir = scratch_dir("ort-interop");
    let float = npy(Path::new(&example("golden_logits.npy")));
    // The equalized model's layers have per-channel bounds (Min after the clip), which ONNX
    // Runtime runs as float convolutions between DequantizeLinear and QuantizeLinear.
    for (tag, pipeline, min_agree, fused) in [
        (
            "per-channel",
            "quantize,bias-correct",
            8,
            "\"QLinearConv\": 52",
        ),
        (
            "per-tensor",
            "quantize{granularity=per-tensor},bias-correct",
            6,
            "\"QLinearConv\": 52",
        ),
        (
            "per-tensor-equalized",
            "equalize{objective=noise},quantize{granularity=per-tensor},bias-correct",
            8,
            "\"Min\": ",
        ),
    ] {
        let onnx = dir.join(format!("{tag}.onnx")).display().to_string();
        let r = qcc(&[
            &format!("--passes={pipeline}"),
            "--calib",
            &example("photos"),
            &example("model.onnx"),
            "-o",
            &onnx,
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let ours = dir.join(format!("{tag}.qcc.npy"));
        let r = qcc(&[
            "run",
            &onnx,
            "--input",
            &example("photos.npy"),
            "-o",
            &ours.display().to_string(),
            "--quiet",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let prefix = dir.join(tag);
        let run = Command::new(&python)
            .arg(workspace_root().join("tests/ort/run_qdq.py"))
            .arg(&onnx)
            .arg(example("photos.npy"))
            .arg(&prefix)
            .output()
            .expect("python runs");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "ONNX Runtime failed: {stderr}");
        let ops = String::from_utf8_lossy(&run.stdout);
        assert!(
            ops.contains(fused) && ops.contains("\"QLinearAdd\": 10"),
            "ONNX Runtime did not fuse every unit into its int8 kernels: {ops}"
        );
        let ours = npy(&ours);
        let kernels = npy(&prefix.with_extension("kernels.npy"));
        let qdq_float = npy(&prefix.with_extension("float.npy"));
        let (a_kernels, a_float) = (agreement(&ours, &kernels), agreement(&ours, &qdq_float));
        let (s_ours, s_kernels, s_float) = (
            sqnr(&float, &ours),
            sqnr(&float, &kernels),
            sqnr(&float, &qdq_float),
        );
        println!(
            "{tag}: top-1 agreement with qcc run: ONNX Runtime int8 kernels {a_kernels}/8, QDQ in float {a_float}/8; SQNR against float: qcc {s_ours:.2} dB, kernels {s_kernels:.2} dB, QDQ in float {s_float:.2} dB"
        );
        assert!(
            a_kernels >= min_agree && a_float >= min_agree,
            "{tag}: ONNX Runtime agrees with qcc on {a_kernels} (kernels) and {a_float} (float) of 8 photos"
        );
        // ONNX Runtime rounds some steps differently (ties to even when quantizing, its own add
        // and pooling arithmetic); the model it runs must still be the one qcc made.
        for (what, s) in [("kernels", s_kernels), ("QDQ in float", s_float)] {
            assert!(
                (s - s_ours).abs() < 1.5,
                "{tag}: ONNX Runtime's {what} reach {s:.2} dB against float, qcc {s_ours:.2} dB"
            );
        }
    }
}

/// Every float op exports as ONNX Runtime reads it: each ONNX fixture of `tests/filetests/onnx/`,
/// imported and exported again, passes the checker and gives ONNX Runtime's own output on the
/// original model (the fixture's `.output.npy`).
#[test]
fn onnx_runtime_runs_every_exported_float_fixture_like_the_original() {
    let Some(python) = python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the ONNX Runtime interop test: .ci/run creates target/ort-venv"
        );
        eprintln!("skipped: no ONNX Runtime (see the first test)");
        return;
    };
    let dir = scratch_dir("ort-float-fixtures");
    let fixtures = workspace_root().join("tests/filetests/onnx");
    let mut names: Vec<String> = std::fs::read_dir(&fixtures)
        .expect("fixtures")
        .filter_map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".onnx")?.to_string();
            (!stem.starts_with("error_")).then_some(stem)
        })
        .collect();
    names.sort();
    assert!(names.len() > 40, "{} fixtures", names.len());
    for stem in &names {
        let onnx = dir.join(format!("{stem}.onnx"));
        let r = qcc(&[
            "export",
            &fixtures.join(format!("{stem}.onnx")).display().to_string(),
            "-o",
            &onnx.display().to_string(),
        ]);
        assert_eq!(r.code, 0, "{stem}: {}", r.stderr);
        let prefix = dir.join(stem);
        let run = Command::new(&python)
            .arg(workspace_root().join("tests/ort/run_qdq.py"))
            .arg(&onnx)
            .arg(fixtures.join(format!("{stem}.input.npy")))
            .arg(&prefix)
            .output()
            .expect("python runs");
        assert!(
            run.status.success(),
            "{stem}: ONNX Runtime failed: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let want = npy(&fixtures.join(format!("{stem}.output.npy")));
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for tag in ["kernels", "float"] {
            let got = npy(&prefix.with_extension(format!("{tag}.npy")));
            assert_eq!(got.len(), want.len(), "{stem}: output size");
            let diff = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff <= 1e-5 * scale,
                "{stem}: the exported model differs from the original by {diff} in ONNX Runtime"
            );
        }
    }
}
