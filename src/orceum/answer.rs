//! What Orceum says it did with an event: the body of a 2xx answer to "Push an Event"
//! (`{"event_id": …, "status": …, "action_taken": …}`, orceum-push-api.txt).
//!
//! The body comes from outside and is only information: the event is delivered whatever it
//! says. So parsing never fails and never panics — a missing, truncated, non-JSON or oddly
//! typed body is an answer with action [`Action::Unknown`] — and nothing of the raw text
//! survives except an `event_id` that is a short token of visible ASCII without anything
//! shaped like a webhook secret. A metric label is always one of [`Action::label`]'s five
//! values, never the string Orceum sent.

use serde_json::Value;

/// The longest `event_id` kept. Orceum's are like `evt_abc123`; a longer one is not an id a
/// support ticket can quote, and it would go into every DEBUG line.
pub const MAX_EVENT_ID_CHARS: usize = 128;

/// `action_taken`: what Orceum did with the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A push notification was sent, no new conversation.
    Notified,
    /// A new conversation was opened with the event's context.
    ConversationStarted,
    /// Queued for digest delivery.
    Queued,
    /// Filtered out (low priority, quiet hours, bouncer decision).
    Ignored,
    /// No `action_taken`, a value this bridge does not know, or no JSON answer at all.
    Unknown,
}

impl Action {
    /// Every action, in the order of the API document, then `Unknown`.
    pub const ALL: [Action; 5] = [
        Action::Notified,
        Action::ConversationStarted,
        Action::Queued,
        Action::Ignored,
        Action::Unknown,
    ];

    /// The `action` label of `orceum_bridge_orceum_actions_total`.
    pub fn label(self) -> &'static str {
        match self {
            Action::Notified => "notified",
            Action::ConversationStarted => "conversation_started",
            Action::Queued => "queued",
            Action::Ignored => "ignored",
            Action::Unknown => "unknown",
        }
    }

    /// The API's spelling (`NOTIFIED`, …); `None` for `Unknown`, which Orceum never sends.
    pub fn api_name(self) -> Option<&'static str> {
        match self {
            Action::Notified => Some("NOTIFIED"),
            Action::ConversationStarted => Some("CONVERSATION_STARTED"),
            Action::Queued => Some("QUEUED"),
            Action::Ignored => Some("IGNORED"),
            Action::Unknown => None,
        }
    }

    /// The action an `action_taken` value names; `Unknown` for any other string. ASCII case is
    /// ignored: a differently cased value still says what happened.
    pub fn from_api(value: &str) -> Action {
        Action::ALL
            .into_iter()
            .find(|a| a.api_name().is_some_and(|n| n.eq_ignore_ascii_case(value)))
            .unwrap_or(Action::Unknown)
    }
}

/// `status`: where the event is in Orceum's pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Queued,
    Processing,
    Processed,
    Ignored,
    Deferred,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Queued,
        Status::Processing,
        Status::Processed,
        Status::Ignored,
        Status::Deferred,
    ];

    /// The API's spelling (`QUEUED`, …).
    pub fn api_name(self) -> &'static str {
        match self {
            Status::Queued => "QUEUED",
            Status::Processing => "PROCESSING",
            Status::Processed => "PROCESSED",
            Status::Ignored => "IGNORED",
            Status::Deferred => "DEFERRED",
        }
    }

    /// The status a `status` value names; `None` for any other string (case as for
    /// [`Action::from_api`]).
    pub fn from_api(value: &str) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|s| s.api_name().eq_ignore_ascii_case(value))
    }
}

/// One 2xx answer, as far as it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub action: Action,
    pub status: Option<Status>,
    /// Orceum's id of the event, for support; `None` when absent or not a short visible token.
    pub event_id: Option<String>,
}

impl Answer {
    /// The answer of no usable body: delivered, nothing known of what Orceum did.
    pub const UNKNOWN: Answer = Answer {
        action: Action::Unknown,
        status: None,
        event_id: None,
    };

    /// Reads a (bounded) 2xx body. Never fails: whatever cannot be read is unknown.
    pub fn parse(body: &[u8]) -> Answer {
        // serde_json bounds its recursion, so a deeply nested body is an error, not a crash;
        // the caller has bounded the length.
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
            return Answer::UNKNOWN;
        };
        let text = |name: &str| fields.get(name).and_then(Value::as_str);
        Answer {
            action: text("action_taken").map_or(Action::Unknown, Action::from_api),
            status: text("status").and_then(Status::from_api),
            event_id: text("event_id")
                .filter(|id| is_token(id))
                .map(str::to_string),
        }
    }
}

