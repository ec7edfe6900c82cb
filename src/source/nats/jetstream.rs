//! JetStream durable pull consumers: at-least-once. A message is acked only once its outcome
//! is final (`+ACK`; dead-lettered: `+TERM`), kept alive with in-progress acks while held,
//! and nak'd when abandoned so another replica takes it at once.

use super::Slot;
use super::{headers, RouteLoop};
use crate::config::JetStreamRouteConfig;
use crate::message::{AckHandle, Acknowledge, Final, Message, Origin};
use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A JetStream message's acknowledgement. While the bridge holds the message — queued behind
/// its installation, waiting for its app's rate limit, or between retries — a keep-alive sends
/// in-progress acks every half `ack_wait`, so the server never redelivers it under our feet.
/// Releases the in-flight slot when the final ack (or nak) has been sent.
struct JetStreamAck {
    acker: Arc<jetstream::message::Acker>,
    permit: Slot,
    runtime: tokio::runtime::Handle,
    keepalive: CancellationToken,
}

impl JetStreamAck {
    fn new(acker: jetstream::message::Acker, permit: Slot, ack_wait: Duration) -> Self {
        let acker = Arc::new(acker);
        let keepalive = CancellationToken::new();
        let runtime = tokio::runtime::Handle::current();
        let (a, k) = (acker.clone(), keepalive.clone());
        let every = (ack_wait / 2).max(Duration::from_millis(500));
        // The keep-alive lives exactly as long as this acknowledgement: finishing or
        // abandoning it (an `AckHandle` dropped unfinished abandons) cancels the loop.
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = k.cancelled() => return,
                }
                let _ = a.ack_with(AckKind::Progress).await;
            }
        });
        Self {
            acker,
            permit,
            runtime,
            keepalive,
        }
    }

    fn send(self: Box<Self>, kind: AckKind) {
        self.keepalive.cancel();
        let runtime = self.runtime.clone();
        runtime.spawn(async move {
            if let Err(e) = self.acker.ack_with(kind).await {
                // The server redelivers after ack_wait: a duplicate, never a loss.
                tracing::warn!(error = %e, "JetStream ack failed; the message will be redelivered");
            }
            drop(self.permit);
        });
    }
}

impl Acknowledge for JetStreamAck {
    fn finish(self: Box<Self>, outcome: Final) {
        let kind = match outcome {
            Final::Delivered | Final::Skipped => AckKind::Ack,
            // Dead-lettered: never redeliver.
            Final::DeadLettered => AckKind::Term,
        };
        self.send(kind);
    }

    fn abandon(self: Box<Self>) {
        // Not finished here: let another replica take it now rather than after ack_wait.
        self.send(AckKind::Nak(None));
    }
}

impl RouteLoop {
    /// JetStream: a durable pull consumer, re-bound after errors (e.g. a server restart).
    pub(super) async fn jetstream(self, cfg: JetStreamRouteConfig) {
        let js = jetstream::new(self.client.clone());
        let stream_name: Arc<str> = Arc::from(cfg.stream.as_str());
        let route_name: Arc<str> = Arc::from(self.route.name.as_str());
        let mut delay = Duration::from_millis(200);
        while !self.stop.is_cancelled() {
            let consumer = match self.bind(&js, &cfg).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(source = %self.source, route = %self.route.name, stream = %cfg.stream,
                        durable = %cfg.durable, error = %e, retry_in = ?delay, "cannot bind the JetStream consumer");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop.cancelled() => break,
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                    continue;
                }
            };
            let ack_wait = consumer.cached_info().config.ack_wait;
            let batch = self.max_in_flight.clamp(1, 256);
            let mut messages = match consumer
                .stream()
                .max_messages_per_batch(batch)
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(source = %self.source, route = %self.route.name, error = %e, "cannot start pulling; retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            tracing::info!(source = %self.source, route = %self.route.name, stream = %cfg.stream, durable = %cfg.durable, "pulling from JetStream");
            // Owned by this binding: the set aborts the reporter on every way out of it.
            let mut reporter = tokio::task::JoinSet::new();
            reporter.spawn(report_pending(
                consumer.clone(),
                self.metrics.clone(),
                cfg.clone(),
            ));
            delay = Duration::from_millis(200);
            loop {
                let Some(permit) = self.slot().await else {
                    return;
                };
                let next = tokio::select! {
                    m = messages.next() => m,
                    _ = self.stop.cancelled() => return,
                };
                let m = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        // Missed heartbeats, a server restart, a deleted consumer: bind again.
                        tracing::warn!(source = %self.source, route = %self.route.name, error = %e, "JetStream pull interrupted; re-binding");
                        break;
                    }
                    None => break,
                };
                let (sequence, published) = match m.info() {
                    Ok(info) => (info.stream_sequence, Some(info.published)),
                    Err(_) => (0, None),
                };
                let (m, acker) = m.split();
                let msg = Message {
                    source: self.source.clone(),
                    origin: Origin::JetStream {
                        stream: stream_name.clone(),
                        subject: m.subject.to_string(),
                        sequence,
                    },
                    route: Some(route_name.clone()),
                    payload: m.payload.to_vec(),
                    key: None,
                    headers: headers(m.headers.as_ref()),
                    timestamp: published.or_else(|| Some(chrono::Utc::now())),
                };
                let ack = JetStreamAck::new(acker, permit, ack_wait);
                if !self.hand_over(msg, AckHandle::new(ack)).await {
                    return;
                }
            }
            drop(reporter);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.stop.cancelled() => break,
            }
        }
    }

    async fn bind(
        &self,
        js: &jetstream::Context,
        cfg: &JetStreamRouteConfig,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, String> {
        let stream = js
            .get_stream(&cfg.stream)
            .await
            .map_err(|e| super::stream_error(&cfg.stream, &e))?;
        if cfg.create {
            let config = pull::Config {
                durable_name: Some(cfg.durable.clone()),
                filter_subject: cfg.filter_subject.clone().unwrap_or_default(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: cfg.ack_wait,
                max_ack_pending: i64::try_from(self.max_in_flight).unwrap_or(i64::MAX),
                ..Default::default()
            };
            stream
                .get_or_create_consumer(&cfg.durable, config)
                .await
                .map_err(|e| format!("consumer {}: {e}", cfg.durable))
        } else {
            stream.get_consumer(&cfg.durable).await.map_err(|e| {
                format!(
                    "consumer {} (create: false — create it, or set create: true): {e}",
                    cfg.durable
                )
            })
        }
    }
}

/// Every 5 s: the consumer's pending and ack-pending counts, JetStream's lag signal.
async fn report_pending(
    mut consumer: jetstream::consumer::Consumer<pull::Config>,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
    cfg: JetStreamRouteConfig,
) {
    loop {
        if let Ok(info) = consumer.info().await {
            let labels = [cfg.stream.as_str(), cfg.durable.as_str()];
            metrics
                .jetstream_pending
                .with_label_values(&labels)
                .set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
            metrics
                .jetstream_ack_pending
                .with_label_values(&labels)
                .set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
