//! Module to text, in the generic op syntax the parser reads back.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use crate::ir::{Function, Module, Node, Value};
use crate::types::TensorType;

struct Namer {
    used: HashSet<String>,
    next: usize,
}

impl Namer {
    fn name(&mut self, hint: Option<&str>) -> String {
        if let Some(h) = hint {
            let numeric = h.bytes().all(|b| b.is_ascii_digit());
            if !numeric && self.used.insert(h.to_string()) {
                return h.to_string();
            }
        }
        loop {
            let n = self.next.to_string();
            self.next += 1;
            if self.used.insert(n.clone()) {
                return n;
            }
        }
    }
}

fn types(list: &[&TensorType]) -> String {
    list.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn result_types(list: &[TensorType]) -> String {
    if list.len() == 1 {
        list[0].to_string()
    } else {
        format!(
            "({})",
            list.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Prints one function at the given indentation.
pub fn print_function(func: &Function, indent: &str) -> String {
    let mut out = String::new();
    let mut namer = Namer {
        used: HashSet::new(),
        next: 0,
    };
    let mut names: HashMap<Value, String> = HashMap::new();
    let mut args = Vec::new();
    for &a in &func.args {
        if let Node::Arg { name, ty, .. } = &func.graph[a] {
            namer.used.insert(name.clone());
            names.insert(Value::of(a), name.clone());
            args.push(format!("%{name}: {ty}"));
        }
    }
    let ret_types: Vec<TensorType> = func
        .results
        .iter()
        .map(|v| func.value_type(*v).clone())
        .collect();
    let _ = write!(out, "{indent}func.func @{}({})", func.name, args.join(", "));
    if !ret_types.is_empty() {
        let _ = write!(out, " -> {}", result_types(&ret_types));
    }
    out.push_str(" {\n");
    for node in func.schedule() {
        let op = func.op(node);
        let results: Vec<String> = (0..op.results.len())
            .map(|i| {
                let name = namer.name(op.result_names.get(i).and_then(|h| h.as_deref()));
                names.insert(Value { node, result: i }, name.clone());
                format!("%{name}")
            })
            .collect();
        let operands = func.operands(node);
        let _ = write!(out, "{indent}  ");
        if !results.is_empty() {
            let _ = write!(out, "{} = ", results.join(", "));
        }
        out.push_str(&op.name);
        if !operands.is_empty() {
            let list: Vec<String> = operands
                .iter()
                .map(|v| format!("%{}", names.get(v).map_or("<invalid>", String::as_str)))
                .collect();
            let _ = write!(out, "({})", list.join(", "));
        }
        if !op.attrs.is_empty() {
            let _ = write!(out, " {}", op.attrs);
        }
        if operands.is_empty() {
            let _ = writeln!(
                out,
                " : {}",
                op.results
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        } else {
            let ins: Vec<&TensorType> = operands.iter().map(|v| func.value_type(*v)).collect();
            let _ = writeln!(out, " : ({}) -> {}", types(&ins), result_types(&op.results));
        }
    }
    let rets: Vec<String> = func
        .results
        .iter()
        .map(|v| format!("%{}", names.get(v).map_or("<invalid>", String::as_str)))
        .collect();
    if rets.is_empty() {
        let _ = writeln!(out, "{indent}  return");
    } else {
        let tys: Vec<&TensorType> = ret_types.iter().collect();
        let _ = writeln!(
            out,
            "{indent}  return {} : {}",
            rets.join(", "),
            types(&tys)
        );
    }
    let _ = writeln!(out, "{indent}}}");
    out
}

/// Prints a whole module.
pub fn print_module(module: &Module) -> String {
    let mut out = String::from("module");
    if let Some(name) = &module.name {
        let _ = write!(out, " @{name}");
    }
    if !module.attrs.is_empty() {
        let _ = write!(out, " attributes {}", module.attrs);
    }
    out.push_str(" {\n");
    for (i, f) in module.functions.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&print_function(f, "  "));
    }
    out.push_str("}\n");
    out
}
