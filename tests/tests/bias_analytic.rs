//! Data-free bias correction (`bias-correct-analytic`) against its closed form on a two-layer
//! network: a 1x1 convolution with a batch norm and a ReLU, then a 1x1 convolution. The second
//! layer's input means are those of a ReLU of normals with the batch norm's bias and scale
//! (`E[max(y, 0)] = m Phi(m / s) + s phi(m / s)`, computed here by numeric integration), and its
//! bias must drop by `round(sum_c e[o, c] E[x_c] / (S_x S_w[o]))` levels, `e` its weight rounding
//! error. The first layer reads the network input, whose means nothing records: it keeps its bias.

use qcc_dialects::{Module, NodeIndex, OpKind, SourceFile, Tensor, parse_module};
use qcc_passes::{PassContext, PassManager, parse_pipeline};
use qcc_runtime::quant::{channel_scales, per_tensor, stored_ints};
use qcc_tests::random_f32;

const NETWORK: &str = "
func.func @main(%x: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
  %wa = nn.const {value = dense<[[[[0.9]], [[-0.4]]], [[[0.25]], [[0.6]]]]> : tensor<2x2x1x1xf32>} : tensor<2x2x1x1xf32>
  %ba = nn.const {value = dense<[0.1, -0.2]> : tensor<2xf32>} : tensor<2xf32>
  %a = nn.conv2d(%x, %wa, %ba) : (tensor<1x2x4x4xf32>, tensor<2x2x1x1xf32>, tensor<2xf32>) -> tensor<1x2x4x4xf32>
  %gamma = nn.const {value = dense<[1.0, 2.0]> : tensor<2xf32>} : tensor<2xf32>
  %beta = nn.const {value = dense<[0.5, -1.0]> : tensor<2xf32>} : tensor<2xf32>
  %mean = nn.const {value = dense<[0.0, 0.1]> : tensor<2xf32>} : tensor<2xf32>
  %var = nn.const {value = dense<[1.0, 0.5]> : tensor<2xf32>} : tensor<2xf32>
  %n = nn.batch_norm(%a, %gamma, %beta, %mean, %var) : (tensor<1x2x4x4xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x4x4xf32>
  %r = nn.relu(%n) : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
  %wb = nn.const {value = dense<[[[[0.3]], [[-0.77]]], [[[0.013]], [[0.51]]]]> : tensor<2x2x1x1xf32>} : tensor<2x2x1x1xf32>
  %bb = nn.const {value = dense<[0.05, 0.2]> : tensor<2xf32>} : tensor<2xf32>
  %b = nn.conv2d(%r, %wb, %bb) : (tensor<1x2x4x4xf32>, tensor<2x2x1x1xf32>, tensor<2xf32>) -> tensor<1x2x4x4xf32>
  return %b : tensor<1x2x4x4xf32>
}
";

fn compile(pipeline: &str) -> Module {
    let mut m = parse_module(&SourceFile::new("two_layers.ir", NETWORK.to_string()), None)
        .unwrap_or_else(|d| panic!("parses: {}", d[0].message));
    let mut ctx = PassContext {
        calib: Some(Tensor::from_f32(vec![8, 2, 4, 4], random_f32(256, 11))),
        ..PassContext::default()
    };
    PassManager::new(parse_pipeline(pipeline).expect("pipeline"))
        .run(&mut m, &mut ctx, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("{pipeline}: {}: {}", e.location(), e.diagnostics[0].message));
    m
}

/// The integer layers in order, with their operand constants.
fn layers(m: &Module) -> Vec<NodeIndex> {
    let f = m.function("main").expect("main");
    f.schedule()
        .into_iter()
        .filter(|n| f.is_op(*n, OpKind::QuantConv2d))
        .collect()
}

fn constant(m: &Module, node: NodeIndex, i: usize) -> Tensor {
    let f = m.function("main").expect("main");
    let v = f.operands(node)[i];
    m.const_value(f.op(v.node)).expect("constant").into_owned()
}

/// `E[max(y, 0)]` for `y ~ N(m, s^2)`, by the midpoint rule.
fn relu_mean(m: f64, s: f64) -> f64 {
    let n = 200_000;
    let (from, to) = (m - 12.0 * s, m + 12.0 * s);
    let dx = (to - from) / n as f64;
    (0..n)
        .map(|i| {
            let y = from + (i as f64 + 0.5) * dx;
            let p = (-(y - m) * (y - m) / (2.0 * s * s)).exp()
                / (2.0 * std::f64::consts::PI).sqrt()
                / s;
            y.max(0.0) * p * dx
        })
        .sum()
}

#[test]
fn the_correction_is_the_weight_error_times_the_batch_norm_means() {
    let plain = compile("fold-batchnorm,quantize{granularity=per-tensor}");
    let corrected =
        compile("fold-batchnorm,quantize{granularity=per-tensor},bias-correct-analytic");
    let (lp, lc) = (layers(&plain), layers(&corrected));
    assert_eq!(lp.len(), 2);
    // The first layer reads the network input: no means, no correction.
    assert_eq!(
        stored_ints(&constant(&plain, lp[0], 2)),
        stored_ints(&constant(&corrected, lc[0], 2))
    );
    // The second: its input is ReLU(N(beta, gamma^2)) per channel.
    let means = [relu_mean(0.5, 1.0), relu_mean(-1.0, 2.0)];
    let float_w = [[0.3f64, -0.77], [0.013, 0.51]];
    let f = plain.function("main").expect("main");
    let ops = f.operands(lp[1]);
    let (sx, _, _) = per_tensor(f.value_type(ops[0])).expect("per-tensor input");
    let sw = channel_scales(f.value_type(ops[1]), 2).expect("weight scales");
    let wq = stored_ints(&constant(&plain, lp[1], 1));
    let before = stored_ints(&constant(&plain, lp[1], 2));
    let after = stored_ints(&constant(&corrected, lc[1], 2));
    for o in 0..2 {
        let shift: f64 = (0..2)
            .map(|c| (f64::from(wq[2 * o + c]) * sw[o] - float_w[o][c]) * means[c])
            .sum();
        let want = i64::from(before[o]) - (shift / (sx * sw[o])).round() as i64;
        assert_eq!(i64::from(after[o]), want, "channel {o}: shift {shift}");
    }
    assert_ne!(
        before, after,
        "the rounding errors shift nothing by a whole level"
    );
}

#[test]
fn a_network_without_batch_norm_statistics_is_an_error() {
    let mut m =
        parse_module(&SourceFile::new("two_layers.ir", NETWORK.to_string()), None).expect("parses");
    let mut ctx = PassContext {
        calib: Some(Tensor::from_f32(vec![8, 2, 4, 4], random_f32(256, 11))),
        ..PassContext::default()
    };
    // Folded by hand first: the layers carry no statistics.
    let plain = "fold-batchnorm";
    PassManager::new(parse_pipeline(plain).expect("pipeline"))
        .run(&mut m, &mut ctx, &mut |_, _| {})
        .expect("folds");
    let func = m
        .functions
        .iter_mut()
        .find(|f| f.name == "main")
        .expect("main");
    for n in func.op_nodes() {
        let attrs = &mut func.op_mut(n).attrs;
        attrs.remove("channel_mean");
        attrs.remove("channel_std");
    }
    let err = PassManager::new(
        parse_pipeline("quantize{granularity=per-tensor},bias-correct-analytic").expect("pipeline"),
    )
    .run(&mut m, &mut ctx, &mut |_, _| {})
    .expect_err("nothing to correct from");
    assert!(
        err.diagnostics[0].message.contains("batch-norm statistics"),
        "{}",
        err.diagnostics[0].message
    );
}

/// `quantize{calibration=batchnorm}` needs no inputs: the first layer's output range is its
/// batch norm's `beta_c +- 6 gamma_c` over both channels, [0.5 - 6, 0.5 + 6] and
/// [-1 - 12, -1 + 12], so [-13, 11], which the ReLU cuts to [0, 11]: scale 11 / 255, zero point
/// 0. Without recorded preprocessing the input's range is unknown, which is an error.
#[test]
fn batch_norm_statistics_give_the_ranges_without_inputs() {
    let pipeline = "fold-batchnorm,quantize{granularity=per-tensor,calibration=batchnorm},bias-correct-analytic";
    let run = |text: &str| -> Result<Module, String> {
        let mut m = parse_module(&SourceFile::new("two_layers.ir", text.to_string()), None)
            .unwrap_or_else(|d| panic!("parses: {}", d[0].message));
        PassManager::new(parse_pipeline(pipeline).expect("pipeline"))
            .run(&mut m, &mut PassContext::default(), &mut |_, _| {})
            .map_err(|e| e.diagnostics[0].message.clone())?;
        Ok(m)
    };
    let err = run(NETWORK).expect_err("no preprocessing recorded");
    assert!(err.contains("records no preprocessing"), "{err}");
    let with_preprocessing = format!(
        "module attributes {{preprocess.crop = 4, preprocess.mean = [0.5, 0.5, 0.5], preprocess.std = [0.5, 0.5, 0.5]}} {{{NETWORK}}}"
    );
    let m = run(&with_preprocessing).unwrap_or_else(|e| panic!("{e}"));
    let f = m.function("main").expect("main");
    let first = layers(&m)[0];
    let (scale, zp, _) = per_tensor(&f.op(first).results[0]).expect("per-tensor output");
    assert_eq!((scale, zp), (f64::from(11.0f32 / 255.0), 0));
    // The input: tf preprocessing, [-1, 1]; 1 / S is just under 127.5 with S = f32(2 / 255).
    let quantize = f
        .schedule()
        .into_iter()
        .find(|n| f.is_op(*n, OpKind::Quantize))
        .expect("the input is quantized");
    let (scale, zp, _) = per_tensor(&f.op(quantize).results[0]).expect("per-tensor input");
    assert_eq!((scale, zp), (f64::from(2.0f32 / 255.0), 127));
}
