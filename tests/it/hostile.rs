//! Hostile input, as an attacker or a careless operator meets the bridge: environment values that
//! try to rewrite the config, secrets in the wrong place, duplicate keys, templates that reach
//! for the environment, payloads that would end up in errors. Each case asserts the exact
//! outcome and that no secret or payload value appears in anything printed.

use orceum_bridge::build::load_str;
use orceum_bridge::config::SourceConfig;
use std::io::Write;
use std::process::{Command, Stdio};

const SECRET: &str = "whs_hostile_secret_value";

const BASE: &str = r#"
apps:
  tasks: { app_id: app_1, secret: { env: HOSTILE_SECRET } }
sources:
  events:
    kafka:
      bootstrap_servers: "localhost:9092"
      properties:
        security.protocol: SASL_SSL
        sasl.mechanism: PLAIN
        sasl.username: bridge
        sasl.password: "${KAFKA_PASSWORD}"
routes:
  - name: done
    source: events
    topics: [tasks]
    app: tasks
    event:
      installation_id: .user.id
      event_type: '"task.completed"'
      event_data: 'EVENT_DATA'
"#;

fn config(event_data: &str) -> String {
    BASE.replace("EVENT_DATA", event_data)
}

/// `orceum-bridge ARGS -c CONFIG` with `stdin`, at `RUST_LOG=trace`: exit code and everything
/// printed.
fn run(args: &[&str], config: &str, env: &[(&str, &str)], stdin: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orceum-bridge"));
    cmd.args(args)
        .arg("-c")
        .arg(&path)
        .env("RUST_LOG", "trace")
        .env("HOSTILE_SECRET", SECRET)
        .env("KAFKA_PASSWORD", "plain-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn an_environment_value_cannot_rewrite_the_config() {
    // The documented attack: a password that closes its quote and adds a key.
    let evil = "x\"\n        security.protocol: \"PLAINTEXT";
    let bridge = load_str(&config("{id}"), "c.yaml", |n| match n {
        "HOSTILE_SECRET" => Some(SECRET.to_string()),
        "KAFKA_PASSWORD" => Some(evil.to_string()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let Some(SourceConfig::Kafka(k)) = bridge.sources.get("events") else {
        panic!("no kafka source")
    };
    assert_eq!(
        k.properties["security.protocol"],
        yaml_serde::Value::String("SASL_SSL".into()),
        "the protocol is the config's, not the environment's"
    );
    assert_eq!(
        k.properties["sasl.password"],
        yaml_serde::Value::String(evil.into()),
        "the whole value is the password"
    );
    assert_eq!(k.properties.len(), 4, "no key added");
}

#[test]
fn a_secret_in_the_wrong_place_is_refused_without_printing_it() {
    let inline = config("{id}").replace(
        "secret: { env: HOSTILE_SECRET }",
        &format!("secret: {SECRET}"),
    );
    let (code, text) = run(&["check"], &inline, &[], b"");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("apps.tasks.secret: a secret is never written inline"),
        "{text}"
    );
    assert!(text.contains("{ env: VAR_NAME }"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    // Through ${VAR} into a field of the wrong type: the value is not printed either.
    let through = config("{id}").replace(
        "secret: { env: HOSTILE_SECRET }",
        "secret: \"${HOSTILE_SECRET}\"",
    );
    let (code, text) = run(&["check"], &through, &[], b"");
    assert_eq!(code, Some(1), "{text}");
    assert!(!text.contains(SECRET), "{text}");
}

#[test]
fn a_key_given_twice_is_an_error_naming_both_lines() {
    let twice = config("{id}").replace(
        "apps:\n  tasks: { app_id: app_1, secret: { env: HOSTILE_SECRET } }\n",
        "apps:\n  tasks: { app_id: app_1, secret: { env: HOSTILE_SECRET } }\n  tasks: { app_id: app_2, secret: { env: HOSTILE_SECRET } }\n",
    );
    let (code, text) = run(&["check"], &twice, &[], b"");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("duplicate key \"tasks\" at line 3 and line 4"),
        "{text}"
    );
}

#[test]
fn a_template_cannot_read_the_environment() {
    for expr in ["{s: env.HOSTILE_SECRET}", "{s: $ENV.HOSTILE_SECRET}", "env"] {
        let (code, text) = run(&["check"], &config(expr), &[], b"");
        assert_eq!(code, Some(1), "{expr}: {text}");
        assert!(
            text.contains("routes[0].event.event_data"),
            "{expr}: {text}"
        );
        assert!(text.contains("undefined"), "{expr}: {text}");
        assert!(!text.contains(SECRET), "{expr}: {text}");
    }
}

#[test]
fn a_failing_template_dead_letters_with_types_not_the_payload() {
    // The expression indexes into a string: jq's own message would quote the whole value.
    let payload = br#"{"id": 1, "user": {"id": "u1", "card": "4111111111111111"}}"#;
    let (code, text) = run(
        &["render", "--route", "done"],
        &config("{c: .user.card.last4}"),
        &[],
        payload,
    );
    assert_eq!(code, Some(4), "dead-lettered: {text}");
    assert!(
        text.contains("cannot index a string with \"last4\""),
        "{text}"
    );
    assert!(!text.contains("4111111111111111"), "{text}");
    // `debug` and `stderr` log nothing at trace level: the card number stays out.
    let (code, text) = run(
        &["render", "--route", "done"],
        &config("{id, u: (.user | debug | stderr | .id)}"),
        &[],
        payload,
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("4111111111111111"), "{text}");
}

#[test]
fn the_sandbox_warns_off_loopback_and_takes_secrets_from_the_environment() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_orceum-bridge"))
        .args([
            "sandbox",
            "--listen",
            "0.0.0.0:0",
            "--quiet",
            "--app",
            "app_1=env:SBX_SECRET",
        ])
        .env("SBX_SECRET", SECRET)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let done = line.starts_with("sandbox listening on ");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = lines.join("\n");
    assert!(
        text.contains("WARNING: the sandbox listens on 0.0.0.0:"),
        "{text}"
    );
    assert!(text.contains("sandbox listening on 0.0.0.0:"), "{text}");
    assert!(!text.contains(SECRET), "{text}");

    // A missing variable is an error naming it, before anything listens.
    let out = Command::new(env!("CARGO_BIN_EXE_orceum-bridge"))
        .args([
            "sandbox",
            "--listen",
            "127.0.0.1:0",
            "--app",
            "app_1=env:SBX_NOT_SET",
        ])
        .env_remove("SBX_NOT_SET")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("SBX_NOT_SET"), "{text}");
}

#[test]
fn a_template_that_could_run_without_end_is_refused_by_check() {
    for (expr, says) in [
        ("{items: [range(.count)]}", "`range` needs number literals"),
        ("def f: f; f", "calls itself"),
        ("{x: [limit(10; repeat(1))]}", "repeat"),
        (r#"{s: ("x" * .n)}"#, "`*` needs a literal"),
    ] {
        let (code, text) = run(&["check"], &config(expr), &[], b"");
        assert_eq!(code, Some(1), "{expr}: {text}");
        assert!(
            text.contains("routes[0].event.event_data"),
            "{expr}: {text}"
        );
        assert!(text.contains(says), "{expr}: {text}");
    }
}

#[test]
fn an_output_over_the_budget_is_dead_lettered_as_template_budget() {
    // Sharing: 2^25 values described by a 250-byte template from a 40-byte message.
    let expr = format!("{{x: ({}.)}}", "[., .] | ".repeat(25));
    let (code, text) = run(
        &["render", "--route", "done"],
        &config(&expr),
        &[],
        br#"{"id": 1, "user": {"id": "u1"}}"#,
    );
    assert_eq!(code, Some(4), "{text}");
    assert!(text.contains("template_budget"), "{text}");
}

#[test]
fn vars_are_constants_and_never_read_the_environment() {
    let with_vars = |vars: &str| format!("{}vars:\n{vars}", config("{team: $vars.team}"));
    let (code, text) = run(
        &["render", "--route", "done"],
        &with_vars("  team: ops\n"),
        &[],
        br#"{"id": 1, "user": {"id": "u1"}}"#,
    );
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(r#""event_data":{"team":"ops"}"#), "{text}");
    // A reference to the environment in vars is refused, and the secret is not read.
    let (code, text) = run(
        &["check"],
        &with_vars("  team: \"${HOSTILE_SECRET}\"\n"),
        &[],
        b"",
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("vars.team: vars are constants"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
}
