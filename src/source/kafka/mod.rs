//! Everything Kafka, in one folder: the consumer-group member that commits only what is final
//! ([`consumer`]), the partition book and its pure flow-control decision ([`book`]), the one
//! librdkafka settings builder ([`client_config`]), the dead-letter writer, the
//! `check --connect` probe and the replay reader.

pub mod book;
pub mod client_config;
pub mod consumer;
pub mod dead_letter;
pub mod probe;
pub mod replay;

pub use book::Limits;
pub use consumer::KafkaSource;
pub use dead_letter::KafkaDeadLetters;

use crate::config::{ConfigError, KafkaSourceConfig, RouteConfig};
use rdkafka::message::{BorrowedHeaders, Headers, OwnedHeaders};

/// Why the Kafka source could not start.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("sources.{source_name}.kafka: cannot create the consumer: {reason}; check bootstrap_servers and properties")]
    Create { source_name: String, reason: String },
    #[error("sources.{source_name}.kafka: cannot subscribe to {topics:?}: {reason}")]
    Subscribe {
        source_name: String,
        topics: Vec<String>,
        reason: String,
    },
    #[error("sources.{source_name}.kafka.properties.{key}: {reason}")]
    Property {
        source_name: String,
        key: String,
        reason: String,
    },
}

/// The header list of a borrowed (consumed) or owned (detached) message.
pub trait HeaderList {
    fn borrowed(&self) -> &BorrowedHeaders;
}

impl HeaderList for BorrowedHeaders {
    fn borrowed(&self) -> &BorrowedHeaders {
        self
    }
}

impl HeaderList for OwnedHeaders {
    fn borrowed(&self) -> &BorrowedHeaders {
        self.as_borrowed()
    }
}

/// A Kafka message's headers as owned `(name, value)` pairs. Names that are not UTF-8 (any
/// producer can write them) are converted lossily: rdkafka's own accessor panics on them.
pub fn headers_of<M>(m: &M) -> Vec<(String, Option<Vec<u8>>)>
where
    M: rdkafka::message::Message,
    M::Headers: HeaderList,
{
    use rdkafka::bindings as rd;
    let Some(hs) = m.headers().map(HeaderList::borrowed) else {
        return Vec::new();
    };
    // `BorrowedHeaders` is a zero-sized view whose address is librdkafka's header list (that
    // is how rdkafka itself reaches it).
    let native = hs as *const BorrowedHeaders as *const rd::rd_kafka_headers_t;
    (0..hs.count())
        .filter_map(|idx| {
            let mut name = std::ptr::null();
            let mut value = std::ptr::null();
            let mut size = 0;
            // SAFETY: `native` is the message's live header list (borrowed with `m`); librdkafka
            // fills the pointers with a NUL-terminated name and a `size`-byte value (or NULL)
            // that live as long as the list, and the bytes are copied before `m` is released.
            unsafe {
                let err =
                    rd::rd_kafka_header_get_all(native, idx, &mut name, &mut value, &mut size);
                if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                    return None;
                }
                let name = std::ffi::CStr::from_ptr(name)
                    .to_string_lossy()
                    .into_owned();
                let value = (!value.is_null())
                    .then(|| std::slice::from_raw_parts(value.cast::<u8>(), size).to_vec());
                Some((name, value))
            }
        })
        .collect()
}

/// `check` for a `sources.<name>.kafka` entry: brokers, group, properties.
pub fn check_config(name: &str, k: &KafkaSourceConfig, errors: &mut Vec<ConfigError>) {
    if k.bootstrap_servers.trim().is_empty() {
        errors.push(ConfigError::new(
            format!("sources.{name}.kafka.bootstrap_servers"),
            "must name at least one broker (host:port)",
        ));
    }
    if k.group_id.trim().is_empty() {
        errors.push(ConfigError::new(
            format!("sources.{name}.kafka.group_id"),
            "must not be empty",
        ));
    }
    client_config::check(name, k, errors);
}

/// `check` for a route on a Kafka source: it names topics, not subjects.
pub fn check_route(path: &str, r: &RouteConfig, errors: &mut Vec<ConfigError>) {
    if r.subjects.is_some() || r.jetstream.is_some() {
        errors.push(ConfigError::new(
            format!("{path}.source"),
            "a kafka source takes `topics`, not `subjects`/`jetstream`",
        ));
    }
    match &r.topics {
        Some(t) if !t.is_empty() && t.iter().all(|t| !t.trim().is_empty()) => {}
        _ => errors.push(ConfigError::new(
            format!("{path}.topics"),
            "a kafka route needs a non-empty list of topics, e.g. topics: [tasks]",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::headers_of;
    use rdkafka::bindings as rd;
    use rdkafka::message::{BorrowedHeaders, OwnedHeaders, OwnedMessage, Timestamp};

    #[test]
    fn header_names_that_are_not_utf8_are_read_lossily_instead_of_panicking() {
        let headers = OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "plain",
            value: Some(b"v1".as_slice()),
        });
        // rdkafka's API takes names as &str; another client can write any bytes, so add one
        // through librdkafka directly.
        let name = [0xffu8, 0xfe, b'x'];
        let value = [0u8, b'\r', b'\n', 0x80];
        let native = headers.as_borrowed() as *const BorrowedHeaders as *mut rd::rd_kafka_headers_t;
        // SAFETY: `native` is `headers`' list, alive for this call; librdkafka copies both
        // buffers, whose sizes are given.
        let err = unsafe {
            rd::rd_kafka_header_add(
                native,
                name.as_ptr().cast(),
                name.len() as isize,
                value.as_ptr().cast(),
                value.len() as isize,
            )
        };
        assert_eq!(err, rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
        let m = OwnedMessage::new(
            Some(b"{}".to_vec()),
            None,
            "orders".into(),
            Timestamp::NotAvailable,
            0,
            7,
            Some(headers),
        );
        assert_eq!(
            headers_of(&m),
            vec![
                ("plain".to_string(), Some(b"v1".to_vec())),
                ("\u{fffd}\u{fffd}x".to_string(), Some(value.to_vec())),
            ]
        );
    }
}
