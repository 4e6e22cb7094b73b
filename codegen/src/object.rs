//! A lowered function ([`crate::program`]) as a relocatable object file and its C header, or
//! loaded into a JIT module of its own to run in this process (what tests compare with the
//! reference interpreter, and what the C program must match).

use std::fmt::Write as _;

use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::Configurable;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::default_libcall_names;
use cranelift_object::{ObjectBuilder, ObjectModule};
use qcc_dialects::Module;

use crate::cpu::CpuCheck;
use crate::emit::{Dumps, Emitter};
use crate::program::{self, Edge, Lowered, SCRATCH_ALIGN, status};

/// The machine an object is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// This machine's CPU, with the features it has.
    Native,
    /// Any x86-64 CPU of the x86-64-v2 level (SSE4.2, SSSE3, POPCNT, CMPXCHG16B: every x86-64
    /// CPU since about 2009).
    X86_64,
    /// x86-64-v3 (v2 plus AVX, AVX2, FMA, BMI1, BMI2, LZCNT: Haswell and Zen on).
    X86_64V3,
    /// 64-bit Arm (ARMv8-A with its mandatory NEON), Linux ELF.
    Aarch64,
}

/// Cranelift's x86-64 flags of each portable level.
const X86_64_V2: &[&str] = &[
    "has_sse3",
    "has_ssse3",
    "has_cmpxchg16b",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
];
const X86_64_V3: &[&str] = &[
    "has_avx",
    "has_avx2",
    "has_fma",
    "has_bmi1",
    "has_bmi2",
    "has_lzcnt",
];

impl Target {
    /// The target `--target` names.
    pub fn parse(name: &str) -> Result<Target, String> {
        match name {
            "native" => Ok(Target::Native),
            "x86_64" => Ok(Target::X86_64),
            "x86_64-v3" => Ok(Target::X86_64V3),
            "aarch64" => Ok(Target::Aarch64),
            other => Err(format!(
                "unknown target '{other}'; the targets are native, x86_64, x86_64-v3 and aarch64"
            )),
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Target::Native => "native",
            Target::X86_64 => "x86_64",
            Target::X86_64V3 => "x86_64-v3",
            Target::Aarch64 => "aarch64",
        }
    }
}

/// What a target's code may use: its ISA (position-independent code for objects) and whether
/// it has VNNI, with the CPU features it was built for.
struct Isa {
    isa: OwnedTargetIsa,
    vnni: bool,
    features: Vec<String>,
}

fn isa(target: Target, pic: bool) -> Result<Isa, String> {
    let builder = match target {
        Target::Native => crate::jit::native_builder()?,
        Target::X86_64 | Target::X86_64V3 => {
            let mut builder = cranelift_codegen::isa::lookup_by_name("x86_64-unknown-linux-gnu")
                .map_err(|e| format!("this build of qcc cannot generate x86-64 code: {e}"))?;
            let mut flags: Vec<&str> = X86_64_V2.to_vec();
            if target == Target::X86_64V3 {
                flags.extend(X86_64_V3);
            }
            for flag in flags {
                builder
                    .set(flag, "true")
                    .map_err(|e| format!("cranelift setting {flag}: {e}"))?;
            }
            builder
        }
        Target::Aarch64 => cranelift_codegen::isa::lookup_by_name("aarch64-unknown-linux-gnu")
            .map_err(|e| format!("this build of qcc cannot generate AArch64 code: {e}"))?,
    };
    let isa = builder
        .finish(crate::jit::flags(pic)?)
        .map_err(|e| format!("the code generator cannot target this CPU: {e}"))?;
    let features: Vec<String> = isa
        .isa_flags()
        .iter()
        .filter(|f| f.name.starts_with("has_") && f.as_bool() == Some(true))
        .map(|f| f.name.trim_start_matches("has_").to_string())
        .collect();
    let vnni = features
        .iter()
        .any(|f| f == "avx_vnni" || f == "avx512vnni");
    Ok(Isa {
        isa,
        vnni,
        features,
    })
}

/// An object file built from a module's function.
pub struct Object {
    /// The object file's bytes (ELF on Linux).
    pub bytes: Vec<u8>,
    /// The lowered function: entry points, scratch size, edges.
    pub lowered: Lowered,
    /// The symbol prefix.
    pub name: String,
    /// The target it was built for.
    pub target: Target,
    /// The CPU features the code uses (Cranelift's names).
    pub features: Vec<String>,
    /// Functions compiled into it.
    pub functions: usize,
}

