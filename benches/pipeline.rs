//! The producer side of the end-to-end drain benchmark (`scripts/bench` drives it; it is not
//! a criterion bench and measures nothing by itself).
//!
//! ```text
//! cargo bench --bench pipeline -- produce --brokers HOST:PORT --topic T --partitions 6 \
//!     --count 200000 [--rate 1000] [--installations 1000] [--apps 1]
//! ```
//!
//! ```text
//! cargo bench --bench pipeline -- mock-broker --topic T --partitions 6 --count 200000 \
//!     --ready-file PATH [--apps 1]
//! cargo bench --bench pipeline -- produce-jetstream --nats nats://HOST:PORT --topic STREAM \
//!     --count 200000 [--rate 1000] [--apps 1]
//! ```
//!
//! With `--apps N` (N > 1) the events are spread round-robin over N topics `T-0` … `T-(N-1)`,
//! one per Orceum app (each with `--partitions` partitions), so a bridge routes each topic to
//! its own app. `produce-jetstream` creates the stream `STREAM` (subjects `STREAM.>`, memory
//! storage) if missing and publishes to `STREAM.0` … `STREAM.(N-1)`, waiting for every ack.
//!
//! `mock-broker` hosts librdkafka's mock cluster (the one `orceum-bridge demo` uses) on a
//! loopback port instead of using an external broker, produces the backlog into it, writes the
//! bootstrap address to `--ready-file` and serves until killed. Tansu serves only a few hundred
//! fetched records a second from a large in-memory topic (measured: see docs/performance.md),
//! so a drain against it measures Tansu; the mock cluster keeps the broker out of the way.
//!
//! `produce` creates the topic with `--partitions` partitions (if missing), then produces `--count`
//! Orceum-shaped events round-robin over the partitions, as fast as the broker takes them or at
//! `--rate` events/s. Each payload is already a valid Orceum event body (so a bridge that cannot
//! map, such as mq-bridge, can forward it unchanged) and carries `event_data.produced_at_us`, the
//! send time in µs since the epoch, for produce→receive latency.
//!
//! One record per produce request (`linger.ms=0`, `batch.num.messages=1`): Tansu's high
//! watermark is wrong when the producer batches (see scripts/brokers.sh).

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(PartialEq)]
enum Mode {
    Produce,
    MockBroker,
    JetStream,
}

struct Args {
    mode: Mode,
    nats: String,
    ready_file: Option<String>,
    brokers: String,
    topic: String,
    partitions: i32,
    count: u64,
    rate: Option<f64>,
    installations: u64,
    apps: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1).filter(|a| a != "--bench");
    let mode = match it.next().as_deref() {
        Some("produce") => Mode::Produce,
        Some("mock-broker") => Mode::MockBroker,
        Some("produce-jetstream") => Mode::JetStream,
        other => {
            return Err(format!(
                "expected the subcommand `produce`, `mock-broker` or `produce-jetstream`, got {other:?}"
            ))
        }
    };
    let mut args = Args {
        mode,
        nats: String::new(),
        ready_file: None,
        brokers: String::new(),
        topic: String::new(),
        partitions: 6,
        count: 200_000,
        rate: None,
        installations: 1000,
        apps: 1,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--brokers" => args.brokers = value,
            "--nats" => args.nats = value,
            "--topic" => args.topic = value,
            "--partitions" => args.partitions = num(&value)? as i32,
            "--count" => args.count = num(&value)? as u64,
            "--rate" => args.rate = Some(num(&value)?),
            "--installations" => args.installations = (num(&value)? as u64).max(1),
            "--apps" => args.apps = (num(&value)? as u64).max(1),
            "--ready-file" => args.ready_file = Some(value),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.topic.is_empty()
        || (args.brokers.is_empty() && args.mode == Mode::Produce)
        || (args.nats.is_empty() && args.mode == Mode::JetStream)
    {
        return Err(
            "--topic (and --brokers for produce, --nats for produce-jetstream) are required".into(),
        );
    }
    Ok(args)
}

/// Counts failed deliveries; librdkafka calls it from `poll`.
struct Deliveries {
    failed: Arc<AtomicU64>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("pipeline: a delivery failed: {e}");
            }
        }
    }
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
}

/// About 300 bytes: a valid `POST /apps/{app_id}/events` body. The sandbox refuses unknown
/// top-level fields, so the extras (`app`, for routes split by app; `seq`; `produced_at_us`)
/// live inside `event_data`.
fn payload(seq: u64, args: &Args) -> String {
    let inst = seq % args.installations;
    let app = seq % args.apps;
    format!(
        concat!(
            r#"{{"installation_id":"inst_{inst:05}","event_type":"task.completed","#,
            r#""event_data":{{"task_id":"task_{seq:08}","title":"Reconcile the March invoices for the EMEA billing entity","#,
            r#""project":"prj_0192","app":{app},"seq":{seq},"produced_at_us":{ts}}},"#,
            r#""timestamp":"2026-03-14T09:26:53Z","priority":"normal"}}"#
        ),
        inst = inst,
        seq = seq,
        app = app,
        ts = now_us()
    )
}

