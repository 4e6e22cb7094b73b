//! The engine seam: how passes and commands run a module without naming what runs it. An
//! [`Engine`] prepares a function once (schedule, constants, requantization, and for a code
//! generator its generated code) into a [`Prepared`] function that runs batches, runs them with an
//! observer of every op's output, steps op by op ([`Steps`]) with read, replace and provide of live
//! values, and exposes an integer layer's exact accumulators and requantization. The reference
//! interpreter is one engine ([`Reference`]); every other engine is checked against it.

use std::collections::HashMap;

use qcc_dialects::{Function, Module, NodeIndex, Operation, Tensor, Value};

use crate::float::Activation;
use crate::interp::{Interpreter, RunError, Stepper};
use crate::quant::Requant;

/// Something that runs functions of a module.
pub trait Engine: Send + Sync {
    /// The name `--engine` selects it by.
    fn name(&self) -> &'static str;

    /// Prepares function `function` of `module` to run any number of batches.
    fn prepare<'m>(
        &self,
        module: &'m Module,
        function: &str,
    ) -> Result<Box<dyn Prepared + 'm>, String>;
}

/// A function prepared by an engine.
pub trait Prepared {
    /// The function it runs.
    fn function(&self) -> &Function;

    /// Runs on `inputs` (one per argument; the batch dimension may differ from the declared
    /// one) and calls `observer` with every op's node, op and output (constants excepted).
    fn run_observed(
        &self,
        inputs: &[Tensor],
        observer: &mut dyn FnMut(NodeIndex, &Operation, &Tensor),
    ) -> Result<Vec<Tensor>, RunError>;

    /// Runs on `inputs` and returns the function's results.
    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        self.run_observed(inputs, &mut |_, _, _| {})
    }

    /// Starts a run that the caller advances op by op.
    fn steps<'a>(&'a self, inputs: &[Tensor]) -> Result<Box<dyn Steps + 'a>, RunError>;

    /// Starts a run advanced op by op the way [`Prepared::run`] runs: a float convolution applies
    /// the activation that is its value's only reader ([`Prepared::fused_into`]), which then
    /// passes the value on, so that value is never readable. For timing a plain run op by op.
    fn plain_steps<'a>(&'a self, inputs: &[Tensor]) -> Result<Box<dyn Steps + 'a>, RunError> {
        self.steps(inputs)
    }

    /// The convolution that applies activation `node` in a plain run, or `None` when `node`
    /// runs as an op of its own.
    fn fused_into(&self, _node: NodeIndex) -> Option<NodeIndex> {
        None
    }

    /// The exact i32 accumulators `sum (x - Z_x) * w` (no bias) of integer conv/dense `node` on
    /// input `x` and weight `w`, laid out `[N, C, plane]`, with their shape.
    fn accumulators(
        &self,
        node: NodeIndex,
        x: &Tensor,
        w: &Tensor,
    ) -> Result<(Vec<i32>, Vec<usize>), String>;

    /// The requantization prepared for integer conv/dense `node`.
    fn requant(&self, node: NodeIndex) -> Option<&Requant>;

    /// Op `node` run once more, outside any run, on the operand values in `values` (constant
    /// operands default to the function's own): exactly the output a run computes from them.
    fn evaluate(&self, node: NodeIndex, values: &HashMap<Value, Tensor>) -> Result<Tensor, String>;
}

/// A run in progress, one op at a time in schedule order; a value stays readable until its last
/// reader has run.
pub trait Steps {
    /// The op the next `step` runs.
    fn next_node(&self) -> Option<NodeIndex>;

    /// Runs the next op; returns its node, or `None` when the function is done.
    fn step(&mut self) -> Result<Option<NodeIndex>, RunError>;

    /// Skips the next op, taking `t` as its output (a caller that computed it differently).
    fn provide(&mut self, t: Tensor);

    /// A live value.
    fn value(&self, v: Value) -> Option<&Tensor>;

    /// Replaces a live value (later ops read the replacement).
    fn replace(&mut self, v: Value, t: Tensor);

    /// The function's results (after the last step).
    fn results(&self) -> Vec<Tensor>;

    /// Runs the remaining ops.
    fn finish(&mut self) -> Result<(), RunError> {
        while self.step()?.is_some() {}
        Ok(())
    }
}

