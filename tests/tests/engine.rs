//! The Cranelift engine against the reference interpreter on random small integer networks: every
//! output level and every layer's accumulators must be identical, and an input one engine
//! refuses the other must refuse too.
//!
//! Each case quantizes its input (sometimes with NaN, infinities and huge values in it), runs a
//! chain of one to three `quant.conv2d` layers, some followed by a `quant.add` (residual or of the
//! layer with itself), and dequantizes the result. The layers have odd channel counts, 1x1 to 9x9
//! inputs, kernels up to 3x3 and 5x5, strides and dilations 1 and 2, asymmetric pads, plain,
//! grouped and depthwise, per-tensor and per-channel weights, input zero points 0, 255 and in
//! between, u8 and i8 outputs, fused clamps, biases small and near the i32 limits, output scales
//! that give multipliers above 1, all scales powers of two (exact ties) in one network of four,
//! optionally followed by a max or average pooling of any geometry (`pool_window`), a
//! `quant.concat` with the quantized input or with itself, a `quant.global_avg_pool`, and
//! `nn.flatten` and a `quant.dense`, at batch 1, 2 or 5. Cases are generated from a proptest seed; `PROPTEST_CASES` sets how many.

use std::collections::HashMap;
use std::fmt::Write;

use proptest::prelude::*;
use qcc_codegen::Native;
use qcc_dialects::{Module, NodeIndex, SourceFile, Tensor, parse_module};
use qcc_runtime::{Engine, Reference};

/// A small deterministic generator (xorshift64*), seeded by proptest. In one network of four
/// every scale is a power of two, so the layers' requantization lands on exact ties (which the
/// rounding rule decides) on many outputs.
struct Rng {
    state: u64,
    binary: bool,
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut rng = Rng {
            state: seed | 1,
            binary: false,
        };
        rng.binary = rng.chance(4);
        rng
    }
    fn next(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    fn scale(&mut self, lo: f64, hi: f64) -> f64 {
        // Log-uniform, rounded to 4 significant digits so the IR text is exact.
        let u = self.below(1 << 20) as f64 / f64::from(1 << 20);
        let v = (lo.ln() + u * (hi.ln() - lo.ln())).exp();
        if self.binary {
            return v.log2().round().exp2();
        }
        format!("{v:.3e}").parse().unwrap()
    }
}

/// A random convolution window over an `h` x `w` input: kernels 1 to 3 (now and then 5), strides
/// and dilations 1 and 2, pads 0 to 2 on each side (more where the window would not fit).
struct Window {
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pads: [usize; 4],
    output: [usize; 2],
}

impl Window {
    fn random(rng: &mut Rng, h: usize, w: usize) -> Window {
        let k = |rng: &mut Rng| {
            if rng.chance(8) {
                5
            } else {
                rng.range(1, 3) as usize
            }
        };
        let kernel = [k(rng), k(rng)];
        let strides = [rng.range(1, 2) as usize, rng.range(1, 2) as usize];
        let dilations = [(); 2].map(|_| if rng.chance(4) { 2 } else { 1 });
        let mut pads = [0usize; 4];
        for p in &mut pads {
            *p = rng.range(0, 2) as usize;
        }
        let span = |axis: usize| dilations[axis] * (kernel[axis] - 1) + 1;
        while h + pads[0] + pads[2] < span(0) {
            pads[2] += 1;
        }
        while w + pads[1] + pads[3] < span(1) {
            pads[3] += 1;
        }
        let output = [
            (h + pads[0] + pads[2] - span(0)) / strides[0] + 1,
            (w + pads[1] + pads[3] - span(1)) / strides[1] + 1,
        ];
        Window {
            kernel,
            strides,
            dilations,
            pads,
            output,
        }
    }
}

/// A quantized activation type: storage, scale, zero point.
#[derive(Clone, Copy)]
struct Act {
    signed: bool,
    scale: f64,
    zp: i64,
}

impl Act {
    fn random(rng: &mut Rng) -> Act {
        let signed = rng.chance(4);
        let zp = match rng.below(4) {
            0 => {
                if signed {
                    -128
                } else {
                    0
                }
            }
            1 => {
                if signed {
                    127
                } else {
                    255
                }
            }
            _ => {
                if signed {
                    rng.range(-128, 127)
                } else {
                    rng.range(0, 255)
                }
            }
        };
        Act {
            signed,
            scale: rng.scale(0.002, 0.2),
            zp,
        }
    }
    fn ty(&self, shape: &[usize]) -> String {
        let storage = if self.signed { "i8" } else { "u8" };
        format!(
            "tensor<{}x!quant.uniform<{storage}:f32, {:e}:{}>>",
            dims(shape),
            self.scale,
            self.zp
        )
    }
    fn range(&self) -> (i64, i64) {
        if self.signed { (-128, 127) } else { (0, 255) }
    }
}

