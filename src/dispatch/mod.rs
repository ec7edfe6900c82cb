//! The engine between a source and Orceum: map, queue per app, push, retry, dead-letter,
//! and acknowledge once the outcome is final.
//!
//! [`Dispatcher::submit`] is called by a source, in source order, for every message. It maps
//! the message synchronously (templates are pure and fast) so per-key order is fixed before
//! anything runs in parallel, then hands each event to its app's [`lane::AppLane`]. Every
//! message ends in exactly one of: acknowledged as final (delivered, dead-lettered, skipped),
//! or abandoned unfinished (shutdown deadline) — never acknowledged early.

pub mod lane;
pub mod outcome;
pub mod retry;
pub mod ticket;

use crate::config::{DeliveryConfig, RateLimitConfig, RetryConfig};
use crate::dead_letter::{DeadLetterRecord, DeadLetterWriter};
use crate::message::{AckHandle, Final, Message, Submit};
use crate::orceum::app::App;
use crate::orceum::client::{OrceumClient, PushResponse};
use crate::orceum::event::Priority;
use crate::route::table::routes_for;
use crate::route::{parse_payload, Mapped, Route};
use crate::telemetry::metrics::Metrics;
use lane::AppLane;
use outcome::{classify, Outcome};
use retry::Backoff;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use ticket::Part;
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One event on its way to Orceum, with what is needed to dead-letter it.
pub struct Job {
    pub route: Arc<Route>,
    pub msg: Arc<Message>,
    pub installation_id: String,
    pub priority: Priority,
    /// The exact bytes signed and sent; shared by every attempt.
    pub body: bytes::Bytes,
    pub part: Part,
}

/// What every delivery needs: the client, the dead-letter sink, metrics, the retry policy and
/// the token that says "abandon what is unfinished".
pub struct DeliveryContext {
    pub client: OrceumClient,
    pub dead_letter: Box<dyn DeadLetterWriter>,
    pub metrics: Arc<Metrics>,
    pub retry: RetryConfig,
    pub abandon: CancellationToken,
    runtime: Handle,
    tasks: TaskTracker,
}

impl DeliveryContext {
    pub fn new(
        client: OrceumClient,
        dead_letter: Box<dyn DeadLetterWriter>,
        metrics: Arc<Metrics>,
        retry: RetryConfig,
        abandon: CancellationToken,
        runtime: Handle,
    ) -> Self {
        Self {
            client,
            dead_letter,
            metrics,
            retry,
            abandon,
            runtime,
            tasks: TaskTracker::new(),
        }
    }

