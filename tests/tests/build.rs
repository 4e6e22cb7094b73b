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
    let pre = qcc_compiler::model::preprocessing(module, &Default::default()).expect("preprocessing");
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
        let want = reference.run(std::slice::from_ref(&x)).expect("reference run");
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
        let levels = program.run_u8(stored).expect("generated run on stored values");
        let out = &program.lowered.output;
        for (j, (l, logit)) in levels.iter().zip(&got).enumerate() {
            let v = qcc_runtime::quant::dequantize_value(
                i64::from(*l),
                f64::from(out.scale),
                out.zero_point,
            );
            assert_eq!(v.to_bits(), logit.to_bits(), "{pipeline}: photo {i}, level {j}");
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
