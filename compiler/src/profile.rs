//! `qcc run --profile`: where a run's time goes, op by op, with each layer's multiply-accumulates
//! and throughput, and the totals per op class.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use qcc_dialects::ops::cost::{self, OpClass};
use qcc_dialects::{Function, NodeIndex, Tensor, TensorType, Value};
use qcc_runtime::plan::{ALIGN, plan};
use qcc_runtime::{Prepared, RunError};

/// One op's share of a profiled run.
struct Row {
    label: String,
    shape: String,
    class: OpClass,
    /// Multiply-accumulates per input item.
    macs: u64,
    time: Duration,
    /// The activation op the row's convolution applies in a plain run (timed with it).
    fused: Option<String>,
}

impl Row {
    /// The op (with the activation it applies, `nn.conv2d+nn.clip`) and its result's name.
    fn label(&self) -> String {
        match (&self.fused, self.label.split_once(' ')) {
            (Some(f), Some((op, name))) => format!("{op}+{f} {name}"),
            (Some(f), None) => format!("{}+{f}", self.label),
            (None, _) => self.label.clone(),
        }
    }
}

/// Time per op over profiled runs.
#[derive(Default)]
pub struct Profile {
    rows: BTreeMap<NodeIndex, Row>,
    items: usize,
    /// The activation arena planned for the first batch: (batch, bytes, bytes unshared).
    arena: Option<(usize, usize, usize)>,
}

impl Profile {
    /// Runs `prepared` on `inputs` one op at a time, timing each op; returns the results.
    pub fn run(
        &mut self,
        prepared: &dyn Prepared,
        inputs: &Tensor,
    ) -> Result<Vec<Tensor>, RunError> {
        let func = prepared.function();
        let items = inputs.shape.first().copied().unwrap_or(1);
        self.items += items;
        if self.arena.is_none() {
            let p = plan(func, items, ALIGN);
            self.arena = Some((items, p.size, p.unshared));
        }
        // Op by op as a plain run goes: an activation a convolution applies is timed with it,
        // as one row.
        let mut steps = prepared.plain_steps(std::slice::from_ref(inputs))?;
        loop {
            let start = Instant::now();
            let Some(node) = steps.step()? else { break };
            let elapsed = start.elapsed();
            let (owner, fused) = match prepared.fused_into(node) {
                Some(conv) => (conv, Some(func.op(node).name.as_str())),
                None => (node, None),
            };
            let row = self
                .rows
                .entry(owner)
                .or_insert_with(|| Self::describe(func, owner));
            if let Some(name) = fused
                && row.fused.is_none()
            {
                row.fused = Some(name.to_string());
            }
            row.time += elapsed;
        }
        Ok(steps.results())
    }

    fn describe(func: &Function, node: NodeIndex) -> Row {
        let op = func.op(node);
        let operands: Vec<&TensorType> = func
            .operands(node)
            .iter()
            .map(|v| func.value_type(*v))
            .collect();
        let out = func.value_type(Value::of(node));
        let declared_batch = out.shape.first().copied().unwrap_or(1).max(1) as u64;
        let label = match op.result_names.first().cloned().flatten() {
            Some(name) => format!("{} %{name}", op.name),
            None => op.name.clone(),
        };
        Row {
            label,
            shape: out
                .shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("x"),
            class: cost::class(op, &operands),
            macs: cost::macs(op, &operands) / declared_batch,
            time: Duration::ZERO,
            fused: None,
        }
    }

    /// Prints the ops by time (constants left out), then the totals per op class.
    pub fn print(&self, out: &mut dyn Write, engine: &str) -> std::io::Result<()> {
        let total: Duration = self.rows.values().map(|r| r.time).sum();
        let seconds = total.as_secs_f64().max(1e-12);
        let mut rows: Vec<&Row> = self
            .rows
            .values()
            .filter(|r| !r.label.starts_with("nn.const"))
            .collect();
        rows.sort_by(|a, b| b.time.cmp(&a.time).then(a.label.cmp(&b.label)));
        let width = rows
            .iter()
            .map(|r| r.label().len())
            .max()
            .unwrap_or(2)
            .clamp(2, 56);
        writeln!(
            out,
            "profile: {} inputs on the {engine} engine, {:.1} ms in {} ops",
            self.items,
            seconds * 1e3,
            rows.len()
        )?;
        if let Some((batch, size, unshared)) = self.arena {
            let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
            writeln!(
                out,
                "activation arena at batch {batch}: {:.2} MiB planned by liveness ({:.2} MiB with one buffer per value)",
                mib(size),
                mib(unshared)
            )?;
        }
        writeln!(
            out,
            "{:<width$}  {:>16}  {:>10}  {:>6}  {:>9}  {:>7}",
            "op", "output", "time ms", "share", "MMAC", "GMAC/s"
        )?;
        let gmacs = |macs: u64, t: Duration| {
            let s = t.as_secs_f64();
            if macs == 0 || s == 0.0 {
                "–".to_string()
            } else {
                format!("{:.2}", macs as f64 / s / 1e9)
            }
        };
        for r in &rows {
            let label: String = r.label().chars().take(width).collect();
            let macs = r.macs * self.items as u64;
            writeln!(
                out,
                "{label:<width$}  {:>16}  {:>10.3}  {:>5.1}%  {:>9.2}  {:>7}",
                r.shape,
                r.time.as_secs_f64() * 1e3,
                100.0 * r.time.as_secs_f64() / seconds,
                macs as f64 / 1e6,
                gmacs(macs, r.time)
            )?;
        }
        let mut classes: BTreeMap<OpClass, (usize, Duration, u64)> = BTreeMap::new();
        for r in &rows {
            let e = classes.entry(r.class).or_default();
            e.0 += 1;
            e.1 += r.time;
            e.2 += r.macs * self.items as u64;
        }
        writeln!(out, "by class:")?;
        for (class, (count, time, macs)) in classes {
            writeln!(
                out,
                "  {:<10} {count:>4} ops  {:>10.3} ms  {:>5.1}%  {:>9.2} MMAC  {:>7} GMAC/s",
                class.label(),
                time.as_secs_f64() * 1e3,
                100.0 * time.as_secs_f64() / seconds,
                macs as f64 / 1e6,
                gmacs(macs, time)
            )?;
        }
        Ok(())
    }
}
