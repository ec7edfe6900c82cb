//! Chaos against the real Kafka-protocol broker and the sandbox: Orceum down, Orceum slower than
//! the timeout, SIGTERM and SIGKILL under load, a replica killed, a broker down mid-stream (mock
//! cluster). Every scenario asserts delivered / duplicate counts with zero lost.
//!
//! `ORCEUM_CHAOS_LONG=1` lengthens the outages and the event counts (release checks).

use crate::common::*;
use crate::harness::*;
use orceum_bridge::tools::sandbox::{Faults, SandboxHandle};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn long() -> bool {
    std::env::var("ORCEUM_CHAOS_LONG").is_ok_and(|v| v == "1")
}

/// Unique source coordinates across several sandboxes (one per Orceum "incarnation").
fn seen_all(sandboxes: &[&SandboxHandle]) -> (usize, usize) {
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for s in sandboxes {
        for e in s.events() {
            total += 1;
            *per.entry(e.event["metadata"]["source"].to_string())
                .or_default() += 1;
        }
    }
    (per.len(), total - per.len())
}

/// A sandbox restarted on the address the bridge already points at.
async fn sandbox_on(
    addr: &str,
    faults: Faults,
) -> (SandboxHandle, tokio_util::sync::CancellationToken) {
    let mut listener = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    start_sandbox_on(listener.expect("rebind the sandbox port"), faults).await
}

