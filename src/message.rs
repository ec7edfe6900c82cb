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

    /// The first value of header `name` (case-insensitive), if it is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The W3C trace context the message carries (`traceparent`, and `tracestate` with it),
    /// when its `traceparent` is well formed.
    pub fn trace_context(&self) -> Option<TraceContext<'_>> {
        let traceparent = self.header("traceparent")?.trim();
        if !is_traceparent(traceparent) {
            return None;
        }
        let tracestate = self.header("tracestate").map(str::trim).filter(|s| {
            !s.is_empty() && s.len() <= 512 && s.bytes().all(|b| (0x20..0x7f).contains(&b))
        });
        Some(TraceContext {
            traceparent,
            tracestate,
        })
    }
}

/// A message's W3C trace context (<https://www.w3.org/TR/trace-context/>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext<'a> {
    /// `00-<trace id, 32 hex>-<parent id, 16 hex>-<flags, 2 hex>`.
    pub traceparent: &'a str,
    pub tracestate: Option<&'a str>,
}

impl TraceContext<'_> {
    /// The trace id, for log lines.
    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }
}

/// The trace id of a well-formed `traceparent` value (`None` for anything else).
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let tp = traceparent.trim();
    is_traceparent(tp).then(|| &tp[3..35])
}

/// `version-traceid-parentid-flags` in lowercase hex, neither id all zeros, version not `ff`
/// (a later version may add fields after the flags).
fn is_traceparent(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let hex = |p: &str, n: usize| {
        p.len() == n && p.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    match parts.as_slice() {
        [version, trace, parent, flags, rest @ ..] => {
            hex(version, 2)
                && *version != "ff"
                && (rest.is_empty() || *version != "00")
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0')
                && parent.bytes().any(|b| b != b'0')
        }
        _ => false,
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

    fn with_headers(headers: &[(&str, &str)]) -> Message {
        Message {
            source: Arc::from("s"),
            origin: Origin::Nats {
                subject: "x".into(),
                pattern: Arc::from("x"),
            },
            route: None,
            payload: Vec::new(),
            key: None,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), Some(v.as_bytes().to_vec())))
                .collect(),
            timestamp: None,
        }
    }

    #[test]
    fn a_well_formed_traceparent_is_the_trace_context_and_anything_else_is_none() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let m = with_headers(&[("Traceparent", tp), ("tracestate", "rojo=00f067aa0ba902b7")]);
        let t = m.trace_context().unwrap();
        assert_eq!(t.traceparent, tp);
        assert_eq!(t.tracestate, Some("rojo=00f067aa0ba902b7"));
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage\r\ninjected: 1",
        ] {
            assert!(
                with_headers(&[("traceparent", bad)])
                    .trace_context()
                    .is_none(),
                "{bad}"
            );
        }
        assert!(
            with_headers(&[(
                "traceparent",
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later"
            )])
            .trace_context()
            .is_some(),
            "a later version may add fields"
        );
    }
}
