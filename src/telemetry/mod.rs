//! What the bridge tells its operators: metrics, health endpoints, logs.

pub mod health;
pub mod logging;
pub mod metrics;
