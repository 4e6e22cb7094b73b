//! A whole function as generated code: every op lowered to a driver function that runs its
//! kernels over buffers at fixed places, and entry points that run the ops in schedule order
//! over one caller-provided scratch area — the activation arena planned by value liveness
//! (`qcc_runtime::plan`) followed by the drivers' temporary space. Nothing is allocated and
//! nothing outside the generated code is called but `memcpy` and `memset`, so the same lowering
//! fills an object file to link (`crate::object`) or the process's JIT.
//!
//! The function must take one f32 input that one `quant.quantize` reads and return one f32
//! value that `quant.dequantize` makes: `run` quantizes the input, runs the rest and dequantizes
//! the result; `run_u8` takes and gives the stored 8-bit values around them.

use cranelift_codegen::ir::{
    Endianness, InstBuilder, MemFlagsData, Type, Value as ClifValue, condcodes::IntCC, types,
};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::FunctionBuilder;
use cranelift_module::{DataId, FuncId, Module as ClifModule};
use qcc_dialects::ops::attrs::Conv2dAttrs;
use qcc_dialects::{Function, Module, Node, NodeIndex, OpKind, Operation, TensorType, Value};
use qcc_runtime::interp::layer_requant;
use qcc_runtime::plan;
use qcc_runtime::quant::magnitude;

use crate::clif::{Levels, Loop, RECORD, RECORD_WORDS};
use crate::cpu::CpuCheck;
use crate::depthwise::{self, Geometry};
use crate::elementwise::{self, levels_of, params8};
use crate::emit::{Shape, Sink};
use crate::gemm::{self, Epilogue, Form, MR, NR, PackedA};
use crate::layers::{Finish, depthwise_geometry, group_records, is_depthwise, shifted_zero_point};

/// Alignment the scratch area must have (and every value in it has).
pub const SCRATCH_ALIGN: usize = plan::ALIGN;

/// What an entry point returns.
pub mod status {
    /// The run finished.
    pub const OK: i32 = 0;
    /// The input, the output or the scratch area is a null pointer.
    pub const NULL: i32 = 1;
    /// The scratch area is not aligned to [`super::SCRATCH_ALIGN`] bytes.
    pub const MISALIGNED: i32 = 2;
    /// The CPU (or the operating system) lacks a feature the code was generated with.
    pub const CPU: i32 = 3;
}

/// The input or the output of a lowered function: its shape and quantization.
#[derive(Clone, Debug, PartialEq)]
pub struct Edge {
    /// Its shape (the batch first).
    pub shape: Vec<usize>,
    /// Scale of its stored values.
    pub scale: f32,
    /// Zero point of its stored values.
    pub zero_point: i64,
    /// Whether the values are stored as i8 (else u8).
    pub signed: bool,
}

impl Edge {
    /// Elements of the tensor.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    fn of(ty: &TensorType, what: &str) -> Result<Edge, String> {
        let (scale, zero_point, signed) = params8(ty).ok_or_else(|| {
            format!("qcc build needs {what} 8-bit per-tensor quantized, got {ty}")
        })?;
        Ok(Edge {
            shape: ty.shape.clone(),
            scale: scale as f32,
            zero_point,
            signed,
        })
    }
}

/// A function lowered into a sink.
#[derive(Clone, Debug)]
pub struct Lowered {
    /// `(const float *in, float *out, void *scratch) -> int`.
    pub run: FuncId,
    /// `(const uint8_t *in, uint8_t *out, void *scratch) -> int` on stored values.
    pub run_u8: FuncId,
    /// Bytes of scratch area a run needs.
    pub scratch: usize,
    /// Of those, the activation arena's.
    pub arena: usize,
    /// The input after `quant.quantize`.
    pub input: Edge,
    /// The output before `quant.dequantize`.
    pub output: Edge,
    /// Ops lowered (constants excepted).
    pub ops: usize,
}

/// Where a value lives during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Home {
    /// The entry point's input.
    Input,
    /// The entry point's output.
    Output,
    /// The scratch area, at this offset.
    Arena(usize),
}

/// One op lowered: its driver `(x0, x1, out, temp)` and the temporary bytes it needs.
struct Driver {
    func: FuncId,
    temp: usize,
}

/// Code generation helpers inside one function body.
struct Code<'a, 'b> {
    b: &'a mut FunctionBuilder<'b>,
    m: &'a mut dyn ClifModule,
    ptr: Type,
    fe: TargetFrontendConfig,
}

fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl Code<'_, '_> {
    fn int(&mut self, v: i64) -> ClifValue {
        self.b.ins().iconst(self.ptr, v)
    }

    /// `base + offset` bytes.
    fn at(&mut self, base: ClifValue, offset: i64) -> ClifValue {
        if offset == 0 {
            base
        } else {
            self.b.ins().iadd_imm_s(base, offset)
        }
    }

    /// `base + index * step` bytes.
    fn index(&mut self, base: ClifValue, index: ClifValue, step: i64) -> ClifValue {
        let off = self.b.ins().imul_imm_s(index, step);
        self.b.ins().iadd(base, off)
    }

    fn call(&mut self, f: FuncId, args: &[ClifValue]) {
        let r = self.m.declare_func_in_func(f, self.b.func);
        self.b.ins().call(r, args);
    }

    fn data(&mut self, d: DataId) -> ClifValue {
        let gv = self.m.declare_data_in_func(d, self.b.func);
        self.b.ins().symbol_value(self.ptr, gv)
    }

    /// Copies `n` bytes between buffers that do not overlap: a short copy (the rows of small
    /// planes, many per layer) inline, as 16-, 8-, 4-, 2- and 1-byte moves whose last one may
    /// overlap the one before; longer ones through `memcpy`.
    fn memcpy(&mut self, dst: ClifValue, src: ClifValue, n: usize) {
        const INLINE: usize = 128;
        if n == 0 {
            return;
        }
        if n > INLINE {
            let n = self.int(n as i64);
            self.b.call_memcpy(self.fe, dst, src, n);
            return;
        }
        let width = [16, 8, 4, 2, 1].into_iter().find(|w| *w <= n).unwrap_or(1);
        let ty = match width {
            16 => types::I8X16,
            8 => types::I64,
            4 => types::I32,
            2 => types::I16,
            _ => types::I8,
        };
        // Whole moves of `width`, then one more ending at `n` (overlapping the one before).
        let mut at = 0;
        while at + width <= n {
            let v = self.b.ins().load(ty, flags(), src, at as i32);
            self.b.ins().store(flags(), v, dst, at as i32);
            at += width;
        }
        if at < n {
            let last = (n - width) as i32;
            let v = self.b.ins().load(ty, flags(), src, last);
            self.b.ins().store(flags(), v, dst, last);
        }
    }

    fn memset(&mut self, dst: ClifValue, byte: u8, n: usize) {
        if n > 0 {
            let c = self.b.ins().iconst(types::I8, i64::from(byte));
            let n = self.int(n as i64);
            self.b.call_memset(self.fe, dst, c, n);
        }
    }

    /// A loop over `0..n` (a constant); the builder is in its body until `close`.
    fn each(&mut self, n: usize) -> Loop {
        let zero = self.int(0);
        let end = self.int(n as i64);
        Loop::new(self.b, zero, end)
    }

    /// Copies `rows` rows of `width` bytes from `src` (rows `stride` bytes apart) to `dst` (rows
    /// `width` bytes apart): a padded output compacted.
    fn copy_rows(
        &mut self,
        dst: ClifValue,
        src: ClifValue,
        rows: usize,
        width: usize,
        stride: usize,
    ) {
        let l = self.each(rows);
        let to = self.index(dst, l.index, width as i64);
        let from = self.index(src, l.index, stride as i64);
        self.memcpy(to, from, width);
        l.close(self.b);
    }

    /// Calls GEMM kernel `f` on packed weights `a` and activations `b` over all `col_panels` x
    /// `row_panels` tiles, into `dst` (rows `ld` bytes apart), requantized by `records`.
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &mut self,
        f: FuncId,
        (a, b, records): (ClifValue, ClifValue, ClifValue),
        dst: ClifValue,
        ld: usize,
        col_panels: usize,
        row_panels: usize,
    ) {
        let ldv = self.int(ld as i64);
        let zero = self.int(0);
        let pp = self.int(col_panels as i64);
        let mp = self.int(row_panels as i64);
        self.call(f, &[a, b, dst, ldv, zero, pp, zero, mp, records]);
    }

    /// Copies `n` bytes taken `stride` bytes apart from `src` to consecutive bytes at `dst`:
    /// at stride 2 sixteen bytes per load, their even bytes kept by one shuffle, for as long as
    /// the loads stay within the `2 * (n - 1) + 1` bytes the copy reads; one at a time after.
    fn copy_strided(&mut self, dst: ClifValue, src: ClifValue, n: usize, stride: usize) {
        let groups = if stride == 2 && 2 * n >= 17 {
            (2 * n - 17) / 16 + 1
        } else {
            0
        };
        if groups > 0 {
            let little = MemFlagsData::new().with_endianness(Endianness::Little);
            let l = self.each(groups);
            let from = self.index(src, l.index, 16);
            let to = self.index(dst, l.index, 8);
            let v = self.b.ins().load(types::I8X16, flags(), from, 0);
            let even: Vec<u8> = (0..16).map(|i| (2 * i) % 16).collect();
            let m = self.b.func.dfg.immediates.push(even.into());
            let picked = self.b.ins().shuffle(v, v, m);
            let words = self.b.ins().bitcast(types::I64X2, little, picked);
            let low = self.b.ins().extractlane(words, 0);
            self.b.ins().store(flags(), low, to, 0);
            l.close(self.b);
        }
        let done = 8 * groups;
        let (to, from) = (
            self.at(dst, done as i64),
            self.at(src, (done * stride) as i64),
        );
        self.copy_bytes(to, from, n - done, stride as i64, false);
    }

    /// Copies `n` bytes, each flipped to u8 order (`^ 0x80`) when `flip`, one at a time.
    fn copy_bytes(&mut self, dst: ClifValue, src: ClifValue, n: usize, step: i64, flip: bool) {
        if n == 0 {
            return;
        }
        let l = self.each(n);
        let s = self.index(src, l.index, step);
        let d = self.b.ins().iadd(dst, l.index);
        let v = self.b.ins().uload8(types::I32, flags(), s, 0);
        let v = if flip {
            self.b.ins().bxor_imm_u(v, 0x80)
        } else {
            v
        };
        self.b.ins().istore8(flags(), v, d, 0);
        l.close(self.b);
    }
}

/// Defines a driver function `name(x0, x1, out, temp)` whose body `body` emits.
fn driver(
    sink: &mut dyn Sink,
    name: &str,
    body: impl Fn(&mut Code, [ClifValue; 4]) -> Result<(), String>,
) -> Result<FuncId, String> {
    let ptr = sink.pointer();
    let fe = sink.frontend();
    sink.function(name, &Shape::kernel(&[ptr; 4]), &mut |b, args, m| {
        let mut code = Code { b, m, ptr, fe };
        body(&mut code, [args[0], args[1], args[2], args[3]])?;
        code.b.ins().return_(&[]);
        Ok(())
    })
}

fn describe(func: &Function, node: NodeIndex) -> String {
    let op = func.op(node);
    match op.result_names.first().cloned().flatten() {
        Some(name) => format!("{} (%{name})", op.name),
        None => op.name.clone(),
    }
}

