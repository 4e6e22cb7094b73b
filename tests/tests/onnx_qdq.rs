//! QDQ ONNX out and in: `qcc export` (and `-o model.onnx`) writes the bundled example's quantized
//! modules as standard QDQ ONNX, `qcc import` reads them back into `quant` ops, and the round trip
//! changes no integer output. Models damaged through the protobuf types fall back or fail with the
//! node named.

use std::path::{Path, PathBuf};

use prost::Message;
use qcc_compiler::onnx::proto::{ModelProto, TensorProto};
use qcc_tests::{bundled_example as example, qcc, scratch_dir, workspace_root};

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
        // Per-channel output bounds (channel_max), exported as Min after the clip.
        (
            "eq",
            "equalize{objective=noise},quantize{granularity=per-tensor},bias-correct",
        ),
    ] {
        let ir = path(&dir, &format!("{tag}.ir"));
        quantize(pipeline, &ir);
        let onnx = path(&dir, &format!("{tag}.onnx"));
        let r = qcc(&["export", &ir, "-o", &onnx]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(!r.stderr.contains("warning"), "{}", r.stderr);

        let model = load(&onnx);
        assert_eq!(model.opset_import[0].version, 13);
        // The float model's names for the graph's input and output.
        let g = model.graph.as_ref().expect("graph");
        assert_eq!(
            (g.input[0].name.as_str(), g.output[0].name.as_str()),
            ("input", "logits")
        );
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
        let bounded = ops_of(&ir).matches("channel_max = [").count();
        assert_eq!(count(&model, "Min"), bounded);
        assert_eq!(
            bounded > 0,
            tag == "eq",
            "{tag}: {bounded} layers with channel_max"
        );

        let back = path(&dir, &format!("{tag}.back.ir"));
        let r = qcc(&["import", &onnx, "-o", &back]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(!r.stderr.contains("warning"), "{}", r.stderr);
        let text = ops_of(&back);
        assert_eq!(text.matches("quant.conv2d(").count(), 52);
        assert_eq!(text.matches("channel_max = [").count(), bounded);
        // The layers keep their names (the float model's), so per-layer scores still match them.
        let layer_names = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.contains("= quant.conv2d("))
                .map(|l| l.trim().split(' ').next().unwrap_or_default().to_string())
                .collect()
        };
        assert_eq!(layer_names(&text), layer_names(&ops_of(&ir)));
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
    // The same inputs give the same bytes (README, Guarantees), here through `qcc export`.
    let (again, twice) = (path(&dir, "again.onnx"), path(&dir, "twice.onnx"));
    for out in [&again, &twice] {
        let r = qcc(&["export", &ir, "-o", out]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let bytes = |p: &str| std::fs::read(p).expect("written");
    assert_eq!(bytes(&again), bytes(&twice));
    assert_eq!(bytes(&again), bytes(&onnx));
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

/// `qcc eval MODEL --reference model.onnx` on the bundled photos: (top-1 agreement, SQNR dB).
fn score(model: &str) -> (f64, f64) {
    let r = qcc(&[
        "eval",
        model,
        "--reference",
        &example("model.onnx"),
        "--data",
        &example("photos"),
        "--json",
        "--quiet",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    (
        j["top1_agreement"].as_f64().expect("agreement"),
        j["sqnr_db"].as_f64().expect("sqnr"),
    )
}

#[test]
fn bias_correct_takes_a_model_quantized_elsewhere_with_its_float_reference() {
    let dir = scratch_dir("qdq-reference");
    let naive = path(&dir, "naive.onnx");
    quantize("quantize{granularity=per-tensor}", &naive);
    let fixed = path(&dir, "fixed.onnx");
    let r = qcc(&[
        "--passes=bias-correct",
        "--reference",
        &example("model.onnx"),
        "--calib",
        &example("photos"),
        &naive,
        "-o",
        &fixed,
        "-v",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // No quantize was added: the module keeps its own weights and scales.
    assert!(
        !r.stderr.contains("running 'quantize' first"),
        "{}",
        r.stderr
    );
    let stored = |p: &str, data_type: i32| -> Vec<Vec<u8>> {
        let m = load(p);
        let mut v: Vec<Vec<u8>> = m
            .graph
            .expect("graph")
            .initializer
            .into_iter()
            .filter(|t| t.data_type == data_type)
            .map(|t| t.raw_data)
            .collect();
        v.sort();
        v
    };
    assert_eq!(stored(&naive, 3), stored(&fixed, 3), "int8 weights");
    assert_ne!(stored(&naive, 6), stored(&fixed, 6), "int32 biases");
    let (before, after) = (score(&naive), score(&fixed));
    assert!(
        after.1 > before.1 + 3.0 && after.0 > before.0,
        "bias-correct on the imported model: {before:?} -> {after:?}"
    );
    // The same as correcting in one pipeline with quantize.
    let direct = path(&dir, "direct.onnx");
    quantize("quantize{granularity=per-tensor},bias-correct", &direct);
    let want = outputs(&direct, &dir, "direct.npy");
    assert_eq!(outputs(&fixed, &dir, "fixed.npy"), want);
    // `qcc run` takes the same pipeline and reference.
    let ran = path(&dir, "ran.npy");
    let r = qcc(&[
        "run",
        &naive,
        "--passes=bias-correct",
        "--calib",
        &example("photos"),
        "--reference",
        &example("model.onnx"),
        "--input",
        &example("photos.npy"),
        "-o",
        &ran,
        "--quiet",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read(&ran).expect("written"), want);
    // Other tools' models carry no preprocessing of qcc's: the reference's is used.
    let mut bare = load(&naive);
    bare.metadata_props.clear();
    let bare = save(&bare, &dir, "bare.onnx");
    let fixed = path(&dir, "fixed_bare.onnx");
    let r = qcc(&[
        "--passes=bias-correct",
        "--reference",
        &example("model.onnx"),
        "--calib",
        &example("photos"),
        &bare,
        "-o",
        &fixed,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !r.stderr.contains("records no preprocessing"),
        "{}",
        r.stderr
    );
    assert_eq!(outputs(&fixed, &dir, "fixed_bare.npy"), want);
}

#[test]
fn a_missing_or_unfit_reference_is_an_error() {
    let dir = scratch_dir("qdq-bad-reference");
    let naive = path(&dir, "naive.onnx");
    quantize("quantize", &naive);
    let stem = workspace_root()
        .join("examples/stem/model.ir")
        .display()
        .to_string();
    let out = path(&dir, "out.ir");
    let r = qcc(&[
        "--passes=bias-correct",
        "--reference",
        &stem,
        "--calib",
        &example("photos"),
        &naive,
        "-o",
        &out,
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--reference"), "{}", r.stderr);
    assert!(!dir.join("out.ir").exists());
    // A quantized input without its reference: the error says what to give.
    let r = qcc(&[
        "--passes=bias-correct",
        "--calib",
        &example("photos"),
        &naive,
        "-o",
        &out,
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(
            "bias-correct needs the float network the model was quantized from, and the input is quantized already: give that float model with --reference FLOAT_MODEL"
        ),
        "{}",
        r.stderr
    );
    // A float input has nothing to correct against a reference.
    let r = qcc(&[
        "--passes=bias-correct",
        "--reference",
        &example("model.onnx"),
        "--calib",
        &example("photos"),
        &example("model.onnx"),
        "-o",
        &out,
    ]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("the input has no integer convolution or dense layer"),
        "{}",
        r.stderr
    );
}

/// Every op kind with an integer form goes out and comes back exactly: the quantized fixtures,
/// exported and imported, compute the same bits on random inputs, with no op left float.
#[test]
fn every_integer_op_survives_export_and_import() {
    use qcc_dialects::{OpKind, Tensor, Value};
    use qcc_runtime::{Engine, Reference};
    for (name, module) in qcc_tests::quantized_onnx_fixtures() {
        let bytes = qcc_compiler::onnx::export(&module, &[])
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .bytes;
        let back = qcc_compiler::onnx::import_bytes(&bytes, &format!("{name}.onnx"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(back.kept_float.is_empty(), "{name}: {:?}", back.kept_float);
        let kinds = |m: &qcc_dialects::Module| {
            let f = m.function("main").expect("@main");
            let mut k: Vec<String> = f
                .op_nodes()
                .into_iter()
                .filter(|n| !f.is_op(*n, OpKind::Const))
                .map(|n| f.op(n).name.clone())
                .collect();
            k.sort();
            k
        };
        assert!(
            kinds(&module).iter().any(|k| k.starts_with("quant.")
                && k != "quant.quantize"
                && k != "quant.dequantize"),
            "{name} has no integer op: {:?}",
            kinds(&module)
        );
        assert_eq!(kinds(&module), kinds(&back.module), "{name}");
        let main = module.function("main").expect("@main");
        let ty = main.value_type(Value::of(main.args[0]));
        let x = Tensor::from_f32(ty.shape.clone(), qcc_tests::random_f32(ty.numel(), 99));
        let run = |m: &qcc_dialects::Module| {
            Reference
                .prepare(m, "main")
                .and_then(|p| p.run(std::slice::from_ref(&x)).map_err(|e| e.to_string()))
                .unwrap_or_else(|e| panic!("{name}: {e}"))
        };
        assert_eq!(run(&module), run(&back.module), "{name}");
    }
}

mod batch_norm {
    //! A QDQ model as NNCF writes it, with the batch norm after the convolution left in the
    //! graph: Q -> DQ -> Conv (int8 weights, int32 bias) -> BatchNormalization -> Relu -> Q.

    use qcc_compiler::onnx::proto::{
        AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
        TensorShapeProto, TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
    };
    use qcc_dialects::{Module, OpKind, Tensor};
    use qcc_runtime::{Engine, Reference};

    fn tensor(name: &str, dims: &[i64], data_type: i32, raw: Vec<u8>) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type,
            raw_data: raw,
            ..TensorProto::default()
        }
    }

    fn f32s(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
        tensor(
            name,
            dims,
            1,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        )
    }

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: output.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..NodeProto::default()
        }
    }

    fn info(name: &str, dims: &[i64]) -> ValueInfoProto {
        use tensor_shape_proto::{Dimension, dimension::Value as Dim};
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: 1,
                    shape: Some(TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|d| Dimension {
                                value: Some(Dim::DimValue(*d)),
                                ..Dimension::default()
                            })
                            .collect(),
                    }),
                })),
                ..TypeProto::default()
            }),
            ..ValueInfoProto::default()
        }
    }

    /// The model; with `observed`, the batch norm's result is a graph output too, so the unit
    /// cannot be taken whole and runs in float.
    fn model(observed: bool) -> ModelProto {
        let weights: Vec<u8> = (0..4 * 3 * 9)
            .map(|i| (i * 37 % 255 - 127) as i8 as u8)
            .collect();
        let bias: Vec<u8> = [900i32, -400, 0, 1500]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut conv = node("Conv", &["x_dq", "w_dq", "b_dq"], "conv");
        conv.attribute.push(AttributeProto {
            name: "pads".into(),
            r#type: 7,
            ints: vec![1, 1, 1, 1],
            ..AttributeProto::default()
        });
        let axis0 = AttributeProto {
            name: "axis".into(),
            r#type: 2,
            i: 0,
            ..AttributeProto::default()
        };
        let mut w_dq = node("DequantizeLinear", &["w", "w_scale", "w_zp"], "w_dq");
        w_dq.attribute.push(axis0.clone());
        let mut b_dq = node("DequantizeLinear", &["b", "b_scale"], "b_dq");
        b_dq.attribute.push(axis0);
        let mut outputs = vec![info("y", &[1, 4, 6, 6])];
        if observed {
            outputs.push(info("bn", &[1, 4, 6, 6]));
        }
        ModelProto {
            ir_version: 7,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            graph: Some(GraphProto {
                name: "bn".into(),
                node: vec![
                    node("QuantizeLinear", &["x", "x_scale", "x_zp"], "x_q"),
                    node("DequantizeLinear", &["x_q", "x_scale", "x_zp"], "x_dq"),
                    w_dq,
                    b_dq,
                    conv,
                    node(
                        "BatchNormalization",
                        &["conv", "gamma", "beta", "mean", "var"],
                        "bn",
                    ),
                    node("Relu", &["bn"], "relu"),
                    node("QuantizeLinear", &["relu", "y_scale", "y_zp"], "y_q"),
                    node("DequantizeLinear", &["y_q", "y_scale", "y_zp"], "y"),
                ],
                initializer: vec![
                    f32s("x_scale", &[], &[0.02]),
                    tensor("x_zp", &[], 2, vec![128]),
                    tensor("w", &[4, 3, 3, 3], 3, weights),
                    f32s("w_scale", &[4], &[0.01, 0.02, 0.005, 0.03]),
                    tensor("w_zp", &[4], 3, vec![0; 4]),
                    tensor("b", &[4], 6, bias),
                    f32s("b_scale", &[4], &[0.0002, 0.0004, 0.0001, 0.0006]),
                    // One negative gain and one of zero among the channels.
                    f32s("gamma", &[4], &[1.5, -0.7, 0.0, 0.9]),
                    f32s("beta", &[4], &[0.1, 0.3, 0.2, -0.05]),
                    f32s("mean", &[4], &[0.05, -0.1, 0.0, 0.2]),
                    f32s("var", &[4], &[0.8, 1.3, 0.5, 2.0]),
                    f32s("y_scale", &[], &[0.05]),
                    tensor("y_zp", &[], 2, vec![0]),
                ],
                input: vec![info("x", &[1, 3, 6, 6])],
                output: outputs,
                ..GraphProto::default()
            }),
            ..ModelProto::default()
        }
    }

    fn import(m: &ModelProto) -> Module {
        use prost::Message;
        qcc_compiler::onnx::import_bytes(&m.encode_to_vec(), "bn.onnx")
            .expect("imports")
            .module
    }

    fn count(m: &Module, kind: OpKind) -> usize {
        let f = m.function("main").expect("@main");
        f.op_nodes()
            .into_iter()
            .filter(|n| f.is_op(*n, kind))
            .count()
    }

    #[test]
    fn a_batch_norm_after_a_convolution_folds_into_its_weight_scales() {
        let (folded, float) = (import(&model(false)), import(&model(true)));
        assert_eq!(count(&folded, OpKind::QuantConv2d), 1);
        assert_eq!(count(&folded, OpKind::BatchNorm), 0);
        assert_eq!(count(&float, OpKind::QuantConv2d), 0);
        assert_eq!(count(&float, OpKind::BatchNorm), 1);
        let x = Tensor::from_f32(vec![1, 3, 6, 6], qcc_tests::random_f32(108, 5));
        let run = |m: &Module| {
            let y = Reference
                .prepare(m, "main")
                .and_then(|p| p.run(std::slice::from_ref(&x)).map_err(|e| e.to_string()))
                .expect("runs");
            y[0].as_f32().expect("f32").to_vec()
        };
        let (a, b) = (run(&folded), run(&float));
        // The same outputs up to one output level (0.05): the integer layer rounds its
        // requantization once, the float path rounds the dequantized product.
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        assert!(worst <= 0.05 + 1e-6, "worst difference {worst}");
        // The channel whose gain is zero computes the batch norm's constant, ReLU'd.
        let plane = 36;
        let want = (0.2f32 / 0.05).round() * 0.05;
        assert!(
            a[2 * plane..3 * plane]
                .iter()
                .all(|v| (v - want).abs() < 1e-6)
        );
    }
}

#[test]
fn estimates_that_onnx_cannot_hold_are_named_when_left_out() {
    let dir = scratch_dir("qdq-estimates");
    let onnx = path(&dir, "estimated.onnx");
    let r = qcc(&[
        "--passes=quantize,estimate-bias-shift",
        "--calib",
        &example("photos"),
        &example("model.onnx"),
        "-o",
        &onnx,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("warning: 53 layers carry bias_shift estimates (from estimate-bias-shift)"),
        "{}",
        r.stderr
    );
}

/// A float module with per-channel clip bounds (what `equalize` makes of a ReLU6) exports as
/// Clip then Min with the bounds shaped `[C, 1, 1]`, and imports back to the same module.
#[test]
fn per_channel_clip_bounds_survive_export_and_import() {
    let dir = scratch_dir("qdq-channel-clip");
    let ir = path(&dir, "eq.ir");
    quantize("fold-batchnorm,equalize", &ir);
    let bounded = ops_of(&ir).matches("channel_max = [").count();
    assert!(bounded > 0, "equalize scaled no ReLU6 bound");
    let onnx = path(&dir, "eq.onnx");
    let r = qcc(&["export", &ir, "-o", &onnx]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(count(&load(&onnx), "Min"), bounded);
    let back = path(&dir, "eq.back.ir");
    let r = qcc(&["import", &onnx, "-o", &back]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(ops_of(&back).matches("channel_max = [").count(), bounded);
    assert_eq!(
        outputs(&ir, &dir, "a.npy"),
        outputs(&back, &dir, "b.npy"),
        "the imported export computes other outputs"
    );
    // A Min whose bound is not one per channel is an error naming the node.
    let mut model = load(&onnx);
    let min = model
        .graph
        .as_ref()
        .expect("graph")
        .node
        .iter()
        .find(|n| n.op_type == "Min")
        .expect("a Min")
        .clone();
    let bound = initializer(&mut model, &min.input[1]);
    let first = bound.float_data.first().copied().unwrap_or(6.0);
    (bound.dims, bound.float_data, bound.raw_data) = (vec![], vec![first], vec![]);
    let broken = save(&model, &dir, "scalar_min.onnx");
    let r = qcc(&["import", &broken, "-o", &path(&dir, "never.ir")]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("node '{}' (Min)", min.name))
            && r.stderr
                .contains("Min is supported only with constant f32 bounds per channel"),
        "{}",
        r.stderr
    );
    assert!(!dir.join("never.ir").exists());
}
