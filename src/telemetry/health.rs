//! The small HTTP surface on `observability.listen`: `/healthz`, `/readyz`, `/metrics`.
//!
//! Liveness is "the process answers". Readiness is "config loaded and every source connected";
//! Orceum being reachable is deliberately not a condition: an outage shows up as lag, and
//! taking every replica out of rotation would not help.

use super::metrics::Metrics;
use crate::sync::lock;
use axum::{extract::State, http::StatusCode, routing::get, Router};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Says what a part that is not ready waits for.
pub type Note = Arc<dyn Fn() -> String + Send + Sync>;

/// One flag per source (and per lookup table); ready when all are up.
#[derive(Clone, Default)]
pub struct Readiness {
    sources: Arc<Mutex<BTreeMap<String, Arc<AtomicBool>>>>,
    notes: Arc<Mutex<BTreeMap<String, Note>>>,
}

impl Readiness {
    /// Registers a source (not ready yet) and returns its flag.
    pub fn register(&self, source: &str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        if let Ok(mut m) = self.sources.lock() {
            m.insert(source.to_string(), flag.clone());
        }
        flag
    }

    /// [`Readiness::register`], with what `/readyz` says while it is not ready.
    pub fn register_noted(&self, name: &str, note: Note) -> Arc<AtomicBool> {
        lock(&self.notes).insert(name.to_string(), note);
        self.register(name)
    }

    /// Each source and whether it is up (lookup tables have their own metric).
    pub fn states(&self) -> Vec<(String, bool)> {
        let m = lock(&self.sources);
        let notes = lock(&self.notes);
        m.iter()
            .filter(|(n, _)| !notes.contains_key(*n))
            .map(|(n, f)| (n.clone(), f.load(Ordering::Relaxed)))
            .collect()
    }

    /// Ready sources, and the names of those that are not.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let m = lock(&self.sources);
        let notes = lock(&self.notes);
        let down: Vec<String> = m
            .iter()
            .filter(|(_, f)| !f.load(Ordering::Relaxed))
            .map(|(n, _)| match notes.get(n) {
                Some(note) => format!("{n} ({})", note()),
                None => format!("source {n}"),
            })
            .collect();
        if down.is_empty() && !m.is_empty() {
            Ok(())
        } else {
            Err(down)
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

/// Serves the health and metrics endpoints until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { metrics, readiness });
    // On 0.0.0.0 by default (Prometheus must reach it in a pod): bounded connections and
    // header/idle timeouts, so nobody can hold it open.
    crate::serve::serve(listener, app, shutdown, crate::serve::Limits::default()).await
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    match s.readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(down) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: waiting for {}\n", down.join(", ")),
        ),
    }
}

async fn metrics_text(State(s): State<AppState>) -> ([(&'static str, &'static str); 1], String) {
    for (source, up) in s.readiness.states() {
        s.metrics
            .source_ready
            .with_label_values(&[&source])
            .set(i64::from(up));
    }
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_what_it_waits_for_and_keeps_lookups_out_of_source_ready() {
        let r = Readiness::default();
        let source = r.register("events");
        let table = r.register_noted(
            "lookup installations",
            Arc::new(|| "loading topic t: 10 of about 20 records read".to_string()),
        );
        assert_eq!(
            r.check(),
            Err(vec![
                "source events".to_string(),
                "lookup installations (loading topic t: 10 of about 20 records read)".to_string(),
            ])
        );
        source.store(true, Ordering::Relaxed);
        assert_eq!(r.states(), vec![("events".to_string(), true)]);
        assert!(r.check().is_err());
        table.store(true, Ordering::Relaxed);
        assert_eq!(r.check(), Ok(()));
    }
}
