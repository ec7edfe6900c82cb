//! NATS sources against a real nats-server with JetStream (started by scripts/test, or by the
//! test itself where it must restart the server): core subjects with wildcards, JetStream
//! exactly-once without faults, poison messages dead-lettered and terminated, replicas sharing
//! a durable consumer and a queue group, a server restart mid-stream, and SIGKILLs under faults.

use crate::common::*;
use crate::harness::*;
use async_nats::jetstream::{self, stream};
use orceum_bridge::tools::sandbox::Faults;
use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

/// A config with apps a and b and one NATS source `bus` at `url`.
fn nats_config(base_url: &str, url: &str, routes: &str, delivery: &str) -> String {
    format!(
        r#"
orceum: {{ base_url: "{base_url}", timeout: 5s }}
apps:
  a: {{ app_id: app_a, secret: {{ env: SECRET_A }} }}
  b: {{ app_id: app_b, secret: {{ env: SECRET_B }} }}
sources:
  bus:
    nats: {{ url: "{url}" }}
routes:
{routes}
delivery:
{delivery}
observability: {{ listen: "127.0.0.1:0", log_format: text }}
"#
    )
}

fn js_route(name: &str, stream: &str, durable: &str, extra: &str) -> String {
    format!(
        r#"  - name: {name}
    source: bus
    jetstream: {{ stream: {stream}, durable: {durable}, create: true, ack_wait: 5s }}
    app: a
{extra}    event:
      installation_id: .inst
      event_type: '.type // "test.event"'
      event_data: '{{seq, subject: $meta.subject}}'
      priority: '.priority // "normal"'
"#
    )
}

async fn wait_ready(bridge: &InProcess) {
    let health = bridge.health_url().await;
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("{health}/readyz")).await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the bridge never became ready");
}

async fn client(url: &str) -> async_nats::Client {
    async_nats::connect(url).await.expect("connect to nats")
}

async fn create_stream(js: &jetstream::Context, name: &str, subjects: Vec<String>, file: bool) {
    js.create_stream(stream::Config {
        name: name.to_string(),
        subjects,
        storage: if file {
            stream::StorageType::File
        } else {
            stream::StorageType::Memory
        },
        ..Default::default()
    })
    .await
    .expect("create stream");
}

async fn publish_js(js: &jetstream::Context, subject: &str, payloads: &[Vec<u8>]) {
    let mut acks = Vec::new();
    for p in payloads {
        acks.push(
            js.publish(subject.to_string(), p.clone().into())
                .await
                .expect("publish"),
        );
        if acks.len() >= 500 {
            for a in acks.drain(..) {
                a.await.expect("publish ack");
            }
        }
    }
    for a in acks {
        a.await.expect("publish ack");
    }
}

async fn consumer_pending(js: &jetstream::Context, stream: &str, durable: &str) -> (u64, usize) {
    let mut c: jetstream::consumer::PullConsumer = js
        .get_stream(stream)
        .await
        .unwrap()
        .get_consumer(durable)
        .await
        .unwrap();
    let info = c.info().await.unwrap();
    (info.num_pending, info.num_ack_pending)
}

