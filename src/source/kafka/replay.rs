//! `replay`'s reader for a Kafka dead-letter topic: partitions assigned directly (no group
//! membership, nothing committed), read from a start to an end offset and handed on one
//! record at a time (a bounded channel: the reader waits while replay pushes).

use super::{client_config, headers_of};
use crate::config::KafkaSourceConfig;
use crate::dead_letter::Stored;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Reads the dead letters of `topic` in `[start, end]` (offsets; the whole topic by default)
/// into `out`, in order per partition; stops early when `out` is closed. Blocking
/// (librdkafka, and it waits on `out`): run on a thread of its own.
pub fn read(
    name: &str,
    k: &KafkaSourceConfig,
    topic: &str,
    first: Option<i64>,
    last: Option<i64>,
    out: tokio::sync::mpsc::Sender<Stored>,
) -> Result<(), String> {
    let mut config = client_config::reader(name, k).map_err(|e| e.to_string())?;
    // What librdkafka prefetches is held too: a few MiB, not its 64 MiB default.
    config.set("queued.max.messages.kbytes", "4096");
    let consumer: BaseConsumer = config.create().map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| format!("topic {topic}: {e}"))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!("topic {topic} does not exist"));
    }
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .map_err(|e| format!("{topic}/{p}: {e}"))?;
        let start = first.unwrap_or(low).max(low);
        let end = last.map(|e| e + 1).unwrap_or(high).min(high);
        if start < end || last.is_none() {
            let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(start));
            ends.insert(*p, end);
        }
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    // Gives up after 5 minutes without a record (time spent waiting for replay to take one
    // does not count).
    const IDLE_LIMIT: Duration = Duration::from_secs(300);
    let mut last_seen = Instant::now();
    // Read until every partition reached its end, or the topic has been quiet for 2 s: some
    // Kafka-protocol brokers report a stale high watermark for batched writes, so without
    // --end the watermark seen at start is not trusted as the end.
    while last_seen.elapsed() < IDLE_LIMIT {
        let quiet = last_seen.elapsed() > Duration::from_secs(2);
        if quiet && (last.is_none() || ends.is_empty()) {
            break;
        }
        if last.is_some() && ends.is_empty() {
            break;
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_seen = Instant::now();
                if last.is_some_and(|e| m.offset() > e) {
                    ends.remove(&m.partition());
                    continue;
                }
                let stored = Stored {
                    at: format!("{topic}/{}@{}", m.partition(), m.offset()),
                    payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                    key: m.key().map(<[u8]>::to_vec),
                    headers: headers_of(&m),
                };
                if out.blocking_send(stored).is_err() {
                    return Ok(()); // replay stopped reading
                }
                last_seen = Instant::now();
                if ends
                    .get(&m.partition())
                    .is_some_and(|end| m.offset() + 1 >= *end)
                {
                    ends.remove(&m.partition());
                }
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => {}
        }
    }
    Ok(())
}
