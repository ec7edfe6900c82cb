//! `orceum-bridge render`: what one sample message would become, through the same code `run`
//! uses — the request (secret redacted, signature shown), or why it would be skipped or
//! dead-lettered.

use crate::build::Bridge;
use crate::message::{Message, Origin};
use crate::orceum::client::{prepare, PreparedRequest};
use crate::route::Mapped;
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

/// The format a sample is read as: the route's, or `--format`'s with what schema there is.
fn read_as(
    route: &crate::route::Route,
    format: Option<crate::config::PayloadFormat>,
    registry: bool,
) -> Result<crate::format::Format, RenderError> {
    use crate::config::PayloadFormat as P;
    use crate::format::Format as F;
    let Some(wanted) = format else {
        return Ok(route.format.clone());
    };
    let format = match (wanted, &route.format) {
        (P::Json, _) => F::Json,
        (P::JsonSchema, _) => F::JsonSchema,
        (P::Avro, f @ F::Avro { .. }) | (P::Protobuf, f @ F::Protobuf { .. }) => f.clone(),
        (P::Avro, _) if registry => F::Avro { local: None },
        (P::Protobuf, _) if registry => F::Protobuf { local: None },
        (other, _) => {
            return Err(RenderError::Registry(format!(
                "--format {}: route {} has no schema for it and no schema_registry is configured",
                match other {
                    P::Avro => "avro",
                    _ => "protobuf",
                },
                route.name
            )))
        }
    };
    Ok(format)
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
    #[error("{0}")]
    Registry(String),
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
    render_as(bridge, route_name, input, meta, None)
}

/// [`render`], reading the sample as `format` instead of the route's own (`render --format`):
/// a binary Avro, Protobuf or JSON Schema record (from a file), with the route's local schema
/// when it reads that format, else the registry's.
pub fn render_as(
    bridge: &Bridge,
    route_name: &str,
    input: &[u8],
    meta: &[String],
    format: Option<crate::config::PayloadFormat>,
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
    let format = read_as(route, format, bridge.schema_registry.is_some())?;
    let max_bytes = bridge.delivery.max_message_bytes;
    let parsed = match (&format, &bridge.schema_registry) {
        // JSON needs no registry (and `render --ndjson` calls this per line).
        (crate::format::Format::Json, _) | (_, None) => {
            let never = tokio_util::sync::CancellationToken::new();
            let decoding = crate::format::Decoding {
                registry: None,
                stop: &never,
                max_bytes,
            };
            crate::format::decode_as(&msg, &format, &decoding)
                .unwrap_or_else(|_| unreachable!("no registry to wait for"))
        }
        // A registry that does not answer within 10 s is an error here, not a wait.
        (_, Some(settings)) => {
            let registry = crate::format::registry::Registry::for_tool(Some(settings))
                .map_err(RenderError::Registry)?;
            let stop = tokio_util::sync::CancellationToken::new();
            let timer = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_secs(10));
                timer.cancel();
            });
            let decoding = crate::format::Decoding {
                registry: registry.as_ref(),
                stop: &stop,
                max_bytes,
            };
            crate::format::decode_as(&msg, &format, &decoding).map_err(|_| {
                RenderError::Registry(format!(
                    "schema_registry {}: no answer within 10 s",
                    settings.url
                ))
            })?
        }
    };
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

/// What `render --ndjson` saw: how many lines went each way.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LineCounts {
    pub send: usize,
    pub skipped: usize,
    pub dead_letter: usize,
}

impl LineCounts {
    /// The command's verdict over the whole file: the worst line's (dead-letter, then skipped).
    pub fn worst(&self) -> Option<&'static str> {
        if self.dead_letter > 0 {
            Some("dead_letter")
        } else if self.skipped > 0 {
            Some("skipped")
        } else {
            None
        }
    }
}

impl fmt::Display for LineCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line(s): {} send, {} skipped, {} dead-letter",
            self.send + self.skipped + self.dead_letter,
            self.send,
            self.skipped,
            self.dead_letter
        )
    }
}