/// [`consumer_pending`] once it reads `(0, 0)`, or after 10 s (acks land asynchronously).
async fn settled_pending(js: &jetstream::Context, stream: &str, durable: &str) -> (u64, usize) {
    let mut pending = (u64::MAX, usize::MAX);
    for _ in 0..50 {
        pending = consumer_pending(js, stream, durable).await;
        if pending == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pending
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn core_subjects_with_wildcards_deliver_each_event_once() {
    let url = nats_url();
    let prefix = unique("core").replace('-', "_");
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let routes = format!(
        r#"  - name: core
    source: bus
    subjects: ["{prefix}.orders.>", "{prefix}.tasks.*.done"]
    app: a
    event:
      installation_id: .inst
      event_type: '"test.event"'
      event_data: '{{seq, subject: $meta.subject}}'
"#
    );
    let bridge = spawn_bridge(&nats_config(
        &sandbox.base_url(),
        &url,
        &routes,
        "  max_in_flight: 256\n",
    ));
    // Core NATS is at-most-once: publish only once the bridge is subscribed.
    wait_ready(&bridge).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let nc = client(&url).await;
    let n = 2000;
    for (i, p) in payloads(n, 20).into_iter().enumerate() {
        let subject = match i % 3 {
            0 => format!("{prefix}.orders.created.eu"),
            1 => format!("{prefix}.orders.paid"),
            _ => format!("{prefix}.tasks.{i}.done"),
        };
        nc.publish(subject, p.into()).await.unwrap();
    }
    // Not matched by either pattern: never delivered.
    nc.publish(
        format!("{prefix}.tasks.1.open"),
        br#"{"inst":"x","seq":-1}"#.to_vec().into(),
    )
    .await
    .unwrap();
    nc.flush().await.unwrap();
    let all = wait_until(Duration::from_secs(60), || seen(&sandbox).total >= n).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = sandbox.events();
    let seqs: HashSet<i64> = events
        .iter()
        .map(|e| e.event["event_data"]["seq"].as_i64().unwrap())
        .collect();
    assert!(all, "only {} of {n} delivered", events.len());
    assert_eq!(events.len(), n, "each event exactly once");
    assert_eq!(seqs.len(), n);
    assert!(
        !seqs.contains(&-1),
        "a subject outside the patterns was delivered"
    );
    assert!(events.iter().all(|e| e.event["metadata"]["source"]
        .as_str()
        .unwrap()
        .starts_with("nats:")));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_delivers_5000_events_exactly_once_and_leaves_nothing_pending() {
    let url = nats_url();
    let name = unique("JS").replace('-', "_");
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    create_stream(&js, &name, vec![format!("{name}.>")], false).await;
    let n = 5000;
    publish_js(&js, &format!("{name}.tasks"), &payloads(n, 50)).await;
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let bridge = spawn_bridge(&nats_config(
        &sandbox.base_url(),
        &url,
        &js_route("js", &name, "bridge", ""),
        "  max_in_flight: 256\n",
    ));
    let all = wait_until(Duration::from_secs(180), || seen(&sandbox).unique() >= n).await;
    let s = seen(&sandbox);
    assert!(all, "only {} of {n} delivered", s.unique());
    assert_eq!(
        settled_pending(&js, &name, "bridge").await,
        (0, 0),
        "no pending or unacknowledged messages left"
    );
    let s = seen(&sandbox);
    assert_eq!(
        (s.unique(), s.duplicates()),
        (n, 0),
        "exactly once without faults"
    );
    assert!(s
        .per_source
        .keys()
        .all(|k| k.starts_with(&format!("jetstream:{name}@"))));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_poison_messages_are_dead_lettered_and_terminated() {
    let url = nats_url();
    let name = unique("POISON").replace('-', "_");
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    create_stream(&js, &name, vec![format!("{name}.in")], false).await;
    let dlq = format!("{name}_DLQ");
    create_stream(&js, &dlq, vec![format!("{name}.dead")], false).await;
    let mut msgs: Vec<Vec<u8>> = (0..5)
        .map(|i| format!(r#"{{"inst":"i","seq":{i}}}"#).into_bytes())
        .collect();
    msgs.push(b"not json at all".to_vec());
    msgs.push(br#"{"inst":"i","seq":90,"priority":"urgent"}"#.to_vec());
    msgs.push(br#"{"inst":"i","seq":91,"type":"test.rejected"}"#.to_vec());
    msgs.extend((5..10).map(|i| format!(r#"{{"inst":"i","seq":{i}}}"#).into_bytes()));
    publish_js(&js, &format!("{name}.in"), &msgs).await;
    let (sandbox, _stop) = start_sandbox(Faults {
        reject_event_types: HashSet::from(["test.rejected".to_string()]),
        ..Faults::default()
    })
    .await;
    let delivery = format!("  dead_letter: {{ nats: {{ source: bus, subject: {name}.dead }} }}\n");
    let bridge = spawn_bridge(&nats_config(
        &sandbox.base_url(),
        &url,
        &js_route("js", &name, "bridge", ""),
        &delivery,
    ));
    assert!(
        wait_until(Duration::from_secs(60), || seen(&sandbox).unique() >= 10).await,
        "later events flow past the poison ones"
    );
    // Three dead letters on the subject, with their reasons and original bytes.
    let dead_stream = js.get_stream(&dlq).await.unwrap();
    let mut count = 0;
    for _ in 0..100 {
        let mut s = js.get_stream(&dlq).await.unwrap();
        count = s.info().await.unwrap().state.messages;
        if count >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count, 3, "three dead letters");
    let mut kinds = Vec::new();
    for seq in 1..=3u64 {
        let raw = dead_stream.get_raw_message(seq).await.unwrap();
        let headers = raw.headers;
        let kind = headers
            .get("orceum.reason_kind")
            .unwrap()
            .as_str()
            .to_string();
        assert!(headers
            .get("orceum.source")
            .unwrap()
            .as_str()
            .starts_with(&format!("jetstream:{name}@")));
        let payload = raw.payload.to_vec();
        assert!(msgs.contains(&payload), "original bytes kept");
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(kinds, ["http_422", "invalid_field", "not_json"]);
    // Terminated, not redelivered: nothing pending, and no redeliveries after ack_wait.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(consumer_pending(&js, &name, "bridge").await, (0, 0));
    let metrics = bridge.metrics_text();
    assert_eq!(
        counter(&metrics, "orceum_bridge_dead_letters_total", ""),
        3,
        "each poison message dead-lettered once"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_bridges_share_a_durable_consumer_and_a_queue_group_delivering_each_event_once() {
    let url = nats_url();
    let name = unique("SHARED").replace('-', "_");
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    create_stream(&js, &name, vec![format!("{name}.js")], false).await;
    let (sandbox, _stop) = start_sandbox(Faults {
        latency: Duration::from_millis(2),
        ..Faults::default()
    })
    .await;
    let routes = format!(
        "{}  - name: core\n    source: bus\n    subjects: [\"{name}.core\"]\n    queue_group: bridges\n    app: b\n    event:\n      installation_id: .inst\n      event_type: '\"test.event\"'\n      event_data: '{{seq}}'\n",
        js_route("js", &name, "shared", "")
    );
    let yaml = nats_config(&sandbox.base_url(), &url, &routes, "  max_in_flight: 64\n");
    let one = spawn_bridge(&yaml);
    let two = spawn_bridge(&yaml);
    wait_ready(&one).await;
    wait_ready(&two).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = 1000;
    publish_js(&js, &format!("{name}.js"), &payloads(n, 20)).await;
    for p in payloads(n, 20) {
        nc.publish(format!("{name}.core"), p.into()).await.unwrap();
    }
    nc.flush().await.unwrap();
    let all = wait_until(Duration::from_secs(120), || seen(&sandbox).total >= 2 * n).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = sandbox.events();
    let js_events: Vec<_> = events.iter().filter(|e| e.app_id == "app_a").collect();
    let core_events: Vec<_> = events.iter().filter(|e| e.app_id == "app_b").collect();
    assert!(all, "{} of {} delivered", events.len(), 2 * n);
    let js_unique: HashSet<String> = js_events
        .iter()
        .map(|e| e.event["metadata"]["source"].to_string())
        .collect();
    let core_unique: HashSet<i64> = core_events
        .iter()
        .map(|e| e.event["event_data"]["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(
        (js_events.len(), js_unique.len()),
        (n, n),
        "JetStream: each event once in total"
    );
    assert_eq!(
        (core_events.len(), core_unique.len()),
        (n, n),
        "queue group: each event once in total"
    );
    let d1 = counter(
        &one.metrics_text(),
        "orceum_bridge_events_delivered_total",
        "",
    );
    let d2 = counter(
        &two.metrics_text(),
        "orceum_bridge_events_delivered_total",
        "",
    );
    eprintln!("replica one delivered {d1}, replica two {d2}");
    assert!(d1 > 0 && d2 > 0, "both replicas took a share ({d1}/{d2})");
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nats_server_restart_mid_stream_loses_nothing_and_the_bridge_keeps_running() {
    let mut server = TestBroker::nats();
    let url = server.url();
    let name = unique("RESTART").replace('-', "_");
    {
        let nc = client(&url).await;
        let js = jetstream::new(nc);
        create_stream(&js, &name, vec![format!("{name}.>")], true).await;
        publish_js(&js, &format!("{name}.x"), &payloads(3000, 30)).await;
    }
    let (sandbox, _stop) = start_sandbox(Faults {
        latency: Duration::from_millis(3),
        ..Faults::default()
    })
    .await;
    let bridge = spawn_bridge(&nats_config(
        &sandbox.base_url(),
        &url,
        &js_route("js", &name, "bridge", ""),
        "  max_in_flight: 100\n",
    ));
    assert!(wait_until(Duration::from_secs(60), || seen(&sandbox).unique() >= 800).await);
    server.terminate();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let health = bridge.health_url().await;
    let ready = reqwest::get(format!("{health}/readyz"))
        .await
        .unwrap()
        .status();
    assert_eq!(ready, 503, "not ready while disconnected");
    server.start();
    let all = wait_until(Duration::from_secs(120), || seen(&sandbox).unique() >= 3000).await;
    let s = seen(&sandbox);
    eprintln!(
        "after the restart: {} unique, {} duplicates",
        s.unique(),
        s.duplicates()
    );
    assert!(
        all,
        "only {} of 3000 delivered after the restart",
        s.unique()
    );
    assert!(!bridge.task.is_finished(), "the bridge never exits");
    assert!(
        s.duplicates() <= 100,
        "duplicates bounded by the in-flight limit"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_with_faults_and_three_sigkills_delivers_everything_with_bounded_duplicates() {
    let url = nats_url();
    let name = unique("KILL").replace('-', "_");
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    create_stream(&js, &name, vec![format!("{name}.x")], false).await;
    let n = 2000;
    publish_js(&js, &format!("{name}.x"), &payloads(n, 20)).await;
    let (sandbox, _stop) = start_sandbox(Faults {
        rate_503: 0.2,
        rate_429: 0.1,
        retry_after_secs: Some(1),
        ..Faults::default()
    })
    .await;
    let max_in_flight = 100;
    let yaml = nats_config(
        &sandbox.base_url(),
        &url,
        &js_route("js", &name, "bridge", ""),
        &format!("  max_in_flight: {max_in_flight}\n  retry: {{ initial_backoff: 20ms, max_backoff: 300ms }}\n  shutdown_timeout: 5s\n"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = dir.path().join("log");
    for stage in [0.2, 0.45, 0.7] {
        let mut child = start_process(&config, &log);
        let target = (n as f64 * stage) as usize;
        assert!(
            wait_until(Duration::from_secs(180), || seen(&sandbox).unique()
                >= target)
            .await,
            "stuck at {}:\n{}",
            seen(&sandbox).unique(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let mut child = start_process(&config, &log);
    let all = wait_until(Duration::from_secs(300), || seen(&sandbox).unique() >= n).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let s = seen(&sandbox);
    eprintln!(
        "{} unique, {} duplicates (bound {})",
        s.unique(),
        s.duplicates(),
        3 * max_in_flight
    );
    assert!(all, "only {} of {n} delivered", s.unique());
    assert!(exit.success(), "SIGTERM exits 0");
    assert!(
        s.duplicates() <= 3 * max_in_flight,
        "{} duplicates",
        s.duplicates()
    );
    assert_eq!(consumer_pending(&js, &name, "bridge").await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connect_reports_missing_streams_and_consumers_and_passes_once_they_exist() {
    let url = nats_url();
    let name = unique("CHECK").replace('-', "_");
    let routes = format!(
        "{}{}",
        js_route("created", &name, "auto", ""),
        js_route("bound", &name, "manual", "").replace("create: true", "create: false")
    );
    let yaml = nats_config(
        "http://127.0.0.1:9/v1",
        &url,
        &routes,
        "  max_in_flight: 10\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).unwrap();
    let check = move || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orceum-bridge"));
        cmd.args(["check", "--connect", "-c"]).arg(&path);
        for (k, v) in env_vars() {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = tokio::task::spawn_blocking(check.clone()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("routes[0].jetstream.stream")
            && stderr.contains("routes[1].jetstream.stream"),
        "{stderr}"
    );

    let js = jetstream::new(client(&url).await);
    create_stream(&js, &name, vec![format!("{name}.x")], false).await;
    let out = tokio::task::spawn_blocking(check.clone()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("routes[1].jetstream.durable") && !stderr.contains("routes[0]"),
        "{stderr}"
    );

    js.get_stream(&name)
        .await
        .unwrap()
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("manual".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let out = tokio::task::spawn_blocking(check.clone()).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_with_the_nats_server_gone_is_bounded() {
    let mut server = TestBroker::nats();
    let url = server.url();
    let name = unique("GONE").replace('-', "_");
    {
        let js = jetstream::new(client(&url).await);
        create_stream(&js, &name, vec![format!("{name}.>")], true).await;
        publish_js(&js, &format!("{name}.x"), &payloads(50, 5)).await;
    }
    // Orceum answers 503 to everything: the bridge holds every message it pulled.
    let (sandbox, _stop) = start_sandbox(Faults {
        rate_503: 1.0,
        ..Faults::default()
    })
    .await;
    let bridge = spawn_bridge(&nats_config(
        &sandbox.base_url(),
        &url,
        &js_route("js", &name, "bridge", ""),
        "  max_in_flight: 20\n  shutdown_timeout: 2s\n",
    ));
    let metrics = bridge.metrics().await;
    assert!(
        wait_until(Duration::from_secs(30), || {
            metrics.in_flight.with_label_values(&["a"]).get() > 0
        })
        .await,
        "nothing held"
    );
    server.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    bridge.stop().await;
    // shutdown_timeout (2 s) + the flush bound (2 s) + slack; it used to wait for a
    // reconnect forever.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "shutdown took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_app_never_holds_back_another_app_on_the_same_jetstream_stream() {
    let url = nats_url();
    let name = unique("JSAB").replace('-', "_");
    let nc = client(&url).await;
    let js = jetstream::new(nc.clone());
    create_stream(&js, &name, vec![format!("{name}.>")], false).await;
    // One subject, apps a and b interleaved 1:9: 400 of a's events, 3,600 of b's.
    let events: Vec<Vec<u8>> = interleaved_a_b(4000).into_iter().map(|(_, p)| p).collect();
    publish_js(&js, &format!("{name}.events"), &events).await;
    let (sandbox, _stop) = start_sandbox(Faults {
        throttle_apps: ["app_a".to_string()].into(),
        retry_after_secs: Some(20),
        ..Faults::default()
    })
    .await;
    let route = |app: &str| {
        format!(
            r#"  - name: to-{app}
    source: bus
    jetstream: {{ stream: {name}, durable: to_{app}, create: true, ack_wait: 5s }}
    app: {app}
    filter: '.app == "{app}"'
    event:
      installation_id: .inst
      event_type: '"test.event"'
      event_data: '{{seq}}'
"#
        )
    };
    // Default delivery settings.
    let bridge = spawn_bridge(&nats_config(
        &sandbox.base_url(),
        &url,
        &format!("{}{}", route("a"), route("b")),
        "  shutdown_timeout: 5s\n",
    ));
    let count = |app: &str| sandbox.events().iter().filter(|e| e.app_id == app).count();
    let started = std::time::Instant::now();
    let b_all = wait_until(Duration::from_secs(60), || count("app_b") >= 3600).await;
    let b_took = started.elapsed();
    assert!(
        b_all,
        "only {} of app b's 3600 events while a is throttled",
        count("app_b")
    );
    assert_eq!(count("app_a"), 0, "a is still throttled");
    let throttled = sandbox.stats().by_status.get(&429).copied().unwrap_or(0);
    sandbox.set_faults(Faults::default());
    let a_all = wait_until(Duration::from_secs(90), || count("app_a") >= 400).await;
    let peak_mib = peak_rss_kib(std::process::id()).unwrap_or(0) as f64 / 1024.0;
    eprintln!(
        "jetstream: b: 3600 delivered in {b_took:?} while a was throttled ({throttled} 429s); \
         a: {} after the throttle; peak RSS of bridge + sandbox {peak_mib:.1} MiB",
        count("app_a")
    );
    assert!(a_all, "only {} of a's 400 events", count("app_a"));
    let s = seen(&sandbox);
    assert_eq!(
        (s.unique(), s.duplicates()),
        (4000, 0),
        "once each, a's held messages were kept in progress"
    );
    // Per-installation order for a's events, which waited.
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for e in sandbox.events() {
        let inst = e.event["installation_id"]
            .as_str()
            .unwrap_or("?")
            .to_string();
        let seq = e.event["event_data"]["seq"].as_i64().unwrap_or(-1);
        if let Some(prev) = last.insert(inst.clone(), seq) {
            assert!(prev < seq, "{inst}: seq {seq} after {prev}");
        }
    }
    for durable in ["to_a", "to_b"] {
        assert_eq!(
            settled_pending(&js, &name, durable).await,
            (0, 0),
            "{durable}: nothing pending or unacknowledged"
        );
    }
    bridge.stop().await;
}
