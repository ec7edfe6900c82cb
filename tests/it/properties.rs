//! Property tests on stable Rust (cargo-fuzz needs nightly): config parsing, template evaluation
//! over arbitrary JSON, and the sandbox's request verification. The offset tracker's model
//! check lives beside it (`src/commit/offsets.rs`). A smoke run is part of `scripts/test`;
//! run longer with `PROPTEST_CASES=100000 cargo test --release --test it properties::`.

use orceum_bridge::build::load_str;
use orceum_bridge::message::{Message, Origin};
use orceum_bridge::orceum::event::OrceumEvent;
use orceum_bridge::route::{parse_payload, Mapped};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::Arc;

const CONFIG: &str = r#"
orceum: { base_url: "http://127.0.0.1:9/v1", timeout: 2s }
apps:
  a: { app_id: app_a, secret: { env: S } }
sources:
  k: { kafka: { bootstrap_servers: "localhost:9092" } }
routes:
  - name: r
    source: k
    topics: [t]
    app: a
    filter: '.skip != true'
    event:
      installation_id: .user.id
      event_type: '.type // "x.y"'
      event_data: '.data'
      timestamp: .at
      priority: .priority
      metadata: '.meta'
"#;

fn env(n: &str) -> Option<String> {
    (n == "S").then(|| "whs_s".to_string())
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        (-1e12f64..1e12).prop_map(|f| json!(f)),
        "[a-z0-9 _.:+-]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("low"),
            Just("normal"),
            Just("high"),
            Just("critical"),
            Just("2024-01-15T12:00:00Z"),
            Just("2024-01-15T14:00:00+02:00")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("user".to_string()),
                    Just("id".to_string()),
                    Just("data".to_string()),
                    Just("type".to_string()),
                    Just("at".to_string()),
                    Just("priority".to_string()),
                    Just("meta".to_string()),
                    Just("skip".to_string()),
                    "[a-z]{1,5}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Whatever the text, loading a config returns a bridge or errors with a message: no panic.
    #[test]
    fn config_parsing_never_panics(cut in 0usize..600, insert in "[ -~\n]{0,12}", garbage in "[ -~\n]{0,200}") {
        let mut text = CONFIG.to_string();
        let at = cut.min(text.len());
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.insert_str(at, &insert);
        for t in [text.as_str(), garbage.as_str()] {
            if let Err(e) = load_str(t, "fuzz.yaml", env) {
                prop_assert!(!e.errors.is_empty());
                prop_assert!(e.errors.iter().all(|x| !x.message.is_empty()));
                prop_assert!(!e.to_string().contains("whs_s"), "a secret in an error");
            }
        }
    }

    /// Any JSON through a route: an event whose fields have the API's types, a skip, or a
    /// rejection with a reason — never a panic, never a malformed event.
    #[test]
    fn templates_over_arbitrary_json_yield_well_typed_events(v in json_value()) {
        let bridge = load_str(CONFIG, "c.yaml", env).unwrap();
        let route = &bridge.routes[0];
        let payload = serde_json::to_vec(&v).unwrap();
        let msg = Message {
            source: Arc::from("k"),
            origin: Origin::Kafka { topic: Arc::from("t"), partition: 0, offset: 1 },
            route: None,
            payload: payload.clone(),
            key: None,
            headers: vec![],
            timestamp: None,
        };
        match route.map(&msg, &parse_payload(&payload, 1 << 20)) {
            Mapped::Event(ev) => {
                prop_assert!(!ev.installation_id.trim().is_empty());
                prop_assert!(!ev.event_type.trim().is_empty());
                prop_assert!(ev.timestamp.ends_with('Z'));
                let body = ev.to_body();
                let back: OrceumEvent = serde_json::from_slice(&body).unwrap();
                prop_assert_eq!(&back, &ev);
                let value: Value = serde_json::from_slice(&body).unwrap();
                prop_assert_eq!(serde_json::to_vec(&value).unwrap(), body, "compact and in order");
                prop_assert_eq!(&value["metadata"]["source"], &json!("kafka:t/0@1"));
            }
            Mapped::Skipped(reason) => prop_assert!(!reason.is_empty()),
            Mapped::Rejected(r) => prop_assert!(!r.reason.is_empty() && !r.kind.is_empty()),
        }
    }
}

