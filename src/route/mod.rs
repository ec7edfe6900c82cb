//! Routes: which messages become which Orceum events, and how.
//!
//! Pure functions, no I/O: a message's bytes and `$meta` go in, a [`Mapped`] comes out — an
//! event, a reason to skip it, or a reason to dead-letter it. The same code serves `run`,
//! `render` and the tests, so what `render` shows is what `run` sends.

pub mod budget;
mod shortcut;
pub mod table;
pub mod template;

use crate::message::Message;
use crate::orceum::event::{describe, normalise_timestamp, OrceumEvent, Priority};
use serde_json::{Map, Value};
use template::{json_to_val, parse_val, JqTemplate};

/// One route, with every jq expression compiled.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    /// The `sources:` entry it reads.
    pub source: String,
    pub topics: Vec<String>,
    /// Core NATS subjects (wildcards allowed).
    pub subjects: Vec<String>,
    pub queue_group: Option<String>,
    pub jetstream: Option<crate::config::JetStreamRouteConfig>,
    /// The local name of the app (`apps:` key) its events go to.
    pub app: String,
    pub filter: Option<JqTemplate>,
    pub event: EventTemplate,
    pub source_metadata: bool,
    /// Adds the message's `traceparent` (when it has one) to the event's metadata.
    pub trace_metadata: bool,
    /// How its messages are encoded.
    pub format: crate::format::Format,
    /// Whether an expression reads `$meta`; worked out on first use.
    pub reads_meta: std::sync::OnceLock<bool>,
}

/// The compiled `event:` block.
#[derive(Debug)]
pub struct EventTemplate {
    pub installation_id: JqTemplate,
    pub event_type: JqTemplate,
    pub event_data: JqTemplate,
    pub timestamp: Option<JqTemplate>,
    pub priority: Option<JqTemplate>,
    pub metadata: Option<JqTemplate>,
}

/// The dead-letter kind of an event whose `installation_id` lookup found nothing.
pub const LOOKUP_MISS: &str = "lookup_miss";

/// Why a message will not become an event. `kind` is a short, bounded label for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: &'static str,
    pub reason: String,
}

impl Rejection {
    pub fn new(kind: &'static str, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
        }
    }
}

/// What a route makes of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    Event(OrceumEvent),
    /// The filter said no: committed without a push.
    Skipped(String),
    /// Bad input: dead-lettered with the reason, then committed.
    Rejected(Rejection),
}

/// Runs one field's expression on the current message: `(field path, template) → value`.
type FieldRunner<'a> = dyn Fn(&str, &JqTemplate) -> Result<Option<Value>, Rejection> + 'a;

/// The message body parsed once, straight into jaq's values, shared by every route that reads
/// its topic. Not `Send`: parse, map and drop it before any `.await`.
pub enum Parsed {
    Json(jaq_json::Val),
    /// A decoded envelope (a CloudEvent): the template input, and what it adds to `$meta`.
    Decoded(jaq_json::Val, Box<Map<String, Value>>),
    Invalid(Rejection),
}

/// Parses the payload, refusing oversized, non-UTF-8 and non-JSON messages with a clear reason.
pub fn parse_payload(payload: &[u8], max_bytes: usize) -> Parsed {
    if payload.len() > max_bytes {
        return Parsed::Invalid(Rejection::new(
            "too_large",
            format!(
                "message is {} bytes, over delivery.max_message_bytes ({max_bytes})",
                payload.len()
            ),
        ));
    }
    if payload.is_empty() {
        return Parsed::Invalid(Rejection::new("not_json", "message is empty"));
    }
    match parse_val(payload) {
        Ok(v) => Parsed::Json(v),
        Err(e) => {
            let kind = if std::str::from_utf8(payload).is_err() {
                "not_utf8"
            } else {
                "not_json"
            };
            Parsed::Invalid(Rejection::new(kind, format!("message is not JSON: {e}")))
        }
    }
}

