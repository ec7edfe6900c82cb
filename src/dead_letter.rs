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
    /// `true` on the bounded form of a record its destination could not take whole.
    pub const TRUNCATED: &str = "orceum.truncated";
    /// Lowercase hex SHA-256 of the whole original payload (bounded records).
    pub const PAYLOAD_SHA256: &str = "orceum.payload_sha256";
    /// The whole original payload's length in bytes (bounded records).
    pub const PAYLOAD_BYTES: &str = "orceum.payload_bytes";
    /// The original Kafka key, where the destination has no key of its own (a NATS subject):
    /// the key as text, or base64 (standard, padded) when `KEY_ENCODING` says `base64`.
    pub const KEY: &str = "orceum.key";
    /// `base64` when [`KEY`]'s bytes are not text a header can carry as they are.
    pub const KEY_ENCODING: &str = "orceum.key_encoding";
}

/// A key as a header value: `(value, None)` for UTF-8 without control characters, else
/// `(base64, Some("base64"))`.
pub fn key_header(key: &[u8]) -> (String, Option<&'static str>) {
    use base64::Engine;
    match std::str::from_utf8(key) {
        Ok(text) if !text.chars().any(char::is_control) => (text.to_string(), None),
        _ => (
            base64::engine::general_purpose::STANDARD.encode(key),
            Some("base64"),
        ),
    }
}

/// The key that [`key_header`] wrote, from the two headers' values; `None` when there is none
/// or it does not decode.
pub fn key_from_headers(value: Option<&[u8]>, encoding: Option<&[u8]>) -> Option<Vec<u8>> {
    use base64::Engine;
    let value = value?;
    match encoding {
        Some(b"base64") => base64::engine::general_purpose::STANDARD.decode(value).ok(),
        Some(_) => None,
        None => Some(value.to_vec()),
    }
}

/// What a bounded record keeps of the original: the payload's first bytes, and so many
/// headers of so many bytes each. Small enough for any broker's smallest message limit.
pub const BOUNDED_PAYLOAD_BYTES: usize = 4096;
const BOUNDED_HEADERS: usize = 32;
const BOUNDED_HEADER_BYTES: usize = 256;
const BOUNDED_TEXT_BYTES: usize = 512;

/// The dead-letter kinds a route can produce whatever it reads (Orceum's documented rejections
/// included), for the metrics exported at 0 from start. Other `http_4xx` kinds appear when met.
pub const KINDS: [&str; 12] = [
    "not_json",
    "not_utf8",
    "too_large",
    "invalid_field",
    "template_error",
    "template_budget",
    "retries_exhausted",
    "not_cloudevent",
    crate::route::LOOKUP_MISS,
    "http_400",
    "http_404",
    "http_422",
];

/// The whole payload's fingerprint on a bounded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncated {
    pub sha256: String,
    pub bytes: usize,
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
    /// Set on the bounded form ([`DeadLetterRecord::bounded`]).
    pub truncated: Option<Truncated>,
}

/// Why a dead letter could not be written (the write is retried).
#[derive(Debug, thiserror::Error)]
#[error("dead-letter write to {destination} failed: {reason}")]
pub struct DeadLetterError {
    pub destination: String,
    pub reason: String,
    /// The destination cannot take a record this large (Kafka `message.max.bytes`, NATS
    /// `max_payload`): retrying the same record can never succeed.
    pub too_large: bool,
}

impl DeadLetterRecord {
    /// The trace id of the message's W3C `traceparent` header, when it has one.
    pub fn trace_id(&self) -> Option<&str> {
        let (_, value) = self
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("traceparent"))?;
        crate::message::trace_id_of(std::str::from_utf8(value.as_deref()?).ok()?)
    }

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
        if let Some(t) = &self.truncated {
            h.push((header::TRUNCATED, "true".into()));
            h.push((header::PAYLOAD_SHA256, t.sha256.clone()));
            h.push((header::PAYLOAD_BYTES, t.bytes.to_string()));
        }
        h.push((
            header::FAILED_AT,
            crate::orceum::event::format_timestamp(chrono::Utc::now()),
        ));
        h
    }
}

