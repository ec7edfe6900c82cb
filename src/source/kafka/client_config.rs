//! The one place librdkafka client settings are made: the consumer, the dead-letter producer,
//! the `check --connect` probe and the replay reader all start from the user's
//! `properties:` (TLS, SASL, …) on the source's `bootstrap_servers`, then set what each role
//! needs. The properties the bridge owns ([`RESERVED`]) are refused in config and always set
//! last, so a user value can never turn auto-commit back on.

use super::KafkaSourceError;
use crate::config::{ConfigError, KafkaSourceConfig};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::BaseConsumer;
use rdkafka::Offset;

/// The bridge's consumer defaults; any `properties:` entry overrides them.
///
/// `queued.max.messages.kbytes` is lowered from librdkafka's 64 MB: with a big lag, prefetch
/// alone would blow the memory budget (Vector #20939). It bounds the consumer's one queue (all
/// partitions together): at 4 MB a drain from Tansu ran at 15,500–16,500 events/s, at 16 MB
/// 22,800–23,900 (more gave no more), peak RSS 55 MB (docs/performance.md).
pub const CONSUMER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("queued.max.messages.kbytes", "16384"),
    ("fetch.max.bytes", "8388608"),
    ("session.timeout.ms", "45000"),
    ("client.id", "orceum-bridge"),
    // Feeds orceum_bridge_kafka_consumer_lag.
    ("statistics.interval.ms", "5000"),
];

/// Properties the bridge sets itself: at-least-once needs auto-commit off, and the group and
/// brokers have their own config keys.
pub const RESERVED: &[&str] = &[
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "bootstrap.servers",
];

/// Where a partition with no committed offset starts: `auto.offset.reset` (the default,
/// `earliest`, or the source's own setting). `error` leaves the choice to librdkafka, which
/// then reports the partition instead of reading it.
pub fn start_when_uncommitted(k: &KafkaSourceConfig) -> Offset {
    let reset = k
        .properties
        .get("auto.offset.reset")
        .and_then(|v| v.as_str())
        .unwrap_or("earliest");
    match reset.to_ascii_lowercase().as_str() {
        "latest" | "largest" | "end" => Offset::End,
        "error" => Offset::Invalid,
        _ => Offset::Beginning,
    }
}

/// The `properties:` map as librdkafka strings; nested values are refused.
pub fn properties(
    source_name: &str,
    cfg: &KafkaSourceConfig,
) -> Result<Vec<(String, String)>, KafkaSourceError> {
    cfg.properties
        .iter()
        .map(|(k, v)| {
            let s = match v {
                yaml_serde::Value::String(s) => s.clone(),
                yaml_serde::Value::Bool(b) => b.to_string(),
                yaml_serde::Value::Number(n) => n.to_string(),
                _ => {
                    return Err(KafkaSourceError::Property {
                        source_name: source_name.to_string(),
                        key: k.clone(),
                        reason: "must be a string, number or boolean".into(),
                    })
                }
            };
            Ok((k.clone(), s))
        })
        .collect()
}

/// The user's properties on the source's brokers, filtered by `keep`.
fn base(
    source_name: &str,
    cfg: &KafkaSourceConfig,
    keep: impl Fn(&str) -> bool,
) -> Result<ClientConfig, KafkaSourceError> {
    let mut client = ClientConfig::new();
    for (k, v) in properties(source_name, cfg)? {
        if keep(&k) {
            client.set(k, v);
        }
    }
    client.set("bootstrap.servers", &cfg.bootstrap_servers);
    Ok(client)
}

