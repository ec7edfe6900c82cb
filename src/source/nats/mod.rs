//! Everything NATS, in one folder: core subscriptions ([`core`]) and JetStream durable pull
//! consumers ([`jetstream`]) sharing one connection, the dead-letter writer, the
//! `check --connect` probe and the replay reader.
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

pub mod core;
pub mod dead_letter;
pub mod jetstream;
pub mod probe;
pub mod replay;

pub use dead_letter::NatsDeadLetters;

use crate::config::secret::read_plain;
use crate::config::{ConfigError, NatsSourceConfig, RouteConfig};
use crate::message::{AckHandle, Admission, Message, Submit};
use crate::route::Route;
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
        // Counted in messages, not bytes (async-nats's 65,536 default held a gigabyte of large
        // messages): `subscription_capacity` bounds it; past it core NATS drops (logged).
        .subscription_capacity(cfg.subscription_capacity.max(1))
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
    let slow: Arc<std::sync::Mutex<Option<std::time::Instant>>> = Arc::default();
    opts = opts.event_callback(move |event| {
        let ready = ready.clone();
        let name = name.clone();
        let slow_logged = slow.clone();
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
                    // One event per dropped message: say it once every few seconds.
                    let now = std::time::Instant::now();
                    let mut last = crate::sync::lock(&slow_logged);
                    if last.is_none_or(|t| now.duration_since(t) > Duration::from_secs(5)) {
                        *last = Some(now);
                        tracing::error!(source = %name, subscription = sid,
                            "slow consumer: core NATS messages dropped (the subscription buffer, sources.<name>.nats.subscription_capacity, is full; core NATS is at-most-once; use JetStream)")
                    }
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

/// One NATS source: its routes, where messages go, and the shutdown tokens.
pub struct NatsSource {
    pub name: Arc<str>,
    pub metrics: Arc<crate::telemetry::metrics::Metrics>,
    pub config: NatsSourceConfig,
    pub routes: Vec<Arc<Route>>,
    pub max_in_flight: usize,
    /// Each app's held budget (`apps.<name>.max_in_flight`): a JetStream route never pulls
    /// more than its app may hold, so no pulled message waits unprotected for room.
    pub app_budgets: std::collections::BTreeMap<String, usize>,
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
            // JetStream: a slot budget of the route's own (its app's share), on top of the
            // source's; `max_ack_pending` and the pull batch follow it.
            let budget = self
                .app_budgets
                .get(&route.app)
                .copied()
                .unwrap_or(self.max_in_flight)
                .clamp(1, self.max_in_flight.max(1));
            let route_slots = route
                .jetstream
                .as_ref()
                .map(|_| Arc::new(Semaphore::new(budget)));
            let ctx = RouteLoop {
                metrics: self.metrics.clone(),
                source: self.name.clone(),
                route: route.clone(),
                client: client.clone(),
                slots: slots.clone(),
                route_slots,
                submit: self.submit.clone(),
                stop: self.stop.clone(),
                max_in_flight: budget,
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
        // Bounded: with the server gone, a flush waits for a reconnect that may never come.
        if tokio::time::timeout(Duration::from_secs(2), client.flush())
            .await
            .is_err()
        {
            tracing::warn!(source = %self.name, "NATS unreachable at shutdown; acknowledgements not yet sent are redelivered after ack_wait");
        }
        self.ready.store(false, Ordering::Relaxed);
        tracing::info!(source = %self.name, "NATS source stopped");
        Ok(())
    }
}

/// An in-flight slot: the source's, and for a JetStream route its route's; both come back
/// when the message is final (or abandoned).
pub(crate) struct Slot {
    _source: OwnedSemaphorePermit,
    _route: Option<OwnedSemaphorePermit>,
}

/// One route's subscription loop (core or JetStream), sharing its source's connection.
struct RouteLoop {
    metrics: Arc<crate::telemetry::metrics::Metrics>,
    source: Arc<str>,
    route: Arc<Route>,
    client: async_nats::Client,
    slots: Arc<Semaphore>,
    /// JetStream routes: the route's own budget, taken before a source slot.
    route_slots: Option<Arc<Semaphore>>,
    submit: Arc<dyn Submit>,
    stop: CancellationToken,
    max_in_flight: usize,
}

impl RouteLoop {
    /// Hands a message to the engine; while an app it goes to holds its whole budget, waits
    /// (holding this one message and its in-flight slot; a JetStream message keeps getting
    /// in-progress acks) and offers it again. False if the source stops meanwhile (the
    /// handle is then dropped: a JetStream message is nak'd).
    async fn hand_over(&self, msg: Message, ack: AckHandle) -> bool {
        let (mut msg, mut ack) = (msg, ack);
        loop {
            match submit_off_the_runtime(&*self.submit, msg, ack) {
                Admission::Accepted => return true,
                Admission::Full { msg: m, ack: a, .. } => {
                    (msg, ack) = (m, a);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                        _ = self.stop.cancelled() => return false,
                    }
                }
            }
        }
    }

    async fn slot(&self) -> Option<Slot> {
        let route = match &self.route_slots {
            Some(r) => tokio::select! {
                p = r.clone().acquire_owned() => Some(p.ok()?),
                _ = self.stop.cancelled() => return None,
            },
            None => None,
        };
        tokio::select! {
            p = self.slots.clone().acquire_owned() => Some(Slot { _source: p.ok()?, _route: route }),
            _ = self.stop.cancelled() => None,
        }
    }
}

/// Messages at least this large are mapped off the async workers. Not all: measured on
/// JetStream (40,000 small events, `BENCH_BROKER=jetstream scripts/bench`), `block_in_place` for
/// every message cost a quarter of the throughput (19,253–20,621 vs 24,873–25,479 events/s) and
/// 4.15–4.51 vs 3.28–3.36 CPU s per 100,000 events.
const OFF_RUNTIME_BYTES: usize = 64 * 1024;

/// `submit` maps the message through its routes' templates: synchronous work bounded by the
/// message (see `route::budget`), microseconds for a small one. A large message is mapped in
/// `block_in_place` on the multi-threaded runtime, so a slow template holds this task's thread,
/// not an async worker (health, metrics and the other routes keep theirs); small ones skip
/// the hand-off's cost.
fn submit_off_the_runtime(submit: &dyn Submit, msg: Message, ack: AckHandle) -> Admission {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let large = msg.payload.len() >= OFF_RUNTIME_BYTES;
    if large
        && Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
    {
        tokio::task::block_in_place(|| submit.submit(msg, ack))
    } else {
        submit.submit(msg, ack)
    }
}

pub(crate) fn headers(h: Option<&async_nats::HeaderMap>) -> Vec<(String, Option<Vec<u8>>)> {
    let Some(h) = h else { return Vec::new() };
    let mut out = Vec::new();
    for (name, values) in h.iter() {
        for v in values {
            out.push((name.to_string(), Some(v.as_str().as_bytes().to_vec())));
        }
    }
    out
}

/// `check` for a `sources.<name>.nats` entry: URL, credentials, files.
pub fn check_config(
    name: &str,
    n: &NatsSourceConfig,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    let path = format!("sources.{name}.nats");
    if n.url.trim().is_empty() {
        errors.push(ConfigError::new(
            format!("{path}.url"),
            "must name at least one server, e.g. nats://localhost:4222",
        ));
    }
    for (key, secret) in [("token", &n.token), ("password", &n.password)] {
        if let Some(secret) = secret {
            if let Err(e) = read_plain(secret, env) {
                errors.push(ConfigError::new(format!("{path}.{key}"), e.to_string()));
            }
        }
    }
    if n.password.is_some() != n.user.is_some() {
        errors.push(ConfigError::new(
            format!("{path}.user"),
            "user and password go together",
        ));
    }
    for (key, file) in [
        ("credentials_file", &n.credentials_file),
        ("nkey_seed_file", &n.nkey_seed_file),
        (
            "tls.ca_file",
            &n.tls.as_ref().and_then(|t| t.ca_file.clone()),
        ),
        (
            "tls.cert_file",
            &n.tls.as_ref().and_then(|t| t.cert_file.clone()),
        ),
        (
            "tls.key_file",
            &n.tls.as_ref().and_then(|t| t.key_file.clone()),
        ),
    ] {
        if let Some(f) = file {
            if !f.is_file() {
                errors.push(ConfigError::new(
                    format!("{path}.{key}"),
                    format!("{} is not a readable file", f.display()),
                ));
            }
        }
    }
    if let Some(t) = &n.tls {
        if t.cert_file.is_some() != t.key_file.is_some() {
            errors.push(ConfigError::new(
                format!("{path}.tls"),
                "cert_file and key_file go together",
            ));
        }
    }
}

/// `check` for a route on a NATS source: exactly one of core `subjects` or `jetstream`.
pub fn check_route(path: &str, r: &RouteConfig, errors: &mut Vec<ConfigError>) {
    let path = path.to_string();
    if r.topics.is_some() {
        errors.push(ConfigError::new(
            format!("{path}.topics"),
            "a nats source takes `subjects` (core NATS) or `jetstream`, not `topics`",
        ));
    }
    match (&r.subjects, &r.jetstream) {
        (Some(subjects), None) => {
            if subjects.is_empty() {
                errors.push(ConfigError::new(format!("{path}.subjects"), "must list at least one subject, e.g. [\"orders.>\"]"));
            }
            for (j, subject) in subjects.iter().enumerate() {
                if let Err(e) = check_subject(subject, true) {
                    errors.push(ConfigError::new(format!("{path}.subjects[{j}]"), e));
                }
            }
            if let Some(q) = &r.queue_group {
                if check_name(q).is_err() {
                    errors.push(ConfigError::new(format!("{path}.queue_group"), format!("{q:?} must be a single token without spaces, '.', '*' or '>'")));
                }
            }
        }
        (None, Some(js)) => {
            if let Err(e) = check_name(&js.stream) {
                errors.push(ConfigError::new(format!("{path}.jetstream.stream"), e));
            }
            if let Err(e) = check_name(&js.durable) {
                errors.push(ConfigError::new(format!("{path}.jetstream.durable"), e));
            }
            if let Some(f) = &js.filter_subject {
                if let Err(e) = check_subject(f, true) {
                    errors.push(ConfigError::new(format!("{path}.jetstream.filter_subject"), e));
                }
            }
            if r.queue_group.is_some() {
                errors.push(ConfigError::new(format!("{path}.queue_group"), "is for core NATS subjects; JetStream replicas share the durable consumer"));
            }
        }
        _ => errors.push(ConfigError::new(
            path.clone(),
            "a nats route needs exactly one of `subjects: [...]` (core NATS) or `jetstream: { stream, durable }`",
        )),
    }
}

/// A NATS subject: dot-separated non-empty tokens without spaces; `*` as a whole token and
/// `>` as the last token only where wildcards are allowed.
pub fn check_subject(subject: &str, wildcards: bool) -> Result<(), String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(format!(
                "{subject:?} has an empty token; subjects look like orders.created or orders.>"
            ));
        }
        if t.chars().any(char::is_whitespace) {
            return Err(format!("{subject:?} contains whitespace"));
        }
        let wild = *t == "*" || *t == ">";
        if wild && !wildcards {
            return Err(format!("{subject:?}: wildcards are not allowed here"));
        }
        if *t == ">" && i != tokens.len() - 1 {
            return Err(format!("{subject:?}: '>' must be the last token"));
        }
        if !wild && (t.contains('*') || t.contains('>')) {
            return Err(format!("{subject:?}: '*' and '>' must be whole tokens"));
        }
    }
    Ok(())
}

