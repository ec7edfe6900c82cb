//! `orceum-bridge replay`: re-runs dead letters through the *current* config after a fix.
//!
//! Reads a dead-letter Kafka topic (offset range, or everything up to the end at start) or a
//! JetStream stream (sequence range), rebuilds each original message from the record — bytes,
//! key, original headers, and its original coordinates from `orceum.source` — and maps it
//! through its route (`orceum.route`, or `--route`). With `--dry-run` it prints what would
//! happen; otherwise it pushes, retrying transient failures, and prints a final count. Replayed
//! events keep their original coordinates in `metadata.source`, so they trace back to the
//! message that first failed. Replay reads; it never deletes or commits anything on the
//! dead-letter topic, and a record that fails again is reported, not re-dead-lettered.

use crate::config::validate::Bridge;
use crate::config::SourceConfig;
use crate::dead_letter::header;
use crate::dispatch::outcome::{classify, Outcome};
use crate::dispatch::retry::Backoff;
use crate::message::{Message, Origin};
use crate::orceum::client::OrceumClient;
use crate::route::{parse_payload, Mapped};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("--source: {0}")]
    Source(String),
    #[error("cannot read the dead letters: {0}")]
    Read(String),
    #[error("orceum: {0}")]
    Client(#[from] crate::orceum::client::ClientBuildError),
}

/// One dead-letter record, back in the shape of the message that failed.
struct Record {
    at: String,
    route: Option<String>,
    msg: Message,
}

/// The final count.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub read: usize,
    pub delivered: usize,
    pub would_send: usize,
    pub skipped: usize,
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

fn record_from(
    at: String,
    source: &str,
    payload: Vec<u8>,
    key: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
) -> Record {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_ref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let route = get(header::ROUTE);
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

fn read_kafka(
    bridge: &Bridge,
    opts: &ReplayOptions,
    topic: &str,
) -> Result<Vec<Record>, ReplayError> {
    let name = source_name(bridge, opts, true)?;
    let Some(SourceConfig::Kafka(k)) = bridge.sources.get(&name) else {
        return Err(ReplayError::Source(name));
    };
    let mut cfg = ClientConfig::new();
    for (key, v) in crate::source::kafka::properties(&name, k)
        .map_err(|e| ReplayError::Source(e.to_string()))?
    {
        cfg.set(key, v);
    }
    cfg.set("bootstrap.servers", &k.bootstrap_servers)
        .set("group.id", "orceum-bridge-replay")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    let consumer: BaseConsumer = cfg.create().map_err(|e| ReplayError::Read(e.to_string()))?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| ReplayError::Read(format!("topic {topic}: {e}")))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(ReplayError::Read(format!("topic {topic} does not exist")));
    }
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .map_err(|e| ReplayError::Read(format!("{topic}/{p}: {e}")))?;
        let start = opts.start.unwrap_or(low).max(low);
        let end = opts.end.map(|e| e + 1).unwrap_or(high).min(high);
        if start < end || opts.end.is_none() {
            let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(start));
            ends.insert(*p, end);
        }
    }
    consumer
        .assign(&tpl)
        .map_err(|e| ReplayError::Read(e.to_string()))?;
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last_seen = Instant::now();
    // Read until every partition reached its end, or the topic has been quiet for 2 s: some
    // Kafka-protocol brokers report a stale high watermark for batched writes, so without
    // --end the watermark seen at start is not trusted as the end.
    while Instant::now() < deadline {
        let quiet = last_seen.elapsed() > Duration::from_secs(2);
        if quiet && (opts.end.is_none() || ends.is_empty()) {
            break;
        }
        if opts.end.is_some() && ends.is_empty() {
            break;
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_seen = Instant::now();
                if opts.end.is_some_and(|e| m.offset() > e) {
                    ends.remove(&m.partition());
                    continue;
                }
                let headers = crate::source::kafka::headers_of(&m);
                records.push(record_from(
                    format!("{topic}/{}@{}", m.partition(), m.offset()),
                    &name,
                    m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    m.key().map(<[u8]>::to_vec),
                    headers,
                ));
                if ends
                    .get(&m.partition())
                    .is_some_and(|end| m.offset() + 1 >= *end)
                {
                    ends.remove(&m.partition());
                }
            }
            Some(Err(e)) => return Err(ReplayError::Read(e.to_string())),
            None => {}
        }
    }
    Ok(records)
}

