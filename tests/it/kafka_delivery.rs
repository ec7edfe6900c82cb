//! End-to-end delivery against a real Kafka-protocol broker (Tansu, started by scripts/test)
//! and the sandbox as Orceum: exactly-once without faults, every event under transient faults,
//! poison messages dead-lettered while the partition moves on, per-app rate limits.

use crate::common::*;
use crate::harness::*;
use orceum_bridge::tools::sandbox::Faults;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Asserts that the sandbox accepted each installation's events in increasing `seq` order.
fn assert_per_installation_order(sandbox: &orceum_bridge::tools::sandbox::SandboxHandle) {
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    for e in sandbox.events() {
        let inst = e.event["installation_id"].as_str().unwrap().to_string();
        let seq = e.event["event_data"]["seq"].as_i64().unwrap();
        if let Some(prev) = last.get(&inst) {
            assert!(seq > *prev, "{inst}: seq {seq} arrived after {prev}");
        }
        last.insert(inst, seq);
    }
}

async fn wait_committed_to_end(
    group: &str,
    topic: &str,
    partitions: i32,
) -> (Vec<i64>, Vec<Option<i64>>) {
    let ends = end_offsets(topic, partitions);
    let want: Vec<Option<i64>> = ends.iter().map(|e| Some(*e)).collect();
    let mut got = Vec::new();
    wait_until(Duration::from_secs(30), || {
        got = committed_offsets(group, topic, partitions);
        got == want
    })
    .await;
    (ends, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_thousand_events_over_three_partitions_arrive_exactly_once_and_commits_reach_the_end()
{
    let topic = unique("e2e");
    let group = unique("g-e2e");
    create_topic(&topic, 3).await;
    produce(&topic, keyed_records(5000, 60, 3)).await;
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let yaml = config(
        &sandbox.base_url(),
        &kafka_brokers(),
        &group,
        &route("all", &topic, "a", None),
        "  max_in_flight: 256\n  commit_interval: 200ms\n",
    );
    let bridge = spawn_bridge(&yaml);

    let all = wait_until(Duration::from_secs(240), || seen(&sandbox).unique() >= 5000).await;
    let s = seen(&sandbox);
    assert!(all, "only {} of 5000 events arrived", s.unique());
    let (ends, committed) = wait_committed_to_end(&group, &topic, 3).await;
    assert_eq!(
        committed,
        ends.iter().map(|e| Some(*e)).collect::<Vec<_>>(),
        "committed offsets must equal the end offsets"
    );
    assert_eq!(ends.iter().sum::<i64>(), 5000);
    let s = seen(&sandbox);
    assert_eq!(
        (s.unique(), s.duplicates()),
        (5000, 0),
        "exactly once without faults"
    );
    assert_per_installation_order(&sandbox);
    let metrics = bridge.metrics_text();
    assert_eq!(
        counter(
            &metrics,
            "orceum_bridge_events_delivered_total",
            "app=\"a\""
        ),
        5000
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transient_503_and_429_faults_deliver_every_event_in_key_order() {
    let topic = unique("faults");
    let group = unique("g-faults");
    create_topic(&topic, 3).await;
    let n = 1000;
    produce(&topic, keyed_records(n, 40, 3)).await;
    let (sandbox, _stop) = start_sandbox(Faults {
        rate_503: 0.2,
        rate_429: 0.1,
        retry_after_secs: Some(1),
        ..Faults::default()
    })
    .await;
    let yaml = config(
        &sandbox.base_url(),
        &kafka_brokers(),
        &group,
        &route("all", &topic, "a", None),
        "  max_in_flight: 256\n  commit_interval: 200ms\n  retry: { initial_backoff: 20ms, max_backoff: 500ms }\n",
    );
    let bridge = spawn_bridge(&yaml);
    let all = wait_until(Duration::from_secs(300), || seen(&sandbox).unique() >= n).await;
    let s = seen(&sandbox);
    assert!(all, "only {} of {n} events arrived", s.unique());
    let (ends, committed) = wait_committed_to_end(&group, &topic, 3).await;
    assert_eq!(committed, ends.iter().map(|e| Some(*e)).collect::<Vec<_>>());
    let stats = sandbox.stats();
    let s = seen(&sandbox);
    let (r503, r429) = (
        stats.by_status.get(&503).copied().unwrap_or(0),
        stats.by_status.get(&429).copied().unwrap_or(0),
    );
    eprintln!(
        "delivered {} unique, {} duplicates; sandbox answered 503×{r503}, 429×{r429}",
        s.unique(),
        s.duplicates()
    );
    assert_eq!(s.unique(), n, "every event delivered");
    assert_eq!(
        s.duplicates(),
        0,
        "a rejected attempt is not a delivery, so no duplicates"
    );
    assert!(r503 > 0 && r429 > 0, "faults were injected");
    let metrics = bridge.metrics_text();
    assert_eq!(
        counter(&metrics, "orceum_bridge_retries_total", ""),
        r503 + r429,
        "every fault was retried once"
    );
    assert_per_installation_order(&sandbox);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn poison_messages_go_to_the_dead_letter_topic_and_the_partition_moves_on() {
    let topic = unique("poison");
    let dlq = unique("dlq");
    let group = unique("g-poison");
    create_topic(&topic, 1).await;
    create_topic(&dlq, 1).await;
    let mut records: Vec<Record> = Vec::new();
    for i in 0..10 {
        records.push((
            None,
            format!(r#"{{"inst":"i1","seq":{i}}}"#).into_bytes(),
            Some(0),
        ));
    }
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("not_json", b"{this is not json".to_vec()),
        (
            "template_error",
            br#"{"inst":"i1","seq":"x","n":"text"}"#.to_vec(),
        ),
        (
            "invalid_field",
            br#"{"inst":"i1","seq":100,"priority":"urgent"}"#.to_vec(),
        ),
        (
            "http_422",
            br#"{"inst":"i1","seq":101,"type":"test.rejected"}"#.to_vec(),
        ),
    ];
    for (_, p) in &poison {
        records.push((Some("poison".into()), p.clone(), Some(0)));
    }
    for i in 10..20 {
        records.push((
            None,
            format!(r#"{{"inst":"i1","seq":{i}}}"#).into_bytes(),
            Some(0),
        ));
    }
    produce(&topic, records).await;
    let (sandbox, _stop) = start_sandbox(Faults {
        reject_event_types: HashSet::from(["test.rejected".to_string()]),
        ..Faults::default()
    })
    .await;
    let routes = format!(
        r#"  - name: poison-route
    source: events
    topics: [{topic}]
    app: a
    event:
      installation_id: .inst
      event_type: '.type // "test.event"'
      event_data: '{{seq}} + (if .n then {{less: (.n - 1)}} else {{}} end)'
      priority: '.priority // "normal"'
"#
    );
    let yaml = config(
        &sandbox.base_url(),
        &kafka_brokers(),
        &group,
        &routes,
        &format!("  commit_interval: 200ms\n  dead_letter: {{ kafka: {{ source: events, topic: {dlq} }} }}\n"),
    );
    let bridge = spawn_bridge(&yaml);
    let all = wait_until(Duration::from_secs(120), || seen(&sandbox).unique() >= 20).await;
    assert!(
        all,
        "later events must be delivered past the poison ones; got {}",
        seen(&sandbox).unique()
    );
    let (ends, committed) = wait_committed_to_end(&group, &topic, 1).await;
    assert_eq!(
        committed,
        vec![Some(ends[0])],
        "the partition is committed past the poison messages"
    );

    let mut dead = consume_all(&dlq, 4, Duration::from_secs(30)).await;
    assert_eq!(dead.len(), 4, "four dead letters");
    // Dead letters are written as each failure becomes final, not in source order.
    let source_offset = |d: &Consumed| -> i64 {
        let s = String::from_utf8_lossy(d.header("orceum.source").unwrap_or_default()).to_string();
        s.rsplit('@')
            .next()
            .and_then(|o| o.parse().ok())
            .unwrap_or(-1)
    };
    dead.sort_by_key(source_offset);
    for ((kind, payload), d) in poison.iter().zip(&dead) {
        let header = |n: &str| String::from_utf8_lossy(d.header(n).unwrap_or_default()).to_string();
        assert_eq!(header("orceum.reason_kind"), *kind);
        assert_eq!(
            d.payload.as_deref(),
            Some(payload.as_slice()),
            "original bytes kept"
        );
        assert_eq!(d.key_str().as_deref(), Some("poison"), "original key kept");
        assert_eq!(header("orceum.route"), "poison-route");
        assert!(header("orceum.source").starts_with(&format!("kafka:{topic}/0@")));
        assert!(!header("orceum.reason").is_empty());
    }
    let d422 = &dead[3];
    assert_eq!(d422.header("orceum.status"), Some(&b"422"[..]));
    assert!(
        !d422
            .header("orceum.response")
            .unwrap_or_default()
            .is_empty(),
        "response excerpt kept"
    );
    let metrics = bridge.metrics_text();
    assert_eq!(counter(&metrics, "orceum_bridge_dead_letters_total", ""), 4);
    assert_eq!(seen(&sandbox).duplicates(), 0);
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limited_app_keeps_its_rate_and_never_holds_back_another_app() {
    let topic = unique("rate");
    let group = unique("g-rate");
    create_topic(&topic, 1).await;
    // One partition, interleaved: every 21st message is app a's (100), the rest app b's (2,000).
    let mut records: Vec<Record> = Vec::new();
    for i in 0..2100 {
        let (app, inst) = if i % 21 == 0 {
            ("a", format!("inst_a{}", i % 5))
        } else {
            ("b", format!("inst_b{}", i % 50))
        };
        records.push((
            None,
            format!(r#"{{"app":"{app}","inst":"{inst}","seq":{i}}}"#).into_bytes(),
            Some(0),
        ));
    }
    produce(&topic, records).await;
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let routes = format!(
        "{}{}",
        route("to-a", &topic, "a", Some(r#".app == "a""#)),
        route("to-b", &topic, "b", Some(r#".app == "b""#))
    );
    let (rate, burst) = (10.0, 5.0);
    let yaml = config(
        &sandbox.base_url(),
        &kafka_brokers(),
        &group,
        &routes,
        "  max_in_flight: 4096\n  commit_interval: 200ms\n",
    )
    .replace(
        "a: { app_id: app_a, secret: { env: SECRET_A } }",
        "a: { app_id: app_a, secret: { env: SECRET_A }, rate_limit: { per_second: 10, burst: 5 } }",
    );
    let bridge = spawn_bridge(&yaml);
    let all = wait_until(Duration::from_secs(180), || seen(&sandbox).unique() >= 2100).await;
    assert!(
        all,
        "only {} of 2100 events arrived",
        seen(&sandbox).unique()
    );

    let events = sandbox.events();
    let times = |app: &str| -> Vec<f64> {
        events
            .iter()
            .filter(|e| e.app_id == app)
            .map(|e| e.received_at.timestamp_micros() as f64 / 1e6)
            .collect()
    };
    let (a, b) = (times("app_a"), times("app_b"));
    assert_eq!((a.len(), b.len()), (100, 2000));
    // In any window, app a gets at most burst + rate × window (+1 for clock granularity).
    for i in 0..a.len() {
        for j in i..a.len() {
            let window = a[j] - a[i];
            let allowed = burst + rate * window + 1.0;
            assert!(
                ((j - i + 1) as f64) <= allowed,
                "app a sent {} events in {window:.3}s (allowed {allowed:.1})",
                j - i + 1
            );
        }
    }
    // App b finished before app a had delivered three quarters of its events.
    let b_done = b.iter().cloned().fold(f64::MIN, f64::max);
    let a_75 = a[74];
    eprintln!(
        "app b done at +{:.2}s, app a at 75% at +{:.2}s, a done at +{:.2}s",
        b_done - a[0],
        a_75 - a[0],
        a[99] - a[0]
    );
    assert!(b_done < a_75, "app b waited for rate-limited app a");
    bridge.stop().await;
}

/// Apps a and b interleaved 1:9 (4,000 events, a holds 400), every app-a push answered 429 +
/// `Retry-After: 20` until b's 3,600 are all in, default delivery settings: b never waits for a,
/// then a's arrive in per-installation order, nothing lost. `shared`: one partition carries both
/// apps; otherwise each app has its own topic.
async fn a_throttled_beside_b(shared: bool) {
    let topic_a = unique("isolate-a");
    let topic_b = if shared {
        topic_a.clone()
    } else {
        unique("isolate-b")
    };
    let group = unique("g-isolate");
    create_topic(&topic_a, 1).await;
    if !shared {
        create_topic(&topic_b, 1).await;
    }
    let (mut for_a, mut for_b): (Vec<Record>, Vec<Record>) = (Vec::new(), Vec::new());
    for (app, payload) in interleaved_a_b(4000) {
        let record = (None, payload, Some(0));
        if app == "a" || shared {
            for_a.push(record);
        } else {
            for_b.push(record);
        }
    }
    produce(&topic_a, for_a).await;
    if !shared {
        produce(&topic_b, for_b).await;
    }
    // Orceum answers every app-a push 429 + Retry-After: 20 until the test lifts it.
    let (sandbox, _stop) = start_sandbox(Faults {
        throttle_apps: ["app_a".to_string()].into(),
        retry_after_secs: Some(20),
        ..Faults::default()
    })
    .await;
    let routes = a_b_routes(&topic_a, &topic_b);
    // Default delivery settings: nothing about in-flight bounds is set.
    let bridge = spawn_bridge(&config(
        &sandbox.base_url(),
        &kafka_brokers(),
        &group,
        &routes,
        "  commit_interval: 200ms\n",
    ));
    let started = std::time::Instant::now();
    let count = |app: &str| sandbox.events().iter().filter(|e| e.app_id == app).count();
    let b_all = wait_until(Duration::from_secs(60), || count("app_b") >= 3600).await;
    let b_took = started.elapsed();
    assert!(
        b_all,
        "only {} of app b's 3600 events while a is throttled",
        count("app_b")
    );
    assert_eq!(count("app_a"), 0, "a is still throttled");
    let throttled = sandbox.stats().by_status.get(&429).copied().unwrap_or(0);
    // Lift the throttle: a's 400 arrive (after their Retry-After), in installation order.
    sandbox.set_faults(Faults::default());
    let a_all = wait_until(Duration::from_secs(90), || count("app_a") >= 400).await;
    // nextest runs each test in its own process: this is the bridge plus the sandbox.
    let peak_mib = peak_rss_kib(std::process::id()).unwrap_or(0) as f64 / 1024.0;
    eprintln!(
        "{}: b: 3600 delivered in {b_took:?} while a was throttled ({throttled} 429s); a: {} \
         after the throttle; peak RSS of bridge + sandbox {peak_mib:.1} MiB",
        if shared {
            "one partition"
        } else {
            "separate topics"
        },
        count("app_a")
    );
    assert!(a_all, "only {} of a's 400 events", count("app_a"));
    let s = seen(&sandbox);
    assert_eq!((s.unique(), s.duplicates()), (4000, 0));
    assert_per_installation_order(&sandbox);
    let (ends, got) = wait_committed_to_end(&group, &topic_a, 1).await;
    assert_eq!(got, vec![Some(ends[0])]);
    if !shared {
        let (ends, got) = wait_committed_to_end(&group, &topic_b, 1).await;
        assert_eq!(got, vec![Some(ends[0])]);
    }
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_app_never_holds_back_another_app_on_the_same_partition() {
    a_throttled_beside_b(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_app_never_holds_back_another_app_on_its_own_topic() {
    a_throttled_beside_b(false).await;
}
