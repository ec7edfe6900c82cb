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
    state: tokio::sync::watch::Sender<State>,
    /// What it is doing, for `/readyz` and logs ("loading: 12,000 entries; …").
    status: Mutex<String>,
    /// Unix milliseconds of the last update applied (0: none yet).
    last_update_ms: AtomicU64,
    /// Unix milliseconds when the table was last known to be in step with its source.
    in_step_ms: AtomicU64,
    /// Readiness flag of `/readyz`, once registered.
    flag: Mutex<Option<Arc<AtomicBool>>>,
    /// When the last "refused" ERROR (the bounds) was logged (unix ms): at most every 30 s.
    refused_logged_ms: AtomicU64,
    /// The same for the WARN about ignored records (no key, a value neither JSON nor text).
    ignored_logged_ms: AtomicU64,
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
            state: tokio::sync::watch::Sender::new(State::Loading),
            status: Mutex::new("not started".into()),
            last_update_ms: AtomicU64::new(0),
            in_step_ms: AtomicU64::new(0),
            flag: Mutex::new(None),
            refused_logged_ms: AtomicU64::new(0),
            ignored_logged_ms: AtomicU64::new(0),
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
        *self.state.borrow() == State::Ready
    }

    /// Waits until the table is ready: `Ok(true)`; `Ok(false)` if `stop` came first; the
    /// error if its follower stopped for good (a source that waits for it must not wait for
    /// ever, so the bridge stops with the error instead).
    pub async fn wait_ready(&self, stop: &CancellationToken) -> Result<bool, LookupError> {
        let mut rx = self.state.subscribe();
        tokio::select! {
            r = rx.wait_for(|s| *s != State::Loading) => match r.as_deref() {
                Ok(State::Ready) => Ok(true),
                Ok(State::Failed(reason)) => Err(LookupError::Start {
                    lookup: self.name.clone(),
                    reason: reason.clone(),
                }),
                _ => Ok(false),
            },
            _ = stop.cancelled() => Ok(false),
        }
    }

    /// Its follower stopped for good (a config problem: the bridge stops with it).
    pub fn fail(&self, reason: &str) {
        self.set_status(format!("stopped: {reason}"));
        self.state.send_modify(|s| {
            if *s == State::Loading {
                *s = State::Failed(reason.to_string());
            }
        });
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
        if self.state.send_replace(State::Ready) != State::Ready {
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
                // A refused update removes the key: its old value is out of date, and a miss
                // (skipped or dead-lettered, then replayed) beats an event for the wrong
                // installation.
                let Some(stored) = Stored::from_bytes(bytes) else {
                    self.table.remove(key);
                    self.refused_value();
                    self.publish_size();
                    return;
                };
                if let Err(why) = self.table.put(key, &stored) {
                    self.table.remove(key);
                    self.refused(why, key);
                    self.publish_size();
                    return;
                }
            }
        }
        self.updated();
        self.publish_size();
    }

    fn refused_value(&self) {
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
        if now.saturating_sub(self.ignored_logged_ms.load(Ordering::Relaxed)) >= 30_000 {
            self.ignored_logged_ms.store(now, Ordering::Relaxed);
            tracing::warn!(lookup = %self.name, reason, "lookup update ignored: {what} (counted in orceum_bridge_lookup_refused_total, logged at most every 30 s)");
        }
    }

    /// Swaps in a whole new table (a file re-read); returns the old one, to be dropped off
    /// the async workers (freeing a million entries takes a while).
    #[must_use]
    pub fn replace(&self, entries: table::Entries) -> table::Entries {
        let old = self.table.replace(entries);
        self.updated();
        self.publish_size();
        old
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

/// Where a table is: loading from its source, caught up, or given up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Loading,
    Ready,
    Failed(String),
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

    /// The tables of `names` (those some route reads: a table no route reads is neither
    /// followed nor waited for).
    pub fn only<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Tables {
        let names: std::collections::BTreeSet<&str> = names.into_iter().collect();
        Tables::new(
            self.0
                .iter()
                .filter(|(n, _)| names.contains(n.as_str()))
                .map(|(n, l)| (n.clone(), l.clone()))
                .collect(),
        )
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
                tracing::error!(lookup = %lookup.name, error = %e, "lookup table stopped");
                lookup.fail(&e.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(max_bytes: usize) -> Lookup {
        Lookup::new(
            "t",
            LookupSource::File("t.json".into()),
            Bounds {
                max_entries: 10,
                max_bytes,
            },
        )
    }

    #[test]
    fn a_refused_update_removes_the_key_rather_than_keep_an_out_of_date_value() {
        let l = lookup(20);
        l.apply("u1", Some(b"inst-1"));
        assert_eq!(l.table.get_json("u1"), Some("inst-1".into()));
        // Over max_bytes, and not UTF-8: the old value must not answer any more.
        l.apply("u1", Some("x".repeat(40).as_bytes()));
        assert_eq!(l.table.get_json("u1"), None);
        l.apply("u2", Some(b"inst-2"));
        l.apply("u2", Some(&[0xff, 0xfe]));
        assert_eq!(l.table.get_json("u2"), None);
        l.apply("u3", Some(b"inst-3"));
        l.apply("u3", None);
        assert_eq!(l.table.size(), (0, 0));
    }

    #[tokio::test]
    async fn waiting_for_a_table_ends_when_it_is_ready_fails_or_the_bridge_stops() {
        let stop = CancellationToken::new();
        let l = lookup(100);
        l.mark_ready("test");
        assert!(l.wait_ready(&stop).await.unwrap());
        let l = lookup(100);
        l.fail("cannot read the credentials file");
        let e = l.wait_ready(&stop).await.unwrap_err();
        assert!(e.to_string().contains("credentials"), "{e}");
        let l = lookup(100);
        stop.cancel();
        assert!(!l.wait_ready(&stop).await.unwrap());
    }
}
