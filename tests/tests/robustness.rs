//! Mutated IR text (byte flips, truncation, token swaps and deletions, duplicated lines) must give
//! an error or a module, never a panic, from the parser and the verifier.

use proptest::prelude::*;
use qcc_dialects::{SourceFile, parse_module, print_module};
use qcc_tests::workspace_root;

fn corpus() -> Vec<String> {
    let mut files = Vec::new();
    for area in ["parser", "fold-batchnorm", "canonicalize"] {
        let dir = workspace_root().join("tests/filetests").join(area);
        for entry in std::fs::read_dir(dir).expect("filetest dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "ir") {
                files.push(std::fs::read_to_string(path).expect("readable"));
            }
        }
    }
    files.sort();
    files
}

#[derive(Clone, Debug)]
enum Mutation {
    FlipByte { at: usize, byte: u8 },
    Truncate { at: usize },
    SwapTokens { a: usize, b: usize },
    DeleteToken { at: usize },
    DuplicateLine { at: usize },
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
            let mut tokens: Vec<&str> = text
                .split_inclusive(|c: char| c.is_whitespace() || "(){}[]<>,:=".contains(c))
                .collect();
            let n = tokens.len();
            tokens.swap(a % n, b % n);
            tokens.concat()
        }
        Mutation::DeleteToken { at } => {
            let mut tokens: Vec<&str> = text
                .split_inclusive(|c: char| c.is_whitespace() || "(){}[]<>,:=".contains(c))
                .collect();
            let n = tokens.len();
            tokens.remove(at % n);
            tokens.concat()
        }
        Mutation::DuplicateLine { at } => {
            let mut lines: Vec<&str> = text.lines().collect();
            let i = at % lines.len();
            lines.insert(i, lines[i]);
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
        any::<usize>().prop_map(|at| Mutation::DuplicateLine { at }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn mutated_ir_never_panics(file in any::<usize>(), edits in proptest::collection::vec(mutation(), 1..4)) {
        let files = corpus();
        let mut text = files[file % files.len()].clone();
        for m in &edits {
            if text.is_empty() {
                break;
            }
            text = apply(&text, m);
        }
        let dir = workspace_root().join("tests/filetests/parser");
        let source = SourceFile::new("mutated.ir", text);
        match parse_module(&source, Some(&dir)) {
            // Whatever parses must print and parse back.
            Ok(module) => {
                let printed = print_module(&module);
                let again = parse_module(&SourceFile::new("printed.ir", printed.clone()), Some(&dir));
                prop_assert!(again.is_ok(), "the print of a valid mutant does not parse:\n{printed}");
            }
            Err(diags) => {
                prop_assert!(!diags.is_empty());
                for d in diags {
                    let _ = d.render(Some(&source));
                }
            }
        }
    }
}
