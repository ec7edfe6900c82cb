//! The payload formats, between a source and the routes: what the templates read as their
//! input, and what a format adds to `$meta`. JSON is the default; a CloudEvent (binary or
//! structured mode, [`cloudevents`]) gives its data as the input and its attributes as
//! `$meta.cloudevent`. A route's `format: avro | protobuf | json_schema` reads the Confluent
//! wire format ([`wire`]) with schemas from the registry ([`registry`]) or local files; the
//! decoded value ([`avro`]'s and [`protobuf`]'s JSON mappings) is the input, with
//! `$meta.schema_id` and `$meta.format`. A record that does not decode (a wrong magic byte, an
//! id the registry does not have, bytes that do not fit the schema) is rejected with reason
//! `schema` and its schema id.

pub mod avro;
pub mod cloudevents;
pub mod protobuf;
pub mod registry;
pub mod wire;

use crate::message::Message;
use crate::route::template::{json_to_val, parse_val};
use crate::route::{parse_payload, Parsed, Rejection};
use registry::{Abandoned, Registered, Registry};
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A route's format, compiled: with its local schemas, if any.
#[derive(Debug, Clone, Default)]
pub enum Format {
    #[default]
    Json,
    /// With a registry, `local` is the reader schema; without, the writer schema.
    Avro {
        local: Option<Arc<avro::AvroSchema>>,
    },
    /// Without a registry: the message every record is.
    Protobuf {
        local: Option<prost_reflect::MessageDescriptor>,
    },
    JsonSchema,
}

impl Format {
    pub fn name(&self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Avro { .. } => "avro",
            Format::Protobuf { .. } => "protobuf",
            Format::JsonSchema => "json_schema",
        }
    }

    /// Whether two routes read a message the same way (it is then decoded once for both).
    pub fn same(&self, other: &Format) -> bool {
        match (self, other) {
            (Format::Json, Format::Json) | (Format::JsonSchema, Format::JsonSchema) => true,
            (Format::Avro { local: a }, Format::Avro { local: b }) => match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            },
            (Format::Protobuf { local: a }, Format::Protobuf { local: b }) => a == b,
            _ => false,
        }
    }
}

/// What decoding needs besides the message: the registry (if configured), the token that
/// ends a wait for it, the size bound.
pub struct Decoding<'a> {
    pub registry: Option<&'a Registry>,
    pub stop: &'a CancellationToken,
    pub max_bytes: usize,
}

fn schema(reason: impl Into<String>) -> Parsed {
    Parsed::Invalid(Rejection::new("schema", reason))
}

/// Decodes a message as `format`. `Err(Abandoned)`: it waited for the registry until `stop`
/// (the message is neither final nor dead-lettered).
pub fn decode_as(msg: &Message, format: &Format, d: &Decoding<'_>) -> Result<Parsed, Abandoned> {
    if matches!(format, Format::Json) {
        return Ok(decode(msg, d.max_bytes));
    }
    if msg.payload.len() > d.max_bytes {
        return Ok(parse_payload(&msg.payload, d.max_bytes)); // too_large
    }
    let framed = match wire::unframe(&msg.payload) {
        Ok(f) => f,
        Err(why) => return Ok(schema(format!("{} record: {why}", format.name()))),
    };
    let id = framed.schema_id;
    let registered = match d.registry {
        Some(r) => match r.schema(id, d.stop)? {
            Ok(s) => Some(s),
            Err(why) => return Ok(schema(format!("schema id {id}: {why}"))),
        },
        None => None,
    };
    let wrong_type = |s: &Registered| {
        schema(format!(
            "schema id {id} is registered as {}; the route reads {}",
            s.kind(),
            format.name()
        ))
    };
    let value = match (format, registered.as_deref()) {
        (Format::Avro { local }, Some(Registered::Avro(writer))) => {
            writer.decode(framed.rest, local.as_deref(), d.max_bytes)
        }
        (
            Format::Avro {
                local: Some(writer),
            },
            None,
        ) => writer.decode(framed.rest, None, d.max_bytes),
        (Format::Protobuf { .. }, Some(Registered::Protobuf(file))) => {
            wire::message_indexes(framed.rest)
                .and_then(|(indexes, bytes)| protobuf::decode(&file.message(&indexes)?, bytes))
        }
        (
            Format::Protobuf {
                local: Some(message),
            },
            None,
        ) => wire::message_indexes(framed.rest)
            .and_then(|(_, bytes)| protobuf::decode(message, bytes)),
        (Format::JsonSchema, None | Some(Registered::Json)) => {
            return Ok(match parse_val(framed.rest) {
                Ok(v) => Parsed::Decoded(v, Box::new(extras(format, id))),
                Err(e) => schema(format!("schema id {id}: the payload is not JSON: {e}")),
            })
        }
        (_, Some(other)) => return Ok(wrong_type(other)),
        (_, None) => Err("no schema: configure schema_registry or a local schema".into()),
    };
    Ok(match value {
        Ok(v) => Parsed::Decoded(json_to_val(&v), Box::new(extras(format, id))),
        Err(why) => schema(format!("schema id {id}: {why}")),
    })
}

/// `$meta.format` and `$meta.schema_id`.
fn extras(format: &Format, id: u32) -> Map<String, Value> {
    Map::from_iter([
        ("format".to_string(), Value::String(format.name().into())),
        ("schema_id".to_string(), Value::from(id)),
    ])
}

/// Decodes a JSON message for its routes (CloudEvents recognised).
pub fn decode(msg: &Message, max_bytes: usize) -> Parsed {
    if cloudevents::is_structured(&msg.headers) && msg.payload.len() <= max_bytes {
        let event: Value = match serde_json::from_slice(&msg.payload) {
            Ok(v) => v,
            Err(e) => {
                return Parsed::Invalid(Rejection::new(
                    "not_json",
                    format!("a structured CloudEvent (content-type application/cloudevents+json) that is not JSON: {e}"),
                ))
            }
        };
        return match cloudevents::split_structured(event) {
            Ok((data, attributes)) => Parsed::Decoded(
                json_to_val(&data),
                Box::new(Map::from_iter([(
                    "cloudevent".to_string(),
                    Value::Object(attributes),
                )])),
            ),
            Err(e) => Parsed::Invalid(Rejection::new("not_cloudevent", e)),
        };
    }
    let parsed = parse_payload(&msg.payload, max_bytes);
    if !has_ce_header(msg) {
        return parsed;
    }
    match (parsed, cloudevents::binary_attributes(&msg.headers)) {
        (Parsed::Json(v), Some(attributes)) => Parsed::Decoded(
            v,
            Box::new(Map::from_iter([(
                "cloudevent".to_string(),
                Value::Object(attributes),
            )])),
        ),
        (parsed, _) => parsed,
    }
}

/// A cheap first look (no allocation) before reading the attributes: most messages have no
/// `ce_`/`ce-` header at all.
fn has_ce_header(msg: &Message) -> bool {
    msg.headers.iter().any(|(name, _)| {
        name.len() > 3
            && (name.as_bytes()[..3].eq_ignore_ascii_case(b"ce_")
                || name.as_bytes()[..3].eq_ignore_ascii_case(b"ce-"))
    })
}
