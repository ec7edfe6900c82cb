//! `orceum-bridge render`: what one sample message would become, through the same code `run`
//! uses — the request (secret redacted, signature shown), or why it would be skipped or
//! dead-lettered.

use crate::build::Bridge;
use crate::message::{Message, Origin};
use crate::orceum::client::{prepare, PreparedRequest};
use crate::route::{parse_payload, Mapped};
use std::fmt;
use std::sync::Arc;

/// What would happen to the message (the command's exit code tells the three apart: 0, 3, 4).
pub enum Rendered {
    Send(PreparedRequest),
    Skipped(String),
    DeadLetter { kind: String, reason: String },
}

impl fmt::Display for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rendered::Send(req) => {
                writeln!(f, "POST {}", req.url)?;
                for (k, v) in req.redacted_headers() {
                    writeln!(f, "{k}: {v}")?;
                }
                writeln!(f)?;
                writeln!(f, "{}", String::from_utf8_lossy(&req.body))
            }
            Rendered::Skipped(reason) => {
                writeln!(f, "SKIPPED (committed without a push): {reason}")
            }
            Rendered::DeadLetter { kind, reason } => {
                writeln!(f, "DEAD-LETTER ({kind}): {reason}")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("no route named {name:?}; routes: {known}")]
    UnknownRoute { name: String, known: String },
    #[error("--lookup {0:?}: expected NAME=FILE (a JSON object of keys to values, or a .csv of key,value lines)")]
    BadLookup(String),
    #[error("--lookup {name}: no such table; lookups: {known}")]
    UnknownLookup { name: String, known: String },
    #[error("--lookup {name}: {reason}")]
    LookupFile { name: String, reason: String },
    #[error("--meta {0:?}: expected key=value with key one of topic, partition, offset, key, timestamp, subject, sequence, header.NAME")]
    BadMeta(String),
}

/// Fills the config's lookup tables from sample files (`NAME=FILE`, each as a `file:` table
/// reads it); the tables not given stay empty. Returns a line for each table left empty.
pub fn load_lookups(bridge: &Bridge, samples: &[String]) -> Result<Vec<String>, RenderError> {
    let mut given = std::collections::BTreeSet::new();
    for sample in samples {
        let Some((name, file)) = sample.split_once('=') else {
            return Err(RenderError::BadLookup(sample.clone()));
        };
        let Some(lookup) = bridge.lookups.get(name) else {
            return Err(RenderError::UnknownLookup {
                name: name.to_string(),
                known: bridge.lookups.names(),
            });
        };
        let loaded = crate::lookup::file::read(std::path::Path::new(file), lookup.table.bounds())
            .map_err(|reason| RenderError::LookupFile {
            name: name.to_string(),
            reason,
        })?;
        drop(lookup.table.replace(loaded.entries));
        given.insert(name.to_string());
    }
    Ok(bridge
        .lookups
        .iter()
        .filter(|l| !given.contains(&l.name))
        .map(|l| {
            format!(
                "note: lookup {:?} has no sample table (--lookup {}=FILE): it answers null",
                l.name, l.name
            )
        })
        .collect())
}

/// Renders `input` through route `route_name`. `meta` overrides the sample coordinates
/// (`topic=…`, `partition=…`, `offset=…`, `key=…`, `timestamp=…`, `header.NAME=…`).
pub fn render(
    bridge: &Bridge,
    route_name: &str,
    input: &[u8],
    meta: &[String],
) -> Result<Rendered, RenderError> {
    let Some(route) = bridge.routes.iter().find(|r| r.name == route_name) else {
        return Err(RenderError::UnknownRoute {
            name: route_name.to_string(),
            known: bridge
                .routes
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let mut topic = route.topics.first().cloned().unwrap_or_default();
    let (mut partition, mut offset) = (0i32, 0i64);
    let mut key = None;
    let mut subject: Option<String> = None;
    let mut headers = Vec::new();
    let mut timestamp = Some(chrono::Utc::now());
    for m in meta {
        let (k, v) = m
            .split_once('=')
            .ok_or_else(|| RenderError::BadMeta(m.clone()))?;
        match k {
            "topic" => topic = v.to_string(),
            "partition" => partition = v.parse().map_err(|_| RenderError::BadMeta(m.clone()))?,
            "offset" | "sequence" => {
                offset = v.parse().map_err(|_| RenderError::BadMeta(m.clone()))?
            }
            "subject" => subject = Some(v.to_string()),
            "key" => key = Some(v.as_bytes().to_vec()),
            "timestamp" => {
                timestamp = Some(
                    chrono::DateTime::parse_from_rfc3339(v)
                        .map_err(|_| RenderError::BadMeta(m.clone()))?
                        .with_timezone(&chrono::Utc),
                )
            }
            _ => match k.strip_prefix("header.") {
                Some(name) => headers.push((name.to_string(), Some(v.as_bytes().to_vec()))),
                None => return Err(RenderError::BadMeta(m.clone())),
            },
        }
    }
    let origin = if let Some(js) = &route.jetstream {
        Origin::JetStream {
            stream: Arc::from(js.stream.as_str()),
            subject: subject.unwrap_or_else(|| js.filter_subject.clone().unwrap_or_default()),
            sequence: offset.max(0) as u64,
        }
    } else if let Some(pattern) = route.subjects.first() {
        Origin::Nats {
            subject: subject.unwrap_or_else(|| pattern.clone()),
            pattern: Arc::from(pattern.as_str()),
        }
    } else {
        Origin::Kafka {
            topic: Arc::from(topic.as_str()),
            partition,
            offset,
        }
    };
    let msg = Message {
        source: Arc::from(route.source.as_str()),
        origin,
        route: Some(Arc::from(route.name.as_str())),
        payload: input.to_vec(),
        key,
        headers,
        timestamp,
    };
    let parsed = parse_payload(input, bridge.delivery.max_message_bytes);
    Ok(match route.map(&msg, &parsed) {
        Mapped::Event(ev) => {
            // validate() guarantees the app exists.
            match bridge.apps.get(&route.app) {
                Some(app) => Rendered::Send(prepare(&bridge.orceum.base_url, app, ev.to_body())),
                None => Rendered::DeadLetter {
                    kind: "config".into(),
                    reason: format!("route {} names unknown app {}", route.name, route.app),
                },
            }
        }
        Mapped::Skipped(reason) => Rendered::Skipped(reason),
        Mapped::Rejected(r) => Rendered::DeadLetter {
            kind: r.kind.to_string(),
            reason: r.reason,
        },
    })
}
