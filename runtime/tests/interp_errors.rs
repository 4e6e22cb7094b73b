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

/// A run whose values cannot fit in any machine's memory (a pad to 32768 x 32768 floats, 4 GiB
/// per item, at a batch of 1024): refused up front with the size its arena needs and a hint
/// about the batch, before any allocation; every engine runs through this interpreter.
#[test]
fn a_run_that_cannot_fit_in_memory_says_how_much_it_needs() {
    let m = module(
        r#"
func.func @main(%x: tensor<1x1x1x1xf32>) -> tensor<1x1x32768x32768xf32> {
  %p = nn.pad(%x) {pads = [0, 0, 0, 0, 0, 0, 32767, 32767], value = 0.0} : (tensor<1x1x1x1xf32>) -> tensor<1x1x32768x32768xf32>
  return %p : tensor<1x1x32768x32768xf32>
}"#,
    );
    if qcc_runtime::plan::available_memory().is_none() {
        return; // no MemAvailable to compare with (not Linux)
    }
    let interp = Interpreter::new(&m, "main").expect("prepares");
    let x = Tensor::from_f32(vec![1024, 1, 1, 1], vec![1.0; 1024]);
    let e = interp.run(&[x]).expect_err("4 TiB do not fit");
    assert_eq!(e.op, "@main", "{e}");
    assert!(e.message.contains("need 4.0 TiB at batch 1024"), "{e}");
    assert!(
        e.message.contains("a smaller --batch-size needs less"),
        "{e}"
    );
}

#[test]
fn sizes_read_in_binary_units() {
    use qcc_runtime::plan::bytes_text;
    assert_eq!(bytes_text(0), "0 bytes");
    assert_eq!(bytes_text(1023), "1023 bytes");
    assert_eq!(bytes_text(1536), "1.5 KiB");
    assert_eq!(bytes_text(3 << 30), "3.0 GiB");
    assert_eq!(bytes_text(usize::MAX), "16.0 EiB");
}
