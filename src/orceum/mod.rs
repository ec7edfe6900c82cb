//! Everything about Orceum's side of the wire: the event body, its signature, the client that
//! pushes it, and the scrubbing of secrets out of what Orceum answers.

pub mod app;
pub mod client;
pub mod event;
pub mod scrub;
pub mod sign;