/// Whether `name` is a C identifier (so it can prefix C symbols and macros).
pub fn is_c_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An error unless `name` can prefix C identifiers.
pub fn check_name(name: &str) -> Result<(), String> {
    if is_c_identifier(name) {
        Ok(())
    } else {
        Err(format!(
            "--name '{name}' is not a C identifier (letters, digits and _, not starting with a digit)"
        ))
    }
}

/// Builds function `function` of `module` into an object whose symbols all start with `name`.
pub fn build(
    module: &Module,
    function: &str,
    name: &str,
    target: Target,
    dumps: Dumps,
) -> Result<Object, String> {
    check_name(name)?;
    let isa = isa(target, true)?;
    let builder = ObjectBuilder::new(isa.isa, name, default_libcall_names())
        .map_err(|e| format!("cannot start an object file: {e}"))?;
    let mut emitter = Emitter::new(ObjectModule::new(builder), &format!("{name}_"), dumps);
    // Every AArch64 CPU has the NEON the code uses: nothing to check there.
    let check = match target {
        Target::Aarch64 => None,
        _ => Some(CpuCheck::x86(&isa.features)?),
    };
    emitter.defer();
    let lowered = program::lower(&mut emitter, module, function, isa.vnni, check.as_ref())?;
    emitter.flush()?;
    let functions = emitter.compiled;
    let product = emitter.module.finish();
    let bytes = product
        .emit()
        .map_err(|e| format!("cannot write the object file: {e}"))?;
    Ok(Object {
        bytes,
        lowered,
        name: name.to_string(),
        target,
        features: isa.features,
        functions,
    })
}

fn dims(shape: &[usize]) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn edge_defines(out: &mut String, upper: &str, what: &str, e: &Edge) {
    let _ = writeln!(
        out,
        "/* The {} tensor: shape [{}]. */",
        what.to_lowercase(),
        dims(&e.shape)
    );
    let _ = writeln!(out, "#define {upper}_{what}_RANK {}", e.shape.len());
    for (i, d) in e.shape.iter().enumerate() {
        let _ = writeln!(out, "#define {upper}_{what}_DIM{i} {d}");
    }
    let _ = writeln!(out, "#define {upper}_{what}_ELEMENTS {}", e.elements());
    let _ = writeln!(
        out,
        "/* Stored value q stands for {}_SCALE * (q - {}_ZERO_POINT), stored as {}. */",
        format_args!("{upper}_{what}"),
        format_args!("{upper}_{what}"),
        if e.signed { "int8_t" } else { "uint8_t" }
    );
    let _ = writeln!(out, "#define {upper}_{what}_SCALE {:?}f", e.scale);
    let _ = writeln!(out, "#define {upper}_{what}_ZERO_POINT {}", e.zero_point);
    let _ = writeln!(
        out,
        "#define {upper}_{what}_SIGNED {}",
        if e.signed { 1 } else { 0 }
    );
}

/// How images become the model's input, as the module records it (for the header).
#[derive(Clone, Debug, PartialEq)]
pub struct Pixels {
    /// The shorter side is resized to this many pixels, then the centre `crop` square cut.
    pub resize: usize,
    /// Side of the centre square.
    pub crop: usize,
    /// Subtracted per channel from pixels scaled to [0, 1].
    pub mean: [f32; 3],
    /// Then divided per channel.
    pub std: [f32; 3],
    /// Channels fed as BGR instead of RGB.
    pub bgr: bool,
}

