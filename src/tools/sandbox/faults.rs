//! The faults a sandbox can inject (latency, random 500/503/429, rejected installations and
//! event types), applied only after a request passed every check, so a broken request is
//! never hidden by a fault.

use super::{reject, Rejection, Sandbox};
use crate::sync::read;
use axum::http::StatusCode;
use serde_json::Value;
use std::collections::HashSet;
use std::time::Duration;

/// The three rates are probabilities in `0.0..=1.0` and are disjoint: one draw per request picks
/// 500 with `rate_500`, else 503 with `rate_503`, else 429 with `rate_429`.
#[derive(Clone, Default, Debug)]
pub struct Faults {
    /// Share of requests answered `500 Internal Server Error`.
    pub rate_500: f64,
    /// Share of requests answered `503 Service Unavailable`.
    pub rate_503: f64,
    /// Share of requests answered `429 Too Many Requests`.
    pub rate_429: f64,
    /// `Retry-After` seconds sent with a 429 (default 1).
    pub retry_after_secs: Option<u64>,
    /// Delay before answering each verified request.
    pub latency: Duration,
    /// Installation ids answered 404 ("not found or not active").
    pub reject_installations: HashSet<String>,
    /// Event types answered 422.
    pub reject_event_types: HashSet<String>,
    /// App ids whose every request is answered 429 with `Retry-After` (an app over its
    /// Orceum quota while the others are fine).
    pub throttle_apps: HashSet<String>,
    /// App ids whose every request is answered `503 Service Unavailable` (Orceum down for
    /// one app while the others are fine).
    pub down_apps: HashSet<String>,
}

impl Sandbox {
    /// Faults for a verified request, in the order: latency, random 5xx/429, rejected
    /// installation, rejected event type.
    pub(super) async fn inject_faults(&self, app_id: &str, event: &Value) -> Result<(), Rejection> {
        let faults = read(&self.faults).clone();
        if !faults.latency.is_zero() {
            // Shutdown must not wait out an injected delay.
            tokio::select! {
                () = tokio::time::sleep(faults.latency) => {}
                () = self.shutdown.cancelled() => {
                    return Err(reject(StatusCode::SERVICE_UNAVAILABLE, "sandbox is shutting down"));
                }
            }
        }
        if faults.down_apps.contains(app_id) {
            return Err(reject(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("injected fault: app {app_id} is down (down_apps)"),
            ));
        }
        if faults.throttle_apps.contains(app_id) {
            let secs = faults.retry_after_secs.unwrap_or(1);
            return Err(Rejection {
                retry_after: Some(secs),
                ..reject(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("injected fault: app {app_id} over its rate limit, retry after {secs}s (throttle_apps)"),
                )
            });
        }
        let draw: f64 = rand::random();
        let mut threshold = faults.rate_500;
        if draw < threshold {
            return Err(reject(
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected fault: internal server error (rate_500)",
            ));
        }
        threshold += faults.rate_503;
        if draw < threshold {
            return Err(reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "injected fault: service unavailable (rate_503)",
            ));
        }
        threshold += faults.rate_429;
        if draw < threshold {
            let secs = faults.retry_after_secs.unwrap_or(1);
            return Err(Rejection {
                retry_after: Some(secs),
                ..reject(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!("injected fault: rate limit exceeded, retry after {secs}s (rate_429)"),
                )
            });
        }
        // Both fields were checked to be strings by `verify`.
        let installation = event["installation_id"].as_str().unwrap_or_default();
        if faults.reject_installations.contains(installation) {
            return Err(reject(
                StatusCode::NOT_FOUND,
                format!("installation_id {installation:?} not found or not active (reject_installations)"),
            ));
        }
        let event_type = event["event_type"].as_str().unwrap_or_default();
        if faults.reject_event_types.contains(event_type) {
            return Err(reject(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("event_type {event_type:?} rejected (reject_event_types)"),
            ));
        }
        Ok(())
    }
}
