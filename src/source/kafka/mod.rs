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
use rdkafka::message::Headers;

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

/// A Kafka message's headers as owned `(name, value)` pairs.
pub fn headers_of(m: &impl rdkafka::message::Message) -> Vec<(String, Option<Vec<u8>>)> {
    m.headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
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
