//! The NATS source: core subjects and JetStream durable pull consumers, one subscription per
//! route, sharing one connection.
//!
//! Guarantees:
//! - **JetStream is at-least-once.** A message is acked only once its outcome is final
//!   (delivered or skipped: `+ACK`; dead-lettered: `+TERM`, so it is not redelivered forever).
//!   While it waits in retries or a rate-limited lane it gets in-progress acks (`+WPI`), so the
//!   server does not redeliver it under our feet. On shutdown, unfinished messages are nak'd so
//!   another replica takes them at once.
//! - **Core NATS is at-most-once across a crash.** Core NATS cannot redeliver: a message that is
//!   in flight when the process dies is gone. In-process retries still apply. Use JetStream when
//!   that matters.
//! - **Bounded.** At most `delivery.max_in_flight` messages are in flight per source: the next
//!   message is only pulled once a slot frees up (JetStream's `max_ack_pending` is set to the same
//!   bound on consumers the bridge creates). For core NATS, the client's subscription buffer
//!   absorbs bursts and the server drops messages for a slow consumer — at-most-once again.
//! - **Reconnects by itself**: `/readyz` is false while disconnected; JetStream pulls resume.

use crate::config::secret::read_plain;
use crate::config::{JetStreamRouteConfig, NatsSourceConfig};
use crate::message::{AckHandle, Acknowledge, Final, Message, Origin, Submit};
use crate::route::Route;
use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures::StreamExt;
use secrecy::ExposeSecret;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum NatsSourceError {
    #[error("sources.{source_name}.nats: {reason}")]
    Options { source_name: String, reason: String },
    #[error("sources.{source_name}.nats: cannot connect to {url}: {reason}")]
    Connect {
        source_name: String,
        url: String,
        reason: String,
    },
}

/// Connection options from the config: credentials, TLS, name; reconnects forever.
pub async fn connect(
    source_name: &str,
    cfg: &NatsSourceConfig,
    ready: Option<Arc<AtomicBool>>,
) -> Result<async_nats::Client, NatsSourceError> {
    let env = |n: &str| std::env::var(n).ok();
    let opt_err = |reason: String| NatsSourceError::Options {
        source_name: source_name.to_string(),
        reason,
    };
    let mut opts = async_nats::ConnectOptions::new()
        .name(&cfg.name)
        .retry_on_initial_connect()
        .max_reconnects(None::<usize>)
        .connection_timeout(Duration::from_secs(5));
    if let Some(path) = &cfg.credentials_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| opt_err(format!("credentials_file {}: {e}", path.display())))?;
    }
    if let Some(path) = &cfg.nkey_seed_file {
        let seed = std::fs::read_to_string(path)
            .map_err(|e| opt_err(format!("nkey_seed_file {}: {e}", path.display())))?;
        opts = opts.nkey(seed.trim().to_string());
    }
    if let Some(token) = &cfg.token {
        let t = read_plain(token, &env).map_err(|e| opt_err(format!("token: {e}")))?;
        opts = opts.token(t.expose_secret().to_string());
    }
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        let p = read_plain(password, &env).map_err(|e| opt_err(format!("password: {e}")))?;
        opts = opts.user_and_password(user.clone(), p.expose_secret().to_string());
    }
    if let Some(tls) = &cfg.tls {
        if let Some(ca) = &tls.ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        opts = opts.require_tls(tls.require_tls);
    }
    let name: Arc<str> = Arc::from(source_name);
    opts = opts.event_callback(move |event| {
        let ready = ready.clone();
        let name = name.clone();
        async move {
            match event {
                async_nats::Event::Connected => {
                    tracing::info!(source = %name, "connected to NATS");
                    if let Some(r) = &ready {
                        r.store(true, Ordering::Relaxed);
                    }
                }
                async_nats::Event::Disconnected => {
                    tracing::warn!(source = %name, "disconnected from NATS; reconnecting");
                    if let Some(r) = &ready {
                        r.store(false, Ordering::Relaxed);
                    }
                }
                async_nats::Event::SlowConsumer(sid) => {
                    tracing::error!(source = %name, subscription = sid,
                        "slow consumer: the server dropped core NATS messages (core NATS is at-most-once; use JetStream)")
                }
                other => tracing::info!(source = %name, event = %other, "NATS connection event"),
            }
        }
    });
    opts.connect(cfg.url.as_str())
        .await
        .map_err(|e| NatsSourceError::Connect {
            source_name: source_name.to_string(),
            url: cfg.url.clone(),
            reason: e.to_string(),
        })
}

/// A JetStream message's acknowledgement. While the bridge holds the message — queued behind
/// its installation, waiting for its app's rate limit, or between retries — a keep-alive sends
/// in-progress acks every half `ack_wait`, so the server never redelivers it under our feet.
/// Releases the in-flight slot when the final ack (or nak) has been sent.
struct JetStreamAck {
    acker: Arc<jetstream::message::Acker>,
    permit: OwnedSemaphorePermit,
    runtime: tokio::runtime::Handle,
    keepalive: CancellationToken,
}

