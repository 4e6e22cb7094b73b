//! `fold-batchnorm` must not change what a network computes: run each filetest graph on the
//! reference interpreter before and after the pass and compare.

use qcc_dialects::{Module, Tensor, parse_file, print_module};
use qcc_passes::{PassContext, PassManager, parse_pipeline};
use qcc_runtime::Interpreter;
use qcc_tests::{random_f32, workspace_root};

fn run(module: &Module, seed: u64) -> Vec<Tensor> {
    let func = module.function("main").expect("@main exists");
    let inputs: Vec<Tensor> = func
        .args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let ty = func.value_type(qcc_dialects::Value::of(*a));
            Tensor::from_f32(
                ty.shape.clone(),
                random_f32(ty.numel(), seed + i as u64)
                    .iter()
                    .map(|v| v * 3.0)
                    .collect(),
            )
        })
        .collect();
    Interpreter::new(module, "main")
        .expect("prepares")
        .run(&inputs)
        .expect("runs")
}

fn fold(module: &mut Module) {
    let pm =
        PassManager::new(parse_pipeline("fold-batchnorm,canonicalize").expect("valid pipeline"));
    pm.run(module, &mut PassContext::default(), &mut |_, _| {})
        .expect("pipeline succeeds");
}

fn check(file: &str) {
    let path = workspace_root()
        .join("tests/filetests/fold-batchnorm")
        .join(file);
    let mut module = parse_file(&path).unwrap_or_else(|(_, d)| panic!("{file}: {}", d[0].message));
    let before: Vec<Vec<Tensor>> = (0..3).map(|s| run(&module, s)).collect();
    fold(&mut module);
    let text = print_module(&module);
    assert!(
        !text.contains("nn.batch_norm"),
        "{file}: a batch_norm survived:\n{text}"
    );
    for (seed, expected) in before.iter().enumerate() {
        let got = run(&module, seed as u64);
        for (e, g) in expected.iter().zip(&got) {
            let (e, g) = (e.as_f32().expect("f32"), g.as_f32().expect("f32"));
            let scale = e.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let diff = e
                .iter()
                .zip(g)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff <= 1e-5 * scale,
                "{file}: outputs moved by {diff} (scale {scale})"
            );
        }
    }
}

#[test]
fn conv_bn_relu6_keeps_outputs() {
    check("conv_bn_relu6.ir");
}

#[test]
fn conv_without_bias_keeps_outputs() {
    check("conv_no_bias.ir");
}

#[test]
fn depthwise_keeps_outputs() {
    check("depthwise.ir");
}

#[test]
fn dense_keeps_outputs() {
    check("dense.ir");
}

#[test]
fn named_weights_with_a_dead_channel_keep_outputs() {
    check("named_weights.ir");
}

#[test]
fn unfoldable_batch_norms_still_compute_the_same() {
    let path = workspace_root().join("tests/filetests/fold-batchnorm/not_foldable.ir");
    let mut module = parse_file(&path).unwrap_or_else(|(_, d)| panic!("{}", d[0].message));
    let before = run(&module, 7);
    fold(&mut module);
    assert_eq!(print_module(&module).matches("nn.batch_norm").count(), 4);
    assert_eq!(before, run(&module, 7));
}

#[test]
fn imported_onnx_batch_norm_folds_without_changing_outputs() {
    let path = workspace_root().join("tests/filetests/onnx/conv_batchnorm.onnx");
    let mut module = qcc_compiler::onnx::import_file(&path)
        .expect("imports")
        .module;
    assert!(print_module(&module).contains("nn.batch_norm"));
    let x =
        qcc_runtime::io::read_npy(&path.with_file_name("conv_batchnorm.input.npy")).expect("input");
    let before = Interpreter::new(&module, "main")
        .expect("prepares")
        .run(std::slice::from_ref(&x))
        .expect("runs");
    fold(&mut module);
    assert!(!print_module(&module).contains("nn.batch_norm"));
    let after = Interpreter::new(&module, "main")
        .expect("prepares")
        .run(&[x])
        .expect("runs");
    let (b, a) = (
        before[0].as_f32().expect("f32"),
        after[0].as_f32().expect("f32"),
    );
    let diff = b
        .iter()
        .zip(a)
        .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(diff <= 1e-4, "folding moved the outputs by {diff}");
}
