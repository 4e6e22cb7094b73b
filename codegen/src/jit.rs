//! The process-wide JIT: the native ISA (with the CPU features detected at run time), one
//! `cranelift_jit` module that holds every generated kernel for the life of the process, and a
//! cache keyed by each kernel's specialisation, so preparing the same layer twice (bias correction
//! prepares a module once per batch) compiles nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use cranelift_codegen::Context;
use cranelift_codegen::ir::{AbiParam, Type, Value};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};

/// The environment variable that, when set (to anything but `0`), hides AVX-VNNI and
/// AVX512-VNNI from the code generator, so the exact `pmaddwd` kernels run on every CPU.
pub const NO_VNNI_VAR: &str = "QCC_NO_VNNI";

/// Where generated kernels are written as text, besides being compiled.
#[derive(Clone, Debug, Default)]
pub struct Dumps {
    /// A folder for each kernel's CLIF (`NAME.clif`).
    pub clif: Option<PathBuf>,
    /// A folder for each kernel's machine code as Cranelift prints it (`NAME.s`).
    pub asm: Option<PathBuf>,
}

static DUMPS: OnceLock<Dumps> = OnceLock::new();

/// Sets where kernels are dumped; only the first call counts (the CLI calls it once at start-up).
pub fn set_dumps(dumps: Dumps) {
    let _ = DUMPS.set(dumps);
}

/// The CPU features the generator uses, as detected (and as [`NO_VNNI_VAR`] leaves them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// AVX-VNNI or AVX512-VNNI (`vpdpbusd`).
    pub vnni: bool,
    /// Fused multiply-add.
    pub fma: bool,
}

struct Jit {
    module: JITModule,
    ctx: Context,
    builder: FunctionBuilderContext,
    cache: HashMap<String, usize>,
    features: Features,
    compiled: usize,
    compiling: std::time::Duration,
}

// The module is only reached through the mutex below, and the code it holds is immutable once
// finalised, so handing the JIT between threads is sound.
unsafe impl Send for Jit {}

static JIT: OnceLock<Result<Mutex<Jit>, String>> = OnceLock::new();

fn no_vnni() -> bool {
    std::env::var_os(NO_VNNI_VAR).is_some_and(|v| v != "0")
}

fn native_isa() -> Result<(OwnedTargetIsa, Features), String> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v)
            .map_err(|e| format!("cranelift setting {k}={v}: {e}"))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "enable_verifier", "true")?;
    set(&mut flags, "is_pic", "false")?;
    let mut isa_builder = cranelift_native::builder()
        .map_err(|e| format!("this CPU is not supported by the code generator: {e}"))?;
    // With AVX512DQ Cranelift multiplies u64 lanes with `vpmullq` (three micro-ops, long
    // latency) even where both factors are widened u32, which one `pmuludq` multiplies: the
    // requantization epilogue's products. Nothing else the kernels emit needs AVX512DQ.
    let _ = isa_builder.set("has_avx512dq", "false");
    if no_vnni() {
        for flag in ["has_avx_vnni", "has_avx512vnni"] {
            // Absent on targets without the flag; nothing to hide there.
            let _ = isa_builder.set(flag, "false");
        }
    }
    let isa = isa_builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| format!("the code generator cannot target this CPU: {e}"))?;
    let enabled = |name: &str| {
        isa.isa_flags()
            .iter()
            .any(|f| f.name == name && f.as_bool() == Some(true))
    };
    let features = Features {
        vnni: enabled("has_avx_vnni") || enabled("has_avx512vnni"),
        fma: enabled("has_fma"),
    };
    Ok((isa, features))
}

