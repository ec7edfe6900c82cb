//! `orceum-bridge replay`: re-runs dead letters through the *current* config after a fix.
//!
//! Reads a dead-letter Kafka topic (offset range, or everything up to the end at start) or a
//! JetStream stream (sequence range), rebuilds each original message from the record — bytes,
//! key, original headers, and its original coordinates from `orceum.source` — and maps it
//! through its route (`orceum.route`, or `--route`). With `--dry-run` it prints what would
//! happen; otherwise it pushes, retrying transient failures, and prints a final count. Records
//! stream through: the reader hands them on one at a time through a bounded channel
//! ([`READ_AHEAD`]), so a range of any size is replayed in the memory of a few records.
//! `--app`, `--reason` and `--since`/`--until` (when the dead letter was written,
//! `orceum.failed_at`) select what a team asks for after an incident. Replayed
//! events keep their original coordinates in `metadata.source`, so they trace back to the
//! message that first failed. Replay reads; it never deletes or commits anything on the
//! dead-letter topic, and a record that fails again is reported, not re-dead-lettered.

use crate::build::Bridge;
use crate::config::SourceConfig;
use crate::dead_letter::{header, Stored};
use crate::dispatch::outcome::{classify, Outcome};
use crate::dispatch::retry::{Next, RetryPolicy};
use crate::message::{Message, Origin};
use crate::orceum::client::OrceumClient;
use crate::route::Mapped;
use crate::source;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Where the dead letters are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayFrom {
    Kafka { topic: String },
    JetStream { stream: String },
}

impl std::str::FromStr for ReplayFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("kafka", t)) if !t.is_empty() => Ok(Self::Kafka { topic: t.into() }),
            Some(("jetstream", st)) if !st.is_empty() => Ok(Self::JetStream { stream: st.into() }),
            _ => Err(format!("{s:?}: write kafka:TOPIC or jetstream:STREAM")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub from: ReplayFrom,
    /// The `sources:` entry to connect with; default: the only source of that bus.
    pub source: Option<String>,
    /// First offset / sequence (inclusive); default: the beginning.
    pub start: Option<i64>,
    /// Last offset / sequence (inclusive); default: the end at start-up.
    pub end: Option<i64>,
    /// Replay through this route instead of the one recorded in `orceum.route`.
    pub route: Option<String>,
    pub dry_run: bool,
    /// How long one record may keep failing transiently before it is reported as failed.
    pub max_elapsed: Duration,
    /// Only the dead letters of this kind (`lookup_miss`, `http_422`, …).
    pub reason: Option<String>,
    /// Only the dead letters of routes to this app (`apps:` name).
    pub app: Option<String>,
    /// Only the dead letters written at or after this time (`orceum.failed_at`).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only the dead letters written at or before this time.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

/// Records read ahead of the one being replayed.
pub const READ_AHEAD: usize = 8;

/// `--since`/`--until`: an RFC 3339 time, or a duration back from `now` (`90m`, `2h`).
pub fn parse_when(
    s: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    match crate::config::duration::parse(s)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
    {
        Some(ago) => now
            .checked_sub_signed(ago)
            .ok_or_else(|| format!("{s:?} reaches back before any date this bridge can name")),
        None => Err(format!(
            "{s:?}: give an RFC 3339 time (2026-12-01T09:30:00Z) or a duration back from now (90m, 2h)"
        )),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("--source: {0}")]
    Source(String),
    #[error("cannot read the dead letters: {0}")]
    Read(String),
    #[error("orceum: {0}")]
    Client(#[from] crate::orceum::client::ClientBuildError),
    #[error("lookup {lookup} did not load within 5 minutes ({status}); its routes cannot be replayed without it")]
    Lookup { lookup: String, status: String },
    #[error("{0}")]
    Registry(String),
    #[error("--app {name:?}: no such app; apps: {known}")]
    UnknownApp { name: String, known: String },
    #[error("cannot read the dead letters: {reason} (replayed until then: {summary})")]
    ReadAfter {
        reason: String,
        summary: ReplaySummary,
    },
}

/// One dead-letter record, back in the shape of the message that failed.
struct Record {
    at: String,
    route: Option<String>,
    /// `orceum.reason_kind`: why it was dead-lettered.
    kind: Option<String>,
    /// `orceum.failed_at`: when it was dead-lettered.
    failed_at: Option<chrono::DateTime<chrono::Utc>>,
    msg: Message,
}

/// How long replay waits for the lookup tables its routes read.
const LOOKUP_WAIT: Duration = Duration::from_secs(300);

/// Loads the lookup tables (their followers run until `stop`), waiting until each is ready:
/// a `lookup_miss` replayed against an empty table would miss again.
async fn load_lookups(
    bridge: &Bridge,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ReplayError> {
    let metrics = Arc::new(crate::telemetry::metrics::Metrics::new());
    // Only the tables some route reads.
    let used = bridge
        .lookups
        .only(bridge.routes.iter().flat_map(|r| r.lookups()));
    let tasks = crate::lookup::spawn_all(&used, &bridge.sources, metrics, stop.clone());
    for l in used.iter() {
        eprintln!("replay: loading lookup {} …", l.name);
        match tokio::time::timeout(LOOKUP_WAIT, l.wait_ready(stop)).await {
            Ok(Ok(true)) => eprintln!("replay: lookup {}", l.status()),
            _ => {
                stop.cancel();
                return Err(ReplayError::Lookup {
                    lookup: l.name.clone(),
                    status: l.status(),
                });
            }
        }
    }
    Ok(tasks)
}

/// The final count.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub read: usize,
    pub delivered: usize,
    pub would_send: usize,
    pub skipped: usize,
    /// Read and left alone: not the `--app`, `--reason` or time window asked for.
    pub not_selected: usize,
    /// Still failing, by reason kind.
    pub failed: BTreeMap<String, usize>,
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} read, {} delivered, {} would be sent, {} skipped, {} failed",
            self.read,
            self.delivered,
            self.would_send,
            self.skipped,
            self.failed.values().sum::<usize>()
        )?;
        if self.not_selected > 0 {
            write!(f, ", {} not selected", self.not_selected)?;
        }
        for (k, n) in &self.failed {
            write!(f, "\n  failed {k}: {n}")?;
        }
        Ok(())
    }
}