impl JetStreamAck {
    fn new(
        acker: jetstream::message::Acker,
        permit: OwnedSemaphorePermit,
        ack_wait: Duration,
    ) -> Self {
        let acker = Arc::new(acker);
        let keepalive = CancellationToken::new();
        let runtime = tokio::runtime::Handle::current();
        let (a, k) = (acker.clone(), keepalive.clone());
        let every = (ack_wait / 2).max(Duration::from_millis(500));
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

/// A core NATS message has nothing to ack; its slot frees when it is final or abandoned.
struct CoreAck {
    _permit: OwnedSemaphorePermit,
}

impl Acknowledge for CoreAck {
    fn finish(self: Box<Self>, _outcome: Final) {}
}

/// One NATS source: its routes, where messages go, and the shutdown tokens.
pub struct NatsSource {
    pub name: Arc<str>,
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    pub config: NatsSourceConfig,
    pub routes: Vec<Arc<Route>>,
    pub max_in_flight: usize,
    pub submit: Arc<dyn Submit>,
    pub ready: Arc<AtomicBool>,
    pub stop: CancellationToken,
    pub abandon: CancellationToken,
}

impl NatsSource {
    /// Runs until `stop`, then waits for in-flight messages (until `abandon`), and returns.
    pub async fn run(self) -> Result<(), NatsSourceError> {
        let client = connect(&self.name, &self.config, Some(self.ready.clone())).await?;
        let slots = Arc::new(Semaphore::new(self.max_in_flight));
        let mut tasks = tokio::task::JoinSet::new();
        for route in &self.routes {
            let ctx = RouteLoop {
                metrics: self.metrics.clone(),
                source: self.name.clone(),
                route: route.clone(),
                client: client.clone(),
                slots: slots.clone(),
                submit: self.submit.clone(),
                stop: self.stop.clone(),
                max_in_flight: self.max_in_flight,
            };
            if let Some(js) = route.jetstream.clone() {
                tasks.spawn(ctx.jetstream(js));
            } else {
                tasks.spawn(ctx.core());
            }
        }
        self.stop.cancelled().await;
        while tasks.join_next().await.is_some() {}
        // Drain: every slot comes back when its message is final (or abandoned at the deadline).
        let all = u32::try_from(self.max_in_flight).unwrap_or(u32::MAX);
        tokio::select! {
            _ = slots.acquire_many(all) => {}
            _ = self.abandon.cancelled() => {
                // Abandoned parts nak on drop; give them a moment to be sent.
                let _ = tokio::time::timeout(Duration::from_secs(2), slots.acquire_many(all)).await;
            }
        }
        let _ = client.flush().await;
        self.ready.store(false, Ordering::Relaxed);
        tracing::info!(source = %self.name, "NATS source stopped");
        Ok(())
    }
}

struct RouteLoop {
    metrics: Arc<crate::telemetry::metrics::Metrics>,
    source: Arc<str>,
    route: Arc<Route>,
    client: async_nats::Client,
    slots: Arc<Semaphore>,
    submit: Arc<dyn Submit>,
    stop: CancellationToken,
    max_in_flight: usize,
}

impl RouteLoop {
    async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            p = self.slots.clone().acquire_owned() => p.ok(),
            _ = self.stop.cancelled() => None,
        }
    }

    /// Core NATS: one (queue) subscription per subject.
    async fn core(self) {
        let mut subs = futures::stream::SelectAll::new();
        for subject in &self.route.subjects {
            let sub = match &self.route.queue_group {
                Some(q) => {
                    self.client
                        .queue_subscribe(subject.clone(), q.clone())
                        .await
                }
                None => self.client.subscribe(subject.clone()).await,
            };
            match sub {
                Ok(s) => {
                    let pattern: Arc<str> = Arc::from(subject.as_str());
                    subs.push(s.map(move |m| (pattern.clone(), m)).boxed());
                }
                Err(e) => {
                    tracing::error!(source = %self.source, route = %self.route.name, subject, error = %e, "cannot subscribe")
                }
            }
        }
        tracing::info!(source = %self.source, route = %self.route.name, subjects = ?self.route.subjects,
            queue_group = ?self.route.queue_group, "subscribed (core NATS: at-most-once across a crash)");
        loop {
            let Some(permit) = self.slot().await else {
                break;
            };
            let next = tokio::select! {
                m = subs.next() => m,
                _ = self.stop.cancelled() => None,
            };
            let Some((pattern, m)) = next else { break };
            let msg = Message {
                source: self.source.clone(),
                origin: Origin::Nats {
                    subject: m.subject.to_string(),
                    pattern,
                },
                route: Some(Arc::from(self.route.name.as_str())),
                payload: m.payload.to_vec(),
                key: None,
                headers: headers(m.headers.as_ref()),
                timestamp: Some(chrono::Utc::now()),
            };
            self.submit
                .submit(msg, AckHandle::new(CoreAck { _permit: permit }));
        }
        // Unsubscribing happens when the subscribers drop.
    }

    /// JetStream: a durable pull consumer, re-bound after errors (e.g. a server restart).
    async fn jetstream(self, cfg: JetStreamRouteConfig) {
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
            let reporter = tokio::spawn(report_pending(
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
                self.submit.submit(msg, AckHandle::new(ack));
            }
            reporter.abort();
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
            .map_err(|e| format!("stream {}: {e}", cfg.stream))?;
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

fn headers(h: Option<&async_nats::HeaderMap>) -> Vec<(String, Option<Vec<u8>>)> {
    let Some(h) = h else { return Vec::new() };
    let mut out = Vec::new();
    for (name, values) in h.iter() {
        for v in values {
            out.push((name.to_string(), Some(v.as_str().as_bytes().to_vec())));
        }
    }
    out
}