    /// Spawns a tracked task; callable from any thread (the Kafka poll thread is not async).
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn_on(fut, &self.runtime);
    }

    /// Waits until every spawned delivery task has ended.
    pub async fn wait_idle(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Pushes one event until its outcome is final, or until the bridge abandons it.
    async fn deliver(&self, lane: &AppLane, job: Job) {
        let app = &lane.app;
        let mut backoff = Backoff::new(self.retry.initial_backoff, self.retry.max_backoff);
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            if !lane.wait_turn(self).await {
                return; // the part is dropped unfinished: not committed
            }
            attempts += 1;
            let t0 = Instant::now();
            let result = self.client.push(app, job.body.clone()).await;
            match &result {
                Ok(r) if r.status == 200 => lane.metrics.push_ok.inc(),
                Ok(r) => self
                    .metrics
                    .push_requests
                    .with_label_values(&[&app.name, &r.status.to_string()])
                    .inc(),
                Err(_) => self
                    .metrics
                    .push_requests
                    .with_label_values(&[&app.name, "error"])
                    .inc(),
            }
            lane.metrics
                .push_duration
                .observe(t0.elapsed().as_secs_f64());
            match classify(&result, &self.retry.retryable_statuses) {
                Outcome::Delivered => {
                    lane.metrics.delivered(job.priority).inc();
                    if let Some(ts) = job.msg.timestamp {
                        let secs =
                            (chrono::Utc::now() - ts).num_milliseconds().max(0) as f64 / 1000.0;
                        lane.metrics.end_to_end_latency.observe(secs);
                    }
                    job.part.done(Final::Delivered);
                    return;
                }
                Outcome::Retry {
                    after,
                    reason,
                    pause_app,
                } => {
                    self.metrics
                        .retries
                        .with_label_values(&[&app.name, &reason])
                        .inc();
                    // First failure and every 20th: an outage must not flood the logs.
                    let loud = attempts == 1 || attempts % 20 == 0;
                    if reason == "unauthorized" && loud {
                        tracing::error!(app = %app.name, app_id = %app.app_id, route = %job.route.name,
                            source = %job.msg.origin.coordinates(), attempts,
                            "Orceum answered 401: the app's secret or signature is wrong; retrying until the secret is fixed");
                    } else if let (
                        Ok(PushResponse {
                            status,
                            redirect_host: Some(host),
                            ..
                        }),
                        true,
                    ) = (&result, loud)
                    {
                        tracing::error!(app = %app.name, route = %job.route.name, source = %job.msg.origin.coordinates(),
                            attempts, status, location_host = %host,
                            "Orceum answered a redirect, which is never followed (the request carries the secret); fix orceum.base_url; retrying");
                    } else if let (Err(e), true) = (&result, loud) {
                        tracing::warn!(app = %app.name, source = %job.msg.origin.coordinates(), attempts, error = %e, "push failed; will retry");
                    } else {
                        tracing::debug!(app = %app.name, source = %job.msg.origin.coordinates(), attempts, reason = %reason, "push will be retried");
                    }
                    if let Some(limit) = self.retry.max_elapsed {
                        if started.elapsed() >= limit {
                            let (status, excerpt) = match &result {
                                Ok(r) => (Some(r.status), Some(r.excerpt.clone())),
                                Err(_) => (None, None),
                            };
                            let reason = format!(
                                "gave up after {attempts} attempts in {:?} (delivery.retry.max_elapsed); last: {reason}",
                                started.elapsed()
                            );
                            self.dead_letter_job(
                                job,
                                "retries_exhausted",
                                reason,
                                status,
                                excerpt,
                                attempts,
                            )
                            .await;
                            return;
                        }
                    }
                    let delay = match after {
                        Some(after) => after.min(self.retry.max_retry_after),
                        None => backoff.next_delay(),
                    };
                    if pause_app {
                        lane.pause_until(Instant::now() + delay);
                    }
                    job.part.in_progress();
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.abandon.cancelled() => return,
                    }
                }
                Outcome::DeadLetter { kind, reason } => {
                    let (status, excerpt) = match &result {
                        Ok(r) => (Some(r.status), Some(r.excerpt.clone())),
                        Err(_) => (None, None),
                    };
                    self.dead_letter_job(job, &kind, reason, status, excerpt, attempts)
                        .await;
                    return;
                }
                Outcome::Skipped { .. } => {
                    job.part.done(Final::Skipped);
                    return;
                }
            }
        }
    }

    async fn dead_letter_job(
        &self,
        job: Job,
        kind: &str,
        reason: String,
        status: Option<u16>,
        excerpt: Option<String>,
        attempts: u32,
    ) {
        let record = record_for(
            &job.route.name,
            &job.msg,
            kind,
            reason,
            status,
            excerpt,
            attempts,
        );
        self.write_dead_letter(record, job.part).await;
    }

    /// Writes a dead letter, retrying until the destination acknowledges it; only then is the
    /// message final.
    pub async fn write_dead_letter(&self, record: DeadLetterRecord, part: Part) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            match self.dead_letter.write(&record).await {
                Ok(()) => {
                    self.metrics
                        .dead_letters
                        .with_label_values(&[&record.route, &record.kind])
                        .inc();
                    // The log-only sink has already written its own line.
                    if !self.dead_letter.is_log_only() {
                        tracing::warn!(route = %record.route, source = %record.coordinates, kind = %record.kind,
                        reason = %record.reason, status = ?record.status, attempts = record.attempts,
                        destination = %self.dead_letter.describe(), "dead-lettered");
                    }
                    part.done(Final::DeadLettered);
                    return;
                }
                Err(e) => {
                    tracing::error!(route = %record.route, source = %record.coordinates, error = %e,
                        "cannot write the dead letter; the source message stays uncommitted and the write is retried");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = self.abandon.cancelled() => return,
                    }
                }
            }
        }
    }
}

