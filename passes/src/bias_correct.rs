//! The bias-correction passes: `estimate-bias-shift` + `apply-bias-correction` (one shot),
//! `bias-correct` (the paper's iterative method) and `bias-fit` (bias-only fitting). See `bias.rs`,
//! `bias_search.rs` and `docs/bias-correction.md`.

use qcc_dialects::{Attr, Module};

use crate::bias::{At, FloatReference, Holding, Mode, layer_name, lockstep, set_bias};
use crate::calibrate::take;
use crate::pass::{OptionKind, OptionSpec, Options, Pass, PassContext, PassInfo};
use qcc_runtime::quant::{stored_ints, to_bias};

const AT: OptionSpec = OptionSpec {
    name: "at",
    kind: OptionKind::Choice(&["post-activation", "pre-activation"]),
    default: "post-activation",
    help: "measure the shift after the layer's fused activation, or before it",
};

const SAMPLES: OptionSpec = crate::calibrate::SAMPLES_OPTION;

/// Registration of `estimate-bias-shift`.
pub const ESTIMATE: PassInfo = PassInfo {
    name: "estimate-bias-shift",
    summary: "record every integer layer's per-channel mean output shift against float, layers in order with the corrections above in place (attribute bias_shift)",
    options: &[SAMPLES, AT],
    requires: &["quantize"],
    create: |o: &Options| {
        Box::new(Estimate {
            samples: o.int("samples") as usize,
            at: At::parse(o.choice("at")),
        })
    },
};

/// Registration of `apply-bias-correction`.
pub const APPLY: PassInfo = PassInfo {
    name: "apply-bias-correction",
    summary: "fold recorded bias_shift attributes into the i32 biases and drop them",
    options: &[],
    requires: &[],
    create: |_: &Options| Box::new(Apply),
};

/// Registration of `bias-correct`.
pub const CORRECT: PassInfo = PassInfo {
    name: "bias-correct",
    summary: "iterative bias correction: layers in order, each measured with earlier corrections in place",
    options: &[
        OptionSpec {
            name: "iterations",
            kind: OptionKind::Int { min: 1, max: 100 },
            default: "1",
            help: "rounds over the network",
        },
        SAMPLES,
        AT,
    ],
    requires: &["quantize"],
    create: |o: &Options| {
        Box::new(Correct {
            iterations: o.int("iterations") as usize,
            samples: o.int("samples") as usize,
            at: At::parse(o.choice("at")),
        })
    },
};

/// Registration of `bias-fit`.
pub const FIT: PassInfo = PassInfo {
    name: "bias-fit",
    summary: "fit every integer layer's biases to the float output after its activation, layer by layer",
    options: &[
        OptionSpec {
            name: "steps",
            kind: OptionKind::Int {
                min: 1,
                max: 10_000,
            },
            default: "20",
            help: "gradient steps per layer",
        },
        OptionSpec {
            name: "lr",
            kind: OptionKind::Float {
                min: 1e-6,
                max: 10.0,
            },
            default: "0.5",
            help: "learning rate (0.5 cancels an unclamped mean shift in one step)",
        },
        SAMPLES,
    ],
    requires: &["quantize"],
    create: |o: &Options| {
        Box::new(Fit {
            steps: o.int("steps") as usize,
            lr: o.float("lr"),
            samples: o.int("samples") as usize,
        })
    },
};

fn needs<'a>(
    ctx: &'a PassContext,
    pass: &str,
) -> Result<(&'a FloatReference, &'a qcc_dialects::Tensor), String> {
    let reference = ctx.float_reference.as_ref().ok_or_else(|| {
        format!("{pass} needs the float network that quantize started from: run it in the same pipeline after quantize (e.g. --passes=quantize,{pass})")
    })?;
    let calib = ctx
        .calib
        .as_ref()
        .ok_or_else(|| format!("{pass} needs calibration data: give --calib DATA"))?;
    Ok((reference, calib))
}

struct Estimate {
    samples: usize,
    at: At,
}

impl Pass for Estimate {
    fn name(&self) -> &'static str {
        ESTIMATE.name
    }

    fn run(&self, module: &mut Module, ctx: &mut PassContext) -> Result<(), String> {
        let (reference, calib) = needs(ctx, ESTIMATE.name)?;
        let inputs = take(calib, self.samples);
        let outcomes = lockstep(
            ctx.engine.as_ref(),
            module,
            reference,
            &inputs,
            self.at,
            Mode::Correct,
            Holding::PASSES,
        )?;
        let func = module
            .functions
            .iter_mut()
            .find(|f| f.name == "main")
            .expect("lockstep checked @main");
        // Each layer was measured with the corrections above it in place, and a correction the
        // guard rejected is recorded as no shift: applying them all gives bias-correct's module.
        for o in &outcomes {
            let shift = if o.kept {
                o.shift.clone()
            } else {
                vec![0.0; o.shift.len()]
            };
            func.op_mut(o.node)
                .attrs
                .set("bias_shift", Attr::floats(&shift));
        }
        ctx.note(
            ESTIMATE.name,
            format!(
                "measured {} layers on {} samples",
                outcomes.len(),
                inputs.shape[0]
            ),
        );
        Ok(())
    }
}