fn source_name(bridge: &Bridge, opts: &ReplayOptions, kafka: bool) -> Result<String, ReplayError> {
    if let Some(s) = &opts.source {
        return match (bridge.sources.get(s), kafka) {
            (Some(SourceConfig::Kafka(_)), true) | (Some(SourceConfig::Nats(_)), false) => {
                Ok(s.clone())
            }
            _ => Err(ReplayError::Source(format!(
                "{s:?} is not a {} source",
                if kafka { "kafka" } else { "nats" }
            ))),
        };
    }
    let matching: Vec<&String> = bridge
        .sources
        .iter()
        .filter(|(_, s)| {
            matches!(
                (s, kafka),
                (SourceConfig::Kafka(_), true) | (SourceConfig::Nats(_), false)
            )
        })
        .map(|(n, _)| n)
        .collect();
    match matching.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ReplayError::Source(
            "the config has no source of that kind".into(),
        )),
        _ => Err(ReplayError::Source(
            "several sources match; name one with --source".into(),
        )),
    }
}

fn record_from(stored: Stored, source: &str) -> Record {
    let Stored {
        at,
        payload,
        key,
        headers,
    } = stored;
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let route = get(header::ROUTE);
    let kind = get(header::REASON_KIND);
    let failed_at = get(header::FAILED_AT)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    let origin = get(header::SOURCE)
        .and_then(|c| Origin::parse(&c))
        .unwrap_or(Origin::Nats {
            subject: at.clone(),
            pattern: Arc::from("replay"),
        });
    let original: Vec<(String, Option<Vec<u8>>)> = headers
        .into_iter()
        .filter(|(k, _)| !k.starts_with("orceum."))
        .collect();
    Record {
        at,
        route,
        kind,
        failed_at,
        msg: Message {
            source: Arc::from(source),
            origin,
            route: None,
            payload,
            key,
            headers: original,
            timestamp: None,
        },
    }
}

