//! The neutral ground every stage shares: a [`Message`] read from a bus, where it came from
//! ([`Origin`]), how its outcome is reported back ([`AckHandle`], [`Final`]), and the one call a
//! source makes into the engine ([`Submit`]).
//!
//! Sources produce these, `route` reads them, `dispatch` finishes them; none of those stages
//! imports another to do so. A source knows only [`Submit`]: it can be driven by the real
//! dispatcher or by a test double that records what it was given.
//!
//! Guarantee: an [`AckHandle`] is finished at most once, and one dropped without
//! [`AckHandle::finish`] means "not done": the Kafka source never commits past it, JetStream
//! naks it.

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Where a message came from: enough to trace it and to commit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Kafka {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
    /// Core NATS: no sequence, no redelivery. `pattern` is the subscription (a bounded label).
    Nats { subject: String, pattern: Arc<str> },
    JetStream {
        stream: Arc<str>,
        subject: String,
        sequence: u64,
    },
}

/// The coordinates (`kafka:topic/partition@offset`, `jetstream:stream@sequence`,
/// `nats:subject`), written where they are needed (a log field) without a `String` first.
impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => write!(f, "kafka:{topic}/{partition}@{offset}"),
            Origin::Nats { subject, .. } => write!(f, "nats:{subject}"),
            Origin::JetStream {
                stream, sequence, ..
            } => write!(f, "jetstream:{stream}@{sequence}"),
        }
    }
}

impl Origin {
    /// `kafka:tasks/2@1834`: the `source` key of every event's metadata.
    pub fn coordinates(&self) -> String {
        self.to_string()
    }

    /// The topic, subscription pattern or stream: routing (Kafka) and a bounded metric label.
    /// The `topic`, `subject` and `stream` labels of `messages_received_total`: the one that
    /// applies to this bus set, the others empty.
    pub fn labels(&self) -> [&str; 3] {
        match self {
            Origin::Kafka { topic, .. } => [topic, "", ""],
            Origin::Nats { pattern, .. } => ["", pattern, ""],
            Origin::JetStream { stream, .. } => ["", "", stream],
        }
    }

    pub fn channel(&self) -> &str {
        match self {
            Origin::Kafka { topic, .. } => topic,
            Origin::Nats { pattern, .. } => pattern,
            Origin::JetStream { stream, .. } => stream,
        }
    }
}

/// One message read from a bus. Owns its bytes; the engine drops it once its outcome is final.
#[derive(Debug, Clone)]
pub struct Message {
    /// The name of the `sources:` entry it was read from.
    pub source: Arc<str>,
    pub origin: Origin,
    /// The route whose subscription received it (NATS subscribes per route); `None`: every
    /// route reading the message's topic (Kafka).
    pub route: Option<Arc<str>>,
    pub payload: Vec<u8>,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: Option<DateTime<Utc>>,
}

impl Message {
    /// `$meta` for templates: the message's coordinates, key, headers and timestamp.
    pub fn meta(&self) -> Value {
        let key = self
            .key
            .as_ref()
            .map(|k| Value::String(String::from_utf8_lossy(k).into_owned()))
            .unwrap_or(Value::Null);
        let mut headers = Map::new();
        for (name, value) in &self.headers {
            let v = value
                .as_ref()
                .map(|v| Value::String(String::from_utf8_lossy(v).into_owned()))
                .unwrap_or(Value::Null);
            headers.insert(name.clone(), v);
        }
        let timestamp = self
            .timestamp
            .map(|t| Value::String(crate::orceum::event::format_timestamp(t)))
            .unwrap_or(Value::Null);
        match &self.origin {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => json!({
                "source": &*self.source,
                "topic": &**topic,
                "partition": partition,
                "offset": offset,
                "key": key,
                "headers": headers,
                "timestamp": timestamp,
            }),
            Origin::Nats { subject, .. } => json!({
                "source": &*self.source,
                "subject": subject,
                "headers": headers,
                "timestamp": timestamp,
            }),
            Origin::JetStream {
                stream,
                subject,
                sequence,
            } => json!({
                "source": &*self.source,
                "subject": subject,
                "stream": &**stream,
                "sequence": sequence,
                "headers": headers,
                "timestamp": timestamp,
            }),
        }
    }
}

/// How a message's outcome became final; a source may act on it (JetStream terms dead letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    Delivered,
    DeadLettered,
    Skipped,
}

