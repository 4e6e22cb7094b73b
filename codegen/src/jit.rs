//! The process-wide JIT: the native ISA (with the CPU features detected at run time), one
//! `cranelift_jit` module that holds every generated kernel for the life of the process, and a
//! cache keyed by each kernel's specialisation, so preparing the same layer twice (bias correction
//! prepares a module once per batch) compiles nothing.

use std::sync::{Mutex, OnceLock};

use cranelift_codegen::ir::{Type, Value};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::FunctionBuilder;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::FuncId;

pub use crate::emit::Dumps;
use crate::emit::{Emitter, Shape, Sink};

/// The environment variable that, when set (to anything but `0`), hides AVX-VNNI and
/// AVX512-VNNI from the code generator, so the exact `pmaddwd` kernels run on every CPU.
pub const NO_VNNI_VAR: &str = "QCC_NO_VNNI";

static DUMPS: OnceLock<Dumps> = OnceLock::new();

/// Sets where kernels are dumped; only the first call counts (the CLI calls it once at start-up).
pub fn set_dumps(dumps: Dumps) {
    let _ = DUMPS.set(dumps);
}

/// Where kernels are dumped (as [`set_dumps`] set it).
pub fn dumps() -> Dumps {
    DUMPS.get().cloned().unwrap_or_default()
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
    emitter: Emitter<JITModule>,
    features: Features,
}

// The module is only reached through the mutex below, and the code it holds is immutable once
// finalised, so handing the JIT between threads is sound.
unsafe impl Send for Jit {}

static JIT: OnceLock<Result<Mutex<Jit>, String>> = OnceLock::new();

fn no_vnni() -> bool {
    std::env::var_os(NO_VNNI_VAR).is_some_and(|v| v != "0")
}

/// Cranelift's shared settings for generated code: optimised for speed, verified,
/// position-independent or not.
pub(crate) fn flags(pic: bool) -> Result<settings::Flags, String> {
    let mut flags = settings::builder();
    for (k, v) in [
        ("opt_level", "speed"),
        ("enable_verifier", "true"),
        ("is_pic", if pic { "true" } else { "false" }),
    ] {
        flags
            .set(k, v)
            .map_err(|e| format!("cranelift setting {k}={v}: {e}"))?;
    }
    Ok(settings::Flags::new(flags))
}

/// The ISA builder of this CPU, with the features the kernels should use.
pub(crate) fn native_builder() -> Result<cranelift_codegen::isa::Builder, String> {
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
    Ok(isa_builder)
}

fn native_isa() -> Result<(OwnedTargetIsa, Features), String> {
    let isa = native_builder()?
        .finish(flags(false)?)
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
            emitter: Emitter::new(module, "", Dumps::default()),
            features,
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
            (j.emitter.compiled, j.emitter.compiling)
        }
        Err(_) => (0, std::time::Duration::ZERO),
    }
}

/// The features the generated code may use on this CPU.
pub fn features() -> Result<Features, String> {
    Ok(jit()?.lock().unwrap_or_else(|e| e.into_inner()).features)
}

/// The code of the function `define` defines in the process's JIT (from the cache when it
/// was defined before under the same name), ready to call.
pub fn compile(
    define: impl FnOnce(&mut dyn Sink) -> Result<FuncId, String>,
) -> Result<*const u8, String> {
    let mut guard = jit()?.lock().unwrap_or_else(|e| e.into_inner());
    let emitter = &mut guard.emitter;
    if let Some(dumps) = DUMPS.get() {
        emitter.dumps = dumps.clone();
    }
    let id = define(emitter)?;
    emitter
        .module
        .finalize_definitions()
        .map_err(|e| format!("finalising generated code: {e}"))?;
    Ok(emitter.module.get_finalized_function(id))
}

/// The code of the kernel named `name` (a name that spells out its whole specialisation): from
/// the cache, or built by `build` (given the builder and the function's parameters, all `params`
/// typed) and compiled. A verifier or code-generation error names the kernel.
pub fn kernel(
    name: &str,
    params: &[Type],
    build: impl FnOnce(&mut FunctionBuilder, &[Value]),
) -> Result<*const u8, String> {
    let mut build = Some(build);
    compile(|sink| {
        sink.function(name, &Shape::kernel(params), &mut |b, args, _| {
            if let Some(build) = build.take() {
                build(b, args);
            }
            Ok(())
        })
    })
}

/// The pointer type of the target.
pub fn pointer() -> Type {
    cranelift_codegen::ir::types::I64
}