impl Route {
    /// Maps one message through this route.
    pub fn map(&self, msg: &Message, parsed: &Parsed) -> Mapped {
        let (input, extra) = match parsed {
            Parsed::Json(v) => (v, None),
            Parsed::Decoded(v, extra) => (v, Some(extra)),
            Parsed::Invalid(r) => return Mapped::Rejected(r.clone()),
        };
        // `$meta` is only built when an expression of this route reads it (most do not): it
        // allocates.
        let meta_val = if self.uses_meta() {
            let mut meta = msg.meta();
            if let (Some(extra), Value::Object(m)) = (extra, &mut meta) {
                m.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            json_to_val(&meta)
        } else {
            jaq_json::Val::Null
        };
        let run = |field: &str, t: &JqTemplate| -> Result<Option<Value>, Rejection> {
            t.run_vals(input, &meta_val).map_err(|e| {
                let kind = if e.starts_with(template::OVER_BUDGET) {
                    "template_budget"
                } else {
                    "template_error"
                };
                Rejection::new(kind, format!("{field}: {e}"))
            })
        };

        if let Some(filter) = &self.filter {
            match run("filter", filter) {
                Err(r) => return Mapped::Rejected(r),
                Ok(None) | Ok(Some(Value::Null)) | Ok(Some(Value::Bool(false))) => {
                    return Mapped::Skipped(format!("filter {:?} is false", filter.source()))
                }
                Ok(Some(_)) => {}
            }
        }

        match self.build_event(msg, &run) {
            Ok(ev) => Mapped::Event(ev),
            Err(r) => Mapped::Rejected(r),
        }
    }

    /// Every expression of the route: the event's fields, then the filter.
    fn templates(&self) -> impl Iterator<Item = &JqTemplate> {
        let t = &self.event;
        [
            Some(&t.installation_id),
            Some(&t.event_type),
            Some(&t.event_data),
            t.timestamp.as_ref(),
            t.priority.as_ref(),
            t.metadata.as_ref(),
            self.filter.as_ref(),
        ]
        .into_iter()
        .flatten()
    }

    /// The lookup tables the route reads: its source starts consuming once they are ready.
    pub fn lookups(&self) -> std::collections::BTreeSet<&str> {
        self.templates()
            .flat_map(|t| t.lookups().iter().map(String::as_str))
            .collect()
    }

    /// Whether any expression of this route mentions `$meta`.
    fn uses_meta(&self) -> bool {
        *self.reads_meta.get_or_init(|| self.mentions_meta())
    }

    fn mentions_meta(&self) -> bool {
        self.templates().any(|tpl| tpl.source().contains("$meta"))
    }

    fn build_event(&self, msg: &Message, run: &FieldRunner<'_>) -> Result<OrceumEvent, Rejection> {
        let t = &self.event;
        let installation_id = match run("event.installation_id", &t.installation_id)? {
            Some(Value::Null) | None if !t.installation_id.lookups().is_empty() => {
                return Err(Rejection::new(
                    LOOKUP_MISS,
                    format!(
                        "event.installation_id: the lookup {} has no entry for this message's key (yet): replay this dead letter once the mapping exists, or skip such messages with a filter (docs/lookups.md)",
                        t.installation_id.lookups().join(", ")
                    ),
                ))
            }
            id => non_empty_string("event.installation_id", id)?,
        };
        let event_type =
            non_empty_string("event.event_type", run("event.event_type", &t.event_type)?)?;
        let event_data = match run("event.event_data", &t.event_data)? {
            Some(Value::Object(map)) => map,
            other => {
                return Err(invalid(
                    "event.event_data",
                    format!("must be an object, got {}", shown(&other)),
                ))
            }
        };
        let timestamp = match &t.timestamp {
            Some(tt) => match run("event.timestamp", tt)? {
                Some(Value::Null) | None => default_timestamp(msg),
                Some(v) => normalise_timestamp(&v).map_err(|e| invalid("event.timestamp", e))?,
            },
            None => default_timestamp(msg),
        };
        let priority = match &t.priority {
            Some(tp) => match run("event.priority", tp)? {
                Some(Value::Null) | None => Priority::Normal,
                Some(Value::String(s)) => s
                    .parse::<Priority>()
                    .map_err(|e| invalid("event.priority", e))?,
                Some(other) => {
                    return Err(invalid(
                        "event.priority",
                        format!(
                            "must be one of low|normal|high|critical, got {}",
                            describe(&other)
                        ),
                    ))
                }
            },
            None => Priority::Normal,
        };
        let mut metadata = match &t.metadata {
            Some(tm) => match run("event.metadata", tm)? {
                Some(Value::Object(map)) => Some(map),
                Some(Value::Null) | None => None,
                Some(other) => {
                    return Err(invalid(
                        "event.metadata",
                        format!("must be an object or null, got {}", describe(&other)),
                    ))
                }
            },
            None => None,
        };
        if self.source_metadata {
            metadata
                .get_or_insert_with(Map::new)
                .insert("source".into(), Value::String(msg.origin.coordinates()));
        }
        if self.trace_metadata {
            if let Some(trace) = msg.trace_context() {
                metadata.get_or_insert_with(Map::new).insert(
                    "traceparent".into(),
                    Value::String(trace.traceparent.into()),
                );
            }
        }
        Ok(OrceumEvent {
            installation_id,
            event_type,
            event_data,
            timestamp,
            priority,
            metadata,
        })
    }
}

fn invalid(field: &str, reason: impl std::fmt::Display) -> Rejection {
    Rejection::new("invalid_field", format!("{field}: {reason}"))
}

fn shown(v: &Option<Value>) -> String {
    match v {
        Some(v) => describe(v),
        None => "no output (empty)".into(),
    }
}

fn non_empty_string(field: &str, v: Option<Value>) -> Result<String, Rejection> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        Some(Value::String(_)) => Err(invalid(field, "must be a non-empty string, got \"\"")),
        other => Err(invalid(
            field,
            format!("must be a non-empty string, got {}", shown(&other)),
        )),
    }
}

