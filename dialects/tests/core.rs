//! Unit-level checks of the lexer, diagnostics, types and graph editing.

use logos::Logos;
use qcc_dialects::lexer::{Num, Tok};
use qcc_dialects::{
    Attrs, Diagnostic, ElemType, Function, OpKind, Operation, SourceFile, Span, TensorType, Value,
    registry,
};

fn lex(s: &str) -> Vec<Tok> {
    Tok::lexer(s).map(|t| t.expect("lexes")).collect()
}

#[test]
fn shapes_lex_as_dimensions_then_the_element_type() {
    assert_eq!(
        lex("tensor<1x3x224x224xf32>"),
        vec![
            Tok::Tensor,
            Tok::Less,
            Tok::Dim(1),
            Tok::Dim(3),
            Tok::Dim(224),
            Tok::Dim(224),
            Tok::Ident("f32".into()),
            Tok::Greater
        ]
    );
}

#[test]
fn numbers_cover_ints_floats_exponents_and_specials() {
    assert_eq!(
        lex("-12 0.5 -1.5e-3 2E+4 1e5 inf -inf"),
        vec![
            Tok::Number(Num::Int(-12)),
            Tok::Number(Num::Float(0.5)),
            Tok::Number(Num::Float(-1.5e-3)),
            Tok::Number(Num::Float(2e4)),
            Tok::Number(Num::Float(1e5)),
            Tok::Number(Num::Float(f64::INFINITY)),
            Tok::Number(Num::Float(f64::NEG_INFINITY)),
        ]
    );
    assert!(Tok::lexer("1.2.3").next().expect("a token").is_err());
    assert!(
        Tok::lexer("99999999999999999999")
            .next()
            .expect("a token")
            .is_err()
    );
}

#[test]
fn diagnostics_point_at_line_and_column() {
    let file = SourceFile::new("m.ir", "first\n  second line\n");
    let d = Diagnostic::at(Span::new(8, 14), "bad thing");
    assert_eq!(
        d.render(Some(&file)),
        "m.ir:2:3: error: bad thing\n  |\n2 |   second line\n  |   ^^^^^^\n"
    );
}

#[test]
fn quant_types_print_as_they_parse() {
    let t = TensorType::new(
        vec![2],
        ElemType::Quant(qcc_dialects::QuantType {
            storage: qcc_dialects::Storage::I8,
            params: qcc_dialects::QuantParams::PerAxis {
                axis: 0,
                scales: vec![0.5, 0.25],
                zero_points: vec![0, 3],
            },
        }),
    );
    assert_eq!(
        t.to_string(),
        "tensor<2x!quant.uniform<i8:f32:0, {0.5, 0.25:3}>>"
    );
    assert!(t.validate().is_ok());
}

#[test]
fn registry_suggests_close_names() {
    assert_eq!(registry().suggest("nn.batchnorm"), Some("nn.batch_norm"));
    assert_eq!(registry().suggest("completely.different"), None);
}

#[test]
fn schedule_places_new_ops_before_their_first_user() {
    let mut f = Function::new("main");
    let x = f.add_arg("x", TensorType::f32(vec![4]));
    let relu =
        |n: &str| Operation::of(OpKind::Relu, Attrs::new(), TensorType::f32(vec![4])).named(n);
    let a = f.add_op(relu("a"), &[x]);
    let b = f.add_op(relu("b"), &[Value::of(a)]);
    f.results.push(Value::of(b));
    // Insert c between a and b.
    let c = f.add_op(relu("c"), &[Value::of(a)]);
    f.set_operand(b, 0, Value::of(c));
    assert_eq!(f.schedule(), vec![a, c, b]);
    f.replace_all_uses(Value::of(b), Value::of(c));
    assert_eq!(f.results, vec![Value::of(c)]);
    assert_eq!(f.use_count(Value::of(b)), 0);
}

/// `OpKind` and the registry name the same ops: every kind is registered under its name, and
/// every registered op has a kind, so an exhaustive match over `OpKind` covers every op.
#[test]
fn every_registered_op_has_a_kind_and_back() {
    let registry = qcc_dialects::registry();
    for kind in OpKind::ALL {
        let def = registry
            .get(kind.name())
            .unwrap_or_else(|| panic!("{kind} is not registered"));
        assert_eq!(def.kind, kind);
        assert_eq!(OpKind::from_name(kind.name()), Some(kind));
    }
    assert_eq!(registry.ops().count(), OpKind::ALL.len());
}
