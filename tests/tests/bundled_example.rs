//! The bundled MobileNetV2 example: qcc's float logits against ONNX Runtime's golden logits,
//! and the README's main job printing sensible classes.

use qcc_runtime::io::read_npy;
use qcc_tests::{bundled_example as example, qcc};

fn run_to_npy(input: &str, name: &str) -> Vec<f32> {
    let out = std::env::temp_dir().join(format!("qcc-example-{name}-{}.npy", std::process::id()));
    let run = qcc(&[
        "run",
        &example("model.onnx"),
        "--input",
        input,
        "-o",
        &out.display().to_string(),
        "--quiet",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let t = read_npy(&out).expect("outputs written");
    assert_eq!(t.shape, vec![8, 1000]);
    t.as_f32().expect("f32").to_vec()
}

fn golden() -> Vec<f32> {
    read_npy(std::path::Path::new(&example("golden_logits.npy")))
        .expect("golden")
        .as_f32()
        .expect("f32")
        .to_vec()
}

fn argmax(row: &[f32]) -> usize {
    (0..row.len())
        .max_by(|a, b| row[*a].total_cmp(&row[*b]))
        .expect("non-empty")
}

#[test]
fn logits_match_onnx_runtime_on_the_same_pixels() {
    let (got, want) = (run_to_npy(&example("photos.npy"), "pixels"), golden());
    let diff = got
        .iter()
        .zip(&want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-3, "max abs logit difference {diff}");
}

#[test]
fn own_image_loading_gives_the_golden_top1() {
    let (got, want) = (run_to_npy(&example("photos"), "images"), golden());
    let names = std::fs::read_to_string(example("photos.txt")).expect("photo names");
    for ((g, w), name) in got.chunks(1000).zip(want.chunks(1000)).zip(names.lines()) {
        assert_eq!(argmax(g), argmax(w), "{name}");
        // PNGs decode identically and resize exactly as PIL does; JPEG decoders differ slightly.
        let diff = g
            .iter()
            .zip(w)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        let bound = if name.ends_with(".png") { 1e-3 } else { 0.1 };
        assert!(diff <= bound, "{name}: logits differ by {diff}");
    }
}

/// The README's main job: float and int8 (quantized on the photos themselves) side by side.
#[test]
fn main_job_prints_sensible_classes_before_and_after_quantization() {
    let photos = example("photos");
    let run = qcc(&[
        "run",
        &example("model.onnx"),
        "--input",
        &photos,
        "--top",
        "5",
        "--passes=quantize",
        "--calib",
        &photos,
        "--compare",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let top1 = |photo: &str| -> usize {
        let mut lines = run.stdout.lines().skip_while(|l| *l != photo);
        lines.next();
        assert!(lines.next().expect("a header").contains("after quantize"));
        let row = lines.next().expect("a class line");
        let (float, int8) = row.split_once('|').expect("two columns");
        let class = |s: &str| -> usize {
            s.split_whitespace()
                .next()
                .expect("index")
                .parse()
                .expect("a number")
        };
        assert_eq!(
            class(float),
            class(int8),
            "{photo}: int8 top-1 differs from float:\n{row}"
        );
        class(float)
    };
    assert!((281..=285).contains(&top1("cat.jpg")), "{}", run.stdout);
    assert!(
        (281..=285).contains(&top1("chelsea_cat.png")),
        "{}",
        run.stdout
    );
    assert!([967, 968].contains(&top1("coffee.png")), "{}", run.stdout);
    assert_eq!(top1("parrot.jpg"), 88, "{}", run.stdout);
    assert_eq!(top1("hot_dog.jpg"), 934, "{}", run.stdout);
    assert!(
        run.stdout.contains("Egyptian cat"),
        "labels.txt beside the model names the classes"
    );
}

/// The README's main job: the float / naive / bias-corrected / bias-fitted table for per-tensor
/// and per-channel weights on the bundled photos. Measured: per-tensor naive 0% / -3.69 dB,
/// bias-fit 100% / 10.44 dB, equalize+correct 100% / 16.78 dB; per-channel 100% in every row.
#[test]
fn main_job_prints_the_bias_correction_table() {
    let photos = example("photos");
    let run = qcc(&[
        "compare",
        &example("model.onnx"),
        "--calib",
        &photos,
        "--quiet",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let row = |label: &str| -> Vec<String> {
        let line = run
            .stdout
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .starts_with(label)
            })
            .unwrap_or_else(|| panic!("no row {label} in\n{}", run.stdout));
        line.split_whitespace()
            .skip(label.split_whitespace().count())
            .map(String::from)
            .collect()
    };
    let number = |cell: &str| -> f64 { cell.trim_end_matches('%').parse().expect("a number") };
    let classes: Vec<usize> = row("float")[5..]
        .iter()
        .map(|c| c.parse().expect("a class"))
        .collect();
    assert_eq!(classes.len(), 8, "{}", run.stdout);
    for want in [88, 934] {
        assert!(classes.contains(&want), "{}", run.stdout);
    }
    assert!(
        classes.iter().any(|c| (281..=285).contains(c)),
        "{}",
        run.stdout
    );
    assert!(
        classes.iter().any(|c| [967, 968].contains(c)),
        "{}",
        run.stdout
    );
    for method in ["naive", "bias-correct", "bias-fit"] {
        let r = row(&format!("per-channel {method}"));
        assert!(
            number(&r[0]) >= 87.5,
            "per-channel {method}: {}",
            run.stdout
        );
    }
    let naive = row("per-tensor naive");
    let fitted = row("per-tensor bias-fit");
    assert!(
        number(&fitted[2]) >= number(&naive[2]) + 12.0 && number(&fitted[0]) >= 75.0,
        "bias-fit does not rescue per-tensor weights:\n{}",
        run.stdout
    );
    // Measured 100% / 16.78 dB: equalization before per-tensor quantization beats bias-fit.
    let equalized = row("per-tensor equalize+correct");
    assert!(
        number(&equalized[2]) >= number(&fitted[2]) + 3.0 && number(&equalized[0]) >= 87.5,
        "equalize does not help per-tensor weights:\n{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("inputs in order: astronaut.png, cat.jpg"),
        "{}",
        run.stdout
    );
}

/// Where `score(_, name)` writes its module.
fn scored(name: &str) -> String {
    std::env::temp_dir()
        .join(format!("qcc-example-{name}-{}.ir", std::process::id()))
        .display()
        .to_string()
}

/// Scores `pipeline` (calibrated on the bundled photos) against float on the same photos.
fn score(pipeline: &str, name: &str) -> (f64, f64) {
    let out = std::path::PathBuf::from(scored(name));
    let photos = example("photos");
    let run = qcc(&[
        &format!("--passes={pipeline}"),
        "--calib",
        &photos,
        &example("model.onnx"),
        "-o",
        &out.display().to_string(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let eval = qcc(&[
        "eval",
        &out.display().to_string(),
        "--reference",
        &example("model.onnx"),
        "--data",
        &example("photos.npy"),
        "--json",
        "--quiet",
    ]);
    assert_eq!(eval.code, 0, "{}", eval.stderr);
    let field = |key: &str| -> f64 {
        let at = eval
            .stdout
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("no {key} in {}", eval.stdout));
        let rest = &eval.stdout[at + key.len() + 3..];
        rest[..rest.find([',', '}']).expect("a number ends")]
            .parse()
            .expect("a number")
    };
    (field("top1_agreement"), field("sqnr_db"))
}

/// Bias correction rescues per-tensor MobileNetV2: measured on the 8 photos with the default
/// options (MSE ranges, correction after the activation), naive per-tensor quantization gives 0%
/// agreement and -3.65 dB, bias-correct 62.5% and 7.45 dB. The floors leave room for noise but
/// fail on a regression.
#[test]
fn bias_correction_improves_per_tensor_quantization() {
    let (naive_agree, naive_sqnr) = score("quantize{granularity=per-tensor}", "naive");
    let (agree, sqnr) = score("quantize{granularity=per-tensor},bias-correct", "corrected");
    assert!(
        sqnr >= naive_sqnr + 8.0,
        "bias-correct: SQNR {naive_sqnr:.2} dB -> {sqnr:.2} dB"
    );
    assert!(
        agree >= 50.0 && agree >= naive_agree + 37.5,
        "bias-correct: agreement {naive_agree}% -> {agree}%"
    );
    // `qcc report` on the naive and the corrected module: the table names both, the corrected
    // mean shift is far below the naive one (0.5571 -> 0.0191 measured), and the plot has a
    // legend entry per module.
    let svg = std::env::temp_dir().join(format!("qcc-example-shift-{}.svg", std::process::id()));
    let run = qcc(&[
        "report",
        &scored("naive"),
        &scored("corrected"),
        "--reference",
        &example("model.onnx"),
        "--data",
        &example("photos.npy"),
        "-o",
        &svg.display().to_string(),
        "--quiet",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mean_row = run
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("mean "))
        .unwrap_or_else(|| panic!("no mean row in\n{}", run.stdout));
    let means: Vec<f64> = mean_row
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().expect("a number"))
        .collect();
    assert!(
        means.len() == 2 && means[1] < 0.25 * means[0],
        "mean shift naive -> corrected: {mean_row}"
    );
    assert_eq!(run.stdout.lines().count(), 2 + 64 + 1, "{}", run.stdout);
    let plot = std::fs::read_to_string(&svg).expect("the plot is written");
    assert!(plot.starts_with("<svg"), "{plot:.200}");
    for name in ["naive", "corrected"] {
        let file = format!("qcc-example-{name}-{}.ir (mean ", std::process::id());
        assert!(plot.contains(&file), "no legend entry {file}");
    }
}

/// The design's two-step form, `estimate-bias-shift,apply-bias-correction`, measures each layer
/// with the corrections above it in place and records a rejected correction as no shift, so it
/// writes the same module as `bias-correct` (before, it measured every layer on the uncorrected
/// network and subtracted upstream error twice: 0.2% agreement on per-tensor MobileNetV2).
#[test]
fn two_step_correction_writes_the_same_module_as_bias_correct() {
    let photos = example("photos");
    let model = example("model.onnx");
    for (weights, at) in [
        ("per-tensor", "pre-activation"),
        ("per-channel", "post-activation"),
    ] {
        let write = |pipeline: &str, name: &str| -> (Vec<u8>, Vec<u8>) {
            let out = std::env::temp_dir().join(format!(
                "qcc-example-two-step-{name}-{weights}-{}.ir",
                std::process::id()
            ));
            let run = qcc(&[
                &format!("--passes=quantize{{granularity={weights}}},{pipeline}"),
                "--calib",
                &photos,
                &model,
                "-o",
                &out.display().to_string(),
            ]);
            assert_eq!(run.code, 0, "{pipeline}: {}", run.stderr);
            let text = std::fs::read(&out).expect("module");
            let weights = std::fs::read(out.with_extension("safetensors")).expect("weights");
            (text, weights)
        };
        let (two_step_ir, two_step_weights) = write(
            &format!("estimate-bias-shift{{at={at}}},apply-bias-correction"),
            "pair",
        );
        let (iterative_ir, iterative_weights) =
            write(&format!("bias-correct{{at={at}}}"), "iterative");
        let (_, naive_weights) = write("canonicalize", "naive");
        assert!(
            naive_weights != iterative_weights,
            "{weights}: bias-correct changed no bias"
        );
        // The module names its own weights file, which differs by name only.
        let strip = |t: &[u8]| {
            String::from_utf8_lossy(t)
                .lines()
                .filter(|l| !l.contains("weights = "))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(&two_step_ir), strip(&iterative_ir), "{weights}");
        assert!(
            two_step_weights == iterative_weights,
            "{weights}, {at}: the two-step form and bias-correct wrote different biases"
        );
    }
}

/// `eval` prepares the images as the model under test records (what it was calibrated with),
/// whatever the reference records: scored against a copy of the float model that records other
/// preprocessing, the figures are those against the original.
#[test]
fn eval_feeds_both_models_what_the_model_under_test_records() {
    let dir = std::env::temp_dir().join(format!("qcc-example-pre-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (q, other) = (dir.join("q.ir"), dir.join("other.ir"));
    let run = qcc(&[
        "--passes=quantize",
        "--calib",
        &example("photos.npy"),
        &example("model.onnx"),
        "-o",
        &q.display().to_string(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = qcc(&[
        "import",
        &example("model.onnx"),
        "-o",
        &other.display().to_string(),
        "--preprocess",
        "none",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let eval = |reference: &str| {
        let run = qcc(&[
            "eval",
            &q.display().to_string(),
            "--reference",
            reference,
            "--data",
            &example("photos.npy"),
            "--json",
            "--quiet",
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.stdout
    };
    assert_eq!(
        eval(&other.display().to_string()),
        eval(&example("model.onnx"))
    );
}

/// The main job gives the same table on the reference interpreter as on the Cranelift engine
/// (the default): the same modules, so the same agreement, SQNR, KL and classes in every row;
/// only the seconds the passes took differ.
#[test]
fn main_job_gives_the_same_table_on_both_engines() {
    let table = |engine: &str| -> Vec<Vec<String>> {
        let run = qcc(&[
            "compare",
            &example("model.onnx"),
            "--calib",
            &example("photos"),
            "--quiet",
            "--engine",
            engine,
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        run.stdout
            .lines()
            .filter(|l| l.starts_with("per-"))
            .map(|l| {
                let cells: Vec<String> = l.split_whitespace().map(String::from).collect();
                // label (2 words), agreement x2, SQNR, KL, passes s, classes...
                let mut kept = cells[..6].to_vec();
                kept.extend_from_slice(&cells[7..]);
                kept
            })
            .collect()
    };
    let (native, reference) = (table("cranelift"), table("reference"));
    assert_eq!(native.len(), 7, "{native:?}");
    assert_eq!(native, reference);
}

/// `qcc run --profile` lists every op with its multiply-accumulates: MobileNetV2's first
/// convolution makes 32 x 112 x 112 outputs of 3 x 3 x 3 products each (10.84 M per image), its
/// classifier 1000 outputs of 1280 (1.28 M per image). Ops run as a plain run runs them: every
/// clip of this float model is applied by the convolution before it, so it is timed in that
/// convolution's row.
#[test]
fn profile_counts_the_multiply_accumulates_of_every_layer() {
    let run = qcc(&[
        "run",
        &example("model.onnx"),
        "--input",
        &example("photos.npy"),
        "--profile",
        "--top",
        "1",
        "--quiet",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let profile = run
        .stdout
        .split("profile: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no profile in\n{}", run.stdout));
    assert!(
        profile.starts_with("8 inputs on the cranelift engine"),
        "{profile}"
    );
    assert!(
        profile
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("activation arena at batch 8: ")),
        "{profile}"
    );
    // (op, output shape, MMAC) of every op row.
    let rows: Vec<(&str, &str, &str)> = profile
        .lines()
        .skip(3)
        .take_while(|l| !l.starts_with("by class:"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6).then(|| (f[0], f[f.len() - 5], f[f.len() - 2]))
        })
        .collect();
    assert!(
        rows.contains(&("nn.conv2d+nn.clip", "1x32x112x112", "86.70")),
        "{profile}"
    );
    assert!(
        rows.iter().any(|r| r.0 == "nn.dense" && r.2 == "10.24"),
        "{profile}"
    );
    assert!(!rows.iter().any(|r| r.0 == "nn.clip"), "{profile}");
    assert!(
        rows.iter().any(|r| r.0 == "nn.conv2d"),
        "the projections have no activation:\n{profile}"
    );
    for class in ["conv 1x1", "depthwise", "dense", "other"] {
        assert!(
            profile.lines().any(|l| l.trim_start().starts_with(class)),
            "no {class} total:\n{profile}"
        );
    }
}

/// `--dump-clif` and `--dump-asm` make their folders (and the folders' parents) when missing, and
/// write a file per generated kernel there: the float model's depthwise kernels among them. A
/// kernel is dumped when it is compiled, once per process, so the test binary runs this test
/// again in a process of its own, where no other test compiled them first.
#[test]
fn dump_folders_are_made_and_get_every_kernel() {
    const CHILD: &str = "QCC_TEST_DUMPS_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "dump_folders_are_made_and_get_every_kernel",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .output()
            .expect("the test binary runs");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let root = qcc_tests::scratch_dir("dumps");
    let (clif, asm) = (root.join("new/clif"), root.join("new/asm"));
    let run = qcc(&[
        "run",
        &example("model.onnx"),
        "--input",
        &example("photos.npy"),
        "--quiet",
        "--dump-clif",
        &clif.display().to_string(),
        "--dump-asm",
        &asm.display().to_string(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for (dir, ext) in [(&clif, "clif"), (&asm, "s")] {
        let names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("fdwconv_") && n.ends_with(ext)),
            "{}: {names:?}",
            dir.display()
        );
    }
    // A path that cannot be a folder is refused, naming the flag.
    let file = root.join("a_file");
    std::fs::write(&file, "x").expect("write");
    let bad = qcc(&[
        "run",
        &example("model.onnx"),
        "--input",
        &example("photos.npy"),
        "--dump-asm",
        &file.join("sub").display().to_string(),
    ]);
    assert_eq!(bad.code, 1);
    assert!(
        bad.stderr.starts_with("error: --dump-asm '"),
        "{}",
        bad.stderr
    );
}
