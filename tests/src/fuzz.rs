//! One fuzz case each for the IR parser and the ONNX importer, shared by the property tests
//! (`tests/robustness.rs`, `tests/onnx_import.rs`) and the cargo-fuzz targets (`fuzz/`): whatever
//! the input, qcc answers with a module or an error and never panics, and whatever it accepts
//! prints back, verifies, transforms and runs.

use std::path::Path;

use qcc_codegen::Native;
use qcc_dialects::{Module, Node, SourceFile, Tensor, TensorData, Value, parse_module};
use qcc_passes::{PassContext, PassManager, parse_pipeline};
use qcc_runtime::{Engine, Reference};

/// The most elements (summed over every value) of an accepted module that a case still runs;
/// larger modules are only parsed and verified, to keep each case fast. qcc itself bounds every
/// tensor by [`qcc_dialects::MAX_ELEMENTS`] before allocating it.
pub const RUN_BUDGET: usize = 1 << 18;

/// How far a fuzz case got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Rejected with an error (the expected answer to most damaged inputs).
    Rejected,
    /// Accepted and verified, but too large to run within [`RUN_BUDGET`] or with no `@main`.
    Accepted,
    /// Accepted, and the interpreter and the passes ran on it (each may still return an error).
    Ran,
}

/// Counts of outcomes over a fuzz run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Tally {
    /// Inputs rejected with an error.
    pub rejected: usize,
    /// Inputs accepted but not run.
    pub accepted: usize,
    /// Inputs accepted and run.
    pub ran: usize,
}

impl Tally {
    /// Counts one outcome.
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Rejected => self.rejected += 1,
            Outcome::Accepted => self.accepted += 1,
            Outcome::Ran => self.ran += 1,
        }
    }

    /// All cases counted.
    pub fn total(&self) -> usize {
        self.rejected + self.accepted + self.ran
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cases: {} rejected with an error, {} accepted, {} accepted and run",
            self.total(),
            self.rejected,
            self.accepted,
            self.ran
        )
    }
}

/// Parses `text` as a module (weights resolved in `weights_dir`); an accepted module must print
/// and parse back to the same text, and then goes through [`exercise`].
pub fn ir_case(text: &str, weights_dir: Option<&Path>) -> Outcome {
    let source = SourceFile::new("fuzzed.ir", text);
    let module = match parse_module(&source, weights_dir) {
        Ok(module) => module,
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty(), "an error without a diagnostic");
            for d in diagnostics {
                let _ = d.render(Some(&source));
            }
            return Outcome::Rejected;
        }
    };
    let printed = qcc_dialects::print_module(&module);
    match parse_module(&SourceFile::new("printed.ir", printed.clone()), weights_dir) {
        Ok(again) => assert_eq!(
            qcc_dialects::print_module(&again),
            printed,
            "print -> parse -> print changed the module"
        ),
        Err(d) => panic!(
            "the print of an accepted module does not parse ({}):\n{printed}",
            d[0].message
        ),
    }
    exercise(&module)
}

/// Imports `bytes` as an ONNX model; an accepted module must verify, and then goes through
/// [`exercise`].
pub fn onnx_case(bytes: &[u8]) -> Outcome {
    match qcc_compiler::onnx::import_bytes(bytes, "fuzzed.onnx") {
        Ok(imported) => {
            if let Err(d) = qcc_dialects::verify_module(&imported.module) {
                panic!("an imported module does not verify: {}", d[0].message);
            }
            exercise(&imported.module)
        }
        Err(message) => {
            assert!(!message.is_empty(), "an empty error message");
            Outcome::Rejected
        }
    }
}

/// Elements of every value (arguments and op results) in `module`'s functions, saturating.
fn elements(module: &Module) -> usize {
    module
        .functions
        .iter()
        .flat_map(|f| f.graph.node_weights())
        .flat_map(|node| match node {
            Node::Arg { ty, .. } => std::slice::from_ref(ty),
            Node::Op(op) => op.results.as_slice(),
        })
        .fold(0usize, |a, t| a.saturating_add(t.numel()))
}

/// Deterministic inputs for `@main` at batch 1 (values in about [-2, 2) for floats, the whole
/// range for integers).
fn inputs(module: &Module) -> Option<Vec<Tensor>> {
    let main = module.function("main")?;
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as u32
    };
    main.args
        .iter()
        .map(|a| {
            let ty = main.value_type(Value::of(*a));
            let n = ty.numel();
            let data = match TensorData::zeros(&ty.elem, n) {
                TensorData::F32(_) => TensorData::F32(
                    (0..n)
                        .map(|_| next() as f32 / 2f32.powi(30) - 2.0)
                        .collect(),
                ),
                TensorData::U8(_) => TensorData::U8((0..n).map(|_| next() as u8).collect()),
                TensorData::I8(_) => TensorData::I8((0..n).map(|_| next() as i8).collect()),
                other => other,
            };
            Tensor::new(ty.shape.clone(), data).ok()
        })
        .collect()
}