impl Object {
    /// The C header that declares the object's entry points and sizes; `pixels`, when the
    /// model takes images, says how to make its input from them.
    pub fn header(&self, source: &str, pixels: Option<&Pixels>) -> String {
        let n = &self.name;
        let upper = n.to_uppercase();
        let guard = format!("{upper}_H");
        let l = &self.lowered;
        let elem = |e: &Edge| if e.signed { "int8_t" } else { "uint8_t" };
        let mut h = String::new();
        let _ = writeln!(
            h,
            "/* {n}.h: generated by qcc build from {source}; do not edit. */"
        );
        let _ = writeln!(h, "#ifndef {guard}\n#define {guard}\n");
        let _ = writeln!(h, "#include <stdint.h>\n");
        let _ = writeln!(h, "#ifdef __cplusplus\nextern \"C\" {{\n#endif\n");
        edge_defines(&mut h, &upper, "INPUT", &l.input);
        h.push('\n');
        edge_defines(&mut h, &upper, "OUTPUT", &l.output);
        h.push('\n');
        if let Some(p) = pixels {
            let _ = writeln!(
                h,
                "/* Images: resize the shorter side to {} pixels (bilinear), cut the centre {}x{}, then\n   input[c][y][x] = (pixel / 255.0f - {upper}_MEAN{{c}}) / {upper}_STD{{c}} in {} channel order. */",
                p.resize,
                p.crop,
                p.crop,
                if p.bgr { "BGR" } else { "RGB" }
            );
            for c in 0..3 {
                let _ = writeln!(h, "#define {upper}_MEAN{c} {:?}f", p.mean[c]);
            }
            for c in 0..3 {
                let _ = writeln!(h, "#define {upper}_STD{c} {:?}f", p.std[c]);
            }
            let _ = writeln!(h, "#define {upper}_BGR {}\n", u8::from(p.bgr));
        }
        let _ = writeln!(
            h,
            "/* Bytes of scratch memory a run needs (the caller provides it; {} of them hold the\n   activations, the rest the kernels' temporary buffers), and its alignment. */",
            l.arena
        );
        let _ = writeln!(h, "#define {upper}_SCRATCH_BYTES {}", l.scratch);
        let _ = writeln!(h, "#define {upper}_SCRATCH_ALIGN {SCRATCH_ALIGN}\n");
        let features = if self.features.is_empty() {
            "none beyond the architecture's baseline".to_string()
        } else {
            self.features.join(" ")
        };
        let _ = writeln!(
            h,
            "/* Built for target {}; the code uses these CPU features: {features}. */",
            self.target.name(),
        );
        let _ = writeln!(h, "#define {upper}_TARGET \"{}\"\n", self.target.name());
        let _ = writeln!(h, "/* Return codes of the run functions. */");
        let _ = writeln!(h, "#define {upper}_OK {}", status::OK);
        let _ = writeln!(h, "#define {upper}_ERROR_NULL {}", status::NULL);
        let _ = writeln!(h, "#define {upper}_ERROR_MISALIGNED {}", status::MISALIGNED);
        let _ = writeln!(h, "#define {upper}_ERROR_CPU {}\n", status::CPU);
        let _ = writeln!(
            h,
            "/* Runs the model on {upper}_INPUT_ELEMENTS floats at `in` and writes\n   {upper}_OUTPUT_ELEMENTS floats to `out`: quantizes the input, runs the integer network,\n   dequantizes its output. `scratch` is {upper}_SCRATCH_BYTES bytes aligned to\n   {upper}_SCRATCH_ALIGN, used only during the call; its contents need no initialisation.\n   `in`, `out` and `scratch` must not overlap.\n   Allocates nothing and keeps no state: calls with separate scratch areas may run\n   concurrently. Returns {upper}_OK, or {upper}_ERROR_NULL / {upper}_ERROR_MISALIGNED /\n   {upper}_ERROR_CPU (a CPU without the features above), with nothing written. */"
        );
        let _ = writeln!(
            h,
            "int {n}_run(const float *in, float *out, void *scratch);\n"
        );
        let _ = writeln!(
            h,
            "/* As {n}_run, on stored values: {upper}_INPUT_ELEMENTS {} at `in` (the quantized\n   input), {upper}_OUTPUT_ELEMENTS {} to `out` (the output before dequantization). */",
            elem(&l.input),
            elem(&l.output)
        );
        let _ = writeln!(
            h,
            "int {n}_run_u8(const {} *in, {} *out, void *scratch);\n",
            elem(&l.input),
            elem(&l.output)
        );
        let _ = writeln!(h, "#ifdef __cplusplus\n}}\n#endif\n\n#endif /* {guard} */");
        h
    }
}

type RunFn = unsafe extern "C" fn(*const f32, *mut f32, *mut u8) -> i32;
type RunU8Fn = unsafe extern "C" fn(*const u8, *mut u8, *mut u8) -> i32;

/// A lowered function loaded into this process, to run as the object would.
pub struct Loaded {
    /// The code's module; its memory is freed with this.
    module: Option<JITModule>,
    run: RunFn,
    run_u8: RunU8Fn,
    /// The lowered function.
    pub lowered: Lowered,
}

// The module's code is immutable once finalised and only called through the pointers above.
unsafe impl Send for Loaded {}
unsafe impl Sync for Loaded {}

/// A scratch area of `bytes`, aligned as the entry points require.
pub struct Scratch {
    words: Vec<u128>,
    offset: usize,
}

impl Scratch {
    /// A scratch area full of garbage, as a caller's may be: nothing may depend on its contents.
    fn new(bytes: usize) -> Scratch {
        let words =
            vec![0xa5a5_a5a5_a5a5_a5a5_a5a5_a5a5_a5a5_a5a5u128; (bytes + SCRATCH_ALIGN) / 16 + 1];
        let addr = words.as_ptr() as usize;
        let offset = addr.next_multiple_of(SCRATCH_ALIGN) - addr;
        Scratch { words, offset }
    }