/// The API's body rules, written independently of the sandbox: a compact JSON object with only
/// the spec's fields, in the spec's order, each of its type.
fn follows_the_spec(body: &[u8]) -> bool {
    const ORDER: [&str; 6] = [
        "installation_id",
        "event_type",
        "event_data",
        "timestamp",
        "priority",
        "metadata",
    ];
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    if serde_json::to_vec(&obj).unwrap() != body {
        return false;
    }
    let positions: Option<Vec<usize>> = obj
        .keys()
        .map(|k| ORDER.iter().position(|f| f == k))
        .collect();
    let Some(positions) = positions else {
        return false;
    };
    if positions.windows(2).any(|w| w[0] > w[1]) {
        return false;
    }
    let non_empty = |f: &str| {
        obj.get(f)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let timestamp_ok = obj
        .get("timestamp")
        .and_then(Value::as_str)
        .is_some_and(|t| t.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(t).is_ok());
    let priority_ok = match obj.get("priority") {
        None => true,
        Some(Value::String(p)) => ["low", "normal", "high", "critical"].contains(&p.as_str()),
        Some(_) => false,
    };
    non_empty("installation_id")
        && non_empty("event_type")
        && obj.get("event_data").is_some_and(Value::is_object)
        && timestamp_ok
        && priority_ok
        && obj.get("metadata").is_none_or(Value::is_object)
}

/// Arbitrary (correctly signed) bodies: the sandbox answers 200 exactly when the body is a
/// compact, well-typed event, 422 otherwise — never a 5xx.
#[tokio::test]
async fn the_sandbox_verdict_matches_the_contract_for_arbitrary_bodies() {
    use orceum_bridge::orceum::sign::signature_header;
    use orceum_bridge::tools::sandbox::{self, SandboxConfig};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let stop = tokio_util::sync::CancellationToken::new();
    let sb = sandbox::start(
        SandboxConfig {
            apps: std::collections::HashMap::from([("app".to_string(), "whs_k".to_string())]),
            ..SandboxConfig::default()
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        stop.clone(),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/apps/app/events", sb.base_url());
    let cases: usize = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::deterministic();
    let valid = r#"{"installation_id":"i","event_type":"a.b","event_data":{"x":1},"timestamp":"2024-01-15T12:00:00Z","priority":"high"}"#;
    let (mut ok, mut rejected) = (0, 0);
    for i in 0..cases {
        let body: Vec<u8> = if i % 3 == 0 {
            // Mutate a valid body by one byte.
            let mut b = valid.as_bytes().to_vec();
            let pos = (i * 7919) % b.len();
            b[pos] = b"{}\":, axZ0"[i % 10];
            b
        } else {
            let v = json_value().new_tree(&mut runner).unwrap().current();
            let mut obj = json!({"installation_id": "i", "event_type": "a.b", "event_data": {}, "timestamp": "2024-01-15T12:00:00Z"});
            if let (Value::Object(m), Value::Object(extra)) = (&mut obj, &v) {
                for (k, x) in extra.iter().take(2) {
                    m.insert(k.clone(), x.clone());
                }
            } else {
                obj = v;
            }
            serde_json::to_vec(&obj).unwrap()
        };
        let resp = http
            .post(&url)
            .header("Content-Type", "application/json")
            .header("X-Orceum-Webhook-Secret", "whs_k")
            .header("X-Hub-Signature-256", signature_header(b"whs_k", &body))
            .header("X-Timestamp", "2024-01-15T12:00:00Z")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let expected_ok = follows_the_spec(&body);
        assert!(
            status == 200 || status == 422,
            "case {i}: {status} for {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            status == 200,
            expected_ok,
            "case {i}: answered {status} for {}",
            String::from_utf8_lossy(&body)
        );
        if status == 200 {
            ok += 1;
        } else {
            rejected += 1;
        }
    }
    eprintln!("{cases} bodies: {ok} accepted, {rejected} rejected");
    assert!(ok > 0 && rejected > 0);
    stop.cancel();
}