/// `t` twice along its leading dimension (`None` for a scalar).
fn twice(t: &Tensor) -> Option<Tensor> {
    let mut shape = t.shape.clone();
    *shape.first_mut()? *= 2;
    let data = match &t.data {
        TensorData::F32(v) => TensorData::F32([v.as_slice(), v].concat()),
        TensorData::U8(v) => TensorData::U8([v.as_slice(), v].concat()),
        TensorData::I8(v) => TensorData::I8([v.as_slice(), v].concat()),
        TensorData::I32(v) => TensorData::I32([v.as_slice(), v].concat()),
        TensorData::I64(v) => TensorData::I64([v.as_slice(), v].concat()),
    };
    Tensor::new(shape, data).ok()
}

/// Whether two runs' outputs are the same, bit for bit (NaN included).
fn same(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            a.shape == b.shape
                && match (&a.data, &b.data) {
                    (TensorData::F32(x), TensorData::F32(y)) => x
                        .iter()
                        .map(|v| v.to_bits())
                        .eq(y.iter().map(|v| v.to_bits())),
                    (x, y) => x == y,
                }
        })
}

/// Runs an accepted module on the reference interpreter and the Cranelift engine, which must
/// agree (at its batch and at twice it), and
/// through the passes (the float clean-ups, then quantization and bias correction calibrated on
/// two inputs). Each may return an error; none may panic, and a pipeline that succeeds leaves a
/// module that verifies and runs.
pub fn exercise(module: &Module) -> Outcome {
    if elements(module) > RUN_BUDGET {
        return Outcome::Accepted;
    }
    let Some(x) = inputs(module) else {
        return Outcome::Accepted;
    };
    // At the declared batch and at twice it: a model that cannot take another batch must say
    // so, not fail inside a kernel.
    let doubled: Vec<Tensor> = x.iter().filter_map(twice).collect();
    // On both engines, which must agree: the same outputs, bit for bit, or both an error.
    let run = |m: &Module| {
        let batches: &[&Vec<Tensor>] = if doubled.len() == x.len() {
            &[&x, &doubled]
        } else {
            &[&x]
        };
        let (reference, native) = (Reference.prepare(m, "main"), Native.prepare(m, "main"));
        for batch in batches {
            let a = reference
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|p| p.run(batch).map_err(|e| e.to_string()));
            let b = native
                .as_ref()
                .map_err(Clone::clone)
                .and_then(|p| p.run(batch).map_err(|e| e.to_string()));
            match (&a, &b) {
                (Ok(a), Ok(b)) => assert!(
                    same(a, b),
                    "the engines' outputs differ on\n{}",
                    qcc_dialects::print_module(m)
                ),
                (Err(_), Err(_)) => {}
                _ => panic!(
                    "one engine refused: reference {:?}, cranelift {:?}, on\n{}",
                    a.err(),
                    b.err(),
                    qcc_dialects::print_module(m)
                ),
            }
        }
    };
    run(module);
    let calib = match x.first() {
        Some(t) if x.len() == 1 && matches!(t.data, TensorData::F32(_)) => {
            let mut shape = t.shape.clone();
            if let Some(batch) = shape.first_mut() {
                *batch *= 2;
            }
            let mut values = t.as_f32().unwrap_or(&[]).to_vec();
            values.extend(values.iter().map(|v| -v).collect::<Vec<_>>());
            Tensor::new(shape, TensorData::F32(values)).ok()
        }
        _ => None,
    };
    for pipeline in [
        "canonicalize,fold-batchnorm",
        "quantize{samples=2},bias-correct{samples=2}",
        "quantize{granularity=per-tensor,samples=2},bias-fit{steps=2,samples=2}",
    ] {
        let needs_calib = pipeline.starts_with("quantize");
        if needs_calib && calib.is_none() {
            continue;
        }
        let mut transformed = module.clone();
        let steps = parse_pipeline(pipeline).expect("the fuzz pipelines parse");
        let mut ctx = PassContext {
            calib: calib.clone().filter(|_| needs_calib),
            ..PassContext::default()
        };
        if PassManager::new(steps)
            .run(&mut transformed, &mut ctx, &mut |_, _| {})
            .is_ok()
        {
            run(&transformed);
        }
    }
    Outcome::Ran
}

/// Runs `case` on `cases` inputs drawn from `strategy` (`PROPTEST_CASES=N` overrides the count),
/// prints the tally under `what`, fails on the first panic (shrunk to a small input), and checks
/// that the inputs reached every stage: some rejected, some accepted and run.
pub fn run_cases<S: proptest::strategy::Strategy>(
    what: &str,
    cases: u32,
    strategy: S,
    case: impl Fn(S::Value) -> Outcome,
) {
    use proptest::test_runner::{Config, TestRunner};
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let tally = std::cell::RefCell::new(Tally::default());
    let result = runner.run(&strategy, |v| {
        tally.borrow_mut().add(case(v));
        Ok(())
    });
    let tally = tally.into_inner();
    eprintln!("{what}: {tally}");
    if let Err(e) = result {
        panic!("{what}: {e}");
    }
    assert!(
        tally.rejected > 0 && tally.ran > 0,
        "{what}: the inputs did not reach every stage: {tally}"
    );
}
