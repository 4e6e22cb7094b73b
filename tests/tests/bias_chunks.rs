//! Bias correction steps the float network and computes accumulators a chunk of images at a
//! time, and keeps a layer's values for its second pass or computes them again; neither changes
//! what it measures or chooses, only the memory and time it takes.

use std::path::Path;
use std::sync::Arc;

use qcc_dialects::Tensor;
use qcc_passes::bias::{At, Holding, Mode, Outcome, lockstep};
use qcc_passes::{PassContext, PassManager, parse_pipeline};

/// `n` inputs of `shape` (batch first) with values spread over [-1, 1), from a fixed LCG.
fn inputs(shape: &[usize], n: usize) -> Tensor {
    let mut shape = shape.to_vec();
    shape[0] = n;
    let mut state = 0x2545_f491_u32;
    let data = (0..shape.iter().product::<usize>())
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_f32(shape, data)
}

fn same(a: &[Outcome], b: &[Outcome], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: layers measured");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.node, y.node, "{what}: layer order");
        assert_eq!(x.bias, y.bias, "{what}: bias of {:?}", x.node);
        assert_eq!(x.kept, y.kept, "{what}: guard of {:?}", x.node);
        for (s, t) in x.shift.iter().zip(&y.shift) {
            assert!(
                (s - t).abs() <= 1e-9 * s.abs().max(t.abs()).max(1e-12),
                "{what}: shift of {:?}: {s} against {t}",
                x.node
            );
        }
    }
}

#[test]
fn bias_correction_does_not_depend_on_the_chunk_size() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mobilenet_v2/model.onnx");
    let mut module = qcc_compiler::onnx::import_file(&path)
        .expect("the bundled model imports")
        .module;
    let ty = qcc_compiler::model::input_type(&module).expect("an input type");
    // 11 images: chunks of 4 leave a partial one, chunks of 1 split every image.
    let calib = inputs(&ty.shape, 11);
    let mut ctx = PassContext {
        engine: Arc::new(qcc_codegen::Native),
        calib: Some(calib.clone()),
        ..PassContext::default()
    };
    let pipeline =
        parse_pipeline("fold-batchnorm,quantize{granularity=per-tensor}").expect("pipeline");
    PassManager::new(pipeline)
        .run(&mut module, &mut ctx, &mut |_, _| {})
        .expect("quantize");
    let reference = ctx
        .float_reference
        .clone()
        .expect("quantize leaves the float reference");
    for (at, mode, what) in [
        (
            At::PreActivation,
            Mode::Correct,
            "correct before the activation",
        ),
        (
            At::PostActivation,
            Mode::Correct,
            "correct after the activation",
        ),
        (At::PostActivation, Mode::Fit { steps: 3, lr: 0.5 }, "fit"),
    ] {
        let run = |chunk, kept_per_layer| {
            let holding = Holding {
                chunk,
                kept_per_layer,
            };
            lockstep(
                ctx.engine.as_ref(),
                &module,
                &reference,
                &calib,
                at,
                mode,
                holding,
            )
            .expect("lockstep")
        };
        let whole = run(64, 0);
        assert!(whole.iter().any(|o| o.kept), "{what}: nothing changed");
        // Every layer's values kept for the second pass, and none (recomputed from the float
        // ops' inputs, or the accumulators computed again).
        for chunk in [1, 4] {
            for kept in [usize::MAX, 0] {
                same(
                    &whole,
                    &run(chunk, kept),
                    &format!("{what}, chunks of {chunk}, {kept} bytes kept"),
                );
            }
        }
    }
}
