//! Modules that verify but cannot run on the inputs given: an error naming the op, never a panic
//! inside a kernel (cases found by the fuzz tests).

use qcc_dialects::{SourceFile, parse_module};
use qcc_runtime::{Interpreter, Tensor, TensorData};

fn module(text: &str) -> qcc_dialects::Module {
    parse_module(&SourceFile::new("test.ir", text), None)
        .unwrap_or_else(|d| panic!("{}", d[0].message))
}

/// A reshape that folds the batch into another dimension, then a transpose and a matmul: at the
/// declared batch it runs; at batch 2 the matmul's operands no longer fit, which the shape rule
/// says before the kernel runs.
#[test]
fn an_op_that_cannot_take_the_batch_is_an_error_naming_it() {
    let m = module(
        r#"
func.func @main(%x: tensor<1x4x2x2xf32>) -> tensor<4x2xf32> {
  %r = nn.reshape(%x) {shape = [4, 4]} : (tensor<1x4x2x2xf32>) -> tensor<4x4xf32>
  %t = nn.transpose(%r) {perm = [1, 0]} : (tensor<4x4xf32>) -> tensor<4x4xf32>
  %w = nn.const {value = dense<1.0> : tensor<4x2xf32>} : tensor<4x2xf32>
  %mm = nn.matmul(%t, %w) : (tensor<4x4xf32>, tensor<4x2xf32>) -> tensor<4x2xf32>
  return %mm : tensor<4x2xf32>
}"#,
    );
    let interp = Interpreter::new(&m, "main").expect("prepares");
    let one = Tensor::from_f32(vec![1, 4, 2, 2], vec![1.0; 16]);
    assert_eq!(interp.run(&[one]).expect("runs").len(), 1);
    let two = Tensor::from_f32(vec![2, 4, 2, 2], vec![1.0; 32]);
    let e = interp.run(&[two]).expect_err("cannot run at batch 2");
    assert_eq!(e.op, "nn.matmul (%mm)", "{e}");
    assert!(e.message.contains("cannot run on inputs of shapes"), "{e}");
}

#[test]
fn a_scalar_input_runs() {
    let m = module(
        r#"
func.func @main(%x: tensor<f32>) -> tensor<f32> {
  %y = nn.relu(%x) : (tensor<f32>) -> tensor<f32>
  return %y : tensor<f32>
}"#,
    );
    let interp = Interpreter::new(&m, "main").expect("prepares");
    let x = Tensor::new(vec![], TensorData::F32(vec![-3.0])).expect("scalar");
    let y = interp.run(&[x]).expect("runs");
    assert_eq!(y[0].as_f32().expect("f32"), &[0.0]);
}
