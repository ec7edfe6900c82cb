//! # orceum-bridge
//!
//! Consumes domain events from Kafka topics, maps each to an Orceum event with jq templates,
//! rate-limits per Orceum app, signs each request with HMAC-SHA256 and pushes it to Orceum's
//! "Push an Event" API — committing a Kafka offset only once every message below it has a final
//! outcome (delivered, dead-lettered or skipped).
//!
//! ## Layout (in the order a message travels)
//! - [`config`] — the YAML contract: structs, `${VAR}` interpolation, secrets, validation.
//! - [`source`] — buses turned into [`source::Message`] + [`source::AckHandle`]
//!   ([`source::kafka`]: consumer group, pause/resume, rebalance-safe commits).
//! - [`route`] — filter and jq templates → [`orceum::event::OrceumEvent`] (pure, no I/O).
//! - [`dispatch`] — per-app lanes (rate limit, `Retry-After` pause, per-key order), retries,
//!   the [`dispatch::outcome::Outcome`] table, acknowledgement once final.
//! - [`orceum`] — the body, its signature, the HTTP client, the local sandbox receiver.
//! - [`dead_letter`] — where undeliverable messages go and what they carry.
//! - [`commit`] — the contiguous-offset tracker.
//! - [`telemetry`] — metrics, `/healthz` `/readyz` `/metrics`, logging.
//! - [`demo`] — the zero-dependency quickstart (mock Kafka cluster + sandbox).
//! - [`render`] — what one sample message would become, for `orceum-bridge render`.
//! - [`replay`] — dead letters re-run through the current config after a fix.
//! - [`probe`] — `check --connect`: the topics, streams and consumers the config names exist.

pub mod commit;
pub mod config;
pub mod dead_letter;
pub mod demo;
pub mod dispatch;
pub mod message;
pub mod orceum;
pub mod probe;
pub mod render;
pub mod replay;
pub mod route;
pub mod source;
pub mod telemetry;

use config::validate::Bridge;
use config::{DeadLetterConfig, SourceConfig};
use dead_letter::DeadLetterSink;
use dispatch::{DeliveryContext, Dispatcher};
use orceum::client::OrceumClient;
use source::kafka::{KafkaSource, Limits};
use source::nats::NatsSource;
use std::sync::Arc;
use std::time::Duration;
use telemetry::health::Readiness;
use telemetry::metrics::Metrics;
use tokio_util::sync::CancellationToken;

