//! Writing results: files appear whole or not at all (temp file, then rename).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use qcc_dialects::{Attr, Module, Node, Tensor};

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| format!("'{}' is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write '{}': {e}", path.display())
    })
}

/// The tensors the module's `nn.const` ops name, which is what a weights file must hold.
fn referenced_weights(module: &Module) -> BTreeMap<&String, &Tensor> {
    let mut out = BTreeMap::new();
    for f in &module.functions {
        for n in f.graph.node_indices() {
            if let Node::Op(op) = &f.graph[n] {
                if op.name != "nn.const" {
                    continue;
                }
                if let Some(name) = op.attr("name").and_then(Attr::as_str)
                    && let Some((k, t)) = module.weights.tensors.get_key_value(name)
                {
                    out.insert(k, t);
                }
            }
        }
    }
    out
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    })
}

/// Writes the module to `out` (and its weights next to it when passes changed them), pointing
/// the module's `weights` attribute at the right file from `out`'s directory.
pub fn write_module(module: &mut Module, out: &Path) -> Result<Vec<PathBuf>, String> {
    let mut written = Vec::new();
    let out_dir = absolute(
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    );
    let weights = referenced_weights(module);
    if module.weights.modified && !weights.is_empty() {
        let wpath = out.with_extension("safetensors");
        let bytes = qcc_dialects::weights::to_bytes(weights)?;
        write_atomic(&wpath, &bytes)?;
        let file_name = wpath
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        module.attrs.set("weights", Attr::Str(file_name));
        module.weights.source = Some(wpath.clone());
        module.weights.modified = false;
        module.weights.changed.clear();
        written.push(wpath);
    } else if let Some(source) = &module.weights.source {
        let source = absolute(source);
        let reference = match source.strip_prefix(&out_dir) {
            Ok(rel) => rel.display().to_string(),
            Err(_) => source.display().to_string(),
        };
        module.attrs.set("weights", Attr::Str(reference));
    }
    write_atomic(out, qcc_dialects::print_module(module).as_bytes())?;
    written.push(out.to_path_buf());
    Ok(written)
}

/// Replaces every `nn.const` naming a tensor that passes created or changed (so it is not in any
/// file yet) by the tensor inline; returns how many elements were inlined.
pub fn inline_changed_weights(module: &mut Module) -> usize {
    let mut inlined = 0;
    let changed = std::mem::take(&mut module.weights.changed);
    for f in &mut module.functions {
        for n in f.op_nodes() {
            let op = f.op(n);
            if op.name != "nn.const" {
                continue;
            }
            let Some(name) = op.attr("name").and_then(Attr::as_str) else {
                continue;
            };
            if !changed.contains(name) {
                continue;
            }
            let Some(t) = module.weights.tensors.get(name) else {
                continue;
            };
            let dense = qcc_dialects::DenseAttr {
                ty: op.results[0].clone(),
                data: t.data.clone(),
            };
            inlined += t.numel();
            let op = f.op_mut(n);
            op.attrs.remove("name");
            op.attrs.set("value", Attr::Dense(dense));
        }
    }
    module.weights.modified = false;
    inlined
}
