//! Mutated IR text (byte flips, truncation, tokens swapped, deleted, duplicated or replaced by
//! hostile ones, lines deleted, duplicated or swapped) from every filetest must give an error or a
//! module, never a panic; an accepted module must print back, verify, run on the interpreter and
//! go through the passes (`qcc_tests::fuzz`). `PROPTEST_CASES=N` runs more cases.

use std::path::PathBuf;

use proptest::prelude::*;
use qcc_tests::fuzz::{Outcome, Tally, ir_case, run_cases};
use qcc_tests::workspace_root;

/// Cases per CI run (30,000 were run once locally; see the closing note of the robustness issue).
const CASES: u32 = 1500;

fn corpus() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let root = workspace_root().join("tests/filetests");
    for area in std::fs::read_dir(&root).expect("filetests") {
        let dir = area.expect("entry").path();
        if !dir.is_dir() || dir.ends_with("onnx") {
            continue;
        }
        for entry in std::fs::read_dir(&dir).expect("filetest dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "ir") {
                files.push((
                    dir.clone(),
                    std::fs::read_to_string(path).expect("readable"),
                ));
            }
        }
    }
    files.sort();
    files
}

/// Tokens that stress the lexer, the parser and the verifier where they stand in for another.
const HOSTILE: &[&str] = &[
    "0",
    "-1",
    "4294967296",
    "2147483648",
    "9223372036854775807",
    "99999999999999999999",
    "1e400",
    "nan",
    "-inf",
    "0.0",
    "tensor<0xf32>",
    "tensor<2147483647x2147483647xf32>",
    "tensor<65536x65536xf32>",
    "tensor<1x3x4096x4096xf32>",
    "!quant.uniform<u8:f32, 0.0:0>",
    "!quant.uniform<i8:f32:7, {1.0}>",
    "!quant.uniform<u8:f32, 1.0:300>",
    "dense<1.0>",
    "dense<[]>",
    "nn.frobnicate",
    "quant.conv2d",
    "nn.reshape",
    "%0",
    "%undefined",
    "@main",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "<",
    ">",
    ",",
    ":",
    "=",
    "->",
    "\"",
    "\u{0}",
    "é",
    "//",
];

#[derive(Clone, Debug)]
enum Mutation {
    FlipByte { at: usize, byte: u8 },
    Truncate { at: usize },
    SwapTokens { a: usize, b: usize },
    DeleteToken { at: usize },
    DuplicateToken { at: usize },
    ReplaceToken { at: usize, with: usize },
    DeleteLine { at: usize },
    DuplicateLine { at: usize },
    SwapLines { a: usize, b: usize },
}

fn tokens(text: &str) -> Vec<&str> {
    text.split_inclusive(|c: char| c.is_whitespace() || "(){}[]<>,:=".contains(c))
        .collect()
}

fn apply(text: &str, m: &Mutation) -> String {
    match *m {
        Mutation::FlipByte { at, byte } => {
            let mut bytes = text.as_bytes().to_vec();
            let i = at % bytes.len();
            bytes[i] = byte;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Mutation::Truncate { at } => {
            let mut i = at % text.len();
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            text[..i].to_string()
        }
        Mutation::SwapTokens { a, b } => {
            let mut t = tokens(text);
            let n = t.len();
            t.swap(a % n, b % n);
            t.concat()
        }
        Mutation::DeleteToken { at } => {
            let mut t = tokens(text);
            let n = t.len();
            t.remove(at % n);
            t.concat()
        }
        Mutation::DuplicateToken { at } => {
            let mut t = tokens(text);
            let i = at % t.len();
            t.insert(i, t[i]);
            t.concat()
        }
        Mutation::ReplaceToken { at, with } => {
            let mut t: Vec<String> = tokens(text).into_iter().map(str::to_string).collect();
            let i = at % t.len();
            // Keep the separator the token ended with, so the replacement stays one token.
            let token = &t[i];
            let body =
                token.trim_end_matches(|c: char| c.is_whitespace() || "(){}[]<>,:=".contains(c));
            let tail = token[body.len()..].to_string();
            t[i] = format!("{}{tail}", HOSTILE[with % HOSTILE.len()]);
            t.concat()
        }
        Mutation::DeleteLine { at } => {
            let mut lines: Vec<&str> = text.lines().collect();
            let i = at % lines.len();
            lines.remove(i);
            lines.join("\n")
        }
        Mutation::DuplicateLine { at } => {
            let mut lines: Vec<&str> = text.lines().collect();
            let i = at % lines.len();
            lines.insert(i, lines[i]);
            lines.join("\n")
        }
        Mutation::SwapLines { a, b } => {
            let mut lines: Vec<&str> = text.lines().collect();
            let n = lines.len();
            lines.swap(a % n, b % n);
            lines.join("\n")
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::FlipByte { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapTokens { a, b }),
        any::<usize>().prop_map(|at| Mutation::DeleteToken { at }),
        any::<usize>().prop_map(|at| Mutation::DuplicateToken { at }),
        (any::<usize>(), any::<usize>()).prop_map(|(at, with)| Mutation::ReplaceToken { at, with }),
        any::<usize>().prop_map(|at| Mutation::DeleteLine { at }),
        any::<usize>().prop_map(|at| Mutation::DuplicateLine { at }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
    ]
}

#[test]
fn mutated_ir_never_panics() {
    let files = corpus();
    let strategy = (any::<usize>(), proptest::collection::vec(mutation(), 1..4));
    run_cases("mutated IR", CASES, strategy, |(file, edits)| {
        let (dir, original) = &files[file % files.len()];
        let mut text = original.clone();
        for m in &edits {
            if text.is_empty() {
                break;
            }
            text = apply(&text, m);
        }
        ir_case(&text, Some(dir))
    });
}

/// The unmutated filetests that parse are accepted and run: the harness itself works.
#[test]
fn every_valid_filetest_runs_through_the_fuzz_harness() {
    let mut tally = Tally::default();
    for (dir, text) in corpus() {
        tally.add(ir_case(&text, Some(&dir)));
    }
    assert!(tally.ran >= 40, "{tally}");
    assert_eq!(
        ir_case("not a module", None),
        Outcome::Rejected,
        "garbage is rejected"
    );
}