fn config_file(yaml: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = dir.path().join("bridge.log");
    (dir, config, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orceum_down_for_a_while_builds_lag_commits_nothing_early_then_drains() {
    let topic = unique("chaos-down");
    let group = unique("g-chaos-down");
    create_topic(&topic, 3).await;
    let n = if long() { 5000 } else { 1200 };
    produce(&topic, keyed_records(n, 30, 3)).await;
    let (first, stop_first) = sandbox_on(
        "127.0.0.1:0",
        Faults {
            latency: Duration::from_millis(5),
            ..Faults::default()
        },
    )
    .await;
    let addr = first.addr().to_string();
    let yaml = config(&first.base_url(), &kafka_brokers(), &group, &route("all", &topic, "a", None),
        "  max_in_flight: 100\n  commit_interval: 200ms\n  retry: { initial_backoff: 50ms, max_backoff: 1s }\n");
    let bridge = spawn_bridge(&yaml);
    assert!(wait_until(Duration::from_secs(60), || seen(&first).unique() >= n / 5).await);

    // Orceum goes away.
    stop_first.cancel();
    first.stopped().await;
    let delivered_before = seen(&first).unique();
    let outage = if long() {
        Duration::from_secs(120)
    } else {
        Duration::from_secs(30)
    };
    let until = Instant::now() + outage;
    let mut max_committed = 0i64;
    while Instant::now() < until {
        let committed: i64 = committed_offsets(&group, &topic, 3)
            .into_iter()
            .flatten()
            .sum();
        max_committed = max_committed.max(committed);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        max_committed as usize <= delivered_before,
        "committed {max_committed} offsets while only {delivered_before} events were delivered"
    );
    let lag = counter(
        &bridge.metrics_text(),
        "orceum_bridge_events_delivered_total",
        "",
    );
    assert_eq!(
        lag as usize, delivered_before,
        "nothing delivered during the outage"
    );

    // Orceum is back on the same address.
    let (second, _stop_second) = sandbox_on(&addr, Faults::default()).await;
    let all = wait_until(Duration::from_secs(120), || {
        seen_all(&[&first, &second]).0 >= n
    })
    .await;
    let (unique, duplicates) = seen_all(&[&first, &second]);
    eprintln!("outage {outage:?}: {delivered_before} before, {unique} unique after, {duplicates} duplicates");
    assert!(all, "only {unique} of {n} after Orceum came back");
    assert_eq!(duplicates, 0, "a failed push is not a delivery");
    let ends = end_offsets(&topic, 3);
    let want: Vec<Option<i64>> = ends.iter().map(|e| Some(*e)).collect();
    assert!(
        wait_until(Duration::from_secs(30), || committed_offsets(
            &group, &topic, 3
        ) == want)
        .await,
        "lag drains to zero"
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orceum_slower_than_the_timeout_is_retried_without_piling_up() {
    let topic = unique("chaos-slow");
    let group = unique("g-chaos-slow");
    create_topic(&topic, 3).await;
    let n = 600;
    produce(&topic, keyed_records(n, 60, 3)).await;
    let (sandbox, _stop) = start_sandbox(Faults {
        latency: Duration::from_millis(1500),
        ..Faults::default()
    })
    .await;
    let port = free_port();
    let max_in_flight = 50;
    let yaml = config(&sandbox.base_url(), &kafka_brokers(), &group, &route("all", &topic, "a", None),
        &format!("  max_in_flight: {max_in_flight}\n  max_uncommitted_per_partition: {}\n  commit_interval: 200ms\n  retry: {{ initial_backoff: 50ms, max_backoff: 500ms }}\n", max_in_flight / 3))
        .replace("timeout: 5s", "timeout: 1s")
        .replace("listen: \"127.0.0.1:0\"", &format!("listen: \"127.0.0.1:{port}\""));
    let (_dir, config_path, log) = config_file(&yaml);
    let mut child = start_process(&config_path, &log);
    let url = format!("http://127.0.0.1:{port}");
    // Slow phase: every push times out; watch the bounds.
    let until = Instant::now() + Duration::from_secs(10);
    let (mut peak_uncommitted, mut peak_in_flight, mut timeouts) = (0, 0, 0);
    while Instant::now() < until {
        if let Some(u) = scrape(&url, "orceum_bridge_uncommitted_messages").await {
            peak_uncommitted = peak_uncommitted.max(u);
        }
        if let Some(f) = scrape(&url, "orceum_bridge_in_flight_events").await {
            peak_in_flight = peak_in_flight.max(f);
        }
        if let Ok(r) = reqwest::get(format!("{url}/metrics")).await {
            timeouts = counter(
                &r.text().await.unwrap_or_default(),
                "orceum_bridge_retries_total",
                "timeout",
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let delivered_slow = seen(&sandbox).unique();
    sandbox.set_faults(Faults::default());
    let all = wait_until(Duration::from_secs(120), || seen(&sandbox).unique() >= n).await;
    let rss = peak_rss_kib(child.id());
    sigterm(&child);
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let s = seen(&sandbox);
    eprintln!("slow phase: {timeouts} timeouts retried, {delivered_slow} delivered, peak uncommitted {peak_uncommitted}, peak in-flight {peak_in_flight}, peak RSS {rss:?} KiB; then {} unique, {} duplicates",
        s.unique(), s.duplicates());
    assert!(timeouts > 0, "pushes timed out and were retried");
    assert!(all, "only {} of {n}", s.unique());
    assert!(
        peak_uncommitted <= max_in_flight as u64,
        "uncommitted {peak_uncommitted} over the bound {max_in_flight}"
    );
    assert!(
        peak_in_flight <= max_in_flight as u64,
        "in flight {peak_in_flight} over the bound"
    );
    assert!(rss.unwrap_or(0) < 256 * 1024, "peak RSS {rss:?} KiB");
    assert!(exit.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_exits_0_in_time_and_a_restart_redelivers_nothing() {
    let topic = unique("chaos-term");
    let group = unique("g-chaos-term");
    create_topic(&topic, 3).await;
    let n = 2000;
    produce(&topic, keyed_records(n, 30, 3)).await;
    let (sandbox, _stop) = start_sandbox(Faults {
        latency: Duration::from_millis(5),
        ..Faults::default()
    })
    .await;
    let yaml = config(
        &sandbox.base_url(),
        &kafka_brokers(),
        &group,
        &route("all", &topic, "a", None),
        "  max_in_flight: 100\n  max_uncommitted_per_partition: 33\n  commit_interval: 1s\n  shutdown_timeout: 10s\n",
    );
    let (_dir, config_path, log) = config_file(&yaml);
    let mut child = start_process(&config_path, &log);
    assert!(wait_until(Duration::from_secs(60), || seen(&sandbox).unique() >= n / 3).await);
    let t0 = Instant::now();
    sigterm(&child);
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let took = t0.elapsed();
    assert!(exit.success(), "exit {exit:?}");
    assert!(
        took < Duration::from_secs(12),
        "took {took:?}, over shutdown_timeout"
    );
    let after_stop = seen(&sandbox);
    let mut child = start_process(&config_path, &log);
    let all = wait_until(Duration::from_secs(120), || seen(&sandbox).unique() >= n).await;
    sigterm(&child);
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let s = seen(&sandbox);
    eprintln!(
        "SIGTERM took {took:?} at {} delivered; finally {} unique, {} duplicates",
        after_stop.unique(),
        s.unique(),
        s.duplicates()
    );
    assert!(all);
    assert_eq!(
        s.duplicates(),
        0,
        "a clean shutdown commits everything it delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_every_few_seconds_ten_times_loses_nothing() {
    let topic = unique("chaos-kill");
    let group = unique("g-chaos-kill");
    create_topic(&topic, 3).await;
    let n = if long() { 20_000 } else { 6000 };
    produce(&topic, keyed_records(n, 60, 3)).await;
    let (sandbox, _stop) = start_sandbox(Faults {
        latency: Duration::from_millis(3),
        rate_503: 0.05,
        ..Faults::default()
    })
    .await;
    let max_in_flight = 100;
    let yaml = config(&sandbox.base_url(), &kafka_brokers(), &group, &route("all", &topic, "a", None),
        &format!("  max_in_flight: {max_in_flight}\n  max_uncommitted_per_partition: {}\n  commit_interval: 500ms\n  retry: {{ initial_backoff: 20ms, max_backoff: 200ms }}\n", max_in_flight / 3));
    let (_dir, config_path, log) = config_file(&yaml);
    let mut kills = 0;
    while kills < 10 && seen(&sandbox).unique() < n {
        let mut child = start_process(&config_path, &log);
        // Let it join and get going, then kill it mid-stream.
        let before = seen(&sandbox).unique();
        wait_until(Duration::from_secs(60), || {
            seen(&sandbox).unique() > before + 100
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    let mut child = start_process(&config_path, &log);
    let all = wait_until(Duration::from_secs(180), || seen(&sandbox).unique() >= n).await;
    sigterm(&child);
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let s = seen(&sandbox);
    eprintln!(
        "{kills} SIGKILLs: {} unique, {} duplicates (bound {})",
        s.unique(),
        s.duplicates(),
        kills * max_in_flight
    );
    assert!(all, "only {} of {n}", s.unique());
    assert!(
        s.duplicates() <= kills * max_in_flight,
        "{} duplicates",
        s.duplicates()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_one_killed_its_partitions_move_and_nothing_is_lost() {
    let topic = unique("chaos-replica");
    let group = unique("g-chaos-replica");
    create_topic(&topic, 4).await;
    let n = 4000;
    produce(&topic, keyed_records(n, 40, 4)).await;
    let (sandbox, _stop) = start_sandbox(Faults {
        latency: Duration::from_millis(5),
        ..Faults::default()
    })
    .await;
    let max_in_flight = 100;
    let yaml = config(
        &sandbox.base_url(),
        &kafka_brokers(),
        &group,
        &route("all", &topic, "a", None),
        &format!("  max_in_flight: {max_in_flight}\n  max_uncommitted_per_partition: {}\n  commit_interval: 500ms\n", max_in_flight / 4),
    );
    let (_dir, config_path, log) = config_file(&yaml);
    let mut one = start_process(&config_path, &log);
    let mut two = start_process(&config_path, &log);
    assert!(wait_until(Duration::from_secs(90), || seen(&sandbox).unique() >= n / 4).await);
    two.kill().unwrap();
    two.wait().unwrap();
    let all = wait_until(Duration::from_secs(180), || seen(&sandbox).unique() >= n).await;
    sigterm(&one);
    let _ = tokio::task::spawn_blocking(move || one.wait()).await;
    let s = seen(&sandbox);
    eprintln!(
        "replica killed: {} unique, {} duplicates",
        s.unique(),
        s.duplicates()
    );
    assert!(
        all,
        "only {} of {n}: the killed replica's partitions did not move",
        s.unique()
    );
    assert!(
        s.duplicates() <= max_in_flight,
        "{} duplicates",
        s.duplicates()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_down_mid_stream_pauses_delivery_and_it_resumes_without_loss() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("orders", 2, 1).unwrap();
    let p: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let n = 1000;
    for (i, payload) in payloads(n, 10).into_iter().enumerate() {
        p.send(
            FutureRecord::<(), _>::to("orders")
                .payload(&payload)
                .partition((i % 2) as i32),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    let (sandbox, _stop) = start_sandbox(Faults {
        latency: Duration::from_millis(5),
        ..Faults::default()
    })
    .await;
    let bridge = spawn_bridge(&config(
        &sandbox.base_url(),
        &brokers,
        "g-broker",
        &route("all", "orders", "a", None),
        "  max_in_flight: 50\n  max_uncommitted_per_partition: 25\n  commit_interval: 200ms\n",
    ));
    assert!(wait_until(Duration::from_secs(30), || seen(&sandbox).unique() >= 200).await);
    cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = seen(&sandbox).unique();
    cluster.broker_up(1).unwrap();
    let all = wait_until(Duration::from_secs(60), || seen(&sandbox).unique() >= n).await;
    let s = seen(&sandbox);
    eprintln!(
        "broker down at ~{during}: {} unique, {} duplicates",
        s.unique(),
        s.duplicates()
    );
    assert!(all, "only {} of {n} after the broker came back", s.unique());
    assert!(s.duplicates() <= 50, "{} duplicates", s.duplicates());
    assert!(!bridge.task.is_finished(), "the bridge never exits");
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orceum_down_for_one_app_gets_one_request_per_backoff_step_not_one_per_held_event() {
    let topic = unique("chaos-app-down");
    let group = unique("g-chaos-app-down");
    create_topic(&topic, 3).await;
    // 600 events for app a over 40 installations, 600 for app b, interleaved.
    let records: Vec<Record> = interleaved(1200, 2, 40, 40)
        .into_iter()
        .enumerate()
        .map(|(i, (_, payload))| (None, payload, Some((i % 3) as i32)))
        .collect();
    produce(&topic, records).await;
    let (sandbox, _stop) = start_sandbox(Faults {
        down_apps: ["app_a".to_string()].into(),
        ..Faults::default()
    })
    .await;
    let routes = a_b_routes(&topic, &topic);
    // Default delivery settings: a's 600 events are all held (its budget is 1,024).
    let bridge = spawn_bridge(&config(
        &sandbox.base_url(),
        &kafka_brokers(),
        &group,
        &routes,
        "  commit_interval: 200ms\n",
    ));
    let pushes = |app: &str| sandbox.stats().pushes_by_app.get(app).copied().unwrap_or(0);
    let count = |app: &str| sandbox.events().iter().filter(|e| e.app_id == app).count();
    // The outage starts with a's first request.
    assert!(wait_until(Duration::from_secs(60), || pushes("app_a") > 0).await);
    let outage = Duration::from_secs(30);
    let started = Instant::now();
    let b_all = wait_until(outage, || count("app_b") >= 600).await;
    let b_took = started.elapsed();
    assert!(b_all, "only {} of b's 600 while a was down", count("app_b"));
    tokio::time::sleep(outage.saturating_sub(started.elapsed())).await;
    let during = pushes("app_a");
    let probing = counter(
        &bridge.metrics_text(),
        "orceum_bridge_app_probing",
        "app=\"a\"",
    );
    sandbox.set_faults(Faults::default());
    let a_all = wait_until(Duration::from_secs(90), || count("app_a") >= 600).await;
    eprintln!(
        "app a down for {outage:?} with 600 events held over 40 installations: {during} requests \
         reached Orceum for a (probing gauge {probing}); b's 600 done in {b_took:?}; after: {} of a's",
        count("app_a")
    );
    assert!(a_all, "only {} of a's 600 after the outage", count("app_a"));
    assert_eq!(probing, 1, "a's lane probes during the outage");
    // One wave (one per installation in flight) plus a probe per backoff step (200 ms doubling
    // to 30 s: 8 steps in 30 s); one request per held event per step would be thousands.
    assert!(
        during <= 40 + 2 * 8,
        "{during} requests for app a in a {outage:?} outage: it was hammered"
    );
    let s = seen(&sandbox);
    assert_eq!((s.unique(), s.duplicates()), (1200, 0));
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebalances_every_10s_during_a_60s_outage_keep_rss_flat_and_no_member_pushes_an_event_twice(
) {
    use rdkafka::mocking::MockCluster;
    // librdkafka's mock cluster: Tansu wedges a group whose membership changes while it
    // rebalances, which is exactly what this test does every 10 s.
    let cluster = MockCluster::new(1).unwrap();
    let kafka = Kafka::new(cluster.bootstrap_servers());
    let topic = "outage-rebalance";
    let group = unique("g-outage-rebalance");
    // 8 partitions: the mock cluster keeps about 5 MB per partition (older records go).
    cluster.create_topic(topic, 8, 1).unwrap();
    // 3,000 events of 8 KiB: a member holding every one of them holds ~24 MB, so held work
    // that outlived a revoke would show in the resident memory.
    let pad = "x".repeat(8 * 1024);
    let n = 3000;
    let records: Vec<Record> = (0..n)
        .map(|i| {
            (
                None,
                format!(r#"{{"inst":"inst_{}","seq":{i},"pad":"{pad}"}}"#, i % 40).into_bytes(),
                Some((i % 40 % 8) as i32),
            )
        })
        .collect();
    kafka.produce(topic, records).await;
    let outage = Faults {
        rate_503: 1.0,
        ..Faults::default()
    };
    let (main_sandbox, _stop_main) = start_sandbox(outage.clone()).await;
    let delivery = "  commit_interval: 200ms\n  shutdown_timeout: 3s\n";
    // A generous Orceum timeout: when the outage ends, 1,024 held events hit this test
    // process's sandbox at once, and a push that times out after the sandbox took it is a
    // legitimate at-least-once retry, not the double push this test looks for.
    let yaml = |base_url: &str| {
        config(
            base_url,
            &kafka.brokers,
            &group,
            &route("all", topic, "a", None),
            delivery,
        )
        .replace("timeout: 5s", "timeout: 60s")
    };
    let (_dir, config_path, log) = config_file(&yaml(&main_sandbox.base_url()));
    let mut main = start_process(&config_path, &log);
    let pid = main.id();
    // The outage runs from the first request on.
    assert!(
        wait_until(Duration::from_secs(60), || {
            main_sandbox
                .stats()
                .by_status
                .get(&503)
                .copied()
                .unwrap_or(0)
                > 0
        })
        .await,
        "the main member never pushed; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let started = Instant::now();
    // A replica joins at 5 s, leaves at 15 s, and so on; each incarnation pushes to its own
    // sandbox, so a duplicate within one sandbox is one member pushing an event twice.
    let mut replicas = Vec::new();
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let mut replica: Option<InProcess> = None;
    let mut next_change = Duration::from_secs(5);
    while started.elapsed() < Duration::from_secs(60) {
        if started.elapsed() >= next_change && next_change <= Duration::from_secs(55) {
            match replica.take() {
                None => {
                    let (sandbox, stop) = start_sandbox(outage.clone()).await;
                    replica = Some(spawn_bridge(&yaml(&sandbox.base_url())));
                    replicas.push((sandbox, stop));
                }
                Some(r) => r.stop().await,
            }
            next_change += Duration::from_secs(10);
        }
        if let Some(kib) = rss_kib(pid) {
            samples.push((started.elapsed(), kib));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Some(r) = replica.take() {
        r.stop().await;
    }
    // Orceum is back: the main member drains everything.
    main_sandbox.set_faults(Faults::default());
    for (s, _) in &replicas {
        s.set_faults(Faults::default());
    }
    // Polled by the cheap counter (copying 24 MB of events every 100 ms would slow the
    // sandbox the bridge is pushing to), then checked per coordinate.
    let all = wait_until(Duration::from_secs(120), || {
        main_sandbox.stats().accepted >= n as u64
    })
    .await
        && wait_until(Duration::from_secs(30), || {
            seen(&main_sandbox).unique() >= n
        })
        .await;
    let at = |from: u64, to: u64| {
        samples
            .iter()
            .filter(|(t, _)| t.as_secs() >= from && t.as_secs() < to)
            .map(|(_, kib)| *kib)
            .max()
            .unwrap_or(0)
    };
    let (early, late) = (at(15, 25), at(40, 60));
    let m = seen(&main_sandbox);
    if m.unique() < n {
        // Which coordinates never arrived, as ranges per partition.
        let mut missing: Vec<String> = Vec::new();
        for p in 0..8 {
            let mut run: Option<(i64, i64)> = None;
            for o in 0..(n as i64 / 8) {
                let key = format!("kafka:{topic}/{p}@{o}");
                if m.per_source.contains_key(&key) {
                    if let Some((a, b)) = run.take() {
                        missing.push(format!("{p}@{a}..={b}"));
                    }
                } else {
                    run = Some(run.map_or((o, o), |(a, _)| (a, o)));
                }
            }
            if let Some((a, b)) = run {
                missing.push(format!("{p}@{a}..={b}"));
            }
        }
        eprintln!("missing: {}", missing.join(" "));
    }
    let replica_seen: Vec<(usize, usize)> = replicas
        .iter()
        .map(|(s, _)| (seen(s).unique(), seen(s).duplicates()))
        .collect();
    eprintln!(
        "60 s outage, {} replica incarnations: main RSS max {early} KiB at 15–25 s, {late} KiB at \
         40–60 s; main {} unique, {} duplicates; replicas (unique, duplicates) {replica_seen:?}",
        replicas.len(),
        m.unique(),
        m.duplicates()
    );
    assert!(
        all,
        "only {} of {n} after the outage; log:\n{}",
        m.unique(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(replicas.len(), 3, "a replica joined three times");
    assert_eq!(m.duplicates(), 0, "the main member pushed an event twice");
    assert!(
        replica_seen.iter().all(|(_, d)| *d == 0),
        "a replica pushed an event twice"
    );
    assert!(
        late <= early + 16 * 1024,
        "RSS grew from {early} KiB to {late} KiB across the rebalances: held work outlived its partition"
    );
    sigterm(&main);
    let exit = main.wait().unwrap();
    assert!(exit.success(), "exit {exit:?}");
    let committed = kafka.committed_offsets(&group, topic, 8);
    let ends = kafka.end_offsets(topic, 8);
    assert_eq!(committed, ends.iter().map(|e| Some(*e)).collect::<Vec<_>>());
}
