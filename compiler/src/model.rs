//! Loading the model a command names: a `.ir` module or an `.onnx` file imported on the fly, and
//! the preprocessing that turns images into its input.

use std::io::Write;
use std::path::Path;

use qcc_dialects::{Diagnostic, Module, SourceFile, TensorType, Value};

use crate::preprocess::{Preprocess, PreprocessArgs};

/// A failure to report: diagnostics, with the source they point into when there is one.
pub struct Failure {
    /// The file the diagnostics point into.
    pub file: Option<SourceFile>,
    /// What went wrong.
    pub diagnostics: Vec<Diagnostic>,
}

impl Failure {
    /// A failure with one unlocated message.
    pub fn msg(message: impl Into<String>) -> Failure {
        Failure {
            file: None,
            diagnostics: vec![Diagnostic::new(message)],
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::msg(message)
    }
}

/// Whether a path names an ONNX model.
pub fn is_onnx(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// The type of `@main`'s first argument.
pub fn input_type(module: &Module) -> Result<TensorType, String> {
    let main = module
        .function("main")
        .ok_or("the module has no function @main")?;
    let arg = main.args.first().ok_or("@main takes no input")?;
    Ok(main.value_type(Value::of(*arg)).clone())
}

/// The default crop: the input's height when it takes square NCHW images.
fn default_crop(module: &Module) -> usize {
    input_type(module)
        .ok()
        .filter(|t| t.rank() == 4)
        .map_or(224, |t| t.shape[2])
}

/// Loads a `.ir` module or imports an `.onnx` file. An imported module records its preprocessing:
/// the flags, else the model's `qcc.preprocess` metadata, else none (with a warning).
pub fn load(path: &Path, pre: &PreprocessArgs, err: &mut dyn Write) -> Result<Module, Failure> {
    load_or(path, pre, None, err)
}

/// [`load`], an imported module with neither flags nor metadata getting `fallback` (the
/// preprocessing of the float model it was quantized from, say) instead of none.
pub fn load_or(
    path: &Path,
    pre: &PreprocessArgs,
    fallback: Option<Preprocess>,
    err: &mut dyn Write,
) -> Result<Module, Failure> {
    if !is_onnx(path) {
        return qcc_dialects::parse_file(path)
            .map_err(|(file, diagnostics)| Failure { file, diagnostics });
    }
    let imported = crate::onnx::import_file(path)?;
    if !imported.kept_float.is_empty() {
        let _ = writeln!(
            err,
            "warning: {}: {} quantized (QDQ) ops stay float, between quant.dequantize and quant.quantize:",
            path.display(),
            imported.kept_float.len()
        );
        for why in &imported.kept_float {
            let _ = writeln!(err, "  {why}");
        }
    }
    let mut module = imported.module;
    let takes_images = input_type(&module).is_ok_and(|t| t.rank() == 4 && t.shape[1] == 3);
    if !takes_images {
        if pre.any() {
            let _ = writeln!(
                err,
                "warning: {} does not take images; the preprocessing flags are ignored",
                path.display()
            );
        }
        return Ok(module);
    }
    let crop = pre.crop.unwrap_or_else(|| default_crop(&module));
    let recorded = Preprocess::from_metadata(&imported.metadata, crop)
        .map_err(|e| format!("{}: qcc.preprocess metadata: {e}", path.display()))?;
    let base = match (recorded.or(fallback), pre.preprocess.is_some()) {
        (Some(p), false) => p,
        _ => {
            if !pre.any() {
                let _ = writeln!(
                    err,
                    "warning: {} records no preprocessing; images are scaled to [0, 1]. Choose with --preprocess tf|torch|none or --mean/--std",
                    path.display()
                );
            }
            Preprocess::preset("none", crop)?
        }
    };
    pre.apply(base)?.record(&mut module);
    Ok(module)
}

/// Loads the float reference a model under test is scored against, and the preprocessing both
/// get: the flags, else what the model under test records (what it was calibrated with), else
/// what the reference records. The reference's own note about missing preprocessing is shown
/// only when its preprocessing is the one used.
pub fn load_reference(
    model: &Module,
    path: &Path,
    pre: &PreprocessArgs,
    err: &mut dyn Write,
) -> Result<(Module, Preprocess), Failure> {
    let from_model = match Preprocess::recorded(model)? {
        Some(p) if !pre.any() => Some(p),
        _ => None,
    };
    let reference = match &from_model {
        Some(_) => load(path, pre, &mut std::io::sink())?,
        None => load(path, pre, err)?,
    };
    let chosen = match from_model {
        Some(p) => p,
        None => preprocessing(&reference, pre)?,
    };
    Ok((reference, chosen))
}

/// The preprocessing for feeding images to `module`: what it records, with the flags on top.
pub fn preprocessing(module: &Module, pre: &PreprocessArgs) -> Result<Preprocess, String> {
    let base = match Preprocess::recorded(module)? {
        Some(p) => p,
        None => Preprocess::preset("none", default_crop(module))?,
    };
    pre.apply(base)
}
