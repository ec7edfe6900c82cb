//! Where messages that cannot be delivered go, and what they carry.
//!
//! A dead-letter record keeps the original key, bytes and headers, and adds headers that say
//! why: `orceum.reason`, `orceum.reason_kind`, `orceum.route`, `orceum.source` (coordinates),
//! `orceum.status`, `orceum.response` (an excerpt), `orceum.attempts`, `orceum.failed_at`.
//! The source message is committed only after [`DeadLetterSink::write`] returned `Ok`, i.e.
//! after the broker acknowledged the record. Without a destination the record is logged
//! (without its payload unless `log_payloads`) and counted, then committed.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::time::Duration;

/// Header names on a dead-letter record, so `replay` and tools agree with the writer.
pub mod header {
    pub const REASON: &str = "orceum.reason";
    pub const REASON_KIND: &str = "orceum.reason_kind";
    pub const ROUTE: &str = "orceum.route";
    pub const SOURCE: &str = "orceum.source";
    pub const STATUS: &str = "orceum.status";
    pub const RESPONSE: &str = "orceum.response";
    pub const ATTEMPTS: &str = "orceum.attempts";
    pub const FAILED_AT: &str = "orceum.failed_at";
}

/// Everything a dead letter says about one failed message and route.
#[derive(Debug, Clone)]
pub struct DeadLetterRecord {
    pub route: String,
    /// Short label (`not_json`, `invalid_field`, `http_422`, …): metrics and triage.
    pub kind: String,
    pub reason: String,
    /// `kafka:tasks/2@1834`.
    pub coordinates: String,
    pub status: Option<u16>,
    pub response_excerpt: Option<String>,
    pub attempts: u32,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot create the dead-letter producer for source {source_name}: {reason}; check the source's bootstrap_servers and properties")]
    Producer { source_name: String, reason: String },
    #[error("dead-letter write to topic {topic} failed: {reason}")]
    Write { topic: String, reason: String },
}

impl DeadLetterRecord {
    /// The `orceum.*` headers that say why, in the order they are written.
    pub fn describing_headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![
            (header::REASON, self.reason.clone()),
            (header::REASON_KIND, self.kind.clone()),
            (header::ROUTE, self.route.clone()),
            (header::SOURCE, self.coordinates.clone()),
        ];
        if let Some(s) = self.status {
            h.push((header::STATUS, s.to_string()));
        }
        if let Some(r) = &self.response_excerpt {
            h.push((header::RESPONSE, r.clone()));
        }
        h.push((header::ATTEMPTS, self.attempts.to_string()));
        h.push((
            header::FAILED_AT,
            crate::orceum::event::format_timestamp(chrono::Utc::now()),
        ));
        h
    }
}

/// The configured destination.
pub enum DeadLetterSink {
    Kafka {
        producer: FutureProducer,
        topic: String,
    },
    /// A subject captured by a JetStream stream; each write waits for the stream's ack.
    Nats {
        // Boxed: the JetStream context is large next to the other variants.
        jetstream: Box<async_nats::jetstream::Context>,
        subject: String,
    },
    /// No destination: log and count.
    Log { log_payloads: bool },
}

impl DeadLetterSink {
    /// A Kafka producer on the same cluster and with the same client properties (TLS, SASL)
    /// as the source; idempotent, acks from all replicas.
    pub fn kafka(
        source_name: &str,
        bootstrap: &str,
        properties: &[(String, String)],
        topic: &str,
    ) -> Result<Self, DeadLetterError> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", bootstrap)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .set("log_level", "3");
        for (k, v) in properties {
            if is_producer_safe(k) {
                cfg.set(k, v);
            }
        }
        let producer = cfg.create().map_err(|e| DeadLetterError::Producer {
            source_name: source_name.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self::Kafka {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Writes one record and waits for the broker's acknowledgement.
    pub async fn write(&self, rec: &DeadLetterRecord) -> Result<(), DeadLetterError> {
        match self {
            DeadLetterSink::Log { log_payloads } => {
                if *log_payloads {
                    tracing::error!(route = %rec.route, source = %rec.coordinates, kind = %rec.kind, reason = %rec.reason,
                        status = ?rec.status, attempts = rec.attempts, payload = %String::from_utf8_lossy(&rec.payload),
                        "dropped a message that cannot be delivered (no dead-letter destination configured)");
                } else {
                    tracing::error!(route = %rec.route, source = %rec.coordinates, kind = %rec.kind, reason = %rec.reason,
                        status = ?rec.status, attempts = rec.attempts,
                        "dropped a message that cannot be delivered (no dead-letter destination configured)");
                }
                Ok(())
            }
            DeadLetterSink::Nats { jetstream, subject } => {
                let mut headers = async_nats::HeaderMap::new();
                for (k, v) in &rec.headers {
                    if let Some(v) = v {
                        headers.append(k.as_str(), String::from_utf8_lossy(v).as_ref());
                    }
                }
                for (k, v) in rec.describing_headers() {
                    headers.insert(k, v.as_str());
                }
                let write = |reason: String| DeadLetterError::Write {
                    topic: subject.clone(),
                    reason,
                };
                let ack = jetstream
                    .publish_with_headers(subject.clone(), headers, rec.payload.clone().into())
                    .await
                    .map_err(|e| write(e.to_string()))?;
                ack.await.map_err(|e| {
                    write(format!(
                        "{e} (is the subject captured by a JetStream stream?)"
                    ))
                })?;
                Ok(())
            }
            DeadLetterSink::Kafka { producer, topic } => {
                let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len() + 8);
                for (k, v) in &rec.headers {
                    headers = headers.insert(Header {
                        key: k,
                        value: v.as_deref(),
                    });
                }
                for (k, v) in rec.describing_headers() {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(v.as_bytes()),
                    });
                }
                let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
                    .payload(rec.payload.as_slice())
                    .headers(headers);
                if let Some(k) = &rec.key {
                    record = record.key(k.as_slice());
                }
                producer
                    .send(record, Duration::from_secs(10))
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| DeadLetterError::Write {
                        topic: topic.clone(),
                        reason: e.to_string(),
                    })
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            DeadLetterSink::Kafka { topic, .. } => format!("kafka topic {topic}"),
            DeadLetterSink::Nats { subject, .. } => format!("nats subject {subject}"),
            DeadLetterSink::Log { .. } => "log only".into(),
        }
    }
}

/// Consumer-only properties would only make librdkafka warn on a producer.
fn is_producer_safe(key: &str) -> bool {
    !(key.starts_with("group.")
        || key.starts_with("session.")
        || key.starts_with("heartbeat.")
        || key.starts_with("auto.")
        || key.starts_with("fetch.")
        || key.starts_with("queued.")
        || key.starts_with("max.poll")
        || key.starts_with("partition.assignment")
        || key.starts_with("enable.auto")
        || key.starts_with("statistics.")
        || key == "isolation.level"
        || key == "enable.partition.eof")
}
