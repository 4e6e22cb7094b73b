//! Diagnostics: an error message with an optional source span, rendered rustc-style.

use std::fmt;

/// A byte range in a source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span from byte offsets.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }
}

/// A source text with the name it is reported under.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Path or name shown in diagnostics.
    pub name: String,
    /// The whole text.
    pub text: String,
}

impl SourceFile {
    /// A source file from a name and its text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> SourceFile {
        SourceFile {
            name: name.into(),
            text: text.into(),
        }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = floor_char_boundary(&self.text, offset.min(self.text.len()));
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = self.text[line_start..offset].chars().count() + 1;
        (line, col)
    }

    /// The text of a 1-based line, without its newline.
    pub fn line_text(&self, line: usize) -> &str {
        self.text.lines().nth(line - 1).unwrap_or("")
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The most characters of a source line a diagnostic shows.
const EXCERPT_CHARS: usize = 300;

/// The part of `line` to show around 1-based column `col`, with control characters made visible,
/// and the column of `col` within it. Long lines (minified or binary text) are cut to a window.
fn excerpt(line: &str, col: usize) -> (String, usize) {
    let chars: Vec<char> = line
        .chars()
        .map(|c| {
            if c.is_control() && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    if chars.len() <= EXCERPT_CHARS {
        return (chars.into_iter().collect(), col);
    }
    let start = col
        .saturating_sub(EXCERPT_CHARS / 2)
        .min(chars.len() - EXCERPT_CHARS);
    let end = start + EXCERPT_CHARS;
    let mut shown = String::new();
    if start > 0 {
        shown.push_str("...");
    }
    shown.extend(&chars[start..end]);
    if end < chars.len() {
        shown.push_str("...");
    }
    let lead = if start > 0 { 3 } else { 0 };
    (shown, col - start + lead)
}

/// An error, optionally located in the source, with notes.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// What is wrong.
    pub message: String,
    /// Where, if known.
    pub span: Option<Span>,
    /// Extra lines shown after the source excerpt.
    pub notes: Vec<String>,
}

impl Diagnostic {
    /// An error at a span.
    pub fn at(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            span: Some(span),
            notes: Vec::new(),
        }
    }

    /// An error with no location.
    pub fn new(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            span: None,
            notes: Vec::new(),
        }
    }

    /// Adds a note.
    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// The 1-based line of the span in `file`, if located.
    pub fn line(&self, file: &SourceFile) -> Option<usize> {
        self.span.map(|s| file.line_col(s.start).0)
    }

    /// Renders `file:line:col: error: message`, the source line and a caret under the span.
    pub fn render(&self, file: Option<&SourceFile>) -> String {
        let mut out = String::new();
        match (file, self.span) {
            (Some(file), Some(span)) => {
                let (line, col) = file.line_col(span.start);
                let text = file.line_text(line);
                out.push_str(&format!(
                    "{}:{line}:{col}: error: {}\n",
                    file.name, self.message
                ));
                let gutter = line.to_string().len();
                let (end_line, end_col) = file.line_col(span.end);
                let width = if end_line == line && end_col > col {
                    end_col - col
                } else {
                    1
                };
                let (shown, caret_col) = excerpt(text, col);
                let width = width.min(EXCERPT_CHARS);
                out.push_str(&format!("{:gutter$} |\n", ""));
                out.push_str(&format!("{line} | {shown}\n"));
                let lead: String = shown
                    .chars()
                    .take(caret_col - 1)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                out.push_str(&format!("{:gutter$} | {lead}{}\n", "", "^".repeat(width)));
            }
            (Some(file), None) => {
                out.push_str(&format!("{}: error: {}\n", file.name, self.message))
            }
            (None, _) => out.push_str(&format!("error: {}\n", self.message)),
        }
        for note in &self.notes {
            out.push_str(&format!("  = note: {note}\n"));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Diagnostic {}
