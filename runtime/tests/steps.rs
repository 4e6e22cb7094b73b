//! Stepping a function op by op: a caller's replacement and provided outputs flow to later ops, and
//! ops that write into their input's buffer never overwrite a value another op still reads.

use qcc_dialects::{SourceFile, Value, parse_module};
use qcc_runtime::{Engine, Reference, Tensor};

fn module(text: &str) -> qcc_dialects::Module {
    parse_module(&SourceFile::new("test.ir", text), None)
        .unwrap_or_else(|d| panic!("{}", d[0].message))
}

const CHAIN: &str = r#"
func.func @main(%x: tensor<1x4xf32>) -> tensor<1x4xf32> {
  %a = nn.relu(%x) : (tensor<1x4xf32>) -> tensor<1x4xf32>
  %b = nn.clip(%a) {min = 0.0, max = 1.0} : (tensor<1x4xf32>) -> tensor<1x4xf32>
  %c = nn.add(%a, %b) : (tensor<1x4xf32>, tensor<1x4xf32>) -> tensor<1x4xf32>
  %d = nn.clip(%c) {min = 0.0, max = 2.5} : (tensor<1x4xf32>) -> tensor<1x4xf32>
  return %d : tensor<1x4xf32>
}"#;

fn input() -> Tensor {
    Tensor::from_f32(vec![1, 4], vec![-1.0, 0.5, 2.0, 3.0])
}

/// `%b` clips `%a`, which `%c` reads afterwards: the clip must not write into `%a`'s buffer.
/// `%d` is `%c`'s last reader and may.
#[test]
fn ops_run_in_place_only_on_values_nobody_reads_later() {
    let m = module(CHAIN);
    let prepared = Reference.prepare(&m, "main").expect("prepares");
    let out = prepared.run(&[input()]).expect("runs");
    // a = [0, .5, 2, 3], b = [0, .5, 1, 1], c = [0, 1, 3, 4], d = [0, 1, 2.5, 2.5]
    assert_eq!(out[0].as_f32().expect("f32"), &[0.0, 1.0, 2.5, 2.5]);
}

#[test]
fn provided_and_replaced_values_reach_later_ops() {
    let m = module(CHAIN);
    let func = m.function("main").expect("@main");
    let prepared = Reference.prepare(&m, "main").expect("prepares");
    let mut steps = prepared.steps(&[input()]).expect("starts");
    let a = steps.step().expect("relu runs").expect("an op ran");
    assert_eq!(
        steps.value(Value::of(a)).and_then(Tensor::as_f32),
        Some(&[0.0, 0.5, 2.0, 3.0][..])
    );
    // The caller computes the clip itself.
    let b = steps.next_node().expect("clip is next");
    assert_eq!(func.op(b).name, "nn.clip");
    steps.provide(Tensor::from_f32(vec![1, 4], vec![1.0; 4]));
    // ... and replaces %a before the add reads it.
    steps.replace(Value::of(a), Tensor::from_f32(vec![1, 4], vec![0.25; 4]));
    steps.finish().expect("finishes");
    // c = 0.25 + 1, d = clip(c)
    assert_eq!(steps.results()[0].as_f32().expect("f32"), &[1.25; 4]);
}

/// An op evaluated once more, on values a caller kept, gives what the run computed; an operand
/// nobody gives is an error naming the op.
#[test]
fn an_op_evaluated_again_gives_what_the_run_computed() {
    let m = module(CHAIN);
    let prepared = Reference.prepare(&m, "main").expect("prepares");
    let mut steps = prepared.steps(&[input()]).expect("starts");
    let a = steps.step().expect("relu runs").expect("an op ran");
    let b = steps.step().expect("clip runs").expect("an op ran");
    let kept: std::collections::HashMap<Value, Tensor> = [a, b]
        .iter()
        .map(|n| {
            (
                Value::of(*n),
                steps.value(Value::of(*n)).expect("live").clone(),
            )
        })
        .collect();
    let c = steps.step().expect("add runs").expect("an op ran");
    let again = prepared.evaluate(c, &kept).expect("evaluates");
    assert_eq!(Some(&again), steps.value(Value::of(c)));
    let err = prepared
        .evaluate(c, &std::collections::HashMap::new())
        .expect_err("no operands");
    assert!(err.contains("nn.add") && err.contains("not given"), "{err}");
}

