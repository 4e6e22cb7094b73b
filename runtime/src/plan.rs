//! The activation arena: every value an op computes gets an offset in one buffer, planned from
//! the schedule and each value's lifetime, so that values alive at the same time never overlap
//! and the buffer is as small as a greedy placement can make it. Engines that manage their own
//! memory (generated code, a linked object's scratch area) run in this plan.

use std::collections::HashMap;

use qcc_dialects::{Function, Node, OpKind, Value};

/// Alignment of every value in a planned arena (a cache line).
pub const ALIGN: usize = 64;

/// The memory this machine has available for a new allocation now (Linux's `MemAvailable`),
/// `None` where that is not known.
pub fn available_memory() -> Option<usize> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// `bytes` in the largest binary unit that keeps it at 1 or more (`1.5 GiB`).
pub fn bytes_text(bytes: usize) -> String {
    const UNITS: [&str; 7] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Where each value lives in the arena, and how large the arena is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArenaPlan {
    /// Byte offset of every planned value (op results other than constants; function arguments
    /// are the caller's).
    pub offsets: HashMap<Value, usize>,
    /// Bytes of every planned value, at the planned batch.
    pub sizes: HashMap<Value, usize>,
    /// The arena's size in bytes.
    pub size: usize,
    /// The sum of all planned values' sizes: what one buffer per value would take.
    pub unshared: usize,
}

/// One value to place: its bytes and the schedule steps from its definition to its last use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetime {
    /// Bytes it needs.
    pub bytes: usize,
    /// The step that computes it.
    pub first: usize,
    /// The last step that reads it (inclusive).
    pub last: usize,
}

impl Lifetime {
    fn overlaps(&self, other: &Lifetime) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

fn align_up(v: usize, align: usize) -> usize {
    v.div_ceil(align.max(1)).saturating_mul(align.max(1))
}

/// Places `values` in one buffer: largest first, each at the lowest `align`-aligned offset where
/// it overlaps no placed value that is alive at the same time. Returns the offsets (in the order
/// given) and the buffer size.
pub fn place(values: &[Lifetime], align: usize) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| {
        values[b]
            .bytes
            .cmp(&values[a].bytes)
            .then(values[a].first.cmp(&values[b].first))
    });
    let mut offsets = vec![0usize; values.len()];
    let mut placed: Vec<usize> = Vec::new();
    let mut size = 0;
    for i in order {
        let v = values[i];
        // Blocks already taken while this value lives, by offset.
        let mut taken: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&j| values[j].overlaps(&v))
            .map(|&j| (offsets[j], offsets[j] + values[j].bytes))
            .collect();
        taken.sort_unstable();
        let mut offset = 0usize;
        for (start, end) in taken {
            if offset.saturating_add(v.bytes) <= start {
                break;
            }
            offset = offset.max(align_up(end, align));
        }
        offsets[i] = offset;
        size = size.max(offset.saturating_add(v.bytes));
        placed.push(i);
    }
    (offsets, size)
}

/// Plans the arena of `func` at `batch` items (the leading dimension of every value scaled from
/// its declared size), with every offset a multiple of `align` bytes.
pub fn plan(func: &Function, batch: usize, align: usize) -> ArenaPlan {
    let schedule = func.schedule();
    let end = schedule.len();
    let mut lifetimes: HashMap<Value, Lifetime> = HashMap::new();
    let declared_batch = func
        .args
        .first()
        .and_then(|a| func.value_type(Value::of(*a)).shape.first().copied())
        .unwrap_or(1)
        .max(1);
    for (step, &node) in schedule.iter().enumerate() {
        for v in func.operands(node) {
            if let Some(l) = lifetimes.get_mut(&v) {
                l.last = l.last.max(step);
            }
        }
        let Node::Op(op) = &func.graph[node] else {
            continue;
        };
        if op.is(OpKind::Const) {
            continue;
        }
        for (i, ty) in op.results.iter().enumerate() {
            let lead = ty.shape.first().copied().unwrap_or(1);
            let items = if lead == declared_batch { batch } else { lead };
            let per_lead = ty.numel() / lead.max(1);
            lifetimes.insert(
                Value { node, result: i },
                Lifetime {
                    // Saturating: a size past the address space is still too large to run.
                    bytes: per_lead
                        .saturating_mul(items.max(1))
                        .saturating_mul(ty.elem.size_bytes()),
                    first: step,
                    last: step,
                },
            );
        }
    }
    for v in &func.results {
        if let Some(l) = lifetimes.get_mut(v) {
            l.last = end;
        }
    }
    let mut values: Vec<(Value, Lifetime)> = lifetimes.into_iter().collect();
    values.sort_by_key(|(v, l)| (l.first, v.node.index(), v.result));
    let lives: Vec<Lifetime> = values.iter().map(|(_, l)| *l).collect();
    let (offsets, size) = place(&lives, align);
    ArenaPlan {
        offsets: values
            .iter()
            .zip(&offsets)
            .map(|((v, _), o)| (*v, *o))
            .collect(),
        sizes: values.iter().map(|(v, l)| (*v, l.bytes)).collect(),
        size,
        unshared: lives.iter().fold(0usize, |s, l| s.saturating_add(l.bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lifetimes() -> impl Strategy<Value = Vec<Lifetime>> {
        proptest::collection::vec((1usize..5000, 0usize..40, 0usize..12), 1..60).prop_map(|v| {
            v.into_iter()
                .map(|(bytes, first, len)| Lifetime {
                    bytes,
                    first,
                    last: first + len,
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Values alive at the same time never share a byte; every offset is aligned; the arena
        /// holds at least the bytes alive at the busiest step and at most one buffer per value
        /// (plus alignment).
        #[test]
        fn placement_never_overlaps_live_values(values in lifetimes(), align in prop_oneof![Just(1usize), Just(16), Just(64)]) {
            let (offsets, size) = place(&values, align);
            for (i, a) in values.iter().enumerate() {
                prop_assert_eq!(offsets[i] % align, 0);
                prop_assert!(offsets[i] + a.bytes <= size);
                for (j, b) in values.iter().enumerate().skip(i + 1) {
                    if a.overlaps(b) {
                        let apart = offsets[i] + a.bytes <= offsets[j] || offsets[j] + b.bytes <= offsets[i];
                        prop_assert!(apart, "{i} and {j} overlap: {a:?} at {}, {b:?} at {}", offsets[i], offsets[j]);
                    }
                }
            }
            let busiest = (0..60)
                .map(|step| values.iter().filter(|v| v.first <= step && step <= v.last).map(|v| v.bytes).sum::<usize>())
                .max()
                .unwrap_or(0);
            prop_assert!(size >= busiest);
            let unshared: usize = values.iter().map(|v| align_up(v.bytes, align)).sum();
            prop_assert!(size <= unshared);
        }
    }

    #[test]
    fn a_chain_reuses_memory() {
        // a -> b -> c -> d, each read only by the next: two buffers at a time suffice.
        let values: Vec<Lifetime> = (0..4)
            .map(|i| Lifetime {
                bytes: 100,
                first: i,
                last: i + 1,
            })
            .collect();
        let (offsets, size) = place(&values, 1);
        assert_eq!(size, 200);
        assert_ne!(offsets[0], offsets[1]);
        assert_eq!(offsets[0], offsets[2]);
    }
}
