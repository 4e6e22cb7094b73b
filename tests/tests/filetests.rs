//! The filetest harness: every `tests/filetests/<area>/*.ir` file is one test, driven by
//! directives in its comments, so a new test needs no Rust code.
//!
//! - `// RUN: roundtrip` parses, prints, parses the print and prints again; both prints must be
//!   equal, and the print is snapshotted.
//! - `// RUN: ARGS` (e.g. `--passes=fold-batchnorm`) runs `qcc ARGS FILE`; it must succeed, its
//!   output must parse and print back unchanged, and stdout (plus any stderr) is snapshotted.
//! - `// error: TEXT` marks an expected diagnostic whose message contains TEXT, located on that
//!   line (a trailing comment) or on the next line of code (a comment on a line of its own).
//!   With any, qcc must exit with code 1 and report exactly those lines; stderr is snapshotted.
//! - `// fail: TEXT`: qcc must exit with code 1 and stderr must contain TEXT (errors that have
//!   no source location, such as a bad pipeline).

use std::path::Path;

use qcc_dialects::{SourceFile, parse_module, print_module};
use qcc_tests::{qcc, relative_to_root, workspace_root};

struct Directives {
    run: String,
    errors: Vec<(usize, String)>,
    failures: Vec<String>,
}

fn directives(text: &str) -> Directives {
    let lines: Vec<&str> = text.lines().collect();
    let mut d = Directives {
        run: String::new(),
        errors: Vec::new(),
        failures: Vec::new(),
    };
    for (i, line) in lines.iter().enumerate() {
        let Some(pos) = line.find("//") else { continue };
        let comment = line[pos + 2..].trim();
        if let Some(run) = comment.strip_prefix("RUN:") {
            d.run = run.trim().to_string();
        } else if let Some(msg) = comment.strip_prefix("error:") {
            let own_line = line[..pos].trim().is_empty();
            let target = if own_line {
                (i + 1..lines.len())
                    .find(|&j| {
                        let t = lines[j].trim();
                        !t.is_empty() && !t.starts_with("//")
                    })
                    .unwrap_or(i)
            } else {
                i
            };
            d.errors.push((target + 1, msg.trim().to_string()));
        } else if let Some(msg) = comment.strip_prefix("fail:") {
            d.failures.push(msg.trim().to_string());
        }
    }
    d
}

fn roundtrip(text: &str, name: &str, dir: &Path) -> String {
    let first = parse_module(&SourceFile::new(name, text), Some(dir)).unwrap_or_else(|d| {
        panic!(
            "{name} does not parse: {}",
            d[0].render(Some(&SourceFile::new(name, text)))
        )
    });
    let printed = print_module(&first);
    let second = parse_module(
        &SourceFile::new(format!("{name} (printed)"), printed.clone()),
        Some(dir),
    )
    .unwrap_or_else(|d| {
        panic!(
            "the print of {name} does not parse:\n{printed}\n{}",
            d[0].message
        )
    });
    assert_eq!(
        printed,
        print_module(&second),
        "{name}: print -> parse -> print is not the identity"
    );
    printed
}

fn check(path: &Path) -> String {
    let rel = relative_to_root(path);
    let text = std::fs::read_to_string(path).expect("filetest is readable");
    let d = directives(&text);
    assert!(!d.run.is_empty(), "{rel}: no `// RUN:` line");
    if d.run == "roundtrip" && d.errors.is_empty() && d.failures.is_empty() {
        return roundtrip(&text, &rel, path.parent().expect("file has a directory"));
    }
    let mut args: Vec<String> = if d.run == "roundtrip" {
        Vec::new()
    } else {
        d.run.split_whitespace().map(str::to_string).collect()
    };
    args.push(rel.clone());
    let out = qcc(&args);
    if !d.errors.is_empty() || !d.failures.is_empty() {
        assert_eq!(
            out.code, 1,
            "{rel}: qcc should fail with exit code 1\nstderr:\n{}",
            out.stderr
        );
        assert!(
            out.stdout.is_empty(),
            "{rel}: a failing run printed to stdout"
        );
        let reported: Vec<(usize, &str)> = out
            .stderr
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(&format!("{rel}:"))?;
                let (line, rest) = rest.split_once(':')?;
                let (_, msg) = rest.split_once(": error: ")?;
                Some((line.parse().ok()?, msg))
            })
            .collect();
        for (line, want) in &d.errors {
            assert!(
                reported
                    .iter()
                    .any(|(l, msg)| l == line && msg.contains(want.as_str())),
                "{rel}: expected an error containing {want:?} at line {line}; got:\n{}",
                out.stderr
            );
        }
        assert_eq!(
            reported.len(),
            d.errors.len(),
            "{rel}: qcc reported other located errors than expected:\n{}",
            out.stderr
        );
        for want in &d.failures {
            assert!(
                out.stderr.contains(want.as_str()),
                "{rel}: stderr lacks {want:?}:\n{}",
                out.stderr
            );
        }
        return out.stderr;
    }
    assert_eq!(out.code, 0, "{rel}: qcc failed:\n{}", out.stderr);
    // Whatever qcc prints must itself be valid IR that prints back unchanged.
    roundtrip(
        &out.stdout,
        &format!("{rel} (output)"),
        path.parent().expect("file has a directory"),
    );
    if out.stderr.is_empty() {
        out.stdout
    } else {
        format!("{}\n// ----- stderr -----\n{}", out.stdout, out.stderr)
    }
}

#[test]
fn filetests() {
    // Paths in diagnostics are shown relative to the workspace root, as a user there would type them.
    std::env::set_current_dir(workspace_root()).expect("workspace root exists");
    insta::glob!("../filetests", "**/*.ir", |path| {
        insta::assert_snapshot!(check(path));
    });
}
