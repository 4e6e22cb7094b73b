//! The syntax tree the grammar produces, before names and ops are resolved.

use crate::attr::Attr;
use crate::diag::Span;
use crate::types::TensorType;

/// A value with the span it was written at.
#[derive(Clone, Debug, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub node: T,
    /// Where it was written.
    pub span: Span,
}

impl<T> Spanned<T> {
    /// Wraps a value with its span.
    pub fn new(node: T, start: usize, end: usize) -> Spanned<T> {
        Spanned {
            node,
            span: Span::new(start, end),
        }
    }
}

/// `name = value` in an attribute dictionary.
#[derive(Clone, Debug, PartialEq)]
pub struct AttrEntry {
    /// The key.
    pub name: Spanned<String>,
    /// The value.
    pub value: Spanned<Attr>,
}

/// A whole file.
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleAst {
    /// `@name`, if given.
    pub name: Option<Spanned<String>>,
    /// `attributes {...}`.
    pub attrs: Vec<AttrEntry>,
    /// The functions.
    pub funcs: Vec<FuncAst>,
}

/// `func.func @name(args) -> results { body }`.
#[derive(Clone, Debug, PartialEq)]
pub struct FuncAst {
    /// The symbol name.
    pub name: Spanned<String>,
    /// Arguments with their types.
    pub args: Vec<(Spanned<String>, Spanned<TensorType>)>,
    /// Declared result types.
    pub results: Vec<Spanned<TensorType>>,
    /// The ops in order.
    pub body: Vec<OpAst>,
    /// The terminator.
    pub ret: ReturnAst,
}

/// The type part of an op: `: (operands) -> results` or `: result`.
#[derive(Clone, Debug, PartialEq)]
pub enum SignatureAst {
    /// `(T, T) -> T` or `(T) -> (T, T)`.
    Function(Vec<Spanned<TensorType>>, Vec<Spanned<TensorType>>),
    /// Only result types, for ops without operands.
    Results(Vec<Spanned<TensorType>>),
}

/// `%r = dialect.op(%a, %b) {attrs} : signature`.
#[derive(Clone, Debug, PartialEq)]
pub struct OpAst {
    /// Result names.
    pub results: Vec<Spanned<String>>,
    /// The op name.
    pub name: Spanned<String>,
    /// Operand names.
    pub operands: Vec<Spanned<String>>,
    /// Attributes.
    pub attrs: Vec<AttrEntry>,
    /// The type signature.
    pub sig: Spanned<SignatureAst>,
    /// The whole op.
    pub span: Span,
}

/// `return %a, %b : T, T`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReturnAst {
    /// Returned values.
    pub values: Vec<Spanned<String>>,
    /// Their declared types.
    pub types: Vec<Spanned<TensorType>>,
    /// The whole statement.
    pub span: Span,
}

/// A nested literal inside `dense<...>`.
#[derive(Clone, Debug, PartialEq)]
pub enum DenseLit {
    /// A number.
    Num(crate::lexer::Num),
    /// `true`/`false`.
    Bool(bool),
    /// `[...]`.
    List(Vec<DenseLit>),
}
