//! Broker-side and Orceum-side faults, on librdkafka's mock cluster (in this process): a broker
//! that is down at start, and an Orceum that cannot be reached. Nothing is committed that was
//! not delivered; nothing crashes; readiness says what is going on.

use crate::harness::*;
use orceum_bridge::tools::sandbox::Faults;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::Duration;

fn mock_config(base_url: &str, brokers: &str, group: &str, topic: &str) -> String {
    config(
        base_url,
        brokers,
        group,
        &route("all", topic, "a", None),
        "  commit_interval: 100ms\n  shutdown_timeout: 3s\n  retry: { initial_backoff: 50ms, max_backoff: 200ms }\n",
    )
}

async fn produce(brokers: &str, topic: &str, n: usize) {
    let p: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for payload in payloads(n, 5) {
        p.send(
            FutureRecord::<(), _>::to(topic).payload(&payload),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
}

fn committed(brokers: &str, group: &str, topic: &str) -> Option<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    match got.elements()[0].offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_down_at_start_keeps_the_bridge_alive_and_not_ready() {
    // Nothing listens on this port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let brokers = closed.local_addr().unwrap().to_string();
    drop(closed);
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let bridge = spawn_bridge(&mock_config(&sandbox.base_url(), &brokers, "g-down", "t"));
    let url = bridge.health_url().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !bridge.task.is_finished(),
        "the bridge must keep retrying, not exit"
    );
    let ready = reqwest::get(format!("{url}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(
        ready.text().await.unwrap().contains("events"),
        "names the source that is not ready"
    );
    assert_eq!(
        reqwest::get(format!("{url}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    bridge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orceum_unreachable_retries_and_commits_nothing_then_delivers_everything() {
    let cluster = MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("orders", 1, 1).unwrap();
    produce(&brokers, "orders", 20).await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/v1", dead.local_addr().unwrap());
    drop(dead);

    let bridge = spawn_bridge(&mock_config(&dead_url, &brokers, "g-unreachable", "orders"));
    let url = bridge.health_url().await;
    let retried = wait_until(Duration::from_secs(30), || {
        counter(
            &bridge.metrics_text(),
            "orceum_bridge_retries_total",
            "connect",
        ) >= 20
    })
    .await;
    assert!(
        retried,
        "pushes to an unreachable Orceum are retried:\n{}",
        bridge.metrics_text()
    );
    assert_eq!(
        reqwest::get(format!("{url}/readyz"))
            .await
            .unwrap()
            .status(),
        200,
        "Orceum being down is not a readiness failure: lag is the signal"
    );
    let metrics = bridge.metrics_text();
    assert_eq!(
        counter(&metrics, "orceum_bridge_events_delivered_total", ""),
        0
    );
    assert_eq!(counter(&metrics, "orceum_bridge_dead_letters_total", ""), 0);
    bridge.stop().await;
    assert_eq!(
        committed(&brokers, "g-unreachable", "orders"),
        None,
        "nothing delivered, nothing committed"
    );

    // Orceum is back: the same group delivers all 20 and commits to the end.
    let (sandbox, _stop) = start_sandbox(Faults::default()).await;
    let bridge = spawn_bridge(&mock_config(
        &sandbox.base_url(),
        &brokers,
        "g-unreachable",
        "orders",
    ));
    assert!(wait_until(Duration::from_secs(30), || seen(&sandbox).unique() == 20).await);
    assert!(
        wait_until(Duration::from_secs(10), || committed(
            &brokers,
            "g-unreachable",
            "orders"
        ) == Some(20))
        .await
    );
    bridge.stop().await;
    assert_eq!(seen(&sandbox).duplicates(), 0);
}
