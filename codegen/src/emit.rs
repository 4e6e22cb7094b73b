//! Where generated code goes: an [`Emitter`] defines functions and read-only data in one
//! `cranelift_module` module — the process's JIT (`crate::jit`) or an object file
//! (`crate::object`) — so every kernel and driver is written once, against [`Sink`], for both.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cranelift_codegen::Context;
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{AbiParam, Function, Signature, Type, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_codegen::isa::TargetIsa;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{
    DataDescription, DataId, FuncId, Linkage, Module, ModuleError, ModuleReloc,
};
use rayon::prelude::*;

/// Where generated kernels are written as text, besides being compiled.
#[derive(Clone, Debug, Default)]
pub struct Dumps {
    /// A folder for each kernel's CLIF (`NAME.clif`).
    pub clif: Option<PathBuf>,
    /// A folder for each kernel's machine code as Cranelift prints it (`NAME.s`).
    pub asm: Option<PathBuf>,
}

/// The body of a generated function: given the builder (in the entry block), the function's
/// parameters and the module (to call other functions and read data), it emits the code.
pub type Body<'a> =
    dyn FnMut(&mut FunctionBuilder, &[Value], &mut dyn Module) -> Result<(), String> + 'a;

/// The shape of a generated function.
#[derive(Clone, Debug)]
pub struct Shape<'a> {
    /// Parameter types.
    pub params: &'a [Type],
    /// Result types.
    pub returns: &'a [Type],
    /// Exported (a symbol others link against) or local to the module.
    pub export: bool,
}

impl<'a> Shape<'a> {
    /// A local function of `params` returning nothing (every kernel).
    pub fn kernel(params: &'a [Type]) -> Shape<'a> {
        Shape {
            params,
            returns: &[],
            export: false,
        }
    }
}

/// Something generated functions and data are defined in.
pub trait Sink {
    /// The function named `name` (a name that spells out its whole specialisation): the one
    /// already defined under that name, or a new one of `shape` whose code `body` emits. A
    /// verifier or code-generation error names the function.
    fn function(&mut self, name: &str, shape: &Shape, body: &mut Body) -> Result<FuncId, String>;

    /// A function of `shape` named `name` whose machine code is `bytes` as they are (a few
    /// instructions Cranelift has no operation for), or the one already defined.
    fn machine_code(&mut self, name: &str, shape: &Shape, bytes: &[u8]) -> Result<FuncId, String>;

    /// Read-only data named `name`: the one already defined, or `bytes` aligned to `align`.
    fn data(&mut self, name: &str, bytes: &[u8], align: u64) -> Result<DataId, String>;

    /// The target's pointer type.
    fn pointer(&self) -> Type;

    /// Whether the target is x86-64 (where x86-only instructions may be used).
    fn x86(&self) -> bool;

    /// What the function builder needs to know of the target (for `memcpy` and `memset` calls).
    fn frontend(&self) -> TargetFrontendConfig;
}

/// A definition waiting for [`Emitter::flush`]: a function built and declared (to compile), or
/// machine code or data to define after the functions built before it, so that the module lays
/// everything out in the order it was written.
enum Pending {
    Function {
        id: FuncId,
        name: String,
        func: Box<Function>,
    },
    Bytes {
        id: FuncId,
        name: String,
        bytes: Vec<u8>,
    },
    Data {
        id: DataId,
        name: String,
        desc: DataDescription,
    },
}

/// Functions built before a deferring emitter compiles them (so that the functions waiting, and
/// the data defined among them, hold little memory; enough to keep every thread busy).
const DEFERRED_AT_MOST: usize = 16;

/// A deferred definition, compiled.
enum Ready {
    Function(Compiled),
    Bytes(FuncId, String, Vec<u8>),
    Data(DataId, String, DataDescription),
}

/// A deferred function's machine code, ready to define in the module.
struct Compiled {
    id: FuncId,
    name: String,
    alignment: u64,
    bytes: Vec<u8>,
    relocs: Vec<ModuleReloc>,
    vcode: Option<String>,
}

/// A [`Sink`] over one module.
pub struct Emitter<M: Module> {
    /// The module everything is defined in.
    pub module: M,
    builder: FunctionBuilderContext,
    functions: HashMap<String, FuncId>,
    data: HashMap<String, DataId>,
    /// Put before every symbol's name (an object's functions share one namespace with the
    /// program they are linked into).
    prefix: String,
    /// Where functions are dumped as text.
    pub dumps: Dumps,
    /// Functions compiled so far.
    pub compiled: usize,
    /// Time spent compiling them.
    pub compiling: Duration,
    /// Definitions not made yet: at most the one just written, unless deferring.
    pending: Vec<Pending>,
    /// Whether functions wait to be compiled together ([`Emitter::defer`]).
    deferring: bool,
}

impl<M: Module> Emitter<M> {
    /// An emitter into `module`, symbols named `prefix` + name, dumping as `dumps` asks.
    pub fn new(module: M, prefix: &str, dumps: Dumps) -> Emitter<M> {
        Emitter {
            module,
            builder: FunctionBuilderContext::new(),
            functions: HashMap::new(),
            data: HashMap::new(),
            prefix: prefix.to_string(),
            dumps,
            compiled: 0,
            compiling: Duration::ZERO,
            pending: Vec::new(),
            deferring: false,
        }
    }

