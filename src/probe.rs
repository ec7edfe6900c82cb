//! `orceum-bridge check --connect`: that what the config names exists on the brokers.
//!
//! Kafka: the brokers answer and every topic a route reads (and the dead-letter topic) exists.
//! NATS: the server answers, every JetStream stream exists, and every consumer with
//! `create: false` exists. Read-only: nothing is created.

use crate::config::validate::Bridge;
use crate::config::{ConfigError, DeadLetterConfig, SourceConfig};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Every problem found, with the config path it concerns.
pub async fn probe(bridge: &Bridge) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for (name, source) in &bridge.sources {
        match source {
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
                let found = tokio::task::spawn_blocking(move || kafka_topics(&name, &k)).await;
                match found {
                    Ok(Ok(existing)) => {
                        for (path, t) in topics {
                            if !existing.contains(&t) {
                                errors.push(ConfigError::new(path, format!("topic {t:?} does not exist on the cluster; create it (the bridge does not)")));
                            }
                        }
                    }
                    Ok(Err(e)) => errors.push(e),
                    Err(e) => errors.push(ConfigError::new("", e.to_string())),
                }
            }
            SourceConfig::Nats(n) => {
                let path = format!("sources.{name}.nats");
                let client = match tokio::time::timeout(
                    TIMEOUT,
                    crate::source::nats::connect(name, n, None),
                )
                .await
                {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        errors.push(ConfigError::new(path, e.to_string()));
                        continue;
                    }
                    Err(_) => {
                        errors.push(ConfigError::new(
                            path,
                            format!("no answer from {} within {TIMEOUT:?}", n.url),
                        ));
                        continue;
                    }
                };
                // With retry_on_initial_connect, connect returns before the connection is up.
                if tokio::time::timeout(TIMEOUT, client.flush())
                    .await
                    .map(|r| r.is_err())
                    .unwrap_or(true)
                {
                    errors.push(ConfigError::new(
                        path,
                        format!("cannot reach {} within {TIMEOUT:?}", n.url),
                    ));
                    continue;
                }
                let js = async_nats::jetstream::new(client);
                for (i, r) in bridge.routes.iter().enumerate() {
                    let (true, Some(cfg)) = (&r.source == name, &r.jetstream) else {
                        continue;
                    };
                    let stream = match js.get_stream(&cfg.stream).await {
                        Ok(s) => s,
                        Err(e) => {
                            errors.push(ConfigError::new(
                                format!("routes[{i}].jetstream.stream"),
                                format!("stream {:?}: {e}", cfg.stream),
                            ));
                            continue;
                        }
                    };
                    if !cfg.create {
                        if let Err(e) = stream
                            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(
                                &cfg.durable,
                            )
                            .await
                        {
                            errors.push(ConfigError::new(
                                format!("routes[{i}].jetstream.durable"),
                                format!("consumer {:?} on stream {:?}: {e}; create it or set create: true", cfg.durable, cfg.stream),
                            ));
                        }
                    }
                }
            }
        }
    }
    errors
}

fn kafka_topics(
    name: &str,
    k: &crate::config::KafkaSourceConfig,
) -> Result<std::collections::HashSet<String>, ConfigError> {
    let path = format!("sources.{name}.kafka");
    let mut cfg = ClientConfig::new();
    for (key, v) in crate::source::kafka::properties(name, k)
        .map_err(|e| ConfigError::new(&path, e.to_string()))?
    {
        cfg.set(key, v);
    }
    cfg.set("bootstrap.servers", &k.bootstrap_servers);
    let consumer: BaseConsumer = cfg
        .create()
        .map_err(|e| ConfigError::new(&path, e.to_string()))?;
    let md = consumer.fetch_metadata(None, TIMEOUT).map_err(|e| {
        ConfigError::new(
            format!("{path}.bootstrap_servers"),
            format!("cannot reach {}: {e}", k.bootstrap_servers),
        )
    })?;
    Ok(md.topics().iter().map(|t| t.name().to_string()).collect())
}
