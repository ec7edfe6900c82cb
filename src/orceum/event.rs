//! The body of a push: [`OrceumEvent`], serialised compactly in the spec's field order.
//!
//! The order (`installation_id, event_type, event_data, timestamp, priority, metadata`) is the
//! struct's field order; serde_json writes no whitespace. The bytes produced here are the bytes
//! that are signed and sent: nothing re-serialises them afterwards.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// Event urgency, as the API defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Low,
    Normal,
    High,
    Critical,
}

impl Priority {
    pub const ALL: [Priority; 4] = [Self::Low, Self::Normal, Self::High, Self::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not one of low|normal|high|critical"))
    }
}

/// One event for `POST /apps/{app_id}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrceumEvent {
    pub installation_id: String,
    pub event_type: String,
    pub event_data: Map<String, Value>,
    pub timestamp: String,
    pub priority: Priority,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub metadata: Option<Map<String, Value>>,
}

impl OrceumEvent {
    /// The exact request body: compact JSON in field order.
    pub fn to_body(&self) -> Vec<u8> {
        // Serialising plain strings and JSON maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// RFC 3339 UTC with `Z`, seconds precision unless the instant has a fraction.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Accepts an RFC 3339 string with any offset, or epoch seconds (integer or fraction).
pub fn normalise_timestamp(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| format_timestamp(t.with_timezone(&Utc)))
            .map_err(|e| format!("{s:?} is not an RFC 3339 timestamp ({e}); use e.g. 2024-01-15T12:00:00Z or epoch seconds")),
        Value::Number(n) => {
            let secs = n.as_f64().unwrap_or(f64::NAN);
            if !secs.is_finite() || !(0.0..=253_402_300_799.0).contains(&secs) {
                return Err(format!("{n} is not a usable epoch-seconds timestamp"));
            }
            // f64 carries ~16 digits: keep microseconds, not float noise (…00.122999907).
            let micros = (secs * 1e6).round() as i64;
            let whole = micros.div_euclid(1_000_000);
            let nanos = (micros.rem_euclid(1_000_000) * 1_000) as u32;
            DateTime::from_timestamp(whole, nanos.min(999_999_999))
                .map(format_timestamp)
                .ok_or_else(|| format!("{n} is not a usable epoch-seconds timestamp"))
        }
        other => Err(format!(
            "{} is not a timestamp; expected an RFC 3339 string or epoch seconds",
            describe(other)
        )),
    }
}

/// A short description of a JSON value's type, for error messages.
pub fn describe(v: &Value) -> String {
    let text = v.to_string();
    let shown: String = text.chars().take(40).collect();
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    if text.len() > shown.len() {
        format!("{kind} ({shown}…)")
    } else {
        format!("{kind} ({shown})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_is_compact_and_in_spec_field_order() {
        let ev = OrceumEvent {
            installation_id: "inst_abc123".into(),
            event_type: "task.completed".into(),
            event_data: json!({"task_id": "task_789", "title": "Send Q4 report"})
                .as_object()
                .cloned()
                .unwrap(),
            timestamp: "2024-01-15T12:00:00Z".into(),
            priority: Priority::Normal,
            metadata: Some(
                json!({"source": "kafka:tasks/2@1834"})
                    .as_object()
                    .cloned()
                    .unwrap(),
            ),
        };
        assert_eq!(
            String::from_utf8(ev.to_body()).unwrap(),
            r#"{"installation_id":"inst_abc123","event_type":"task.completed","event_data":{"task_id":"task_789","title":"Send Q4 report"},"timestamp":"2024-01-15T12:00:00Z","priority":"normal","metadata":{"source":"kafka:tasks/2@1834"}}"#
        );
    }

    #[test]
    fn timestamps_are_normalised_to_utc_z() {
        assert_eq!(
            normalise_timestamp(&json!("2024-01-15T14:00:00+02:00")).unwrap(),
            "2024-01-15T12:00:00Z"
        );
        assert_eq!(
            normalise_timestamp(&json!(1705320000)).unwrap(),
            "2024-01-15T12:00:00Z"
        );
        assert_eq!(
            normalise_timestamp(&json!(1705320000.5)).unwrap(),
            "2024-01-15T12:00:00.500Z"
        );
        assert_eq!(
            normalise_timestamp(&json!(1705320000.123)).unwrap(),
            "2024-01-15T12:00:00.123Z"
        );
        assert!(normalise_timestamp(&json!("yesterday")).is_err());
        assert!(normalise_timestamp(&json!(true)).is_err());
    }

    #[test]
    fn priority_parses_only_the_four_values() {
        assert_eq!("high".parse::<Priority>().unwrap(), Priority::High);
        assert!("urgent"
            .parse::<Priority>()
            .unwrap_err()
            .contains("low|normal|high|critical"));
    }
}
