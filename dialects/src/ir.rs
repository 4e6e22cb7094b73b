//! The IR core: a module holds functions and weights; a function body is a petgraph dataflow
//! graph whose nodes are arguments and ops and whose edges are SSA values in operand order.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use petgraph::Direction;
use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;

use crate::attr::{Attr, Attrs};
use crate::diag::Span;
use crate::ops::kind::OpKind;
use crate::tensor::Tensor;
use crate::types::TensorType;

/// An operation: a registered op name, attributes and result types.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    /// Registered name, e.g. `nn.conv2d`.
    pub name: String,
    /// Attributes.
    pub attrs: Attrs,
    /// Result types.
    pub results: Vec<TensorType>,
    /// Preferred printed names of the results (kept from the source when given).
    pub result_names: Vec<Option<String>>,
    /// Where the op's name was written, if it came from text (diagnostics point there).
    pub span: Option<Span>,
}

impl Operation {
    /// Which registered op this is; `None` for a name the registry does not know (the verifier
    /// rejects those, so a verified module has a kind for every op).
    pub fn kind(&self) -> Option<OpKind> {
        OpKind::from_name(&self.name)
    }

    /// Whether this is the op `kind`.
    pub fn is(&self, kind: OpKind) -> bool {
        self.name == kind.name()
    }

    /// A new op of `kind` with one result.
    pub fn of(kind: OpKind, attrs: Attrs, result: TensorType) -> Operation {
        Operation::new(kind.name(), attrs, result)
    }

    /// A new op with one result.
    pub fn new(name: &str, attrs: Attrs, result: TensorType) -> Operation {
        Operation {
            name: name.to_string(),
            attrs,
            results: vec![result],
            result_names: vec![None],
            span: None,
        }
    }

    /// Sets the preferred name of the first result.
    pub fn named(mut self, name: impl Into<String>) -> Operation {
        self.result_names[0] = Some(name.into());
        self
    }

    /// Shorthand for an attribute.
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.get(name)
    }
}

/// A node of the dataflow graph.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// A function argument.
    Arg {
        /// Position in the argument list.
        index: usize,
        /// Its name in the text.
        name: String,
        /// Its type.
        ty: TensorType,
        /// Where it was written.
        span: Option<Span>,
    },
    /// An operation.
    Op(Operation),
}

/// An edge: result `result` of the source node is operand `operand` of the target node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Use {
    /// Which result of the producer.
    pub result: usize,
    /// Which operand of the consumer.
    pub operand: usize,
}

/// An SSA value: a result of a node (an argument has one result, 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    /// The producing node.
    pub node: NodeIndex,
    /// Which of its results.
    pub result: usize,
}

impl Value {
    /// The first result of `node`.
    pub fn of(node: NodeIndex) -> Value {
        Value { node, result: 0 }
    }
}

/// A function: arguments, a dataflow graph of ops, and returned values.
#[derive(Clone, Debug, Default)]
pub struct Function {
    /// Symbol name without `@`.
    pub name: String,
    /// The dataflow graph.
    pub graph: StableDiGraph<Node, Use>,
    /// Argument nodes in order.
    pub args: Vec<NodeIndex>,
    /// Returned values in order.
    pub results: Vec<Value>,
    /// Where the function was written.
    pub span: Option<Span>,
}

impl Function {
    /// An empty function.
    pub fn new(name: &str) -> Function {
        Function {
            name: name.to_string(),
            ..Function::default()
        }
    }

    /// Appends an argument.
    pub fn add_arg(&mut self, name: &str, ty: TensorType) -> Value {
        let node = self.graph.add_node(Node::Arg {
            index: self.args.len(),
            name: name.to_string(),
            ty,
            span: None,
        });
        self.args.push(node);
        Value::of(node)
    }

    /// Adds an op reading `operands` in order.
    pub fn add_op(&mut self, op: Operation, operands: &[Value]) -> NodeIndex {
        let node = self.graph.add_node(Node::Op(op));
        for (i, v) in operands.iter().enumerate() {
            self.graph.add_edge(
                v.node,
                node,
                Use {
                    result: v.result,
                    operand: i,
                },
            );
        }
        node
    }

