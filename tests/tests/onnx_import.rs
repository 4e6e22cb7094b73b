//! The ONNX importer on the models of `tests/filetests/onnx/` (made by bench/make_onnx_fixtures.py):
//! each imported module is snapshotted and, run on the model's input, must reproduce ONNX
//! Runtime's output; each `error_*` model must fail with a clear message and write nothing.

use std::path::Path;

use proptest::prelude::*;
use prost::Message;
use qcc_compiler::onnx::proto::ModelProto;
use qcc_dialects::{SourceFile, parse_module};
use qcc_runtime::Interpreter;
use qcc_runtime::io::read_npy;
use qcc_tests::fuzz::{onnx_case, run_cases};
use qcc_tests::{qcc, relative_to_root, workspace_root};

fn check(path: &Path) -> String {
    let rel = relative_to_root(path);
    let stem = path
        .file_stem()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    if stem.starts_with("error_") {
        let dir = std::env::temp_dir().join(format!("qcc-onnx-{stem}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let out = qcc(&[
            "import",
            &rel,
            "-o",
            &dir.join("out.ir").display().to_string(),
        ]);
        assert_eq!(
            out.code, 1,
            "{rel}: the import should fail:\n{}",
            out.stderr
        );
        assert_eq!(
            std::fs::read_dir(&dir).expect("dir").count(),
            0,
            "{rel}: a failed import wrote files"
        );
        return out.stderr;
    }
    let out = qcc(&[&rel]);
    assert_eq!(out.code, 0, "{rel}: import failed:\n{}", out.stderr);
    let module = parse_module(&SourceFile::new("imported.ir", out.stdout.clone()), None)
        .unwrap_or_else(|d| panic!("{rel}: the printed module does not parse: {}", d[0].message));
    let input = path.with_file_name(format!("{stem}.input.npy"));
    let expected =
        read_npy(&path.with_file_name(format!("{stem}.output.npy"))).expect("expected output");
    let x = read_npy(&input).expect("input");
    let got = Interpreter::new(&module, "main")
        .expect("prepares")
        .run(&[x])
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    assert_eq!(got[0].shape, expected.shape, "{rel}: output shape");
    let (g, e) = (
        got[0].as_f32().expect("f32"),
        expected.as_f32().expect("f32"),
    );
    let scale = e.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = g
        .iter()
        .zip(e)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-5 * scale,
        "{rel}: differs from ONNX Runtime by {diff}"
    );
    out.stdout
}

#[test]
fn onnx_models_import_and_match_onnx_runtime() {
    std::env::set_current_dir(workspace_root()).expect("workspace root exists");
    insta::glob!("../filetests", "onnx/*.onnx", |path| {
        insta::assert_snapshot!(check(path));
    });
}

/// The ONNX fixtures, and QDQ models of those with integer forms (what `qcc export` writes), so
/// the damage reaches the QDQ import too.
fn corpus() -> Vec<Vec<u8>> {
    let dir = workspace_root().join("tests/filetests/onnx");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    let mut models: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).expect("readable"))
        .collect();
    for (name, module) in qcc_tests::quantized_onnx_fixtures() {
        let exported =
            qcc_compiler::onnx::export(&module, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        models.push(exported.bytes);
    }
    models
}

/// Cases per CI run of each damaged-ONNX test; `PROPTEST_CASES=N` runs more.
const CASES: u32 = 600;

/// Truncated and bit-flipped ONNX bytes give an error or a module, never a panic.
#[test]
fn damaged_onnx_bytes_never_panic() {
    let files = corpus();
    let strategy = (
        any::<usize>(),
        any::<usize>(),
        proptest::collection::vec((any::<usize>(), 0u8..8), 0..6),
    );
    run_cases(
        "damaged ONNX bytes",
        CASES,
        strategy,
        |(file, cut, flips)| {
            let mut bytes = files[file % files.len()].clone();
            for (at, bit) in flips {
                if !bytes.is_empty() {
                    let i = at % bytes.len();
                    bytes[i] ^= 1 << bit;
                }
            }
            if cut % 3 == 0 && !bytes.is_empty() {
                bytes.truncate(cut % bytes.len());
            }
            onnx_case(&bytes)
        },
    );
}

/// Values that stress shape arithmetic and indexing where a dimension, an attribute or an index
/// is expected.
const HOSTILE_INTS: &[i64] = &[
    0,
    1,
    2,
    3,
    -1,
    -2,
    7,
    255,
    65536,
    1 << 31,
    (1 << 31) - 1,
    1 << 40,
    i64::MAX,
    i64::MIN,
];

