//! `replay`'s reader for a JetStream dead-letter stream: messages fetched by sequence, from a
//! first to a last sequence, nothing acked or deleted.

use crate::config::NatsSourceConfig;
use crate::dead_letter::Stored;

/// Reads the dead letters of `stream` with sequences in `[start, end]` (the whole stream by
/// default) into `out`, one message at a time; deleted sequences are skipped. Stops early
/// when `out` is closed.
pub async fn read(
    name: &str,
    n: &NatsSourceConfig,
    stream: &str,
    start: Option<i64>,
    end: Option<i64>,
    out: tokio::sync::mpsc::Sender<Stored>,
) -> Result<(), String> {
    let client = super::connect(name, n, None)
        .await
        .map_err(|e| e.to_string())?;
    let js = async_nats::jetstream::new(client);
    let mut s = js
        .get_stream(stream)
        .await
        .map_err(|e| format!("stream {stream}: {e}"))?;
    let state = s.info().await.map_err(|e| e.to_string())?.state.clone();
    let first = start
        .map(|v| v.max(0) as u64)
        .unwrap_or(state.first_sequence)
        .max(state.first_sequence);
    let last = end
        .map(|v| v.max(0) as u64)
        .unwrap_or(state.last_sequence)
        .min(state.last_sequence);
    for seq in first..=last {
        let Ok(m) = s.get_raw_message(seq).await else {
            continue;
        }; // deleted: skip
        let mut headers = Vec::new();
        for (k, vs) in m.headers.iter() {
            for v in vs {
                headers.push((k.to_string(), Some(v.as_str().as_bytes().to_vec())));
            }
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.as_deref())
        };
        // A Kafka record dead-lettered to a subject carries its key as a header.
        let key = crate::dead_letter::key_from_headers(
            find(crate::dead_letter::header::KEY),
            find(crate::dead_letter::header::KEY_ENCODING),
        );
        let stored = Stored {
            at: format!("{stream}@{seq}"),
            payload: m.payload.to_vec(),
            key,
            headers,
        };
        if out.send(stored).await.is_err() {
            return Ok(()); // replay stopped reading
        }
    }
    Ok(())
}
