//! What the bridge tells its operators: metrics, health endpoints, logs.

pub mod events;
pub mod health;
pub mod logging;
pub mod metrics;
