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