fn default_timestamp(msg: &Message) -> String {
    crate::orceum::event::format_timestamp(msg.timestamp.unwrap_or_else(chrono::Utc::now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Origin;
    use serde_json::json;
    use std::sync::Arc;

    fn route(priority: Option<&str>, filter: Option<&str>) -> Route {
        Route {
            name: "r".into(),
            source: "events".into(),
            topics: vec!["tasks".into()],
            subjects: vec![],
            queue_group: None,
            jetstream: None,
            app: "tasks".into(),
            filter: filter.map(|f| JqTemplate::compile(f).unwrap()),
            event: EventTemplate {
                installation_id: JqTemplate::compile(".user.installation_id").unwrap(),
                event_type: JqTemplate::compile("\"task.completed\"").unwrap(),
                event_data: JqTemplate::compile("{task_id: .id, title}").unwrap(),
                timestamp: Some(JqTemplate::compile(".completed_at").unwrap()),
                priority: priority.map(|p| JqTemplate::compile(p).unwrap()),
                metadata: Some(JqTemplate::compile("{team: \"tasks\", k: $meta.key}").unwrap()),
            },
            source_metadata: true,
            trace_metadata: true,
            format: Default::default(),
            reads_meta: Default::default(),
        }
    }

    fn message(payload: Value) -> Message {
        Message {
            source: Arc::from("events"),
            origin: Origin::Kafka {
                topic: Arc::from("tasks"),
                partition: 2,
                offset: 1834,
            },
            route: None,
            payload: serde_json::to_vec(&payload).unwrap(),
            key: Some(b"inst_1".to_vec()),
            headers: vec![],
            timestamp: None,
        }
    }

    fn map(r: &Route, payload: Value) -> Mapped {
        let msg = message(payload);
        let parsed = parse_payload(&msg.payload, 1 << 20);
        r.map(&msg, &parsed)
    }

    #[test]
    fn maps_a_message_to_a_typed_event_with_source_coordinates() {
        let r = route(Some("if .urgent then \"high\" else \"normal\" end"), None);
        let Mapped::Event(ev) = map(
            &r,
            json!({"id": "t1", "title": "Q4", "urgent": true, "completed_at": "2024-01-15T13:00:00+01:00",
                   "user": {"installation_id": "inst_1"}}),
        ) else {
            panic!("not an event")
        };
        assert_eq!(ev.installation_id, "inst_1");
        assert_eq!(ev.priority, Priority::High);
        assert_eq!(ev.timestamp, "2024-01-15T12:00:00Z");
        assert_eq!(
            Value::Object(ev.metadata.unwrap()),
            json!({"team": "tasks", "k": "inst_1", "source": "kafka:tasks/2@1834"})
        );
    }

    #[test]
    fn bad_priority_missing_id_and_wrong_types_are_rejected_with_the_field() {
        let r = route(Some("\"urgent\""), None);
        let base = json!({"id": "t1", "title": "x", "user": {"installation_id": "inst_1"}});
        let Mapped::Rejected(rej) = map(&r, base.clone()) else {
            panic!()
        };
        assert_eq!(rej.kind, "invalid_field");
        assert!(rej.reason.starts_with("event.priority:"), "{}", rej.reason);

        let r = route(None, None);
        let Mapped::Rejected(rej) = map(&r, json!({"id": 1, "title": "x"})) else {
            panic!()
        };
        assert!(
            rej.reason
                .contains("event.installation_id: must be a non-empty string, got null"),
            "{}",
            rej.reason
        );
    }

    #[test]
    fn filter_false_skips_and_filter_error_rejects() {
        let r = route(None, Some(".status == \"done\""));
        assert!(matches!(
            map(
                &r,
                json!({"status": "open", "user": {"installation_id": "i"}})
            ),
            Mapped::Skipped(_)
        ));
        let r = route(None, Some(".status + 1"));
        assert!(matches!(
            map(&r, json!({"status": "open"})),
            Mapped::Rejected(_)
        ));
    }

    #[test]
    fn non_json_and_oversized_payloads_are_rejected_before_templates() {
        assert!(
            matches!(parse_payload(b"not json", 100), Parsed::Invalid(r) if r.kind == "not_json")
        );
        assert!(
            matches!(parse_payload(&[0xff, 0xfe], 100), Parsed::Invalid(r) if r.kind == "not_utf8")
        );
        assert!(matches!(parse_payload(b"{}", 1), Parsed::Invalid(r) if r.kind == "too_large"));
        assert!(matches!(parse_payload(b"", 10), Parsed::Invalid(_)));
    }
}