/// A short run of visible ASCII: safe in a log line (no newline, escape sequence or
/// bidirectional override can forge or hide output), and not carrying a webhook secret back
/// (an answer that echoes the request's headers must not put one into the logs).
fn is_token(id: &str) -> bool {
    (1..=MAX_EVENT_ID_CHARS).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_graphic())
        && !id.contains("whs_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Answer {
        Answer::parse(body.as_bytes())
    }

    #[test]
    fn the_documented_example_is_read_whole() {
        let a = parse(
            r#"{"event_id":"evt_abc123","status":"QUEUED","action_taken":"CONVERSATION_STARTED"}"#,
        );
        assert_eq!(
            a,
            Answer {
                action: Action::ConversationStarted,
                status: Some(Status::Queued),
                event_id: Some("evt_abc123".into()),
            }
        );
    }

    #[test]
    fn every_action_taken_value_has_its_own_bounded_label() {
        for (value, action, label) in [
            ("NOTIFIED", Action::Notified, "notified"),
            (
                "CONVERSATION_STARTED",
                Action::ConversationStarted,
                "conversation_started",
            ),
            ("QUEUED", Action::Queued, "queued"),
            ("IGNORED", Action::Ignored, "ignored"),
        ] {
            let a = parse(&format!(r#"{{"action_taken":"{value}"}}"#));
            assert_eq!(a.action, action, "{value}");
            assert_eq!(a.action.label(), label);
            assert_eq!(action.api_name(), Some(value));
        }
        assert_eq!(
            parse(r#"{"action_taken":"notified"}"#).action,
            Action::Notified
        );
        // Anything else is one label, never the string that came.
        for odd in ["ESCALATED", "", "NOTIFIED ", "{{app}}"] {
            let a = parse(&format!(r#"{{"action_taken":"{odd}"}}"#));
            assert_eq!(a.action, Action::Unknown, "{odd:?}");
        }
        let labels: std::collections::HashSet<_> = Action::ALL.map(Action::label).into();
        assert_eq!(labels.len(), 5);
    }

    #[test]
    fn every_status_value_is_read_and_others_are_none() {
        for s in Status::ALL {
            let a = parse(&format!(r#"{{"status":"{}"}}"#, s.api_name()));
            assert_eq!(a.status, Some(s));
        }
        assert_eq!(parse(r#"{"status":"LOST"}"#).status, None);
    }

    #[test]
    fn an_absent_or_non_json_body_is_unknown() {
        for body in [
            "",
            "OK",
            "<html>accepted</html>",
            "{\"action_taken\":\"NOTIFIED\"",
            "null",
            "[]",
            "\"NOTIFIED\"",
            "42",
            "{}",
        ] {
            assert_eq!(parse(body), Answer::UNKNOWN, "{body:?}");
        }
        assert_eq!(Answer::parse(&[0xff, 0xfe, b'{']), Answer::UNKNOWN);
    }

    #[test]
    fn wrongly_typed_fields_are_unknown_and_the_others_are_kept() {
        let a = parse(r#"{"event_id":7,"status":["QUEUED"],"action_taken":"IGNORED"}"#);
        assert_eq!(
            a,
            Answer {
                action: Action::Ignored,
                status: None,
                event_id: None
            }
        );
        let a = parse(r#"{"event_id":"evt_1","status":"PROCESSED","action_taken":{"x":1}}"#);
        assert_eq!(a.action, Action::Unknown);
        assert_eq!(a.status, Some(Status::Processed));
        assert_eq!(a.event_id.as_deref(), Some("evt_1"));
        let a = parse(r#"{"event_id":null,"status":null,"action_taken":null}"#);
        assert_eq!(a, Answer::UNKNOWN);
    }

    #[test]
    fn only_a_short_visible_ascii_event_id_is_kept() {
        let id = |v: &str| parse(&serde_json::json!({ "event_id": v }).to_string()).event_id;
        assert_eq!(id("evt_abc123").as_deref(), Some("evt_abc123"));
        let longest = "e".repeat(MAX_EVENT_ID_CHARS);
        assert_eq!(id(&longest), Some(longest.clone()));
        for odd in [
            String::new(),
            format!("{longest}e"),
            "x".repeat(4000),
            "evt_1\nlevel=ERROR forged".into(),
            "evt_\u{1b}[31mred".into(),
            "evt_\u{202e}evil".into(),
            "evt é".into(),
            "evt 1".into(),
            "evt_whs_live_secret123".into(),
        ] {
            assert_eq!(id(&odd), None, "{odd:?}");
        }
    }

    #[test]
    fn a_deeply_nested_or_huge_body_never_panics() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(parse(&deep), Answer::UNKNOWN);
        let nested = format!(
            r#"{{"action_taken":"QUEUED","x":{}1{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(parse(&nested), Answer::UNKNOWN);
        // Duplicate keys: the last one wins, as with any JSON reader that keeps one.
        let dup = parse(r#"{"action_taken":"QUEUED","action_taken":"IGNORED"}"#);
        assert_eq!(dup.action, Action::Ignored);
    }
}
