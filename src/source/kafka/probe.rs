//! `check --connect` for a Kafka source: the brokers answer, and the topics the config names
//! exist. Read-only: nothing is created.

use super::client_config;
use crate::config::{ConfigError, KafkaSourceConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::HashSet;
use std::time::Duration;

/// Checks that every `(config path, topic)` in `topics` exists. Blocking (librdkafka): call
/// from `spawn_blocking`.
pub fn topics_exist(
    name: &str,
    k: &KafkaSourceConfig,
    topics: &[(String, String)],
    timeout: Duration,
) -> Vec<ConfigError> {
    match existing_topics(name, k, timeout) {
        Ok(existing) => topics
            .iter()
            .filter(|(_, t)| !existing.contains(t))
            .map(|(path, t)| {
                ConfigError::new(
                    path,
                    format!("topic {t:?} does not exist on the cluster; create it (the bridge does not)"),
                )
            })
            .collect(),
        Err(e) => vec![e],
    }
}

fn existing_topics(
    name: &str,
    k: &KafkaSourceConfig,
    timeout: Duration,
) -> Result<HashSet<String>, ConfigError> {
    let path = format!("sources.{name}.kafka");
    let consumer: BaseConsumer = client_config::metadata(name, k)
        .map_err(|e| ConfigError::new(&path, e.to_string()))?
        .create()
        .map_err(|e| ConfigError::new(&path, e.to_string()))?;
    let md = consumer.fetch_metadata(None, timeout).map_err(|e| {
        ConfigError::new(
            format!("{path}.bootstrap_servers"),
            format!("cannot reach {}: {e}", k.bootstrap_servers),
        )
    })?;
    Ok(md.topics().iter().map(|t| t.name().to_string()).collect())
}
