//! The YAML contract of `orceum-bridge` (see PRODUCT.md, "Configuration").
//!
//! Loading goes in three steps, each in its own file:
//! 1. [`parse`] reads the YAML into a document (syntax errors and duplicate keys with their
//!    line), and [`interpolate`] replaces `${VAR}` in its string scalars, collecting every
//!    missing variable (a value is data: it can never add keys or change the document's shape);
//! 2. [`model`] deserialises the document into plain structs (`deny_unknown_fields`
//!    everywhere), so a typo is an error with its path instead of a silently ignored key;
//! 3. `crate::build` (outside this module) checks what serde cannot (references between
//!    sections, secrets, templates) and builds the runtime `Bridge`.
//!
//! This module imports nothing else of the crate: it is the contract, not the engine.
//!
//! Every step reports *all* the errors it finds, each with its path, so `check` can list them at
//! once.

pub mod duration;
pub mod errors;
pub mod interpolate;
pub mod model;
pub mod parse;
pub mod secret;

pub use errors::{ConfigError, ConfigErrors};
pub use model::*;
pub use parse::parse;
