//! Dead letters to a NATS subject captured by a JetStream stream: each write waits for the
//! stream's ack, so the source message is only final once the record is stored.

use crate::dead_letter::{DeadLetterError, DeadLetterRecord, DeadLetterWriter};
use futures::future::BoxFuture;

pub struct NatsDeadLetters {
    jetstream: async_nats::jetstream::Context,
    subject: String,
}

impl NatsDeadLetters {
    pub fn new(client: async_nats::Client, subject: &str) -> Self {
        Self {
            jetstream: async_nats::jetstream::new(client),
            subject: subject.to_string(),
        }
    }
}

impl DeadLetterWriter for NatsDeadLetters {
    fn write<'a>(
        &'a self,
        rec: &'a DeadLetterRecord,
    ) -> BoxFuture<'a, Result<(), DeadLetterError>> {
        Box::pin(async move {
            let mut headers = async_nats::HeaderMap::new();
            for (k, v) in &rec.headers {
                if let Some(v) = v {
                    headers.append(k.as_str(), String::from_utf8_lossy(v).as_ref());
                }
            }
            for (k, v) in rec.describing_headers() {
                headers.insert(k, v.as_str());
            }
            let write = |reason: String| DeadLetterError {
                destination: self.describe(),
                reason,
            };
            let ack = self
                .jetstream
                .publish_with_headers(self.subject.clone(), headers, rec.payload.clone().into())
                .await
                .map_err(|e| write(e.to_string()))?;
            ack.await.map_err(|e| {
                write(format!(
                    "{e} (is the subject captured by a JetStream stream?)"
                ))
            })?;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        format!("nats subject {}", self.subject)
    }
}
