//! Dead letters to a Kafka topic, on the cluster and with the client properties (TLS, SASL)
//! of their source: one idempotent producer, each write waiting for the brokers' ack.

use super::{client_config, KafkaSourceError};
use crate::config::KafkaSourceConfig;
use crate::dead_letter::{DeadLetterError, DeadLetterRecord, DeadLetterWriter};
use futures::future::BoxFuture;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

pub struct KafkaDeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl KafkaDeadLetters {
    pub fn new(
        source_name: &str,
        cfg: &KafkaSourceConfig,
        topic: &str,
    ) -> Result<Self, KafkaSourceError> {
        let producer = client_config::producer(source_name, cfg)?
            .create()
            .map_err(|e| KafkaSourceError::Create {
                source_name: source_name.to_string(),
                reason: format!("dead-letter producer: {e}"),
            })?;
        Ok(Self {
            producer,
            topic: topic.to_string(),
        })
    }
}

impl DeadLetterWriter for KafkaDeadLetters {
    fn write<'a>(
        &'a self,
        rec: &'a DeadLetterRecord,
    ) -> BoxFuture<'a, Result<(), DeadLetterError>> {
        Box::pin(async move {
            let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len() + 8);
            // The message's own `orceum.*` headers (forged, or left from an earlier dead
            // letter) are dropped: `replay` and readers must see only this record's reasons.
            for (k, v) in rec.headers.iter().filter(|(k, _)| !is_ours(k)) {
                headers = headers.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            for (k, v) in rec.describing_headers() {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                .payload(rec.payload.as_slice())
                .headers(headers);
            if let Some(k) = &rec.key {
                record = record.key(k.as_slice());
            }
            self.producer
                .send(record, Duration::from_secs(10))
                .await
                .map(|_| ())
                .map_err(|(e, _)| DeadLetterError {
                    destination: self.describe(),
                    too_large: e.rdkafka_error_code()
                        == Some(RDKafkaErrorCode::MessageSizeTooLarge),
                    reason: e.to_string(),
                })
        })
    }

    fn describe(&self) -> String {
        format!("kafka topic {}", self.topic)
    }
}

/// A header name in the dead letter's own namespace (`orceum.`, any case).
fn is_ours(name: &str) -> bool {
    name.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("orceum."))
}

