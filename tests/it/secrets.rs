//! No secret anywhere a user or an operator can see: logs at trace level, `/metrics`, `render`
//! output, `check` errors.

use crate::harness::*;
use orceum_bridge::tools::sandbox::Faults;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::process::Command;
use std::time::Duration;

/// The secrets `demo` uses (src/demo.rs).
const DEMO_SECRETS: [&str; 2] = ["whs_demo_tasks_0123456789", "whs_demo_billing_0123456789"];

#[test]
fn trace_logs_of_a_whole_demo_run_never_contain_a_secret() {
    let out = Command::new(env!("CARGO_BIN_EXE_orceum-bridge"))
        .args(["demo", "--events", "40"])
        .env("RUST_LOG", "trace")
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        &stderr[stderr.len().saturating_sub(3000)..]
    );
    assert!(
        stderr.len() > 10_000,
        "trace logging was on ({} bytes)",
        stderr.len()
    );
    assert!(stdout.contains("delivered to Orceum"), "{stdout}");
    for secret in DEMO_SECRETS {
        assert!(!stdout.contains(secret), "secret in stdout");
        assert!(!stderr.contains(secret), "secret in the trace logs");
        // Not even a recognisable part of it.
        assert!(
            !stderr.contains(&secret[4..16]),
            "part of a secret in the trace logs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_never_contain_a_secret() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("t", 1, 1).unwrap();
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    for payload in payloads(10, 2) {
        p.send(
            FutureRecord::<(), _>::to("t").payload(&payload),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    p.send(
        FutureRecord::<(), _>::to("t").payload("not json"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let (sandbox, _stop) = start_sandbox(Faults {
        rate_503: 0.3,
        ..Faults::default()
    })
    .await;
    let bridge = spawn_bridge(&config(
        &sandbox.base_url(),
        &brokers,
        "g",
        &route("r", "t", "a", None),
        "  retry: { initial_backoff: 10ms, max_backoff: 50ms }\n",
    ));
    assert!(wait_until(Duration::from_secs(30), || seen(&sandbox).unique() >= 10).await);
    let url = bridge.health_url().await;
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("orceum_bridge_events_delivered_total"));
    for secret in [SECRET_A, SECRET_B] {
        assert!(!metrics.contains(secret), "secret in /metrics");
    }
    bridge.stop().await;
}

#[test]
fn check_errors_about_a_secret_never_repeat_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        r#"
apps:
  a: { app_id: app_a, secret: { env: BAD_SECRET } }
  b: { app_id: app_b, secret: { file: "SECRET_FILE" } }
sources:
  s: { kafka: { bootstrap_servers: "localhost:9092" } }
routes:
  - { name: r, source: s, topics: [t], app: a, event: { installation_id: .i, event_type: '"x"', event_data: '{}' } }
"#
        .replace("SECRET_FILE", &dir.path().join("f").display().to_string()),
    )
    .unwrap();
    std::fs::write(dir.path().join("f"), "sk_live_file_value_123").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orceum-bridge"))
        .args(["check", "-c"])
        .arg(&path)
        .env("BAD_SECRET", "sk_live_env_value_456")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("apps.a.secret")
            && stderr.contains("apps.b.secret")
            && stderr.contains("whs_"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("sk_live_env_value_456") && !stderr.contains("sk_live_file_value_123"),
        "{stderr}"
    );
}