/// Lowers function `function` of `module` into `sink`, its entry points named `run` and
/// `run_u8` (exported; the sink puts its prefix before every name), the integer layers in the
/// form `vnni` allows; the entry points first make `cpu`'s check, when given.
pub fn lower(
    sink: &mut dyn Sink,
    module: &Module,
    function: &str,
    vnni: bool,
    cpu: Option<&CpuCheck>,
) -> Result<Lowered, String> {
    let func = module
        .function(function)
        .ok_or_else(|| format!("the module has no function @{function}"))?;
    let (quantize, dequantize) = edges(func)?;
    let input = Edge::of(&func.op(quantize).results[0], "the quantized input")?;
    let dq_operand = func.operands(dequantize)[0];
    let output = Edge::of(func.value_type(dq_operand), "the dequantized output")?;
    let batch = input.shape.first().copied().unwrap_or(1);
    let arena = plan::plan(func, batch, SCRATCH_ALIGN);
    let home = |v: Value, core: bool| -> Result<Home, String> {
        if core && v == Value::of(quantize) {
            return Ok(Home::Input);
        }
        if core && v == dq_operand {
            return Ok(Home::Output);
        }
        arena
            .offsets
            .get(&v)
            .map(|o| Home::Arena(*o))
            .ok_or_else(|| "internal error: a value has no place in the arena".to_string())
    };

    // Every op's driver, in schedule order.
    let schedule = func.schedule();
    let mut steps: Vec<(NodeIndex, Driver)> = Vec::new();
    for &node in &schedule {
        let Node::Op(op) = &func.graph[node] else {
            continue;
        };
        if op.is(OpKind::Const) || node == quantize || node == dequantize {
            continue;
        }
        let tag = format!("op{}", steps.len());
        let d = computed_operands(func, node)
            .and_then(|()| lower_op(sink, module, func, node, &tag, vnni))
            .map_err(|e| format!("{}: {e}", describe(func, node)))?;
        steps.push((node, d));
    }
    let temp_at = arena.size.div_ceil(SCRATCH_ALIGN) * SCRATCH_ALIGN;
    let edge_temp = 64; // the quantize and dequantize tails
    let temp = steps
        .iter()
        .map(|(_, d)| d.temp)
        .max()
        .unwrap_or(0)
        .max(edge_temp);
    let scratch = temp_at + temp;

    // The ops between the edges: `core(in, out, scratch)`.
    let ptr = sink.pointer();
    let fe = sink.frontend();
    let mut homes: Vec<(Vec<Home>, Home, FuncId)> = Vec::new();
    for (node, d) in &steps {
        let operands = func
            .operands(*node)
            .into_iter()
            .filter(|v| !func.op(v.node).is(OpKind::Const))
            .map(|v| home(v, true))
            .collect::<Result<Vec<_>, _>>()?;
        homes.push((operands, home(Value::of(*node), true)?, d.func));
    }
    let same = Value::of(quantize) == dq_operand;
    let out_bytes = output.elements();
    let core = sink.function("core", &Shape::kernel(&[ptr; 3]), &mut |b, args, m| {
        let mut c = Code { b, m, ptr, fe };
        let (input, out, scratch) = (args[0], args[1], args[2]);
        let null = c.int(0);
        let place = |c: &mut Code, h: Home| match h {
            Home::Input => input,
            Home::Output => out,
            Home::Arena(o) => c.at(scratch, o as i64),
        };
        let temp = c.at(scratch, temp_at as i64);
        for (operands, result, f) in &homes {
            let x0 = operands.first().map_or(null, |h| place(&mut c, *h));
            let x1 = operands.get(1).map_or(null, |h| place(&mut c, *h));
            let y = place(&mut c, *result);
            c.call(*f, &[x0, x1, y, temp]);
        }
        if same {
            c.memcpy(out, input, out_bytes);
        }
        c.b.ins().return_(&[]);
        Ok(())
    })?;

    // The edges' kernels.
    let q_levels = levels_of(&func.op(quantize).results[0], None)
        .ok_or("qcc build needs the input quantized 8-bit per-tensor")?;
    let q_kernel = elementwise::define_quantize(sink, input.scale, &q_levels)?;
    let dq_kernel =
        elementwise::define_dequantize(sink, output.scale, output.zero_point, output.signed)?;
    let (q_at, dq_at) = match (home(Value::of(quantize), false)?, home(dq_operand, false)?) {
        (Home::Arena(a), Home::Arena(b)) => (a, b),
        _ => return Err("internal error: the edges have no place in the arena".into()),
    };
    let in_elems = input.elements();
    let helpers = cpu.map(|c| c.helpers(sink)).transpose()?;

    let entry = |sink: &mut dyn Sink, suffix: &str, floats: bool| {
        sink.function(
            suffix,
            &Shape {
                params: &[ptr; 3],
                returns: &[types::I32],
                export: true,
            },
            &mut |b, args, m| {
                let mut c = Code { b, m, ptr, fe };
                let (input, out, scratch) = (args[0], args[1], args[2]);
                checks(&mut c, [input, out, scratch]);
                if let (Some(cpu), Some(h)) = (cpu, &helpers) {
                    cpu.emit(c.b, c.m, h, ptr, status::CPU);
                }
                if floats {
                    let q = c.at(scratch, q_at as i64);
                    let d = c.at(scratch, dq_at as i64);
                    let temp = c.at(scratch, temp_at as i64);
                    stream(&mut c, q_kernel, (input, 4), (q, 1), in_elems, temp);
                    c.call(core, &[q, d, scratch]);
                    stream(&mut c, dq_kernel, (d, 1), (out, 4), out_bytes, temp);
                } else {
                    c.call(core, &[input, out, scratch]);
                }
                let ok = c.b.ins().iconst(types::I32, i64::from(status::OK));
                c.b.ins().return_(&[ok]);
                Ok(())
            },
        )
    };
    let run = entry(sink, "run", true)?;
    let run_u8 = entry(sink, "run_u8", false)?;
    Ok(Lowered {
        run,
        run_u8,
        scratch,
        arena: arena.size,
        input,
        output,
        ops: steps.len(),
    })
}

/// Returns early with [`status::NULL`] or [`status::MISALIGNED`] when a pointer is null or the
/// scratch area misaligned.
fn checks(c: &mut Code, [input, out, scratch]: [ClifValue; 3]) {
    let fail = |c: &mut Code, cond: ClifValue, code: i32| {
        let bad = c.b.create_block();
        let good = c.b.create_block();
        c.b.ins().brif(cond, bad, &[], good, &[]);
        c.b.switch_to_block(bad);
        let v = c.b.ins().iconst(types::I32, i64::from(code));
        c.b.ins().return_(&[v]);
        c.b.switch_to_block(good);
    };
    for p in [input, out, scratch] {
        let null = c.b.ins().icmp_imm_u(IntCC::Equal, p, 0);
        fail(c, null, status::NULL);
    }
    let low = c.b.ins().band_imm_u(scratch, (SCRATCH_ALIGN - 1) as i64);
    fail(c, low, status::MISALIGNED);
}

/// Runs streaming kernel `f` (groups of eight elements) over `n` elements from `src` (`.1` bytes
/// each) to `dst`; the last partial group goes through `temp` (64 bytes).
fn stream(
    c: &mut Code,
    f: FuncId,
    src: (ClifValue, usize),
    dst: (ClifValue, usize),
    n: usize,
    temp: ClifValue,
) {
    const GROUP: usize = 8;
    let whole = n / GROUP;
    if whole > 0 {
        let groups = c.int(whole as i64);
        c.call(f, &[src.0, src.0, dst.0, groups]);
    }
    let rest = n % GROUP;
    if rest > 0 {
        // Inputs in the first 32 bytes of `temp`, outputs in the last 32.
        let (tin, tout) = (temp, c.at(temp, 32));
        c.memset(tin, 0, GROUP * src.1);
        let from = c.at(src.0, (whole * GROUP * src.1) as i64);
        c.memcpy(tin, from, rest * src.1);
        let one = c.int(1);
        c.call(f, &[tin, tin, tout, one]);
        let to = c.at(dst.0, (whole * GROUP * dst.1) as i64);
        c.memcpy(to, tout, rest * dst.1);
    }
}

/// The function's edge ops: the `quant.quantize` that alone reads its one f32 argument, and the
/// `quant.dequantize` that makes its one result.
fn edges(func: &Function) -> Result<(NodeIndex, NodeIndex), String> {
    let shape = "qcc build compiles a function of one f32 input, quantized by quant.quantize, and \
                 one f32 result made by quant.dequantize";
    if func.args.len() != 1 || func.results.len() != 1 {
        return Err(format!(
            "@{} takes {} input(s) and returns {} value(s); {shape}",
            func.name,
            func.args.len(),
            func.results.len()
        ));
    }
    let arg = Value::of(func.args[0]);
    let users = func.users(arg);
    let quantize = match users.as_slice() {
        [(node, 0)] if func.op(*node).is(OpKind::Quantize) => *node,
        _ => {
            return Err(format!(
                "@{}'s input is not read by one quant.quantize alone; {shape}",
                func.name
            ));
        }
    };
    let result = func.results[0];
    let dequantize = match func.try_op(result.node) {
        Some(op) if op.is(OpKind::Dequantize) => result.node,
        _ => {
            return Err(format!(
                "@{}'s result is not made by quant.dequantize; {shape}",
                func.name
            ));
        }
    };
    if !func.users(Value::of(dequantize)).is_empty() {
        return Err(format!(
            "@{}'s dequantized result is also read inside it; {shape}",
            func.name
        ));
    }
    Ok((quantize, dequantize))
}