/// A stream, consumer or queue name: one token, no spaces, dots, wildcards or slashes.
/// Why a stream could not be had, with what to do when it does not exist.
pub fn stream_error(stream: &str, e: &async_nats::jetstream::context::GetStreamError) -> String {
    use async_nats::jetstream::context::GetStreamErrorKind;
    use async_nats::jetstream::ErrorCode;
    match e.kind() {
        GetStreamErrorKind::JetStream(js) if js.error_code() == ErrorCode::STREAM_NOT_FOUND => {
            format!("stream {stream:?} does not exist on this server (or this account): create it (`nats stream add {stream} --subjects '…'`, docs/nats.md) or fix the name")
        }
        _ => format!("stream {stream:?}: {e}"),
    }
}

pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        Err(format!(
            "{name:?} must be non-empty, without spaces, '.', '*', '>', '/' or '\\'"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_subjects_and_names_are_checked() {
        assert!(check_subject("orders.>", true).is_ok());
        assert!(check_subject("tasks.*.done", true).is_ok());
        assert!(check_subject("orders.>.x", true).is_err());
        assert!(check_subject("orders..x", true).is_err());
        assert!(check_subject("orders.*", false).is_err());
        assert!(check_subject("ord*ers", true).is_err());
        assert!(check_name("TASKS").is_ok());
        assert!(check_name("my.durable").is_err());
    }
}
