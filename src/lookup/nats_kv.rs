//! A table that follows a JetStream key-value bucket: the latest value of every key first,
//! then each change; a delete or purge removes the key. Ready when the initial values are in
//! (the consumer's pending count reaches zero, or the bucket is empty).
//!
//! The bucket is read as the stream it is (`KV_<bucket>`, subjects `$KV.<bucket>.<key>`) with
//! an ordered *pull* consumer from the last value per key. The KV watcher of async-nats is a
//! push consumer: loading 1,000,000 values, it overflowed its subscription buffer, dropped
//! messages and started over, again and again (seen); a pull consumer asks for what it can take,
//! and recreates itself from the last sequence it saw if it misses one, so no change is lost.

use super::{pause, Lookup, LookupError, CHECK_EVERY};
use crate::config::{NatsKvLookupConfig, NatsSourceConfig};
use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures::StreamExt;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Whether a KV message removes its key: a delete or purge (`KV-Operation`), or a server's
/// delete marker (`Nats-Marker-Reason`, nats-server 2.11's per-key TTLs).
fn is_delete(msg: &async_nats::jetstream::Message) -> bool {
    msg.headers.as_ref().is_some_and(|h| {
        h.get("KV-Operation")
            .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"))
            || h.get("Nats-Marker-Reason").is_some()
    })
}

/// Follows the bucket until `stop`.
pub async fn follow(
    lookup: &Lookup,
    n: &NatsKvLookupConfig,
    nc: &NatsSourceConfig,
    stop: &CancellationToken,
) -> Result<(), LookupError> {
    lookup.set_status(format!("connecting to source {}", n.source));
    let client = tokio::select! {
        c = crate::source::nats::connect(&n.source, nc, None) => c.map_err(|e| LookupError::Start {
            lookup: lookup.name.clone(),
            reason: e.to_string(),
        })?,
        _ = stop.cancelled() => return Ok(()),
    };
    let js = async_nats::jetstream::new(client.clone());
    let stream_name = format!("KV_{}", n.bucket);
    let prefix = format!("$KV.{}.", n.bucket);
    let started = Instant::now();
    let mut read = 0u64;
    'open: loop {
        let mut messages = loop {
            let opened = async {
                let mut stream = js
                    .get_stream(&stream_name)
                    .await
                    .map_err(|e| e.to_string())?;
                let empty = stream
                    .info()
                    .await
                    .map_err(|e| e.to_string())?
                    .state
                    .messages
                    == 0;
                let consumer = stream
                    .create_consumer(OrderedConfig {
                        filter_subject: format!("{prefix}>"),
                        deliver_policy: DeliverPolicy::LastPerSubject,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                let messages = consumer.messages().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((messages, empty))
            };
            match opened.await {
                Ok((messages, empty)) => {
                    if empty {
                        lookup.mark_ready(&format!("bucket {} is empty", n.bucket));
                    }
                    break messages;
                }
                Err(e) => {
                    let e = format!(
                        "bucket {} on source {}: {e} (create it: see docs/lookups.md; retrying)",
                        n.bucket, n.source
                    );
                    lookup.set_status(format!("waiting: {e}"));
                    tracing::warn!(lookup = %lookup.name, "lookup table waits: {e}");
                    if !pause(CHECK_EVERY, stop).await {
                        return Ok(());
                    }
                }
            }
        };
        let mut tick = tokio::time::interval(CHECK_EVERY);
        loop {
            tokio::select! {
                next = messages.next() => match next {
                    Some(Ok(msg)) => {
                        read += 1;
                        let Some(key) = msg.subject.as_str().strip_prefix(&prefix) else {
                            continue;
                        };
                        let value = (!is_delete(&msg)).then_some(&msg.payload[..]);
                        lookup.apply(key, value);
                        let pending = msg.info().map(|i| i.pending).unwrap_or(u64::MAX);
                        if !lookup.is_ready() {
                            if pending == 0 {
                                lookup.mark_ready(&format!(
                                    "bucket {}, {read} values in {:.1?}",
                                    n.bucket,
                                    started.elapsed()
                                ));
                            } else if read % 10_000 == 0 {
                                lookup.set_status(format!(
                                    "loading bucket {}: {read} values read, {pending} to go",
                                    n.bucket
                                ));
                            }
                        }
                    }
                    // The ordered consumer recreates itself from the last sequence it saw.
                    Some(Err(e)) => {
                        tracing::warn!(lookup = %lookup.name, bucket = %n.bucket, error = %e, "lookup bucket read error; the consumer resumes where it was");
                    }
                    None => {
                        tracing::warn!(lookup = %lookup.name, bucket = %n.bucket, "lookup bucket consumer ended; opening it again (the table keeps what it has)");
                        if !pause(CHECK_EVERY, stop).await {
                            return Ok(());
                        }
                        continue 'open;
                    }
                },
                _ = tick.tick() => {
                    if client.connection_state() == async_nats::connection::State::Connected {
                        lookup.mark_in_step();
                    }
                }
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }
}
