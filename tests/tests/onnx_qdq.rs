//! QDQ ONNX out and in: `qcc export` (and `-o model.onnx`) writes the bundled example's quantized
//! modules as standard QDQ ONNX, `qcc import` reads them back into `quant` ops, and the round trip
//! changes no integer output. Models damaged through the protobuf types fall back or fail with the
//! node named.

use std::path::{Path, PathBuf};

use prost::Message;
use qcc_compiler::onnx::proto::{ModelProto, TensorProto};
use qcc_tests::{qcc, scratch_dir, workspace_root};

fn example(rel: &str) -> String {
    workspace_root()
        .join("examples/mobilenet_v2")
        .join(rel)
        .display()
        .to_string()
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// Quantizes the bundled example with `pipeline`, writing `out` (.ir or .onnx).
fn quantize(pipeline: &str, out: &str) {
    let r = qcc(&[
        &format!("--passes={pipeline}"),
        "--calib",
        &example("photos"),
        &example("model.onnx"),
        "-o",
        out,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// The raw outputs of `model` on the bundled photos (the .npy bytes).
fn outputs(model: &str, dir: &Path, name: &str) -> Vec<u8> {
    let out = path(dir, name);
    let r = qcc(&[
        "run",
        model,
        "--input",
        &example("photos.npy"),
        "-o",
        &out,
        "--quiet",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    std::fs::read(out).expect("outputs written")
}

fn load(path: &str) -> ModelProto {
    ModelProto::decode(std::fs::read(path).expect("model written").as_slice()).expect("valid ONNX")
}

fn count(model: &ModelProto, op_type: &str) -> usize {
    let g = model.graph.as_ref().expect("graph");
    g.node.iter().filter(|n| n.op_type == op_type).count()
}

fn ops_of(ir: &str) -> String {
    std::fs::read_to_string(ir).expect("module written")
}

#[test]
fn export_then_import_keeps_every_integer_output() {
    let dir = scratch_dir("qdq-roundtrip");
    for (tag, pipeline) in [
        ("pc", "quantize,bias-correct"),
        ("pt", "quantize{granularity=per-tensor},bias-correct"),
    ] {
        let ir = path(&dir, &format!("{tag}.ir"));
        quantize(pipeline, &ir);
        let onnx = path(&dir, &format!("{tag}.onnx"));
        let r = qcc(&["export", &ir, "-o", &onnx]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(!r.stderr.contains("warning"), "{}", r.stderr);

        let model = load(&onnx);
        assert_eq!(model.opset_import[0].version, 13);
        // 52 convolutions and a dense layer, each with its input, weights and bias dequantized;
        // ten adds with two; the pooling and the output.
        assert_eq!(count(&model, "Conv"), 52);
        assert_eq!(count(&model, "Gemm"), 1);
        assert_eq!(count(&model, "Add"), 10);
        assert_eq!(count(&model, "DequantizeLinear"), 53 * 3 + 10 * 2 + 1 + 1);
        assert_eq!(count(&model, "QuantizeLinear"), 53 + 10 + 1 + 1);
        let meta: Vec<(&str, &str)> = model
            .metadata_props
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        assert!(meta.contains(&("qcc.preprocess", "tf")), "{meta:?}");

        let back = path(&dir, &format!("{tag}.back.ir"));
        let r = qcc(&["import", &onnx, "-o", &back]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(!r.stderr.contains("warning"), "{}", r.stderr);
        let text = ops_of(&back);
        assert_eq!(text.matches("quant.conv2d(").count(), 52);
        assert_eq!(text.matches("nn.conv2d(").count(), 0);
        assert!(text.contains("preprocess.mean = [0.5, 0.5, 0.5]"));
        assert_eq!(
            outputs(&ir, &dir, &format!("{tag}.a.npy")),
            outputs(&back, &dir, &format!("{tag}.b.npy")),
            "{pipeline}: the imported export computes other outputs"
        );
        // Running the .onnx directly imports it on the fly: the same outputs again.
        assert_eq!(
            outputs(&ir, &dir, &format!("{tag}.a.npy")),
            outputs(&onnx, &dir, &format!("{tag}.c.npy"))
        );
    }
}

#[test]
fn compile_writes_onnx_when_the_output_says_so() {
    let dir = scratch_dir("qdq-compile");
    let onnx = path(&dir, "model.q.onnx");
    quantize("quantize", &onnx);
    assert_eq!(count(&load(&onnx), "Conv"), 52);
    assert!(!dir.join("model.q.safetensors").exists());
    let ir = path(&dir, "model.q.ir");
    quantize("quantize", &ir);
    assert_eq!(outputs(&ir, &dir, "a.npy"), outputs(&onnx, &dir, "b.npy"));
}

/// A tensor of `model` by name.
fn initializer<'m>(model: &'m mut ModelProto, name: &str) -> &'m mut TensorProto {
    let g = model.graph.as_mut().expect("graph");
    g.initializer
        .iter_mut()
        .find(|t| t.name == name)
        .expect("initializer")
}

fn save(model: &ModelProto, dir: &Path, name: &str) -> String {
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, model.encode_to_vec()).expect("write");
    p.display().to_string()
}

#[test]
fn an_unmappable_pattern_stays_float_with_a_warning_naming_it() {
    let dir = scratch_dir("qdq-unmapped");
    let onnx = path(&dir, "model.q.onnx");
    quantize("quantize", &onnx);
    let mut model = load(&onnx);
    // Give the first convolution's weights a nonzero zero point: qcc's integer layers take
    // symmetric weights only, so that convolution stays float.
    let g = model.graph.as_ref().expect("graph");
    let conv = g.node.iter().find(|n| n.op_type == "Conv").expect("a Conv");
    let conv_name = conv.name.clone();
    let weight_dq = g
        .node
        .iter()
        .find(|n| n.output[0] == conv.input[1])
        .expect("weights are dequantized");
    let zp = weight_dq.input[2].clone();
    for b in &mut initializer(&mut model, &zp).raw_data {
        *b = 1;
    }
    let damaged = save(&model, &dir, "damaged.onnx");
    let ir = path(&dir, "damaged.ir");
    let r = qcc(&["import", &damaged, "-o", &ir]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("1 quantized (QDQ) ops stay float")
            && r.stderr.contains(&format!(
                "{conv_name} (Conv): its weights have a nonzero zero point"
            )),
        "{}",
        r.stderr
    );
    let text = ops_of(&ir);
    assert_eq!(text.matches("quant.conv2d(").count(), 51);
    assert_eq!(text.matches("nn.conv2d(").count(), 1);
    outputs(&ir, &dir, "out.npy");
}

#[test]
fn mismatched_parameters_are_an_error_naming_the_node() {
    let dir = scratch_dir("qdq-mismatch");
    let onnx = path(&dir, "model.q.onnx");
    quantize("quantize", &onnx);
    let mut model = load(&onnx);
    // The output's DequantizeLinear reads the last value with a scale that is not the one it
    // was quantized with.
    let g = model.graph.as_mut().expect("graph");
    let out = g.output[0].name.clone();
    let dq = g
        .node
        .iter_mut()
        .find(|n| n.output[0] == out)
        .expect("the output is dequantized");
    dq.name = "the_output".into();
    dq.input[1] = "clip_scale_other".into();
    g.initializer.push(TensorProto {
        name: "clip_scale_other".into(),
        data_type: 1,
        raw_data: 0.5f32.to_le_bytes().to_vec(),
        ..TensorProto::default()
    });
    let damaged = save(&model, &dir, "damaged.onnx");
    let r = qcc(&["import", &damaged, "-o", &path(&dir, "damaged.ir")]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("node 'the_output' (DequantizeLinear): it reads")
            && r.stderr.contains("with other parameters"),
        "{}",
        r.stderr
    );
    assert!(!dir.join("damaged.ir").exists());
}

#[test]
fn export_refuses_other_extensions_and_leaves_nothing_behind() {
    let dir = scratch_dir("qdq-bad-output");
    let ir = path(&dir, "m.ir");
    quantize("quantize", &ir);
    let r = qcc(&["export", &ir, "-o", &path(&dir, "m.txt")]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("the output must be an .onnx file"),
        "{}",
        r.stderr
    );
    let r = qcc(&["export", &ir, "-o", &path(&dir, "missing/m.onnx")]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    let r = qcc(&[
        "export",
        &path(&dir, "absent.ir"),
        "-o",
        &path(&dir, "m.onnx"),
    ]);
    assert_eq!(r.code, 1);
    assert!(!dir.join("m.onnx").exists());
}
