//! `qcc export MODEL -o model.onnx`: write a module as ONNX, its integer ops in the standard QDQ
//! form that ONNX Runtime, TensorRT and OpenVINO read.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use qcc_dialects::Module;

use crate::model::{Failure, load};
use crate::output::{check_output, write_atomic};
use crate::preprocess::{Preprocess, PreprocessArgs};

/// Options of `qcc export`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  Quantize with bias correction, then hand the result to ONNX Runtime:
    qcc --passes=quantize,bias-correct --calib photos/ model.onnx -o model.q.ir
    qcc export model.q.ir -o model.q.onnx
  The same in one command (the output's extension chooses the format):
    qcc --passes=quantize,bias-correct --calib photos/ model.onnx -o model.q.onnx
Integer ops become DequantizeLinear -> float op -> QuantizeLinear (opset 13), weights int8
initializers with per-channel scales, biases int32 at scale input x weight; float ops stay float.
The preprocessing goes into the model's metadata (qcc.preprocess), so qcc reads it back.")]
pub struct ExportArgs {
    /// The module to export (.ir, or .onnx imported on the fly).
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,

    /// Where to write the ONNX model.
    #[arg(short = 'o', long = "output", value_name = "OUT.onnx")]
    pub output: PathBuf,

    /// Preprocessing to record, when MODEL records none (or to override it).
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

/// Whether `path` names an ONNX file (its extension).
pub fn is_onnx_output(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Runs `qcc export`.
pub fn export(args: &ExportArgs, err: &mut dyn Write) -> Result<(), Failure> {
    if !is_onnx_output(&args.output) {
        return Err(Failure::msg(format!(
            "-o '{}': the output must be an .onnx file",
            args.output.display()
        )));
    }
    check_output(&args.output, "-o")?;
    let mut module = load(&args.model, &args.preprocess, err)?;
    if args.preprocess.any() {
        let pre = crate::model::preprocessing(&module, &args.preprocess)?;
        pre.record(&mut module);
    }
    write_onnx(&module, &args.output, err)?;
    let _ = writeln!(err, "wrote {}", args.output.display());
    Ok(())
}

/// Writes `module` to `path` as ONNX (staged under a temporary name, then renamed), warning on
/// `err` about anything ONNX could not hold exactly.
pub fn write_onnx(module: &Module, path: &Path, err: &mut dyn Write) -> Result<(), Failure> {
    let metadata = Preprocess::recorded(module)?
        .map(|p| p.metadata())
        .unwrap_or_default();
    let exported = crate::onnx::export(module, &metadata)
        .map_err(|e| format!("cannot export to ONNX: {e}"))?;
    for note in &exported.notes {
        let _ = writeln!(err, "warning: {note}");
    }
    write_atomic(path, &exported.bytes)?;
    Ok(())
}