fn dims(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// `values` of `shape` as a nested dense literal.
fn nested(values: &[i64], shape: &[usize]) -> String {
    if shape.len() <= 1 {
        let items: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        return format!("[{}]", items.join(", "));
    }
    let inner: usize = shape[1..].iter().product();
    let parts: Vec<String> = values
        .chunks(inner.max(1))
        .map(|c| nested(c, &shape[1..]))
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Weight type: per tensor or per output channel.
fn weight_type(rng: &mut Rng, shape: &[usize]) -> String {
    if rng.chance(2) {
        format!(
            "tensor<{}x!quant.uniform<i8:f32, {:e}:0>>",
            dims(shape),
            rng.scale(0.001, 0.05)
        )
    } else {
        let scales: Vec<String> = (0..shape[0])
            .map(|_| format!("{:e}", rng.scale(0.001, 0.05)))
            .collect();
        format!(
            "tensor<{}x!quant.uniform<i8:f32:0, {{{}}}>>",
            dims(shape),
            scales.join(", ")
        )
    }
}

fn weights(rng: &mut Rng, n: usize, channel: usize) -> Vec<i64> {
    let dead = rng
        .chance(5)
        .then(|| rng.below(n.div_ceil(channel) as u64) as usize);
    (0..n)
        .map(|i| {
            if Some(i / channel.max(1)) == dead {
                0
            } else if rng.chance(8) {
                // -128 too: imported models use the full i8 range.
                [127, -127, -128][rng.below(3) as usize]
            } else {
                rng.range(-127, 127)
            }
        })
        .collect()
}

fn bias(rng: &mut Rng, n: usize) -> Vec<i64> {
    let large = rng.chance(8);
    (0..n)
        .map(|_| {
            if large {
                rng.range(-2_147_483_000, 2_147_483_000)
            } else {
                rng.range(-5000, 5000)
            }
        })
        .collect()
}

/// An output type and its optional clamp attribute; a layer (`channels` given) may also get
/// per-channel upper bounds within the clamp.
fn output(rng: &mut Rng, channels: Option<usize>) -> (Act, String) {
    let mut act = Act::random(rng);
    if rng.chance(10) {
        act.scale = rng.scale(1e-6, 1e-4); // multipliers above 1
    }
    let (lo, hi) = act.range();
    let (bottom, top) = match rng.below(3) {
        0 => (act.zp, hi),
        1 => (rng.range(lo, act.zp), rng.range(act.zp, hi)),
        _ => (lo, hi),
    };
    let mut clamp = if (bottom, top) == (lo, hi) {
        String::new()
    } else {
        format!(", clamp = [{bottom}, {top}]")
    };
    if let Some(c) = channels
        && rng.chance(4)
    {
        let bounds: Vec<String> = (0..c).map(|_| rng.range(bottom, top).to_string()).collect();
        clamp += &format!(", channel_max = [{}]", bounds.join(", "));
    }
    (act, clamp)
}

/// A random network as IR text and its input.
fn network(seed: u64) -> (String, Tensor) {
    let mut rng = Rng::new(seed);
    // Now and then a batch of five, where a dense layer runs as the GEMM instead of
    // matrix-vector products.
    let n = if rng.chance(8) {
        5
    } else {
        rng.range(1, 2) as usize
    };
    let mut c = rng.range(1, 7) as usize;
    let (mut h, mut w) = (rng.range(1, 9) as usize, rng.range(1, 9) as usize);
    let input = [n, c, h, w];
    let mut act = Act::random(&mut rng);
    let quantized = (act, c, h, w);
    let mut body = String::new();
    let x_ty = format!("tensor<{}xf32>", dims(&input));
    let mut cur = "%q".to_string();
    writeln!(
        body,
        "    %q = quant.quantize(%x) : ({x_ty}) -> {}",
        act.ty(&input)
    )
    .unwrap();
    for layer in 0..rng.range(1, 3) {
        let input = cur.clone();
        let kind = rng.below(3);
        let groups = match kind {
            0 if c > 1 => c,
            1 if c.is_multiple_of(2) => 2,
            _ => 1,
        };
        let og = if groups == c && c > 1 && !rng.chance(4) {
            1
        } else {
            rng.range(1, 5) as usize
        };
        let o = groups * og;
        let Window {
            kernel: [kh, kw],
            strides,
            dilations: dil,
            pads,
            output: [oh, ow],
        } = Window::random(&mut rng, h, w);
        let wshape = [o, c / groups, kh, kw];
        let wn: usize = wshape.iter().product();
        let w_ty = weight_type(&mut rng, &wshape);
        let wv = weights(&mut rng, wn, wn / o);
        writeln!(
            body,
            "    %w{layer} = nn.const {{value = dense<{}> : {w_ty}}} : {w_ty}",
            nested(&wv, &wshape)
        )
        .unwrap();
        let has_bias = !rng.chance(5);
        if has_bias {
            writeln!(
                body,
                "    %b{layer} = nn.const {{value = dense<{}> : tensor<{o}xi32>}} : tensor<{o}xi32>",
                nested(&bias(&mut rng, o), &[o])
            )
            .unwrap();
        }
        let out_shape = [n, o, oh, ow];
        let (out, clamp) = output(&mut rng, Some(o));
        let operands = if has_bias {
            format!("{cur}, %w{layer}, %b{layer}")
        } else {
            format!("{cur}, %w{layer}")
        };
        let types = if has_bias {
            format!("{}, {w_ty}, tensor<{o}xi32>", act.ty(&[n, c, h, w]))
        } else {
            format!("{}, {w_ty}", act.ty(&[n, c, h, w]))
        };
        writeln!(
            body,
            "    %c{layer} = quant.conv2d({operands}) {{strides = [{}, {}], pads = [{}, {}, {}, {}], dilations = [{}, {}], groups = {groups}{clamp}}} : ({types}) -> {}",
            strides[0], strides[1], pads[0], pads[1], pads[2], pads[3], dil[0], dil[1],
            out.ty(&out_shape)
        )
        .unwrap();
        cur = format!("%c{layer}");
        // A residual add where the shapes allow it, else the output added to itself.
        if rng.chance(2) {
            let other = if [o, oh, ow] == [c, h, w] {
                input
            } else {
                cur.clone()
            };
            let other_ty = if other == cur {
                out.ty(&out_shape)
            } else {
                act.ty(&out_shape)
            };
            let (sum, clamp) = output(&mut rng, None);
            writeln!(
                body,
                "    %s{layer} = quant.add({cur}, {other}) {{{}}} : ({}, {other_ty}) -> {}",
                clamp.trim_start_matches(", "),
                out.ty(&out_shape),
                sum.ty(&out_shape)
            )
            .unwrap();
            cur = format!("%s{layer}");
            (act, c, h, w) = (sum, o, oh, ow);
            continue;
        }
        (act, c, h, w) = (out, o, oh, ow);
    }
    if rng.chance(3) {
        let (out, shape) = pool(&mut rng, &mut body, &cur, act, [n, c, h, w]);
        (cur, act, h, w) = ("%p".into(), out, shape[0], shape[1]);
    }
    if rng.chance(3) {
        let (out, shape) = concat(&mut rng, &mut body, &cur, act, [n, c, h, w], quantized);
        (cur, act, c, h, w) = ("%k".into(), out, shape[1], shape[2], shape[3]);
    }
    if rng.chance(3) {
        let (out, _) = output(&mut rng, None);
        writeln!(
            body,
            "    %g = quant.global_avg_pool({cur}) : ({}) -> {}",
            act.ty(&[n, c, h, w]),
            out.ty(&[n, c, 1, 1])
        )
        .unwrap();
        cur = "%g".into();
        act = out;
        (h, w) = (1, 1);
    }
    let mut result_shape = vec![n, c, h, w];
    if rng.chance(2) {
        let k = c * h * w;
        let m = rng.range(1, 9) as usize;
        writeln!(
            body,
            "    %f = nn.flatten({cur}) : ({}) -> {}",
            act.ty(&[n, c, h, w]),
            act.ty(&[n, k])
        )
        .unwrap();
        let w_ty = weight_type(&mut rng, &[m, k]);
        let wv = weights(&mut rng, m * k, k);
        writeln!(
            body,
            "    %wd = nn.const {{value = dense<{}> : {w_ty}}} : {w_ty}",
            nested(&wv, &[m, k])
        )
        .unwrap();
        writeln!(
            body,
            "    %bd = nn.const {{value = dense<{}> : tensor<{m}xi32>}} : tensor<{m}xi32>",
            nested(&bias(&mut rng, m), &[m])
        )
        .unwrap();
        let (out, clamp) = output(&mut rng, Some(m));
        writeln!(
            body,
            "    %d = quant.dense(%f, %wd, %bd) {{{}}} : ({}, {w_ty}, tensor<{m}xi32>) -> {}",
            clamp.trim_start_matches(", "),
            act.ty(&[n, k]),
            out.ty(&[n, m])
        )
        .unwrap();
        cur = "%d".into();
        act = out;
        result_shape = vec![n, m];
    }
    let f_ty = format!("tensor<{}xf32>", dims(&result_shape));
    writeln!(
        body,
        "    %y = quant.dequantize({cur}) : ({}) -> {f_ty}",
        act.ty(&result_shape)
    )
    .unwrap();
    writeln!(body, "    return %y : {f_ty}").unwrap();
    let text =
        format!("module @random {{\n  func.func @main(%x: {x_ty}) -> {f_ty} {{\n{body}  }}\n}}\n");
    let len: usize = input.iter().product();
    let hostile = rng.chance(8);
    let data: Vec<f32> = (0..len)
        .map(|_| {
            if hostile && rng.chance(6) {
                [
                    f32::NAN,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    1e12,
                    -1e12,
                    0.5,
                    -2.5,
                ][rng.below(7) as usize]
            } else {
                (rng.below(4001) as f32 - 2000.0) / 1000.0
            }
        })
        .collect();
    (text, Tensor::from_f32(input.to_vec(), data))
}

/// A random pooling window over `x` (`[N, C, H, W]`): kernels 1 to 3 (now and then 5), strides 1
/// to 3, dilations 1 and 2 (max), pads up to the kernel's size less one (now and then more), ceil
/// mode and `count_include_pad` both ways. Returns the op's name (`max_pool2d` or `avg_pool2d`),
/// its attributes and its output's height and width.
fn pool_window(rng: &mut Rng, x: [usize; 4]) -> (&'static str, String, [usize; 2]) {
    let max = rng.chance(2);
    let k = |rng: &mut Rng| {
        if rng.chance(8) {
            5
        } else {
            rng.range(1, 3) as usize
        }
    };
    let kernel = [k(rng), k(rng)];
    let strides = [(); 2].map(|_| rng.range(1, 3) as usize);
    let dilations = [(); 2].map(|_| if max && rng.chance(4) { 2 } else { 1 });
    let mut pads = [0usize; 4];
    for (i, p) in pads.iter_mut().enumerate() {
        let most = if rng.chance(10) { 2 } else { kernel[i % 2] - 1 };
        *p = rng.range(0, most as i64) as usize;
    }
    let span = |axis: usize| dilations[axis] * (kernel[axis] - 1) + 1;
    while x[2] + pads[0] + pads[2] < span(0) {
        pads[2] += 1;
    }
    while x[3] + pads[1] + pads[3] < span(1) {
        pads[3] += 1;
    }
    let ceil = rng.chance(3);
    let window = qcc_dialects::ops::attrs::Window {
        strides,
        pads,
        dilations,
    };
    let (oh, ow) = window
        .output(x[2], x[3], kernel[0], kernel[1], ceil)
        .expect("the pads make the window fit");
    let mut attrs = format!(
        "kernel = [{}, {}], strides = [{}, {}], pads = [{}, {}, {}, {}], ceil_mode = {ceil}",
        kernel[0], kernel[1], strides[0], strides[1], pads[0], pads[1], pads[2], pads[3]
    );
    if max {
        write!(attrs, ", dilations = [{}, {}]", dilations[0], dilations[1]).unwrap();
    } else {
        write!(attrs, ", count_include_pad = {}", rng.chance(2)).unwrap();
    }
    let op = if max { "max_pool2d" } else { "avg_pool2d" };
    (op, attrs, [oh, ow])
}

/// Appends `%p`, a `quant.max_pool2d` or `quant.avg_pool2d` (`pool_window`) of `cur` (type `act`,
/// shape `x`). Returns the result's type and spatial size.
fn pool(rng: &mut Rng, body: &mut String, cur: &str, act: Act, x: [usize; 4]) -> (Act, [usize; 2]) {
    let (op, attrs, [oh, ow]) = pool_window(rng, x);
    let out = if op == "max_pool2d" {
        act
    } else {
        Act::random(rng)
    };
    writeln!(
        body,
        "    %p = quant.{op}({cur}) {{{attrs}}} : ({}) -> {}",
        act.ty(&x),
        out.ty(&[x[0], x[1], oh, ow])
    )
    .unwrap();
    (out, [oh, ow])
}

/// Appends `%k`, a `quant.concat` of `cur` (type `act`, shape `x`) with the network's quantized
/// input where the spatial sizes match (else with itself, along any axis but the batch's), into
/// a random type (now and then `act`'s own, whose levels are copied). Returns the result's type
/// and shape.
fn concat(
    rng: &mut Rng,
    body: &mut String,
    cur: &str,
    act: Act,
    x: [usize; 4],
    input: (Act, usize, usize, usize),
) -> (Act, [usize; 4]) {
    let (q, qc, qh, qw) = input;
    let with_input = [qh, qw] == [x[2], x[3]] && cur != "%q";
    let (other, other_ty, axis) = if with_input {
        ("%q", q.ty(&[x[0], qc, qh, qw]), 1)
    } else {
        (cur, act.ty(&x), rng.range(1, 3) as usize)
    };
    let mut shape = x;
    shape[axis] += if with_input { qc } else { x[axis] };
    let out = if rng.chance(4) { act } else { Act::random(rng) };
    writeln!(
        body,
        "    %k = quant.concat({cur}, {other}) {{axis = {axis}}} : ({}, {other_ty}) -> {}",
        act.ty(&x),
        out.ty(&shape)
    )
    .unwrap();
    (out, shape)
}

/// A random float network:
/// - up to three depthwise `nn.conv2d` (kernels up to 5x5, strides 1 and 2, dilations,
///   asymmetric pads, with and without bias), each followed by `nn.clip` or `nn.relu`;
/// - in one network of two an `nn.max_pool2d` or `nn.avg_pool2d` (`pool_window`);
/// - in one of three an `nn.pad` (a constant, the edge or a reflection, on any axis);
/// - in one of three an `nn.batch_norm`;
/// - in one of two an elementwise tail: an activation of the value (sigmoid and a clip per
///   channel among them), `nn.add`, `nn.sub`, `nn.mul` or `nn.div` of the value and that, then
///   an activation; then now and then arithmetic with a constant that broadcasts per channel,
///   per row, per column, per image row or as one value, either operand first, and with a grid
///   of a column and a row that broadcast both;
/// - in one of three the value and its hardswish concatenated along the channels, rows or
///   columns;
/// - in one of three its axes transposed, in one of three an `nn.softmax` along any axis, and in
///   one of three an `nn.global_avg_pool` at the end;
///
/// inputs with NaN, infinities and signed zeros now and then.
fn float_network(seed: u64) -> (String, Tensor) {
    let mut rng = Rng::new(seed);
    let mut n = rng.range(1, 2) as usize;
    let mut c = rng.range(1, 7) as usize;
    // Up to 24 wide, so stride-2 rows have an interior the vector kernel computes.
    let (mut h, mut w) = (rng.range(1, 14) as usize, rng.range(1, 24) as usize);
    let input = [n, c, h, w];
    let ty = |shape: &[usize]| format!("tensor<{}xf32>", dims(shape));
    // Now and then -0.0: a weight or bias of -0.0 is where skipping a tap and adding a zero
    // product can differ.
    let value = |rng: &mut Rng| {
        if rng.chance(8) {
            "-0.0".to_string()
        } else {
            (rng.range(-64, 64) as f64 / 32.0).to_string()
        }
    };
    let mut body = String::new();
    let mut cur = "%x".to_string();
    for layer in 0..rng.range(0, 3) {
        let Window {
            kernel: [kh, kw],
            strides,
            dilations: dil,
            pads,
            output: [oh, ow],
        } = Window::random(&mut rng, h, w);
        let wshape = [c, 1, kh, kw];
        let weights: Vec<String> = (0..c * kh * kw).map(|_| value(&mut rng)).collect();
        let nested_f = |values: &[String], inner: usize| {
            let rows: Vec<String> = values
                .chunks(inner)
                .map(|r| {
                    format!(
                        "[[[{}]]]",
                        r.chunks(kw)
                            .map(|q| q.join(", "))
                            .collect::<Vec<_>>()
                            .join("], [")
                    )
                })
                .collect();
            format!("[{}]", rows.join(", "))
        };
        writeln!(
            body,
            "    %w{layer} = nn.const {{value = dense<{}> : {}}} : {}",
            nested_f(&weights, kh * kw),
            ty(&wshape),
            ty(&wshape)
        )
        .unwrap();
        let bias = rng.chance(2);
        if bias {
            let b: Vec<String> = (0..c).map(|_| value(&mut rng)).collect();
            writeln!(
                body,
                "    %b{layer} = nn.const {{value = dense<[{}]> : tensor<{c}xf32>}} : tensor<{c}xf32>",
                b.join(", ")
            )
            .unwrap();
        }
        let out_shape = [n, c, oh, ow];
        let (operands, types) = if bias {
            (
                format!("{cur}, %w{layer}, %b{layer}"),
                format!("{}, {}, tensor<{c}xf32>", ty(&[n, c, h, w]), ty(&wshape)),
            )
        } else {
            (
                format!("{cur}, %w{layer}"),
                format!("{}, {}", ty(&[n, c, h, w]), ty(&wshape)),
            )
        };
        writeln!(
            body,
            "    %c{layer} = nn.conv2d({operands}) {{strides = [{}, {}], pads = [{}, {}, {}, {}], dilations = [{}, {}], groups = {c}}} : ({types}) -> {}",
            strides[0], strides[1], pads[0], pads[1], pads[2], pads[3], dil[0], dil[1],
            ty(&out_shape)
        )
        .unwrap();
        let activation = if rng.chance(2) {
            format!("nn.relu(%c{layer})")
        } else {
            format!(
                "nn.clip(%c{layer}) {{min = {}, max = {}}}",
                -(rng.range(0, 2) as f64),
                rng.range(1, 6) as f64
            )
        };
        writeln!(
            body,
            "    %a{layer} = {activation} : ({}) -> {}",
            ty(&out_shape),
            ty(&out_shape)
        )
        .unwrap();
        cur = format!("%a{layer}");
        (h, w) = (oh, ow);
    }
    if rng.chance(2) {
        let (op, attrs, [oh, ow]) = pool_window(&mut rng, [n, c, h, w]);
        writeln!(
            body,
            "    %p = nn.{op}({cur}) {{{attrs}}} : ({}) -> {}",
            ty(&[n, c, h, w]),
            ty(&[n, c, oh, ow])
        )
        .unwrap();
        cur = "%p".into();
        (h, w) = (oh, ow);
    }
    if rng.chance(3) {
        // A constant, the edge or a reflection around the value, on any axis.
        let before = [n, c, h, w];
        let pads: Vec<usize> = (0..8)
            .map(|i| if i % 4 == 0 { rng.below(2) } else { rng.below(3) } as usize)
            .collect();
        [n, c, h, w] = std::array::from_fn(|d| before[d] + pads[d] + pads[d + 4]);
        let mode = match rng.below(4) {
            0 => "mode = \"edge\"".to_string(),
            1 => "mode = \"reflect\"".to_string(),
            _ => format!("value = {}", rng.range(-8, 8) as f64 / 4.0),
        };
        writeln!(
            body,
            "    %pd = nn.pad({cur}) {{pads = [{}], {mode}}} : ({}) -> {}",
            list(&pads),
            ty(&before),
            ty(&[n, c, h, w])
        )
        .unwrap();
        cur = "%pd".into();
    }
    if rng.chance(3) {
        // Batch normalisation with per-channel constants (variances near zero now and then).
        let shape = ty(&[n, c, h, w]);
        let vector = |rng: &mut Rng, lo: i64| -> String {
            let v: Vec<String> = (0..c)
                .map(|_| (rng.range(lo, 64) as f64 / 16.0).to_string())
                .collect();
            format!("dense<[{}]> : tensor<{c}xf32>", v.join(", "))
        };
        let mut operands = Vec::new();
        for (name, lo) in [("gamma", -64), ("beta", -64), ("mean", -64), ("var", 0)] {
            let value = vector(&mut rng, lo);
            writeln!(
                body,
                "    %{name} = nn.const {{value = {value}}} : tensor<{c}xf32>"
            )
            .unwrap();
            operands.push(format!("%{name}"));
        }
        let eps = ["1e-3", "0.0", "1e-5"][rng.below(3) as usize];
        let param = format!("tensor<{c}xf32>");
        writeln!(
            body,
            "    %bn = nn.batch_norm({cur}, {}) {{epsilon = {eps}}} : ({shape}, {param}, {param}, {param}, {param}) -> {shape}",
            operands.join(", ")
        )
        .unwrap();
        cur = "%bn".into();
    }
    if rng.chance(2) {
        // A gate of the value, arithmetic of the value and its gate (in place when the value is
        // the run's own), and an activation of that (in place).
        let shape = ty(&[n, c, h, w]);
        let gate = elementwise_activation(&mut rng, &cur, c);
        let arith = ["add", "sub", "mul", "div"][rng.below(4) as usize];
        let after = elementwise_activation(&mut rng, "%s", c);
        writeln!(
            body,
            "    %g = {gate} : ({shape}) -> {shape}\n    \
             %s = nn.{arith}({cur}, %g) : ({shape}, {shape}) -> {shape}\n    \
             %t = {after} : ({shape}) -> {shape}"
        )
        .unwrap();
        cur = "%t".into();
        if rng.chance(2) {
            // Arithmetic with a constant that broadcasts: per channel, per row, per column, per
            // image row, or one value; now and then the constant first.
            let (k_shape, count): (Vec<usize>, usize) = match rng.below(6) {
                0 => (vec![c, 1, 1], c),
                1 => (vec![1, c, 1, 1], c),
                2 => (vec![w], w),
                3 => (vec![h, 1], h),
                4 => (vec![n, 1, h, w], n * h * w),
                _ => (vec![1], 1),
            };
            let k: Vec<String> = (0..count)
                .map(|_| (rng.range(-32, 32) as f64 / 8.0).to_string())
                .collect();
            let k_ty = ty(&k_shape);
            let arith = ["add", "sub", "mul", "div"][rng.below(4) as usize];
            let operands = if rng.chance(3) {
                format!("(%k, %t) : ({k_ty}, {shape})")
            } else {
                format!("(%t, %k) : ({shape}, {k_ty})")
            };
            writeln!(
                body,
                "    %k = nn.const {{value = dense<{}> : {k_ty}}} : {k_ty}\n    \
                 %u = nn.{arith}{operands} -> {shape}",
                nested_f32(&k, &k_shape)
            )
            .unwrap();
            cur = "%u".into();
        }
        if rng.chance(3) {
            // A grid from a column and a row that both broadcast, then arithmetic with it.
            let col: Vec<String> = (0..h)
                .map(|_| (rng.range(-16, 16) as f64 / 4.0).to_string())
                .collect();
            let row: Vec<String> = (0..w)
                .map(|_| (rng.range(-16, 16) as f64 / 4.0).to_string())
                .collect();
            let (col_ty, row_ty, grid_ty) = (ty(&[h, 1]), ty(&[1, w]), ty(&[h, w]));
            let [first, second] =
                [rng.below(4), rng.below(4)].map(|i| ["add", "sub", "mul", "div"][i as usize]);
            writeln!(
                body,
                "    %col = nn.const {{value = dense<{}> : {col_ty}}} : {col_ty}\n    \
                 %row = nn.const {{value = dense<{}> : {row_ty}}} : {row_ty}\n    \
                 %grid = nn.{first}(%col, %row) : ({col_ty}, {row_ty}) -> {grid_ty}\n    \
                 %v = nn.{second}({cur}, %grid) : ({shape}, {grid_ty}) -> {shape}",
                nested_f32(&col, &[h, 1]),
                nested_f32(&row, &[1, w])
            )
            .unwrap();
            cur = "%v".into();
        }
    }
    if rng.chance(3) {
        // The value and its hardswish side by side along the channels, the rows or the columns.
        let axis = 1 + rng.below(3) as usize;
        let before = ty(&[n, c, h, w]);
        match axis {
            1 => c *= 2,
            2 => h *= 2,
            _ => w *= 2,
        }
        writeln!(
            body,
            "    %q = nn.hardswish({cur}) : ({before}) -> {before}\n    \
             %cc = nn.concat({cur}, %q) {{axis = {axis}}} : ({before}, {before}) -> {}",
            ty(&[n, c, h, w])
        )
        .unwrap();
        cur = "%cc".into();
    }
    if rng.chance(3) {
        // The axes in another order (any of the 24).
        let mut perm = [0usize, 1, 2, 3];
        for i in (1..4).rev() {
            perm.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let before = [n, c, h, w];
        [n, c, h, w] = std::array::from_fn(|d| before[perm[d]]);
        writeln!(
            body,
            "    %tp = nn.transpose({cur}) {{perm = [{}]}} : ({}) -> {}",
            list(&perm),
            ty(&before),
            ty(&[n, c, h, w])
        )
        .unwrap();
        cur = "%tp".into();
    }
    if rng.chance(3) {
        let shape = ty(&[n, c, h, w]);
        let axis = ["-1", "3", "2", "1", "0", "-3"][rng.below(6) as usize];
        writeln!(
            body,
            "    %sm = nn.softmax({cur}) {{axis = {axis}}} : ({shape}) -> {shape}"
        )
        .unwrap();
        cur = "%sm".into();
    }
    if rng.chance(3) {
        writeln!(
            body,
            "    %m = nn.global_avg_pool({cur}) : ({}) -> {}",
            ty(&[n, c, h, w]),
            ty(&[n, c, 1, 1])
        )
        .unwrap();
        cur = "%m".into();
        (h, w) = (1, 1);
    }
    let out = ty(&[n, c, h, w]);
    let text = format!(
        "module @random {{\n  func.func @main(%x: {}) -> {out} {{\n{body}    return {cur} : {out}\n  }}\n}}\n",
        ty(&input)
    );
    let len: usize = input.iter().product();
    let hostile = rng.chance(6);
    let data: Vec<f32> = (0..len)
        .map(|_| {
            if hostile && rng.chance(6) {
                [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1e-45]
                    [rng.below(6) as usize]
            } else {
                (rng.below(4001) as f32 - 2000.0) / 999.0
            }
        })
        .collect();
    (text, Tensor::from_f32(input.to_vec(), data))
}

/// `values` as an attribute list's items: `1, 0, 2`.
fn list(values: &[usize]) -> String {
    values
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A dense literal of `values` in `shape` (nested brackets).
fn nested_f32(values: &[String], shape: &[usize]) -> String {
    match shape.split_first() {
        None => values[0].clone(),
        Some((_, rest)) => {
            let inner: usize = rest.iter().product::<usize>().max(1);
            let parts: Vec<String> = values
                .chunks(inner)
                .map(|part| nested_f32(part, rest))
                .collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

/// A float activation op applied to `value` (of `channels` channels), with its attributes.
fn elementwise_activation(rng: &mut Rng, value: &str, channels: usize) -> String {
    match rng.below(6) {
        5 => {
            let highs: Vec<String> = (0..channels)
                .map(|_| (rng.range(-8, 48) as f64 / 8.0).to_string())
                .collect();
            format!(
                "nn.clip({value}) {{min = {}, max = {}, channel_max = [{}]}}",
                -(rng.range(1, 3) as f64),
                rng.range(1, 6) as f64,
                highs.join(", ")
            )
        }
        0 => format!("nn.relu({value})"),
        4 => format!("nn.sigmoid({value})"),
        1 => format!(
            "nn.clip({value}) {{min = {}, max = {}}}",
            -(rng.range(0, 2) as f64),
            rng.range(1, 6) as f64
        ),
        2 => format!(
            "nn.hardsigmoid({value}) {{alpha = {}, beta = {}}}",
            rng.range(1, 5) as f64 / 8.0,
            rng.range(-2, 4) as f64 / 4.0
        ),
        _ => format!("nn.hardswish({value})"),
    }
}

/// A random float `nn.dense` (K from 1 to 40, so with and without whole groups of eight and a
/// tail; outputs not a multiple of four, up to more than two of the kernel's tasks; with and
/// without bias), or in one of three an `nn.matmul` of `[N, R, K]` images and a computed or
/// constant `[K, M]` operand, on inputs with NaN, infinities and signed zeros now and then.
fn dense_network(seed: u64) -> (String, Tensor) {
    let mut rng = Rng::new(seed);
    // Now and then more outputs than one task of the kernel takes (64).
    let outputs = if rng.chance(4) { (60, 150) } else { (1, 13) };
    let (n, k, m) = (
        rng.range(1, 3) as usize,
        rng.range(1, 40) as usize,
        rng.range(outputs.0, outputs.1) as usize,
    );
    let hostile = rng.chance(4);
    let value = |rng: &mut Rng| {
        if hostile && rng.chance(8) {
            [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 0.0, 1e-45][rng.below(6) as usize]
        } else {
            (rng.below(4001) as f32 - 2000.0) / 999.0
        }
    };
    let literal = |v: f32| {
        if v.is_nan() {
            "nan".to_string()
        } else if v.is_infinite() {
            (if v > 0.0 { "inf" } else { "-inf" }).to_string()
        } else {
            format!("{v:?}")
        }
    };
    let weights: Vec<String> = (0..m * k).map(|_| literal(value(&mut rng))).collect();
    let rows: Vec<String> = weights
        .chunks(k)
        .map(|r| format!("[{}]", r.join(", ")))
        .collect();
    let mut body = format!(
        "    %w = nn.const {{value = dense<[{}]> : tensor<{m}x{k}xf32>}} : tensor<{m}x{k}xf32>\n",
        rows.join(", ")
    );
    if rng.chance(3) {
        // A matrix product instead, of images of `r` rows and a right operand computed (the
        // weights transposed) or constant (the same values as `[K, M]`).
        let r = rng.range(1, 3) as usize;
        body += &if rng.chance(2) {
            format!(
                "    %wt = nn.transpose(%w) {{perm = [1, 0]}} : (tensor<{m}x{k}xf32>) -> tensor<{k}x{m}xf32>\n"
            )
        } else {
            let columns: Vec<String> = weights
                .chunks(m)
                .map(|r| format!("[{}]", r.join(", ")))
                .collect();
            format!(
                "    %wt = nn.const {{value = dense<[{}]> : tensor<{k}x{m}xf32>}} : tensor<{k}x{m}xf32>\n",
                columns.join(", ")
            )
        };
        body += &format!(
            "    %y = nn.matmul(%x, %wt) : (tensor<{n}x{r}x{k}xf32>, tensor<{k}x{m}xf32>) -> tensor<{n}x{r}x{m}xf32>\n"
        );
        let text = format!(
            "module @random {{\n  func.func @main(%x: tensor<{n}x{r}x{k}xf32>) -> tensor<{n}x{r}x{m}xf32> {{\n{body}    return %y : tensor<{n}x{r}x{m}xf32>\n  }}\n}}\n"
        );
        let data: Vec<f32> = (0..n * r * k).map(|_| value(&mut rng)).collect();
        return (text, Tensor::from_f32(vec![n, r, k], data));
    }
    let bias = rng.chance(2);
    let (operands, types) = if bias {
        let b: Vec<String> = (0..m).map(|_| literal(value(&mut rng))).collect();
        body += &format!(
            "    %b = nn.const {{value = dense<[{}]> : tensor<{m}xf32>}} : tensor<{m}xf32>\n",
            b.join(", ")
        );
        (
            "%x, %w, %b",
            format!("tensor<{n}x{k}xf32>, tensor<{m}x{k}xf32>, tensor<{m}xf32>"),
        )
    } else {
        (
            "%x, %w",
            format!("tensor<{n}x{k}xf32>, tensor<{m}x{k}xf32>"),
        )
    };
    body += &format!("    %y = nn.dense({operands}) : ({types}) -> tensor<{n}x{m}xf32>\n");
    let text = format!(
        "module @random {{\n  func.func @main(%x: tensor<{n}x{k}xf32>) -> tensor<{n}x{m}xf32> {{\n{body}    return %y : tensor<{n}x{m}xf32>\n  }}\n}}\n"
    );
    let data: Vec<f32> = (0..n * k).map(|_| value(&mut rng)).collect();
    (text, Tensor::from_f32(vec![n, k], data))
}

/// Whether two outputs are the same bits (NaN included).
fn same_bits(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.shape == b.shape
                && match (a.as_f32(), b.as_f32()) {
                    (Some(x), Some(y)) => x
                        .iter()
                        .map(|v| v.to_bits())
                        .eq(y.iter().map(|v| v.to_bits())),
                    _ => a == b,
                }
        })
}

/// Every op of module `text` (but those of kind `exempt`) has a generated kernel, so that none
/// is tested by comparing the reference with itself. A module that does not parse passes here:
/// the comparison reports it.
fn every_op_generated(
    text: &str,
    exempt: Option<qcc_dialects::OpKind>,
) -> Result<(), TestCaseError> {
    let file = SourceFile::new("random.ir", text.to_string());
    let Ok(module) = parse_module(&file, None) else {
        return Ok(());
    };
    let mut missing = qcc_codegen::without_kernels(&module, "main").map_err(TestCaseError::fail)?;
    if let Some(kind) = exempt {
        missing.remove(&kind);
    }
    prop_assert!(
        missing.is_empty(),
        "no generated kernel for {missing:?}\n{text}"
    );
    Ok(())
}

fn check_float(seed: u64) -> Result<(), TestCaseError> {
    let (text, x) = float_network(seed);
    // A one-channel convolution is a GEMM convolution: on the reference by design.
    let exempt = text
        .contains("groups = 1}")
        .then_some(qcc_dialects::OpKind::Conv2d);
    every_op_generated(&text, exempt)?;
    check_float_module(text, &x)
}

/// The float module `text` on input `x`: the same bits on both engines, or refused by both; and
/// a plain run (which fuses each convolution's activation into it) the same bits as a run with an
/// observer, which sees every op's output and so fuses nothing.
fn check_float_module(text: String, x: &Tensor) -> Result<(), TestCaseError> {
    let file = SourceFile::new("random.ir", text.clone());
    let module = parse_module(&file, None).map_err(|d| {
        TestCaseError::fail(format!(
            "invalid module: {}\n{text}",
            d[0].render(Some(&file))
        ))
    })?;
    let run = |engine: &dyn Engine| {
        engine
            .prepare(&module, "main")
            .and_then(|p| p.run(std::slice::from_ref(x)).map_err(|e| e.to_string()))
    };
    match (run(&Reference), run(&Native)) {
        (Ok(a), Ok(b)) => {
            prop_assert!(same_bits(&a, &b), "outputs differ\n{text}");
            for engine in [&Reference as &dyn Engine, &Native] {
                let (unfused, _) = observed(engine, &module, x).map_err(TestCaseError::fail)?;
                prop_assert!(
                    same_bits(&a, &unfused),
                    "{}: the fused run differs from the observed one\n{text}",
                    engine.name()
                );
            }
        }
        (Err(_), Err(_)) => {}
        (a, b) => {
            return Err(TestCaseError::fail(format!(
                "one engine refused: reference {:?}, cranelift {:?}\n{text}",
                a.err(),
                b.err()
            )));
        }
    }
    Ok(())
}

/// Every op's output of a run, by node.
fn observed(
    engine: &dyn Engine,
    module: &Module,
    x: &Tensor,
) -> Result<(Vec<Tensor>, HashMap<NodeIndex, Tensor>), String> {
    let prepared = engine.prepare(module, "main")?;
    let mut seen = HashMap::new();
    let out = prepared
        .run_observed(std::slice::from_ref(x), &mut |node, _, t| {
            seen.insert(node, t.clone());
        })
        .map_err(|e| e.to_string())?;
    Ok((out, seen))
}

fn check(seed: u64) -> Result<(), TestCaseError> {
    let (text, x) = network(seed);
    let file = SourceFile::new("random.ir", text.clone());
    let module = match parse_module(&file, None) {
        Ok(m) => m,
        Err(d) => {
            return Err(TestCaseError::fail(format!(
                "the generator wrote an invalid module: {}\n{text}",
                d[0].render(Some(&file))
            )));
        }
    };
    let reference = observed(&Reference, &module, &x);
    let native = observed(&Native, &module, &x);
    match (&reference, &native) {
        (Ok((r, rs)), Ok((c, cs))) => {
            prop_assert!(r == c, "outputs differ\n{text}");
            let func = module.function("main").unwrap();
            let (rp, cp) = (
                Reference.prepare(&module, "main").unwrap(),
                Native.prepare(&module, "main").unwrap(),
            );
            for (node, t) in rs {
                prop_assert!(
                    cs.get(node) == Some(t),
                    "op {:?} differs\n{text}",
                    func.op(*node).name
                );
                let operands = func.operands(*node);
                if rp.requant(*node).is_none() {
                    continue;
                }
                let xin = rs
                    .get(&operands[0].node)
                    .cloned()
                    .unwrap_or_else(|| x.clone());
                let w = module.const_value(func.op(operands[1].node)).unwrap();
                let a = rp.accumulators(*node, &xin, &w);
                let b = cp.accumulators(*node, &xin, &w);
                prop_assert!(
                    a == b,
                    "accumulators of {:?} differ\n{text}",
                    func.op(*node).name
                );
            }
        }
        (Err(a), Err(_)) => {
            if std::env::var_os("QCC_TEST_SHOW").is_some() {
                eprintln!("both refused: {a}");
            }
        }
        (r, c) => {
            return Err(TestCaseError::fail(format!(
                "one engine refused: reference {:?}, cranelift {:?}\n{text}",
                r.as_ref().err(),
                c.as_ref().err()
            )));
        }
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn cranelift_matches_the_reference(seed in any::<u64>()) {
        check(seed)?;
    }

    #[test]
    fn float_kernels_match_the_reference_bit_for_bit(seed in any::<u64>()) {
        check_float(seed)?;
    }

    #[test]
    fn float_dense_matches_the_reference_bit_for_bit(seed in any::<u64>()) {
        let (text, x) = dense_network(seed);
        every_op_generated(&text, None)?;
        check_float_module(text, &x)?;
    }
}

/// The same cases with the VNNI instructions hidden, so the `pmaddwd` kernels are checked on a
/// CPU that has VNNI too: the test binary runs itself again with `QCC_NO_VNNI=1` (the JIT reads
/// the CPU's features once per process).
#[test]
fn cranelift_matches_the_reference_without_vnni() {
    if std::env::var_os(qcc_codegen::NO_VNNI_VAR).is_some() {
        return; // this is the child run
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "cranelift_matches_the_reference", "--nocapture"])
        .env(qcc_codegen::NO_VNNI_VAR, "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// The networks are not all trivial: most run, and both the fused and the unfused finish occur.
#[test]
fn the_generator_covers_what_it_claims() {
    let mut texts = String::new();
    for seed in 0..200u64 {
        texts.push_str(&network(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)).0);
    }
    for needle in [
        "quant.dense",
        "quant.add",
        "quant.global_avg_pool",
        "quant.max_pool2d",
        "quant.avg_pool2d",
        "count_include_pad = true",
        "ceil_mode = true",
        ", %q) {axis = 1}",
        "{axis = 3}",
        "groups = 2",
        "dilations = [2",
        "i8:f32:0, {",
        "clamp = [",
        "channel_max = [",
        "!quant.uniform<i8:f32, ",
        "1x1x",
    ] {
        assert!(texts.contains(needle), "no generated network has {needle}");
    }
    let floats: String = (0..200u64)
        .map(|seed| float_network(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)).0)
        .collect();
    for needle in [
        "nn.hardsigmoid(%",
        "nn.hardswish(%",
        "nn.add(%",
        "nn.sub(%",
        "nn.mul(%",
        "nn.div(%",
        "nn.global_avg_pool(%a",
        "nn.global_avg_pool(%t",
        "(%x, %g)",
        "nn.sigmoid(%",
        "channel_max = [",
        "(%t, %k)",
        "tensor<1xf32>) ->",
        "x1x1xf32>) ->",
        "nn.softmax(%t",
        "nn.pad(%a",
        "nn.transpose(%",
        "perm = [3, 2, 1, 0]",
        "nn.pad(%x",
        "mode = \"edge\"",
        "mode = \"reflect\"",
        "(%k, %t)",
        "(%col, %row)",
        "{axis = 1} : (",
        "{axis = 3} : (",
        "nn.softmax(%tp) {axis = 2}",
        "{axis = 0} : (",
        "nn.softmax(%a",
        "nn.global_avg_pool(%sm",
        "nn.batch_norm(%a",
        "nn.batch_norm(%x",
    ] {
        assert!(
            floats.contains(needle),
            "no generated float network has {needle}"
        );
    }
}

/// Two stride-2 depthwise layers that differ only in their right padding (so in their output
/// width) get kernels of their own: the kernel cache once named them alike, and the second ran
/// the first's code, writing rows of the wrong length.
#[test]
fn float_kernels_of_different_output_widths_are_not_shared() {
    let x = Tensor::from_f32(
        vec![1, 2, 3, 16],
        (0..96).map(|i| (i % 7) as f32 - 3.0).collect(),
    );
    for (right, ow) in [(0, 7), (2, 8)] {
        let text = format!(
            "module @m {{\n  func.func @main(%x: tensor<1x2x3x16xf32>) -> tensor<1x2x3x{ow}xf32> {{\n    \
             %w = nn.const {{value = dense<[[[[1.5, -2, 0.25]]], [[[-1, 0.5, 3]]]]> : tensor<2x1x1x3xf32>}} : tensor<2x1x1x3xf32>\n    \
             %y = nn.conv2d(%x, %w) {{strides = [1, 2], pads = [0, 0, 0, {right}], dilations = [1, 1], groups = 2}} : \
             (tensor<1x2x3x16xf32>, tensor<2x1x1x3xf32>) -> tensor<1x2x3x{ow}xf32>\n    \
             return %y : tensor<1x2x3x{ow}xf32>\n  }}\n}}\n"
        );
        check_float_module(text, &x).unwrap();
    }
}

/// The float elementwise kernels and the float global pool over more values than one task of
/// theirs takes (16384 values; 128 planes), with a last partial group: out of place on the
/// function's input, then in place on the run's own values; the same bits on both engines.
#[test]
fn float_elementwise_kernels_split_over_tasks_match_the_reference() {
    let shape = [2, 70, 12, 11];
    let len: usize = shape.iter().product();
    let x = Tensor::from_f32(
        shape.to_vec(),
        (0..len)
            .map(|i| match i % 997 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => -0.0,
                k => (k as f32 - 498.0) / 37.0,
            })
            .collect(),
    );
    let ty = format!("tensor<{}xf32>", dims(&shape));
    let chain = format!(
        "    %a = nn.relu(%x) : ({ty}) -> {ty}\n    \
         %g = nn.hardsigmoid(%a) {{alpha = 0.25, beta = -0.5}} : ({ty}) -> {ty}\n    \
         %s = nn.div(%a, %g) : ({ty}, {ty}) -> {ty}\n    \
         %t = nn.clip(%s) {{min = -1.0, max = 6.0}} : ({ty}) -> {ty}\n"
    );
    let pooled = "tensor<2x70x1x1xf32>";
    for (result, result_ty, extra) in [
        ("%t", ty.clone(), String::new()),
        (
            "%m",
            pooled.to_string(),
            format!("    %m = nn.global_avg_pool(%t) : ({ty}) -> {pooled}\n"),
        ),
    ] {
        let text = format!(
            "module @m {{\n  func.func @main(%x: {ty}) -> {result_ty} {{\n{chain}{extra}    \
             return {result} : {result_ty}\n  }}\n}}\n"
        );
        check_float_module(text, &x).expect("the same bits");
    }
}

/// The generated sigmoid (and so its `exp`) gives the reference's bits over every range its
/// steps treat apart: every 4099th f32 from -120 to 120 (results that underflow, subnormal
/// powers, saturation, the polynomial's whole interval), infinities, NaN and signed zeros.
#[test]
fn generated_sigmoid_matches_the_reference_over_the_whole_range() {
    let mut values: Vec<f32> = (0u32..0x42F0_0000)
        .step_by(4099)
        .flat_map(|bits| [f32::from_bits(bits), -f32::from_bits(bits)])
        .collect();
    values.extend([
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -0.0,
        0.0,
        88.72,
        -88.72,
        103.9,
    ]);
    let len = values.len();
    let x = Tensor::from_f32(vec![1, len], values);
    let ty = format!("tensor<1x{len}xf32>");
    let text = format!(
        "module @m {{\n  func.func @main(%x: {ty}) -> {ty} {{\n    \
         %y = nn.sigmoid(%x) : ({ty}) -> {ty}\n    return %y : {ty}\n  }}\n}}\n"
    );
    check_float_module(text, &x).expect("the same bits");
}
