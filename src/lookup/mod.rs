//! Lookup tables: `lookup(NAME; KEY)` in templates, answered from a table kept on the bus.
//!
//! Domain events carry the platform's user ids; Orceum wants its installation ids. The service
//! that receives Orceum's INSTALLED webhooks writes `user id → installation id` to a compacted
//! Kafka topic or a JetStream key-value bucket (or a file), and each table here follows one of
//! them ([`kafka`], [`nats_kv`], [`file`]): read whole at start, then kept up to date.
//!
//! No event is mapped against a half-loaded table: a table is *ready* once it has caught up
//! with its source (Kafka: the high watermarks read at start; KV: the initial values; a file:
//! read once), a source whose routes use it starts consuming only then, and `/readyz` says
//! what it waits for. Later, while its source is down, a table keeps answering from what it
//! has, and `orceum_bridge_lookup_stale_seconds` says for how long.

pub mod file;
pub mod kafka;
pub mod nats_kv;
pub mod table;

use crate::config::{LookupConfig, LookupSource, SourceConfig};
use crate::sync::lock;
use crate::telemetry::metrics::Metrics;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use table::{Bounds, Refused, Stored, Table};
use tokio_util::sync::CancellationToken;

/// One named table with its source and state.
pub struct Lookup {
    pub name: String,
    pub source: LookupSource,
    pub table: Table,
    ready: tokio::sync::watch::Sender<bool>,
    /// What it is doing, for `/readyz` and logs ("loading: 12,000 entries; …").
    status: Mutex<String>,
    /// Unix milliseconds of the last update applied (0: none yet).
    last_update_ms: AtomicU64,
    /// Unix milliseconds when the table was last known to be in step with its source.
    in_step_ms: AtomicU64,
    /// Readiness flag of `/readyz`, once registered.
    flag: Mutex<Option<Arc<AtomicBool>>>,
    /// When the last "refused" error was logged (unix ms), to log at most every 30 s.
    refused_logged_ms: AtomicU64,
    /// The table's metric series, resolved once (an update costs no label lookup).
    handles: std::sync::OnceLock<Handles>,
}

