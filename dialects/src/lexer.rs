//! The lexer of the textual IR (logos).

use logos::Logos;

use crate::diag::Span;

/// What went wrong while lexing.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum LexError {
    /// A character that starts no token.
    #[default]
    UnexpectedChar,
    /// Something that starts like a number but is not one.
    MalformedNumber(String),
    /// A string literal with a bad escape or no closing quote.
    BadString(String),
    /// A dimension too large to represent.
    BadDim(String),
}

/// A numeric literal.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Num {
    /// Written without a fraction or exponent.
    Int(i64),
    /// Written with a fraction or exponent, or `inf`/`nan`.
    Float(f64),
}

impl Num {
    /// The value as a float.
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(v) => v as f64,
            Num::Float(v) => v,
        }
    }
}

fn number(lex: &mut logos::Lexer<Tok>) -> Result<Num, LexError> {
    let s = lex.slice();
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .map(Num::Int)
            .map_err(|_| LexError::MalformedNumber(s.to_string()));
    }
    let valid_float = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    match s.parse::<f64>() {
        Ok(v) if valid_float => Ok(Num::Float(v)),
        _ => Err(LexError::MalformedNumber(s.to_string())),
    }
}

fn special_float(lex: &mut logos::Lexer<Tok>) -> Num {
    Num::Float(match lex.slice() {
        "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        _ => f64::NAN,
    })
}

fn dim(lex: &mut logos::Lexer<Tok>) -> Result<usize, LexError> {
    let s = lex.slice();
    s[..s.len() - 1]
        .parse()
        .map_err(|_| LexError::BadDim(s.to_string()))
}

fn string(lex: &mut logos::Lexer<Tok>) -> Result<String, LexError> {
    let s = lex.slice();
    let inner = &s[1..s.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            other => {
                return Err(LexError::BadString(format!(
                    "unknown escape '\\{}'",
                    other.map(String::from).unwrap_or_default()
                )));
            }
        }
    }
    Ok(out)
}

/// A token of the textual IR.
#[derive(Logos, Clone, Debug, PartialEq)]
#[logos(error = LexError)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(skip r"//[^\n]*")]
pub enum Tok {
    /// `module`
    #[token("module")]
    Module,
    /// `attributes`
    #[token("attributes")]
    Attributes,
    /// `func.func`
    #[token("func.func")]
    Func,
    /// `return`
    #[token("return")]
    Return,
    /// `tensor`
    #[token("tensor")]
    Tensor,
    /// `dense`
    #[token("dense")]
    Dense,
    /// `true`
    #[token("true")]
    True,
    /// `false`
    #[token("false")]
    False,
    /// `%name`: an SSA value.
    #[regex(r"%[A-Za-z0-9_$.\-]+", |lex| lex.slice()[1..].to_string())]
    ValueId(String),
    /// `@name`: a symbol.
    #[regex(r"@[A-Za-z_][A-Za-z0-9_$.\-]*", |lex| lex.slice()[1..].to_string())]
    SymbolId(String),
    /// `!dialect.name`: a dialect type.
    #[regex(r"![A-Za-z_][A-Za-z0-9_.]*", |lex| lex.slice()[1..].to_string())]
    DialectType(String),
    /// A bare identifier: op names, element types, attribute names.
    #[regex(r"[A-Za-z_][A-Za-z0-9_.$]*", |lex| lex.slice().to_string())]
    Ident(String),
    /// `N x` inside a tensor type.
    #[regex(r"[0-9]+x", dim)]
    Dim(usize),
    /// A number.
    #[regex(r"-?[0-9]([0-9a-wyzA-WYZ_.]|[eE][+-])*", number)]
    #[token("inf", special_float)]
    #[token("-inf", special_float)]
    #[token("nan", special_float)]
    #[token("NaN", special_float)]
    Number(Num),
    /// A string literal.
    #[regex(r#""([^"\\\n]|\\.)*""#, string)]
    Str(String),
    /// `(`
    #[token("(")]
    LParen,
    /// `)`
    #[token(")")]
    RParen,
    /// `{`
    #[token("{")]
    LBrace,
    /// `}`
    #[token("}")]
    RBrace,
    /// `[`
    #[token("[")]
    LBracket,
    /// `]`
    #[token("]")]
    RBracket,
    /// `<`
    #[token("<")]
    Less,
    /// `>`
    #[token(">")]
    Greater,
    /// `,`
    #[token(",")]
    Comma,
    /// `:`
    #[token(":")]
    Colon,
    /// `=`
    #[token("=")]
    Equals,
    /// `->`
    #[token("->")]
    Arrow,
}

impl Tok {
    /// How the token is shown in error messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::ValueId(s) => format!("value '%{s}'"),
            Tok::SymbolId(s) => format!("symbol '@{s}'"),
            Tok::DialectType(s) => format!("type '!{s}'"),
            Tok::Ident(s) => format!("identifier '{s}'"),
            Tok::Dim(d) => format!("dimension '{d}x'"),
            Tok::Number(Num::Int(v)) => format!("number '{v}'"),
            Tok::Number(Num::Float(v)) => format!("number '{v:?}'"),
            Tok::Str(s) => format!("string {s:?}"),
            other => format!("'{}'", other.text()),
        }
    }

    fn text(&self) -> &'static str {
        match self {
            Tok::Module => "module",
            Tok::Attributes => "attributes",
            Tok::Func => "func.func",
            Tok::Return => "return",
            Tok::Tensor => "tensor",
            Tok::Dense => "dense",
            Tok::True => "true",
            Tok::False => "false",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Less => "<",
            Tok::Greater => ">",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Equals => "=",
            Tok::Arrow => "->",
            _ => "",
        }
    }
}

/// An error found while lexing or parsing, with its location.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntaxError {
    /// What went wrong.
    pub message: String,
    /// Where.
    pub span: Span,
}

impl SyntaxError {
    /// An error at a span.
    pub fn new(span: Span, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            message: message.into(),
            span,
        }
    }
}

fn lex_error_message(error: &LexError, source: &str, start: usize) -> String {
    match error {
        LexError::UnexpectedChar => {
            let c = source[start..].chars().next().unwrap_or(' ');
            if c == '"' {
                "unterminated string literal".to_string()
            } else {
                format!("unexpected character '{c}'")
            }
        }
        LexError::MalformedNumber(s) => format!("malformed number '{s}'"),
        LexError::BadString(why) => format!("bad string literal: {why}"),
        LexError::BadDim(s) => format!("dimension '{s}' is too large"),
    }
}

/// The token stream in the form the generated parser takes.
pub struct Lexer<'a> {
    source: &'a str,
    inner: logos::SpannedIter<'a, Tok>,
}

impl<'a> Lexer<'a> {
    /// Lexes `source`.
    pub fn new(source: &'a str) -> Lexer<'a> {
        Lexer {
            source,
            inner: Tok::lexer(source).spanned(),
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Result<(usize, Tok, usize), SyntaxError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (tok, range) = self.inner.next()?;
        Some(match tok {
            Ok(tok) => Ok((range.start, tok, range.end)),
            Err(error) => Err(SyntaxError::new(
                Span::new(range.start, range.end),
                lex_error_message(&error, self.source, range.start),
            )),
        })
    }
}
