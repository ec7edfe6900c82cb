//! CloudEvents (<https://cloudevents.io>, spec 1.0) in the two modes buses carry them:
//!
//! - **binary**: the attributes are headers (`ce_id`, `ce_type`, … on Kafka; `Ce-Id`,
//!   `Ce-Type`, … on NATS, names case-insensitive), `content-type` is `datacontenttype`, and
//!   the payload is the data;
//! - **structured**: `content-type: application/cloudevents+json`, the payload is one JSON
//!   object with the attributes and `data` (or `data_base64`).
//!
//! Either way the templates read the data as their input and the attributes as
//! `$meta.cloudevent` (`id`, `source`, `type`, `subject`, `time`, `datacontenttype`,
//! `specversion`, and any extension), so one cookbook route serves both modes on both buses.

use base64::Engine;
use serde_json::{Map, Value};

/// The attributes an event's headers carry in binary mode (`None`: not a binary-mode
/// CloudEvent: no `specversion` header).
pub fn binary_attributes(headers: &[(String, Option<Vec<u8>>)]) -> Option<Map<String, Value>> {
    let mut attributes = Map::new();
    let mut content_type = None;
    for (name, value) in headers {
        let Some(value) = value.as_deref().and_then(|v| std::str::from_utf8(v).ok()) else {
            continue;
        };
        let lower = name.to_ascii_lowercase();
        if let Some(attribute) = lower
            .strip_prefix("ce_")
            .or_else(|| lower.strip_prefix("ce-"))
        {
            if !attribute.is_empty() && attribute.len() <= 64 {
                attributes
                    .entry(attribute.to_string())
                    .or_insert_with(|| Value::String(value.to_string()));
            }
        } else if lower == "content-type" {
            content_type = Some(value.to_string());
        }
    }
    if !attributes.contains_key("specversion") {
        return None;
    }
    if let Some(ct) = content_type {
        attributes
            .entry("datacontenttype".to_string())
            .or_insert(Value::String(ct));
    }
    Some(attributes)
}

/// Whether the headers say structured mode (`content-type: application/cloudevents+json`).
pub fn is_structured(headers: &[(String, Option<Vec<u8>>)]) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("content-type")
            && value
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok())
                .is_some_and(|v| {
                    v.trim_start()
                        .to_ascii_lowercase()
                        .starts_with("application/cloudevents+json")
                })
    })
}

/// A structured-mode event split into its data (the template input) and its attributes.
/// `data_base64` is decoded, and read as JSON when it is JSON (else it is the text, or an
/// error when it is not UTF-8).
pub fn split_structured(event: Value) -> Result<(Value, Map<String, Value>), String> {
    let Value::Object(mut attributes) = event else {
        return Err("a structured CloudEvent must be a JSON object".into());
    };
    if !attributes.contains_key("specversion") {
        return Err("a structured CloudEvent needs specversion".into());
    }
    let data = match (attributes.remove("data"), attributes.remove("data_base64")) {
        (Some(data), None) => data,
        (None, Some(Value::String(b64))) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("data_base64 is not base64: {e}"))?;
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) => Value::String(
                    String::from_utf8(bytes)
                        .map_err(|_| "data_base64 is neither JSON nor UTF-8 text".to_string())?,
                ),
            }
        }
        (None, Some(_)) => return Err("data_base64 must be a string".into()),
        (Some(_), Some(_)) => return Err("a CloudEvent has data or data_base64, not both".into()),
        (None, None) => Value::Null,
    };
    Ok((data, attributes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, Option<Vec<u8>>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn binary_mode_reads_kafka_and_nats_header_names() {
        let kafka = headers(&[
            ("ce_specversion", "1.0"),
            ("ce_id", "e-1"),
            ("ce_type", "order.shipped"),
            ("ce_source", "/orders"),
            ("content-type", "application/json"),
            ("other", "x"),
        ]);
        let a = binary_attributes(&kafka).unwrap();
        assert_eq!(a["id"], "e-1");
        assert_eq!(a["type"], "order.shipped");
        assert_eq!(a["datacontenttype"], "application/json");
        assert!(!a.contains_key("other"));
        let nats = headers(&[
            ("Ce-Specversion", "1.0"),
            ("Ce-Time", "2026-12-01T10:00:00Z"),
        ]);
        assert_eq!(
            binary_attributes(&nats).unwrap()["time"],
            "2026-12-01T10:00:00Z"
        );
        assert!(binary_attributes(&headers(&[("ce_id", "no-specversion")])).is_none());
    }

    #[test]
    fn structured_mode_splits_data_from_attributes() {
        assert!(is_structured(&headers(&[(
            "Content-Type",
            "application/cloudevents+json; charset=utf-8"
        )])));
        assert!(!is_structured(&headers(&[(
            "content-type",
            "application/json"
        )])));
        let (data, attrs) = split_structured(serde_json::json!({
            "specversion": "1.0", "id": "e-2", "type": "t", "source": "/s", "data": {"k": 1}
        }))
        .unwrap();
        assert_eq!(data, serde_json::json!({"k": 1}));
        assert_eq!(attrs["id"], "e-2");
        assert!(!attrs.contains_key("data"));
        let (data, _) = split_structured(serde_json::json!({
            "specversion": "1.0", "data_base64": "eyJrIjoyfQ=="
        }))
        .unwrap();
        assert_eq!(
            data,
            serde_json::json!({"k": 2}),
            "base64 JSON is read as JSON"
        );
        assert!(split_structured(serde_json::json!({"id": "x"})).is_err());
        assert!(split_structured(serde_json::json!([1])).is_err());
    }
}