struct Handles {
    metrics: Arc<Metrics>,
    entries: prometheus::IntGauge,
    updates: prometheus::IntCounter,
    ready: prometheus::IntGauge,
}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lookup({:?})", self.name)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Lookup {
    pub fn new(name: &str, source: LookupSource, bounds: Bounds) -> Self {
        Self {
            name: name.to_string(),
            source,
            table: Table::new(bounds),
            ready: tokio::sync::watch::Sender::new(false),
            status: Mutex::new("not started".into()),
            last_update_ms: AtomicU64::new(0),
            in_step_ms: AtomicU64::new(0),
            flag: Mutex::new(None),
            refused_logged_ms: AtomicU64::new(0),
            handles: std::sync::OnceLock::new(),
        }
    }

    /// A table of a config's `lookups:` entry (its source already checked).
    pub fn from_config(name: &str, c: &LookupConfig) -> Option<Self> {
        let bounds = Bounds {
            max_entries: c.max_entries,
            max_bytes: c.max_bytes,
        };
        c.source().ok().map(|s| Self::new(name, s, bounds))
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the table is ready; `false` if `stop` came first.
    pub async fn wait_ready(&self, stop: &CancellationToken) -> bool {
        let mut rx = self.ready.subscribe();
        tokio::select! {
            r = rx.wait_for(|r| *r) => r.is_ok(),
            _ = stop.cancelled() => false,
        }
    }

    pub fn status(&self) -> String {
        lock(&self.status).clone()
    }

    /// Says what the table is doing (shown by `/readyz` while it is not ready).
    pub fn set_status(&self, s: impl Into<String>) {
        *lock(&self.status) = s.into();
    }

    /// Caught up with its source: mapping may start.
    pub fn mark_ready(&self, how: &str) {
        self.mark_in_step();
        let (entries, bytes) = self.table.size();
        self.set_status(format!("ready: {entries} entries ({how})"));
        if !self.ready.send_replace(true) {
            tracing::info!(lookup = %self.name, entries, bytes, "lookup table ready ({how})");
        }
        if let Some(flag) = lock(&self.flag).as_ref() {
            flag.store(true, Ordering::Relaxed);
        }
        if let Some(h) = self.handles.get() {
            h.ready.set(1);
        }
    }

    /// The table agrees with its source as of now (its source answered).
    pub fn mark_in_step(&self) {
        self.in_step_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Connects the table to `/readyz` and the metrics.
    pub fn attach(&self, flag: Arc<AtomicBool>, metrics: Arc<Metrics>) {
        flag.store(self.is_ready(), Ordering::Relaxed);
        *lock(&self.flag) = Some(flag);
        let name = [self.name.as_str()];
        let _ = self.handles.set(Handles {
            entries: metrics.lookup_entries.with_label_values(&name),
            updates: metrics.lookup_updates.with_label_values(&name),
            ready: metrics.lookup_ready.with_label_values(&name),
            metrics,
        });
        self.publish_size();
    }

    fn with_metrics(&self, f: impl FnOnce(&Metrics)) {
        if let Some(h) = self.handles.get() {
            f(&h.metrics);
        }
    }

    fn publish_size(&self) {
        if let Some(h) = self.handles.get() {
            h.entries.set(self.table.size().0 as i64);
            h.ready.set(i64::from(self.is_ready()));
        }
    }

    fn updated(&self) {
        self.last_update_ms.store(now_ms(), Ordering::Relaxed);
        if let Some(h) = self.handles.get() {
            h.updates.inc();
        }
    }

    fn refused(&self, why: Refused, key: &str) {
        self.with_metrics(|m| {
            m.lookup_refused
                .with_label_values(&[&self.name, why.label()])
                .inc()
        });
        let now = now_ms();
        let last = self.refused_logged_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 30_000 {
            self.refused_logged_ms.store(now, Ordering::Relaxed);
            let b = self.table.bounds();
            let (entries, bytes) = self.table.size();
            let what = match why {
                Refused::Full => format!("the table holds max_entries ({})", b.max_entries),
                Refused::OverBytes => format!("the table would pass max_bytes ({})", b.max_bytes),
                Refused::KeyTooLong => format!(
                    "the key is {} bytes, over {}",
                    key.len(),
                    table::MAX_KEY_BYTES
                ),
                Refused::ValueTooLarge => {
                    format!("the value is over {} bytes", table::MAX_VALUE_BYTES)
                }
            };
            tracing::error!(
                lookup = %self.name, entries, bytes, reason = why.label(),
                "lookup update refused: {what}; lookups of that key answer null (raise lookups.{}.max_entries / max_bytes, or compact the source); counted in orceum_bridge_lookup_refused_total, logged at most every 30 s",
                self.name
            );
        }
    }

    /// Applies one update from the source: a value, or `None` to delete the key.
    pub fn apply(&self, key: &str, value: Option<&[u8]>) {
        match value {
            None => {
                self.table.remove(key);
            }
            Some(bytes) => {
                let Some(stored) = Stored::from_bytes(bytes) else {
                    self.refused_value(key);
                    return;
                };
                if let Err(why) = self.table.put(key, &stored) {
                    self.refused(why, key);
                    return;
                }
            }
        }
        self.updated();
        self.publish_size();
    }

    fn refused_value(&self, _key: &str) {
        self.ignored("not_utf8", "the value is neither JSON nor UTF-8 text");
    }

    /// A record without a UTF-8 key (Kafka): nothing to look it up by.
    pub fn refused_key(&self) {
        self.ignored(
            "bad_key",
            "the record has no key, or a key that is not UTF-8",
        );
    }

    fn ignored(&self, reason: &'static str, what: &str) {
        self.with_metrics(|m| {
            m.lookup_refused
                .with_label_values(&[&self.name, reason])
                .inc()
        });
        let now = now_ms();
        if now.saturating_sub(self.refused_logged_ms.load(Ordering::Relaxed)) >= 30_000 {
            self.refused_logged_ms.store(now, Ordering::Relaxed);
            tracing::warn!(lookup = %self.name, reason, "lookup update ignored: {what} (counted in orceum_bridge_lookup_refused_total, logged at most every 30 s)");
        }
    }

    /// Swaps in a whole new table (a file re-read).
    pub fn replace(&self, entries: table::Entries) {
        self.table.replace(entries);
        self.updated();
        self.publish_size();
    }

    /// Seconds since the last update, and since the table was last in step with its source.
    pub fn ages(&self) -> (f64, f64) {
        let now = now_ms();
        let age = |ms: u64| {
            if ms == 0 {
                0.0
            } else {
                now.saturating_sub(ms) as f64 / 1000.0
            }
        };
        (
            age(self.last_update_ms.load(Ordering::Relaxed)),
            age(self.in_step_ms.load(Ordering::Relaxed)),
        )
    }
}

/// Every table of a config, by name: what templates read.
#[derive(Clone, Default, Debug)]
pub struct Tables(Arc<BTreeMap<String, Arc<Lookup>>>);

impl Tables {
    pub fn new(tables: BTreeMap<String, Arc<Lookup>>) -> Self {
        Self(Arc::new(tables))
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Lookup>> {
        self.0.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Lookup>> {
        self.0.values()
    }

    /// The names, for error messages.
    pub fn names(&self) -> String {
        if self.0.is_empty() {
            "none (add them under lookups:)".into()
        } else {
            self.0.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// Why a table's follower stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("lookups.{lookup}: {reason}")]
    Start { lookup: String, reason: String },
}

/// How often followers check in with their source and the age gauges are refreshed.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Starts one follower per table; each runs until `stop`.
pub fn spawn_all(
    tables: &Tables,
    sources: &BTreeMap<String, SourceConfig>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for lookup in tables.iter() {
        let (lookup, stop) = (lookup.clone(), stop.clone());
        let source = match &lookup.source {
            LookupSource::Kafka(k) => sources.get(&k.source).cloned(),
            LookupSource::NatsKv(n) => sources.get(&n.source).cloned(),
            LookupSource::File(_) => None,
        };
        tasks.push(tokio::spawn(async move {
            let result = match (&lookup.source, source) {
                (LookupSource::Kafka(k), Some(SourceConfig::Kafka(kc))) => {
                    kafka::follow(&lookup, k, &kc, &stop).await
                }
                (LookupSource::NatsKv(n), Some(SourceConfig::Nats(nc))) => {
                    nats_kv::follow(&lookup, n, &nc, &stop).await
                }
                (LookupSource::File(path), _) => file::follow(&lookup, path, &stop).await,
                _ => Err(LookupError::Start {
                    lookup: lookup.name.clone(),
                    reason: "its source is not a source of that kind".into(),
                }),
            };
            if let Err(e) = result {
                lookup.set_status(e.to_string());
                tracing::error!(lookup = %lookup.name, error = %e, "lookup table stopped");
            }
        }));
    }
    if !tables.is_empty() {
        let (tables, stop) = (tables.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                for l in tables.iter() {
                    let (age, stale) = l.ages();
                    metrics
                        .lookup_last_update_age
                        .with_label_values(&[&l.name])
                        .set(age);
                    metrics
                        .lookup_stale
                        .with_label_values(&[&l.name])
                        .set(stale);
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }));
    }
    tasks
}

/// Sleeps `d`, or returns `false` at `stop`.
pub(crate) async fn pause(d: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.cancelled() => false,
    }
}