/// An integer layer's exact accumulators, laid out `[N, C, plane]`, and their shape.
pub type Accumulators = (Vec<i32>, Vec<usize>);

/// A compiled replacement for one op's reference kernel, supplied by an engine that generates
/// code and run by the interpreter in the op's place (see [`Interpreter::with_kernels`]).
pub trait OpKernel: Send + Sync {
    /// The op's output from its operands, exactly as the reference kernel computes it (the batch
    /// may differ from the declared one; the interpreter has checked the shapes).
    fn run(&self, inputs: &[&Tensor]) -> Result<Tensor, String>;

    /// [`OpKernel::run`] with the float activation `then` applied to every output value (an
    /// activation op fused into this one); a kernel may apply it while the output is in cache.
    fn run_then(&self, inputs: &[&Tensor], then: Activation) -> Result<Tensor, String> {
        let mut t = self.run(inputs)?;
        then.apply_to(
            t.as_f32_mut()
                .ok_or("a fused activation needs f32 values")?,
        );
        Ok(t)
    }

    /// For an elementwise op whose output has its first operand's shape and type: the op
    /// computed into `first`'s own buffer (a value the run owns and no later op reads), the other
    /// operands being `rest`; `None` when this kernel does not compute in place.
    fn run_in_place(&self, first: &mut Tensor, rest: &[&Tensor]) -> Option<Result<(), String>> {
        let _ = (first, rest);
        None
    }

    /// For an integer conv/dense: the exact accumulators `sum (x - Z_x) * w` (no bias) laid out
    /// `[N, C, plane]`, with their shape; `None` when this kernel does not compute them.
    fn accumulators(&self, x: &Tensor, w: &Tensor) -> Option<Result<Accumulators, String>> {
        let _ = (x, w);
        None
    }
}

/// The reference interpreter as an engine: every op on its reference kernel.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reference;

impl Engine for Reference {
    fn name(&self) -> &'static str {
        "reference"
    }

    fn prepare<'m>(
        &self,
        module: &'m Module,
        function: &str,
    ) -> Result<Box<dyn Prepared + 'm>, String> {
        Ok(Box::new(Interpreter::new(module, function)?))
    }
}

impl Prepared for Interpreter<'_> {
    fn function(&self) -> &Function {
        Interpreter::function(self)
    }

    fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        Interpreter::run(self, inputs)
    }

    fn run_observed(
        &self,
        inputs: &[Tensor],
        observer: &mut dyn FnMut(NodeIndex, &Operation, &Tensor),
    ) -> Result<Vec<Tensor>, RunError> {
        Interpreter::run_observed(self, inputs, observer)
    }

    fn steps<'a>(&'a self, inputs: &[Tensor]) -> Result<Box<dyn Steps + 'a>, RunError> {
        Ok(Box::new(self.stepper(inputs)?))
    }

    fn plain_steps<'a>(&'a self, inputs: &[Tensor]) -> Result<Box<dyn Steps + 'a>, RunError> {
        Ok(Box::new(self.plain_stepper(inputs)?))
    }

    fn fused_into(&self, node: NodeIndex) -> Option<NodeIndex> {
        Interpreter::fused_into(self, node)
    }

    fn accumulators(
        &self,
        node: NodeIndex,
        x: &Tensor,
        w: &Tensor,
    ) -> Result<(Vec<i32>, Vec<usize>), String> {
        Interpreter::accumulators(self, node, x, w)
    }

    fn requant(&self, node: NodeIndex) -> Option<&Requant> {
        Interpreter::requant(self, node)
    }

    fn evaluate(&self, node: NodeIndex, values: &HashMap<Value, Tensor>) -> Result<Tensor, String> {
        Interpreter::evaluate(self, node, values)
    }
}

impl Steps for Stepper<'_, '_> {
    fn next_node(&self) -> Option<NodeIndex> {
        Stepper::next_node(self)
    }

    fn step(&mut self) -> Result<Option<NodeIndex>, RunError> {
        Stepper::step(self)
    }

    fn provide(&mut self, t: Tensor) {
        Stepper::provide(self, t)
    }

    fn value(&self, v: Value) -> Option<&Tensor> {
        Stepper::value(self, v)
    }

    fn replace(&mut self, v: Value, t: Tensor) {
        Stepper::replace(self, v, t)
    }

    fn results(&self) -> Vec<Tensor> {
        Stepper::results(self)
    }
}
