//! The dashboard and the alert rules only use metrics the binary really exports.
//!
//! A real bridge runs in this process against librdkafka's mock cluster and the sandbox, and is
//! driven through every path that creates a series (Prometheus `Vec` metrics only appear once a
//! label combination is used): deliveries for two apps, a rate-limited app, 429/503 retries, a
//! filtered message, a poison message and a 404 (both dead-lettered to Kafka), commits, a failed
//! commit, librdkafka statistics for the lag, and — when scripts/test provides a nats-server
//! (`ORCEUM_TEST_NATS`) — a JetStream route for the JetStream gauges (without one, those two
//! families are taken from the bridge's declarations). Then `/metrics` is scraped over HTTP and every
//! `orceum_bridge_*` name used in `deploy/grafana/orceum-bridge.json`,
//! `deploy/prometheus/alerts.yaml` and the Helm chart's copy of the rules must be one of the
//! exported families (histogram `_bucket`/`_sum`/`_count` resolved to their family), and every
//! label a selector matches on must be one the family has. With `promtool` on PATH, the scrape
//! must also pass `promtool check metrics`.

use crate::harness::*;
use orceum_bridge::tools::sandbox::Faults;
use prometheus::core::Collector;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::ClientConfig;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

const PREFIX: &str = "orceum_bridge_";

/// The metric name prefixes the dashboard and rules read from the bridge: its own and the
/// process collector's (`up` is Prometheus's own).
const PREFIXES: &[&str] = &[PREFIX, "process_"];

/// Labels Prometheus attaches to every scraped series (target labels), not the exporter.
const TARGET_LABELS: &[&str] = &[
    "job",
    "instance",
    "namespace",
    "pod",
    "container",
    "service",
    "endpoint",
];

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The families in a text exposition: name → (type, label names seen on its samples).
fn exported_families(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut families: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                families
                    .entry(name.to_string())
                    .or_default()
                    .0
                    .push_str(kind);
            }
        }
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, labels) = match line.split_once('{') {
            Some((name, rest)) => (name, rest.split_once('}').map(|(l, _)| l).unwrap_or("")),
            None => (line.split_whitespace().next().unwrap_or(""), ""),
        };
        let Some(family) = family_of(series, &families) else {
            continue;
        };
        let names = families.get_mut(&family).map(|f| &mut f.1);
        if let Some(names) = names {
            for matcher in split_matchers(labels) {
                names.insert(label_name(&matcher).to_string());
            }
        }
    }
    families
}

/// The family a series or referenced name belongs to: itself, or a histogram/summary whose
/// `_bucket`/`_sum`/`_count` it is.
fn family_of(
    name: &str,
    families: &BTreeMap<String, (String, BTreeSet<String>)>,
) -> Option<String> {
    if families.contains_key(name) {
        return Some(name.to_string());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some((kind, _)) = families.get(base) {
                if kind == "histogram" || (kind == "summary" && suffix != "_bucket") {
                    return Some(base.to_string());
                }
            }
        }
    }
    None
}

/// The `a="x", b=~"y"` inside a selector's braces, split on commas outside quotes.
fn split_matchers(inside: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in inside.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                if !cur.trim().is_empty() {
                    out.push(cur.trim().to_string());
                }
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// The index of the `}` closing a selector, skipping quoted label values.
fn closing_brace(after_open: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in after_open.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn label_name(matcher: &str) -> &str {
    let end = matcher
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(matcher.len());
    &matcher[..end]
}

/// Every `orceum_bridge_*` and `process_*` name in a PromQL expression, with the label names
/// its selector matches on (empty when it has no braces).
fn referenced(expr: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(usize, (String, Vec<String>))> = PREFIXES
        .iter()
        .flat_map(|prefix| referenced_with(expr, prefix))
        .collect();
    out.sort_by_key(|(at, _)| *at);
    out.into_iter().map(|(_, r)| r).collect()
}

fn referenced_with(expr: &str, prefix: &str) -> Vec<(usize, (String, Vec<String>))> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find(prefix) {
        let start = i + pos;
        let boundary = start == 0 || {
            let p = bytes[start - 1];
            !(p.is_ascii_alphanumeric() || p == b'_')
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        i = end;
        if !boundary || end == start + prefix.len() {
            continue;
        }
        let mut labels = Vec::new();
        if bytes.get(end) == Some(&b'{') {
            if let Some(close) = closing_brace(&expr[end + 1..]) {
                labels = split_matchers(&expr[end + 1..end + 1 + close])
                    .iter()
                    .map(|m| label_name(m).to_string())
                    .collect();
            }
        }
        out.push((start, (expr[start..end].to_string(), labels)));
    }
    out
}

/// PromQL expressions of the dashboard: every `expr`, and the variables' queries.
fn dashboard_exprs(path: &Path) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
    let mut out = Vec::new();
    walk(&json, &mut out);
    out
}

/// The `expr` of every rule in a Prometheus rule file.
fn rule_exprs(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let doc: yaml_serde::Value = yaml_serde::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            if let Some(expr) = rule["expr"].as_str() {
                out.push(expr.to_string());
            }
        }
    }
    assert!(!out.is_empty(), "{} holds no rules", path.display());
    out
}