/// The group member: defaults, then the user's properties, then what at-least-once needs.
pub fn consumer(
    source_name: &str,
    cfg: &KafkaSourceConfig,
) -> Result<ClientConfig, KafkaSourceError> {
    let mut client = ClientConfig::new();
    for (k, v) in CONSUMER_DEFAULTS {
        client.set(*k, *v);
    }
    for (k, v) in properties(source_name, cfg)? {
        client.set(k, v);
    }
    client.set("bootstrap.servers", &cfg.bootstrap_servers);
    client
        .set("group.id", &cfg.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    // librdkafka's `debug` contexts log at debug level: keep them when asked for.
    let level = if client.get("debug").is_some() {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Warning
    };
    client.set_log_level(level);
    Ok(client)
}

/// The dead-letter producer: idempotent, acks from all replicas, the source's connection
/// properties without the consumer-only ones (librdkafka would warn about them).
pub fn producer(
    source_name: &str,
    cfg: &KafkaSourceConfig,
) -> Result<ClientConfig, KafkaSourceError> {
    let mut client = base(source_name, cfg, is_producer_safe)?;
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set("log_level", "3");
    Ok(client)
}

/// A client that only reads metadata (`check --connect`).
pub fn metadata(
    source_name: &str,
    cfg: &KafkaSourceConfig,
) -> Result<ClientConfig, KafkaSourceError> {
    base(source_name, cfg, |_| true)
}

/// The replay reader: assigned partitions, no group membership, nothing committed.
pub fn reader(
    source_name: &str,
    cfg: &KafkaSourceConfig,
) -> Result<ClientConfig, KafkaSourceError> {
    let mut client = base(source_name, cfg, |_| true)?;
    client
        .set("group.id", "orceum-bridge-replay")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    Ok(client)
}

/// A lookup table's reader: every partition assigned from the beginning, no group membership,
/// nothing committed, and an end-of-partition event so the table knows it has caught up.
pub fn lookup_reader(
    source_name: &str,
    cfg: &KafkaSourceConfig,
) -> Result<ClientConfig, KafkaSourceError> {
    let mut client = base(source_name, cfg, |k| {
        !matches!(k, "auto.offset.reset" | "enable.partition.eof")
    })?;
    client
        .set("group.id", "orceum-bridge-lookup")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest")
        .set("queued.max.messages.kbytes", "16384")
        .set("log_level", "4");
    Ok(client)
}

/// `check`: property value types, the reserved names, and what librdkafka itself accepts.
/// Creating a client connects to nothing, so this works offline.
pub fn check(source_name: &str, cfg: &KafkaSourceConfig, errors: &mut Vec<ConfigError>) {
    let path = format!("sources.{source_name}.kafka.properties");
    for key in cfg.properties.keys() {
        if RESERVED.contains(&key.as_str()) {
            errors.push(ConfigError::new(
                format!("{path}.{key}"),
                "is set by the bridge (auto-commit stays off for at-least-once; use group_id / bootstrap_servers)",
            ));
        }
    }
    let mut client = match consumer(source_name, cfg) {
        Ok(c) => c,
        Err(e) => return errors.push(ConfigError::new(path, e.to_string())),
    };
    client.set_log_level(RDKafkaLogLevel::Emerg);
    if let Err(e) = client.create::<BaseConsumer>() {
        errors.push(ConfigError::new(
            path,
            format!("librdkafka refuses them: {e}"),
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn source(props: &[(&str, &str)]) -> KafkaSourceConfig {
        let mut yaml = String::from("bootstrap_servers: b:9092\ngroup_id: g\nproperties:\n");
        for (k, v) in props {
            yaml.push_str(&format!("  {k}: \"{v}\"\n"));
        }
        if props.is_empty() {
            yaml.push_str("  {}\n");
        }
        yaml_serde::from_str(&yaml).unwrap()
    }

    #[test]
    fn the_consumer_keeps_auto_commit_off_whatever_the_properties_say() {
        let c = consumer("events", &source(&[("queued.max.messages.kbytes", "1024")])).unwrap();
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("1024"));
        assert_eq!(c.get("auto.offset.reset"), Some("earliest"));
    }

    #[test]
    fn the_producer_drops_consumer_only_properties_and_keeps_the_connection_ones() {
        let p = producer(
            "events",
            &source(&[("session.timeout.ms", "6000"), ("security.protocol", "SSL")]),
        )
        .unwrap();
        assert_eq!(p.get("session.timeout.ms"), None);
        assert_eq!(p.get("security.protocol"), Some("SSL"));
        assert_eq!(p.get("acks"), Some("all"));
    }

    #[test]
    fn reserved_and_unknown_properties_are_errors_with_their_path() {
        let mut errors = Vec::new();
        check(
            "events",
            &source(&[("enable.auto.commit", "true"), ("no.such.property", "1")]),
            &mut errors,
        );
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "sources.events.kafka.properties.enable.auto.commit",
                "sources.events.kafka.properties"
            ],
            "{errors:?}"
        );
    }
}
