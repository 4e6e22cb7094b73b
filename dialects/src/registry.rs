//! The op registry: every op's name, arity, attribute schema, shape inference and verifier.
//! The parser, printer and verifier work through it, so adding an op touches only `ops/`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::attr::Attr;
use crate::ir::Operation;
use crate::ops::kind::OpKind;
use crate::types::TensorType;

/// How many operands an op takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly n.
    Exact(usize),
    /// Between min and max, inclusive.
    Range(usize, usize),
    /// At least n.
    AtLeast(usize),
}

impl Arity {
    /// Whether `n` operands are allowed.
    pub fn allows(self, n: usize) -> bool {
        match self {
            Arity::Exact(k) => n == k,
            Arity::Range(lo, hi) => (lo..=hi).contains(&n),
            Arity::AtLeast(k) => n >= k,
        }
    }

    /// How the arity reads in an error message.
    pub fn describe(self) -> String {
        let plural = |k: usize| if k == 1 { "" } else { "s" };
        match self {
            Arity::Exact(k) => format!("{k} operand{}", plural(k)),
            Arity::Range(lo, hi) => format!("{lo} to {hi} operands"),
            Arity::AtLeast(k) => format!("at least {k} operand{}", plural(k)),
        }
    }
}

/// The kind of value an attribute takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    /// An integer.
    Int,
    /// A number.
    Float,
    /// A boolean.
    Bool,
    /// A string.
    Str,
    /// A list of integers.
    Ints,
    /// A list of numbers.
    Floats,
    /// An inline tensor.
    Dense,
}

impl AttrKind {
    /// Whether `attr` is of this kind.
    pub fn accepts(self, attr: &Attr) -> bool {
        match self {
            AttrKind::Int => attr.as_int().is_some(),
            AttrKind::Float => attr.as_float().is_some(),
            AttrKind::Bool => attr.as_bool().is_some(),
            AttrKind::Str => attr.as_str().is_some(),
            AttrKind::Ints => attr.as_ints().is_some(),
            AttrKind::Floats => attr.as_floats().is_some(),
            AttrKind::Dense => matches!(attr, Attr::Dense(_)),
        }
    }

    /// How the kind reads in an error message.
    pub fn describe(self) -> &'static str {
        match self {
            AttrKind::Int => "an integer",
            AttrKind::Float => "a number",
            AttrKind::Bool => "a bool",
            AttrKind::Str => "a string",
            AttrKind::Ints => "a list of integers",
            AttrKind::Floats => "a list of numbers",
            AttrKind::Dense => "a dense tensor",
        }
    }
}

/// One attribute an op accepts.
#[derive(Clone, Copy, Debug)]
pub struct AttrSpec {
    /// Its name.
    pub name: &'static str,
    /// The kind of value.
    pub kind: AttrKind,
    /// Whether it must be present.
    pub required: bool,
}

/// A required attribute.
pub const fn required(name: &'static str, kind: AttrKind) -> AttrSpec {
    AttrSpec {
        name,
        kind,
        required: true,
    }
}

/// An optional attribute.
pub const fn optional(name: &'static str, kind: AttrKind) -> AttrSpec {
    AttrSpec {
        name,
        kind,
        required: false,
    }
}

/// What an op's shape inference and verifier see: the op and its operand types.
pub struct OpCtx<'a> {
    /// The op.
    pub op: &'a Operation,
    /// Operand types, in order.
    pub operands: Vec<&'a TensorType>,
}

impl OpCtx<'_> {
    /// Operand `i`'s type.
    pub fn operand(&self, i: usize) -> &TensorType {
        self.operands[i]
    }

    /// Result `i`'s declared type.
    pub fn result(&self, i: usize) -> &TensorType {
        &self.op.results[i]
    }
}

/// Result shapes an op infers from its operands and attributes.
pub type InferFn = fn(&OpCtx) -> Result<Vec<Vec<usize>>, String>;
/// Checks beyond shapes: element types, attribute values.
pub type VerifyFn = fn(&OpCtx) -> Result<(), String>;

/// The definition of an op.
#[derive(Clone, Copy)]
pub struct OpDef {
    /// Which op it is; its registered name is `kind.name()`.
    pub kind: OpKind,
    /// One line saying what it computes.
    pub summary: &'static str,
    /// Operands it takes.
    pub operands: Arity,
    /// Results it produces.
    pub results: usize,
    /// Attributes it accepts.
    pub attrs: &'static [AttrSpec],
    /// Shape inference.
    pub infer: InferFn,
    /// Element-type and attribute checks.
    pub verify: VerifyFn,
}

impl OpDef {
    /// Full name, `dialect.op`.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }
}

/// All known ops by name.
pub struct Registry {
    ops: BTreeMap<&'static str, OpDef>,
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Registry {
        Registry {
            ops: BTreeMap::new(),
        }
    }

    /// Adds ops; a later definition of the same name replaces an earlier one.
    pub fn register(&mut self, defs: &[OpDef]) {
        for def in defs {
            self.ops.insert(def.name(), *def);
        }
    }

    /// The definition of `name`.
    pub fn get(&self, name: &str) -> Option<&OpDef> {
        self.ops.get(name)
    }

    /// All definitions, sorted by name.
    pub fn ops(&self) -> impl Iterator<Item = &OpDef> {
        self.ops.values()
    }

    /// The known op names closest to `name`, for "did you mean" notes.
    pub fn suggest(&self, name: &str) -> Option<&'static str> {
        self.ops
            .keys()
            .map(|k| (edit_distance(k, name), *k))
            .filter(|(d, _)| *d <= 3)
            .min()
            .map(|(_, k)| k)
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The registry of every built-in dialect (`nn`, `quant`).
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Registry::empty();
        r.register(crate::ops::nn::OPS);
        r.register(crate::ops::quant::OPS);
        r
    })
}