impl DeadLetterRecord {
    /// The bounded form of this record, for a destination that cannot take it whole: the same
    /// coordinates, route and reason, the payload's first [`BOUNDED_PAYLOAD_BYTES`] with the
    /// whole payload's SHA-256 and length, and the first headers, each cut short.
    pub fn bounded(&self) -> DeadLetterRecord {
        use sha2::Digest;
        let cut = |b: &[u8], n: usize| b[..b.len().min(n)].to_vec();
        let cut_text = |t: &str, n: usize| {
            let mut end = t.len().min(n);
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            t[..end].to_string()
        };
        DeadLetterRecord {
            route: self.route.clone(),
            kind: self.kind.clone(),
            reason: cut_text(&self.reason, BOUNDED_TEXT_BYTES),
            coordinates: self.coordinates.clone(),
            status: self.status,
            response_excerpt: self
                .response_excerpt
                .as_deref()
                .map(|r| cut_text(r, BOUNDED_HEADER_BYTES)),
            attempts: self.attempts,
            key: self.key.as_deref().map(|k| cut(k, BOUNDED_HEADER_BYTES)),
            payload: cut(&self.payload, BOUNDED_PAYLOAD_BYTES),
            headers: self
                .headers
                .iter()
                .take(BOUNDED_HEADERS)
                .map(|(k, v)| {
                    (
                        cut_text(k, BOUNDED_HEADER_BYTES),
                        v.as_deref().map(|v| cut(v, BOUNDED_HEADER_BYTES)),
                    )
                })
                .collect(),
            truncated: Some(Truncated {
                sha256: hex::encode(sha2::Sha256::digest(&self.payload)),
                bytes: self.payload.len(),
            }),
        }
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
            tracing::error!(route = %rec.route, coordinates = %rec.coordinates, kind = %rec.kind, reason = %rec.reason,
                        http_status = rec.status, attempts = rec.attempts, payload = %String::from_utf8_lossy(&rec.payload),
                        "dropped a message that cannot be delivered (no dead-letter destination configured)");
        } else {
            tracing::error!(route = %rec.route, coordinates = %rec.coordinates, kind = %rec.kind, reason = %rec.reason,
                        http_status = rec.status, attempts = rec.attempts,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bounded_form_keeps_the_coordinates_and_fingerprints_the_payload() {
        let rec = DeadLetterRecord {
            route: "r".into(),
            kind: "not_json".into(),
            reason: "é".repeat(1000),
            coordinates: "kafka:t/0@7".into(),
            status: None,
            response_excerpt: None,
            attempts: 0,
            key: Some(b"k".to_vec()),
            payload: vec![b'x'; 100_000],
            headers: (0..100)
                .map(|i| (format!("h{i}"), Some(vec![b'v'; 1000])))
                .collect(),
            truncated: None,
        };
        let b = rec.bounded();
        assert_eq!(b.payload.len(), BOUNDED_PAYLOAD_BYTES);
        assert_eq!(b.headers.len(), BOUNDED_HEADERS);
        assert!(b
            .headers
            .iter()
            .all(|(_, v)| v.as_ref().unwrap().len() == BOUNDED_HEADER_BYTES));
        assert!(b.reason.len() <= BOUNDED_TEXT_BYTES);
        assert_eq!(b.coordinates, "kafka:t/0@7");
        let h = b.describing_headers();
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        assert_eq!(get(header::TRUNCATED).as_deref(), Some("true"));
        assert_eq!(get(header::PAYLOAD_BYTES).as_deref(), Some("100000"));
        assert_eq!(get(header::PAYLOAD_SHA256).map(|s| s.len()), Some(64));
        assert_eq!(get(header::SOURCE).as_deref(), Some("kafka:t/0@7"));
    }
}