/// Why `run` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("observability.listen: cannot listen on {addr}: {source}; pick a free port")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("orceum: {0}")]
    Client(#[from] orceum::client::ClientBuildError),
    #[error("delivery.dead_letter: {0}")]
    DeadLetter(#[from] dead_letter::DeadLetterError),
    #[error(transparent)]
    Kafka(#[from] source::kafka::KafkaSourceError),
    #[error(transparent)]
    Nats(#[from] source::nats::NatsSourceError),
    #[error("a source thread panicked: {0}")]
    SourcePanic(String),
}

/// A running bridge's handles, for tests and the binary.
pub struct Running {
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    pub local_addr: std::net::SocketAddr,
}

/// Runs the bridge until `shutdown` is cancelled, then drains (up to
/// `delivery.shutdown_timeout`), commits what is final, and returns.
pub async fn run(bridge: Bridge, shutdown: CancellationToken) -> Result<(), RunError> {
    run_with(bridge, shutdown, |_| {}).await
}

/// [`run`], calling `started` once the health server listens and the sources are starting.
pub async fn run_with(
    bridge: Bridge,
    shutdown: CancellationToken,
    started: impl FnOnce(&Running),
) -> Result<(), RunError> {
    let bridge = Arc::new(bridge);
    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::default();
    let listen = bridge.observability.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: listen.clone(),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| RunError::Listen {
        addr: listen.clone(),
        source,
    })?;
    let health_stop = CancellationToken::new();
    let health = tokio::spawn(telemetry::health::serve(
        listener,
        metrics.clone(),
        readiness.clone(),
        health_stop.clone(),
    ));

    let client = OrceumClient::with_ca(
        &bridge.orceum.base_url,
        bridge.orceum.timeout,
        bridge.orceum.ca_file.as_deref(),
    )?;
    let dead_letter = dead_letter_sink(&bridge).await?;
    let abandon = CancellationToken::new();
    let ctx = Arc::new(DeliveryContext::new(
        client,
        dead_letter,
        metrics.clone(),
        bridge.delivery.retry.clone(),
        abandon.clone(),
        tokio::runtime::Handle::current(),
    ));
    let dispatcher = Arc::new(Dispatcher::new(bridge.clone(), ctx.clone()));

    let secrets = spawn_secret_refresh(&bridge, shutdown.clone());

    let stop = CancellationToken::new();
    let mut sources: Vec<tokio::task::JoinHandle<Result<(), RunError>>> = Vec::new();
    let d = &bridge.delivery;
    for (name, source) in &bridge.sources {
        let routes: Vec<Arc<route::Route>> = bridge
            .routes
            .iter()
            .filter(|r| &r.source == name)
            .cloned()
            .collect();
        if routes.is_empty() {
            continue;
        }
        match source {
            SourceConfig::Kafka(kc) => {
                let mut topics: Vec<String> = routes
                    .iter()
                    .flat_map(|r| r.topics.iter().cloned())
                    .collect();
                topics.sort();
                topics.dedup();
                let src = KafkaSource {
                    name: Arc::from(name.as_str()),
                    config: kc.clone(),
                    topics,
                    limits: Limits {
                        max_in_flight: d.max_in_flight,
                        max_in_flight_per_partition: d
                            .max_in_flight_per_partition
                            .unwrap_or(d.max_in_flight),
                        commit_interval: d.commit_interval,
                        drain_timeout: d.shutdown_timeout,
                    },
                    submit: dispatcher.clone(),
                    metrics: metrics.clone(),
                    ready: readiness.register(name),
                    stop: stop.clone(),
                    abandon: abandon.clone(),
                };
                let thread = src.spawn();
                sources.push(tokio::task::spawn_blocking(move || match thread.join() {
                    Ok(r) => r.map_err(RunError::from),
                    Err(panic) => Err(RunError::SourcePanic(panic_text(&panic))),
                }));
            }
            SourceConfig::Nats(nc) => {
                let src = NatsSource {
                    name: Arc::from(name.as_str()),
                    metrics: metrics.clone(),
                    config: nc.clone(),
                    routes,
                    max_in_flight: d.max_in_flight,
                    submit: dispatcher.clone(),
                    ready: readiness.register(name),
                    stop: stop.clone(),
                    abandon: abandon.clone(),
                };
                sources.push(tokio::spawn(async move {
                    src.run().await.map_err(RunError::from)
                }));
            }
        }
    }
    started(&Running {
        metrics: metrics.clone(),
        readiness: readiness.clone(),
        local_addr,
    });
    tracing::info!(listen = %local_addr, summary = %bridge.summary(), "orceum-bridge running");

    // Wait for the shutdown signal, or for a source that stopped on its own (a fatal error).
    let mut first_error = None;
    let mut finished = None;
    tokio::select! {
        _ = shutdown.cancelled() => {}
        (res, index, _) = futures::future::select_all(sources.iter_mut()), if !sources.is_empty() => {
            first_error = Some(joined(res));
            finished = Some(index);
        }
    }
    tracing::info!(timeout = ?bridge.delivery.shutdown_timeout, "shutting down: draining in-flight messages");
    stop.cancel();
    let deadline = tokio::time::sleep(bridge.delivery.shutdown_timeout);
    tokio::pin!(deadline);
    let drained = async {
        let mut result = Ok(());
        for (i, j) in sources.iter_mut().enumerate() {
            if finished == Some(i) {
                continue; // already awaited above
            }
            if let Err(e) = joined(j.await) {
                result = Err(e);
            }
        }
        result
    };
    tokio::pin!(drained);
    let sources_result = tokio::select! {
        r = &mut drained => r,
        _ = &mut deadline => {
            // Tell the sources and lanes to give up; the sources commit what is final.
            abandon.cancel();
            drained.await
        }
    };
    abandon.cancel();
    // Delivery tasks end promptly once abandoned (in-flight requests are bounded by the timeout).
    let _ = tokio::time::timeout(
        bridge.orceum.timeout + Duration::from_secs(1),
        ctx.wait_idle(),
    )
    .await;
    secrets.abort();
    health_stop.cancel();
    let _ = health.await;
    tracing::info!("orceum-bridge stopped");
    match first_error {
        Some(Err(e)) => Err(e),
        _ => sources_result,
    }
}

fn joined(r: Result<Result<(), RunError>, tokio::task::JoinError>) -> Result<(), RunError> {
    match r {
        Ok(r) => r,
        Err(e) => Err(RunError::SourcePanic(e.to_string())),
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// The configured dead-letter destination, on the cluster or server of its source.
async fn dead_letter_sink(bridge: &Bridge) -> Result<DeadLetterSink, RunError> {
    let log = DeadLetterSink::Log {
        log_payloads: bridge.observability.log_payloads,
    };
    Ok(match &bridge.delivery.dead_letter {
        Some(DeadLetterConfig::Kafka(k)) => match bridge.sources.get(&k.source) {
            Some(SourceConfig::Kafka(kc)) => DeadLetterSink::kafka(
                &k.source,
                &kc.bootstrap_servers,
                &source::kafka::properties(&k.source, kc)?,
                &k.topic,
            )?,
            _ => log,
        },
        Some(DeadLetterConfig::Nats(n)) => match bridge.sources.get(&n.source) {
            Some(SourceConfig::Nats(nc)) => DeadLetterSink::Nats {
                jetstream: Box::new(async_nats::jetstream::new(
                    source::nats::connect(&n.source, nc, None).await?,
                )),
                subject: n.subject.clone(),
            },
            _ => log,
        },
        None => log,
    })
}

/// Re-reads `{file: …}` secrets every few seconds (Kubernetes rotates mounted Secrets in place).
fn spawn_secret_refresh(
    bridge: &Bridge,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let secrets: Vec<(String, config::secret::AppSecret)> = bridge
        .apps
        .values()
        .filter(|a| a.secret.is_file())
        .map(|a| (a.name.clone(), a.secret.clone()))
        .collect();
    tokio::spawn(async move {
        if secrets.is_empty() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = shutdown.cancelled() => return,
            }
            for (name, secret) in &secrets {
                let s = secret.clone();
                match tokio::task::spawn_blocking(move || s.refresh()).await {
                    Ok(Ok(true)) => {
                        tracing::info!(app = %name, "secret file changed; using the new secret")
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(app = %name, error = %e, "cannot re-read the secret; keeping the previous one")
                    }
                    Err(_) => {}
                }
            }
        }
    })
}
