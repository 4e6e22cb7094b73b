//! `qcc import MODEL.onnx -o OUT.ir`: convert an ONNX model to a module and its weights.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::model::{Failure, is_onnx, load};
use crate::output::write_module;
use crate::preprocess::PreprocessArgs;

/// Options of `qcc import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The ONNX model.
    #[arg(value_name = "MODEL.onnx")]
    pub model: PathBuf,

    /// Where to write the module; its weights go beside it as OUT.safetensors.
    #[arg(short = 'o', long = "output", value_name = "OUT.ir")]
    pub output: PathBuf,

    /// How images become the model's input, recorded in the module.
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

/// Runs `qcc import`.
pub fn import(args: &ImportArgs, err: &mut dyn Write) -> Result<(), Failure> {
    if !is_onnx(&args.model) {
        return Err(Failure::msg(format!(
            "'{}' is not an .onnx file",
            args.model.display()
        )));
    }
    let mut module = load(&args.model, &args.preprocess, err)?;
    for path in write_module(&mut module, &args.output)? {
        let _ = writeln!(err, "wrote {}", path.display());
    }
    Ok(())
}
