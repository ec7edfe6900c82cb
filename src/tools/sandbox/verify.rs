//! What the sandbox checks of every request, in the order the module docs list: headers, the
//! signature over the exact body bytes, compact JSON, the spec's fields in the spec's order.
//! Pure functions over headers and bytes; every failure is a [`Rejection`] with its status.

use super::{reject, Rejection};
use crate::orceum::event::Priority;
use crate::orceum::sign;
use axum::http::{HeaderMap, StatusCode};
use chrono::DateTime;
use serde_json::{Map, Value};

pub(super) const SECRET_HEADER: &str = "x-orceum-webhook-secret";
pub(super) const SIGNATURE_HEADER: &str = "x-hub-signature-256";
pub(super) const TIMESTAMP_HEADER: &str = "x-timestamp";
pub(super) const REDACTED: &str = "[redacted]";

/// The body's fields in the order the bridge promises; the first four are required.
pub(super) const FIELD_ORDER: [&str; 6] = [
    "installation_id",
    "event_type",
    "event_data",
    "timestamp",
    "priority",
    "metadata",
];
pub(super) const FIELD_ORDER_TEXT: &str =
    "installation_id, event_type, event_data, timestamp, priority, metadata";

/// Steps 3–5: secret, signature, `X-Timestamp`. Every failure is a 401.
pub(super) fn check_auth_headers(
    app_id: &str,
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Rejection> {
    let unauthorized = |reason: String| reject(StatusCode::UNAUTHORIZED, reason);

    let Some(sent) = headers.get(SECRET_HEADER) else {
        return Err(unauthorized(
            "missing X-Orceum-Webhook-Secret header".to_string(),
        ));
    };
    // Never echo the sent value: it may be a real secret pointed at the wrong app.
    if !constant_time_eq(sent.as_bytes(), secret) {
        return Err(unauthorized(format!(
            "X-Orceum-Webhook-Secret does not match the secret of app {app_id:?}"
        )));
    }

    let Some(signature) = header_str(headers, SIGNATURE_HEADER) else {
        return Err(unauthorized(
            "missing X-Hub-Signature-256 header; send sha256=<lowercase hex HMAC-SHA256 of the body>"
                .to_string(),
        ));
    };
    let well_formed = signature.strip_prefix("sha256=").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if !well_formed {
        return Err(unauthorized(
            "X-Hub-Signature-256 must be sha256= followed by 64 lowercase hex digits".to_string(),
        ));
    }
    if !sign::verify(secret, body, signature) {
        return Err(unauthorized(format!(
            "X-Hub-Signature-256 is not the HMAC-SHA256 of the exact body bytes under the secret \
             of app {app_id:?}; sign the bytes you send, after serialising"
        )));
    }

    match header_str(headers, TIMESTAMP_HEADER) {
        None => Err(unauthorized(
            "missing X-Timestamp header; send the send time as RFC 3339 UTC, e.g. 2024-01-15T12:00:00Z"
                .to_string(),
        )),
        Some(ts) if !is_rfc3339_utc_z(ts) => Err(unauthorized(format!(
            "X-Timestamp {ts:?} is not RFC 3339 UTC ending in Z, e.g. 2024-01-15T12:00:00Z"
        ))),
        Some(_) => Ok(()),
    }
}

/// Compact means byte-identical to serde_json's serialisation of the parsed value (with
/// `preserve_order`, so key order is kept): that is what the bridge signs and sends.
pub(super) fn check_compact(value: &Value, body: &[u8]) -> Result<(), Rejection> {
    // Serialising a `Value` cannot fail; an empty result would only fail the comparison.
    let compact = serde_json::to_vec(value).unwrap_or_default();
    if compact == body {
        return Ok(());
    }
    let at = body
        .iter()
        .zip(&compact)
        .position(|(a, b)| a != b)
        .unwrap_or(body.len().min(compact.len()));
    let near = String::from_utf8_lossy(&body[at.saturating_sub(16)..(at + 16).min(body.len())]);
    Err(reject(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "body is not compact JSON: it differs from its compact serialisation at byte {at} \
             (near {near:?}); send no whitespace, no escapes serde_json would not write, \
             no duplicate keys"
        ),
    ))
}

/// Step 6's field rules. Every problem is reported at once, joined by "; ".
pub(super) fn check_fields(value: &Value) -> Result<(), String> {
    let Some(obj) = value.as_object() else {
        return Err(format!("body must be a JSON object, got {}", kind(value)));
    };
    let mut problems = Vec::new();

    // Order: each known field must come after every known field before it.
    let mut furthest: Option<(usize, &str)> = None;
    for key in obj.keys() {
        match FIELD_ORDER.iter().position(|f| f == key) {
            None => problems.push(format!(
                "unknown field {key:?}; the fields are {FIELD_ORDER_TEXT}"
            )),
            Some(pos) => match furthest {
                Some((max, after)) if pos < max => problems.push(format!(
                    "field {key:?} comes after {after:?}; the order must be {FIELD_ORDER_TEXT}"
                )),
                _ => furthest = Some((pos, key)),
            },
        }
    }

    non_empty_string(obj, "installation_id", &mut problems);
    non_empty_string(obj, "event_type", &mut problems);
    match obj.get("event_data") {
        None => problems.push("missing required field \"event_data\" (an object)".to_string()),
        Some(Value::Object(_)) => {}
        Some(other) => problems.push(format!("event_data must be an object, got {}", kind(other))),
    }
    match obj.get("timestamp") {
        None => problems.push("missing required field \"timestamp\"".to_string()),
        Some(Value::String(ts)) if is_rfc3339_utc_z(ts) => {}
        Some(other) => problems.push(format!(
            "timestamp {other} is not an RFC 3339 UTC string ending in Z, e.g. \"2024-01-15T12:00:00Z\""
        )),
    }
    match obj.get("priority") {
        None => {}
        Some(Value::String(p)) => {
            if let Err(e) = p.parse::<Priority>() {
                problems.push(format!("priority: {e}"));
            }
        }
        Some(other) => problems.push(format!(
            "priority must be a string (low|normal|high|critical), got {}",
            kind(other)
        )),
    }
    match obj.get("metadata") {
        None | Some(Value::Object(_)) => {}
        Some(other) => problems.push(format!(
            "metadata must be an object when present, got {}",
            kind(other)
        )),
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

pub(super) fn non_empty_string(obj: &Map<String, Value>, field: &str, problems: &mut Vec<String>) {
    match obj.get(field) {
        None => problems.push(format!("missing required field {field:?}")),
        Some(Value::String(s)) if s.is_empty() => problems.push(format!("{field} is empty")),
        Some(Value::String(_)) => {}
        Some(other) => problems.push(format!("{field} must be a string, got {}", kind(other))),
    }
}

pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// RFC 3339, UTC, written with `T` and a trailing upper-case `Z` (chrono alone also accepts
/// offsets, a space or a lower-case `t`/`z`, which the spec's example form does not use).
pub(super) fn is_rfc3339_utc_z(s: &str) -> bool {
    s.as_bytes().get(10) == Some(&b'T')
        && s.ends_with('Z')
        && DateTime::parse_from_rfc3339(s).is_ok()
}

pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    // A non-UTF-8 value is treated like a wrong one, not a missing one.
    headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("<not valid UTF-8>"))
}

pub(super) fn recorded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = if name.as_str() == SECRET_HEADER {
                REDACTED.to_string()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_string(), value)
        })
        .collect()
}

/// Compares without an early exit, so response timing does not reveal how much of a guessed
/// secret was right. The length is not secret.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
