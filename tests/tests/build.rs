//! `qcc build`'s generated program: the bundled MobileNetV2, quantized per tensor and per
//! channel and bias-corrected, lowered to entry points over one scratch area and run in this
//! process; its outputs are the reference interpreter's, bit for bit.

use std::path::Path;
use std::sync::Arc;

use qcc_dialects::{Module, Tensor, TensorData};
use qcc_passes::{PassContext, PassManager, parse_pipeline};
use qcc_runtime::Interpreter;

/// The bundled photos as `module`'s input (its recorded preprocessing).
fn photos(module: &Module) -> Tensor {
    let input = qcc_compiler::model::input_type(module).expect("an input type");
    let pre =
        qcc_compiler::model::preprocessing(module, &Default::default()).expect("preprocessing");
    qcc_compiler::data::load(
        Path::new(&qcc_tests::bundled_example("photos.npy")),
        &input,
        &pre,
        None,
    )
    .expect("the bundled photos")
    .tensor
}

/// The bundled model through `pipeline`, calibrated on the bundled photos.
fn quantized(pipeline: &str) -> Module {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mobilenet_v2/model.onnx");
    let mut module = qcc_compiler::onnx::import_file(&path)
        .expect("the bundled model imports")
        .module;
    let mut ctx = PassContext {
        engine: Arc::new(qcc_codegen::Native),
        calib: Some(photos(&module)),
        ..PassContext::default()
    };
    PassManager::new(parse_pipeline(pipeline).expect("pipeline"))
        .run(&mut module, &mut ctx, &mut |_, _| {})
        .expect("the pipeline runs");
    module
}

/// Image `i` of `batch` as a `[1, ...]` tensor.
fn image(batch: &Tensor, i: usize) -> Tensor {
    let per = batch.numel() / batch.shape[0];
    let mut shape = batch.shape.clone();
    shape[0] = 1;
    let values = batch.as_f32().expect("f32")[i * per..(i + 1) * per].to_vec();
    Tensor::from_f32(shape, values)
}

fn check(pipeline: &str) {
    let module = quantized(pipeline);
    let program = qcc_codegen::object::load(&module, "main").expect("the module lowers");
    let reference = Interpreter::new(&module, "main").expect("the interpreter prepares");
    let photos = photos(&module);
    for i in 0..photos.shape[0] {
        let x = image(&photos, i);
        let want = reference
            .run(std::slice::from_ref(&x))
            .expect("reference run");
        let got = program
            .run(x.as_f32().expect("f32"))
            .expect("generated run");
        let want = want[0].as_f32().expect("f32 logits");
        assert_eq!(got.len(), want.len(), "{pipeline}: photo {i}");
        let differ = got
            .iter()
            .zip(want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "{pipeline}: photo {i}: {differ} logits differ");
        // On stored values: the input as the reference quantizes it, the levels before the
        // dequantization, which give the same logits.
        let main = module.function("main").expect("main");
        let arg = qcc_dialects::Value::of(main.args[0]);
        let quantize = main.users(arg)[0].0;
        let q = qcc_runtime::interp::eval_op(main.op(quantize), &[&x], &[main.value_type(arg)])
            .expect("quantize");
        let TensorData::U8(stored) = &q.data else {
            panic!("the bundled model's input is stored as u8")
        };
        let levels = program
            .run_u8(stored)
            .expect("generated run on stored values");
        let out = &program.lowered.output;
        for (j, (l, logit)) in levels.iter().zip(&got).enumerate() {
            let v = qcc_runtime::quant::dequantize_value(
                i64::from(*l),
                f64::from(out.scale),
                out.zero_point,
            );
            assert_eq!(
                v.to_bits(),
                logit.to_bits(),
                "{pipeline}: photo {i}, level {j}"
            );
        }
    }
}

#[test]
fn per_channel_bias_corrected_matches_the_reference() {
    check("fold-batchnorm,quantize{granularity=per-channel},bias-correct");
}

#[test]
fn per_tensor_bias_corrected_matches_the_reference() {
    check("fold-batchnorm,quantize{granularity=per-tensor},bias-correct");
}

