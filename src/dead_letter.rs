//! What a dead letter is, wherever it is written: the record, its `orceum.*` headers, and the
//! [`DeadLetterWriter`] every destination implements (each bus's writer lives in its folder
//! under `source/`; [`LogOnly`] is the no-destination case).
//!
//! A dead-letter record keeps the original key, bytes and headers, and adds headers that say
//! why: `orceum.reason`, `orceum.reason_kind`, `orceum.route`, `orceum.source` (coordinates),
//! `orceum.status`, `orceum.response` (an excerpt), `orceum.attempts`, `orceum.failed_at`.
//! The source message is committed only after [`DeadLetterWriter::write`] returned `Ok`, i.e.
//! after the broker acknowledged the record. Without a destination the record is logged
//! (without its payload unless `log_payloads`) and counted, then committed.

use futures::future::BoxFuture;

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

/// Why a dead letter could not be written (the write is retried).
#[derive(Debug, thiserror::Error)]
#[error("dead-letter write to {destination} failed: {reason}")]
pub struct DeadLetterError {
    pub destination: String,
    pub reason: String,
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

/// A dead-letter destination.
pub trait DeadLetterWriter: Send + Sync + 'static {
    /// Writes one record and resolves once the destination acknowledged it.
    fn write<'a>(&'a self, rec: &'a DeadLetterRecord)
        -> BoxFuture<'a, Result<(), DeadLetterError>>;
    /// `kafka topic orceum-dead-letter`, for logs.
    fn describe(&self) -> String;
    /// True when `write` is the log line itself (no destination configured).
    fn is_log_only(&self) -> bool {
        false
    }
}

/// No destination: log (without the payload unless `log_payloads`) and count.
pub struct LogOnly {
    pub log_payloads: bool,
}

impl DeadLetterWriter for LogOnly {
    fn write<'a>(
        &'a self,
        rec: &'a DeadLetterRecord,
    ) -> BoxFuture<'a, Result<(), DeadLetterError>> {
        let log_payloads = &self.log_payloads;
        if *log_payloads {
            tracing::error!(route = %rec.route, source = %rec.coordinates, kind = %rec.kind, reason = %rec.reason,
                        status = ?rec.status, attempts = rec.attempts, payload = %String::from_utf8_lossy(&rec.payload),
                        "dropped a message that cannot be delivered (no dead-letter destination configured)");
        } else {
            tracing::error!(route = %rec.route, source = %rec.coordinates, kind = %rec.kind, reason = %rec.reason,
                        status = ?rec.status, attempts = rec.attempts,
                        "dropped a message that cannot be delivered (no dead-letter destination configured)");
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn describe(&self) -> String {
        "log only".into()
    }

    fn is_log_only(&self) -> bool {
        true
    }
}

/// A dead letter as read back from its destination (`replay`).
#[derive(Debug, Clone)]
pub struct Stored {
    /// Where it was read: `orceum-dead-letter/0@12`, `DLQ@5`.
    pub at: String,
    pub payload: Vec<u8>,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}
