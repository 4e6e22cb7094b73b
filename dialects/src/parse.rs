//! Text to module: run the grammar, then resolve op names, values and types, load the weights
//! file the module names, and verify.

use std::collections::HashMap;
use std::path::Path;

use lalrpop_util::ParseError;

use crate::ast::{FuncAst, ModuleAst, OpAst, SignatureAst, Spanned};
use crate::attr::{Attr, Attrs};
use crate::diag::{Diagnostic, SourceFile, Span};
use crate::ir::{Function, Module, Node, Operation, Value};
use crate::lexer::{Lexer, SyntaxError, Tok};
use crate::registry::{Registry, registry};
use crate::types::TensorType;
use crate::verifier::verify_function;

lalrpop_util::lalrpop_mod!(
    #[allow(clippy::all, clippy::pedantic, unused, missing_docs)]
    grammar
);

fn pretty_expected(expected: &[String]) -> String {
    let mut names: Vec<String> = expected
        .iter()
        .map(|e| e.trim_matches('"').to_string())
        .collect();
    names.sort();
    names.dedup();
    let shown: Vec<String> = names.iter().take(8).map(|n| format!("'{n}'")).collect();
    let more = names.len().saturating_sub(8);
    if more > 0 {
        format!("{} or {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

fn syntax_diagnostic(err: ParseError<usize, Tok, SyntaxError>, len: usize) -> Diagnostic {
    match err {
        ParseError::InvalidToken { location } => {
            Diagnostic::at(Span::new(location, location + 1), "invalid token")
        }
        ParseError::UnrecognizedEof { location, expected } => Diagnostic::at(
            Span::new(location, location.max(len)),
            format!(
                "unexpected end of input, expected {}",
                pretty_expected(&expected)
            ),
        ),
        ParseError::UnrecognizedToken {
            token: (l, tok, r),
            expected,
        } => Diagnostic::at(
            Span::new(l, r),
            format!(
                "unexpected {}, expected {}",
                tok.describe(),
                pretty_expected(&expected)
            ),
        ),
        ParseError::ExtraToken { token: (l, tok, r) } => Diagnostic::at(
            Span::new(l, r),
            format!("unexpected {} after the module", tok.describe()),
        ),
        ParseError::User { error } => Diagnostic::at(error.span, error.message),
    }
}

/// Parses text into a syntax tree only.
pub fn parse_ast(source: &str) -> Result<ModuleAst, Diagnostic> {
    grammar::ModuleParser::new()
        .parse(Lexer::new(source))
        .map_err(|e| syntax_diagnostic(e, source.len()))
}

fn attrs_of(entries: &[crate::ast::AttrEntry]) -> Result<Attrs, Diagnostic> {
    let mut attrs = Attrs::new();
    for e in entries {
        if attrs.get(&e.name.node).is_some() {
            return Err(Diagnostic::at(
                e.name.span,
                format!("attribute '{}' is given twice", e.name.node),
            ));
        }
        attrs.set(&e.name.node, e.value.node.clone());
    }
    Ok(attrs)
}

struct FunctionBuilder<'a> {
    registry: &'a Registry,
    func: Function,
    values: HashMap<String, (Value, Span)>,
}

impl FunctionBuilder<'_> {
    fn define(&mut self, name: &Spanned<String>, v: Value) -> Result<(), Diagnostic> {
        if let Some((_, first)) = self.values.get(&name.node) {
            let _ = first;
            return Err(Diagnostic::at(
                name.span,
                format!("redefinition of %{}", name.node),
            ));
        }
        self.values.insert(name.node.clone(), (v, name.span));
        Ok(())
    }

    fn lookup(&self, name: &Spanned<String>) -> Result<Value, Diagnostic> {
        self.values.get(&name.node).map(|(v, _)| *v).ok_or_else(|| {
            Diagnostic::at(name.span, format!("use of undefined value %{}", name.node))
        })
    }

    fn check_type(
        &self,
        v: Value,
        declared: &Spanned<TensorType>,
        name: &str,
    ) -> Result<(), Diagnostic> {
        let actual = self.func.value_type(v);
        if *actual != declared.node {
            return Err(Diagnostic::at(
                declared.span,
                format!(
                    "type mismatch: %{name} has type {actual}, but is used as {}",
                    declared.node
                ),
            ));
        }
        Ok(())
    }

    fn op(&mut self, ast: &OpAst) -> Result<(), Diagnostic> {
        let name = &ast.name.node;
        let Some(def) = self.registry.get(name) else {
            let mut d = Diagnostic::at(ast.name.span, format!("unknown op '{name}'"));
            if let Some(s) = self.registry.suggest(name) {
                d = d.with_note(format!("did you mean '{s}'?"));
            }
            return Err(d);
        };
        if !def.operands.allows(ast.operands.len()) {
            let span = Span::new(
                ast.name.span.start,
                ast.operands
                    .last()
                    .map_or(ast.name.span.end, |o| o.span.end + 1),
            );
            return Err(Diagnostic::at(
                span,
                format!(
                    "'{name}' expects {}, got {}",
                    def.operands.describe(),
                    ast.operands.len()
                ),
            ));
        }
        if ast.results.len() != def.results {
            let span = ast.results.first().map_or(ast.name.span, |r| r.span);
            return Err(Diagnostic::at(
                span,
                format!(
                    "'{name}' has {} result(s), {} named",
                    def.results,
                    ast.results.len()
                ),
            ));
        }
        let operands: Vec<Value> = ast
            .operands
            .iter()
            .map(|o| self.lookup(o))
            .collect::<Result<_, _>>()?;
        let result_types = match &ast.sig.node {
            SignatureAst::Function(ins, outs) => {
                if ins.len() != operands.len() {
                    return Err(Diagnostic::at(
                        ast.sig.span,
                        format!(
                            "'{name}' has {} operand(s) but its type lists {}",
                            operands.len(),
                            ins.len()
                        ),
                    ));
                }
                for ((v, declared), o) in operands.iter().zip(ins).zip(&ast.operands) {
                    self.check_type(*v, declared, &o.node)?;
                }
                outs
            }
            SignatureAst::Results(outs) => {
                if !operands.is_empty() {
                    return Err(Diagnostic::at(
                        ast.sig.span,
                        format!(
                            "'{name}' has operands, so its type must be (operand types) -> result types"
                        ),
                    ));
                }
                outs
            }
        };
        if result_types.len() != ast.results.len() {
            return Err(Diagnostic::at(
                ast.sig.span,
                format!(
                    "'{name}' names {} result(s) but its type lists {}",
                    ast.results.len(),
                    result_types.len()
                ),
            ));
        }
        let op = Operation {
            name: name.clone(),
            attrs: attrs_of(&ast.attrs)?,
            results: result_types.iter().map(|t| t.node.clone()).collect(),
            result_names: ast.results.iter().map(|r| Some(r.node.clone())).collect(),
            span: Some(ast.name.span),
        };
        let node = self.func.add_op(op, &operands);
        for (i, r) in ast.results.iter().enumerate() {
            self.define(r, Value { node, result: i })?;
        }
        Ok(())
    }
}

fn build_function(ast: &FuncAst, registry: &Registry) -> Result<Function, Diagnostic> {
    let mut b = FunctionBuilder {
        registry,
        func: Function::new(&ast.name.node),
        values: HashMap::new(),
    };
    b.func.span = Some(ast.name.span);
    for (name, ty) in &ast.args {
        let v = b.func.add_arg(&name.node, ty.node.clone());
        if let Node::Arg { span, .. } = &mut b.func.graph[v.node] {
            *span = Some(name.span);
        }
        b.define(name, v)?;
    }
    for op in &ast.body {
        b.op(op)?;
    }
    let ret = &ast.ret;
    if !ret.types.is_empty() && ret.types.len() != ret.values.len() {
        return Err(Diagnostic::at(
            ret.span,
            format!(
                "return has {} value(s) but lists {} type(s)",
                ret.values.len(),
                ret.types.len()
            ),
        ));
    }
    for (i, v) in ret.values.iter().enumerate() {
        let value = b.lookup(v)?;
        if let Some(t) = ret.types.get(i) {
            b.check_type(value, t, &v.node)?;
        }
        b.func.results.push(value);
    }
    if ret.values.len() != ast.results.len() {
        return Err(Diagnostic::at(
            ret.span,
            format!(
                "@{} declares {} result(s) but returns {}",
                ast.name.node,
                ast.results.len(),
                ret.values.len()
            ),
        ));
    }
    for ((v, declared), name) in b.func.results.iter().zip(&ast.results).zip(&ret.values) {
        let actual = b.func.value_type(*v);
        if *actual != declared.node {
            return Err(Diagnostic::at(
                name.span,
                format!(
                    "type mismatch: %{} has type {actual}, but @{} returns {}",
                    name.node, ast.name.node, declared.node
                ),
            ));
        }
    }
    Ok(b.func)
}

/// Parses and verifies a module. `dir` is where a `weights` file named by the module is looked up
/// (the directory of the .ir file); without it, a module naming a weights file is an error.
pub fn parse_module(file: &SourceFile, dir: Option<&Path>) -> Result<Module, Vec<Diagnostic>> {
    let ast = parse_ast(&file.text).map_err(|d| vec![d])?;
    let mut module = Module {
        name: ast.name.as_ref().map(|n| n.node.clone()),
        attrs: attrs_of(&ast.attrs).map_err(|d| vec![d])?,
        ..Module::default()
    };
    if let Some(entry) = ast.attrs.iter().find(|e| e.name.node == "weights") {
        let Attr::Str(rel) = &entry.value.node else {
            return Err(vec![Diagnostic::at(
                entry.value.span,
                "'weights' must be a string: the safetensors file's path",
            )]);
        };
        let path = match dir {
            Some(d) => d.join(rel),
            None => Path::new(rel).to_path_buf(),
        };
        module.weights.tensors =
            crate::weights::load(&path).map_err(|e| vec![Diagnostic::at(entry.value.span, e)])?;
        module.weights.source = Some(path);
    }
    let mut seen = HashMap::new();
    for f in &ast.funcs {
        if seen.insert(f.name.node.clone(), ()).is_some() {
            return Err(vec![Diagnostic::at(
                f.name.span,
                format!("redefinition of function @{}", f.name.node),
            )]);
        }
        module
            .functions
            .push(build_function(f, registry()).map_err(|d| vec![d])?);
    }
    let errors: Vec<Diagnostic> = module
        .functions
        .iter()
        .flat_map(|f| verify_function(&module, f, registry()))
        .collect();
    if errors.is_empty() {
        Ok(module)
    } else {
        Err(errors)
    }
}

/// Reads, parses and verifies a `.ir` file; weights are resolved next to it.
pub fn parse_file(path: &Path) -> Result<Module, (Option<SourceFile>, Vec<Diagnostic>)> {
    let bytes = std::fs::read(path).map_err(|e| {
        (
            None,
            vec![Diagnostic::new(format!(
                "cannot read '{}': {e}",
                path.display()
            ))],
        )
    })?;
    let name = path.display().to_string();
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            let offset = e.utf8_error().valid_up_to();
            let byte = e.as_bytes()[offset];
            // The text before the bad byte is kept as it is, so line and column stay right.
            let file = SourceFile::new(name, String::from_utf8_lossy(e.as_bytes()).into_owned());
            let diagnostic = Diagnostic::at(
                Span::new(offset, offset + 1),
                format!(
                    "the file is not UTF-8 text: byte 0x{byte:02x} at offset {offset} is not part of a character"
                ),
            )
            .with_note("a .ir module is UTF-8 text; an ONNX model needs the .onnx extension");
            return Err((Some(file), vec![diagnostic]));
        }
    };
    let file = SourceFile::new(name, text);
    parse_module(&file, Some(path.parent().unwrap_or(Path::new(".")))).map_err(|d| (Some(file), d))
}
