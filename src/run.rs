//! The running bridge: wiring and the two-phase shutdown.
//!
//! [`run`] starts the health server, builds the client, the dead-letter writer and the
//! dispatcher, starts one task (NATS) or thread (Kafka) per source, and waits for the shutdown
//! signal or a source's fatal error. Shutdown has two phases: `stop` (sources stop fetching and
//! drain, committing what is final) and, at `delivery.shutdown_timeout`, `abandon` (what is
//! unfinished is given up: never committed, nak'd on JetStream). Every task started here is
//! awaited or stopped before `run` returns.

use crate::build::Bridge;
use crate::config::{DeadLetterConfig, SourceConfig};
use crate::dead_letter::{DeadLetterWriter, LogOnly};
use crate::dispatch::{DeliveryContext, Dispatcher};
use crate::orceum::client::OrceumClient;
use crate::source::kafka::{KafkaDeadLetters, KafkaSource, Limits};
use crate::source::nats::{NatsDeadLetters, NatsSource};
use crate::telemetry::health::Readiness;
use crate::telemetry::metrics::Metrics;
use crate::{lookup, orceum, route, source, telemetry};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long sources get, after the drain deadline, to commit what is final and stop.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Why `run` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The cause is in the message, not chained (an error chain would print it twice).
    #[error("observability.listen: cannot listen on {addr}: {error}; pick a free port")]
    Listen { addr: String, error: std::io::Error },
    #[error("orceum: {0}")]
    Client(#[from] orceum::client::ClientBuildError),
    #[error(transparent)]
    Kafka(#[from] source::kafka::KafkaSourceError),
    #[error(transparent)]
    Nats(#[from] source::nats::NatsSourceError),
    #[error("a source thread panicked: {0}")]
    SourcePanic(String),
    #[error(transparent)]
    Lookup(#[from] lookup::LookupError),
    #[error("{0}")]
    Registry(String),
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
    initialise_metrics(&metrics, &bridge);
    let readiness = Readiness::default();
    let listen = bridge.observability.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|error| RunError::Listen {
            addr: listen.clone(),
            error,
        })?;
    let local_addr = listener.local_addr().map_err(|error| RunError::Listen {
        addr: listen.clone(),
        error,
    })?;
    let health_stop = CancellationToken::new();
    let health = tokio::spawn(telemetry::health::serve(
        listener,
        metrics.clone(),
        readiness.clone(),
        health_stop.clone(),
    ));

    let client = OrceumClient::build(
        &bridge.orceum.base_url,
        bridge.orceum.timeout,
        bridge.orceum.ca_file.as_deref(),
        bridge.orceum.http2_prior_knowledge,
        bridge.proxy.as_ref(),
    )?;
    let dead_letter = dead_letter_sink(&bridge).await?;
    let abandon = CancellationToken::new();
    let ctx = Arc::new(
        DeliveryContext::new(
            client,
            dead_letter,
            metrics.clone(),
            bridge.delivery.retry.clone(),
            abandon.clone(),
            tokio::runtime::Handle::current(),
        )
        .with_trace_forwarding(bridge.orceum.forward_trace_context),
    );
    let registry = match &bridge.schema_registry {
        Some(settings) => {
            let errors = metrics
                .schema_registry_errors
                .with_label_values(&[&settings.url]);
            Some(Arc::new(
                crate::format::registry::Registry::start(settings.clone(), errors)
                    .map_err(RunError::Registry)?,
            ))
        }
        None => None,
    };
    let dispatcher = Arc::new(
        Dispatcher::new(
            bridge.routes.clone(),
            &bridge.apps,
            &bridge.app_limits,
            &bridge.delivery,
            ctx.clone(),
        )
        .with_registry(registry),
    );

    let lookup_stop = CancellationToken::new();
    // Only the tables some route reads are followed (and waited for by `/readyz`).
    let used = bridge
        .lookups
        .only(bridge.routes.iter().flat_map(|r| r.lookups()));
    for l in used.iter() {
        let shown = l.clone();
        let flag = readiness.register_noted(
            &format!("lookup {}", l.name),
            Arc::new(move || shown.status()),
        );
        l.attach(flag, metrics.clone());
    }
    let lookups = lookup::spawn_all(&used, &bridge.sources, metrics.clone(), lookup_stop.clone());

    let secrets = spawn_secret_refresh(&bridge, shutdown.clone());
    let watchdog = {
        let (dispatcher, stop) = (dispatcher.clone(), health_stop.clone());
        tokio::spawn(async move { dispatcher.run_watchdog(stop).await })
    };

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
        // No event is mapped against a half-loaded table: a source whose routes read a
        // lookup starts once the table has caught up.
        let needs: Vec<Arc<lookup::Lookup>> = routes
            .iter()
            .flat_map(|r| r.lookups())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter_map(|n| bridge.lookups.get(n).cloned())
            .collect();
        let tables_ready = {
            let (stop, name) = (stop.clone(), name.clone());
            async move {
                if needs.is_empty() {
                    return Ok(true);
                }
                let names: Vec<&str> = needs.iter().map(|l| l.name.as_str()).collect();
                tracing::info!(source = %name, lookups = ?names, "source waits for its lookup tables to catch up before it consumes");
                for l in &needs {
                    if !l.wait_ready(&stop).await? {
                        return Ok(false);
                    }
                }
                tracing::info!(source = %name, "lookup tables ready: source starts");
                Ok::<bool, RunError>(true)
            }
        };
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
                        max_in_flight_bytes: d.max_in_flight_bytes,
                        max_in_flight_per_partition: d
                            .max_in_flight_per_partition
                            .unwrap_or(d.max_in_flight),
                        max_uncommitted_per_partition: d.max_uncommitted_per_partition,
                        commit_interval: d.commit_interval,
                        drain_timeout: d.shutdown_timeout,
                        push_grace: bridge.orceum.timeout + Duration::from_secs(1),
                    },
                    submit: dispatcher.clone(),
                    metrics: metrics.clone(),
                    ready: readiness.register(name),
                    stop: stop.clone(),
                    abandon: abandon.clone(),
                    rate_shares: dispatcher.rate_shares(),
                };
                sources.push(tokio::spawn(async move {
                    if !tables_ready.await? {
                        return Ok(());
                    }
                    let thread = src.spawn();
                    joined(
                        tokio::task::spawn_blocking(move || match thread.join() {
                            Ok(r) => r.map_err(RunError::from),
                            Err(panic) => Err(RunError::SourcePanic(panic_text(&panic))),
                        })
                        .await,
                    )
                }));
            }
            SourceConfig::Nats(nc) => {
                let src = NatsSource {
                    name: Arc::from(name.as_str()),
                    metrics: metrics.clone(),
                    config: nc.clone(),
                    routes,
                    max_in_flight: d.max_in_flight,
                    app_budgets: bridge
                        .app_limits
                        .iter()
                        .map(|(app, l)| (app.clone(), l.max_in_flight))
                        .collect(),
                    submit: dispatcher.clone(),
                    ready: readiness.register(name),
                    stop: stop.clone(),
                    abandon: abandon.clone(),
                };
                sources.push(tokio::spawn(async move {
                    if !tables_ready.await? {
                        return Ok(());
                    }
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
            // Tell the sources and lanes to give up; the sources commit what is final. Bounded
            // too: a source stuck on an unreachable broker (a commit to a dead coordinator, a
            // NATS reconnect) must not keep the process from exiting.
            abandon.cancel();
            match tokio::time::timeout(STOP_GRACE, &mut drained).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::error!(grace = ?STOP_GRACE, "sources did not stop within the grace after the drain deadline (a broker unreachable?); exiting without them: what they had not committed is redelivered");
                    Ok(())
                }
            }
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
    lookup_stop.cancel();
    // Bounded: a Kafka follower may sit in a metadata request to an unreachable broker.
    let _ = tokio::time::timeout(STOP_GRACE, futures::future::join_all(lookups)).await;
    health_stop.cancel();
    let _ = health.await;
    let _ = watchdog.await;
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
async fn dead_letter_sink(bridge: &Bridge) -> Result<Box<dyn DeadLetterWriter>, RunError> {
    let log = Box::new(LogOnly {
        log_payloads: bridge.observability.log_payloads,
    });
    Ok(match &bridge.delivery.dead_letter {
        Some(DeadLetterConfig::Kafka(k)) => match bridge.sources.get(&k.source) {
            Some(SourceConfig::Kafka(kc)) => {
                Box::new(KafkaDeadLetters::new(&k.source, kc, &k.topic)?)
            }
            _ => log,
        },
        Some(DeadLetterConfig::Nats(n)) => match bridge.sources.get(&n.source) {
            Some(SourceConfig::Nats(nc)) => Box::new(NatsDeadLetters::new(
                source::nats::connect(&n.source, nc, None).await?,
                &n.subject,
            )),
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
    let secrets: Vec<(String, orceum::app::AppSecret)> = bridge
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

/// The counters of every app, route and source of this config, at 0 before the first event.
fn initialise_metrics(metrics: &Metrics, bridge: &Bridge) {
    let apps: Vec<&str> = bridge.apps.keys().map(String::as_str).collect();
    let routes: Vec<&str> = bridge.routes.iter().map(|r| r.name.as_str()).collect();
    let mut channels: Vec<[&str; 4]> = Vec::new();
    for r in &bridge.routes {
        let source = r.source.as_str();
        match &r.jetstream {
            Some(js) => channels.push([source, "", "", js.stream.as_str()]),
            None => {
                channels.extend(r.topics.iter().map(|t| [source, t.as_str(), "", ""]));
                channels.extend(r.subjects.iter().map(|s| [source, "", s.as_str(), ""]));
            }
        }
    }
    let sources: Vec<&str> = bridge.sources.keys().map(String::as_str).collect();
    let kafka_sources: Vec<&str> = bridge
        .sources
        .iter()
        .filter(|(_, s)| matches!(s, SourceConfig::Kafka(_)))
        .map(|(n, _)| n.as_str())
        .collect();
    metrics.initialise(&telemetry::metrics::Known {
        channels: &channels,
        apps: &apps,
        routes: &routes,
        sources: &sources,
        kafka_sources: &kafka_sources,
    });
}
