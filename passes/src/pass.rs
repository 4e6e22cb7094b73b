//! The `Pass` trait, pass options, and what a pass sees while it runs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use qcc_dialects::Module;
use qcc_runtime::{Engine, Reference};

/// The kind and range of a pass option's value.
#[derive(Clone, Copy, Debug)]
pub enum OptionKind {
    /// An integer in `[min, max]`.
    Int {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// A finite number in `[min, max]`.
    Float {
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
    },
    /// `true` or `false`.
    Bool,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
}

/// One option a pass accepts.
#[derive(Clone, Copy, Debug)]
pub struct OptionSpec {
    /// Its name in the pipeline string.
    pub name: &'static str,
    /// The value's kind and range.
    pub kind: OptionKind,
    /// The default, as written in a pipeline.
    pub default: &'static str,
    /// What it controls.
    pub help: &'static str,
}

/// A parsed option value.
#[derive(Clone, Debug, PartialEq)]
pub enum OptionValue {
    /// An integer.
    Int(i64),
    /// A number.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A word from a choice list.
    Choice(String),
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionValue::Int(v) => write!(f, "{v}"),
            OptionValue::Float(v) => write!(f, "{v}"),
            OptionValue::Bool(v) => write!(f, "{v}"),
            OptionValue::Choice(v) => f.write_str(v),
        }
    }
}

impl OptionSpec {
    /// Parses and range-checks a value written for this option.
    pub fn parse(&self, text: &str) -> Result<OptionValue, String> {
        match self.kind {
            OptionKind::Int { min, max } => match text.parse::<i64>() {
                Ok(v) if (min..=max).contains(&v) => Ok(OptionValue::Int(v)),
                _ => Err(format!("must be an {}, got '{text}'", self.describe_kind())),
            },
            OptionKind::Float { min, max } => match text.parse::<f64>() {
                Ok(v) if v.is_finite() && (min..=max).contains(&v) => Ok(OptionValue::Float(v)),
                _ => Err(format!("must be a {}, got '{text}'", self.describe_kind())),
            },
            OptionKind::Bool => match text {
                "true" => Ok(OptionValue::Bool(true)),
                "false" => Ok(OptionValue::Bool(false)),
                _ => Err(format!("must be true or false, got '{text}'")),
            },
            OptionKind::Choice(words) => {
                if words.contains(&text) {
                    Ok(OptionValue::Choice(text.to_string()))
                } else {
                    Err(format!("must be one of {}, got '{text}'", words.join(", ")))
                }
            }
        }
    }

    /// How the accepted values read in help text.
    pub fn describe_kind(&self) -> String {
        match self.kind {
            OptionKind::Int { min, max } if max == i64::MAX => format!("integer >= {min}"),
            OptionKind::Int { min, max } => format!("integer in [{min}, {max}]"),
            OptionKind::Float { min, max } => format!("number in [{min}, {max}]"),
            OptionKind::Bool => "true|false".to_string(),
            OptionKind::Choice(words) => words.join("|"),
        }
    }
}

/// The options a pass was configured with: every declared option, defaults filled in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Options(pub BTreeMap<String, OptionValue>);

impl Options {
    /// An integer option (declared by the pass, so present).
    pub fn int(&self, name: &str) -> i64 {
        match self.0.get(name) {
            Some(OptionValue::Int(v)) => *v,
            other => panic!("option '{name}' is not a declared integer option: {other:?}"),
        }
    }

    /// A number option.
    pub fn float(&self, name: &str) -> f64 {
        match self.0.get(name) {
            Some(OptionValue::Float(v)) => *v,
            Some(OptionValue::Int(v)) => *v as f64,
            other => panic!("option '{name}' is not a declared number option: {other:?}"),
        }
    }

    /// A boolean option.
    pub fn bool(&self, name: &str) -> bool {
        match self.0.get(name) {
            Some(OptionValue::Bool(v)) => *v,
            other => panic!("option '{name}' is not a declared bool option: {other:?}"),
        }
    }

    /// A choice option.
    pub fn choice(&self, name: &str) -> &str {
        match self.0.get(name) {
            Some(OptionValue::Choice(v)) => v,
            other => panic!("option '{name}' is not a declared choice option: {other:?}"),
        }
    }
}

/// What a pass sees besides the module: settings, the engine that runs modules, calibration
/// data and a place for messages.
pub struct PassContext {
    /// Runs modules for the passes that need them run (calibration, bias correction); the
    /// caller chooses it, no pass names one.
    pub engine: Arc<dyn Engine>,
    /// Whether `--verbose` was given: passes then say what they skipped and why.
    pub verbose: bool,
    /// Calibration inputs (f32, the network's input shape with the samples first), from `--calib`.
    pub calib: Option<qcc_dialects::Tensor>,
    /// The float network `quantize` started from, for the bias-correction passes.
    pub float_reference: Option<crate::bias::FloatReference>,
    /// Messages passes emitted (shown on stderr under `--verbose`).
    pub notes: Vec<String>,
}

impl Default for PassContext {
    fn default() -> PassContext {
        PassContext {
            engine: Arc::new(Reference),
            verbose: false,
            calib: None,
            float_reference: None,
            notes: Vec::new(),
        }
    }
}

impl PassContext {
    /// Records a verbose message from `pass`.
    pub fn note(&mut self, pass: &str, message: impl Into<String>) {
        self.notes.push(format!("{pass}: {}", message.into()));
    }
}

/// A transformation of a module.
pub trait Pass {
    /// The registered name.
    fn name(&self) -> &'static str;

    /// Runs on the module. An error stops the pipeline and is reported to the user.
    fn run(&self, module: &mut Module, ctx: &mut PassContext) -> Result<(), String>;
}

/// How a pass is registered: its name, documentation, options, prerequisites and constructor.
pub struct PassInfo {
    /// Name in a pipeline string.
    pub name: &'static str,
    /// One line saying what it does.
    pub summary: &'static str,
    /// Options it accepts.
    pub options: &'static [OptionSpec],
    /// Passes that must run before it; the pipeline adds them when missing.
    pub requires: &'static [&'static str],
    /// Builds the pass from its options.
    pub create: fn(&Options) -> Box<dyn Pass>,
}
