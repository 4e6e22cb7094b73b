//! Writes the safetensors files the filetests read. Run from the workspace root:
//! `cargo run -p qcc-tests --example make_fixtures`. The values are fixed, so the output is
//! byte-identical every time; the files are committed.

use std::collections::BTreeMap;

use qcc_dialects::{Tensor, TensorData};

fn ramp(n: usize, scale: f32, offset: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7 % 11) as f32 - 5.0) * scale + offset)
        .collect()
}

fn write(path: &str, tensors: Vec<(&str, Vec<usize>, TensorData)>) {
    let map: BTreeMap<String, Tensor> = tensors
        .into_iter()
        .map(|(n, s, d)| {
            (
                n.to_string(),
                Tensor::new(s, d).expect("consistent fixture"),
            )
        })
        .collect();
    let bytes = qcc_dialects::weights::to_bytes(&map).expect("fixture serializes");
    std::fs::write(path, bytes).expect("fixture is writable");
    println!("wrote {path}");
}

/// Batch-norm parameters for `c` channels: scale, bias, mean, variance.
fn bn(prefix: &str, c: usize, seed: usize) -> Vec<(String, Vec<usize>, TensorData)> {
    let f = |k: usize, lo: f32, span: f32| -> Vec<f32> {
        (0..c)
            .map(|i| lo + span * (((i + seed) * (k + 3) * 7919 % 101) as f32 / 100.0))
            .collect()
    };
    vec![
        (
            format!("{prefix}.scale"),
            vec![c],
            TensorData::F32(f(1, 0.5, 1.5)),
        ),
        (
            format!("{prefix}.bias"),
            vec![c],
            TensorData::F32(f(2, -0.5, 1.0)),
        ),
        (
            format!("{prefix}.mean"),
            vec![c],
            TensorData::F32(f(3, -0.3, 0.6)),
        ),
        (
            format!("{prefix}.var"),
            vec![c],
            TensorData::F32(f(4, 0.05, 2.0)),
        ),
    ]
}

/// Writes f32 network inputs as a `.npy` file.
fn write_npy(path: &str, shape: Vec<usize>, data: Vec<f32>) {
    let bytes = qcc_runtime::io::npy_bytes(&Tensor::from_f32(shape, data)).expect("npy encodes");
    std::fs::write(path, bytes).expect("fixture is writable");
    println!("wrote {path}");
}

/// Deterministic values in [0, 2) (an LCG), so that calibration ranges are stable.
fn inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 23) as f32
        })
        .collect()
}

fn main() {
    std::fs::create_dir_all("tests/filetests/quantize").expect("folder");
    write_npy(
        "tests/filetests/quantize/calib.npy",
        vec![8, 2, 6, 6],
        inputs(8 * 2 * 36, 1).iter().map(|v| v - 0.5).collect(),
    );
    write_npy(
        "tests/filetests/quantize/calib_vec.npy",
        vec![8, 8],
        inputs(64, 2),
    );
    std::fs::create_dir_all("tests/filetests/bias").expect("folder");
    write_npy(
        "tests/filetests/bias/ones.npy",
        vec![4, 2, 3, 3],
        vec![1.0; 4 * 2 * 9],
    );
    let mut stem: Vec<(String, Vec<usize>, TensorData)> = vec![
        (
            "conv0.weight".into(),
            vec![8, 3, 3, 3],
            TensorData::F32(ramp(216, 0.08, 0.01)),
        ),
        (
            "dw1.weight".into(),
            vec![8, 1, 3, 3],
            TensorData::F32(ramp(72, 0.15, 0.02)),
        ),
        (
            "pw1.weight".into(),
            vec![16, 8, 1, 1],
            TensorData::F32(ramp(128, 0.1, -0.01)),
        ),
        (
            "fc.weight".into(),
            vec![10, 16],
            TensorData::F32(ramp(160, 0.05, 0.0)),
        ),
        (
            "fc.bias".into(),
            vec![10],
            TensorData::F32(ramp(10, 0.1, 0.0)),
        ),
    ];
    stem.extend(bn("bn0", 8, 1));
    stem.extend(bn("bn1", 8, 2));
    stem.extend(bn("bn2", 16, 3));
    write(
        "examples/stem/model.safetensors",
        stem.iter()
            .map(|(n, s, d)| (n.as_str(), s.clone(), d.clone()))
            .collect(),
    );
    write(
        "tests/filetests/parser/small.safetensors",
        vec![
            (
                "conv.weight",
                vec![2, 1, 3, 3],
                TensorData::F32(ramp(18, 0.25, 0.0)),
            ),
            ("conv.bias", vec![2], TensorData::F32(vec![0.5, -0.5])),
            (
                "fc.weight",
                vec![3, 8],
                TensorData::I8((0..24).map(|i| (i * 5 % 17) as i8 - 8).collect()),
            ),
            ("fc.bias", vec![3], TensorData::I32(vec![100, -7, 0])),
        ],
    );
    write(
        "tests/filetests/fold-batchnorm/bn.safetensors",
        vec![
            (
                "stem.weight",
                vec![4, 3, 3, 3],
                TensorData::F32(ramp(108, 0.1, 0.05)),
            ),
            (
                "stem.bn.scale",
                vec![4],
                TensorData::F32(vec![1.0, 0.5, 2.0, 1.5]),
            ),
            (
                "stem.bn.bias",
                vec![4],
                TensorData::F32(vec![0.1, 0.0, -0.3, 0.2]),
            ),
            (
                "stem.bn.mean",
                vec![4],
                TensorData::F32(vec![0.2, -0.1, 0.0, 0.4]),
            ),
            (
                "stem.bn.var",
                vec![4],
                TensorData::F32(vec![1.0, 0.25, 4.0, 3.9e-36]),
            ),
        ],
    );
}