    /// From now on, functions are built and declared at once but compiled together, over the
    /// thread pool, a few at a time and by [`Emitter::flush`] (a whole program's functions are
    /// independent).
    pub fn defer(&mut self) {
        self.deferring = true;
    }

    /// Compiles every function waiting, in parallel, and defines them in the module in the
    /// order they were built, with the machine code and data written among them (the same
    /// bytes and layout as one at a time). A verifier or code-generation error names the
    /// function.
    pub fn flush(&mut self) -> Result<(), String> {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let isa = self.module.isa();
        let disasm = self.dumps.asm.is_some();
        let ready: Vec<Result<Ready, String>> = pending
            .into_par_iter()
            .map(|p| match p {
                Pending::Function { id, name, func } => {
                    compile(isa, disasm, id, name, func).map(Ready::Function)
                }
                Pending::Bytes { id, name, bytes } => Ok(Ready::Bytes(id, name, bytes)),
                Pending::Data { id, name, desc } => Ok(Ready::Data(id, name, desc)),
            })
            .collect();
        for r in ready {
            match r? {
                Ready::Function(c) => {
                    self.module
                        .define_function_bytes(c.id, c.alignment, &c.bytes, &c.relocs)
                        .map_err(|e| format!("kernel {}: defining it: {e}", c.name))?;
                    if let Some(dir) = &self.dumps.asm {
                        let text = c.vcode.unwrap_or_default();
                        Self::write_dump(dir, format!("{}.s", c.name), text)
                            .map_err(|e| format!("kernel {}: dumping: {e}", c.name))?;
                    }
                    self.compiled += 1;
                }
                Ready::Bytes(id, name, bytes) => self
                    .module
                    .define_function_bytes(id, 16, &bytes, &[])
                    .map_err(|e| format!("function {name}: {e}"))?,
                Ready::Data(id, name, desc) => self
                    .module
                    .define_data(id, &desc)
                    .map_err(|e| format!("data {name}: {e}"))?,
            }
        }
        self.compiling += started.elapsed();
        Ok(())
    }

    /// Queues `p` and, unless deferring or while few functions wait, defines it (and whatever
    /// waits before it).
    fn queue(&mut self, p: Pending) -> Result<(), String> {
        self.pending.push(p);
        let waiting = self
            .pending
            .iter()
            .filter(|p| matches!(p, Pending::Function { .. }))
            .count();
        if !self.deferring || waiting >= DEFERRED_AT_MOST {
            self.flush()?;
        }
        Ok(())
    }

    /// The module, everything defined.
    pub fn into_module(self) -> M {
        self.module
    }

    fn signature(&self, shape: &Shape) -> Signature {
        let mut sig = self.module.make_signature();
        sig.params
            .extend(shape.params.iter().map(|t| AbiParam::new(*t)));
        sig.returns
            .extend(shape.returns.iter().map(|t| AbiParam::new(*t)));
        sig
    }