/// The quantized ONNX fixtures (every kind of convolution, dense layers, adds, pooling,
/// concat) lowered whole: each one either runs bit for bit as the reference on random inputs,
/// or is refused with an error that names the op the generator has no code for.
#[test]
fn fixtures_lower_exactly_or_name_the_op() {
    let mut lowered = 0;
    for (name, module) in qcc_tests::quantized_onnx_fixtures() {
        let main = module.function("main").expect("@main");
        let ty = main.value_type(qcc_dialects::Value::of(main.args[0]));
        match qcc_codegen::object::load(&module, "main") {
            Ok(program) => {
                let reference = Interpreter::new(&module, "main").expect("prepares");
                for seed in 0..3u64 {
                    let x = Tensor::from_f32(
                        ty.shape.clone(),
                        qcc_tests::random_f32(ty.numel(), 100 + seed),
                    );
                    let want = reference.run(std::slice::from_ref(&x)).expect("reference");
                    let got = program
                        .run(x.as_f32().expect("f32"))
                        .expect("generated run");
                    let want = want[0].as_f32().expect("f32");
                    assert!(
                        got.iter()
                            .zip(want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{name}, seed {seed}: the generated program differs from the reference"
                    );
                }
                lowered += 1;
            }
            Err(e) => {
                assert!(e.contains("qcc build"), "{name}: {e}");
                eprintln!("{name}: refused: {e}");
            }
        }
    }
    // Convolutions of every kind, dense layers and global pooling lower today.
    assert!(lowered >= 7, "only {lowered} fixtures lowered");
}

/// A C compiler for the harness: `$CC`, else `cc`.
fn c_compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_string())
}

