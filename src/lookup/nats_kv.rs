//! A table that watches a JetStream key-value bucket: the latest value of every key first,
//! then each change; a delete or purge removes the key. Ready when the initial values are in
//! (the watcher's pending count reaches zero, or the bucket is empty). After a lost watch it
//! resumes from the last revision seen, so no change in between is missed.

use super::{pause, Lookup, LookupError, CHECK_EVERY};
use crate::config::{NatsKvLookupConfig, NatsSourceConfig};
use async_nats::jetstream::kv::Operation;
use futures::StreamExt;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Watches the bucket until `stop`.
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
    let started = Instant::now();
    let mut last_revision: Option<u64> = None;
    let mut read = 0u64;
    loop {
        let store = match js.get_key_value(&n.bucket).await {
            Ok(s) => s,
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
                continue;
            }
        };
        let watch = match last_revision {
            None => {
                if store.status().await.is_ok_and(|s| s.values() == 0) {
                    lookup.mark_ready(&format!("bucket {} is empty", n.bucket));
                }
                store.watch_with_history(">").await
            }
            Some(rev) => store.watch_all_from_revision(rev + 1).await,
        };
        let mut watch = match watch {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(lookup = %lookup.name, bucket = %n.bucket, error = %e, "cannot watch the lookup bucket; retrying");
                if !pause(CHECK_EVERY, stop).await {
                    return Ok(());
                }
                continue;
            }
        };
        let mut tick = tokio::time::interval(CHECK_EVERY);
        loop {
            tokio::select! {
                next = watch.next() => match next {
                    Some(Ok(entry)) => {
                        read += 1;
                        last_revision = Some(entry.revision);
                        let value = match entry.operation {
                            Operation::Put => Some(&entry.value[..]),
                            Operation::Delete | Operation::Purge => None,
                        };
                        lookup.apply(&entry.key, value);
                        if !lookup.is_ready() {
                            if entry.delta == 0 {
                                lookup.mark_ready(&format!(
                                    "bucket {}, {read} values in {:.1?}",
                                    n.bucket,
                                    started.elapsed()
                                ));
                            } else if read % 10_000 == 0 {
                                lookup.set_status(format!(
                                    "loading bucket {}: {read} values read, {} to go",
                                    n.bucket, entry.delta
                                ));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(lookup = %lookup.name, bucket = %n.bucket, error = %e, "lookup watch failed; resuming from the last revision seen");
                        break;
                    }
                    None => {
                        tracing::warn!(lookup = %lookup.name, bucket = %n.bucket, "lookup watch ended; resuming from the last revision seen");
                        break;
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
        if !pause(Duration::from_secs(1), stop).await {
            return Ok(());
        }
    }
}
