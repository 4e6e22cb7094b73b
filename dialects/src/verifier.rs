//! The verifier: every op against its registry definition, every function's graph structure,
//! and every named constant against the module's weights.

use petgraph::algo::is_cyclic_directed;

use crate::diag::Diagnostic;
use crate::ir::{Function, Module, Node};
use crate::ops::kind::OpKind;
use crate::registry::{OpCtx, Registry, registry};
use petgraph::stable_graph::NodeIndex;

/// Checks one op: arity, attributes, types, inferred shapes and the op's own rules.
pub fn verify_op(
    module: &Module,
    func: &Function,
    node: NodeIndex,
    registry: &Registry,
) -> Result<(), String> {
    let op = func.op(node);
    let Some(def) = registry.get(&op.name) else {
        let mut msg = format!("unknown op '{}'", op.name);
        if let Some(s) = registry.suggest(&op.name) {
            msg.push_str(&format!(" (did you mean '{s}'?)"));
        }
        return Err(msg);
    };
    let operands = func.operands(node);
    if !def.operands.allows(operands.len()) {
        return Err(format!(
            "'{}' expects {}, got {}",
            def.name(),
            def.operands.describe(),
            operands.len()
        ));
    }
    if op.results.len() != def.results {
        return Err(format!(
            "'{}' has {} result(s), got {}",
            def.name(),
            def.results,
            op.results.len()
        ));
    }
    for (name, value) in op.attrs.iter() {
        let Some(spec) = def.attrs.iter().find(|a| a.name == name) else {
            let valid: Vec<&str> = def.attrs.iter().map(|a| a.name).collect();
            return Err(format!(
                "'{}' has no attribute '{name}' (valid: {})",
                def.name(),
                if valid.is_empty() {
                    "none".to_string()
                } else {
                    valid.join(", ")
                }
            ));
        };
        if !spec.kind.accepts(value) {
            return Err(format!(
                "'{}' attribute '{name}' must be {}, got {value}",
                def.name(),
                spec.kind.describe()
            ));
        }
    }
    if let Some(missing) = def
        .attrs
        .iter()
        .find(|a| a.required && op.attr(a.name).is_none())
    {
        return Err(format!(
            "'{}' needs attribute '{}'",
            def.name(),
            missing.name
        ));
    }
    let ctx = OpCtx {
        op,
        operands: operands.iter().map(|v| func.value_type(*v)).collect(),
    };
    for t in ctx.operands.iter().copied().chain(&op.results) {
        t.validate()
            .map_err(|why| format!("'{}': bad quant type: {why}", def.name()))?;
        t.check_size()
            .map_err(|why| format!("'{}': {why}", def.name()))?;
    }
    let shapes = (def.infer)(&ctx).map_err(|why| format!("'{}': {why}", def.name()))?;
    for (i, (shape, ty)) in shapes.iter().zip(&op.results).enumerate() {
        if *shape != ty.shape {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            return Err(format!(
                "'{}' result #{i} is declared {ty}, but its operands give shape {}",
                def.name(),
                if dims.is_empty() {
                    "()".to_string()
                } else {
                    dims.join("x")
                }
            ));
        }
    }
    (def.verify)(&ctx).map_err(|why| format!("'{}': {why}", def.name()))?;
    if op.is(OpKind::Const)
        && let Some(name) = op.attr("name").and_then(|a| a.as_str())
    {
        let Some(t) = module.weights.tensors.get(name) else {
            return Err(match &module.weights.source {
                Some(path) => format!("weight '{name}' is not in {}", path.display()),
                None => format!(
                    "weight '{name}' cannot be found: the module names no weights file (attributes {{weights = \"FILE.safetensors\"}})"
                ),
            });
        };
        if !t.fits(&op.results[0]) {
            let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
            return Err(format!(
                "weight '{name}' is {} x {} in the weights file, but its type is {}",
                dims.join("x"),
                t.data.dtype_name(),
                op.results[0]
            ));
        }
    }
    Ok(())
}

/// Checks the graph of a function: operands numbered 0..n, no cycles, returned values exist.
pub fn verify_function(module: &Module, func: &Function, registry: &Registry) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    if is_cyclic_directed(&func.graph) {
        errors.push(Diagnostic::new(format!(
            "function @{} has a cycle in its dataflow graph",
            func.name
        )));
        return errors;
    }
    for node in func.graph.node_indices() {
        let op = match &func.graph[node] {
            Node::Op(op) => op,
            Node::Arg { ty, .. } => {
                if let Err(why) = ty.check_size() {
                    errors.push(Diagnostic::new(format!(
                        "argument of @{}: {why}",
                        func.name
                    )));
                }
                continue;
            }
        };
        let operands: Vec<usize> = func
            .graph
            .edges_directed(node, petgraph::Direction::Incoming)
            .map(|e| e.weight().operand)
            .collect();
        let mut sorted = operands.clone();
        sorted.sort();
        if sorted.iter().enumerate().any(|(i, o)| i != *o) {
            errors.push(Diagnostic::new(format!(
                "'{}' has operand positions {sorted:?}, not 0..{}",
                op.name,
                sorted.len()
            )));
            continue;
        }
        if let Err(msg) = verify_op(module, func, node, registry) {
            let mut d = Diagnostic::new(msg);
            d.span = op.span;
            if op.span.is_none()
                && let Some(Some(name)) = op.result_names.first()
            {
                d = d.with_note(format!("in the op defining %{name}"));
            }
            errors.push(d);
        }
    }
    for v in &func.results {
        if func.graph.node_weight(v.node).is_none() {
            errors.push(Diagnostic::new(format!(
                "function @{} returns a value whose op was removed",
                func.name
            )));
        }
    }
    errors
}

/// Verifies every function of a module with the built-in registry.
pub fn verify_module(module: &Module) -> Result<(), Vec<Diagnostic>> {
    let errors: Vec<Diagnostic> = module
        .functions
        .iter()
        .flat_map(|f| verify_function(module, f, registry()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
