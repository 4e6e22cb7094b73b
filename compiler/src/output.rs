//! Writing results: every file a command writes appears whole or not at all, and a module and
//! its weights appear together or not at all. Output paths are checked before any work starts.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use qcc_dialects::{Attr, Module, Node, OpKind, Tensor};

/// The folder a file path lives in (`.` for a bare file name).
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A name beside `target` that no other write of this process uses.
fn temporary_beside(target: &Path, purpose: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    folder_of(target).join(format!(
        ".{name}.{purpose}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Checks, before any work, that a file can be written at `path`, the path the user gave with
/// `flag`: it names a file (not a folder), its folder exists, and a file can be created there.
pub fn check_output(path: &Path, flag: &str) -> Result<(), String> {
    let shown = path.display();
    if path.file_name().is_none() || path.as_os_str().to_string_lossy().ends_with('/') {
        return Err(format!("{flag} '{shown}' is not a file path"));
    }
    if path.is_dir() {
        return Err(format!("{flag} '{shown}' is a folder; give a file path"));
    }
    let folder = folder_of(path);
    if !folder.is_dir() {
        return Err(format!(
            "{flag} '{shown}': the folder '{}' does not exist",
            folder.display()
        ));
    }
    let probe = temporary_beside(path, "probe");
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "{flag} '{shown}': cannot create files in '{}': {e}",
            folder.display()
        )),
    }
}

/// [`check_output`] for a module: also the `.safetensors` file that may be written beside it.
pub fn check_module_output(path: &Path, flag: &str) -> Result<(), String> {
    check_output(path, flag)?;
    let weights = path.with_extension("safetensors");
    if weights == path {
        return Err(format!(
            "{flag} '{}' would be overwritten by the module's weights; use a name ending in .ir",
            path.display()
        ));
    }
    if weights.is_dir() {
        return Err(format!(
            "{flag} '{}': its weights would go to '{}', which is a folder",
            path.display(),
            weights.display()
        ));
    }
    Ok(())
}

/// A file written whole under a temporary name beside its target, not yet renamed into place.
/// Dropping it removes the temporary file.
struct Staged {
    tmp: PathBuf,
    target: PathBuf,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}

fn stage(target: &Path, bytes: &[u8]) -> Result<Staged, String> {
    if target.file_name().is_none() {
        return Err(format!("'{}' is not a file path", target.display()));
    }
    let staged = Staged {
        tmp: temporary_beside(target, "tmp"),
        target: target.to_path_buf(),
    };
    std::fs::File::create(&staged.tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .map_err(|e| format!("cannot write '{}': {e}", target.display()))?;
    Ok(staged)
}

/// A target renamed into place, and where its previous contents are kept until all succeed.
struct Committed {
    target: PathBuf,
    previous: Option<PathBuf>,
}

impl Committed {
    /// Puts the target back as it was before the commit.
    fn roll_back(self) {
        match self.previous {
            Some(previous) => {
                let _ = std::fs::rename(previous, &self.target);
            }
            None => {
                let _ = std::fs::remove_file(&self.target);
            }
        }
    }
}

/// Keeps `target`'s current contents under a temporary name (a hard link, or a copy where links
/// are not possible), so that a failed commit can restore it.
fn keep_previous(target: &Path) -> Result<Option<PathBuf>, String> {
    if !target.is_file() {
        return Ok(None);
    }
    let keep = temporary_beside(target, "previous");
    std::fs::hard_link(target, &keep)
        .or_else(|_| std::fs::copy(target, &keep).map(|_| ()))
        .map_err(|e| format!("cannot write '{}': {e}", target.display()))?;
    Ok(Some(keep))
}

/// Renames staged files into place in order. If any rename fails, the files renamed before it are
/// restored (or removed, when they did not exist), so either all appear or none changes.
fn commit(files: Vec<Staged>) -> Result<(), String> {
    let mut done: Vec<Committed> = Vec::new();
    let mut failure = None;
    for file in &files {
        let previous = match keep_previous(&file.target) {
            Ok(p) => p,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        if let Err(e) = std::fs::rename(&file.tmp, &file.target) {
            if let Some(p) = previous {
                let _ = std::fs::remove_file(p);
            }
            failure = Some(format!("cannot write '{}': {e}", file.target.display()));
            break;
        }
        done.push(Committed {
            target: file.target.clone(),
            previous,
        });
    }
    match failure {
        Some(e) => {
            for c in done.into_iter().rev() {
                c.roll_back();
            }
            Err(e)
        }
        None => {
            for c in done {
                if let Some(p) = c.previous {
                    let _ = std::fs::remove_file(p);
                }
            }
            Ok(())
        }
    }
}

/// Writes every `(path, bytes)` through temporary files and renames: all appear, or none
/// changes.
pub fn write_all_atomic(files: &[(&Path, &[u8])]) -> Result<(), String> {
    let staged = files
        .iter()
        .map(|(path, bytes)| stage(path, bytes))
        .collect::<Result<Vec<_>, _>>()?;
    commit(staged)
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    commit(vec![stage(path, bytes)?])
}

/// The tensors the module's `nn.const` ops name, which is what a weights file must hold.
fn referenced_weights(module: &Module) -> BTreeMap<&String, &Tensor> {
    let mut out = BTreeMap::new();
    for f in &module.functions {
        for n in f.graph.node_indices() {
            if let Node::Op(op) = &f.graph[n] {
                if !op.is(OpKind::Const) {
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
/// the module's `weights` attribute at the right file from `out`'s directory. Both files appear,
/// or neither changes.
pub fn write_module(module: &mut Module, out: &Path) -> Result<Vec<PathBuf>, String> {
    let mut staged = Vec::new();
    let out_dir = absolute(
        out.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    );
    let weights = referenced_weights(module);
    if module.weights.modified && !weights.is_empty() {
        let wpath = out.with_extension("safetensors");
        let bytes = qcc_dialects::weights::to_bytes(weights)?;
        staged.push(stage(&wpath, &bytes)?);
        let file_name = wpath
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        module.attrs.set("weights", Attr::Str(file_name));
        module.weights.source = Some(wpath.clone());
        module.weights.modified = false;
        module.weights.changed.clear();
    } else if let Some(source) = &module.weights.source {
        let source = absolute(source);
        let reference = match source.strip_prefix(&out_dir) {
            Ok(rel) => rel.display().to_string(),
            Err(_) => source.display().to_string(),
        };
        module.attrs.set("weights", Attr::Str(reference));
    }
    staged.push(stage(out, qcc_dialects::print_module(module).as_bytes())?);
    let written = staged.iter().map(|s| s.target.clone()).collect();
    // The weights first and the module last: a module never names weights that are not there.
    commit(staged)?;
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
            if !op.is(OpKind::Const) {
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
