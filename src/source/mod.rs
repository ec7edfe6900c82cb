//! Sources turn a bus into [`Message`]s, each paired with an [`AckHandle`].
//!
//! The engine never knows which bus a message came from: it reads the message, decides its
//! outcome, and calls [`AckHandle::finish`] once that outcome is final. A handle dropped without
//! `finish` means "not done" — the Kafka source never commits past it, JetStream naks it.
//! Adding a bus is adding a file here.

pub mod kafka;
pub mod nats;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use std::sync::Arc;

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

impl Origin {
    /// `kafka:tasks/2@1834`: the `source` key of every event's metadata.
    pub fn coordinates(&self) -> String {
        match self {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => format!("kafka:{topic}/{partition}@{offset}"),
            Origin::Nats { subject, .. } => format!("nats:{subject}"),
            Origin::JetStream {
                stream, sequence, ..
            } => format!("jetstream:{stream}@{sequence}"),
        }
    }

    /// The topic, subscription pattern or stream: routing (Kafka) and a bounded metric label.
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
}

impl Drop for AckHandle {
    fn drop(&mut self) {
        if let Some(ack) = self.0.take() {
            ack.abandon();
        }
    }
}
