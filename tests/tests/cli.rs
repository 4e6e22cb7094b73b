//! The command line as a user meets it: files written whole, exit codes, help and listings.

use qcc_dialects::parse_file;
use qcc_tests::{qcc, workspace_root};

fn scratch(name: &str) -> std::path::PathBuf {
    qcc_tests::scratch_dir(&format!("cli-{name}"))
}

fn fixture(rel: &str) -> String {
    workspace_root().join(rel).display().to_string()
}

#[test]
fn output_file_gets_new_weights_beside_it() {
    let dir = scratch("weights");
    let out = dir.join("folded.ir");
    let run = qcc(&[
        "--passes=fold-batchnorm",
        &fixture("tests/filetests/fold-batchnorm/named_weights.ir"),
        "-o",
        &out.display().to_string(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    let text = std::fs::read_to_string(&out).expect("output written");
    assert!(text.contains("weights = \"folded.safetensors\""), "{text}");
    assert!(text.contains("name = \"stem.weight.folded\""), "{text}");
    assert!(!text.contains("batch_norm"));
    // The written pair parses back on its own and holds only the tensors the module names.
    let module = parse_file(&out).unwrap_or_else(|(_, d)| panic!("{}", d[0].message));
    let names: Vec<&String> = module.weights.tensors.keys().collect();
    assert_eq!(names, ["stem.bias.folded", "stem.weight.folded"]);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        2,
        "only the .ir and the .safetensors: {leftovers:?}"
    );
}

#[test]
fn unchanged_weights_are_referenced_from_the_output_directory() {
    let dir = scratch("reference");
    let out = dir.join("same.ir");
    let run = qcc(&[
        "--passes=canonicalize",
        &fixture("tests/filetests/parser/roundtrip_named_weights.ir"),
        "-o",
        &out.display().to_string(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        !dir.join("same.safetensors").exists(),
        "no weights file when nothing changed"
    );
    let module = parse_file(&out).unwrap_or_else(|(_, d)| panic!("{}", d[0].message));
    assert!(module.weights.tensors.contains_key("conv.weight"));
}

#[test]
fn a_failing_run_writes_nothing() {
    let dir = scratch("fail");
    let out = dir.join("never.ir");
    let run = qcc(&[
        "--passes=fold-batchnorm",
        &fixture("tests/filetests/parser/error_unknown_op.ir"),
        "-o",
        &out.display().to_string(),
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("unknown op 'nn.rleu'"),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_dir(&dir).expect("dir").count(),
        0,
        "no file, not even a temporary one"
    );
}

#[test]
fn unwritable_output_is_an_error_not_a_panic() {
    let run = qcc(&[
        &fixture("tests/filetests/pipeline/empty_pipeline.ir"),
        "-o",
        "/nonexistent-dir/out.ir",
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("-o '/nonexistent-dir/out.ir': the folder '/nonexistent-dir' does not exist"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_input_file_is_reported() {
    let run = qcc(&["no/such/model.ir"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("cannot read 'no/such/model.ir'"),
        "{}",
        run.stderr
    );
    let run = qcc::<&str>(&[]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no input file given"), "{}", run.stderr);
}

#[test]
fn bad_flags_exit_with_code_1() {
    let run = qcc(&["--passes"]);
    assert_eq!(run.code, 1);
    let run = qcc(&["--frobnicate", "x.ir"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--frobnicate"), "{}", run.stderr);
}

#[test]
fn help_shows_examples_and_exits_0() {
    let run = qcc(&["--help"]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("Examples:"), "{}", run.stdout);
    assert!(run.stdout.contains("--passes <PIPELINE>"), "{}", run.stdout);
}

#[test]
fn list_passes_shows_every_pass() {
    let run = qcc(&["--list-passes"]);
    assert_eq!(run.code, 0);
    for p in qcc_passes::passes() {
        assert!(
            run.stdout.contains(p.name),
            "{} missing:\n{}",
            p.name,
            run.stdout
        );
    }
}

#[test]
fn list_ops_shows_the_registry() {
    let run = qcc(&["--list-ops"]);
    assert_eq!(run.code, 0);
    for op in [
        "nn.conv2d",
        "nn.batch_norm",
        "quant.conv2d",
        "quant.dequantize",
    ] {
        assert!(run.stdout.contains(op), "{op} missing");
    }
}

#[test]
fn timing_prints_a_row_per_pass() {
    let run = qcc(&[
        "--passes=fold-batchnorm,canonicalize",
        "--timing",
        &fixture("tests/filetests/fold-batchnorm/depthwise.ir"),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for row in ["fold-batchnorm", "canonicalize", "total"] {
        assert!(
            run.stderr.lines().any(|l| l.starts_with(row)),
            "no {row} row:\n{}",
            run.stderr
        );
    }
}

#[test]
fn no_verify_skips_the_verifier() {
    let run = qcc(&[
        "--no-verify",
        "--passes=canonicalize",
        &fixture("tests/filetests/canonicalize/dead_code.ir"),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

#[test]
fn one_shot_and_iterative_correction_agree_on_a_single_layer() {
    let file = fixture("tests/filetests/bias/estimate_depthwise.ir");
    let calib = fixture("tests/filetests/bias/ones.npy");
    let one_shot = qcc(&[
        "--passes=quantize{granularity=per-tensor},estimate-bias-shift{at=pre-activation},apply-bias-correction",
        "--calib",
        &calib,
        &file,
    ]);
    let iterative = qcc(&[
        "--passes=quantize{granularity=per-tensor},bias-correct{iterations=1,at=pre-activation}",
        "--calib",
        &calib,
        &file,
    ]);
    assert_eq!(one_shot.code, 0, "{}", one_shot.stderr);
    assert_eq!(iterative.code, 0, "{}", iterative.stderr);
    assert_eq!(one_shot.stdout, iterative.stdout);
    assert!(
        one_shot.stdout.contains("dense<[0, -61]>"),
        "{}",
        one_shot.stdout
    );
}

#[test]
fn empty_calibration_folder_is_an_error_before_any_work() {
    let dir = scratch("empty-calib");
    let run = qcc(&[
        "--passes=quantize",
        "--calib",
        &dir.display().to_string(),
        &fixture("tests/filetests/quantize/conv_relu6.ir"),
    ]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("holds no JPEG or PNG images"),
        "{}",
        run.stderr
    );
}

#[test]
fn report_needs_quantized_layers_and_writes_nothing_otherwise() {
    let dir = scratch("report-float");
    let svg = dir.join("shift.svg");
    let model = fixture("tests/filetests/bias/estimate_depthwise.ir");
    let run = qcc(&[
        "report",
        &model,
        "--reference",
        &model,
        "--data",
        &fixture("tests/filetests/bias/ones.npy"),
        "-o",
        &svg.display().to_string(),
        "--quiet",
    ]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("has no quantized layer named like a value of the reference"),
        "{}",
        run.stderr
    );
    assert!(!svg.exists());
}

/// A quantized layer that absorbed a batch norm is compared with the batch norm's output, not
/// with the float convolution of the same name (the reference is folded before matching).
#[test]
fn per_layer_figures_match_folded_layers() {
    let dir = scratch("per-layer-bn");
    let model = fixture("tests/filetests/quantize/batchnorm_dependency.ir");
    let calib = fixture("tests/filetests/quantize/calib.npy");
    let out = dir.join("q.ir").display().to_string();
    let run = qcc(&["--passes=quantize", "--calib", &calib, &model, "-o", &out]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = qcc(&[
        "eval",
        &out,
        "--reference",
        &model,
        "--data",
        &calib,
        "--per-layer",
        "--quiet",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let row = run
        .stdout
        .lines()
        .find(|l| l.contains("quant.conv2d"))
        .unwrap_or_else(|| panic!("no layer row in\n{}", run.stdout));
    let sqnr: f64 = row
        .split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .expect("a number");
    // Measured 43.33 dB, equal to the output SQNR; against the unfolded convolution, 1.87 dB.
    assert!(sqnr > 30.0, "{}", run.stdout);
}

#[test]
fn compare_scores_each_pipeline_and_rejects_a_bad_one_first() {
    let model = fixture("tests/filetests/quantize/conv_relu6.ir");
    let calib = fixture("tests/filetests/quantize/calib.npy");
    let run = qcc(&[
        "compare",
        &model,
        "--calib",
        &calib,
        "--passes",
        "quantize",
        "--passes",
        "quantize,bias-correct",
        "--quiet",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let rows: Vec<&str> = run.stdout.lines().collect();
    assert!(rows[2].starts_with("float"), "{}", run.stdout);
    assert!(rows[3].starts_with("quantize "), "{}", run.stdout);
    assert!(
        rows[4].starts_with("quantize,bias-correct "),
        "{}",
        run.stdout
    );
    let bad = qcc(&[
        "compare", &model, "--calib", &calib, "--passes", "quantize", "--passes", "quantise",
    ]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.contains("unknown pass 'quantise'"),
        "{}",
        bad.stderr
    );
    assert!(bad.stdout.is_empty(), "{}", bad.stdout);
}

#[test]
fn an_empty_pipeline_is_an_error_in_every_command() {
    let model = fixture("tests/filetests/quantize/conv_relu6.ir");
    let calib = fixture("tests/filetests/quantize/calib.npy");
    for args in [
        vec!["--passes=", model.as_str()],
        vec!["run", &model, "--input", &calib, "--passes="],
        vec!["compare", &model, "--calib", &calib, "--passes", " "],
    ] {
        let run = qcc(&args);
        assert_eq!(run.code, 1, "{args:?}");
        assert!(
            run.stderr.contains("the pipeline is empty"),
            "{args:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn a_binary_file_given_as_ir_names_the_bad_byte() {
    let dir = scratch("binary-ir");
    let path = dir.join("model.ir");
    std::fs::write(&path, b"module {\n  // caf\xe9 \xff\xfe\n}\n").expect("write");
    let run = qcc(&[path.display().to_string()]);
    assert_eq!(run.code, 1);
    let first = run.stderr.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!(
            "{}:2:9: error: the file is not UTF-8 text: byte 0xe9 at offset 17 is not part of a character",
            path.display()
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("needs the .onnx extension"),
        "{}",
        run.stderr
    );
}

/// Every option sits on a line of its own, its description wrapped below it.
#[test]
fn list_passes_keeps_options_apart_from_their_descriptions() {
    let run = qcc(&["--list-passes"]);
    assert_eq!(run.code, 0);
    for line in run.stdout.lines() {
        assert!(line.chars().count() <= 100, "too long: {line:?}");
    }
    let quantize = run
        .stdout
        .split("\n\n")
        .find(|block| block.trim_start().starts_with("quantize"))
        .unwrap_or_else(|| panic!("no quantize block:\n{}", run.stdout));
    assert!(
        quantize
            .lines()
            .any(|l| l.trim() == "calibration=mse|minmax|percentile|batchnorm"),
        "{quantize}"
    );
    assert!(
        quantize.lines().any(|l| l.trim() == "samples=integer >= 1"),
        "{quantize}"
    );
}

#[test]
fn help_shows_how_to_quantize_and_correct_bias() {
    let run = qcc(&["--help"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .contains("qcc --passes=quantize,bias-correct --calib photos/ model.onnx"),
        "{}",
        run.stdout
    );
    for command in ["compare", "import", "run", "eval", "report"] {
        let run = qcc(&[command, "--help"]);
        assert_eq!(run.code, 0, "{command}");
        assert!(
            run.stdout.contains(&format!("qcc {command} ")) && run.stdout.contains("Example"),
            "{command} --help has no example:\n{}",
            run.stdout
        );
    }
}

/// `--threads N` runs the parallel work on N threads and gives the same bytes; 0 is refused.
#[test]
fn threads_choose_the_pool_and_change_no_result() {
    let model = fixture("tests/filetests/quantize/conv_relu6.ir");
    let calib = fixture("tests/filetests/quantize/calib.npy");
    let pipeline = "--passes=quantize{granularity=per-tensor},bias-correct";
    let default = qcc(&[pipeline, "--calib", &calib, &model]);
    let one = qcc(&["--threads", "1", pipeline, "--calib", &calib, &model]);
    assert_eq!(default.code, 0, "{}", default.stderr);
    assert_eq!(one.code, 0, "{}", one.stderr);
    assert_eq!(default.stdout, one.stdout);
    let run = qcc(&[
        "run",
        &model,
        "--input",
        &calib,
        "--threads",
        "3",
        "--top",
        "1",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // `--top 0` prints no classes (and no empty entry per input).
    let silent = qcc(&["run", &model, "--input", &calib, "--top", "0"]);
    assert_eq!(silent.code, 0, "{}", silent.stderr);
    assert_eq!(silent.stdout, "");
    let zero = qcc(&["--threads", "0", &model]);
    assert_eq!(zero.code, 1);
    assert!(zero.stderr.contains("--threads"), "{}", zero.stderr);
}

/// A run whose values would need more memory than the machine has (a pad to 32768 x 32768
/// floats, 4 GiB per image, at qcc's default batch of 16) stops before allocating, on either
/// engine, with the size its activation arena needs and the batch hint; exit code 1, no output.
#[test]
fn a_run_too_large_for_memory_says_how_large_and_writes_nothing() {
    if qcc_runtime::plan::available_memory().is_none_or(|m| m >= 64 << 30) {
        return; // no MemAvailable to compare with, or enough memory for 64 GiB
    }
    let dir = scratch("too-large");
    let model = dir.join("pad.ir");
    std::fs::write(
        &model,
        "func.func @main(%x: tensor<1x1x1x1xf32>) -> tensor<1x1x32768x32768xf32> {\n  \
         %p = nn.pad(%x) {pads = [0, 0, 0, 0, 0, 0, 32767, 32767], value = 0.0} : \
         (tensor<1x1x1x1xf32>) -> tensor<1x1x32768x32768xf32>\n  \
         return %p : tensor<1x1x32768x32768xf32>\n}\n",
    )
    .expect("module");
    let input = dir.join("x.npy");
    let x = qcc_dialects::Tensor::from_f32(vec![16, 1, 1, 1], vec![1.0; 16]);
    std::fs::write(&input, qcc_runtime::io::npy_bytes(&x).expect("npy")).expect("input");
    let out = dir.join("y.npy");
    for engine in ["cranelift", "reference"] {
        let run = qcc(&[
            "run",
            &model.display().to_string(),
            "--input",
            &input.display().to_string(),
            "--engine",
            engine,
            "-o",
            &out.display().to_string(),
        ]);
        assert_eq!(run.code, 1, "{engine}: {}", run.stderr);
        assert!(
            run.stderr.contains(
                "error: @main: its values need 64.0 GiB at batch 16 (the activation arena planned \
                 by value liveness), more than the"
            ),
            "{engine}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("a smaller --batch-size needs less"));
        assert!(!out.exists(), "{engine}: no output is written");
    }
}
