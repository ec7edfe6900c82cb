//! What a new user meets in their first hour, each as they would meet it: `check --connect`
//! naming a dead-letter subject no stream captures and a missing stream with what to do, the
//! Kafka key of a record dead-lettered to NATS, `render --ndjson` over a sample file, plain
//! text logs in a file, the exit codes of a second signal and of a fatal error, `--version`.

use crate::common::*;
use crate::harness::*;
use async_nats::jetstream::{self, stream};
use orceum_bridge::tools::sandbox::Faults;
use rdkafka::producer::FutureRecord;
use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn bridge_cmd(args: &[&str], config: Option<&Path>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orceum-bridge"));
    cmd.args(args);
    if let Some(c) = config {
        cmd.arg("-c").arg(c);
    }
    for (k, v) in env_vars() {
        cmd.env(k, v);
    }
    cmd
}

async fn run_blocking(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run orceum-bridge"))
        .await
        .expect("join")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn create_stream(js: &jetstream::Context, name: &str, subject: String) {
    js.create_stream(stream::Config {
        name: name.to_string(),
        subjects: vec![subject],
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .expect("create stream");
}

fn js_config(url: &str, stream: &str, dead_subject: &str) -> String {
    format!(
        r#"
orceum: {{ base_url: "http://127.0.0.1:9/v1", timeout: 5s }}
apps:
  a: {{ app_id: app_a, secret: {{ env: SECRET_A }} }}
sources:
  bus:
    nats: {{ url: "{url}" }}
routes:
  - name: js
    source: bus
    jetstream: {{ stream: {stream}, durable: first-hour, create: true }}
    app: a
    event: {{ installation_id: .inst, event_type: '"test.event"', event_data: '{{seq}}' }}
delivery:
  dead_letter: {{ nats: {{ source: bus, subject: "{dead_subject}" }} }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_names_a_dead_letter_subject_no_stream_captures_and_how_to_create_a_missing_stream(
) {
    let url = nats_url();
    let name = unique("FIRST").replace('-', "_");
    let dead = format!("{name}.dead");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, js_config(&url, &name, &dead)).unwrap();

    // Neither the source stream nor a dead-letter stream exists.
    let out = run_blocking(bridge_cmd(&["check", "--connect"], Some(&path))).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "routes[0].jetstream.stream: stream \"{name}\" does not exist"
        )) && said.contains("nats stream add")
            && said.contains("docs/nats.md"),
        "a missing stream says what to do: {said}"
    );
    assert!(
        said.contains(&format!(
            "delivery.dead_letter.nats.subject: no JetStream stream captures the dead-letter subject \"{dead}\""
        )),
        "{said}"
    );

    // The source stream exists; the dead-letter subject is still captured by nothing.
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    create_stream(&js, &name, format!("{name}.in")).await;
    let out = run_blocking(bridge_cmd(&["check", "--connect"], Some(&path))).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(!said.contains("routes[0].jetstream.stream"), "{said}");
    assert!(said.contains("delivery.dead_letter.nats.subject"), "{said}");

    // A stream capturing it (through a wildcard, as a dead-letter stream usually does): OK.
    create_stream(&js, &format!("{name}_DLQ"), format!("{name}.dead.*")).await;
    std::fs::write(&path, js_config(&url, &name, &format!("{dead}.tasks"))).unwrap();
    let out = run_blocking(bridge_cmd(&["check", "--connect"], Some(&path))).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("1 JetStream stream(s)"),
        "the summary counts streams: {}",
        text(&out)
    );
}

/// A Kafka record dead-lettered to a NATS subject keeps its key, as text or base64, and
/// `replay` reads it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kafka_key_reaches_a_nats_dead_letter_and_replay_reads_it_back() {
    let url = nats_url();
    let topic = unique("keyed");
    let group = unique("g-keyed");
    let name = unique("KEYED_DLQ").replace('-', "_");
    let dead = format!("{name}.dead");
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    create_stream(&js, &name, dead.clone()).await;
    let kafka = Kafka::shared();
    kafka.create_topic(&topic, 1).await;
    let producer = kafka.producer();
    let binary_key: &[u8] = &[0xff, 0x00, b'k', b'\n'];
    for (key, payload) in [
        (&b"inst_gone"[..], &br#"{"seq":1}"#[..]),
        (binary_key, &b"not json"[..]),
    ] {
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(key)
                    .payload(payload)
                    .partition(0),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
    }
    let (sandbox, _stop) = start_sandbox(Faults {
        reject_installations: HashSet::from(["inst_gone".to_string()]),
        ..Faults::default()
    })
    .await;
    let yaml = format!(
        r#"
orceum: {{ base_url: "{base}", timeout: 5s }}
apps:
  a: {{ app_id: app_a, secret: {{ env: SECRET_A }} }}
sources:
  events:
    kafka:
      bootstrap_servers: "{brokers}"
      group_id: "{group}"
      properties: {TEST_CONSUMER_PROPERTIES}
  bus:
    nats: {{ url: "{url}" }}
routes:
  - name: keyed
    source: events
    topics: [{topic}]
    app: a
    event: {{ installation_id: $meta.key, event_type: '"test.event"', event_data: '{{seq}}' }}
delivery:
  commit_interval: 200ms
  dead_letter: {{ nats: {{ source: bus, subject: "{dead}" }} }}
observability: {{ listen: "127.0.0.1:0", log_format: text }}
"#,
        base = sandbox.base_url(),
        brokers = kafka_brokers(),
    );
    let bridge = spawn_bridge(&yaml);
    let stored = wait_until(Duration::from_secs(60), || {
        counter(
            &bridge.metrics_text(),
            "orceum_bridge_dead_letters_total",
            "",
        ) >= 2
    })
    .await;
    let metrics = bridge.metrics_text();
    bridge.stop().await;
    assert!(stored, "two dead letters: {metrics}");

    let dlq = js.get_stream(&name).await.unwrap();
    let mut by_kind = std::collections::BTreeMap::new();
    for seq in 1..=2u64 {
        let raw = dlq.get_raw_message(seq).await.expect("the dead letter");
        let header = |n: &str| raw.headers.get(n).map(|v| v.as_str().to_string());
        by_kind.insert(
            header("orceum.reason_kind").unwrap_or_default(),
            (header("orceum.key"), header("orceum.key_encoding")),
        );
    }
    assert_eq!(
        by_kind.get("http_404"),
        Some(&(Some("inst_gone".to_string()), None)),
        "{by_kind:?}"
    );
    assert_eq!(
        by_kind.get("not_json"),
        Some(&(Some("/wBrCg==".to_string()), Some("base64".to_string()))),
        "a binary key travels as base64: {by_kind:?}"
    );

    // The fix: Orceum knows the installation now. A dry run maps the key back into the event.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let from = format!("jetstream:{name}");
    let out = run_blocking(bridge_cmd(
        &["replay", "--from", &from, "--source", "bus", "--dry-run"],
        Some(&path),
    ))
    .await;
    let said = text(&out);
    assert!(
        said.contains("would send to a (app_a) installation inst_gone test.event"),
        "the key read back from orceum.key: {said}"
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "the not-JSON one still fails: {said}"
    );
}

const RENDER_CONFIG: &str = r#"
orceum: { base_url: "http://127.0.0.1:9/v1" }
apps:
  a: { app_id: app_a, secret: { env: SECRET_A } }
sources:
  events: { kafka: { bootstrap_servers: "127.0.0.1:9", group_id: g } }
routes:
  - name: done
    source: events
    topics: [tasks]
    app: a
    filter: '.status == "done"'
    event: { installation_id: .inst, event_type: '"task.completed"', event_data: '{id}' }
"#;

#[tokio::test]
async fn render_ndjson_gives_a_verdict_per_line_of_a_sample_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, RENDER_CONFIG).unwrap();
    let samples = dir.path().join("samples.ndjson");
    std::fs::write(
        &samples,
        concat!(
            r#"{"inst":"i1","status":"done","id":"t1"}"#,
            "\n",
            r#"{"inst":"i2","status":"open","id":"t2"}"#,
            "\n",
            r#"{"inst":"i3","status":"done","id":"t3"}"#,
            "\n"
        ),
    )
    .unwrap();
    let samples_arg = samples.display().to_string();
    let out = run_blocking(bridge_cmd(
        &[
            "render",
            "--route",
            "done",
            "--ndjson",
            "--input",
            &samples_arg,
        ],
        Some(&config),
    ))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each verdict is one JSON line"))
        .collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(lines[0]["verdict"], "send");
    assert_eq!(lines[0]["body"]["installation_id"], "i1");
    assert_eq!(lines[1]["verdict"], "skipped");
    assert_eq!(lines[2]["body"]["event_data"]["id"], "t3");
    assert_eq!(
        out.status.code(),
        Some(3),
        "one line is skipped: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("3 line(s): 2 send, 1 skipped, 0 dead-letter"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn version_names_the_revision_and_usage_errors_exit_2() {
    let out = run_blocking(bridge_cmd(&["--version"], None)).await;
    let said = text(&out);
    assert!(
        said.starts_with(&format!(
            "orceum-bridge {} (revision ",
            env!("CARGO_PKG_VERSION")
        )),
        "{said}"
    );
    assert_eq!(
        said.trim_end()
            .strip_suffix(')')
            .map(|s| s.rsplit(' ').next().unwrap_or("").len()),
        Some(if orceum_bridge::REVISION == "unknown" {
            7
        } else {
            40
        }),
        "a whole git revision: {said}"
    );
    let out = run_blocking(bridge_cmd(&["render", "--no-such-flag"], None)).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// `run` with Orceum unreachable: the one message stays in flight, so the drain waits (for
/// `shutdown_timeout`, 30 s); a second SIGTERM stops it at once, with exit code 6. The text
/// log, written to a file, has no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_the_drain_exits_at_once_and_file_logs_are_plain_text() {
    let topic = unique("drain");
    let group = unique("g-drain");
    create_topic(&topic, 1).await;
    produce(
        &topic,
        vec![(
            Some("i".into()),
            br#"{"inst":"i","seq":1}"#.to_vec(),
            Some(0),
        )],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("c.yaml");
    // Port 9 (discard) on loopback: nothing listens, every push fails to connect.
    std::fs::write(
        &config_path,
        config(
            "http://127.0.0.1:9/v1",
            &kafka_brokers(),
            &group,
            &route("r", &topic, "a", None),
            "  shutdown_timeout: 30s\n  retry: { initial_backoff: 100ms, max_backoff: 200ms }\n",
        ),
    )
    .unwrap();
    let log = dir.path().join("bridge.log");
    let mut child = start_process(&config_path, &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let retrying = wait_until(Duration::from_secs(60), || {
        read_log().contains("push failed; will retry")
    })
    .await;
    assert!(retrying, "the push is failing: {}", read_log());
    sigterm(&child);
    assert!(
        wait_until(Duration::from_secs(10), || read_log().contains("draining")).await,
        "{}",
        read_log()
    );
    let second = std::time::Instant::now();
    sigterm(&child);
    let status = tokio::task::spawn_blocking(move || child.wait().expect("wait"))
        .await
        .unwrap();
    assert_eq!(status.code(), Some(6), "{}", read_log());
    assert!(
        second.elapsed() < Duration::from_secs(20),
        "it did not wait for the 30 s drain"
    );
    let logged = read_log();
    assert!(
        logged.contains("second signal during the drain: exiting now"),
        "{logged}"
    );
    assert!(
        !logged.contains('\u{1b}'),
        "no ANSI escapes in a log file: {logged}"
    );
}

/// A fatal error with JSON logs is a JSON line too (here: the health port is taken).
#[tokio::test]
async fn a_fatal_error_is_a_json_log_line_with_json_logs() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        RENDER_CONFIG.to_string()
            + &format!("observability: {{ listen: \"127.0.0.1:{port}\", log_format: json }}\n"),
    )
    .unwrap();
    let out = run_blocking(bridge_cmd(&["run"], Some(&path))).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let fatal: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "fatal: the bridge stopped")
        .collect();
    assert_eq!(fatal.len(), 1, "{stderr}");
    assert_eq!(fatal[0]["level"], "ERROR");
    let error = fatal[0]["error"].as_str().unwrap_or("");
    assert!(error.contains(&port.to_string()), "{stderr}");
    assert!(
        error.ends_with("; pick a free port"),
        "the cause once, not chained after the advice: {error}"
    );
    assert!(
        stderr
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "every line is JSON: {stderr}"
    );
    drop(taken);
}

