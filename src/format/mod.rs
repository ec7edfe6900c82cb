//! The payload formats, between a source and the routes: what the templates read as their
//! input, and what a format adds to `$meta`. JSON is the default; a CloudEvent (binary or
//! structured mode, [`cloudevents`]) gives its data as the input and its attributes as
//! `$meta.cloudevent`.

pub mod cloudevents;

use crate::message::Message;
use crate::route::template::json_to_val;
use crate::route::{parse_payload, Parsed, Rejection};
use serde_json::{Map, Value};

/// Decodes a message for its routes (once, shared by every route that reads it).
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