    /// Usable bytes.
    fn len(&self) -> usize {
        self.words.len() * 16 - self.offset
    }

    fn ptr(&mut self) -> *mut u8 {
        // SAFETY: `offset` is below SCRATCH_ALIGN, within the buffer.
        unsafe { (self.words.as_mut_ptr() as *mut u8).add(self.offset) }
    }
}

/// Lowers function `function` of `module` into a JIT module of its own.
pub fn load(module: &Module, function: &str) -> Result<Loaded, String> {
    load_checking(module, function, None)
}

/// [`load`], the entry points checking that the CPU has `features` (Cranelift's x86-64 flag
/// names) instead of those the code uses.
pub fn load_checking(
    module: &Module,
    function: &str,
    features: Option<&[String]>,
) -> Result<Loaded, String> {
    let isa = isa(Target::Native, false)?;
    let vnni = isa.vnni;
    let check = CpuCheck::x86(features.unwrap_or(&isa.features))?;
    let jit = JITModule::new(JITBuilder::with_isa(isa.isa, default_libcall_names()));
    let mut emitter = Emitter::new(jit, "model_", Dumps::default());
    emitter.defer();
    let lowered = program::lower(&mut emitter, module, function, vnni, Some(&check))
        .and_then(|lowered| emitter.flush().map(|()| lowered))
        .and_then(|lowered| {
            emitter
                .module
                .finalize_definitions()
                .map_err(|e| format!("finalising generated code: {e}"))?;
            Ok(lowered)
        });
    let jit = emitter.into_module();
    let lowered = match lowered {
        Ok(lowered) => lowered,
        Err(e) => {
            // SAFETY: nothing of the module was called or handed out.
            unsafe { jit.free_memory() };
            return Err(e);
        }
    };
    let run = jit.get_finalized_function(lowered.run);
    let run_u8 = jit.get_finalized_function(lowered.run_u8);
    Ok(Loaded {
        // SAFETY: both entry points were generated with these signatures, in the C ABI.
        run: unsafe { std::mem::transmute::<*const u8, RunFn>(run) },
        run_u8: unsafe { std::mem::transmute::<*const u8, RunU8Fn>(run_u8) },
        module: Some(jit),
        lowered,
    })
}

impl Drop for Loaded {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the code is only reached through `self`, which no call is using now
            // (`&mut self`), and its pointers die with it.
            unsafe { module.free_memory() };
        }
    }
}

impl Loaded {
    /// The model on `input` (its input's elements): the output's elements, dequantized.
    pub fn run(&self, input: &[f32]) -> Result<Vec<f32>, String> {
        let mut out = vec![0f32; self.lowered.output.elements()];
        self.run_into(input, &mut out, &mut self.scratch())?;
        Ok(out)
    }

    /// A scratch area for runs of this function (one per thread that runs it).
    pub fn scratch(&self) -> Scratch {
        Scratch::new(self.lowered.scratch)
    }

    /// [`Loaded::run`] into `out` (the output's elements), working in `scratch`.
    pub fn run_into(
        &self,
        input: &[f32],
        out: &mut [f32],
        scratch: &mut Scratch,
    ) -> Result<(), String> {
        self.check(input.len())?;
        if out.len() != self.lowered.output.elements() || scratch.len() < self.lowered.scratch {
            return Err("internal error: an output or scratch area of the wrong size".into());
        }
        // SAFETY: the buffers have the sizes the function was lowered for.
        let code = unsafe { (self.run)(input.as_ptr(), out.as_mut_ptr(), scratch.ptr()) };
        Self::status(code)
    }

    /// The model on stored input values: the output's stored values.
    pub fn run_u8(&self, input: &[u8]) -> Result<Vec<u8>, String> {
        self.check(input.len())?;
        let mut out = vec![0u8; self.lowered.output.elements()];
        let mut scratch = Scratch::new(self.lowered.scratch);
        // SAFETY: the buffers have the sizes the function was lowered for.
        let code = unsafe { (self.run_u8)(input.as_ptr(), out.as_mut_ptr(), scratch.ptr()) };
        Self::status(code)?;
        Ok(out)
    }

    fn check(&self, len: usize) -> Result<(), String> {
        let want = self.lowered.input.elements();
        if len == want {
            Ok(())
        } else {
            Err(format!(
                "the input has {len} elements, the function takes {want}"
            ))
        }
    }

    fn status(code: i32) -> Result<(), String> {
        match code {
            status::OK => Ok(()),
            status::CPU => Err("this CPU lacks a feature the generated code uses".into()),
            _ => Err(format!("the generated function returned {code}")),
        }
    }
}