/// Every flag of every command says what it does, and `--help` names both buses.
#[tokio::test]
async fn every_flag_has_help_text_and_help_names_both_buses() {
    let top = text(&run_blocking(bridge_cmd(&["--help"], None)).await);
    assert!(top.contains("Kafka") && top.contains("NATS"), "{top}");
    for command in ["run", "check", "render", "sandbox", "replay", "demo"] {
        let help = text(&run_blocking(bridge_cmd(&[command, "--help"], None)).await);
        let lines: Vec<&str> = help.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let flag = line.trim_start();
            if !(flag.starts_with("--") || flag.starts_with("-c") || flag.starts_with("-h"))
                || !line.starts_with("  ")
            {
                continue;
            }
            let described_inline = flag
                .split_once("  ")
                .is_some_and(|(_, d)| !d.trim().is_empty());
            let described_below = lines
                .get(i + 1)
                .is_some_and(|next| next.starts_with("          ") && !next.trim().is_empty());
            assert!(
                described_inline || described_below,
                "{command}: {flag:?} has no help text:\n{help}"
            );
        }
    }
    let render = text(&run_blocking(bridge_cmd(&["render", "--help"], None)).await);
    assert!(
        render.contains("subject=") && render.contains("--ndjson"),
        "{render}"
    );
}

/// An unset variable is one error, with its paths, and no follow-on error about the empty
/// value it left.
#[tokio::test]
async fn an_unset_variable_is_reported_once_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        RENDER_CONFIG
            .replace("http://127.0.0.1:9/v1", "${ORCEUM_URL}")
            .replace("127.0.0.1:9\", group_id", "${ORCEUM_URL}\", group_id"),
    )
    .unwrap();
    let mut cmd = bridge_cmd(&["check"], Some(&path));
    cmd.env_remove("ORCEUM_URL");
    let out = run_blocking(cmd).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("1 error"), "{said}");
    assert!(
        said.contains("orceum.base_url: environment variable ORCEUM_URL is not set")
            && said.contains("also referenced at sources.events.kafka.bootstrap_servers"),
        "{said}"
    );
    assert!(!said.contains("not a URL"), "no follow-on error: {said}");
}
