//! `equalize` must keep the float function: random convolution chains (dense, depthwise and 1x1
//! layers, through ReLU, ReLU6 or nothing, channel ranges spread over four orders of magnitude)
//! compute the same before and after, within float rounding, with either objective, while their
//! channel ranges even out. Through ReLU6 the bound moves per channel with the scales (relu6=scale,
//! the default); relu6=skip leaves those pairs alone and relu6=relu replaces the ReLU6.

use qcc_dialects::{Module, SourceFile, Tensor, parse_module, print_module};
use qcc_passes::{PassContext, PassManager, parse_pipeline};
use qcc_runtime::Interpreter;
use qcc_tests::random_f32;

/// A dense literal of `shape` holding `values`.
fn dense(shape: &[usize], values: &[f32]) -> String {
    let body: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!(
        "dense<[{}]> : tensor<{}xf32>",
        body.join(", "),
        dims.join("x")
    )
}

/// Weights whose output channels have ranges spread over 10^-2 .. 10^2.
fn weights(shape: &[usize], seed: u64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let per = n / shape[0];
    let spread = random_f32(shape[0], seed + 1000);
    random_f32(n, seed)
        .iter()
        .enumerate()
        .map(|(i, v)| v * 10f32.powf(2.0 * spread[i / per]))
        .collect()
}

/// conv 3x3 (3 -> c) -> act -> depthwise 3x3 -> act -> conv 1x1 (c -> d) -> conv 1x1 (d -> 4)
/// -> act, on a 1x3x6x6 input, with `act` `nn.relu` or ReLU6.
fn chain(c: usize, d: usize, relu6: bool, seed: u64) -> Module {
    chain_with_bias(c, d, relu6, seed, 0.0)
}

/// [`chain`] with `shift` added to every bias.
fn chain_with_bias(c: usize, d: usize, relu6: bool, seed: u64, shift: f32) -> Module {
    let act = |x: &str, out: &str, ch: usize| {
        let ty = format!("tensor<1x{ch}x6x6xf32>");
        if relu6 {
            format!("    %{out} = nn.clip(%{x}) {{min = 0.0, max = 6.0}} : ({ty}) -> {ty}\n")
        } else {
            format!("    %{out} = nn.relu(%{x}) : ({ty}) -> {ty}\n")
        }
    };
    let layer = |name: &str, x: &str, cin: usize, cout: usize, k: usize, groups: usize, s: u64| {
        let wshape = [cout, cin / groups, k, k];
        let pad = k / 2;
        format!(
            "    %{name}_w = nn.const {{value = {w}}} : tensor<{cout}x{ci}x{k}x{k}xf32>\n    %{name}_b = nn.const {{value = {b}}} : tensor<{cout}xf32>\n    %{name} = nn.conv2d(%{x}, %{name}_w, %{name}_b) {{pads = [{pad}, {pad}, {pad}, {pad}], groups = {groups}}} : (tensor<1x{cin}x6x6xf32>, tensor<{cout}x{ci}x{k}x{k}xf32>, tensor<{cout}xf32>) -> tensor<1x{cout}x6x6xf32>\n",
            w = dense(&wshape, &weights(&wshape, s)),
            b = dense(
                &[cout],
                &random_f32(cout, s + 7)
                    .iter()
                    .map(|v| v + shift)
                    .collect::<Vec<_>>()
            ),
            ci = cin / groups,
        )
    };
    let mut text = String::from(
        "module {\n  func.func @main(%x: tensor<1x3x6x6xf32>) -> tensor<1x4x6x6xf32> {\n",
    );
    text += &layer("c1", "x", 3, c, 3, 1, seed);
    text += &act("c1", "a1", c);
    text += &layer("c2", "a1", c, c, 3, c, seed + 1);
    text += &act("c2", "a2", c);
    text += &layer("c3", "a2", c, d, 1, 1, seed + 2);
    text += &layer("c4", "c3", d, 4, 1, 1, seed + 3);
    text += &act("c4", "a4", 4);
    text += "    return %a4 : tensor<1x4x6x6xf32>\n  }\n}\n";
    parse_module(&SourceFile::new("chain.ir", text), None)
        .unwrap_or_else(|d| panic!("the chain parses: {}", d[0].message))
}

fn run(module: &Module, seed: u64) -> Vec<f32> {
    let x = Tensor::from_f32(vec![1, 3, 6, 6], random_f32(108, seed));
    Interpreter::new(module, "main")
        .expect("prepares")
        .run(&[x])
        .expect("runs")[0]
        .as_f32()
        .expect("f32")
        .to_vec()
}

/// Calibration inputs for objective=noise and absorb: the same distribution as the test inputs.
fn calibration() -> Tensor {
    Tensor::from_f32(vec![8, 3, 6, 6], random_f32(8 * 108, 4242))
}

fn equalize(module: &mut Module, pipeline: &str) {
    let calib = calibration();
    let mut ctx = PassContext {
        calib: Some(calib),
        ..PassContext::default()
    };
    PassManager::new(parse_pipeline(pipeline).expect("pipeline"))
        .run(module, &mut ctx, &mut |_, _| {})
        .unwrap_or_else(|e| panic!("{pipeline} failed in {}", e.location()));
}