struct Apply;

impl Pass for Apply {
    fn name(&self) -> &'static str {
        APPLY.name
    }

    fn run(&self, module: &mut Module, ctx: &mut PassContext) -> Result<(), String> {
        let Some(func) = module.function("main") else {
            return Ok(());
        };
        let mut updates = Vec::new();
        for node in func.op_nodes() {
            let op = func.op(node);
            let Some(shift) = op.attr("bias_shift").and_then(Attr::as_floats) else {
                continue;
            };
            let ops = func.operands(node);
            let (x_ty, w_ty) = (func.value_type(ops[0]), func.value_type(ops[1]));
            let sx = qcc_runtime::quant::per_tensor(x_ty)
                .ok_or("the layer input must be per-tensor quantized")?
                .0;
            let sw = qcc_runtime::quant::channel_scales(w_ty, shift.len())
                .ok_or("the weight must be quantized")?;
            let bias = ops
                .get(2)
                .and_then(|b| crate::rewrite::const_tensor(module, func, *b))
                .map(|t| stored_ints(&t))
                .unwrap_or_else(|| vec![0; shift.len()]);
            let new: Vec<i32> = bias
                .iter()
                .zip(&shift)
                .zip(&sw)
                .map(|((b, s), w)| to_bias(*b as f64 - s / (sx * w)) as i32)
                .collect();
            updates.push((node, new));
        }
        for (node, bias) in &updates {
            set_bias(module, *node, bias.clone())?;
            let func = module
                .functions
                .iter_mut()
                .find(|f| f.name == "main")
                .expect("@main exists");
            func.op_mut(*node).attrs.remove("bias_shift");
        }
        ctx.note(
            APPLY.name,
            format!("corrected the biases of {} layers", updates.len()),
        );
        Ok(())
    }
}

struct Correct {
    iterations: usize,
    samples: usize,
    at: At,
}

impl Pass for Correct {
    fn name(&self) -> &'static str {
        CORRECT.name
    }

    fn run(&self, module: &mut Module, ctx: &mut PassContext) -> Result<(), String> {
        adjust(
            module,
            ctx,
            CORRECT.name,
            self.samples,
            self.iterations,
            self.at,
            Mode::Correct,
        )
    }
}

struct Fit {
    steps: usize,
    lr: f64,
    samples: usize,
}

impl Pass for Fit {
    fn name(&self) -> &'static str {
        FIT.name
    }

    fn run(&self, module: &mut Module, ctx: &mut PassContext) -> Result<(), String> {
        let mode = Mode::Fit {
            steps: self.steps,
            lr: self.lr,
        };
        adjust(
            module,
            ctx,
            FIT.name,
            self.samples,
            1,
            At::PostActivation,
            mode,
        )
    }
}

/// Runs `rounds` lockstep rounds of `mode` over the calibration inputs, writing the biases each
/// round keeps and noting the layers it left alone.
fn adjust(
    module: &mut Module,
    ctx: &mut PassContext,
    pass: &str,
    samples: usize,
    rounds: usize,
    at: At,
    mode: Mode,
) -> Result<(), String> {
    let (reference, calib) = needs(ctx, pass)?;
    let inputs = take(calib, samples);
    let mut notes = Vec::new();
    for round in 1..=rounds {
        let outcomes = lockstep(
            ctx.engine.as_ref(),
            module,
            reference,
            &inputs,
            at,
            mode,
            Holding::PASSES,
        )?;
        let (mut kept, mut unchanged) = (0, Vec::new());
        for o in outcomes {
            if o.kept {
                kept += 1;
                set_bias(module, o.node, o.bias)?;
            } else {
                unchanged.push(format!(
                    "{} (error {:.4e} -> {:.4e})",
                    layer_name(module, o.node),
                    o.error.0,
                    o.error.1
                ));
            }
        }
        let what = if mode == Mode::Correct {
            "corrected"
        } else {
            "fitted"
        };
        let prefix = if rounds > 1 {
            format!("round {round}: ")
        } else {
            String::new()
        };
        let layers = if kept == 1 { "layer" } else { "layers" };
        notes.push(format!(
            "{prefix}{what} {kept} {layers} on {} samples",
            inputs.shape[0]
        ));
        for u in unchanged {
            notes.push(if mode == Mode::Correct {
                format!("{prefix}reverted {u}: the correction did not lower the layer's error")
            } else {
                format!("{prefix}kept the bias of {u}: no step lowered the layer's error")
            });
        }
    }
    for n in notes {
        ctx.note(pass, n);
    }
    Ok(())
}