    /// The op at `node`; panics if it is an argument (a programming error).
    pub fn op(&self, node: NodeIndex) -> &Operation {
        match &self.graph[node] {
            Node::Op(op) => op,
            Node::Arg { .. } => panic!("node {node:?} is an argument, not an op"),
        }
    }

    /// Mutable access to the op at `node`.
    pub fn op_mut(&mut self, node: NodeIndex) -> &mut Operation {
        match &mut self.graph[node] {
            Node::Op(op) => op,
            Node::Arg { .. } => panic!("node {node:?} is an argument, not an op"),
        }
    }

    /// The op at `node`, or `None` for an argument.
    pub fn try_op(&self, node: NodeIndex) -> Option<&Operation> {
        match self.graph.node_weight(node)? {
            Node::Op(op) => Some(op),
            Node::Arg { .. } => None,
        }
    }

    /// Whether `node` is an op named `name`.
    pub fn is_op(&self, node: NodeIndex, kind: OpKind) -> bool {
        self.try_op(node).is_some_and(|op| op.is(kind))
    }

    /// All op nodes, in index order.
    pub fn op_nodes(&self) -> Vec<NodeIndex> {
        self.graph
            .node_indices()
            .filter(|n| matches!(self.graph[*n], Node::Op(_)))
            .collect()
    }

    /// The type of a value.
    pub fn value_type(&self, v: Value) -> &TensorType {
        match &self.graph[v.node] {
            Node::Arg { ty, .. } => ty,
            Node::Op(op) => &op.results[v.result],
        }
    }

    fn operand_edges(&self, node: NodeIndex) -> Vec<(EdgeIndex, Use, NodeIndex)> {
        let mut edges: Vec<_> = self
            .graph
            .edges_directed(node, Direction::Incoming)
            .map(|e| (e.id(), *e.weight(), e.source()))
            .collect();
        edges.sort_by_key(|(_, u, _)| u.operand);
        edges
    }

    /// The operands of `node`, in order.
    pub fn operands(&self, node: NodeIndex) -> Vec<Value> {
        self.operand_edges(node)
            .into_iter()
            .map(|(_, u, src)| Value {
                node: src,
                result: u.result,
            })
            .collect()
    }

    /// The ops reading `v`, with the operand position, in node order.
    pub fn users(&self, v: Value) -> Vec<(NodeIndex, usize)> {
        let mut users: Vec<_> = self
            .graph
            .edges_directed(v.node, Direction::Outgoing)
            .filter(|e| e.weight().result == v.result)
            .map(|e| (e.target(), e.weight().operand))
            .collect();
        users.sort();
        users
    }

    /// Whether `v` is returned by the function.
    pub fn is_returned(&self, v: Value) -> bool {
        self.results.contains(&v)
    }

    /// Number of uses of `v`, counting the function's return.
    pub fn use_count(&self, v: Value) -> usize {
        self.users(v).len() + self.results.iter().filter(|r| **r == v).count()
    }

    /// Makes operand `index` of `node` read `v`.
    pub fn set_operand(&mut self, node: NodeIndex, index: usize, v: Value) {
        if let Some((edge, _, _)) = self
            .operand_edges(node)
            .into_iter()
            .find(|(_, u, _)| u.operand == index)
        {
            self.graph.remove_edge(edge);
        }
        self.graph.add_edge(
            v.node,
            node,
            Use {
                result: v.result,
                operand: index,
            },
        );
    }

    /// Replaces the operand list of `node`.
    pub fn set_operands(&mut self, node: NodeIndex, operands: &[Value]) {
        for (edge, _, _) in self.operand_edges(node) {
            self.graph.remove_edge(edge);
        }
        for (i, v) in operands.iter().enumerate() {
            self.graph.add_edge(
                v.node,
                node,
                Use {
                    result: v.result,
                    operand: i,
                },
            );
        }
    }

