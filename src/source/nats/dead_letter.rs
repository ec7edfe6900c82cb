//! Dead letters to a NATS subject captured by a JetStream stream: each write waits for the
//! stream's ack, so the source message is only final once the record is stored.
//!
//! NATS headers are a text protocol: a name is visible ASCII without `:`, a value has no CR or
//! LF. Headers come from outside (a Kafka record's, an HTML 4xx body in `orceum.response`),
//! and async-nats panics on an invalid one, so every name and value is made safe first.

use crate::dead_letter::{header, DeadLetterError, DeadLetterRecord, DeadLetterWriter};
use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use async_nats::jetstream::context::PublishErrorKind;
use futures::future::BoxFuture;
use std::str::FromStr;

pub struct NatsDeadLetters {
    jetstream: async_nats::jetstream::Context,
    subject: String,
}

impl NatsDeadLetters {
    pub fn new(client: async_nats::Client, subject: &str) -> Self {
        Self {
            jetstream: async_nats::jetstream::new(client),
            subject: subject.to_string(),
        }
    }
}

impl DeadLetterWriter for NatsDeadLetters {
    fn write<'a>(
        &'a self,
        rec: &'a DeadLetterRecord,
    ) -> BoxFuture<'a, Result<(), DeadLetterError>> {
        Box::pin(async move {
            let headers = nats_headers(rec);
            let write = |reason: String, too_large: bool| DeadLetterError {
                destination: self.describe(),
                reason,
                too_large,
            };
            let ack = self
                .jetstream
                .publish_with_headers(self.subject.clone(), headers, rec.payload.clone().into())
                .await
                .map_err(|e| {
                    let too_large = matches!(e.kind(), PublishErrorKind::MaxPayloadExceeded);
                    write(e.to_string(), too_large)
                })?;
            ack.await.map_err(|e| {
                write(
                    format!("{e} (is the subject captured by a JetStream stream?)"),
                    false,
                )
            })?;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        format!("nats subject {}", self.subject)
    }
}

/// A header name NATS accepts: visible ASCII except `:`, anything else as `_`.
fn safe_name(raw: &str) -> String {
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "_".into()
    } else {
        name
    }
}

/// A header value NATS accepts: CR and LF (and other controls) as spaces.
fn safe_value(raw: &str) -> String {
    raw.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The record's original headers and its `orceum.*` ones, every name and value made safe;
/// one that still does not parse is left out rather than allowed to panic.
pub fn nats_headers(rec: &DeadLetterRecord) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut add = |name: &str, value: &str, replace: bool| {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_str(&safe_name(name)),
            HeaderValue::from_str(&safe_value(value)),
        ) {
            if replace {
                headers.insert(n, v);
            } else {
                headers.append(n, v);
            }
        }
    };
    for (k, v) in &rec.headers {
        // `orceum.*` names are this writer's to set: a source message's own (a forged
        // `orceum.key`, say) would be read back by replay as ours.
        if k.starts_with("orceum.") {
            continue;
        }
        if let Some(v) = v {
            add(k, &String::from_utf8_lossy(v), false);
        }
    }
    for (k, v) in rec.describing_headers() {
        add(k, &v, true);
    }
    // A subject has no key: the Kafka record's key travels as a header.
    if let Some(key) = &rec.key {
        let (value, encoding) = crate::dead_letter::key_header(key);
        add(header::KEY, &value, true);
        if let Some(encoding) = encoding {
            add(header::KEY_ENCODING, encoding, true);
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(headers: Vec<(String, Option<Vec<u8>>)>, excerpt: String) -> DeadLetterRecord {
        DeadLetterRecord {
            route: "r".into(),
            kind: "http_400".into(),
            reason: "Orceum answered 400".into(),
            coordinates: "kafka:t/0@1".into(),
            status: Some(400),
            response_excerpt: Some(excerpt),
            attempts: 1,
            key: None,
            payload: b"{}".to_vec(),
            headers,
            truncated: None,
        }
    }

    #[test]
    fn an_html_error_body_and_a_header_with_a_newline_become_safe_headers() {
        let rec = record(
            vec![("x-trace\r\nInjected: 1".into(), Some(b"a\r\nb".to_vec()))],
            "<html>\r\n<body>Bad Request</body>\r\n</html>".into(),
        );
        let h = nats_headers(&rec);
        assert_eq!(
            h.get("orceum.response")
                .map(|v| v.as_str().to_string())
                .as_deref(),
            Some("<html>  <body>Bad Request</body>  </html>")
        );
        assert_eq!(
            h.get("x-trace__Injected__1").map(|v| v.as_str()),
            Some("a  b")
        );
        assert_eq!(
            h.get("orceum.source").map(|v| v.as_str()),
            Some("kafka:t/0@1")
        );
    }

    #[test]
    fn a_kafka_key_travels_as_a_header_text_or_base64() {
        let mut rec = record(vec![], String::new());
        rec.key = Some(b"user-42".to_vec());
        let h = nats_headers(&rec);
        assert_eq!(h.get(header::KEY).map(|v| v.as_str()), Some("user-42"));
        assert!(h.get(header::KEY_ENCODING).is_none());
        rec.key = Some(vec![0, 159, 146, 150, b'\n']);
        let h = nats_headers(&rec);
        let (value, encoding) = (
            h.get(header::KEY).map(|v| v.as_str().to_string()),
            h.get(header::KEY_ENCODING).map(|v| v.as_str().to_string()),
        );
        assert_eq!(encoding.as_deref(), Some("base64"));
        assert_eq!(
            crate::dead_letter::key_from_headers(
                value.as_deref().map(str::as_bytes),
                encoding.as_deref().map(str::as_bytes)
            ),
            rec.key,
            "replay reads back the same bytes"
        );
        rec.key = None;
        rec.headers = vec![("orceum.key".into(), Some(b"forged".to_vec()))];
        assert!(
            nats_headers(&rec).get(header::KEY).is_none(),
            "a source message's own orceum.* header is not passed through"
        );
    }

    proptest! {
        #[test]
        fn arbitrary_header_bytes_and_answer_bodies_never_panic(
            headers in prop::collection::vec(
                (prop::collection::vec(any::<u8>(), 0..40), prop::option::of(prop::collection::vec(any::<u8>(), 0..80))),
                0..8,
            ),
            body in prop::collection::vec(any::<u8>(), 0..600),
        ) {
            let headers = headers
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
                .collect();
            let rec = record(headers, String::from_utf8_lossy(&body).into_owned());
            let h = nats_headers(&rec);
            // The coordinates always make it, whatever came with them.
            prop_assert_eq!(h.get("orceum.source").map(|v| v.as_str().to_string()), Some("kafka:t/0@1".to_string()));
        }
    }
}