/// What a bus does when a message is finished, or given up unfinished.
pub trait Acknowledge: Send + 'static {
    /// The outcome is final: the message may be committed / acked.
    fn finish(self: Box<Self>, outcome: Final);
    /// The message will not be finished by this process (shutdown, revoke).
    fn abandon(self: Box<Self>) {}
    /// The message is still being worked on (long retries); keeps redelivery away.
    fn in_progress(&self) {}
    /// A token cancelled once this process will no longer finish the message (its Kafka
    /// partition was revoked, or the bridge is abandoning work): whoever holds it stops then.
    /// `None`: only the bridge-wide abandon applies.
    fn stop_token(&self) -> Option<CancellationToken> {
        None
    }
    /// A counter of this message's pushes under way, where the bus must wait for them before
    /// it hands the message over (a revoked Kafka partition: a push that lands after the
    /// hand-over would be pushed again by the next owner). `None`: nobody waits.
    fn pushes(&self) -> Option<Arc<AtomicUsize>> {
        None
    }
}

/// The engine's handle on one message's acknowledgement. Dropping it unfinished abandons it.
pub struct AckHandle(Option<Box<dyn Acknowledge>>);

impl AckHandle {
    pub fn new(ack: impl Acknowledge) -> Self {
        Self(Some(Box::new(ack)))
    }

    /// A handle that does nothing (render, tests).
    pub fn noop() -> Self {
        Self(None)
    }

    pub fn finish(mut self, outcome: Final) {
        if let Some(ack) = self.0.take() {
            ack.finish(outcome);
        }
    }

    pub fn in_progress(&self) {
        if let Some(ack) = &self.0 {
            ack.in_progress();
        }
    }

    /// See [`Acknowledge::stop_token`].
    pub fn stop_token(&self) -> Option<CancellationToken> {
        self.0.as_ref().and_then(|a| a.stop_token())
    }

    /// See [`Acknowledge::pushes`].
    pub fn pushes(&self) -> Option<Arc<AtomicUsize>> {
        self.0.as_ref().and_then(|a| a.pushes())
    }
}

impl Drop for AckHandle {
    fn drop(&mut self) {
        if let Some(ack) = self.0.take() {
            ack.abandon();
        }
    }
}

impl Origin {
    /// Rebuilds coordinates from their text (`kafka:t/2@18`, `jetstream:S@5`, `nats:subj`), as
    /// a dead letter's `orceum.source` header carries them; the inverse of [`Origin::coordinates`].
    pub fn parse(c: &str) -> Option<Origin> {
        if let Some(rest) = c.strip_prefix("kafka:") {
            let (tp, offset) = rest.rsplit_once('@')?;
            let (topic, partition) = tp.rsplit_once('/')?;
            return Some(Origin::Kafka {
                topic: Arc::from(topic),
                partition: partition.parse().ok()?,
                offset: offset.parse().ok()?,
            });
        }
        if let Some(rest) = c.strip_prefix("jetstream:") {
            let (stream, seq) = rest.rsplit_once('@')?;
            return Some(Origin::JetStream {
                stream: Arc::from(stream),
                subject: String::new(),
                sequence: seq.parse().ok()?,
            });
        }
        let subject = c.strip_prefix("nats:")?;
        Some(Origin::Nats {
            subject: subject.to_string(),
            pattern: Arc::from(subject),
        })
    }
}

/// What [`Submit::submit`] did with a message.
pub enum Admission {
    /// Taken: the engine holds it now and will finish (or abandon) its acknowledgement.
    Accepted,
    /// An app this message goes to holds all it may: the message comes back untouched, to be
    /// submitted again (in order, before anything after it from the same partition) once
    /// that app has room. `app` names it, for the metric and the log line.
    Full {
        msg: Message,
        ack: AckHandle,
        app: Arc<str>,
    },
}

/// What a source hands every message to, in source order: the engine (`dispatch`), or a test
/// double. `submit` never blocks; the source's own bounds (and [`Admission::Full`]) keep the
/// work it starts bounded.
pub trait Submit: Send + Sync + 'static {
    fn submit(&self, msg: Message, ack: AckHandle) -> Admission;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_round_trip() {
        for c in [
            "kafka:tasks/2@1834",
            "jetstream:TASKS@5521",
            "nats:orders.created",
        ] {
            assert_eq!(Origin::parse(c).unwrap().coordinates(), c);
        }
        assert_eq!(
            Origin::parse("kafka:a/b/3@7").unwrap().coordinates(),
            "kafka:a/b/3@7"
        );
        assert!(Origin::parse("other").is_none());
    }
}
