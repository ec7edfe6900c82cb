//! Avro, Protobuf and JSON Schema records as producers really write them: confluent-kafka's
//! serializers (tests/support/produce_schema.py) registering their schemas with the test
//! registry scripts/test starts (tests/support/schema_registry.py, the Confluent REST subset)
//! and framing each record in the Confluent wire format, read by the bridge from Tansu:
//! delivered exactly once, across a schema change (v2 adds an optional field), and every bad
//! record dead-lettered with reason `schema`. Then the registry goes down for 30 s mid-stream:
//! nothing is lost, nothing dead-lettered, and the lag recovers.

use crate::common::*;
use crate::harness::*;
use orceum_bridge::tools::sandbox::Faults;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn python() -> String {
    std::env::var("ORCEUM_TEST_PYTHON")
        .expect("ORCEUM_TEST_PYTHON (scripts/test sets it: the venv with confluent-kafka)")
}

fn registry() -> String {
    std::env::var("ORCEUM_TEST_REGISTRY")
        .expect("ORCEUM_TEST_REGISTRY (scripts/test starts the test schema registry)")
}

/// Runs the producer script; returns the schema id its serializer used.
async fn produce_with_serializer(
    registry: &str,
    topic: &str,
    format: &str,
    version: u8,
    start: usize,
    count: usize,
    out: Option<&Path>,
) -> u32 {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/produce_schema.py"
    );
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args([
            "--brokers",
            &kafka_brokers(),
            "--registry",
            registry,
            "--topic",
            topic,
        ])
        .args(["--format", format, "--schema-version", &version.to_string()])
        .args(["--start", &start.to_string(), "--count", &count.to_string()]);
    if let Some(out) = out {
        cmd.arg("--out").arg(out);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run produce_schema.py"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "produce_schema.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("the schema id")
}

fn route(topic: &str, format: &str, extra: &str, fields: (&str, &str, &str)) -> String {
    let (inst, order, total) = fields;
    format!(
        "  - name: orders\n    source: events\n    topics: [{topic}]\n    format: {format}\n{extra}    app: a\n    event:\n      installation_id: {inst}\n      event_type: '\"order.paid\"'\n      event_data: '{{order_id: {order}, total: {total}, coupon, schema_id: $meta.schema_id, format: $meta.format}}'\n"
    )
}

fn with_registry(yaml: String, url: &str) -> String {
    format!("{yaml}schema_registry: {{ url: \"{url}\", timeout: 2s }}\n")
}

/// Three records no schema reads: not framed, an id the registry does not have, and bytes
/// that do not decode with a real id.
async fn produce_bad(topic: &str, real_id: u32) {
    let mut garbage = vec![0u8];
    garbage.extend_from_slice(&real_id.to_be_bytes());
    garbage.extend_from_slice(&[0xff; 3]);
    produce(
        topic,
        vec![
            (
                Some("bad1".into()),
                br#"{"installation_id":"i"}"#.to_vec(),
                Some(0),
            ),
            (
                Some("bad2".into()),
                vec![0, 0, 0, 0x7f, 0xff, 2, 0x61],
                Some(0),
            ),
            (Some("bad3".into()), garbage, Some(0)),
        ],
    )
    .await;
}

/// What the sandbox got: order id → (coupon, schema id, format), and the duplicates.
fn got(
    sandbox: &orceum_bridge::tools::sandbox::SandboxHandle,
) -> (
    std::collections::BTreeMap<String, (serde_json::Value, u64, String)>,
    usize,
) {
    let mut m = std::collections::BTreeMap::new();
    let mut dups = 0;
    for e in sandbox.events() {
        let d = &e.event["event_data"];
        let order = d["order_id"].as_str().unwrap_or_default().to_string();
        let v = (
            d["coupon"].clone(),
            d["schema_id"].as_u64().unwrap_or(0),
            d["format"].as_str().unwrap_or_default().to_string(),
        );
        if m.insert(order, v).is_some() {
            dups += 1;
        }
    }
    (m, dups)
}

