//! A second replica joins the consumer group mid-stream: the first one's revoked partitions
//! drain and commit before they move, nothing is lost, and both replicas end up delivering.
//!
//! The events arrive in three parts: a backlog, a stream while the second replica joins, and
//! the rest once it owns partitions. (With the whole backlog produced up front, the first
//! replica now drains it before a join completes, and the second has nothing left to do.)

use crate::common::*;
use crate::harness::*;
use orceum_bridge::tools::sandbox::Faults;
use std::time::Duration;

/// Unique deliveries per partition, to tell which member stalled if one does.
fn per_partition(
    sandbox: &orceum_bridge::tools::sandbox::SandboxHandle,
) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for source in seen(sandbox).per_source.keys() {
        let p = source
            .rsplit_once('@')
            .map(|(tp, _)| tp.rsplit('/').next().unwrap_or("?").to_string());
        *m.entry(p.unwrap_or_default()).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_joining_mid_stream_takes_partitions_without_losing_anything() {
    let topic = unique("rebalance");
    let group = unique("g-rebalance");
    create_topic(&topic, 4).await;
    let n = 3000;
    let mut records = keyed_records(n, 40, 4);
    let last_part = records.split_off(2 * n / 3);
    let streamed = records.split_off(n / 3);
    produce(&topic, records).await;
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
        &format!(
            "  max_in_flight: {max_in_flight}\n  max_uncommitted_per_partition: {}\n  commit_interval: 200ms\n  shutdown_timeout: 10s\n",
            max_in_flight / 4
        ),
    );
    let first = spawn_bridge(&yaml);
    assert!(
        wait_until(Duration::from_secs(120), || seen(&sandbox).unique()
            >= n / 4)
        .await
    );
    let second = spawn_bridge(&yaml);
    // Mid-stream: events keep arriving while the group rebalances.
    for chunk in streamed.chunks(50) {
        produce(&topic, chunk.to_vec()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        wait_until(Duration::from_secs(120), || counter(
            &second.metrics_text(),
            "orceum_bridge_kafka_assigned_partitions",
            ""
        ) > 0)
        .await,
        "the second replica never got partitions"
    );
    produce(&topic, last_part).await;
    let all = wait_until(Duration::from_secs(240), || seen(&sandbox).unique() >= n).await;
    assert!(
        all,
        "only {} of {n} delivered; per partition: {:?}; first replica {}, second {}",
        seen(&sandbox).unique(),
        per_partition(&sandbox),
        counter(
            &first.metrics_text(),
            "orceum_bridge_events_delivered_total",
            ""
        ),
        counter(
            &second.metrics_text(),
            "orceum_bridge_events_delivered_total",
            ""
        )
    );
    let ends = end_offsets(&topic, 4);
    let want: Vec<Option<i64>> = ends.iter().map(|e| Some(*e)).collect();
    assert!(
        wait_until(Duration::from_secs(30), || committed_offsets(
            &group, &topic, 4
        ) == want)
        .await,
        "committed {:?}, end {:?}",
        committed_offsets(&group, &topic, 4),
        ends
    );
    let by_first = counter(
        &first.metrics_text(),
        "orceum_bridge_events_delivered_total",
        "",
    );
    let by_second = counter(
        &second.metrics_text(),
        "orceum_bridge_events_delivered_total",
        "",
    );
    let s = seen(&sandbox);
    eprintln!(
        "first replica delivered {by_first}, second {by_second}; {} unique, {} duplicates",
        s.unique(),
        s.duplicates()
    );
    assert!(
        by_second > 0,
        "the second replica got partitions and delivered"
    );
    assert_eq!(s.unique(), n);
    assert!(
        s.duplicates() <= max_in_flight,
        "{} duplicates from one rebalance",
        s.duplicates()
    );
    first.stop().await;
    second.stop().await;
}

/// Partitions paused at the in-flight bound when they are revoked must be fetched again once
/// reassigned (the bridge resumes every newly assigned partition in librdkafka).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_paused_at_the_bound_when_revoked_are_fetched_again_after_reassignment() {
    let topic = unique("rebalance-paused");
    let group = unique("g-rebalance-paused");
    create_topic(&topic, 4).await;
    let n = 800;
    produce(&topic, keyed_records(n, 40, 4)).await;
    // Slow pushes and a tiny bound: every partition sits paused at the bound most of the time.
    let (sandbox, _stop) = start_sandbox(Faults {
        latency: Duration::from_millis(40),
        ..Faults::default()
    })
    .await;
    let yaml = config(
        &sandbox.base_url(),
        &kafka_brokers(),
        &group,
        &route("all", &topic, "a", None),
        "  max_in_flight: 8\n  max_in_flight_per_partition: 4\n  commit_interval: 200ms\n  shutdown_timeout: 10s\n",
    );
    let first = spawn_bridge(&yaml);
    assert!(wait_until(Duration::from_secs(120), || seen(&sandbox).unique() >= 60).await);
    let second = spawn_bridge(&yaml);
    let all = wait_until(Duration::from_secs(180), || seen(&sandbox).unique() >= n).await;
    let s = seen(&sandbox);
    eprintln!("{} unique, {} duplicates", s.unique(), s.duplicates());
    assert!(
        all,
        "only {} of {n}: a partition stayed paused after the rebalance",
        s.unique()
    );
    first.stop().await;
    second.stop().await;
}