fn jit() -> Result<&'static Mutex<Jit>, String> {
    JIT.get_or_init(|| {
        let (isa, features) = native_isa()?;
        let module = JITModule::new(JITBuilder::with_isa(
            isa,
            cranelift_module::default_libcall_names(),
        ));
        Ok(Mutex::new(Jit {
            ctx: module.make_context(),
            module,
            builder: FunctionBuilderContext::new(),
            cache: HashMap::new(),
            features,
            compiled: 0,
            compiling: std::time::Duration::ZERO,
        }))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// How many kernels this process has compiled, and the time it took.
pub fn stats() -> (usize, std::time::Duration) {
    match jit() {
        Ok(j) => {
            let j = j.lock().unwrap_or_else(|e| e.into_inner());
            (j.compiled, j.compiling)
        }
        Err(_) => (0, std::time::Duration::ZERO),
    }
}

/// The features the generated code may use on this CPU.
pub fn features() -> Result<Features, String> {
    Ok(jit()?.lock().unwrap_or_else(|e| e.into_inner()).features)
}

/// The code of the kernel named `name` (a name that spells out its whole specialisation): from
/// the cache, or built by `build` (given the builder and the function's parameters, all `params`
/// typed) and compiled. A verifier or code-generation error names the kernel.
pub fn kernel(
    name: &str,
    params: &[Type],
    build: impl FnOnce(&mut FunctionBuilder, &[Value]),
) -> Result<*const u8, String> {
    let mut guard = jit()?.lock().unwrap_or_else(|e| e.into_inner());
    let jit = &mut *guard;
    if let Some(&code) = jit.cache.get(name) {
        return Ok(code as *const u8);
    }
    let started = std::time::Instant::now();
    let mut sig = jit.module.make_signature();
    sig.params.extend(params.iter().map(|t| AbiParam::new(*t)));
    jit.ctx.func.signature = sig.clone();
    let frontend = jit.module.target_config();
    {
        let mut b = FunctionBuilder::new(&mut jit.ctx.func, &mut jit.builder);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        b.seal_block(entry);
        let args = b.block_params(entry).to_vec();
        build(&mut b, &args);
        b.seal_all_blocks();
        b.finalize(frontend);
    }
    let dumps = DUMPS.get().cloned().unwrap_or_default();
    let fail = |what: &str, e: String| format!("kernel {name}: {what}: {e}");
    if let Some(dir) = &dumps.clif {
        std::fs::write(
            dir.join(format!("{name}.clif")),
            jit.ctx.func.display().to_string(),
        )
        .map_err(|e| {
            fail(
                &format!("writing its CLIF into {}", dir.display()),
                e.to_string(),
            )
        })?;
    }
    jit.ctx.set_disasm(dumps.asm.is_some());
    let id = jit
        .module
        .declare_function(name, Linkage::Local, &sig)
        .map_err(|e| fail("declaring it", e.to_string()))?;
    let defined = jit.module.define_function(id, &mut jit.ctx);
    if let Err(e) = defined {
        let message = match e {
            cranelift_module::ModuleError::Compilation(err) => {
                cranelift_codegen::print_errors::pretty_error(&jit.ctx.func, err)
            }
            other => other.to_string(),
        };
        jit.module.clear_context(&mut jit.ctx);
        return Err(fail("Cranelift rejected it", message));
    }
    if let (Some(dir), Some(code)) = (&dumps.asm, jit.ctx.compiled_code()) {
        let text = code.vcode.clone().unwrap_or_default();
        std::fs::write(dir.join(format!("{name}.s")), text).map_err(|e| {
            fail(
                &format!("writing its assembly into {}", dir.display()),
                e.to_string(),
            )
        })?;
    }
    jit.module.clear_context(&mut jit.ctx);
    jit.module
        .finalize_definitions()
        .map_err(|e| fail("finalising it", e.to_string()))?;
    let code = jit.module.get_finalized_function(id);
    jit.cache.insert(name.to_string(), code as usize);
    jit.compiled += 1;
    jit.compiling += started.elapsed();
    Ok(code)
}

/// The pointer type of the target.
pub fn pointer() -> Type {
    cranelift_codegen::ir::types::I64
}