#[cfg(test)]
mod tests {
    //! The writer against librdkafka's mock cluster (in this process), read back as `replay`
    //! reads a dead-letter topic.
    use super::*;
    use crate::dead_letter::header;
    use crate::source::kafka::headers_of;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestCaseError, TestRunner};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message as _;
    use rdkafka::mocking::MockCluster;
    use rdkafka::{Offset, TopicPartitionList};
    use std::cell::RefCell;
    use std::time::Instant;

    type Headers = Vec<(String, Option<Vec<u8>>)>;

    /// Case `n`'s dead letter for a 4xx answer `body`, as the dispatcher builds it: the
    /// excerpt is the body's first 512 bytes, lossily UTF-8; the reason quotes it.
    fn record(
        n: usize,
        headers: Headers,
        key: Option<Vec<u8>>,
        status: u16,
        body: &[u8],
    ) -> DeadLetterRecord {
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        let reason = if excerpt.is_empty() {
            format!("Orceum answered {status}")
        } else {
            let quoted: String = excerpt.chars().take(200).collect();
            format!("Orceum answered {status}: {quoted}")
        };
        DeadLetterRecord {
            route: "r".into(),
            kind: format!("http_{status}"),
            reason,
            coordinates: format!("kafka:t/0@{n}"),
            status: Some(status),
            response_excerpt: Some(excerpt).filter(|e| !e.is_empty()),
            attempts: 1,
            key,
            payload: format!("case {n}").into_bytes(),
            headers,
            truncated: None,
        }
    }

    /// Header bytes from outside: CR/LF, NUL, non-UTF-8 (names arrive as `String`s, lossily).
    fn headers() -> impl Strategy<Value = Headers> {
        let bytes = |n| prop::collection::vec(any::<u8>(), 0..n);
        prop::collection::vec(
            (
                bytes(40).prop_map(|k| String::from_utf8_lossy(&k).into_owned()),
                prop::option::of(bytes(80)),
            ),
            0..8,
        )
    }

    /// An Orceum 4xx body: arbitrary bytes, or an HTML page with CR/LF line breaks.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..700),
            "<html>(\r?\n[^\r\n]{0,60}){0,12}\r?\n</html>".prop_map(String::into_bytes),
        ]
    }

    /// Everything on `topic` partition 0, from the beginning, until `n` came or 15 s passed,
    /// and how many records the partition holds (its watermarks).
    fn read_back(
        brokers: &str,
        topic: &str,
        n: usize,
    ) -> (Vec<rdkafka::message::OwnedMessage>, i64) {
        let cfg: KafkaSourceConfig =
            yaml_serde::from_str(&format!("bootstrap_servers: {brokers}\n")).unwrap();
        let c: BaseConsumer = client_config::reader("events", &cfg)
            .unwrap()
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        c.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let until = Instant::now() + Duration::from_secs(15);
        while out.len() < n && Instant::now() < until {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                out.push(m.detach());
            }
        }
        let (low, high) = c
            .fetch_watermarks(topic, 0, Duration::from_secs(5))
            .unwrap();
        (out, high - low)
    }

    /// A mock cluster with topic `dlq`, its bootstrap servers, and a writer to `dlq`.
    fn writer_on_mock() -> (
        MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
        String,
        KafkaDeadLetters,
    ) {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("dlq", 1, 1).unwrap();
        let brokers = cluster.bootstrap_servers();
        let cfg: KafkaSourceConfig =
            yaml_serde::from_str(&format!("bootstrap_servers: {brokers}\n")).unwrap();
        let writer = KafkaDeadLetters::new("events", &cfg, "dlq").unwrap();
        (cluster, brokers, writer)
    }

    #[test]
    fn arbitrary_header_bytes_and_answer_bodies_never_panic_and_every_record_is_stored_with_why() {
        let (_cluster, brokers, writer) = writer_on_mock();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let written: RefCell<Vec<DeadLetterRecord>> = RefCell::new(Vec::new());
        let strategy = (
            headers(),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
            400u16..500,
            body(),
        );
        // One cluster for every case, and a count checked after the last one: a runner, not
        // `proptest!` (which has no place for either).
        let mut runner = TestRunner::new(Config {
            cases: 32,
            failure_persistence: None,
            ..Config::default()
        });
        let run = runner.run(&strategy, |(headers, key, status, body)| {
            let n = written.borrow().len();
            let rec = record(n, headers, key, status, &body);
            let result = rt.block_on(writer.write(&rec));
            prop_assert!(result.is_ok(), "case {}: {:?}", n, result.err());
            written.borrow_mut().push(rec);
            Ok::<(), TestCaseError>(())
        });
        if let Err(e) = run {
            panic!("{e}");
        }

        let written = written.into_inner();
        assert_eq!(written.len(), 32, "cases written");
        let (stored, on_topic) = read_back(&brokers, "dlq", written.len());
        assert_eq!(stored.len(), written.len(), "records read back");
        assert_eq!(on_topic, written.len() as i64, "records on the topic");
        for (rec, m) in written.iter().zip(&stored) {
            assert_eq!(
                m.payload(),
                Some(rec.payload.as_slice()),
                "in the order written"
            );
            assert_eq!(m.key(), rec.key.as_deref());
            let got = headers_of(m);
            // The writer's own headers come after the original ones: the last of a name.
            let value = |name: &str| {
                got.iter()
                    .rev()
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| v.clone())
            };
            assert_eq!(
                value(header::REASON).as_deref(),
                Some(rec.reason.as_bytes()),
                "{}",
                rec.coordinates
            );
            assert_eq!(
                value(header::RESPONSE).as_deref(),
                rec.response_excerpt.as_deref().map(str::as_bytes),
                "{}",
                rec.coordinates
            );
            assert_eq!(
                value(header::SOURCE).as_deref(),
                Some(rec.coordinates.as_bytes())
            );
            // The original headers come first, in order, their values byte for byte. A name
            // comes back up to its first NUL: librdkafka hands names out as C strings (so a
            // name read from a Kafka source never holds one either).
            assert_eq!(
                got.len(),
                rec.headers.len() + rec.describing_headers().len()
            );
            for ((k, v), (gk, gv)) in rec.headers.iter().zip(&got) {
                assert_eq!(gv, v, "value of header {k:?}");
                assert_eq!(Some(gk.as_str()), k.split('\0').next(), "header name");
            }
        }
    }

    #[test]
    fn a_message_cannot_forge_the_dead_letters_own_headers() {
        let (_cluster, brokers, writer) = writer_on_mock();
        let forged = vec![
            ("orceum.route".to_string(), Some(b"billing".to_vec())),
            (
                "ORCEUM.Source".to_string(),
                Some(b"kafka:other/0@1".to_vec()),
            ),
            ("trace".to_string(), Some(b"t1".to_vec())),
        ];
        let rec = record(0, forged, None, 422, b"{}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(writer.write(&rec)).unwrap();
        let (stored, _) = read_back(&brokers, "dlq", 1);
        let got = headers_of(&stored[0]);
        let all = |name: &str| -> Vec<Vec<u8>> {
            got.iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .filter_map(|(_, v)| v.clone())
                .collect()
        };
        assert_eq!(all(header::ROUTE), vec![b"r".to_vec()]);
        assert_eq!(all(header::SOURCE), vec![b"kafka:t/0@0".to_vec()]);
        assert_eq!(all("trace"), vec![b"t1".to_vec()], "other headers are kept");
    }
}
