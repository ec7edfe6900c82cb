//! The commands around the engine: they drive the same library code `run` does.
//!
//! - [`render`] — what one sample message would become (`orceum-bridge render`).
//! - [`replay`] — dead letters re-run through the current config after a fix.
//! - [`probe`] — `check --connect`: the topics, streams and consumers the config names exist.
//! - [`demo`] — the zero-dependency quickstart (mock Kafka cluster + sandbox).
//! - [`sandbox`] — a local Orceum-compatible receiver that checks every request.

pub mod demo;
pub mod probe;
pub mod render;
pub mod replay;
pub mod sandbox;
