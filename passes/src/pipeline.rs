//! The pass registry, the pipeline string parser (`a,b{k=v,k2=v2}`) and the pass manager that
//! runs a pipeline with the verifier after every pass.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use qcc_dialects::{Diagnostic, Module, verify_module};

use crate::pass::{Options, Pass, PassContext, PassInfo};

/// Every registered pass, in the order `--list-passes` shows them.
pub fn passes() -> &'static [PassInfo] {
    &[
        crate::canonicalize::INFO,
        crate::fold_batchnorm::INFO,
        crate::equalize::INFO,
        crate::quantize::INFO,
        crate::bias_correct::ESTIMATE,
        crate::bias_correct::APPLY,
        crate::bias_correct::CORRECT,
        crate::bias_correct::FIT,
        crate::bias_analytic::INFO,
    ]
}

/// The registered pass called `name`.
pub fn lookup(name: &str) -> Option<&'static PassInfo> {
    passes().iter().find(|p| p.name == name)
}

/// One configured step of a pipeline.
pub struct Step {
    /// The registration.
    pub info: &'static PassInfo,
    /// Its options, defaults filled in.
    pub options: Options,
    /// Whether the user listed it, or it was added because a later pass requires it.
    pub implicit: bool,
}

impl Step {
    /// The step as written in a pipeline string, showing options that differ from the defaults.
    pub fn describe(&self) -> String {
        let changed: Vec<String> = self
            .info
            .options
            .iter()
            .filter_map(|spec| {
                let v = self.options.0.get(spec.name)?;
                (v.to_string() != spec.default).then(|| format!("{}={v}", spec.name))
            })
            .collect();
        if changed.is_empty() {
            self.info.name.to_string()
        } else {
            format!("{}{{{}}}", self.info.name, changed.join(","))
        }
    }
}

fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("unbalanced '}}' at position {}", i + 1));
                }
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '{': an option list is not closed".into());
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn valid_pass_names() -> String {
    passes()
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_step(text: &str) -> Result<Step, String> {
    let text = text.trim();
    let (name, opts) = match text.find('{') {
        Some(i) => {
            let Some(body) = text[i + 1..].strip_suffix('}') else {
                return Err(format!("'{text}': options must end with '}}'"));
            };
            (text[..i].trim(), Some(body))
        }
        None => (text, None),
    };
    if name.is_empty() {
        return Err(format!(
            "empty pass name in the pipeline; valid passes: {}",
            valid_pass_names()
        ));
    }
    let info = lookup(name).ok_or_else(|| {
        format!(
            "unknown pass '{name}'; valid passes: {}",
            valid_pass_names()
        )
    })?;
    let mut options = Options(BTreeMap::new());
    for spec in info.options {
        let v = spec
            .parse(spec.default)
            .expect("a pass's default option values parse");
        options.0.insert(spec.name.to_string(), v);
    }
    for item in opts
        .into_iter()
        .flat_map(|b| b.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!(
                "option '{item}' of pass '{name}' must be written key=value"
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        let Some(spec) = info.options.iter().find(|s| s.name == key) else {
            let valid: Vec<&str> = info.options.iter().map(|s| s.name).collect();
            return Err(format!(
                "pass '{name}' has no option '{key}'; valid options: {}",
                if valid.is_empty() {
                    "none".to_string()
                } else {
                    valid.join(", ")
                }
            ));
        };
        let v = spec
            .parse(value)
            .map_err(|why| format!("option '{key}' of pass '{name}' {why}"))?;
        options.0.insert(key.to_string(), v);
    }
    Ok(Step {
        info,
        options,
        implicit: false,
    })
}

/// Appends the passes `info` requires (and theirs, first) that are neither in `steps` yet nor
/// `given`.
fn add_requirements(info: &PassInfo, steps: &mut Vec<Step>, given: &[&str]) {
    for req in info.requires {
        if given.contains(req) || steps.iter().any(|s| s.info.name == *req) {
            continue;
        }
        let mut dep = parse_step(req).expect("required passes are registered");
        add_requirements(dep.info, steps, given);
        dep.implicit = true;
        steps.push(dep);
    }
}

/// Parses a pipeline string and adds the passes that listed passes require but that do not run
/// before them (with default options, their own requirements first), as MLIR's dependent passes.
pub fn parse_pipeline(text: &str) -> Result<Vec<Step>, String> {
    parse_pipeline_given(text, &[])
}

/// [`parse_pipeline`] for a module on which the passes named in `given` have in effect run
/// already (a model quantized elsewhere, whose float network comes from elsewhere too): they are
/// not added as requirements.
pub fn parse_pipeline_given(text: &str, given: &[&str]) -> Result<Vec<Step>, String> {
    if text.trim().is_empty() {
        return Err(format!(
            "the pipeline is empty; give one or more passes, e.g. fold-batchnorm,quantize (valid passes: {})",
            valid_pass_names()
        ));
    }
    let mut steps: Vec<Step> = Vec::new();
    for part in split_top_level(text)? {
        let step = parse_step(part)?;
        add_requirements(step.info, &mut steps, given);
        steps.push(step);
    }
    Ok(steps)
}

/// Time spent in one pass (and the verifier after it).
#[derive(Clone, Debug)]
pub struct PassTiming {
    /// The step as written.
    pub pass: String,
    /// Time in the pass.
    pub run: Duration,
    /// Time in the verifier after it.
    pub verify: Duration,
}

/// A pipeline failure: a pass's error or the verifier's diagnostics after a pass.
#[derive(Debug)]
pub struct PipelineError {
    /// The step that failed or after which verification failed.
    pub pass: String,
    /// Whether the verifier rejected what the pass left (rather than the pass itself failing).
    pub in_verifier: bool,
    /// What went wrong.
    pub diagnostics: Vec<Diagnostic>,
}

impl PipelineError {
    /// Where the failure happened, to put before each message: `pass 'quantize'` when the pass
    /// failed, `the verifier after pass 'quantize'` when what it left does not verify.
    pub fn location(&self) -> String {
        if self.in_verifier {
            format!("the verifier after pass '{}'", self.pass)
        } else {
            format!("pass '{}'", self.pass)
        }
    }
}

/// Runs steps in order.
pub struct PassManager {
    steps: Vec<Step>,
    /// Run the verifier after every pass.
    pub verify_each: bool,
}

impl PassManager {
    /// A manager for the given steps, verifying after each.
    pub fn new(steps: Vec<Step>) -> PassManager {
        PassManager {
            steps,
            verify_each: true,
        }
    }

    /// The steps it will run.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Runs every step; stops at the first failure. `after_pass` sees the module after each step
    /// (for `--print-ir-after-all`).
    pub fn run(
        &self,
        module: &mut Module,
        ctx: &mut PassContext,
        after_pass: &mut dyn FnMut(&str, &Module),
    ) -> Result<Vec<PassTiming>, PipelineError> {
        let mut timings = Vec::new();
        for step in &self.steps {
            let label = step.describe();
            let pass: Box<dyn Pass> = (step.info.create)(&step.options);
            let t0 = Instant::now();
            pass.run(module, ctx).map_err(|msg| PipelineError {
                pass: label.clone(),
                in_verifier: false,
                diagnostics: vec![Diagnostic::new(msg)],
            })?;
            let run = t0.elapsed();
            let t1 = Instant::now();
            if self.verify_each {
                verify_module(module).map_err(|diagnostics| PipelineError {
                    pass: label.clone(),
                    in_verifier: true,
                    diagnostics,
                })?;
            }
            let verify = t1.elapsed();
            after_pass(&label, module);
            timings.push(PassTiming {
                pass: label,
                run,
                verify,
            });
        }
        Ok(timings)
    }
}