async fn read_jetstream(
    bridge: &Bridge,
    opts: &ReplayOptions,
    stream: &str,
) -> Result<Vec<Record>, ReplayError> {
    let name = source_name(bridge, opts, false)?;
    let Some(SourceConfig::Nats(n)) = bridge.sources.get(&name) else {
        return Err(ReplayError::Source(name));
    };
    let client = crate::source::nats::connect(&name, n, None)
        .await
        .map_err(|e| ReplayError::Read(e.to_string()))?;
    let js = async_nats::jetstream::new(client);
    let mut s = js
        .get_stream(stream)
        .await
        .map_err(|e| ReplayError::Read(format!("stream {stream}: {e}")))?;
    let state = s
        .info()
        .await
        .map_err(|e| ReplayError::Read(e.to_string()))?
        .state
        .clone();
    let first = opts
        .start
        .map(|v| v.max(0) as u64)
        .unwrap_or(state.first_sequence)
        .max(state.first_sequence);
    let last = opts
        .end
        .map(|v| v.max(0) as u64)
        .unwrap_or(state.last_sequence)
        .min(state.last_sequence);
    let mut records = Vec::new();
    for seq in first..=last {
        let Ok(m) = s.get_raw_message(seq).await else {
            continue;
        }; // deleted: skip
        let mut headers = Vec::new();
        for (k, vs) in m.headers.iter() {
            for v in vs {
                headers.push((k.to_string(), Some(v.as_str().as_bytes().to_vec())));
            }
        }
        records.push(record_from(
            format!("{stream}@{seq}"),
            &name,
            m.payload.to_vec(),
            None,
            headers,
        ));
    }
    Ok(records)
}

/// Runs the replay; prints one line per record in dry-run mode, a progress bar otherwise.
pub async fn replay(bridge: &Bridge, opts: &ReplayOptions) -> Result<ReplaySummary, ReplayError> {
    let records = match &opts.from {
        ReplayFrom::Kafka { topic } => {
            let (b, o, t) = (bridge, opts, topic.clone());
            // librdkafka's calls block: keep them off the async workers.
            tokio::task::block_in_place(|| read_kafka(b, o, &t))?
        }
        ReplayFrom::JetStream { stream } => read_jetstream(bridge, opts, stream).await?,
    };
    let client = OrceumClient::with_ca(
        &bridge.orceum.base_url,
        bridge.orceum.timeout,
        bridge.orceum.ca_file.as_deref(),
    )?;
    let retry = &bridge.delivery.retry;
    let mut summary = ReplaySummary {
        read: records.len(),
        ..Default::default()
    };
    let bar = if opts.dry_run {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(records.len() as u64);
        if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}") {
            bar.set_style(style);
        }
        bar
    };
    for rec in records {
        bar.inc(1);
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
            let parsed = parse_payload(&rec.msg.payload, bridge.delivery.max_message_bytes);
            route.map(&rec.msg, &parsed)
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
        let mut backoff = Backoff::new(retry.initial_backoff, retry.max_backoff);
        let started = Instant::now();
        loop {
            let result = client.push(app, body.clone()).await;
            match classify(&result, &retry.retryable_statuses) {
                Outcome::Delivered => {
                    summary.delivered += 1;
                    break;
                }
                Outcome::Retry { after, reason, .. } if started.elapsed() < opts.max_elapsed => {
                    bar.set_message(format!("retrying {} ({reason})", rec.at));
                    tokio::time::sleep(
                        after
                            .map(|a| a.min(retry.max_retry_after))
                            .unwrap_or_else(|| backoff.next_delay()),
                    )
                    .await;
                }
                Outcome::Retry { reason, .. } => {
                    *summary.failed.entry(reason.clone()).or_default() += 1;
                    bar.println(format!("{}: gave up ({reason})", rec.at));
                    break;
                }
                Outcome::DeadLetter { kind, reason } => {
                    *summary.failed.entry(kind).or_default() += 1;
                    bar.println(format!("{}: still rejected: {reason}", rec.at));
                    break;
                }
                Outcome::Skipped { .. } => {
                    summary.skipped += 1;
                    break;
                }
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