/// Three replicas of one config share app a's rate limit through the consumer group: each
/// takes the share of the partitions it owns (2 of 6 → a third), so together they push within
/// the configured limit, where each alone used to take all of it (3× the limit at Orceum).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_an_apps_rate_limit_by_the_partitions_they_own() {
    let topic = unique("shared-rate");
    let group = unique("g-shared-rate");
    create_topic(&topic, 6).await;
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let (rate, burst) = (60.0, 6.0);
    let yaml = config(
        &sandbox.base_url(),
        &kafka_brokers(),
        &group,
        &route("r", &topic, "a", None),
        "  commit_interval: 200ms\n",
    )
    .replace(
        "a: { app_id: app_a, secret: { env: SECRET_A } }",
        "a: { app_id: app_a, secret: { env: SECRET_A }, rate_limit: { per_second: 60, burst: 6 } }",
    );
    let assigned = |b: &InProcess| {
        counter(
            &b.metrics_text(),
            "orceum_bridge_kafka_assigned_partitions",
            "",
        )
    };
    let share = |b: &InProcess| {
        counter(
            &b.metrics_text(),
            "orceum_bridge_rate_limit_per_second",
            "app=\"a\"",
        )
    };
    // One join at a time: the group settles (all 6 partitions owned, each member some) before
    // the next member joins.
    let mut replicas: Vec<InProcess> = Vec::new();
    for n in 1..=3usize {
        replicas.push(spawn_bridge(&yaml));
        let settled = wait_until(Duration::from_secs(90), || {
            replicas.iter().map(assigned).sum::<u64>() == 6
                && replicas.iter().all(|b| assigned(b) > 0)
                && replicas.iter().map(share).sum::<u64>() == 60
        })
        .await;
        let owned: Vec<u64> = replicas.iter().map(assigned).collect();
        let shares: Vec<u64> = replicas.iter().map(share).collect();
        assert!(
            settled,
            "{n} replica(s): partitions {owned:?}, rate shares {shares:?} (want 6 and 60 in all)"
        );
        eprintln!("{n} replica(s): partitions {owned:?}, rate shares {shares:?} per second");
    }

    let n = 600;
    let records: Vec<Record> = (0..n)
        .map(|i| {
            (
                None,
                format!(r#"{{"inst":"inst_{}","seq":{i}}}"#, i % 30).into_bytes(),
                Some((i % 6) as i32),
            )
        })
        .collect();
    produce(&topic, records).await;
    let all = wait_until(Duration::from_secs(120), || seen(&sandbox).unique() >= n).await;
    let delivered: Vec<u64> = replicas
        .iter()
        .map(|b| {
            counter(
                &b.metrics_text(),
                "orceum_bridge_events_delivered_total",
                "",
            )
        })
        .collect();
    for b in replicas {
        b.stop().await;
    }
    assert!(
        all,
        "only {} of {n} events arrived",
        seen(&sandbox).unique()
    );
    assert!(
        delivered.iter().all(|d| *d > 0),
        "every replica delivered some: {delivered:?}"
    );

    let mut times: Vec<f64> = sandbox
        .events()
        .iter()
        .map(|e| e.received_at.timestamp_micros() as f64 / 1e6)
        .collect();
    times.sort_by(f64::total_cmp);
    assert_eq!(times.len(), n);
    // In any window, the three together sent at most the burst + rate × window (+1 per
    // replica for clock granularity).
    let mut worst = 0.0f64;
    for i in 0..times.len() {
        for j in i..times.len() {
            let window = times[j] - times[i];
            let allowed = burst + rate * window + 3.0;
            let sent = (j - i + 1) as f64;
            worst = worst.max(sent / allowed);
            assert!(
                sent <= allowed,
                "the replicas sent {sent} events in {window:.3}s together (allowed {allowed:.1}: the shared limit)"
            );
        }
    }
    let span = times[n - 1] - times[0];
    eprintln!(
        "{n} events in {span:.2}s from 3 replicas: {:.1} events/s against a limit of {rate}/s (worst window at {:.0}% of the allowance); delivered per replica {delivered:?}",
        n as f64 / span,
        worst * 100.0
    );
}
