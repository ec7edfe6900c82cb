//! The engine (`dispatch`) driven straight through `message::Submit`, with acknowledgements
//! that record what happened to each message: no broker, a real HTTP connection attempt.

use crate::harness::*;
use orceum_bridge::dead_letter::LogOnly;
use orceum_bridge::dispatch::{DeliveryContext, Dispatcher};
use orceum_bridge::message::{AckHandle, Acknowledge, Final, Message, Origin, Submit};
use orceum_bridge::orceum::client::OrceumClient;
use orceum_bridge::telemetry::metrics::Metrics;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Records the end of each message; stops with `stop` like a Kafka partition's work does.
struct Recorded {
    log: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
}

impl Acknowledge for Recorded {
    fn finish(self: Box<Self>, outcome: Final) {
        self.log.lock().unwrap().push(format!("{outcome:?}"));
    }
    fn abandon(self: Box<Self>) {
        self.log.lock().unwrap().push("abandoned".into());
    }
    fn stop_token(&self) -> Option<CancellationToken> {
        Some(self.stop.clone())
    }
}

fn message(offset: i64) -> Message {
    Message {
        source: Arc::from("events"),
        origin: Origin::Kafka {
            topic: Arc::from("t"),
            partition: 0,
            offset,
        },
        route: None,
        payload: format!(r#"{{"inst":"inst_{}","seq":{offset}}}"#, offset % 4).into_bytes(),
        key: None,
        headers: Vec::new(),
        timestamp: None,
    }
}

/// The engine for `bridge`, pushing to `base` (timeout `timeout`), dead letters to `writer`.
fn engine(
    bridge: &orceum_bridge::build::Bridge,
    base: &str,
    timeout: Duration,
    writer: Box<dyn orceum_bridge::dead_letter::DeadLetterWriter>,
    abandon: &CancellationToken,
) -> (Dispatcher, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let ctx = Arc::new(DeliveryContext::new(
        OrceumClient::new(base, timeout).unwrap(),
        writer,
        metrics.clone(),
        bridge.delivery.retry.clone(),
        abandon.clone(),
        tokio::runtime::Handle::current(),
    ));
    let engine = Dispatcher::new(
        bridge.routes.clone(),
        &bridge.apps,
        &bridge.app_limits,
        &bridge.delivery,
        ctx,
    );
    (engine, metrics)
}

fn log_only() -> Box<dyn orceum_bridge::dead_letter::DeadLetterWriter> {
    Box::new(LogOnly {
        log_payloads: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_partitions_held_events_stop_retrying_and_are_abandoned() {
    // Orceum unreachable (nothing listens there): every push is a transient failure.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let bridge = load(&config(
        &base,
        "127.0.0.1:9",
        "g",
        &route("all", "t", "a", None),
        "  retry: { initial_backoff: 20ms, max_backoff: 50ms }\n",
    ));
    let abandon = CancellationToken::new();
    let (engine, metrics) = engine(&bridge, &base, Duration::from_secs(1), log_only(), &abandon);
    let log = Arc::new(Mutex::new(Vec::new()));
    let revoked = CancellationToken::new();
    for offset in 0..20 {
        engine.submit(
            message(offset),
            AckHandle::new(Recorded {
                log: log.clone(),
                stop: revoked.clone(),
            }),
        );
    }
    let retries = || metrics.retries.with_label_values(&["a", "connect"]).get();
    assert!(
        wait_until(Duration::from_secs(10), || retries() >= 8).await,
        "no retries against an unreachable Orceum"
    );
    assert!(
        log.lock().unwrap().is_empty(),
        "nothing may finish while Orceum is down"
    );

    // The partition is revoked: its 20 held events (4 retrying, 16 queued behind their
    // installations) stop and are abandoned, never finished, and retry no more.
    revoked.cancel();
    assert!(
        wait_until(Duration::from_secs(5), || log.lock().unwrap().len() == 20).await,
        "held events not released: {:?}",
        log.lock().unwrap()
    );
    assert!(log.lock().unwrap().iter().all(|e| e == "abandoned"));
    assert_eq!(metrics.in_flight.with_label_values(&["a"]).get(), 0);
    let after = retries();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(retries(), after, "an orphan is still retrying");
    assert!(!abandon.is_cancelled());
}

/// Reads every record of `topic` partition 0 on `brokers` (a mock cluster), up to `n`.
fn read_back(brokers: &str, topic: &str, n: usize) -> Vec<rdkafka::message::OwnedMessage> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "read-back")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while out.len() < n && std::time::Instant::now() < until {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_too_large_for_its_topic_is_written_in_bounded_form_and_the_message_moves_on()
{
    use orceum_bridge::dead_letter::{header, BOUNDED_PAYLOAD_BYTES};
    use orceum_bridge::source::kafka::KafkaDeadLetters;
    use rdkafka::message::{Headers, Message as _};
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    cluster.create_topic("dlq", 1, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    // The dead-letter producer refuses records over 20 kB (like a broker's message.max.bytes).
    let source: orceum_bridge::config::KafkaSourceConfig = yaml_serde::from_str(&format!(
        "bootstrap_servers: {brokers}\nproperties: {{ message.max.bytes: 20000 }}\n"
    ))
    .unwrap();
    let writer = KafkaDeadLetters::new("events", &source, "dlq").unwrap();
    let bridge = load(&config(
        "http://127.0.0.1:9/v1",
        &brokers,
        "g",
        &route("all", "t", "a", None),
        "",
    ));
    let (engine, metrics) = engine(
        &bridge,
        "http://127.0.0.1:9/v1",
        Duration::from_secs(1),
        Box::new(writer),
        &CancellationToken::new(),
    );
    let log = Arc::new(Mutex::new(Vec::new()));
    // 50 kB that is not JSON: a bad-input dead letter that cannot be written whole.
    let mut big = message(0);
    big.payload = vec![b'x'; 50_000];
    engine.submit(
        big,
        AckHandle::new(Recorded {
            log: log.clone(),
            stop: CancellationToken::new(),
        }),
    );
    assert!(
        wait_until(Duration::from_secs(15), || !log.lock().unwrap().is_empty()).await,
        "the message never became final"
    );
    assert_eq!(*log.lock().unwrap(), ["DeadLettered"]);
    let records = read_back(&brokers, "dlq", 1);
    assert_eq!(records.len(), 1);
    let rec = &records[0];
    assert_eq!(rec.payload().map(<[u8]>::len), Some(BOUNDED_PAYLOAD_BYTES));
    let get = |name: &str| {
        rec.headers()
            .and_then(|h| h.iter().find(|x| x.key == name).and_then(|x| x.value))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(get(header::TRUNCATED).as_deref(), Some("true"));
    assert_eq!(get(header::PAYLOAD_BYTES).as_deref(), Some("50000"));
    assert_eq!(get(header::SOURCE).as_deref(), Some("kafka:t/0@0"));
    assert_eq!(get(header::REASON_KIND).as_deref(), Some("not_json"));
    assert_eq!(
        metrics
            .dead_letters
            .with_label_values(&["all", "not_json"])
            .get(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_app_is_probed_one_request_at_a_time_then_gets_everything() {
    use orceum_bridge::tools::sandbox::Faults;
    let (sandbox, _stop) = start_sandbox(Faults {
        rate_503: 1.0,
        ..Faults::default()
    })
    .await;
    let base = sandbox.base_url();
    let bridge = load(&config(
        &base,
        "127.0.0.1:9",
        "g",
        &route("all", "t", "a", None),
        "  retry: { initial_backoff: 50ms, max_backoff: 200ms }\n",
    ));
    let (engine, metrics) = engine(
        &bridge,
        &base,
        Duration::from_secs(2),
        log_only(),
        &CancellationToken::new(),
    );
    let log = Arc::new(Mutex::new(Vec::new()));
    // 400 events over 40 installations: 40 held in pushes, 360 queued behind them.
    for offset in 0..400 {
        let mut m = message(offset);
        m.payload = format!(r#"{{"inst":"inst_{}","seq":{offset}}}"#, offset % 40).into_bytes();
        engine.submit(
            m,
            AckHandle::new(Recorded {
                log: log.clone(),
                stop: CancellationToken::new(),
            }),
        );
    }
    // A 3 s outage.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = sandbox.stats().by_status.get(&503).copied().unwrap_or(0);
    assert_eq!(metrics.app_probing.with_label_values(&["a"]).get(), 1);
    sandbox.set_faults(Faults::default());
    assert!(
        wait_until(Duration::from_secs(30), || log.lock().unwrap().len() == 400).await,
        "only {} of 400 final",
        log.lock().unwrap().len()
    );
    eprintln!("requests answered 503 during the 3 s outage: {during}");
    // Without the probe: 40 workers retrying every ~50–200 ms for 3 s, well over 600. With
    // it: the 40 first attempts, then one request per backoff step of the prober.
    assert!(during <= 40 + 60, "{during} requests during the outage");
    assert!(log.lock().unwrap().iter().all(|e| e == "Delivered"));
    assert_eq!(sandbox.stats().accepted, 400);
    assert_eq!(metrics.app_probing.with_label_values(&["a"]).get(), 0);
}