/// An error unless the operands a driver reads as values (a layer's input, every operand of the
/// other ops) are computed ones: the drivers receive those, in order, and bake constants in.
fn computed_operands(func: &Function, node: NodeIndex) -> Result<(), String> {
    let layer = matches!(
        func.op(node).kind(),
        Some(OpKind::QuantConv2d | OpKind::QuantDense)
    );
    let operands = func.operands(node);
    let read = if layer { &operands[..1] } else { &operands[..] };
    if read.iter().any(|v| func.op(v.node).is(OpKind::Const)) {
        return Err("qcc build needs this operand computed, not a constant".into());
    }
    Ok(())
}

/// The driver of op `node`.
fn lower_op(
    sink: &mut dyn Sink,
    module: &Module,
    func: &Function,
    node: NodeIndex,
    tag: &str,
    vnni: bool,
) -> Result<Driver, String> {
    let op = func.op(node);
    let kind = op
        .kind()
        .ok_or_else(|| format!("unknown op '{}'", op.name))?;
    let operands = func.operands(node);
    let types: Vec<&TensorType> = operands.iter().map(|v| func.value_type(*v)).collect();
    let out = &op.results[0];
    match kind {
        OpKind::QuantConv2d | OpKind::QuantDense => {
            lower_layer(sink, module, func, node, tag, vnni, &types)
        }
        OpKind::QuantAdd => lower_add(sink, op, tag, &types),
        OpKind::QuantGlobalAvgPool => lower_global_avg_pool(sink, op, tag, types[0]),
        OpKind::Flatten | OpKind::Reshape => {
            let bytes = out.numel() * out.elem.size_bytes();
            let func = driver(sink, tag, |c, [x, _, y, _]| {
                c.memcpy(y, x, bytes);
                Ok(())
            })?;
            Ok(Driver { func, temp: 0 })
        }
        other => Err(format!(
            "qcc build has no generated code for {} yet (it compiles {} between the input's \
             quant.quantize and the output's quant.dequantize)",
            other.name(),
            supported()
                .iter()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The constant tensor of operand `i` of `node`, or an error naming it.
fn constant<'m>(
    module: &'m Module,
    func: &Function,
    node: NodeIndex,
    i: usize,
    what: &str,
) -> Result<std::borrow::Cow<'m, qcc_dialects::Tensor>, String> {
    func.operands(node)
        .get(i)
        .and_then(|v| func.try_op(v.node))
        .filter(|o| o.is(OpKind::Const))
        .and_then(|o| module.const_value(o))
        .ok_or_else(|| format!("qcc build needs its {what} to be a constant of the module"))
}

/// An integer conv or dense layer.
fn lower_layer(
    sink: &mut dyn Sink,
    module: &Module,
    func: &Function,
    node: NodeIndex,
    tag: &str,
    vnni: bool,
    types: &[&TensorType],
) -> Result<Driver, String> {
    let op = func.op(node);
    let x_ty = types[0];
    let out_ty = &op.results[0];
    let w = constant(module, func, node, 1, "weight")?;
    let wv = crate::layers::weights(&w)?;
    let channels = w.shape[0];
    let bias = match func.operands(node).len() {
        n if n > 2 => {
            let b = constant(module, func, node, 2, "bias")?;
            crate::layers::bias(Some(&&*b), channels)
        }
        _ => vec![0; channels],
    };
    let requant = layer_requant(op, types)?;
    let finish = Finish {
        requant: &requant,
        out_ty,
        bias,
    };
    let (_, zx, signed) = params8(x_ty)
        .ok_or_else(|| format!("qcc build needs an 8-bit per-tensor input, got {x_ty}"))?;
    let zu = shifted_zero_point(x_ty)?;
    let ints: Vec<i32> = wv.iter().map(|x| i32::from(*x)).collect();
    let max_w = magnitude(&ints);
    let k: usize = w.shape[1..].iter().product();
    let max_x = crate::layers::storage_extent(zx, signed);
    let largest_bias = finish
        .bias
        .iter()
        .map(|b| b.unsigned_abs())
        .max()
        .unwrap_or(0);
    let bound = k as u128 * u128::from(max_x) * u128::from(max_w);
    if bound + u128::from(largest_bias) >= 1 << 31 {
        return Err(format!(
            "its sums can reach 2^31 (depth {k}, weights up to {max_w}), which the int8 kernels \
             qcc build generates do not compute exactly"
        ));
    }
    let (records, levels) = finish.records(bound).ok_or(
        "qcc build cannot fuse its requantization into the kernels exactly (an output that is \
         not 8-bit, or sums plus bias that can reach 2^31)",
    )?;
    let raw_zero = if signed { zx as i8 as u8 } else { zx as u8 };

    let packing = match Form::for_depth_on(k, vnni) {
        Form::Quads => Packing::Quads { flip: signed },
        Form::Pairs => Packing::Pairs {
            signed,
            zero_point: zx,
        },
    };
    if op.is(OpKind::QuantDense) {
        let a = PackedA::new(wv, channels, k, packing.form());
        let n = x_ty.shape[0];
        let recs = group_records(&records, 0, &a, packing.folded_zero(zu));
        return lower_gemm_dense(sink, tag, &a, &recs, levels, n, packing);
    }

    let attrs = Conv2dAttrs::of(op)?;
    if x_ty.shape.len() != 4 || w.shape.len() != 4 {
        return Err("qcc build compiles 2-D convolutions (4-D input and weight) only".into());
    }
    let [n, c, h, wd] = [x_ty.shape[0], x_ty.shape[1], x_ty.shape[2], x_ty.shape[3]];
    let geometry = Geometry::of(&attrs, [h, wd], [w.shape[2], w.shape[3]])?;
    if is_depthwise(&w.shape, attrs.groups) {
        let g = depthwise_geometry(&attrs, x_ty, &w.shape)
            .ok_or("qcc build does not support this depthwise geometry yet")?;
        let form = crate::layers::depthwise_form_on(&g, k, vnni);
        let taps: Vec<u8> = wv
            .chunks(k.max(1))
            .flat_map(|t| match form {
                Form::Quads => depthwise::quad_words(t, &g, zu),
                Form::Pairs => depthwise::pair_words(t),
            })
            .flat_map(|w| w.to_le_bytes())
            .collect();
        let kernel = depthwise::define(sink, &g, form, Epilogue::Requantize(levels))?;
        let taps = sink.data(&format!("{tag}_taps"), &taps, 16)?;
        let recs = sink.data(&format!("{tag}_records"), &words(&records), 16)?;
        let staging = match form {
            Form::Quads => Staging::Quads { pad: zu as u8 },
            Form::Pairs => Staging::Pairs { zero_point: zx },
        };
        let layer = Depthwise {
            g,
            kernel,
            taps,
            records: recs,
            images: n,
            channels: c,
            staging,
            signed,
        };
        return layer.lower(sink, tag);
    }
    let groups = attrs.groups;
    let (cg, og) = (w.shape[1], channels / groups);
    let packed: Vec<PackedA> = (0..groups)
        .map(|g| PackedA::new(&wv[g * og * k..(g + 1) * og * k], og, k, packing.form()))
        .collect();
    let recs: Vec<Vec<i32>> = packed
        .iter()
        .enumerate()
        .map(|(g, a)| group_records(&records, RECORD_WORDS * g * og, a, packing.folded_zero(zu)))
        .collect();
    let conv = GemmConv {
        g: geometry,
        attrs,
        n,
        c,
        cg,
        og,
        k,
        raw_zero,
        packing,
    };
    conv.lower(sink, tag, &packed, &recs, levels)
}

/// How a layer's GEMM reads its activations: the stored bytes shifted to u8 (quads, flipping i8
/// storage), or `x - Z_x` as i16 (pairs).
#[derive(Clone, Copy, Debug)]
enum Packing {
    Quads { flip: bool },
    Pairs { signed: bool, zero_point: i64 },
}

impl Packing {
    fn form(self) -> Form {
        match self {
            Packing::Quads { .. } => Form::Quads,
            Packing::Pairs { .. } => Form::Pairs,
        }
    }

    /// Bytes of `p` columns of depth `k` packed.
    fn len(self, k: usize, p: usize) -> usize {
        match self {
            Packing::Quads { .. } => p.div_ceil(NR) * k.div_ceil(4) * NR * 4,
            Packing::Pairs { .. } => p.div_ceil(NR) * k.div_ceil(2) * NR * 2 * 2,
        }
    }

    /// The zero point the quads form folds into the records' biases (the pairs form centres the
    /// values itself).
    fn folded_zero(self, zu: i64) -> i64 {
        match self {
            Packing::Quads { .. } => zu,
            Packing::Pairs { .. } => 0,
        }
    }

    fn pack(self, c: &mut Code, src: ClifValue, dst: ClifValue, dims: (usize, usize, usize)) {
        match self {
            Packing::Quads { flip } => pack_quads(c, src, dst, dims, flip),
            Packing::Pairs { signed, zero_point } => {
                pack_pairs(c, src, dst, dims, signed, zero_point)
            }
        }
    }
}

/// The byte shuffle that interleaves the i16 lanes `4 * half..4 * half + 4` of two vectors
/// (`punpcklwd`, `punpckhwd`).
fn word_interleave(half: u8) -> Vec<u8> {
    (0..4)
        .flat_map(|i| {
            let j = 8 * half + 2 * i;
            [j, j + 1, 16 + j, 17 + j]
        })
        .collect()
}

/// The byte shuffle that interleaves the low eight bytes of two vectors (`punpcklbw`).
fn byte_interleave() -> Vec<u8> {
    (0..8).flat_map(|i| [i, 16 + i]).collect()
}

/// Walks the GEMM's packed layout (`[P/NR][K/per][NR][per]` values of `value` bytes) for `k`
/// rows of `p` columns (rows `ldp` bytes apart) at `src`, writing `dst`: `tile(c, rows, at)`
/// packs the whole tile at `at` from the `per` rows starting at each address of `rows` (`None`
/// past K) for eight columns; the last, partial panel is zeroed and written one value at a time
/// by `value_at(c, from, offset, at, offset)` (source and destination byte offsets).
fn walk_panels(
    c: &mut Code,
    (src, dst): (ClifValue, ClifValue),
    (k, p, ldp): (usize, usize, usize),
    (per, value): (usize, usize),
    tile: impl Fn(&mut Code, &[Option<ClifValue>], ClifValue),
    value_at: impl Fn(&mut Code, ClifValue, i32, ClifValue, i32),
) {
    let (whole_p, tail_p) = (p / NR, p % NR);
    let (whole_k, tail_k) = (k / per, k % per);
    let tile_bytes = (NR * per * value) as i64;
    let panel_bytes = k.div_ceil(per) as i64 * tile_bytes;
    // Every group of `per` rows of K, then the partial group; `each(c, rows, at, present)`.
    let groups = |c: &mut Code,
                  from: ClifValue,
                  to: ClifValue,
                  each: &dyn Fn(&mut Code, ClifValue, ClifValue, usize)| {
        if whole_k > 0 {
            let l = c.each(whole_k);
            let rows = c.index(from, l.index, (per * ldp) as i64);
            let at = c.index(to, l.index, tile_bytes);
            each(c, rows, at, per);
            l.close(c.b);
        }
        if tail_k > 0 {
            let rows = c.at(from, (whole_k * per * ldp) as i64);
            let at = c.at(to, whole_k as i64 * tile_bytes);
            each(c, rows, at, tail_k);
        }
    };
    if whole_p > 0 {
        let panels = c.each(whole_p);
        let from = c.index(src, panels.index, NR as i64);
        let to = c.index(dst, panels.index, panel_bytes);
        groups(c, from, to, &|c, rows, at, present| {
            let r: Vec<Option<ClifValue>> = (0..per)
                .map(|e| (e < present).then(|| c.at(rows, (e * ldp) as i64)))
                .collect();
            tile(c, &r, at);
        });
        panels.close(c.b);
    }
    if tail_p > 0 {
        let to = c.at(dst, whole_p as i64 * panel_bytes);
        c.memset(to, 0, panel_bytes as usize);
        let from = c.at(src, (whole_p * NR) as i64);
        groups(c, from, to, &|c, rows, at, present| {
            for e in 0..present {
                for i in 0..tail_p {
                    value_at(
                        c,
                        rows,
                        (e * ldp + i) as i32,
                        at,
                        ((per * i + e) * value) as i32,
                    );
                }
            }
        });
    }
}

/// Packs `k` rows of `p` columns (rows `ldp` bytes apart, stored 8-bit values of zero point
/// `zero_point`) at `src` into the pairs layout of `crate::gemm` at `dst`
/// (`[P/NR][K/2][NR][2]` i16 `x - Z_x`, zero-padded).
fn pack_pairs(
    c: &mut Code,
    src: ClifValue,
    dst: ClifValue,
    dims: (usize, usize, usize),
    signed: bool,
    zero_point: i64,
) {
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let tile = |c: &mut Code, rows: &[Option<ClifValue>], at: ClifValue| {
        let zero = c.b.ins().iconst(types::I16, zero_point);
        let zero = c.b.ins().splat(types::I16X8, zero);
        let vectors: Vec<ClifValue> = rows
            .iter()
            .map(|r| {
                let v = match r {
                    Some(addr) => {
                        let wide = if signed {
                            c.b.ins().sload8x8(flags(), *addr, 0)
                        } else {
                            c.b.ins().uload8x8(flags(), *addr, 0)
                        };
                        c.b.ins().isub(wide, zero)
                    }
                    None => {
                        let z = c.b.ins().iconst(types::I16, 0);
                        c.b.ins().splat(types::I16X8, z)
                    }
                };
                c.b.ins().bitcast(types::I8X16, little, v)
            })
            .collect();
        for half in 0..2u8 {
            let m = c.b.func.dfg.immediates.push(word_interleave(half).into());
            let v = c.b.ins().shuffle(vectors[0], vectors[1], m);
            c.b.ins().store(flags(), v, at, 16 * i32::from(half));
        }
    };
    let value_at = |c: &mut Code, rows: ClifValue, from: i32, at: ClifValue, to: i32| {
        let v = if signed {
            c.b.ins().sload8(types::I32, flags(), rows, from)
        } else {
            c.b.ins().uload8(types::I32, flags(), rows, from)
        };
        let v = c.b.ins().iadd_imm_s(v, -zero_point);
        c.b.ins().istore16(flags(), v, at, to);
    };
    walk_panels(c, (src, dst), dims, (2, 2), tile, value_at);
}

/// Packs `k` rows of `p` columns (rows `ldp` bytes apart) at `src` into the quads layout of
/// `crate::gemm` at `dst` (`[P/NR][K/4][NR][4]`, zero-padded), flipping i8 to u8 order when
/// `flip`.
fn pack_quads(
    c: &mut Code,
    src: ClifValue,
    dst: ClifValue,
    dims: (usize, usize, usize),
    flip: bool,
) {
    let little = MemFlagsData::new().with_endianness(Endianness::Little);
    let tile = |c: &mut Code, rows: &[Option<ClifValue>], at: ClifValue| {
        let vectors: Vec<ClifValue> = rows
            .iter()
            .map(|r| {
                let v = match r {
                    Some(addr) => {
                        let x = c.b.ins().load(types::I64, flags(), *addr, 0);
                        c.b.ins().scalar_to_vector(types::I64X2, x)
                    }
                    None => {
                        let z = c.b.ins().iconst(types::I64, 0);
                        c.b.ins().splat(types::I64X2, z)
                    }
                };
                let v = c.b.ins().bitcast(types::I8X16, little, v);
                if flip {
                    let m = c.b.ins().iconst(types::I8, 0x80);
                    let m = c.b.ins().splat(types::I8X16, m);
                    c.b.ins().bxor(v, m)
                } else {
                    v
                }
            })
            .collect();
        // Bytes of rows 0 and 1, and of rows 2 and 3, interleaved; then their words.
        let m = c.b.func.dfg.immediates.push(byte_interleave().into());
        let a = c.b.ins().shuffle(vectors[0], vectors[1], m);
        let d = c.b.ins().shuffle(vectors[2], vectors[3], m);
        for half in 0..2u8 {
            let m = c.b.func.dfg.immediates.push(word_interleave(half).into());
            let v = c.b.ins().shuffle(a, d, m);
            c.b.ins().store(flags(), v, at, 16 * i32::from(half));
        }
    };
    let value_at = |c: &mut Code, rows: ClifValue, from: i32, at: ClifValue, to: i32| {
        let v = c.b.ins().uload8(types::I32, flags(), rows, from);
        let v = if flip {
            c.b.ins().bxor_imm_u(v, 0x80)
        } else {
            v
        };
        c.b.ins().istore8(flags(), v, at, to);
    };
    walk_panels(c, (src, dst), dims, (4, 1), tile, value_at);
}

/// i32 words as little-endian bytes.
fn words(w: &[i32]) -> Vec<u8> {
    w.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A grouped or plain convolution as im2col (unless 1x1, stride 1, no padding) and GEMM.
struct GemmConv {
    g: Geometry,
    attrs: Conv2dAttrs,
    n: usize,
    c: usize,
    cg: usize,
    og: usize,
    k: usize,
    raw_zero: u8,
    packing: Packing,
}

impl GemmConv {
    fn pointwise(&self) -> bool {
        self.g.kernel == [1, 1]
            && self.attrs.window.strides == [1, 1]
            && self.attrs.window.pads == [0; 4]
    }

    fn lower(
        &self,
        sink: &mut dyn Sink,
        tag: &str,
        packed: &[PackedA],
        records: &[Vec<i32>],
        levels: Levels,
    ) -> Result<Driver, String> {
        let kernel = gemm::define(
            sink,
            self.k,
            self.packing.form(),
            Epilogue::Requantize(levels),
        )?;
        let weights: Vec<DataId> = packed
            .iter()
            .enumerate()
            .map(|(g, a)| sink.data(&format!("{tag}_w{g}"), &a.bytes(), 16))
            .collect::<Result<_, _>>()?;
        let recs: Vec<DataId> = records
            .iter()
            .enumerate()
            .map(|(g, r)| sink.data(&format!("{tag}_r{g}"), &words(r), 16))
            .collect::<Result<_, _>>()?;
        let [h, w] = self.g.input;
        let plane = self.g.output[0] * self.g.output[1];
        let (k, og) = (self.k, self.og);
        let cols = if self.pointwise() { 0 } else { k * plane };
        let packed_bytes = self.packing.len(k, plane);
        let ld = plane.div_ceil(NR) * NR;
        let rows = og.div_ceil(MR) * MR;
        let direct = ld == plane && rows == og;
        let padded = if direct { 0 } else { rows * ld };
        let temp = align(cols) + align(packed_bytes) + padded;
        let func = driver(sink, tag, |c, [x, _, y, temp]| {
            let cols_at = temp;
            let packed_at = c.at(temp, align(cols) as i64);
            let padded_at = c.at(packed_at, align(packed_bytes) as i64);
            let images = c.each(self.n);
            let image = c.index(x, images.index, (self.c * h * w) as i64);
            let out_image = c.index(y, images.index, (self.og * packed.len() * plane) as i64);
            for (g, (wd, rd)) in weights.iter().zip(&recs).enumerate() {
                let group_in = c.at(image, (g * self.cg * h * w) as i64);
                let source = if self.pointwise() {
                    group_in
                } else {
                    self.im2col(c, group_in, cols_at);
                    cols_at
                };
                self.packing.pack(c, source, packed_at, (k, plane, plane));
                let target = c.at(out_image, (g * og * plane) as i64);
                let dst = if direct { target } else { padded_at };
                let a = c.data(*wd);
                let r = c.data(*rd);
                let panels = (plane.div_ceil(NR), og.div_ceil(MR));
                c.gemm(kernel, (a, packed_at, r), dst, ld, panels.0, panels.1);
                if !direct {
                    c.copy_rows(target, padded_at, og, plane, ld);
                }
            }
            images.close(c.b);
            Ok(())
        })?;
        Ok(Driver { func, temp })
    }

    /// The `[cg * kh * kw, OH * OW]` matrix of the group at `x` into `cols` (stored bytes, the
    /// raw zero point where a window reads padding), as `crate::layers`' `im2col`.
    fn im2col(&self, c: &mut Code, x: ClifValue, cols: ClifValue) {
        let g = &self.g;
        let [h, w] = g.input;
        let [kh, kw] = g.kernel;
        let [oh, ow] = g.output;
        let [sy, sx] = g.strides;
        let [dy, dx] = g.dilations;
        let [pt, pl] = g.pads;
        let plane = oh * ow;
        let pad = self.raw_zero;
        let channels = c.each(self.cg);
        let src = c.index(x, channels.index, (h * w) as i64);
        let dst_c = c.index(cols, channels.index, (kh * kw * plane) as i64);
        for ky in 0..kh {
            let (lo, hi) = g.inside_rows(ky);
            for kx in 0..kw {
                let row = c.at(dst_c, ((ky * kw + kx) * plane) as i64);
                let (first, end) = g.inside_columns(kx);
                c.memset(row, pad, lo * ow);
                let after = c.at(row, (hi * ow) as i64);
                c.memset(after, pad, (oh - hi) * ow);
                if lo == hi {
                    continue;
                }
                let count = c.int((hi - lo) as i64);
                let zero = c.int(0);
                let l = Loop::new(c.b, zero, count);
                let oy = c.b.ins().iadd_imm_s(l.index, lo as i64);
                let d = c.index(row, oy, ow as i64);
                c.memset(d, pad, first);
                let tail = c.at(d, end as i64);
                c.memset(tail, pad, ow - end);
                if first < end {
                    // Input row `oy * sy + ky * dy - pt`, column `first * sx + kx * dx - pl`.
                    let line = c.index(src, oy, (sy * w) as i64);
                    let start = (ky * dy) as i64 * w as i64 - (pt * w) as i64
                        + (first * sx + kx * dx) as i64
                        - pl as i64;
                    let s = c.at(line, start);
                    let to = c.at(d, first as i64);
                    if sx == 1 {
                        c.memcpy(to, s, end - first);
                    } else {
                        c.copy_strided(to, s, end - first, sx);
                    }
                }
                l.close(c.b);
            }
        }
        channels.close(c.b);
    }
}

/// Bytes rounded up to the scratch alignment.
fn align(bytes: usize) -> usize {
    bytes.div_ceil(SCRATCH_ALIGN) * SCRATCH_ALIGN
}

/// A dense layer: `x [N, K]` times `a` (`M` rows), the batch as GEMM columns.
fn lower_gemm_dense(
    sink: &mut dyn Sink,
    tag: &str,
    a: &PackedA,
    records: &[i32],
    levels: Levels,
    n: usize,
    packing: Packing,
) -> Result<Driver, String> {
    let kernel = gemm::define(sink, a.k, packing.form(), Epilogue::Requantize(levels))?;
    let wd = sink.data(&format!("{tag}_w"), &a.bytes(), 16)?;
    let rd = sink.data(&format!("{tag}_r"), &words(records), 16)?;
    let (m, k) = (a.m, a.k);
    let ld = n.div_ceil(NR) * NR;
    let rows = a.panels() * MR;
    let transposed = if n > 1 { align(n * k) } else { 0 };
    let packed = align(packing.len(k, n));
    let temp = transposed + packed + rows * ld;
    let func = driver(sink, tag, |c, [x, _, y, temp]| {
        let packed_at = c.at(temp, transposed as i64);
        let out_at = c.at(packed_at, packed as i64);
        let source = if n > 1 {
            // x transposed: K rows of N columns.
            let l = c.each(n);
            let from = c.index(x, l.index, k as i64);
            let to = c.b.ins().iadd(temp, l.index);
            let inner = c.each(k);
            let s = c.b.ins().iadd(from, inner.index);
            let d = c.index(to, inner.index, n as i64);
            let v = c.b.ins().uload8(types::I32, flags(), s, 0);
            c.b.ins().istore8(flags(), v, d, 0);
            inner.close(c.b);
            l.close(c.b);
            temp
        } else {
            x
        };
        packing.pack(c, source, packed_at, (k, n, n));
        let aw = c.data(wd);
        let r = c.data(rd);
        c.gemm(
            kernel,
            (aw, packed_at, r),
            out_at,
            ld,
            n.div_ceil(NR),
            a.panels(),
        );
        // C is [M][ld]; the output [N][M].
        let images = c.each(n);
        let column = c.b.ins().iadd(out_at, images.index);
        let row = c.index(y, images.index, m as i64);
        c.copy_bytes(row, column, m, ld as i64, false);
        images.close(c.b);
        Ok(())
    })?;
    Ok(Driver { func, temp })
}

/// How a depthwise layer stages a channel's plane for its kernel (see `crate::depthwise`).
#[derive(Clone, Copy, Debug)]
enum Staging {
    /// Rows of u8 bytes, the padding the shifted zero point `pad`.
    Quads { pad: u8 },
    /// `stride` column phases of i16 `x - Z_x` rows, the padding zero.
    Pairs { zero_point: i64 },
}

/// A depthwise convolution: every channel's plane staged (the padding written once per call,
/// since the plane never lands there) and run through the kernel of its geometry.
struct Depthwise {
    g: Geometry,
    kernel: FuncId,
    taps: DataId,
    records: DataId,
    images: usize,
    channels: usize,
    staging: Staging,
    signed: bool,
}

impl Depthwise {
    fn form(&self) -> Form {
        match self.staging {
            Staging::Quads { .. } => Form::Quads,
            Staging::Pairs { .. } => Form::Pairs,
        }
    }

    fn lower(&self, sink: &mut dyn Sink, tag: &str) -> Result<Driver, String> {
        let g = self.g;
        let form = self.form();
        let staged_bytes = g.staged_len(form) * if form == Form::Pairs { 2 } else { 1 };
        let in_place = g.writes_in_place();
        let padded = if in_place { 0 } else { g.out_len() };
        let temp = align(staged_bytes) + padded;
        let [h, w] = g.input;
        let [oh, ow] = g.output;
        let per = depthwise::words_per_channel(&g, form) * 4;
        let func = driver(sink, tag, |c, [x, _, y, temp]| {
            let padded_at = c.at(temp, align(staged_bytes) as i64);
            let pad = match self.staging {
                Staging::Quads { pad } => pad,
                Staging::Pairs { .. } => 0,
            };
            c.memset(temp, pad, staged_bytes);
            let t = c.data(self.taps);
            let r = c.data(self.records);
            let planes = c.each(self.images * self.channels);
            let channel = if self.images > 1 {
                c.b.ins().urem_imm_u(planes.index, self.channels as i64)
            } else {
                planes.index
            };
            let src = c.index(x, planes.index, (h * w) as i64);
            let dst = c.index(y, planes.index, (oh * ow) as i64);
            match self.staging {
                Staging::Quads { .. } => self.stage_quads(c, src, temp),
                Staging::Pairs { zero_point } => self.stage_pairs(c, src, temp, zero_point),
            }
            let wt = c.index(t, channel, per as i64);
            let rc = c.index(r, channel, i64::from(RECORD));
            let target = if in_place { dst } else { padded_at };
            c.call(self.kernel, &[temp, wt, target, rc]);
            if !in_place {
                c.copy_rows(dst, padded_at, oh, ow, g.row());
            }
            planes.close(c.b);
            Ok(())
        })?;
        Ok(Driver { func, temp })
    }

    /// Copies the plane at `src` into the quads form's padded rows at `staged`.
    fn stage_quads(&self, c: &mut Code, src: ClifValue, staged: ClifValue) {
        let g = &self.g;
        let width = g.staged_len(Form::Quads) / g.rows();
        let [h, w] = g.input;
        let [pt, pl] = g.pads;
        let (first, last) = (pl.min(width), (pl + w).min(width));
        let count = h.min(g.rows().saturating_sub(pt));
        if first >= last || count == 0 {
            return;
        }
        let l = c.each(count);
        let from = c.index(src, l.index, w as i64);
        let row = c.b.ins().iadd_imm_s(l.index, pt as i64);
        let to = c.index(staged, row, width as i64);
        let to = c.at(to, first as i64);
        if self.signed {
            c.copy_bytes(to, from, last - first, 1, true);
        } else {
            c.memcpy(to, from, last - first);
        }
        l.close(c.b);
    }

    /// Writes the plane at `src` as `x - Z_x` into the pairs form's column phases at `staged`:
    /// padded column `col` (input column `col - pl`) of row `row` goes to phase `col % s`,
    /// column `col / s`.
    fn stage_pairs(&self, c: &mut Code, src: ClifValue, staged: ClifValue, zero_point: i64) {
        let g = &self.g;
        let (rows, width, s) = (g.rows(), g.phase_width(), g.strides[1]);
        let [h, w] = g.input;
        let [pt, pl] = g.pads;
        let padded = width * s;
        let (first, last) = (pl.min(padded), (pl + w).min(padded));
        let count = h.min(rows.saturating_sub(pt));
        if first >= last || count == 0 {
            return;
        }
        let l = c.each(count);
        let from = c.index(src, l.index, w as i64);
        let row = c.b.ins().iadd_imm_s(l.index, pt as i64);
        for phase in 0..s {
            // Padded columns `first..last` of this phase: `col = j * s + phase`.
            let j0 = first.saturating_sub(phase).div_ceil(s);
            let j1 = (last + s - 1 - phase) / s;
            if j0 >= j1 {
                continue;
            }
            let line = c.index(staged, row, 2 * width as i64);
            let line = c.at(line, (2 * (phase * rows * width + j0)) as i64);
            let start = c.at(from, (j0 * s + phase - pl) as i64);
            let cols = c.each(j1 - j0);
            let at = c.index(start, cols.index, s as i64);
            let v = if self.signed {
                c.b.ins().sload8(types::I32, flags(), at, 0)
            } else {
                c.b.ins().uload8(types::I32, flags(), at, 0)
            };
            let v = c.b.ins().iadd_imm_s(v, -zero_point);
            let to = c.index(line, cols.index, 2);
            c.b.ins().istore16(flags(), v, to, 0);
            cols.close(c.b);
        }
        l.close(c.b);
    }
}

/// A `quant.add` of same-shaped 8-bit operands through its table of results.
fn lower_add(
    sink: &mut dyn Sink,
    op: &Operation,
    tag: &str,
    types: &[&TensorType],
) -> Result<Driver, String> {
    let out = &op.results[0];
    let Some((table, _, _)) = elementwise::add_table_of(op, types)? else {
        return Err("qcc build adds 8-bit per-tensor operands only".into());
    };
    if types[0].shape != types[1].shape {
        return Err("qcc build adds operands of the same shape only (no broadcasting yet)".into());
    }
    let lookup = elementwise::define_lookup(sink)?;
    let table_name = format!("add_table_{:016x}", fingerprint(&table));
    let table = sink.data(&table_name, &table, 64)?;
    let n = out.numel();
    let per = elementwise::LOOKUPS;
    let func = driver(sink, tag, |c, [a, b, y, _]| {
        let t = c.data(table);
        let groups = c.int((n / per) as i64);
        c.call(lookup, &[a, b, y, groups, t]);
        for i in n / per * per..n {
            let x = c.b.ins().uload8(types::I64, flags(), a, i as i32);
            let z = c.b.ins().uload8(types::I64, flags(), b, i as i32);
            let row = c.b.ins().ishl_imm_u(x, 8);
            let at = c.b.ins().bor(row, z);
            let at = c.b.ins().iadd(t, at);
            let v = c.b.ins().uload8(types::I32, flags(), at, 0);
            c.b.ins().istore8(flags(), v, y, i as i32);
        }
        Ok(())
    })?;
    Ok(Driver { func, temp: 0 })
}

/// A 64-bit FNV-1a hash of `bytes` (names a table by its contents, so equal tables are one).
fn fingerprint(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A `quant.global_avg_pool` of an 8-bit `[N, C, H, W]` tensor of type `x`.
fn lower_global_avg_pool(
    sink: &mut dyn Sink,
    op: &Operation,
    tag: &str,
    x: &TensorType,
) -> Result<Driver, String> {
    let pooling = crate::reduce::Pooling::of(op, x).ok_or(
        "qcc build pools 8-bit per-tensor [N, C, H, W] values whose averaging multiplier is \
         below 1 only",
    )?;
    let plane = pooling.plane;
    let kernel = pooling.define(sink)?;
    let planes = x.shape[0] * x.shape[1];
    let groups = planes.div_ceil(crate::reduce::PLANES);
    let row = pooling.row();
    let rows = groups * crate::reduce::PLANES * row;
    let outs = groups * crate::reduce::PLANES;
    let temp = align(rows) + outs;
    let func = driver(sink, tag, |c, [xp, _, y, temp]| {
        c.memset(temp, 0, rows);
        let l = c.each(planes);
        let to = c.index(temp, l.index, row as i64);
        let from = c.index(xp, l.index, plane as i64);
        c.memcpy(to, from, plane);
        l.close(c.b);
        let sums = c.at(temp, align(rows) as i64);
        let g = c.int(groups as i64);
        c.call(kernel, &[temp, sums, g]);
        c.memcpy(y, sums, planes);
        Ok(())
    })?;
    Ok(Driver { func, temp })
}

/// Every op kind `lower` has a driver for between the function's edges (the input's
/// `quant.quantize` and the output's `quant.dequantize`).
pub fn supported() -> Vec<OpKind> {
    vec![
        OpKind::QuantConv2d,
        OpKind::QuantDense,
        OpKind::QuantAdd,
        OpKind::QuantGlobalAvgPool,
        OpKind::Flatten,
        OpKind::Reshape,
    ]
}