async fn produce(brokers: &str, topic: &str, records: &[(Option<String>, Vec<u8>)]) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for (key, payload) in records {
        let mut r = FutureRecord::<String, _>::to(topic).payload(payload);
        if let Some(k) = key {
            r = r.key(k);
        }
        p.send(r, Duration::from_secs(5)).await.unwrap();
    }
}

fn event(inst: &str, seq: usize, extra: &str) -> (Option<String>, Vec<u8>) {
    (
        Some(inst.to_string()),
        format!(r#"{{"inst":"{inst}","seq":{seq}{extra}}}"#).into_bytes(),
    )
}

fn config(base_url: &str, brokers: &str, nats: Option<(&str, &str)>) -> String {
    // With a NATS server (scripts/test exports ORCEUM_TEST_NATS), a JetStream route too, so the
    // jetstream_* gauges exist.
    let (nats_source, jetstream_route) = match nats {
        Some((url, stream)) => (
            format!("  bus:\n    nats: {{ url: \"{url}\" }}\n"),
            format!(
                r#"  - name: jetstream
    source: bus
    jetstream: {{ stream: {stream}, durable: deploy-metrics, create: true }}
    app: a
    event:
      installation_id: .inst
      event_type: '"test.event"'
      event_data: '{{seq}}'
"#
            ),
        ),
        None => (String::new(), String::new()),
    };
    // A lookup table, read by a route on a topic nothing is produced to, so the lookup_*
    // families exist (a table no route reads is not loaded).
    let table =
        std::env::temp_dir().join(format!("orceum-deploy-metrics-{}.json", std::process::id()));
    std::fs::write(&table, r#"{"u1": "inst_1"}"#).expect("write the lookup file");
    format!(
        r#"
orceum: {{ base_url: "{base_url}", timeout: 5s }}
apps:
  a: {{ app_id: app_a, secret: {{ env: SECRET_A }} }}
  b: {{ app_id: app_b, secret: {{ env: SECRET_B }}, rate_limit: {{ per_second: 20, burst: 1 }} }}
sources:
  events:
    kafka:
      bootstrap_servers: "{brokers}"
      group_id: g-deploy-metrics
      properties: {{ session.timeout.ms: 6000, heartbeat.interval.ms: 1000 }}
{nats_source}lookups:
  seen: {{ file: "{table}" }}
routes:
{orders}{billing}{jetstream_route}{joined}
delivery:
  commit_interval: 100ms
  shutdown_timeout: 5s
  retry: {{ initial_backoff: 20ms, max_backoff: 100ms, max_retry_after: 1s }}
  dead_letter: {{ kafka: {{ source: events, topic: dead-letter }} }}
observability: {{ listen: "127.0.0.1:0", log_format: text }}
"#,
        orders = route("orders", "orders", "a", Some(".skip != true")),
        billing = route("billing", "billing", "b", None),
        joined = route(
            "joined",
            "joined",
            "a",
            Some(r#"lookup("seen"; .inst) != null"#)
        ),
        table = table.display(),
    )
}

/// A JetStream stream in memory capturing `NAME.>`.
async fn memory_stream(url: &str, name: &str) -> async_nats::jetstream::Context {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.expect("connect nats"));
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{name}.>")],
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .expect("create stream");
    js
}

fn present(metrics: &str, name: &str) -> bool {
    metrics
        .lines()
        .any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
}

/// Families that only a JetStream source creates.
const JETSTREAM_FAMILIES: &[&str] = &[
    "orceum_bridge_jetstream_pending_messages",
    "orceum_bridge_jetstream_ack_pending_messages",
];

/// Returns early from a check with a message (the bridge must be stopped before panicking: a
/// panic while it runs would leave its consumer thread waiting forever).
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_metric_in_the_dashboard_and_alerts_is_exported_by_the_bridge() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("orders", 2, 1).unwrap();
    cluster.create_topic("billing", 1, 1).unwrap();
    cluster.create_topic("joined", 1, 1).unwrap();
    cluster.create_topic("dead-letter", 1, 1).unwrap();

    let (sandbox, _stop) = start_sandbox(Faults {
        rate_429: 0.15,
        rate_503: 0.15,
        retry_after_secs: Some(1),
        reject_installations: HashSet::from(["inst_gone".to_string()]),
        ..Faults::default()
    })
    .await;

    let mut orders: Vec<_> = (0..20)
        .map(|i| {
            let priority = if i % 4 == 0 {
                r#","priority":"high""#
            } else {
                ""
            };
            event(&format!("inst_{}", i % 5), i, priority)
        })
        .collect();
    orders.push(event("inst_1", 100, r#","skip":true"#)); // filtered: skipped_total
    orders.push((Some("inst_2".into()), b"{not json".to_vec())); // poison: dead letter
    orders.push(event("inst_gone", 101, "")); // 404: dead letter
    let billing: Vec<_> = (0..10).map(|i| event("inst_b", i, "")).collect();
    produce(&brokers, "orders", &orders).await;
    produce(&brokers, "billing", &billing).await;

    let nats_url = std::env::var("ORCEUM_TEST_NATS").ok();
    let stream = format!("DEPLOY_METRICS_{}", std::process::id());
    if let Some(url) = &nats_url {
        let js = memory_stream(url, &stream).await;
        for i in 0..5 {
            js.publish(
                format!("{stream}.tasks"),
                format!(r#"{{"inst":"inst_js","seq":{i}}}"#).into(),
            )
            .await
            .expect("publish")
            .await
            .expect("publish ack");
        }
    } else {
        eprintln!(
            "ORCEUM_TEST_NATS is not set (scripts/test sets it): the JetStream gauges are checked \
             against their declarations only, not against a scrape"
        );
    }

    let bridge = spawn_bridge(&config(
        &sandbox.base_url(),
        &brokers,
        nats_url.as_deref().map(|u| (u, stream.as_str())),
    ));
    let result = check_exported_metrics(&bridge, &cluster, &brokers, nats_url.is_some()).await;
    bridge.stop().await;
    if let Err(problem) = result {
        panic!("{problem}");
    }
}

/// Right after start, before any message: every series the dashboard and the alert rules
/// reference is already there (counters at 0), so `rate()`, `increase()` and `absent()` work
/// from the first scrape. The group has committed offsets, as a replica restarting into a
/// running deployment finds; with a NATS server, a JetStream route too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_series_the_dashboard_and_alerts_reference_exists_right_after_start() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let group = "g-deploy-metrics-start";
    let mut committed = TopicPartitionList::new();
    for (topic, partitions) in [
        ("orders", 2),
        ("billing", 1),
        ("joined", 1),
        ("dead-letter", 1),
    ] {
        cluster.create_topic(topic, partitions, 1).unwrap();
        for p in 0..partitions {
            committed
                .add_partition_offset(topic, p, Offset::Offset(0))
                .unwrap();
        }
    }
    let previous: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    previous.commit(&committed, CommitMode::Sync).unwrap();
    drop(previous);

    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let nats_url = std::env::var("ORCEUM_TEST_NATS").ok();
    let stream = format!("DEPLOY_METRICS_START_{}", std::process::id());
    if let Some(url) = &nats_url {
        memory_stream(url, &stream).await;
    }
    let yaml = config(
        &sandbox.base_url(),
        &brokers,
        nats_url.as_deref().map(|u| (u, stream.as_str())),
    )
    .replace("g-deploy-metrics", group);
    let bridge = spawn_bridge(&yaml);
    let result = async {
        let health = bridge.health_url().await;
        let ready = wait_until(Duration::from_secs(60), || {
            present(&bridge.metrics_text(), "orceum_bridge_kafka_assigned_partitions")
                && counter(
                    &bridge.metrics_text(),
                    "orceum_bridge_kafka_assigned_partitions",
                    "",
                ) == 4
        })
        .await;
        ensure!(ready, "the partitions were never assigned:\n{}", bridge.metrics_text());
        // librdkafka's statistics (the lag) and the JetStream poll come every few seconds:
        // the first scrapes of a starting replica; the references must resolve within them.
        let mut last = Err(String::new());
        for _ in 0..30 {
            let scraped = reqwest::get(format!("{health}/metrics"))
                .await
                .map_err(|e| format!("GET /metrics: {e}"))?
                .text()
                .await
                .map_err(|e| format!("GET /metrics: {e}"))?;
            let mut families = exported_families(&scraped);
            if nats_url.is_none() {
                declare_jetstream_families(&mut families);
            }
            last = check_references(&families).map(|checked| (checked, scraped));
            if last.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (checked, scraped) = last?;
        ensure!(
            counter(&scraped, "orceum_bridge_messages_received_total", "") == 0,
            "nothing was produced, yet messages were received:\n{scraped}"
        );
        for (series, why) in [
            ("orceum_bridge_retries_total{app=\"a\",reason=\"unauthorized\"} 0", "the 401 alert"),
            ("orceum_bridge_dead_letter_write_failures_total{route=\"orders\"} 0", "the write-failure alert"),
            ("orceum_bridge_commit_failures_total{source=\"events\"} 0", "the commit alert"),
            ("orceum_bridge_skipped_total{reason=\"filter\",route=\"orders\"} 0", "the skipped panel"),
            ("orceum_bridge_uncommitted_messages{source=\"events\"} 0", "per source"),
        ] {
            ensure!(scraped.lines().any(|l| l == series), "{series} ({why}) is not in the first scrape:\n{scraped}");
        }
        ensure!(
            scraped.lines().any(|l| l.starts_with("orceum_bridge_kafka_committed_offset{partition=\"1\",source=\"events\",topic=\"orders\"} 0")),
            "the committed offset of an owned partition, from the assignment:\n{scraped}"
        );
        ensure!(
            ["process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds"]
                .iter()
                .all(|p| present(&scraped, p)),
            "the process metrics:\n{scraped}"
        );
        ensure!(
            scraped.lines().any(|l| l.starts_with("orceum_bridge_build_info{revision=\"")
                && l.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))),
            "build_info with its revision:\n{scraped}"
        );
        eprintln!("right after start: {} referenced families all present", checked.len());
        Ok(())
    }
    .await;
    bridge.stop().await;
    if let Err(problem) = result {
        panic!("{problem}");
    }
}

async fn check_exported_metrics(
    bridge: &InProcess,
    cluster: &MockCluster<'_, rdkafka::producer::DefaultProducerContext>,
    brokers: &str,
    with_jetstream: bool,
) -> Result<(), String> {
    let url = bridge.health_url().await;
    let settled = wait_until(Duration::from_secs(60), || {
        let m = bridge.metrics_text();
        counter(&m, "orceum_bridge_events_delivered_total", "") >= 30
            && counter(&m, "orceum_bridge_dead_letters_total", "") >= 2
            && counter(&m, "orceum_bridge_skipped_total", "") >= 1
            && present(&m, "orceum_bridge_kafka_consumer_lag_messages")
            && present(&m, "orceum_bridge_kafka_committed_offset")
            && (!with_jetstream || JETSTREAM_FAMILIES.iter().all(|f| present(&m, f)))
    })
    .await;
    ensure!(
        settled,
        "the bridge did not deliver, dead-letter, skip and commit as expected:\n{}",
        bridge.metrics_text()
    );

    // A failed commit: the broker refuses OffsetCommit for a while and one more message needs
    // committing.
    let refused = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 50];
    cluster.request_errors(RDKafkaApiKey::OffsetCommit, &refused);
    produce(brokers, "orders", &[event("inst_3", 200, "")]).await;
    let failed = wait_until(Duration::from_secs(20), || {
        present(
            &bridge.metrics_text(),
            "orceum_bridge_commit_failures_total",
        )
    })
    .await;
    cluster.clear_request_errors(RDKafkaApiKey::OffsetCommit);
    ensure!(
        failed,
        "a refused OffsetCommit must count in orceum_bridge_commit_failures_total:\n{}",
        bridge.metrics_text()
    );

    let response = reqwest::get(format!("{url}/metrics"))
        .await
        .map_err(|e| format!("GET {url}/metrics: {e}"))?;
    ensure!(
        response.status() == 200,
        "GET /metrics answered {}",
        response.status()
    );
    let scraped = response
        .text()
        .await
        .map_err(|e| format!("GET {url}/metrics: {e}"))?;
    let mut families = exported_families(&scraped);
    ensure!(
        families.keys().any(|n| n.starts_with(PREFIX)),
        "no orceum_bridge_ metric in the scrape:\n{scraped}"
    );
    if !with_jetstream {
        declare_jetstream_families(&mut families);
    }

    let checked = check_references(&families)?;
    eprintln!(
        "checked {} metric families used by the dashboard and alerts: {:?}",
        checked.len(),
        checked
    );

    if let Some(promtool) = which("promtool") {
        let mut child = std::process::Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run promtool: {e}"))?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().ok_or("no stdin for promtool")?;
            stdin
                .write_all(scraped.as_bytes())
                .map_err(|e| format!("cannot feed promtool: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("promtool: {e}"))?;
        ensure!(
            out.status.success(),
            "promtool check metrics rejected the scrape ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("promtool not on PATH: skipping `promtool check metrics`");
    }
    Ok(())
}

/// Every metric the dashboard and the rule files reference is an exported family with the
/// labels its selectors match on. Returns the families checked.
fn check_references(
    families: &BTreeMap<String, (String, BTreeSet<String>)>,
) -> Result<BTreeSet<String>, String> {
    let mut sources: Vec<(String, Vec<String>)> = vec![(
        "deploy/grafana/orceum-bridge.json".into(),
        dashboard_exprs(&repo_file("deploy/grafana/orceum-bridge.json")),
    )];
    for rules in [
        "deploy/prometheus/alerts.yaml",
        "helm/orceum-bridge/files/alerts.yaml",
    ] {
        if repo_file(rules).exists() {
            sources.push((rules.into(), rule_exprs(&repo_file(rules))));
        }
    }

    let mut problems = Vec::new();
    let mut checked = BTreeSet::new();
    for (file, exprs) in &sources {
        let mut names_in_file = 0;
        for expr in exprs {
            for (name, labels) in referenced(expr) {
                names_in_file += 1;
                let Some(family) = family_of(&name, families) else {
                    problems.push(format!(
                        "{file}: {name} is not exported by the bridge (expression: {})",
                        expr.trim()
                    ));
                    continue;
                };
                checked.insert(family.clone());
                let known = &families[&family].1;
                for label in labels {
                    let histogram_le = label == "le" && name.ends_with("_bucket");
                    if !known.contains(&label)
                        && !TARGET_LABELS.contains(&label.as_str())
                        && !histogram_le
                    {
                        problems.push(format!(
                            "{file}: {name} has no label {label:?} (it has {known:?})"
                        ));
                    }
                }
            }
        }
        ensure!(
            names_in_file > 0,
            "{file} references no orceum_bridge_ metric"
        );
    }
    ensure!(
        problems.is_empty(),
        "metric names or labels the bridge does not export:\n  {}\n\nexported families: {:?}",
        problems.join("\n  "),
        families.keys().collect::<Vec<_>>()
    );
    Ok(checked)
}

/// Without a NATS server the JetStream gauges are not driven: accept them as declared by the
/// bridge's registry.
fn declare_jetstream_families(families: &mut BTreeMap<String, (String, BTreeSet<String>)>) {
    let declared = orceum_bridge::telemetry::metrics::Metrics::new();
    for gauge in [&declared.jetstream_pending, &declared.jetstream_ack_pending] {
        for desc in gauge.desc() {
            let labels = desc.variable_labels.iter().cloned().collect();
            families.insert(desc.fq_name.clone(), ("gauge".into(), labels));
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

#[test]
fn references_resolve_histogram_suffixes_and_selector_labels() {
    let families = exported_families(
        "# TYPE orceum_bridge_push_duration_seconds histogram\n\
         orceum_bridge_push_duration_seconds_bucket{app=\"a\",le=\"0.1\"} 1\n\
         orceum_bridge_push_duration_seconds_sum{app=\"a\"} 0.05\n\
         orceum_bridge_push_duration_seconds_count{app=\"a\"} 1\n\
         # TYPE orceum_bridge_retries_total counter\n\
         orceum_bridge_retries_total{app=\"a\",reason=\"http_503\"} 2\n",
    );
    assert_eq!(
        family_of("orceum_bridge_push_duration_seconds_bucket", &families).as_deref(),
        Some("orceum_bridge_push_duration_seconds")
    );
    assert_eq!(
        family_of("orceum_bridge_retries_total_count", &families),
        None
    );
    assert_eq!(family_of("orceum_bridge_retries", &families), None);
    assert_eq!(
        families["orceum_bridge_retries_total"].1,
        BTreeSet::from(["app".to_string(), "reason".to_string()])
    );
    assert_eq!(
        referenced(
            r#"sum by (app) (rate(orceum_bridge_retries_total{reason="a,}b", app!~"x"}[5m])) / xorceum_bridge_no"#
        ),
        vec![(
            "orceum_bridge_retries_total".to_string(),
            vec!["reason".to_string(), "app".to_string()]
        )]
    );
}
