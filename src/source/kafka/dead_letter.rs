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
            for (k, v) in &rec.headers {
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