    fn write_dump(dir: &std::path::Path, file: String, text: String) -> Result<(), String> {
        std::fs::write(dir.join(&file), text)
            .map_err(|e| format!("writing {file} into {}: {e}", dir.display()))
    }
}

impl<M: Module> Sink for Emitter<M> {
    fn function(&mut self, name: &str, shape: &Shape, body: &mut Body) -> Result<FuncId, String> {
        if let Some(&id) = self.functions.get(name) {
            return Ok(id);
        }
        let started = Instant::now();
        let sig = self.signature(shape);
        let symbol = format!("{}{name}", self.prefix);
        let linkage = if shape.export {
            Linkage::Export
        } else {
            Linkage::Local
        };
        let fail = |what: &str, e: String| format!("kernel {name}: {what}: {e}");
        let id = self
            .module
            .declare_function(&symbol, linkage, &sig)
            .map_err(|e| fail("declaring it", e.to_string()))?;
        let mut func = Function::with_name_signature(Default::default(), sig);
        let frontend = self.module.target_config();
        let built = {
            let mut b = FunctionBuilder::new(&mut func, &mut self.builder);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let args = b.block_params(entry).to_vec();
            let built = body(&mut b, &args, &mut self.module);
            b.seal_all_blocks();
            b.finalize(frontend);
            built
        };
        built?;
        if let Some(dir) = &self.dumps.clif {
            Self::write_dump(dir, format!("{name}.clif"), func.display().to_string())
                .map_err(|e| fail("dumping", e))?;
        }
        self.functions.insert(name.to_string(), id);
        self.compiling += started.elapsed();
        self.queue(Pending::Function {
            id,
            name: name.to_string(),
            func: Box::new(func),
        })?;
        Ok(id)
    }

    fn machine_code(&mut self, name: &str, shape: &Shape, bytes: &[u8]) -> Result<FuncId, String> {
        if let Some(&id) = self.functions.get(name) {
            return Ok(id);
        }
        let sig = self.signature(shape);
        let symbol = format!("{}{name}", self.prefix);
        let fail = |e: ModuleError| format!("function {name}: {e}");
        let id = self
            .module
            .declare_function(&symbol, Linkage::Local, &sig)
            .map_err(fail)?;
        self.queue(Pending::Bytes {
            id,
            name: name.to_string(),
            bytes: bytes.to_vec(),
        })?;
        self.functions.insert(name.to_string(), id);
        Ok(id)
    }

    fn data(&mut self, name: &str, bytes: &[u8], align: u64) -> Result<DataId, String> {
        if let Some(&id) = self.data.get(name) {
            return Ok(id);
        }
        let symbol = format!("{}{name}", self.prefix);
        let id = self
            .module
            .declare_data(&symbol, Linkage::Local, false, false)
            .map_err(|e| format!("data {name}: {e}"))?;
        let mut desc = DataDescription::new();
        desc.define(bytes.to_vec().into_boxed_slice());
        desc.set_align(align);
        self.queue(Pending::Data {
            id,
            name: name.to_string(),
            desc,
        })?;
        self.data.insert(name.to_string(), id);
        Ok(id)
    }

    fn pointer(&self) -> Type {
        self.module.target_config().pointer_type()
    }

    fn frontend(&self) -> TargetFrontendConfig {
        self.module.target_config()
    }

    fn x86(&self) -> bool {
        self.module.isa().name() == "x64"
    }
}

/// Compiles the deferred function `func` (declared as `id`, named `name`) for `isa`.
fn compile(
    isa: &dyn TargetIsa,
    disasm: bool,
    id: FuncId,
    name: String,
    func: Box<Function>,
) -> Result<Compiled, String> {
    let mut ctx = Context::for_function(*func);
    ctx.set_disasm(disasm);
    if let Err(e) = ctx.compile(isa, &mut ControlPlane::default()) {
        let message = cranelift_codegen::print_errors::pretty_error(e.func, e.inner);
        return Err(format!("kernel {name}: Cranelift rejected it: {message}"));
    }
    let code = ctx
        .compiled_code()
        .ok_or_else(|| format!("kernel {name}: no code after compiling"))?;
    let relocs = code
        .buffer
        .relocs()
        .iter()
        .map(|r| ModuleReloc::from_mach_reloc(r, &ctx.func, id))
        .collect();
    Ok(Compiled {
        id,
        alignment: u64::from(code.buffer.alignment),
        bytes: code.code_buffer().to_vec(),
        relocs,
        vcode: code.vcode.clone(),
        name,
    })
}