    /// Redirects every use of `old` (including the return) to `new`.
    pub fn replace_all_uses(&mut self, old: Value, new: Value) {
        for (user, operand) in self.users(old) {
            self.set_operand(user, operand, new);
        }
        for r in &mut self.results {
            if *r == old {
                *r = new;
            }
        }
    }

    /// Removes an op and its edges.
    pub fn remove_op(&mut self, node: NodeIndex) {
        self.graph.remove_node(node);
    }

    /// Ops in a valid execution order: source order is kept, and an op added later is placed
    /// just before its first user. Requires an acyclic graph.
    pub fn schedule(&self) -> Vec<NodeIndex> {
        let mut done: HashMap<NodeIndex, bool> = HashMap::new();
        let mut order = Vec::new();
        for root in self.graph.node_indices() {
            let mut stack = vec![(root, false)];
            while let Some((node, expanded)) = stack.pop() {
                if done.get(&node).copied().unwrap_or(false) {
                    continue;
                }
                if expanded {
                    done.insert(node, true);
                    if matches!(self.graph[node], Node::Op(_)) {
                        order.push(node);
                    }
                    continue;
                }
                if done.contains_key(&node) {
                    continue; // on the stack already: a cycle, which the verifier reports
                }
                done.insert(node, false);
                stack.push((node, true));
                for v in self.operands(node).into_iter().rev() {
                    if !done.contains_key(&v.node) {
                        stack.push((v.node, false));
                    }
                }
            }
        }
        order
    }
}

/// Named tensors of a module, loaded from (and saved to) a safetensors file.
#[derive(Clone, Debug, Default)]
pub struct WeightStore {
    /// Tensors by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// The file they were loaded from.
    pub source: Option<PathBuf>,
    /// Set when a pass added or changed a tensor, so it must be written out.
    pub modified: bool,
    /// Names added or changed since loading (not in the source file).
    pub changed: BTreeSet<String>,
}

impl WeightStore {
    /// Adds or replaces a tensor and marks the store modified.
    pub fn insert(&mut self, name: String, tensor: Tensor) {
        self.changed.insert(name.clone());
        self.tensors.insert(name, tensor);
        self.modified = true;
    }

    /// An `nn.const` op holding `tensor` (of type `ty`): inline when `inline`, otherwise stored
    /// here under a fresh name derived from `name`.
    pub fn const_op(
        &mut self,
        name: &str,
        tensor: Tensor,
        ty: TensorType,
        inline: bool,
    ) -> Operation {
        let attrs = if inline {
            Attrs::new().with(
                "value",
                Attr::Dense(crate::attr::DenseAttr {
                    ty: ty.clone(),
                    data: tensor.data,
                }),
            )
        } else {
            let stored = self.fresh_name(name);
            self.insert(stored.clone(), tensor);
            Attrs::new().with("name", Attr::Str(stored))
        };
        Operation::of(OpKind::Const, attrs, ty)
    }

    /// A name not used yet, derived from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        if !self.tensors.contains_key(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}.{i}"))
            .find(|n| !self.tensors.contains_key(n))
            .expect("an unused name exists")
    }
}

/// A module: attributes, functions and the weights its constants name.
#[derive(Clone, Debug, Default)]
pub struct Module {
    /// Symbol name without `@`, if any.
    pub name: Option<String>,
    /// Module attributes (`weights`, preprocessing, ...).
    pub attrs: Attrs,
    /// Functions, in order.
    pub functions: Vec<Function>,
    /// Named weights.
    pub weights: WeightStore,
}

impl Module {
    /// The function named `name`.
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// The tensor an `nn.const` op stands for: inline `value` or `name` in the weight store.
    pub fn const_value(&self, op: &Operation) -> Option<Cow<'_, Tensor>> {
        if let Some(Attr::Dense(d)) = op.attr("value") {
            return Some(Cow::Owned(d.to_tensor()));
        }
        let name = op.attr("name")?.as_str()?;
        self.weights.tensors.get(name).map(Cow::Borrowed)
    }
}
