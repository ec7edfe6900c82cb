//! Every bad input listed in docs/reliability.md, as a user meets it: configs through `check`
//! (a clear error with its path, exit 1), messages through `render` (dead-lettered with a reason,
//! exit 4 — in `run` the message is then committed and the partition moves on).

use std::io::Write;
use std::process::{Command, Stdio};

const GOOD: &str = r#"
apps:
  tasks: { app_id: app_1, secret: { env: BI_SECRET } }
sources:
  events: { kafka: { bootstrap_servers: "localhost:9092" } }
routes:
  - name: done
    source: events
    topics: [tasks]
    app: tasks
    event:
      installation_id: .user.id
      event_type: '"task.completed"'
      event_data: '{id: .id}'
      priority: .priority
delivery: { max_message_bytes: 2000 }
"#;

fn run(args: &[&str], config: &str, stdin: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orceum-bridge"));
    cmd.args(args)
        .arg("-c")
        .arg(&path)
        .env("BI_SECRET", "whs_bad_input")
        .env("NOT_WHS", "sk_live_123")
        .env_remove("BI_MISSING")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn bad_configs_are_refused_with_the_path_and_the_fix() {
    let cases: Vec<(&str, String, &str)> = vec![
        ("broken YAML", GOOD.replace("apps:", "apps: [").to_string(), "line"),
        ("unknown key", GOOD.replace("app: tasks\n", "app: tasks\n    topcis: [x]\n"), "unknown field `topcis`"),
        ("wrong type", GOOD.replace("max_message_bytes: 2000", "max_message_bytes: lots"), "delivery.max_message_bytes"),
        ("missing secret", GOOD.replace("env: BI_SECRET", "env: BI_MISSING"), "apps.tasks.secret: environment variable BI_MISSING is not set"),
        ("secret without whs_", GOOD.replace("env: BI_SECRET", "env: NOT_WHS"), "apps.tasks.secret: environment variable NOT_WHS does not start with whs_"),
        ("jq syntax error", GOOD.replace("'{id: .id}'", "'{id: .id'"), "routes[0].event.event_data: jq syntax error"),
        ("undefined jq function", GOOD.replace(".priority", "nosuch(.priority)"), "routes[0].event.priority: jq error: undefined function nosuch/1"),
        ("duplicate route names", GOOD.replace("delivery:", "  - { name: done, source: events, topics: [x], app: tasks, event: { installation_id: .i, event_type: '\"x\"', event_data: '{}' } }\ndelivery:"), "routes[1].name: \"done\" is used by an earlier route"),
        ("unknown app", GOOD.replace("app: tasks\n", "app: billing\n"), "routes[0].app: \"billing\" is not an app; defined: tasks"),
        ("unknown source", GOOD.replace("source: events\n", "source: bus\n"), "routes[0].source: \"bus\" is not a source; defined: events"),
        ("bad duration", GOOD.replace("delivery: {", "delivery: { shutdown_timeout: soon,"), "is not a duration"),
        ("plain http to a remote host", format!("orceum: {{ base_url: \"http://orceum.example.com/v1\" }}\n{GOOD}"), "orceum.base_url: plain http://"),
        ("bad Kafka property", GOOD.replace("localhost:9092\" }", "localhost:9092\", properties: { fetch.wait.max.mss: 5 } }"), "sources.events.kafka.properties: librdkafka refuses them"),
    ];
    for (name, config, expected) in cases {
        let (code, text) = run(&["check"], &config, b"");
        assert_eq!(code, Some(1), "{name}: exit code\n{text}");
        assert!(
            text.contains(expected),
            "{name}: expected {expected:?} in\n{text}"
        );
        assert!(
            !text.contains("sk_live_123"),
            "{name}: the secret value leaked"
        );
    }
}

#[test]
fn bad_messages_are_dead_lettered_with_their_reason() {
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let huge = format!(
        r#"{{"user":{{"id":"u"}},"id":1,"pad":"{}"}}"#,
        "x".repeat(3000)
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", b"".to_vec(), "DEAD-LETTER (not_json): message is empty"),
        ("not UTF-8", vec![0xff, 0xfe, 0x00], "DEAD-LETTER (not_utf8)"),
        ("not JSON", b"hello".to_vec(), "DEAD-LETTER (not_json)"),
        ("JSON but not an object", b"[1,2,3]".to_vec(), "DEAD-LETTER (template_error)"),
        ("too large", huge.into_bytes(), "DEAD-LETTER (too_large): message is more than 2000 bytes"),
        ("deeply nested", deep.into_bytes(), "DEAD-LETTER (not_json): message is not JSON: recursion limit exceeded"),
        ("installation_id missing", br#"{"id":1}"#.to_vec(), "DEAD-LETTER (invalid_field): event.installation_id: must be a non-empty string, got null"),
        ("installation_id a number", br#"{"user":{"id":7},"id":1}"#.to_vec(), "event.installation_id: must be a non-empty string, got a number (7)"),
        ("bad priority", br#"{"user":{"id":"u"},"id":1,"priority":"urgent"}"#.to_vec(), "event.priority: \"urgent\" is not one of low|normal|high|critical"),
        ("priority of the wrong type", br#"{"user":{"id":"u"},"id":1,"priority":3}"#.to_vec(), "event.priority: must be one of low|normal|high|critical, got a number (3)"),
    ];
    for (name, input, expected) in cases {
        let (code, text) = run(&["render", "--route", "done"], GOOD, &input);
        assert_eq!(code, Some(4), "{name}: exit code\n{text}");
        assert!(
            text.contains(expected),
            "{name}: expected {expected:?} in\n{text}"
        );
    }
    // And a good one goes through.
    let (code, text) = run(
        &["render", "--route", "done"],
        GOOD,
        br#"{"user":{"id":"u"},"id":1,"priority":"high"}"#,
    );
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn bad_timestamps_and_event_data_are_dead_lettered() {
    let config = GOOD
        .replace(
            "      priority: .priority\n",
            "      priority: .priority\n      timestamp: .at\n",
        )
        .replace("'{id: .id}'", ".data");
    let cases: Vec<(&str, &[u8], &str)> = vec![
        (
            "timestamp not RFC 3339",
            br#"{"user":{"id":"u"},"data":{},"at":"yesterday"}"#,
            "event.timestamp: \"yesterday\" is not an RFC 3339 timestamp",
        ),
        (
            "timestamp a boolean",
            br#"{"user":{"id":"u"},"data":{},"at":true}"#,
            "event.timestamp: a boolean (true) is not a timestamp",
        ),
        (
            "event_data not an object",
            br#"{"user":{"id":"u"},"data":[1],"at":1705320000}"#,
            "event.event_data: must be an object, got an array ([1])",
        ),
    ];
    for (name, input, expected) in cases {
        let (code, text) = run(&["render", "--route", "done"], &config, input);
        assert_eq!(code, Some(4), "{name}: exit code\n{text}");
        assert!(
            text.contains(expected),
            "{name}: expected {expected:?} in\n{text}"
        );
    }
}