/// A 1x1 convolution (`%y = x0 + x1` per pixel, in both channels) read by a clip alone, and one
/// read by a clip and an add. A plain run applies the first clip inside its convolution; the
/// second convolution's value must reach the add unclipped.
const CONV_CLIP: &str = r#"
func.func @main(%x: tensor<1x2x1x3xf32>) -> tensor<1x2x1x3xf32> {
  %w = nn.const {value = dense<1.0> : tensor<2x2x1x1xf32>} : tensor<2x2x1x1xf32>
  %y = nn.conv2d(%x, %w) {strides = [1, 1], pads = [0, 0, 0, 0], dilations = [1, 1], groups = 1} : (tensor<1x2x1x3xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x1x3xf32>
  %a = nn.clip(%y) {min = 0.0, max = 1.5} : (tensor<1x2x1x3xf32>) -> tensor<1x2x1x3xf32>
  %z = nn.conv2d(%a, %w) {strides = [1, 1], pads = [0, 0, 0, 0], dilations = [1, 1], groups = 1} : (tensor<1x2x1x3xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x1x3xf32>
  %b = nn.clip(%z) {min = 0.0, max = 2.0} : (tensor<1x2x1x3xf32>) -> tensor<1x2x1x3xf32>
  %s = nn.add(%b, %z) : (tensor<1x2x1x3xf32>, tensor<1x2x1x3xf32>) -> tensor<1x2x1x3xf32>
  return %s : tensor<1x2x1x3xf32>
}"#;

#[test]
fn an_activation_fuses_into_a_convolution_only_when_it_is_the_only_reader() {
    let m = module(CONV_CLIP);
    let prepared = Reference.prepare(&m, "main").expect("prepares");
    let x = Tensor::from_f32(vec![1, 2, 1, 3], vec![-1.0, 0.5, 2.0, 0.5, 0.5, 3.0]);
    // y = [-0.5, 1, 5], a = [0, 1, 1.5], z = [0, 2, 3], b = [0, 2, 2], s = b + z = [0, 4, 5]
    let want = [0.0, 4.0, 5.0, 0.0, 4.0, 5.0];
    let plain = prepared.run(std::slice::from_ref(&x)).expect("runs");
    assert_eq!(plain[0].as_f32().expect("f32"), &want);
    let mut seen = Vec::new();
    let observed = prepared
        .run_observed(&[x], &mut |_, op, t| {
            seen.push((op.name.clone(), t.as_f32().map(<[f32]>::to_vec)))
        })
        .expect("runs");
    assert_eq!(observed[0].as_f32().expect("f32"), &want);
    // The observer sees the convolution's own output, before the clip.
    let first_conv = seen.iter().find(|(name, _)| name == "nn.conv2d");
    let unclipped = [-0.5, 1.0, 5.0, -0.5, 1.0, 5.0].to_vec();
    assert_eq!(first_conv.and_then(|(_, v)| v.clone()), Some(unclipped));
}

/// Plain steps run as a plain run does: the first clip is applied by its convolution (which the
/// engine names), the second is an op of its own; the results are the plain run's.
#[test]
fn plain_steps_name_the_convolution_that_applies_an_activation() {
    let m = module(CONV_CLIP);
    let prepared = Reference.prepare(&m, "main").expect("prepares");
    let x = Tensor::from_f32(vec![1, 2, 1, 3], vec![-1.0, 0.5, 2.0, 0.5, 0.5, 3.0]);
    let mut steps = prepared
        .plain_steps(std::slice::from_ref(&x))
        .expect("starts");
    let mut ran = Vec::new();
    while let Some(node) = steps.step().expect("steps") {
        ran.push(node);
    }
    assert_eq!(
        steps.results()[0].as_f32().expect("f32"),
        &[0.0, 4.0, 5.0, 0.0, 4.0, 5.0]
    );
    let func = prepared.function();
    let named = |name: &str| {
        *ran.iter()
            .find(|n| {
                func.op(**n)
                    .result_names
                    .first()
                    .cloned()
                    .flatten()
                    .as_deref()
                    == Some(name)
            })
            .unwrap_or_else(|| panic!("no %{name}"))
    };
    assert_eq!(prepared.fused_into(named("a")), Some(named("y")));
    assert_eq!(prepared.fused_into(named("b")), None, "%z has two readers");
    assert_eq!(prepared.fused_into(named("y")), None);
}
