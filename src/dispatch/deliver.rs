//! One event's way to a final outcome: push, classify ([`Outcome`]), wait under the one
//! [`RetryPolicy`] or give up, dead-letter when Orceum rejects it — and only then finish its
//! [`Part`]. An event abandoned at the shutdown deadline drops its part unfinished: never
//! committed.

use super::lane::AppLane;
use super::outcome::{classify, Outcome};
use super::retry::{Next, RetryPolicy};
use super::ticket::Part;
use super::Job;
use crate::config::RetryConfig;

use crate::dead_letter::{DeadLetterRecord, DeadLetterWriter};
use crate::message::{Final, Message};
use crate::orceum::answer::Action;
use crate::orceum::client::OrceumClient;
use crate::telemetry::events::{DeadLetterWriteFailed, DeadLettered, PushRetried};
use crate::telemetry::metrics::Metrics;
use std::future::Future;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every delivery needs: the client, the dead-letter sink, metrics, the retry policy and
/// the token that says "abandon what is unfinished".
pub struct DeliveryContext {
    pub client: OrceumClient,
    pub dead_letter: Box<dyn DeadLetterWriter>,
    pub metrics: Arc<Metrics>,
    pub retry: RetryPolicy,
    /// `delivery.retry.retryable_statuses`: statuses retried on top of 429, 5xx and transport.
    pub retryable_statuses: Vec<u16>,
    pub abandon: CancellationToken,
    /// `orceum.forward_trace_context`: a message's `traceparent`/`tracestate` on its pushes.
    pub forward_trace_context: bool,
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
            retry: RetryPolicy::from_config(&retry),
            retryable_statuses: retry.retryable_statuses,
            abandon,
            forward_trace_context: true,
            runtime,
            tasks: TaskTracker::new(),
        }
    }

    /// Whether pushes carry their message's trace context (on by default).
    pub fn with_trace_forwarding(mut self, on: bool) -> Self {
        self.forward_trace_context = on;
        self
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
    pub(super) async fn deliver(&self, lane: &AppLane, job: Job) {
        let app = &lane.app;
        let mut tries = self.retry.start();
        let mut pushes = 0u32;
        // The bridge giving up, or this message's partition revoked: either way the work
        // stops at its next wait and the part is dropped unfinished (never committed), so a
        // revoked partition leaves no orphan retrying here.
        let stop = job
            .part
            .stop_token()
            .cloned()
            .unwrap_or_else(|| self.abandon.clone());
        let mut probe = None;
        // The message's trace context goes on every attempt, and its trace id on the log lines.
        let trace = job.msg.trace_context();
        let trace_id = trace.map(|t| t.trace_id().to_string());
        let mut trace_headers: Vec<(&'static str, String)> = Vec::new();
        if let (Some(t), true) = (trace, self.forward_trace_context) {
            trace_headers.push(("traceparent", t.traceparent.to_string()));
            if let Some(state) = t.tracestate {
                trace_headers.push(("tracestate", state.to_string()));
            }
        }
        loop {
            if stop.is_cancelled() || !lane.wait_turn(self, &stop).await {
                return; // the part is dropped unfinished: not committed
            }
            probe = match lane.admit(&stop, probe.take()).await {
                Ok(p) => p,
                Err(()) => return,
            };
            // Counted before the last look at `stop`: a revoke that cancels it and then sees no
            // push under way knows none will start (none lands after the hand-over).
            let pushing = job.part.pushing();
            if stop.is_cancelled() {
                return;
            }
            pushes += 1;
            let t0 = Instant::now();
            let result = self
                .client
                .push_with(app, job.body.clone(), &trace_headers)
                .await;
            drop(pushing);
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
            let outcome = classify(&result, &self.retryable_statuses);
            match &outcome {
                Outcome::Delivered | Outcome::Rejected { .. } => lane.answered(),
                Outcome::Transient { .. } => lane.failed(),
                Outcome::Throttled { .. } | Outcome::Unauthorized | Outcome::Redirected { .. } => {}
            }
            if !matches!(outcome, Outcome::Transient { .. }) {
                // Only a transient failure keeps this event the lane's prober.
                probe = None;
            }
            match &outcome {
                Outcome::Delivered => {
                    lane.metrics.delivered(job.priority).inc();
                    // What Orceum did with it, and its id beside the source coordinates: the
                    // one line that ties a bus message to an Orceum support ticket.
                    let answer = result.as_ref().ok().and_then(|r| r.answer.as_ref());
                    let action = answer.map_or(Action::Unknown, |a| a.action);
                    lane.metrics.action(action).inc();
                    tracing::debug!(
                        app = %app.name,
                        coordinates = %job.msg.origin,
                        event_id = answer.and_then(|a| a.event_id.as_deref()),
                        action = action.label(),
                        trace_id = trace_id.as_deref(),
                        "delivered"
                    );
                    if let Some(ts) = job.msg.timestamp {
                        let secs =
                            (chrono::Utc::now() - ts).num_milliseconds().max(0) as f64 / 1000.0;
                        lane.metrics.end_to_end_latency.observe(secs);
                    }
                    job.part.done(Final::Delivered);
                    return;
                }
                Outcome::Rejected { status, excerpt } => {
                    let reason = Outcome::rejection_reason(*status, excerpt);
                    let record = record_for(
                        &job.route.name,
                        &job.msg,
                        &outcome.label(),
                        reason,
                        Some(*status),
                        Some(excerpt.clone()),
                        pushes,
                    );
                    self.write_dead_letter(record, job.part).await;
                    return;
                }
                Outcome::Throttled { .. }
                | Outcome::Transient { .. }
                | Outcome::Unauthorized
                | Outcome::Redirected { .. } => {}
            }
            let label = outcome.label();
            PushRetried {
                app: &app.name,
                app_id: &app.app_id,
                route: &job.route.name,
                coordinates: &job.msg.origin.coordinates(),
                reason: &label,
                attempts: pushes,
                location_host: match &outcome {
                    Outcome::Redirected { host } => Some(host),
                    _ => None,
                },
                error: result.as_ref().err().map(|e| e as &dyn std::fmt::Display),
                trace_id: trace_id.as_deref(),
            }
            .emit(&self.metrics);
            let delay = match tries.failed(outcome.retry_after()) {
                Next::Wait(delay) => delay,
                Next::GiveUp { elapsed } => {
                    let (status, excerpt) = match &result {
                        Ok(r) => (Some(r.status), Some(r.excerpt.clone())),
                        Err(_) => (None, None),
                    };
                    let reason = format!(
                        "gave up after {pushes} attempts in {elapsed:?} (delivery.retry.max_elapsed); last: {label}"
                    );
                    let record = record_for(
                        &job.route.name,
                        &job.msg,
                        "retries_exhausted",
                        reason,
                        status,
                        excerpt,
                        pushes,
                    );
                    self.write_dead_letter(record, job.part).await;
                    return;
                }
            };
            if matches!(outcome, Outcome::Throttled { .. }) {
                // 429: the whole app waits, not only this event.
                lane.pause_until(Instant::now() + delay);
            }
            job.part.in_progress();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Writes a dead letter, retrying until the destination acknowledges it; only then is the
    /// message final.
    pub async fn write_dead_letter(&self, mut record: DeadLetterRecord, part: Part) {
        let mut tries = RetryPolicy::dead_letter_writes().start();
        loop {
            match self.dead_letter.write(&record).await {
                Ok(()) => {
                    // The log-only writer has already written its own line.
                    let destination =
                        (!self.dead_letter.is_log_only()).then(|| self.dead_letter.describe());
                    DeadLettered {
                        route: &record.route,
                        coordinates: &record.coordinates,
                        kind: &record.kind,
                        reason: &record.reason,
                        status: record.status,
                        attempts: record.attempts,
                        destination: destination.as_deref(),
                        trace_id: record.trace_id(),
                    }
                    .emit(&self.metrics);
                    part.done(Final::DeadLettered);
                    return;
                }
                Err(e) if e.too_large && record.truncated.is_none() => {
                    // The whole record can never be written: write its bounded form (the
                    // coordinates, the reason, the first KiBs and the payload's SHA-256).
                    tracing::error!(route = %record.route, coordinates = %record.coordinates, error = %e,
                        bytes = record.payload.len(), "the dead letter is too large for its destination; writing a bounded record instead (orceum.truncated)");
                    record = record.bounded();
                }
                Err(e) => {
                    DeadLetterWriteFailed {
                        route: &record.route,
                        coordinates: &record.coordinates,
                        error: &e,
                    }
                    .emit(&self.metrics);
                    // The dead-letter policy never gives up: the message stays uncommitted.
                    let Next::Wait(delay) = tries.failed(None) else {
                        continue;
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.abandon.cancelled() => return,
                    }
                }
            }
        }
    }
}

pub(super) fn record_for(
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
        truncated: None,
    }
}
