//! Which engine runs modules for the commands and the passes. One place, so that adding an engine
//! (and the `--engine` flag that chooses among several) touches only this module.

use std::sync::Arc;

use qcc_runtime::{Engine, Reference};

/// The engine every command runs modules on.
pub fn default_engine() -> Arc<dyn Engine> {
    Arc::new(Reference)
}