/// Equalizes chains and checks that outputs stay within 1e-5 of the largest.
fn keeps_the_function(relu6: bool, pipeline: &str) {
    for (seed, (c, d)) in [
        (1u64, (5usize, 3usize)),
        (2, (8, 8)),
        (3, (1, 2)),
        (4, (7, 1)),
    ] {
        let mut m = chain(c, d, relu6, seed * 100);
        let before: Vec<Vec<f32>> = (0..3).map(|s| run(&m, s)).collect();
        let text = print_module(&m);
        equalize(&mut m, pipeline);
        assert_ne!(
            print_module(&m),
            text,
            "{pipeline}, seed {seed}: nothing was equalized"
        );
        if relu6 && c > 1 {
            assert!(
                print_module(&m).contains("channel_max"),
                "{pipeline}, seed {seed}: no ReLU6 bound was scaled"
            );
        }
        for (s, want) in before.iter().enumerate() {
            let got = run(&m, s as u64);
            let scale = want.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
            let worst = got
                .iter()
                .zip(want)
                .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
            assert!(
                worst <= 1e-5 * scale,
                "{pipeline}, seed {seed}, input {s}: differs by {worst} (largest output {scale})"
            );
        }
    }
}

#[test]
fn equalization_through_relu_keeps_the_float_function() {
    keeps_the_function(false, "equalize{objective=weights}");
    keeps_the_function(false, "equalize");
}

#[test]
fn equalization_through_relu6_keeps_the_float_function() {
    // The chains' outputs reach far above 6, so the scaled bounds are exercised.
    let m = chain(6, 4, true, 77);
    assert!(run(&m, 0).contains(&6.0), "the last ReLU6 clips");
    keeps_the_function(true, "equalize{objective=weights}");
    keeps_the_function(true, "equalize");
}

#[test]
fn relu6_pairs_can_be_left_alone_or_turned_into_relu() {
    let m = chain(6, 4, true, 77);
    let mut kept = m.clone();
    equalize(&mut kept, "equalize{objective=weights,relu6=skip}");
    // Only the linear 1x1 -> 1x1 pair moves; its function stays.
    let (a, b) = (run(&m, 0), run(&kept, 0));
    let scale = a.iter().fold(1e-6f32, |s, v| s.max(v.abs()));
    assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() <= 1e-5 * scale));
    assert!(!print_module(&kept).contains("channel_max"));
    assert_eq!(print_module(&kept).matches("nn.clip(").count(), 3);
    // With relu6=relu, the ReLU6 inside the two equalized pairs become ReLU; the last one,
    // after the chain, stays.
    let mut relu = m.clone();
    equalize(&mut relu, "equalize{objective=weights,relu6=relu}");
    assert_eq!(print_module(&m).matches("nn.clip(").count(), 3);
    assert_eq!(print_module(&relu).matches("nn.clip(").count(), 1);
}

#[test]
fn the_noise_objective_needs_calibration_inputs() {
    let mut m = chain(4, 4, false, 5);
    let err = PassManager::new(parse_pipeline("equalize").expect("pipeline"))
        .run(&mut m, &mut PassContext::default(), &mut |_, _| {})
        .expect_err("no calibration data");
    let message = &err.diagnostics[0].message;
    assert!(
        message.contains("need calibration inputs (--calib)"),
        "{message}"
    );
}

/// High-bias absorption keeps the float function on the calibration data (where every absorbed
/// channel stays above what it gave away), through ReLU and ReLU6, and moves bias out of the
/// depthwise layer into the 1x1 layer after it (the only pair whose second layer has no padding).
#[test]
fn absorption_keeps_the_function_on_the_calibration_data() {
    let calib = calibration();
    for relu6 in [false, true] {
        for seed in 1..4u64 {
            let mut m = chain_with_bias(6, 4, relu6, seed * 31, 3.0);
            let run_all = |m: &Module| -> Vec<f32> {
                Interpreter::new(m, "main")
                    .expect("prepares")
                    .run(std::slice::from_ref(&calib))
                    .expect("runs")[0]
                    .as_f32()
                    .expect("f32")
                    .to_vec()
            };
            let want = run_all(&m);
            let mut plain = m.clone();
            equalize(&mut plain, "equalize{objective=noise}");
            equalize(&mut m, "equalize{objective=noise,absorb=true}");
            assert_ne!(
                print_module(&m),
                print_module(&plain),
                "relu6 {relu6}, seed {seed}: nothing was absorbed"
            );
            let got = run_all(&m);
            let scale = want.iter().fold(1e-6f32, |a, v| a.max(v.abs()));
            let worst = got
                .iter()
                .zip(&want)
                .fold(0f32, |a, (p, q)| a.max((p - q).abs()));
            assert!(
                worst <= 1e-5 * scale,
                "relu6 {relu6}, seed {seed}: differs by {worst} (largest output {scale})"
            );
        }
    }
}