fn record_for(
    route: &str,
    msg: &Message,
    kind: &str,
    reason: String,
    status: Option<u16>,
    excerpt: Option<String>,
    attempts: u32,
) -> DeadLetterRecord {
    DeadLetterRecord {
        route: route.to_string(),
        kind: kind.to_string(),
        reason,
        coordinates: msg.origin.coordinates(),
        status,
        response_excerpt: excerpt.filter(|e| !e.is_empty()),
        attempts,
        key: msg.key.clone(),
        payload: msg.payload.clone(),
        headers: msg.headers.clone(),
    }
}

/// Routes messages from sources to app lanes.
pub struct Dispatcher {
    routes: Vec<Arc<Route>>,
    lanes: HashMap<String, Arc<AppLane>>,
    max_message_bytes: usize,
    ctx: Arc<DeliveryContext>,
}

impl Dispatcher {
    /// One lane per app (with its rate limit, if any) for `routes`.
    pub fn new(
        routes: Vec<Arc<Route>>,
        apps: &BTreeMap<String, App>,
        rate_limits: &BTreeMap<String, RateLimitConfig>,
        delivery: &DeliveryConfig,
        ctx: Arc<DeliveryContext>,
    ) -> Self {
        let lanes = apps
            .values()
            .map(|app| {
                let lane = AppLane::new(
                    app.clone(),
                    rate_limits.get(&app.name).copied(),
                    delivery.ordering,
                    &ctx.metrics,
                );
                (app.name.clone(), Arc::new(lane))
            })
            .collect();
        Self {
            routes,
            lanes,
            max_message_bytes: delivery.max_message_bytes,
            ctx,
        }
    }

    pub fn context(&self) -> &Arc<DeliveryContext> {
        &self.ctx
    }
}

impl Submit for Dispatcher {
    /// Takes one message, in source order; never blocks. The source's in-flight bound is what
    /// keeps the work started here bounded.
    fn submit(&self, msg: Message, ack: AckHandle) {
        let metrics = &self.ctx.metrics;
        metrics
            .messages_received
            .with_label_values(&[&msg.source, msg.origin.channel()])
            .inc();
        let routes: Vec<Arc<Route>> = routes_for(&self.routes, &msg).cloned().collect();
        if routes.is_empty() {
            metrics.skipped.with_label_values(&["", "no_route"]).inc();
            ack.finish(Final::Skipped);
            return;
        }
        let parsed = parse_payload(&msg.payload, self.max_message_bytes);
        let mapped: Vec<Mapped> = routes.iter().map(|r| r.map(&msg, &parsed)).collect();
        drop(parsed);
        let msg = Arc::new(msg);
        let parts = ticket::split(ack, routes.len());
        for ((route, mapped), part) in routes.into_iter().zip(mapped).zip(parts) {
            match mapped {
                Mapped::Event(ev) => {
                    let Some(lane) = self.lanes.get(&route.app) else {
                        // validate() guarantees every route's app exists.
                        unreachable!("route {} names unknown app {}", route.name, route.app)
                    };
                    let job = Job {
                        body: ev.to_body().into(),
                        installation_id: ev.installation_id,
                        priority: ev.priority,
                        route,
                        msg: msg.clone(),
                        part,
                    };
                    lane.enqueue(job, &self.ctx);
                }
                Mapped::Skipped(_reason) => {
                    metrics
                        .skipped
                        .with_label_values(&[&route.name, "filter"])
                        .inc();
                    part.done(Final::Skipped);
                }
                Mapped::Rejected(rej) => {
                    let record = record_for(&route.name, &msg, rej.kind, rej.reason, None, None, 0);
                    let ctx = self.ctx.clone();
                    self.ctx
                        .spawn(async move { ctx.write_dead_letter(record, part).await });
                }
            }
        }
    }
}
