//! `orceum-bridge check --connect`: that what the config names exists on the brokers.
//!
//! Kafka: the brokers answer and every topic a route reads (and the dead-letter topic) exists.
//! NATS: the server answers, every JetStream stream exists, every consumer with
//! `create: false` exists, and a stream captures the dead-letter subject. Read-only: nothing
//! is created.

use crate::build::Bridge;
use crate::config::{ConfigError, DeadLetterConfig, SourceConfig};
use crate::source;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Every problem found, with the config path it concerns.
pub async fn probe(bridge: &Bridge) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (name, src) in &bridge.sources {
        match src {
            SourceConfig::Kafka(k) => {
                let mut topics: Vec<(String, String)> = Vec::new();
                for (i, r) in bridge.routes.iter().enumerate() {
                    if &r.source == name {
                        for (j, t) in r.topics.iter().enumerate() {
                            topics.push((format!("routes[{i}].topics[{j}]"), t.clone()));
                        }
                    }
                }
                if let Some(DeadLetterConfig::Kafka(d)) = &bridge.delivery.dead_letter {
                    if &d.source == name {
                        topics.push(("delivery.dead_letter.kafka.topic".into(), d.topic.clone()));
                    }
                }
                let (name, k) = (name.clone(), k.clone());
                let found = tokio::task::spawn_blocking(move || {
                    source::kafka::probe::topics_exist(&name, &k, &topics, TIMEOUT)
                })
                .await;
                match found {
                    Ok(found) => errors.extend(found),
                    Err(e) => errors.push(ConfigError::new("", e.to_string())),
                }
            }
            SourceConfig::Nats(n) => {
                let routes: Vec<_> = bridge
                    .routes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| &r.source == name)
                    .filter_map(|(i, r)| r.jetstream.clone().map(|js| (format!("routes[{i}]"), js)))
                    .collect();
                let dead_letter_subject = match &bridge.delivery.dead_letter {
                    Some(DeadLetterConfig::Nats(d)) if &d.source == name => {
                        Some(d.subject.as_str())
                    }
                    _ => None,
                };
                source::nats::probe::check(
                    name,
                    n,
                    &routes,
                    dead_letter_subject,
                    TIMEOUT,
                    &mut errors,
                )
                .await;
            }
        }
    }
    errors
}
