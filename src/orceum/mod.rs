//! Everything about Orceum's side of the wire: the event body, its signature, the client that
//! pushes it, and a local Orceum-compatible receiver for tests and trials.

pub mod app;
pub mod client;
pub mod event;
pub mod sign;
