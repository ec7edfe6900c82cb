//! The YAML contract of `orceum-bridge` (see PRODUCT.md, "Configuration").
//!
//! Loading goes in three steps, each in its own file:
//! 1. [`interpolate`] replaces `${VAR}` with the environment, collecting every missing variable;
//! 2. [`model`] deserialises the text into plain structs (`deny_unknown_fields` everywhere), so a
//!    typo is an error with its path and line instead of a silently ignored key;
//! 3. [`validate`] checks what serde cannot (references between sections, secrets, templates)
//!    and produces a [`validate::Bridge`]: the runtime form the engine is built from.
//!
//! Every step reports *all* the errors it finds, each with its path, so `check` can list them at
//! once.

pub mod duration;
pub mod interpolate;
pub mod model;
pub mod secret;
pub mod validate;

pub use model::*;
pub use validate::{load_file, Bridge, ConfigErrors};

use std::fmt;

/// One thing wrong with a configuration: where (`routes[1].event.priority`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}