/// The topics (or subjects) events go to: one per app when there are several.
fn topics(args: &Args) -> Vec<String> {
    if args.apps == 1 {
        vec![args.topic.clone()]
    } else {
        (0..args.apps)
            .map(|k| format!("{}-{k}", args.topic))
            .collect()
    }
}

fn partitions_of(consumer: &BaseConsumer, topic: &str) -> usize {
    consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()
        .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
        .unwrap_or(0)
}

fn create_topic(args: &Args, name: &str) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|e| format!("metadata client: {e}"))?;
    // Already there (the latency phase; the mock cluster, which has no CreateTopics).
    if partitions_of(&consumer, name) >= args.partitions as usize {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()
        .map_err(|e| format!("admin client: {e}"))?;
    let topic = NewTopic::new(name, args.partitions, TopicReplication::Fixed(1));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(admin.create_topics([&topic], &opts))
        .map_err(|e| format!("create topic {name}: {e}"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => return Err(format!("create topic {t}: {code}")),
        }
    }
    // Wait until metadata shows every partition, or records would go to a partition not yet known.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let have = partitions_of(&consumer, name);
        if have >= args.partitions as usize {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "topic {name}: {have} partitions after 30 s, want {}",
                args.partitions
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn produce(args: &Args) -> Result<(), String> {
    let topics = topics(args);
    for t in &topics {
        create_topic(args, t)?;
    }
    let failed = Arc::new(AtomicU64::new(0));
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .set("message.timeout.ms", "120000")
        .set("queue.buffering.max.messages", "100000")
        .create_with_context(Deliveries {
            failed: failed.clone(),
        })
        .map_err(|e| format!("producer: {e}"))?;
    let start = Instant::now();
    for seq in 0..args.count {
        if let Some(rate) = args.rate {
            let due = start + Duration::from_secs_f64(seq as f64 / rate);
            let now = Instant::now();
            if due > now {
                producer.poll(Duration::ZERO);
                std::thread::sleep(due - now);
            }
        }
        let body = payload(seq, args);
        let key = format!("inst_{:05}", seq % args.installations);
        let topic = &topics[(seq % args.apps) as usize];
        let partition = ((seq / args.apps) % args.partitions as u64) as i32;
        let mut record = BaseRecord::to(topic)
            .payload(&body)
            .key(&key)
            .partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(format!("produce record {seq}: {e}")),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(300))
        .map_err(|e| format!("flush: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    eprintln!(
        "pipeline: produced {} events to {} ({} topics × {} partitions) in {secs:.1} s ({:.0}/s), {failed} failed",
        args.count,
        args.topic,
        topics.len(),
        args.partitions,
        args.count as f64 / secs
    );
    if failed > 0 {
        return Err(format!("{failed} deliveries failed"));
    }
    Ok(())
}

/// Hosts the mock cluster, fills it, announces it, then serves until the process is killed.
fn mock_broker(mut args: Args) -> Result<(), String> {
    let cluster =
        rdkafka::mocking::MockCluster::new(1).map_err(|e| format!("mock cluster: {e}"))?;
    for t in topics(&args) {
        cluster
            .create_topic(&t, args.partitions, 1)
            .map_err(|e| format!("mock topic {t}: {e}"))?;
    }
    args.brokers = cluster.bootstrap_servers();
    produce(&args)?;
    if let Some(path) = &args.ready_file {
        std::fs::write(path, &args.brokers).map_err(|e| format!("{path}: {e}"))?;
    }
    eprintln!("pipeline: mock cluster at {} (kill to stop)", args.brokers);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Publishes the events to a JetStream stream (created if missing), every publish acked.
fn produce_jetstream(args: &Args) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let client = async_nats::connect(&args.nats)
            .await
            .map_err(|e| format!("connect {}: {e}", args.nats))?;
        let js = async_nats::jetstream::new(client);
        js.get_or_create_stream(async_nats::jetstream::stream::Config {
            name: args.topic.clone(),
            subjects: vec![format!("{}.>", args.topic)],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("stream {}: {e}", args.topic))?;
        let start = Instant::now();
        let mut acks = std::collections::VecDeque::new();
        for seq in 0..args.count {
            if let Some(rate) = args.rate {
                let due = start + Duration::from_secs_f64(seq as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            let subject = format!("{}.{}", args.topic, seq % args.apps);
            let ack = js
                .publish(subject, payload(seq, args).into())
                .await
                .map_err(|e| format!("publish {seq}: {e}"))?;
            acks.push_back(ack);
            // At most 512 publishes waiting for their ack.
            while acks.len() >= 512 {
                if let Some(ack) = acks.pop_front() {
                    ack.await.map_err(|e| format!("publish ack: {e}"))?;
                }
            }
        }
        for ack in acks {
            ack.await.map_err(|e| format!("publish ack: {e}"))?;
        }
        eprintln!(
            "pipeline: published {} events to stream {} in {:.1} s",
            args.count,
            args.topic,
            start.elapsed().as_secs_f64()
        );
        Ok(())
    })
}

fn main() {
    let result = parse_args().and_then(|args| match args.mode {
        Mode::MockBroker => mock_broker(args),
        Mode::Produce => produce(&args),
        Mode::JetStream => produce_jetstream(&args),
    });
    if let Err(e) = result {
        eprintln!("pipeline: {e}");
        std::process::exit(1);
    }
}