fn command(program: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// The symbols an object defines for others, and those it needs.
fn symbols(object: &Path) -> (Vec<String>, Vec<String>) {
    let list = |flags: &[&str]| -> Vec<String> {
        let object = object.display().to_string();
        let out = command("nm", &[flags, &[object.as_str()]].concat());
        assert!(out.status.success(), "nm {}", flags.join(" "));
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect();
        names.sort();
        names
    };
    (
        list(&["--extern-only", "--defined-only"]),
        list(&["--undefined-only"]),
    )
}

/// Floats as little-endian bytes.
fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The bundled model quantized by `pipeline` and built into an object for each of `targets`
/// (from the quantized module, or from the ONNX model with `--passes` in the same command); a C
/// program linked with it gives `qcc run`'s outputs on the bundled photos bit for bit, exports
/// nothing but the two documented entry points, and needs nothing but memcpy and memset.
fn linked(pipeline: &str, what: &str, in_one_command: bool, targets: &[&str]) {
    let dir = qcc_tests::scratch_dir(&format!("build-{what}"));
    let at = |f: &str| dir.join(f).display().to_string();
    let model = qcc_tests::bundled_example("model.onnx");
    let calib = qcc_tests::bundled_example("photos");
    let passes = format!("--passes={pipeline}");
    let q = qcc_tests::qcc(&[&passes, "--calib", &calib, &model, "-o", &at("m.ir")]);
    assert_eq!(q.code, 0, "{}", q.stderr);

    // The photos as the model reads them, and what `qcc run` makes of them.
    let module = qcc_dialects::parse_file(&dir.join("m.ir")).expect("the quantized module");
    let photos = photos(&module);
    std::fs::write(dir.join("in.f32"), f32_bytes(photos.as_f32().expect("f32"))).expect("input");
    let run = qcc_tests::qcc(&[
        "run",
        &at("m.ir"),
        "--input",
        &qcc_tests::bundled_example("photos.npy"),
        "-o",
        &at("want.npy"),
        "--quiet",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let want = qcc_runtime::io::read_npy(&dir.join("want.npy")).expect("qcc run's outputs");

    for target in targets {
        let built = if in_one_command {
            qcc_tests::qcc(&[
                "build",
                &model,
                &passes,
                "--calib",
                &calib,
                "-o",
                &at("model.o"),
                "--target",
                target,
            ])
        } else {
            qcc_tests::qcc(&[
                "build",
                &at("m.ir"),
                "-o",
                &at("model.o"),
                "--target",
                target,
            ])
        };
        assert_eq!(built.code, 0, "{target}: {}", built.stderr);
        assert!(built.stderr.contains("of scratch"), "{}", built.stderr);
        let header = std::fs::read_to_string(dir.join("model.h")).expect("the header is written");
        for macro_name in [
            "MODEL_INPUT_ELEMENTS 150528",
            "MODEL_OUTPUT_ELEMENTS 1000",
            "MODEL_SCRATCH_BYTES",
            "MODEL_SCRATCH_ALIGN 64",
            "MODEL_INPUT_SCALE",
            "MODEL_OUTPUT_ZERO_POINT",
            "MODEL_ERROR_CPU",
            "int model_run(const float *in, float *out, void *scratch);",
        ] {
            assert!(
                header.contains(macro_name),
                "{target}: the header lacks {macro_name}"
            );
        }
        assert!(
            header.contains(&format!("MODEL_TARGET \"{target}\"")),
            "{header}"
        );
        let (defined, needed) = symbols(&dir.join("model.o"));
        assert_eq!(
            defined,
            ["model_run", "model_run_u8"],
            "{target}: exported symbols"
        );
        assert!(
            needed.iter().all(|s| s == "memcpy" || s == "memset"),
            "{target}: the object needs {needed:?}"
        );

        let harness = qcc_tests::workspace_root().join("tests/c/harness.c");
        // AArch64: cross-compiled (statically, so qemu needs no sysroot) and run under qemu.
        let arm = *target == "aarch64";
        let cc = if arm {
            "aarch64-linux-gnu-gcc".to_string()
        } else {
            c_compiler()
        };
        let dir_arg = dir.display().to_string();
        let harness_arg = harness.display().to_string();
        let (object, program) = (at("model.o"), at("harness"));
        let mut flags = vec!["-std=c99", "-Wall", "-Wextra", "-Werror", "-O2"];
        if arm {
            flags.push("-static");
        }
        flags.extend(["-I", &dir_arg, &harness_arg, &object, "-o", &program]);
        let compiled = command(&cc, &flags);
        assert!(
            compiled.status.success(),
            "{cc}: {}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        let run_args = ["f32", &at("in.f32"), &at("out.f32")];
        let ran = if arm {
            let mut args = vec![program.as_str()];
            args.extend(run_args);
            command("qemu-aarch64", &args)
        } else {
            command(&program, &run_args)
        };
        assert!(
            ran.status.success(),
            "{target}: harness: {}",
            String::from_utf8_lossy(&ran.stderr)
        );
        let got = std::fs::read(dir.join("out.f32")).expect("the harness's outputs");
        assert_eq!(
            got,
            f32_bytes(want.as_f32().expect("f32")),
            "{what}, {target}: the linked object's outputs differ from qcc run's"
        );
    }
    if !in_one_command {
        // The functions compile over the thread pool; the object's bytes must not depend on it.
        let object = |threads: &str, file: &str| {
            let out = qcc_tests::qcc(&[
                "build",
                &at("m.ir"),
                "-o",
                &at(file),
                "--name",
                "model",
                "--threads",
                threads,
            ]);
            assert_eq!(out.code, 0, "{}", out.stderr);
            std::fs::read(dir.join(file)).expect("the object is written")
        };
        assert!(
            object("1", "one.o") == object("2", "two.o"),
            "{what}: the object differs between one and two threads"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn linked_per_tensor_object_matches_qcc_run() {
    linked(
        "fold-batchnorm,quantize{granularity=per-tensor},bias-correct",
        "per-tensor",
        true,
        &["native"],
    );
}

/// The portable targets generate the `pmaddwd` form with SSE only (`x86_64`), AVX2
/// (`x86_64-v3`) or NEON (`aarch64`, cross-compiled with Debian's `gcc-aarch64-linux-gnu` and
/// run under `qemu-aarch64`, both of which `.ci/run` installs); all give the same bytes as the
/// native object.
#[test]
fn linked_per_channel_objects_match_qcc_run_on_every_target() {
    linked(
        "fold-batchnorm,quantize{granularity=per-channel},bias-correct",
        "per-channel",
        false,
        &["native", "x86_64", "x86_64-v3", "aarch64"],
    );
}

#[test]
fn linked_per_tensor_aarch64_object_matches_qcc_run() {
    linked(
        "fold-batchnorm,quantize{granularity=per-tensor},bias-correct",
        "per-tensor-aarch64",
        false,
        &["aarch64"],
    );
}

/// Bad input: a clear error, exit code 1, and no output file.
#[test]
fn bad_builds_are_refused_without_output() {
    let dir = qcc_tests::scratch_dir("build-bad");
    let at = |f: &str| dir.join(f).display().to_string();
    let model = qcc_tests::bundled_example("model.onnx");
    let cases: [(Vec<String>, &str); 4] = [
        (
            vec!["build".into(), model.clone(), "-o".into(), at("m.o")],
            "the model is float",
        ),
        (
            vec![
                "build".into(),
                model.clone(),
                "-o".into(),
                at("m.o"),
                "--target".into(),
                "sparc".into(),
            ],
            "unknown target 'sparc'",
        ),
        (
            vec![
                "build".into(),
                model.clone(),
                "-o".into(),
                at("m.o"),
                "--name".into(),
                "9lives".into(),
            ],
            "is not a C identifier",
        ),
        (
            vec!["build".into(), model.clone(), "-o".into(), at("my-model.o")],
            "cannot prefix C symbols; choose one with --name",
        ),
    ];
    for (args, message) in cases {
        let out = qcc_tests::qcc(&args);
        assert_eq!(out.code, 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(message), "{args:?}: {}", out.stderr);
        assert!(!dir.join("m.o").exists() && !dir.join("m.h").exists());
    }
    // A module the verifier rejects: file:line:col and the source line.
    let broken = dir.join("broken.ir");
    std::fs::write(
        &broken,
        "module @m {\n  func.func @main(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {\n    %y = nn.relu(%x) : (tensor<1x4xf32>) -> tensor<1x5xf32>\n    return %y : tensor<1x5xf32>\n  }\n}\n",
    )
    .expect("write");
    let out = qcc_tests::qcc(&["build", &broken.display().to_string(), "-o", &at("m.o")]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("broken.ir:4:12: error"),
        "{}",
        out.stderr
    );
    assert!(!dir.join("m.o").exists() && !dir.join("m.h").exists());
    // An op the generator has no code for, named, quantized in the same command.
    let fixture = qcc_tests::workspace_root().join("tests/filetests/onnx/max_pool.onnx");
    let calib = qcc_tests::workspace_root().join("tests/filetests/onnx/max_pool.input.npy");
    let out = qcc_tests::qcc(&[
        "build",
        &fixture.display().to_string(),
        "--passes=quantize",
        "--calib",
        &calib.display().to_string(),
        "-o",
        &at("m.o"),
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            "quant.max_pool2d (%y): qcc build has no generated code for quant.max_pool2d"
        ),
        "{}",
        out.stderr
    );
    assert!(!dir.join("m.o").exists() && !dir.join("m.h").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The C example (`examples/c/`) compiled against a freshly built object: it names the
/// parrot's class first.
#[test]
fn the_c_example_classifies_the_parrot() {
    let dir = qcc_tests::scratch_dir("build-example");
    let at = |f: &str| dir.join(f).display().to_string();
    let root = qcc_tests::workspace_root();
    let built = qcc_tests::qcc(&[
        "build",
        &qcc_tests::bundled_example("model.onnx"),
        "--passes=quantize{granularity=per-channel},bias-correct",
        "--calib",
        &qcc_tests::bundled_example("photos"),
        "-o",
        &at("mobilenet.o"),
    ]);
    assert_eq!(built.code, 0, "{}", built.stderr);
    let cc = c_compiler();
    let compiled = command(
        &cc,
        &[
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O2",
            "-I",
            &dir.display().to_string(),
            &root.join("examples/c/classify.c").display().to_string(),
            &at("mobilenet.o"),
            "-o",
            &at("classify"),
        ],
    );
    assert!(
        compiled.status.success(),
        "{cc}: {}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let ran = command(
        &at("classify"),
        &[
            &root.join("examples/c/parrot.ppm").display().to_string(),
            &qcc_tests::bundled_example("labels.txt"),
        ],
    );
    let stdout = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let first = stdout.lines().next().unwrap_or_default();
    assert!(first.contains("88") && first.contains("macaw"), "{stdout}");
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An object refuses to run, with its error code, on a CPU that lacks a feature its code was
/// generated with: here one that checks for AVX-VNNI (`avx_vnni`), on a CPU without it. On one
/// with it, the same program runs.
#[test]
fn a_cpu_without_the_features_gets_an_error_code() {
    let module =
        qcc_dialects::parse_file(&qcc_tests::workspace_root().join("examples/stem/model.ir"))
            .expect("the stem example");
    let mut ctx = PassContext {
        engine: Arc::new(qcc_codegen::Native),
        calib: Some(Tensor::from_f32(
            vec![4, 3, 32, 32],
            qcc_tests::random_f32(4 * 3 * 32 * 32, 7),
        )),
        ..PassContext::default()
    };
    let mut module = module;
    PassManager::new(parse_pipeline("fold-batchnorm,quantize").expect("pipeline"))
        .run(&mut module, &mut ctx, &mut |_, _| {})
        .expect("quantize");
    let x = qcc_tests::random_f32(3 * 32 * 32, 8);
    let features = vec!["sse41".to_string(), "avx_vnni".to_string()];
    let program = qcc_codegen::object::load_checking(&module, "main", Some(&features))
        .expect("the stem lowers");
    let has_avx_vnni = std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| info.split_whitespace().any(|w| w == "avx_vnni"))
        .unwrap_or(true);
    match program.run(&x) {
        Ok(_) => assert!(has_avx_vnni, "ran on a CPU without avx_vnni"),
        Err(e) => {
            assert!(!has_avx_vnni, "{e}");
            assert!(e.contains("lacks a feature"), "{e}");
        }
    }
    // With the features it was generated with, the same stem runs as the reference.
    let program = qcc_codegen::object::load(&module, "main").expect("the stem lowers");
    let reference = Interpreter::new(&module, "main").expect("prepares");
    let want = reference
        .run(&[Tensor::from_f32(vec![1, 3, 32, 32], x.clone())])
        .expect("reference");
    let got = program.run(&x).expect("generated run");
    assert_eq!(
        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want[0]
            .as_f32()
            .expect("f32")
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
}

/// A module declared for a batch of three: every driver walks the images (the dense layer's
/// input transposed into the GEMM's columns), and the program gives the reference's outputs.
#[test]
fn a_batch_of_three_lowers_exactly() {
    let path = qcc_tests::workspace_root().join("examples/stem/model.ir");
    let text = std::fs::read_to_string(&path)
        .expect("the stem example")
        .replace("tensor<1x", "tensor<3x");
    let file = qcc_dialects::SourceFile::new("stem3.ir", text);
    let mut module = qcc_dialects::parse_module(&file, path.parent())
        .unwrap_or_else(|e| panic!("parses at batch 3: {e:?}"));
    let mut ctx = PassContext {
        engine: Arc::new(qcc_codegen::Native),
        calib: Some(Tensor::from_f32(
            vec![6, 3, 32, 32],
            qcc_tests::random_f32(6 * 3 * 32 * 32, 11),
        )),
        ..PassContext::default()
    };
    PassManager::new(parse_pipeline("fold-batchnorm,quantize").expect("pipeline"))
        .run(&mut module, &mut ctx, &mut |_, _| {})
        .expect("quantize");
    let program = qcc_codegen::object::load(&module, "main").expect("lowers at batch 3");
    assert_eq!(program.lowered.input.shape[0], 3);
    let reference = Interpreter::new(&module, "main").expect("prepares");
    for seed in 0..3 {
        let x = qcc_tests::random_f32(3 * 3 * 32 * 32, 20 + seed);
        let want = reference
            .run(&[Tensor::from_f32(vec![3, 3, 32, 32], x.clone())])
            .expect("reference");
        let got = program.run(&x).expect("generated run");
        let want: Vec<u32> = want[0]
            .as_f32()
            .expect("f32")
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want,
            "seed {seed}"
        );
    }
}