/// One structural change to a decoded model, made through the protobuf types.
#[derive(Clone, Debug)]
enum Edit {
    /// An initializer's dimension set to a hostile value (its data stays as it was).
    InitializerDim {
        which: usize,
        dim: usize,
        value: usize,
    },
    /// A graph input's dimension set to a hostile value, or made symbolic.
    InputDim {
        dim: usize,
        value: usize,
        symbolic: bool,
    },
    /// An initializer removed: its readers name a value nobody defines.
    DropInitializer {
        which: usize,
    },
    /// A node input renamed to a value nobody defines.
    DanglingInput {
        node: usize,
        input: usize,
    },
    /// A node reads the output of itself or of a later node.
    Cycle {
        node: usize,
        later: usize,
    },
    /// A node's op type replaced.
    OpType {
        node: usize,
        to: usize,
    },
    /// An initializer's or the input's data type replaced.
    DataType {
        which: usize,
        to: i32,
        input: bool,
    },
    /// An integer or integer-list attribute set to a hostile value.
    IntAttribute {
        node: usize,
        attr: usize,
        value: usize,
    },
    /// An attribute's declared type changed (e.g. ints read as a float).
    AttributeType {
        node: usize,
        attr: usize,
        to: i32,
    },
    /// A node duplicated (two producers of the same value), or removed.
    DuplicateNode {
        node: usize,
    },
    RemoveNode {
        node: usize,
    },
    /// A graph output renamed to a value nobody defines, or the outputs removed.
    DanglingOutput,
    NoOutputs,
    /// The default-domain opset changed.
    Opset {
        version: i64,
    },
    /// An initializer's raw data cut short.
    TruncateData {
        which: usize,
        keep: usize,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    let u = || any::<usize>();
    prop_oneof![
        (u(), u(), u()).prop_map(|(which, dim, value)| Edit::InitializerDim { which, dim, value }),
        (u(), u(), any::<bool>()).prop_map(|(dim, value, symbolic)| Edit::InputDim {
            dim,
            value,
            symbolic
        }),
        u().prop_map(|which| Edit::DropInitializer { which }),
        (u(), u()).prop_map(|(node, input)| Edit::DanglingInput { node, input }),
        (u(), u()).prop_map(|(node, later)| Edit::Cycle { node, later }),
        (u(), u()).prop_map(|(node, to)| Edit::OpType { node, to }),
        (u(), -1i32..20, any::<bool>()).prop_map(|(which, to, input)| Edit::DataType {
            which,
            to,
            input
        }),
        (u(), u(), u()).prop_map(|(node, attr, value)| Edit::IntAttribute { node, attr, value }),
        (u(), u(), 0i32..13).prop_map(|(node, attr, to)| Edit::AttributeType { node, attr, to }),
        u().prop_map(|node| Edit::DuplicateNode { node }),
        u().prop_map(|node| Edit::RemoveNode { node }),
        Just(Edit::DanglingOutput),
        Just(Edit::NoOutputs),
        (-1i64..25).prop_map(|version| Edit::Opset { version }),
        (u(), u()).prop_map(|(which, keep)| Edit::TruncateData { which, keep }),
    ]
}

fn apply(model: &mut ModelProto, edit: &Edit) {
    use qcc_compiler::onnx::proto::tensor_shape_proto::{Dimension, dimension};
    use qcc_compiler::onnx::proto::type_proto;
    if let Edit::Opset { version } = *edit {
        for o in &mut model.opset_import {
            o.version = version;
        }
        return;
    }
    let Some(graph) = model.graph.as_mut() else {
        return;
    };
    let nodes = graph.node.len().max(1);
    let inits = graph.initializer.len().max(1);
    match *edit {
        Edit::InitializerDim { which, dim, value } => {
            if let Some(t) = graph.initializer.get_mut(which % inits)
                && !t.dims.is_empty()
            {
                let n = t.dims.len();
                t.dims[dim % n] = HOSTILE_INTS[value % HOSTILE_INTS.len()];
            }
        }
        Edit::InputDim {
            dim,
            value,
            symbolic,
        } => {
            let shape = graph
                .input
                .first_mut()
                .and_then(|i| i.r#type.as_mut())
                .and_then(|t| match t.value.as_mut() {
                    Some(type_proto::Value::TensorType(t)) => t.shape.as_mut(),
                    None => None,
                });
            if let Some(shape) = shape
                && !shape.dim.is_empty()
            {
                let n = shape.dim.len();
                shape.dim[dim % n] = Dimension {
                    value: Some(if symbolic {
                        dimension::Value::DimParam("n".into())
                    } else {
                        dimension::Value::DimValue(HOSTILE_INTS[value % HOSTILE_INTS.len()])
                    }),
                    ..Dimension::default()
                };
            }
        }
        Edit::DropInitializer { which } => {
            if !graph.initializer.is_empty() {
                graph.initializer.remove(which % inits);
            }
        }
        Edit::DanglingInput { node, input } => {
            if let Some(n) = graph.node.get_mut(node % nodes)
                && !n.input.is_empty()
            {
                let k = n.input.len();
                n.input[input % k] = "nobody_defines_this".into();
            }
        }
        Edit::Cycle { node, later } => {
            let i = node % nodes;
            let j = i + later % (nodes - i);
            let output = graph.node.get(j).and_then(|n| n.output.first().cloned());
            if let (Some(output), Some(n)) = (output, graph.node.get_mut(i))
                && !n.input.is_empty()
            {
                n.input[0] = output;
            }
        }
        Edit::OpType { node, to } => {
            let ops = [
                "Conv",
                "Relu",
                "Add",
                "Gemm",
                "Reshape",
                "Concat",
                "Softmax",
                "Pad",
                "MaxPool",
                "Frobnicate",
                "",
            ];
            if let Some(n) = graph.node.get_mut(node % nodes) {
                n.op_type = ops[to % ops.len()].into();
            }
        }
        Edit::DataType { which, to, input } => {
            if input {
                if let Some(type_proto::Value::TensorType(t)) = graph
                    .input
                    .first_mut()
                    .and_then(|i| i.r#type.as_mut())
                    .and_then(|t| t.value.as_mut())
                {
                    t.elem_type = to;
                }
            } else if let Some(t) = graph.initializer.get_mut(which % inits) {
                t.data_type = to;
            }
        }
        Edit::IntAttribute { node, attr, value } => {
            if let Some(n) = graph.node.get_mut(node % nodes)
                && !n.attribute.is_empty()
            {
                let k = n.attribute.len();
                let a = &mut n.attribute[attr % k];
                let v = HOSTILE_INTS[value % HOSTILE_INTS.len()];
                a.i = v;
                if let Some(first) = a.ints.first_mut() {
                    *first = v;
                }
            }
        }
        Edit::AttributeType { node, attr, to } => {
            if let Some(n) = graph.node.get_mut(node % nodes)
                && !n.attribute.is_empty()
            {
                let k = n.attribute.len();
                n.attribute[attr % k].r#type = to;
            }
        }
        Edit::DuplicateNode { node } => {
            if let Some(n) = graph.node.get(node % nodes).cloned() {
                graph.node.insert(node % nodes, n);
            }
        }
        Edit::RemoveNode { node } => {
            if !graph.node.is_empty() {
                graph.node.remove(node % nodes);
            }
        }
        Edit::DanglingOutput => {
            if let Some(o) = graph.output.first_mut() {
                o.name = "nobody_defines_this".into();
            }
        }
        Edit::NoOutputs => graph.output.clear(),
        Edit::TruncateData { which, keep } => {
            if let Some(t) = graph.initializer.get_mut(which % inits)
                && !t.raw_data.is_empty()
            {
                let k = keep % t.raw_data.len();
                t.raw_data.truncate(k);
            }
        }
        Edit::Opset { .. } => {}
    }
}

/// Models changed through the protobuf types (hostile dimensions, missing initializers, dangling
/// inputs, cycles, unknown ops, wrong data types and attributes) give an error or a module that
/// verifies and runs, never a panic, and never an allocation the shapes did not bound.
#[test]
fn mutated_onnx_models_never_panic() {
    let models: Vec<ModelProto> = corpus()
        .iter()
        .filter_map(|b| ModelProto::decode(b.as_slice()).ok())
        .filter(|m| m.graph.is_some())
        .collect();
    let strategy = (any::<usize>(), proptest::collection::vec(edit(), 1..4));
    run_cases("mutated ONNX models", CASES, strategy, |(which, edits)| {
        let mut model = models[which % models.len()].clone();
        for e in &edits {
            apply(&mut model, e);
        }
        onnx_case(&model.encode_to_vec())
    });
}

/// Found by the mutation test: an initializer whose dimensions claim 2^62 elements overflowed
/// the byte count its data was checked against.
#[test]
fn an_initializer_too_large_to_hold_is_an_error() {
    let bytes = std::fs::read(workspace_root().join("tests/filetests/onnx/conv_batchnorm.onnx"))
        .expect("fixture");
    let mut model = ModelProto::decode(bytes.as_slice()).expect("decodes");
    let graph = model.graph.as_mut().expect("graph");
    graph.initializer[0].dims = vec![1 << 62];
    let name = graph.initializer[0].name.clone();
    let e = qcc_compiler::onnx::import_bytes(&model.encode_to_vec(), "huge.onnx")
        .err()
        .expect("an error");
    assert!(
        e.contains(&format!("tensor '{name}'"))
            && e.contains("more than the 2147483648 elements a tensor may hold"),
        "{e}"
    );
}
