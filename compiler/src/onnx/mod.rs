//! The ONNX front end: decodes a model (prost types generated from `proto/onnx.proto`) and
//! converts its graph into an `nn` module whose weights keep their ONNX names.

mod convert;
mod export;
mod tensor;

use std::path::Path;

use prost::Message;
use qcc_dialects::{Attr, Module, verify_module};

pub use convert::SUPPORTED;
pub use export::{Exported, export};
pub use tensor::ints as int_values;

/// The protobuf types of the ONNX format.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

/// Opset versions of the default domain the importer reads.
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// A decoded model: the module and what the ONNX file says about preprocessing.
pub struct Imported {
    /// The `nn` module (weights in its store, marked changed).
    pub module: Module,
    /// The model's metadata entries (key, value), `qcc.preprocess*` among them.
    pub metadata: Vec<(String, String)>,
    /// Quantized (QDQ) ops that stay float, as `name (op type): why`.
    pub kept_float: Vec<String>,
}

/// Decodes ONNX bytes into a module. `source` names the file in messages.
pub fn import_bytes(bytes: &[u8], source: &str) -> Result<Imported, String> {
    let model = proto::ModelProto::decode(bytes)
        .map_err(|e| format!("'{source}' is not a valid ONNX model: {e}"))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| format!("'{source}' holds no graph"))?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or_else(|| format!("'{source}' imports no opset of the default ONNX domain"))?;
    if !OPSETS.contains(&opset) {
        return Err(format!(
            "'{source}' uses opset {opset}; qcc reads opsets {} to {}",
            OPSETS.start(),
            OPSETS.end()
        ));
    }
    let mut module = Module {
        name: Some(if graph.name.is_empty() {
            "model".into()
        } else {
            convert::sanitize(&graph.name)
        }),
        ..Module::default()
    };
    let (func, kept_float) = convert::Converter::new(&mut module, opset)
        .graph(graph)
        .map_err(|e| format!("{source}: {e}"))?;
    module.functions.push(func);
    module.attrs.set("source", Attr::Str(source.to_string()));
    module.attrs.set("opset", Attr::Int(opset));
    if let Err(errors) = verify_module(&module) {
        let first = errors
            .into_iter()
            .next()
            .map(|d| d.message)
            .unwrap_or_default();
        return Err(format!(
            "{source}: the imported module does not verify: {first}"
        ));
    }
    let metadata = model
        .metadata_props
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    Ok(Imported {
        module,
        metadata,
        kept_float,
    })
}

/// Reads and decodes an ONNX file.
pub fn import_file(path: &Path) -> Result<Imported, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read '{}': {e}", path.display()))?;
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    import_bytes(&bytes, &name)
}
