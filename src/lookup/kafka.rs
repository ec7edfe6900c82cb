//! A table that follows a Kafka topic (compacted, in production): every partition assigned
//! from the beginning on each start, outside the bridge's consumer group, nothing committed.
//! A record's UTF-8 key maps to its value (JSON if it parses, else the text); a tombstone (no
//! value) deletes the key.
//!
//! Ready once every partition reached the high watermark read at start (or reported its end).
//! A Kafka-protocol broker that reports a stale high watermark for batched writes can make
//! that early; the table still receives the rest, moments later.

use super::{Lookup, LookupError, CHECK_EVERY};
use crate::config::{KafkaLookupConfig, KafkaSourceConfig};
use crate::source::kafka::client_config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// The reader's librdkafka context: the end of a partition is how the table knows it has
/// caught up (it comes through `poll` too), not an error to log; other errors (brokers down)
/// are logged at most every 30 s (`orceum_bridge_lookup_stale_seconds` says how long).
#[derive(Default)]
struct ReaderContext {
    lookup: String,
    last_warning: std::sync::Mutex<Option<Instant>>,
}

impl rdkafka::ClientContext for ReaderContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error,
            KafkaError::PartitionEOF(_)
                | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
        let mut last = crate::sync::lock(&self.last_warning);
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
            *last = Some(Instant::now());
            tracing::warn!(lookup = %self.lookup, error = %error, reason, "lookup table's Kafka reader: librdkafka error (it retries; the table keeps what it has)");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ReaderContext {}

type Reader = BaseConsumer<ReaderContext>;

/// Follows the topic until `stop` (librdkafka blocks: on a thread of its own).
pub async fn follow(
    lookup: &Arc<Lookup>,
    k: &KafkaLookupConfig,
    kc: &KafkaSourceConfig,
    stop: &CancellationToken,
) -> Result<(), LookupError> {
    let (lookup, k, kc, stop) = (lookup.clone(), k.clone(), kc.clone(), stop.clone());
    let name = lookup.name.clone();
    tokio::task::spawn_blocking(move || run(&lookup, &k, &kc, &stop))
        .await
        .map_err(|e| LookupError::Start {
            lookup: name,
            reason: format!("the reader thread failed: {e}"),
        })?
}

fn start_error(lookup: &Lookup, reason: impl std::fmt::Display) -> LookupError {
    LookupError::Start {
        lookup: lookup.name.clone(),
        reason: reason.to_string(),
    }
}

/// Sleeps up to `d` in small steps; `false` at `stop`.
fn nap(d: Duration, stop: &CancellationToken) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.is_cancelled() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !stop.is_cancelled()
}

/// The topic's partitions with their high watermarks, once the broker answers.
fn partitions(
    lookup: &Lookup,
    consumer: &Reader,
    k: &KafkaLookupConfig,
    stop: &CancellationToken,
) -> Option<BTreeMap<i32, (i64, i64)>> {
    let topic = &k.topic;
    loop {
        let found = consumer
            .fetch_metadata(Some(topic), BROKER_TIMEOUT)
            .map_err(|e| e.to_string())
            .and_then(|md| {
                let ids: Vec<i32> = md
                    .topics()
                    .iter()
                    .filter(|t| t.name() == topic && t.error().is_none())
                    .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                    .collect();
                if ids.is_empty() {
                    return Err(format!("topic {topic} does not exist on source {} (create it, compacted: see docs/lookups.md)", k.source));
                }
                ids.into_iter()
                    .map(|p| {
                        consumer
                            .fetch_watermarks(topic, p, BROKER_TIMEOUT)
                            .map(|w| (p, w))
                            .map_err(|e| format!("{topic}/{p}: cannot read the watermarks: {e}"))
                    })
                    .collect::<Result<BTreeMap<_, _>, _>>()
            });
        match found {
            Ok(p) => return Some(p),
            Err(e) => {
                lookup.set_status(format!("waiting: {e} (retrying)"));
                tracing::warn!(lookup = %lookup.name, "lookup table waits: {e}");
            }
        }
        if !nap(CHECK_EVERY, stop) {
            return None;
        }
    }
}

fn run(
    lookup: &Lookup,
    k: &KafkaLookupConfig,
    kc: &KafkaSourceConfig,
    stop: &CancellationToken,
) -> Result<(), LookupError> {
    let consumer: Reader = client_config::lookup_reader(&k.source, kc)
        .map_err(|e| start_error(lookup, e))?
        .create_with_context(ReaderContext {
            lookup: lookup.name.clone(),
            ..ReaderContext::default()
        })
        .map_err(|e| start_error(lookup, e))?;
    let started = Instant::now();
    lookup.set_status(format!("connecting to topic {}", k.topic));
    let Some(ends) = partitions(lookup, &consumer, k, stop) else {
        return Ok(());
    };
    let mut tpl = TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(&k.topic, *p, Offset::Beginning)
            .map_err(|e| start_error(lookup, e))?;
    }
    consumer.assign(&tpl).map_err(|e| start_error(lookup, e))?;
    // Partitions still behind the high watermark read at start.
    let mut behind: BTreeMap<i32, i64> = ends
        .iter()
        .filter(|(_, (low, high))| high > low)
        .map(|(p, (_, high))| (*p, *high))
        .collect();
    let total: i64 = ends.values().map(|(low, high)| high - low).sum();
    let mut read = 0u64;
    let mut last_check = Instant::now();
    let mut last_warning = None::<Instant>;
    let check_ready = |behind: &BTreeMap<i32, i64>, read: u64| {
        if behind.is_empty() && !lookup.is_ready() {
            lookup.mark_ready(&format!(
                "topic {}, {read} records in {:.1?}",
                k.topic,
                started.elapsed()
            ));
        }
    };
    check_ready(&behind, read);
    while !stop.is_cancelled() {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                read += 1;
                match m.key().map(std::str::from_utf8) {
                    Some(Ok(key)) => lookup.apply(key, m.payload()),
                    _ => lookup.refused_key(),
                }
                if behind
                    .get(&m.partition())
                    .is_some_and(|h| m.offset() + 1 >= *h)
                {
                    behind.remove(&m.partition());
                }
                if !lookup.is_ready() && read % 10_000 == 0 {
                    lookup.set_status(format!(
                        "loading topic {}: {read} of about {total} records read, {} partition(s) behind",
                        k.topic,
                        behind.len()
                    ));
                }
                check_ready(&behind, read);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                behind.remove(&p);
                lookup.mark_in_step();
                check_ready(&behind, read);
            }
            Some(Err(e)) if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) => {
                last_warning = Some(Instant::now());
                tracing::warn!(lookup = %lookup.name, topic = %k.topic, error = %e, "lookup topic read error (librdkafka retries; the table keeps what it has)");
            }
            Some(Err(_)) => {}
        }
        if last_check.elapsed() >= CHECK_EVERY {
            last_check = Instant::now();
            // A cheap round trip: the broker answers, so the table is as current as the topic.
            if let Some(p) = ends.keys().next() {
                // Short: the poll loop waits for it (and so does a stop).
                if consumer
                    .fetch_watermarks(&k.topic, *p, Duration::from_secs(1))
                    .is_ok()
                {
                    lookup.mark_in_step();
                }
            }
        }
    }
    Ok(())
}
