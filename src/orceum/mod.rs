//! Everything about Orceum's side of the wire: the event body, its signature, the client that
//! pushes it, what Orceum answers (and the scrubbing of secrets out of it).

pub mod answer;
pub mod app;
pub mod client;
pub mod event;
pub mod proxy;
pub mod scrub;
pub mod sign;