async fn run_format(
    format: &str,
    extra: &str,
    fields: (&str, &str, &str),
) -> (
    Vec<u32>,
    std::collections::BTreeMap<String, (serde_json::Value, u64, String)>,
) {
    let topic = unique(&format!("sr-{format}"));
    let group = unique("g-sr");
    let dlq = unique("sr-dlq");
    create_topic(&topic, 1).await;
    create_topic(&dlq, 1).await;
    let url = registry();
    let v1 = produce_with_serializer(&url, &topic, format, 1, 0, 10, None).await;
    let v2 = produce_with_serializer(&url, &topic, format, 2, 10, 10, None).await;
    produce_bad(&topic, v1).await;
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let yaml = with_registry(
        config(
            &sandbox.base_url(),
            &kafka_brokers(),
            &group,
            &route(&topic, format, extra, fields),
            &format!("  commit_interval: 200ms\n  dead_letter: {{ kafka: {{ source: events, topic: {dlq} }} }}\n"),
        ),
        &url,
    );
    let bridge = spawn_bridge(&yaml);
    let done = wait_until(Duration::from_secs(90), || {
        got(&sandbox).0.len() >= 20
            && counter(
                &bridge.metrics_text(),
                "orceum_bridge_dead_letters_total",
                "",
            ) >= 3
    })
    .await;
    let metrics = bridge.metrics_text();
    let committed = wait_until(Duration::from_secs(30), || {
        committed_offsets(&group, &topic, 1) == [Some(23)]
    })
    .await;
    bridge.stop().await;
    assert!(
        done,
        "{format}: {} delivered\n{metrics}",
        got(&sandbox).0.len()
    );
    assert!(committed, "{format}: every record final and committed");
    let (events, dups) = got(&sandbox);
    assert_eq!(
        (events.len(), dups),
        (20, 0),
        "{format}: each record exactly once"
    );
    assert_eq!(
        counter(
            &metrics,
            "orceum_bridge_dead_letters_total",
            "reason=\"schema\""
        ),
        3,
        "{format}: the three bad records, as schema: {metrics}"
    );
    let dead = consume_all(&dlq, 3, Duration::from_secs(30)).await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|d| String::from_utf8_lossy(d.header("orceum.reason").unwrap_or_default()).to_string())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("magic byte 123")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("schema id 32767")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with(&format!("schema id {v1}"))),
        "{reasons:?}"
    );
    (vec![v1, v2], events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn avro_records_from_the_serializer_are_delivered_once_and_a_v2_writer_is_read_by_the_v1_reader(
) {
    let dir = tempfile::tempdir().unwrap();
    let v1 = dir.path().join("order-v1.avsc");
    // The reader schema the route was written for: no coupon.
    std::fs::write(
        &v1,
        r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"installation_id","type":"string"},{"name":"order_id","type":"string"},{"name":"total","type":"double"}]}"#,
    )
    .unwrap();
    let extra = format!("    avro_schema_file: \"{}\"\n", v1.display());
    let (ids, events) =
        run_format("avro", &extra, (".installation_id", ".order_id", ".total")).await;
    assert_ne!(ids[0], ids[1], "v2 is a new schema id");
    assert_eq!(
        events["o-3"],
        (serde_json::Value::Null, u64::from(ids[0]), "avro".into())
    );
    assert_eq!(
        events["o-15"],
        (serde_json::Value::Null, u64::from(ids[1]), "avro".into()),
        "the v1 reader does not see v2's coupon"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn avro_without_a_reader_schema_maps_unions_by_the_avro_json_encoding() {
    let (ids, events) = run_format("avro", "", (".installation_id", ".order_id", ".total")).await;
    assert_eq!(
        events["o-15"],
        (
            serde_json::json!({"string": "C15"}),
            u64::from(ids[1]),
            "avro".into()
        ),
        "a union branch is an object named by its type"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_schema_records_from_the_serializer_are_delivered_once() {
    let (ids, events) = run_format(
        "json_schema",
        "",
        (".installation_id", ".order_id", ".total"),
    )
    .await;
    assert_eq!(
        events["o-15"],
        (
            serde_json::json!("C15"),
            u64::from(ids[1]),
            "json_schema".into()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn protobuf_records_from_the_serializer_are_delivered_once_in_the_canonical_json_mapping() {
    // proto3 JSON: lowerCamelCase names.
    let (ids, events) = run_format("protobuf", "", (".installationId", ".orderId", ".total")).await;
    assert_eq!(
        events["o-15"],
        (
            serde_json::json!("C15"),
            u64::from(ids[1]),
            "protobuf".into()
        )
    );
    assert_eq!(events["o-3"].1, u64::from(ids[0]));
}

/// The registry down for 30 s while records written with a schema the bridge has not fetched
/// yet arrive: they wait (nothing dead-lettered, nothing lost) and flow once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_registry_down_for_30s_mid_stream_loses_nothing_and_dead_letters_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("registry.json");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let start_registry = || {
        let child = Command::new(python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/schema_registry.py"
            ))
            .args(["--port", &port.to_string(), "--state"])
            .arg(&state)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the registry");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    };
    let mut registry = start_registry();
    let topic = unique("sr-outage");
    let group = unique("g-sr-outage");
    create_topic(&topic, 1).await;
    produce_with_serializer(&url, &topic, "avro", 1, 0, 20, None).await;
    // v2 registered now (its id unknown to the bridge), its records kept for the outage.
    let v2_records = dir.path().join("v2.hex");
    produce_with_serializer(&url, &topic, "avro", 2, 20, 20, Some(&v2_records)).await;

    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let yaml = with_registry(
        config(
            &sandbox.base_url(),
            &kafka_brokers(),
            &group,
            &route(
                &topic,
                "avro",
                "",
                (".installation_id", ".order_id", ".total"),
            ),
            "  commit_interval: 200ms\n",
        ),
        &url,
    );
    let bridge = spawn_bridge(&yaml);
    assert!(
        wait_until(Duration::from_secs(60), || got(&sandbox).0.len() >= 20).await,
        "the v1 records"
    );

    registry.kill().unwrap();
    registry.wait().unwrap();
    let records: Vec<Record> = std::fs::read_to_string(&v2_records)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, hex)| {
            (
                Some(format!("k{}", 20 + i)),
                hex::decode(hex).unwrap(),
                Some(0),
            )
        })
        .collect();
    produce(&topic, records).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let during = bridge.metrics_text();
    assert_eq!(
        got(&sandbox).0.len(),
        20,
        "nothing of v2 without its schema"
    );
    assert_eq!(
        counter(&during, "orceum_bridge_dead_letters_total", ""),
        0,
        "{during}"
    );
    assert!(
        counter(&during, "orceum_bridge_schema_registry_errors_total", "") > 0,
        "the failed fetches are counted: {during}"
    );

    let mut registry = start_registry();
    let all = wait_until(Duration::from_secs(60), || got(&sandbox).0.len() >= 40).await;
    let committed = wait_until(Duration::from_secs(30), || {
        committed_offsets(&group, &topic, 1) == [Some(40)]
    })
    .await;
    let after = bridge.metrics_text();
    bridge.stop().await;
    let _ = registry.kill();
    let _ = registry.wait();
    let (events, dups) = got(&sandbox);
    assert!(
        all,
        "only {} of 40 after the registry came back",
        events.len()
    );
    assert!(committed, "the lag recovers: every record committed");
    assert_eq!((events.len(), dups), (40, 0));
    assert_eq!(
        counter(&after, "orceum_bridge_dead_letters_total", ""),
        0,
        "{after}"
    );
    assert_eq!(events["o-25"].0, serde_json::json!({"string": "C25"}));
}

/// `render` reads a binary record from a file: a framed Avro datum through a route with a
/// local schema (no registry), a record with a wrong magic byte, and `--format json` on the
/// same bytes.
#[tokio::test]
async fn render_reads_a_binary_avro_record_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let schema = r#"{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"installation_id","type":"string"},{"name":"order_id","type":"string"},{"name":"total","type":"double"}]}"#;
    let avsc = dir.path().join("order.avsc");
    std::fs::write(&avsc, schema).unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "orceum: {{ base_url: \"http://127.0.0.1:9/v1\" }}\napps:\n  a: {{ app_id: app_a, secret: {{ env: SECRET_A }} }}\nsources:\n  events: {{ kafka: {{ bootstrap_servers: \"127.0.0.1:9\", group_id: g }} }}\nroutes:\n{}",
            route("t", "avro", &format!("    avro_schema_file: \"{}\"\n", avsc.display()), (".installation_id", ".order_id", ".total"))
        ),
    )
    .unwrap();
    use apache_avro::types::Value as A;
    let datum = apache_avro::to_avro_datum(
        &apache_avro::Schema::parse_str(schema).unwrap(),
        A::Record(vec![
            ("installation_id".into(), A::String("inst_9".into())),
            ("order_id".into(), A::String("o-9".into())),
            ("total".into(), A::Double(9.5)),
        ]),
    )
    .unwrap();
    let record = dir.path().join("record.bin");
    std::fs::write(&record, [&[0u8, 0, 0, 0, 7][..], &datum].concat()).unwrap();
    let bad = dir.path().join("bad.bin");
    std::fs::write(&bad, [&[5u8, 0, 0, 0, 7][..], &datum].concat()).unwrap();
    let render = |file: &Path, extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orceum-bridge"));
        cmd.args(["render", "--route", "orders", "-c"])
            .arg(&config)
            .arg("--input")
            .arg(file)
            .args(extra);
        for (k, v) in env_vars() {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = render(&record, &[]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(r#""installation_id":"inst_9""#)
            && said.contains(r#""order_id":"o-9""#)
            && said.contains(r#""schema_id":7"#)
            && said.contains(r#""format":"avro""#),
        "{said}"
    );
    let out = render(&bad, &[]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(4), "{said}");
    assert!(
        said.starts_with("DEAD-LETTER (schema): avro record: magic byte 5"),
        "{said}"
    );
    let out = render(&record, &["--format", "json"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(4), "binary is not JSON: {said}");
}