/// `render --ndjson`: every non-empty line of `input` is one sample message, rendered as
/// [`render`] does; one JSON verdict per line is written to `out`
/// (`{"line":1,"verdict":"send","body":{…}}`, `{"line":2,"verdict":"skipped","reason":…}`,
/// `{"line":3,"verdict":"dead_letter","kind":…,"reason":…}`). A line over
/// `delivery.max_message_bytes` is not held in memory: it is read past and reported
/// `too_large`, as the engine would dead-letter it.
pub fn render_lines(
    bridge: &Bridge,
    route_name: &str,
    input: &mut dyn std::io::BufRead,
    meta: &[String],
    out: &mut dyn std::io::Write,
) -> Result<LineCounts, NdjsonError> {
    use std::io::{BufRead, Read};
    let max = bridge.delivery.max_message_bytes;
    let mut counts = LineCounts::default();
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let read = Read::take(&mut *input, max as u64 + 2)
            .read_until(b'\n', &mut line)
            .map_err(NdjsonError::Read)?;
        if read == 0 {
            break;
        }
        let complete = line.ends_with(b"\n");
        if !complete && line.len() > max {
            // Over the bound: skip the rest of this line without keeping it.
            skip_line(input).map_err(NdjsonError::Read)?;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        if text.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let verdict = if text.len() > max {
            counts.dead_letter += 1;
            serde_json::json!({"line": number, "verdict": "dead_letter", "kind": "too_large",
                "reason": format!("message is more than {max} bytes, over delivery.max_message_bytes ({max})")})
        } else {
            match render(bridge, route_name, text, meta).map_err(NdjsonError::Render)? {
                Rendered::Send(req) => {
                    counts.send += 1;
                    let body: serde_json::Value =
                        serde_json::from_slice(&req.body).unwrap_or(serde_json::Value::Null);
                    serde_json::json!({"line": number, "verdict": "send", "body": body})
                }
                Rendered::Skipped(reason) => {
                    counts.skipped += 1;
                    serde_json::json!({"line": number, "verdict": "skipped", "reason": reason})
                }
                Rendered::DeadLetter { kind, reason } => {
                    counts.dead_letter += 1;
                    serde_json::json!({"line": number, "verdict": "dead_letter", "kind": kind, "reason": reason})
                }
            }
        };
        writeln!(out, "{verdict}").map_err(NdjsonError::Write)?;
    }
    Ok(counts)
}

/// Reads past the rest of the current line, a bounded buffer at a time.
fn skip_line(input: &mut dyn std::io::BufRead) -> std::io::Result<()> {
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|b| *b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                input.consume(n);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NdjsonError {
    #[error(transparent)]
    Render(RenderError),
    #[error("cannot read the sample lines: {0}")]
    Read(std::io::Error),
    #[error("cannot write a verdict: {0}")]
    Write(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
orceum: { base_url: "http://127.0.0.1:8080/v1" }
apps:
  tasks: { app_id: app_1, secret: { env: SECRET_A } }
sources:
  events: { kafka: { bootstrap_servers: "localhost:9092", group_id: g } }
routes:
  - name: done
    source: events
    topics: [tasks]
    app: tasks
    filter: '.status == "done"'
    event: { installation_id: .inst, event_type: '"task.completed"', event_data: '{id}' }
delivery: { max_message_bytes: 64 }
"#;

    fn bridge() -> Bridge {
        crate::build::load_str(CONFIG, "t.yaml", |n| {
            (n == "SECRET_A").then(|| "whs_a".to_string())
        })
        .unwrap()
    }

    #[test]
    fn each_line_gets_its_verdict_and_an_oversized_line_is_read_past() {
        let long = format!(
            r#"{{"inst":"i","status":"done","pad":"{}"}}"#,
            "x".repeat(200)
        );
        let input = format!(
            "{}\n\n{}\r\n{}\n{long}\nnot json\n{}",
            r#"{"inst":"i1","status":"done","id":"t1"}"#,
            r#"{"inst":"i2","status":"open","id":"t2"}"#,
            r#"{"status":"done","id":"t3"}"#,
            r#"{"inst":"i4","status":"done","id":"t4"}"#,
        );
        let mut out = Vec::new();
        let counts = render_lines(
            &bridge(),
            "done",
            &mut std::io::BufReader::new(input.as_bytes()),
            &[],
            &mut out,
        )
        .unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let got: Vec<(u64, &str, &str)> = lines
            .iter()
            .map(|v| {
                (
                    v["line"].as_u64().unwrap(),
                    v["verdict"].as_str().unwrap(),
                    v["kind"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (1, "send", ""),
                (3, "skipped", ""),
                (4, "dead_letter", "invalid_field"),
                (5, "dead_letter", "too_large"),
                (6, "dead_letter", "not_json"),
                (7, "send", ""),
            ]
        );
        assert_eq!(lines[0]["body"]["installation_id"], "i1");
        assert_eq!(lines[5]["body"]["event_data"]["id"], "t4");
        assert_eq!(
            counts,
            LineCounts {
                send: 2,
                skipped: 1,
                dead_letter: 3
            }
        );
        assert_eq!(counts.worst(), Some("dead_letter"));
    }
}
