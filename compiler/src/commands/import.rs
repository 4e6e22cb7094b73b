//! `qcc import MODEL.onnx -o OUT.ir`: convert an ONNX model to a module and its weights.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::model::{Failure, is_onnx, load};
use crate::output::{check_module_output, write_module};
use crate::preprocess::PreprocessArgs;

/// Options of `qcc import`.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  Import, recording TensorFlow-style preprocessing (x/127.5 - 1):
    qcc import mobilenet_v2.onnx -o mobilenet_v2.ir --preprocess tf
  Import a torchvision model (ImageNet mean and std, resize 256, crop 224):
    qcc import resnet18.onnx -o resnet18.ir --preprocess torch
  Explicit preprocessing:
    qcc import model.onnx -o model.ir --resize 160 --crop 128 --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5
The module's weights go to OUT.safetensors beside OUT.ir; both appear together or not at all.")]
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
    check_module_output(&args.output, "-o")?;
    let mut module = load(&args.model, &args.preprocess, err)?;
    for path in write_module(&mut module, &args.output)? {
        let _ = writeln!(err, "wrote {}", path.display());
    }
    Ok(())
}
