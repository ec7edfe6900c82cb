//! `orceum-bridge demo`: the whole pipeline on one machine with nothing installed.
//!
//! An embedded Kafka-protocol cluster (librdkafka's mock cluster), the sandbox as Orceum (with
//! a few injected 503s and 429s, and some events queued for a digest or ignored), the config in `examples/demo.yaml`, and a few hundred
//! realistic domain events — tasks, payments, exports, and a couple of poison messages. The
//! real [`crate::run`] drains them; the demo prints live progress and a summary.

use crate::build::load_str;
use crate::telemetry::metrics::Metrics;
use crate::tools::sandbox::{self, Answers, Faults, Reply, SandboxConfig};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const CONFIG: &str = include_str!("../../examples/demo.yaml");
const TASKS_SECRET: &str = "whs_demo_tasks_0123456789";
const BILLING_SECRET: &str = "whs_demo_billing_0123456789";

/// What the demo watches of the running bridge.
type RunningHandles = (Arc<Metrics>, crate::telemetry::health::Readiness);

/// What the demo produced, so the summary can say what should have happened.
struct Produced {
    total: usize,
    /// Events that should reach Orceum (filter true, valid, installation active).
    deliverable: usize,
    filtered: usize,
    poison: usize,
    /// `kafka:topic/partition@offset` → when it was produced (ms since the epoch).
    sent_at: HashMap<String, i64>,
}

/// Runs the demo; `Ok(true)` when every event ended where it should.
pub fn run(events: usize) -> anyhow::Result<bool> {
    let cluster = MockCluster::new(1)?;
    for (topic, partitions) in [
        ("tasks", 3),
        ("payments", 3),
        ("exports", 1),
        ("orceum-dead-letter", 1),
    ] {
        cluster.create_topic(topic, partitions, 1)?;
    }
    let bootstrap = cluster.bootstrap_servers();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run_async(bootstrap, events.max(10)));
    drop(rt);
    drop(cluster);
    result
}