/// Runs the replay; prints one line per record in dry-run mode, a progress bar otherwise.
pub async fn replay(bridge: &Bridge, opts: &ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    if let Some(app) = &opts.app {
        if !bridge.apps.contains_key(app) {
            return Err(ReplayError::UnknownApp {
                name: app.clone(),
                known: bridge.apps.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
    }
    let kafka = matches!(opts.from, ReplayFrom::Kafka { .. });
    let name = source_name(bridge, opts, kafka)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_lookups = stop.clone().drop_guard();
    let lookups = load_lookups(bridge, &stop).await?;

    let (tx, mut rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    let reader: tokio::task::JoinHandle<Result<(), String>> =
        match (&opts.from, bridge.sources.get(&name)) {
            (ReplayFrom::Kafka { topic }, Some(SourceConfig::Kafka(k))) => {
                let (name, k, topic) = (name.clone(), k.clone(), topic.clone());
                let (start, end) = (opts.start, opts.end);
                // librdkafka's calls block, and so does waiting for room: a thread of its own.
                tokio::task::spawn_blocking(move || {
                    source::kafka::replay::read(&name, &k, &topic, start, end, tx)
                })
            }
            (ReplayFrom::JetStream { stream }, Some(SourceConfig::Nats(n))) => {
                let (name, n, stream) = (name.clone(), n.clone(), stream.clone());
                let (start, end) = (opts.start, opts.end);
                tokio::spawn(async move {
                    source::nats::replay::read(&name, &n, &stream, start, end, tx).await
                })
            }
            _ => return Err(ReplayError::Source(name)),
        };
    let summary = replay_records(bridge, opts, &name, &mut rx).await;
    drop(rx);
    let read = reader
        .await
        .unwrap_or_else(|e| Err(format!("the reader stopped: {e}")));
    stop.cancel();
    for task in lookups {
        let _ = task.await;
    }
    let summary = summary?;
    match read {
        Ok(()) => Ok(summary),
        Err(reason) if summary.read == 0 => Err(ReplayError::Read(reason)),
        Err(reason) => Err(ReplayError::ReadAfter { reason, summary }),
    }
}

/// Whether a record is one the options select (`--app`, `--reason`, the time window).
fn selected(bridge: &Bridge, opts: &ReplayOptions, rec: &Record) -> bool {
    if opts.reason.is_some() && rec.kind != opts.reason {
        return false;
    }
    if let Some(app) = &opts.app {
        let route = opts.route.as_ref().or(rec.route.as_ref());
        let app_of = route.and_then(|n| bridge.routes.iter().find(|r| &r.name == n));
        if app_of.map(|r| &r.app) != Some(app) {
            return false;
        }
    }
    if opts.since.is_some() || opts.until.is_some() {
        // Without the time it was written, a record is outside any window.
        let Some(at) = rec.failed_at else {
            return false;
        };
        if opts.since.is_some_and(|s| at < s) || opts.until.is_some_and(|u| at > u) {
            return false;
        }
    }
    true
}

async fn replay_records(
    bridge: &Bridge,
    opts: &ReplayOptions,
    source: &str,
    records: &mut tokio::sync::mpsc::Receiver<Stored>,
) -> Result<ReplaySummary, ReplayError> {
    let client = OrceumClient::build(
        &bridge.orceum.base_url,
        bridge.orceum.timeout,
        bridge.orceum.ca_file.as_deref(),
        bridge.orceum.http2_prior_knowledge,
        bridge.proxy.as_ref(),
    )?;
    let registry = crate::format::registry::Registry::for_tool(bridge.schema_registry.as_ref())
        .map_err(ReplayError::Registry)?;
    // Replay waits for the registry as long as it takes (Ctrl-C ends it).
    let never = tokio_util::sync::CancellationToken::new();
    let retry = &bridge.delivery.retry;
    let policy = RetryPolicy::from_config(retry).giving_up_after(opts.max_elapsed);
    let mut summary = ReplaySummary::default();
    let bar = if opts.dry_run {
        ProgressBar::hidden()
    } else {
        // The count is not known before the end: records stream in.
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {pos} read {msg}") {
            bar.set_style(style);
        }
        bar
    };
    while let Some(stored) = records.recv().await {
        let rec = record_from(stored, source);
        summary.read += 1;
        bar.inc(1);
        if !selected(bridge, opts, &rec) {
            summary.not_selected += 1;
            continue;
        }
        let route_name = opts.route.clone().or(rec.route.clone());
        let Some(route) = route_name
            .as_deref()
            .and_then(|n| bridge.routes.iter().find(|r| r.name == n))
        else {
            *summary.failed.entry("unknown_route".into()).or_default() += 1;
            bar.println(format!(
                "{}: route {:?} is not in the config; use --route",
                rec.at, route_name
            ));
            continue;
        };
        // The parsed message is not `Send`: map it and drop it before anything awaits.
        let mapped = {
            let decoding = crate::format::Decoding {
                registry: registry.as_ref(),
                stop: &never,
                max_bytes: bridge.delivery.max_message_bytes,
            };
            match crate::format::decode_as(&rec.msg, &route.format, &decoding) {
                Ok(parsed) => route.map(&rec.msg, &parsed),
                Err(_) => continue,
            }
        };
        let event = match mapped {
            Mapped::Event(ev) => ev,
            Mapped::Skipped(reason) => {
                summary.skipped += 1;
                bar.println(format!("{}: skipped ({reason})", rec.at));
                continue;
            }
            Mapped::Rejected(r) => {
                *summary.failed.entry(r.kind.to_string()).or_default() += 1;
                bar.println(format!(
                    "{}: still rejected ({}): {}",
                    rec.at, r.kind, r.reason
                ));
                continue;
            }
        };
        let Some(app) = bridge.apps.get(&route.app) else {
            continue;
        };
        if opts.dry_run {
            summary.would_send += 1;
            println!(
                "{}: would send to {} ({}) installation {} {} {} [source {}]",
                rec.at,
                app.name,
                app.app_id,
                event.installation_id,
                event.event_type,
                event.priority,
                rec.msg.origin.coordinates()
            );
            continue;
        }
        let body = bytes::Bytes::from(event.to_body());
        let mut tries = policy.start();
        loop {
            let result = client.push(app, body.clone()).await;
            let outcome = classify(&result, &retry.retryable_statuses);
            let label = outcome.label();
            match &outcome {
                Outcome::Delivered => {
                    summary.delivered += 1;
                    break;
                }
                Outcome::Rejected { status, excerpt } => {
                    *summary.failed.entry(label.into_owned()).or_default() += 1;
                    bar.println(format!(
                        "{}: still rejected: {}",
                        rec.at,
                        Outcome::rejection_reason(*status, excerpt)
                    ));
                    break;
                }
                _ => match tries.failed(outcome.retry_after()) {
                    Next::Wait(delay) => {
                        bar.set_message(format!("retrying {} ({label})", rec.at));
                        tokio::time::sleep(delay).await;
                    }
                    Next::GiveUp { .. } => {
                        bar.println(format!("{}: gave up ({label})", rec.at));
                        *summary.failed.entry(label.into_owned()).or_default() += 1;
                        break;
                    }
                },
            }
        }
    }
    bar.finish_and_clear();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_is_a_time_or_a_duration_back_from_now() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T12:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_when("2h", now).unwrap().to_rfc3339(),
            "2026-12-01T10:00:00+00:00"
        );
        assert_eq!(
            parse_when("2026-11-30T08:15:00+01:00", now)
                .unwrap()
                .to_rfc3339(),
            "2026-11-30T07:15:00+00:00"
        );
        assert!(parse_when("yesterday", now)
            .unwrap_err()
            .contains("RFC 3339"));
        assert!(
            parse_when("2400000000h", now).is_err(),
            "273,000 years back is an error, not a panic"
        );
    }

    #[test]
    fn replay_from_names_a_bus() {
        assert_eq!(
            "kafka:dlq".parse::<ReplayFrom>().unwrap(),
            ReplayFrom::Kafka {
                topic: "dlq".into()
            }
        );
        assert!("dlq".parse::<ReplayFrom>().is_err());
    }
}