async fn run_async(bootstrap: String, events: usize) -> anyhow::Result<bool> {
    if std::env::var_os("RUST_LOG").is_none() {
        // Keep the demo's own output readable; RUST_LOG=info shows the bridge's logs.
        let filter = tracing_subscriber::EnvFilter::new("error");
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    } else {
        crate::telemetry::logging::init(crate::config::LogFormat::Text);
    }
    let started = Instant::now();
    println!("orceum-bridge demo — embedded Kafka at {bootstrap}");

    // Orceum, played by the sandbox: a little unreliable, like a real network.
    let secrets_dir = tempfile::tempdir()?;
    std::fs::write(secrets_dir.path().join("tasks"), TASKS_SECRET)?;
    std::fs::write(secrets_dir.path().join("billing"), BILLING_SECRET)?;
    let shutdown_sandbox = CancellationToken::new();
    let sandbox = sandbox::start(
        SandboxConfig {
            apps: HashMap::from([
                ("app_tasks".to_string(), TASKS_SECRET.to_string()),
                ("app_billing".to_string(), BILLING_SECRET.to_string()),
            ]),
            accept_any: false,
            faults: Faults {
                rate_503: 0.05,
                rate_429: 0.02,
                retry_after_secs: Some(1),
                reject_installations: HashSet::from(["inst_churned".to_string()]),
                ..Faults::default()
            },
            // What Orceum does with events varies (digests, quiet hours); the summary shows it.
            answers: Answers::new(
                vec![
                    (Reply::Queued, 0.2),
                    (Reply::Ignored, 0.1),
                    (Reply::ConversationStarted, 0.1),
                ],
                HashMap::new(),
            )?,
            print: false,
        },
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        shutdown_sandbox.clone(),
    )
    .await?;
    println!(
        "sandbox Orceum at {} (5% 503, 2% 429, installation inst_churned answers 404; answers 20% QUEUED, 10% IGNORED, 10% CONVERSATION_STARTED)",
        sandbox.base_url()
    );

    let env = {
        let base = sandbox.base_url();
        let dir = secrets_dir.path().display().to_string();
        let bootstrap = bootstrap.clone();
        move |name: &str| match name {
            "ORCEUM_BASE_URL" => Some(base.clone()),
            "DEMO_SECRETS_DIR" => Some(dir.clone()),
            "KAFKA_BOOTSTRAP" => Some(bootstrap.clone()),
            _ => None,
        }
    };
    let bridge = load_str(CONFIG, "examples/demo.yaml", env).map_err(|e| anyhow::anyhow!("{e}"))?;

    let shutdown = CancellationToken::new();
    let running: Arc<Mutex<Option<RunningHandles>>> = Arc::default();
    let slot = running.clone();
    let bridge_task = tokio::spawn(crate::run::run_with(bridge, shutdown.clone(), move |r| {
        if let Ok(mut s) = slot.lock() {
            *s = Some((r.metrics.clone(), r.readiness.clone()));
        }
    }));
    let metrics_slot = running.clone();
    // Produce once the consumer owns its partitions, so latency measures the pipeline and not
    // the consumer-group join.
    for _ in 0..150 {
        let assigned = running
            .lock()
            .ok()
            .and_then(|s| {
                s.as_ref()
                    .map(|(m, _)| sum(m, "orceum_bridge_kafka_assigned_partitions"))
            })
            .unwrap_or(0);
        if assigned >= 7 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let produced = produce(&bootstrap, events).await?;
    println!(
        "produced {} domain events ({} to deliver, {} filtered out, {} poison) on tasks, payments, exports",
        produced.total, produced.deliverable, produced.filtered, produced.poison
    );

    // Progress until every message has a final outcome (or a generous deadline).
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last_line = String::new();
    let final_count = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Some(metrics) = metrics_slot
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|(m, _)| m.clone()))
        else {
            continue;
        };
        let delivered = sum(&metrics, "orceum_bridge_events_delivered_total");
        let dead = sum(&metrics, "orceum_bridge_dead_letters_total");
        let skipped = sum(&metrics, "orceum_bridge_skipped_total");
        let retried = sum(&metrics, "orceum_bridge_retries_total");
        let line = format!(
            "  delivered {delivered:>4}/{}  dead-lettered {dead:>2}  filtered {skipped:>3}  retried {retried:>3}",
            produced.deliverable
        );
        if line != last_line {
            println!("{line}");
            last_line = line;
        }
        let finished = delivered + dead + skipped;
        if finished >= produced.total as u64 || Instant::now() > deadline {
            break (metrics, delivered, dead, skipped, retried);
        }
        if bridge_task.is_finished() {
            break (metrics, delivered, dead, skipped, retried);
        }
    };
    shutdown.cancel();
    match bridge_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => anyhow::bail!("the bridge stopped with an error: {e}"),
        Err(e) => anyhow::bail!("the bridge task failed: {e}"),
    }
    let (metrics, delivered, dead, skipped, retried) = final_count;

    // Summary.
    let received = sandbox.events();
    let mut per_app: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut latencies = Vec::new();
    for ev in &received {
        let priority = ev.event["priority"]
            .as_str()
            .unwrap_or("normal")
            .to_string();
        *per_app.entry((ev.app_id.clone(), priority)).or_default() += 1;
        let source = ev.event["metadata"]["source"].as_str().unwrap_or_default();
        if let Some(sent_ms) = produced.sent_at.get(source) {
            latencies.push((ev.received_at.timestamp_millis() - sent_ms).max(0));
        }
    }
    latencies.sort_unstable();
    let pct = |p: f64| -> i64 {
        if latencies.is_empty() {
            0
        } else {
            latencies[((latencies.len() - 1) as f64 * p).round() as usize]
        }
    };
    let unique: HashSet<&str> = received
        .iter()
        .filter_map(|e| e.event["metadata"]["source"].as_str())
        .collect();
    println!();
    println!("summary ({:.1}s)", started.elapsed().as_secs_f64());
    println!(
        "  delivered to Orceum: {delivered} events ({} unique source messages)",
        unique.len()
    );
    for ((app, priority), n) in &per_app {
        println!("    {app:<12} {priority:<8} {n}");
    }
    println!(
        "  what Orceum did (orceum_bridge_orceum_actions_total): {}",
        by_action(&metrics)
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(action, n)| format!("{action} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let statuses = sandbox.stats().by_status;
    println!(
        "  retried: {retried} (sandbox answered {})",
        statuses
            .iter()
            .map(|(s, n)| format!("{s}×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  dead-lettered: {dead} (topic orceum-dead-letter)");
    for (labels, n) in by_labels(&metrics, "orceum_bridge_dead_letters_total") {
        println!("    {labels}: {n}");
    }
    println!("  filtered out (committed without a push): {skipped}");
    println!(
        "  latency produce → Orceum: p50 {} ms, p99 {} ms (includes the 1 s app-wide pause each injected 429 asks for)",
        pct(0.5),
        pct(0.99)
    );
    println!();
    let ok = delivered as usize >= produced.deliverable
        && dead as usize == produced.poison
        && skipped as usize == produced.filtered;
    if ok {
        println!("every event ended where it should: nothing lost.");
    } else {
        println!("UNEXPECTED: some events did not reach their outcome (see above).");
    }
    println!("next: write your config (examples/orceum-bridge.yaml, docs/configuration.md), try a mapping with");
    println!("      `orceum-bridge render -c config.yaml --route NAME < sample.json` (docs/templates.md),");
    println!("      then `orceum-bridge check -c config.yaml --connect` and `orceum-bridge run -c config.yaml`.");
    shutdown_sandbox.cancel();
    Ok(ok)
}

/// Produces realistic events; returns what should happen to them.
async fn produce(bootstrap: &str, events: usize) -> anyhow::Result<Produced> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()?;
    let now = chrono::Utc::now();
    let mut produced = Produced {
        total: 0,
        deliverable: 0,
        filtered: 0,
        poison: 0,
        sent_at: HashMap::new(),
    };
    let mut records: Vec<(&str, String, Vec<u8>)> = Vec::new();
    for i in 0..events {
        let inst = format!("inst_{:03}", i % 40);
        let ts = (now - chrono::Duration::seconds((events - i) as i64)).to_rfc3339();
        let (topic, body): (&str, Value) = match i % 10 {
            0..=5 => {
                let done = i % 7 != 0;
                if done {
                    produced.deliverable += 1;
                } else {
                    produced.filtered += 1;
                }
                (
                    "tasks",
                    json!({"id": format!("task_{i}"), "title": format!("Send report #{i}"),
                           "status": if done { "done" } else { "open" }, "urgent": i % 9 == 0,
                           "completed_at": ts, "user": {"installation_id": inst}}),
                )
            }
            6..=8 => {
                produced.deliverable += 1;
                (
                    "payments",
                    json!({"type": "payment.failed", "id": format!("pay_{i}"), "installation_id": inst,
                           "amount_cents": if i % 13 == 0 { 250_000 } else { 4_999 }, "currency": "EUR",
                           "failure_reason": "card_declined", "occurred_at": ts}),
                )
            }
            _ => {
                produced.deliverable += 1;
                (
                    "exports",
                    json!({"id": format!("exp_{i}"), "installation_id": inst, "format": "csv",
                           "download_url": format!("https://files.example/exp_{i}.csv")}),
                )
            }
        };
        records.push((topic, inst, serde_json::to_vec(&body)?));
    }
    // Poison: not JSON, a bad priority, and an installation that is gone (404 → dead letter).
    records.push(("tasks", "inst_x".into(), b"{not json".to_vec()));
    records.push((
        "payments",
        "inst_001".into(),
        serde_json::to_vec(&json!({"type": "payment.failed", "id": "pay_bad", "installation_id": "inst_001",
            "amount_cents": 10, "currency": "EUR", "priority": "urgent", "occurred_at": now.to_rfc3339()}))?,
    ));
    records.push((
        "exports",
        "inst_churned".into(),
        serde_json::to_vec(
            &json!({"id": "exp_gone", "installation_id": "inst_churned", "format": "pdf",
            "download_url": "https://files.example/gone.pdf"}),
        )?,
    ));
    produced.poison = 3;
    produced.total = records.len();
    let sent_ms = chrono::Utc::now().timestamp_millis();
    let producer = &producer;
    let sends = records.iter().map(|(topic, key, payload)| async move {
        let r = producer
            .send(
                FutureRecord::to(topic)
                    .key(key.as_bytes())
                    .payload(payload.as_slice()),
                Duration::from_secs(10),
            )
            .await;
        (topic, r)
    });
    for (topic, r) in futures::future::join_all(sends).await {
        let delivery = r.map_err(|(e, _)| anyhow::anyhow!("cannot produce a demo event: {e}"))?;
        produced.sent_at.insert(
            format!("kafka:{topic}/{}@{}", delivery.partition, delivery.offset),
            sent_ms,
        );
    }
    Ok(produced)
}

/// `orceum_actions_total` summed over apps: action → count, in the API's order.
fn by_action(metrics: &Metrics) -> Vec<(&'static str, u64)> {
    let series = by_labels(metrics, "orceum_bridge_orceum_actions_total");
    crate::orceum::answer::Action::ALL
        .iter()
        .map(|a| {
            let label = format!("action=\"{}\"", a.label());
            let n = series
                .iter()
                .filter(|(labels, _)| labels.split(',').any(|l| l == label))
                .map(|(_, n)| n)
                .sum();
            (a.label(), n)
        })
        .collect()
}

fn sum(metrics: &Metrics, name: &str) -> u64 {
    by_labels(metrics, name).values().sum()
}

/// Reads a counter family from the rendered metrics: labels → value.
fn by_labels(metrics: &Metrics, name: &str) -> BTreeMap<String, u64> {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = series
                .strip_prefix(name)?
                .trim_matches(|c| c == '{' || c == '}')
                .to_string();
            Some((labels, value.parse::<f64>().ok()? as u64))
        })
        .collect()
}
