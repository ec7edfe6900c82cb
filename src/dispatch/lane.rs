//! One app's lane: its rate limit, its `Retry-After` pause, and per-key ordering.
//!
//! Lanes are independent: a slow or rate-limited app waits in its own lane and never delays
//! another app's pushes. With `ordering: key`, one installation's events are delivered one at
//! a time in source order — a retry holds the events behind it, it never lets them pass —
//! while other installations proceed in parallel. The queues here hold no more than the
//! source's in-flight bound: every queued job owns one uncommitted source message, and the
//! source pauses when that bound is reached.

use super::rate::AppRate;
use super::{DeliveryContext, Job};
use crate::config::{Ordering, RateLimitConfig};
use crate::orceum::answer::Action;
use crate::orceum::app::App;
use crate::orceum::event::Priority;
use crate::sync::lock;
use crate::telemetry::metrics::Metrics;
use prometheus::{Histogram, IntCounter, IntGauge};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// This app's series of the per-event metrics, looked up once: every event touches them, and
/// a labelled lookup hashes the labels and takes a lock each time.
pub struct LaneMetrics {
    pub in_flight: IntGauge,
    pub push_duration: Histogram,
    /// `push_requests_total{status="200"}`; other statuses are looked up when they happen.
    pub push_ok: IntCounter,
    /// `events_delivered_total` by priority, in [`Priority::ALL`] order.
    delivered: [IntCounter; 4],
    pub end_to_end_latency: Histogram,
    /// `app_probing`: 1 while the lane sends one probe at a time.
    pub probing: IntGauge,
    /// `orceum_actions_total` by action, in [`Action::ALL`] order.
    actions: [IntCounter; 5],
}

impl LaneMetrics {
    fn new(metrics: &Metrics, app: &str) -> Self {
        Self {
            in_flight: metrics.in_flight.with_label_values(&[app]),
            push_duration: metrics.push_duration.with_label_values(&[app]),
            push_ok: metrics.push_requests.with_label_values(&[app, "200"]),
            delivered: Priority::ALL.map(|p| {
                metrics
                    .events_delivered
                    .with_label_values(&[app, p.as_str()])
            }),
            end_to_end_latency: metrics.end_to_end_latency.with_label_values(&[app]),
            probing: metrics.app_probing.with_label_values(&[app]),
            actions: Action::ALL
                .map(|a| metrics.orceum_actions.with_label_values(&[app, a.label()])),
        }
    }

    pub fn action(&self, action: Action) -> &IntCounter {
        match action {
            Action::Notified => &self.actions[0],
            Action::ConversationStarted => &self.actions[1],
            Action::Queued => &self.actions[2],
            Action::Ignored => &self.actions[3],
            Action::Unknown => &self.actions[4],
        }
    }

    pub fn delivered(&self, priority: Priority) -> &IntCounter {
        match priority {
            Priority::Low => &self.delivered[0],
            Priority::Normal => &self.delivered[1],
            Priority::High => &self.delivered[2],
            Priority::Critical => &self.delivered[3],
        }
    }
}

/// What one app's lane may do and hold.
#[derive(Debug, Clone, Copy)]
pub struct AppLimits {
    pub rate_limit: Option<RateLimitConfig>,
    /// Events held at once (queued, rate-limited, retrying).
    pub max_in_flight: usize,
    /// The same in payload bytes.
    pub max_in_flight_bytes: usize,
}

/// What the lane holds now, against its [`AppLimits`].
#[derive(Debug, Default)]
pub struct Budget {
    max: usize,
    max_bytes: usize,
    held: AtomicUsize,
    held_bytes: AtomicUsize,
}

impl Budget {
    /// Room for one more event (of any size: one may go over the byte budget, as a message
    /// is never split).
    pub fn has_room(&self) -> bool {
        self.held.load(AtomicOrdering::Acquire) < self.max
            && self.held_bytes.load(AtomicOrdering::Acquire) < self.max_bytes
    }

    /// Counts one event of `bytes` as held until the guard drops (the event is final, or
    /// given up).
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Held {
        self.held.fetch_add(1, AtomicOrdering::AcqRel);
        self.held_bytes.fetch_add(bytes, AtomicOrdering::AcqRel);
        Held {
            budget: self.clone(),
            bytes,
        }
    }

    pub fn held(&self) -> usize {
        self.held.load(AtomicOrdering::Acquire)
    }
}

/// One held event's share of its app's budget.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(1, AtomicOrdering::AcqRel);
        self.budget
            .held_bytes
            .fetch_sub(self.bytes, AtomicOrdering::AcqRel);
    }
}

/// After this many transient failures in a row, an app's lane sends one probe at a time.
pub const PROBE_AFTER_FAILURES: u32 = 5;

/// The lane's circuit: closed (everyone pushes), or probing (one event at a time, the others
/// wait for it to get through).
#[derive(Debug, Default)]
struct Circuit {
    failures: u32,
    probing: bool,
    /// A prober is out (only while `probing`).
    prober: bool,
}

/// The right to push while the lane is probing; dropping it lets the next event probe.
pub struct ProbeGuard<'a> {
    lane: &'a AppLane,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        lock(&self.lane.circuit).prober = false;
        self.lane.circuit_changed.notify_waiters();
    }
}

pub struct AppLane {
    pub app: App,
    pub metrics: LaneMetrics,
    /// This replica's share of the app's `rate_limit` (`None`: no limit).
    pub rate: Option<Arc<AppRate>>,
    /// Set by a 429: nobody in this lane pushes before then.
    paused_until: Mutex<Option<Instant>>,
    /// Installations with a worker running, and the jobs waiting behind it.
    keys: Mutex<HashMap<String, VecDeque<Job>>>,
    ordering: Ordering,
    circuit: Mutex<Circuit>,
    circuit_changed: tokio::sync::Notify,
    pub budget: Arc<Budget>,
}

impl AppLane {
    pub fn new(app: App, limits: AppLimits, ordering: Ordering, metrics: &Metrics) -> Self {
        let rate = limits.rate_limit.filter(|rl| rl.per_second > 0).map(|rl| {
            let gauge = metrics
                .rate_limit_per_second
                .with_label_values(&[&app.name]);
            Arc::new(AppRate::new(&app.name, rl, gauge))
        });
        Self {
            metrics: LaneMetrics::new(metrics, &app.name),
            app,
            rate,
            paused_until: Mutex::new(None),
            keys: Mutex::new(HashMap::new()),
            ordering,
            circuit: Mutex::new(Circuit::default()),
            circuit_changed: tokio::sync::Notify::new(),
            budget: Arc::new(Budget {
                max: limits.max_in_flight.max(1),
                max_bytes: limits.max_in_flight_bytes.max(1),
                ..Budget::default()
            }),
        }
    }

    /// Takes a job without waiting: starts a worker for it, or queues it behind the running
    /// worker of the same installation. Called in source order, so queue order = source order.
    pub fn enqueue(self: &Arc<Self>, job: Job, ctx: &Arc<DeliveryContext>) {
        self.metrics.in_flight.inc();
        if self.ordering == Ordering::None {
            let (lane, ctx2) = (self.clone(), ctx.clone());
            ctx.spawn(async move {
                lane.deliver(&ctx2, job).await;
            });
            return;
        }
        let key = job.installation_id.clone();
        {
            let mut keys = lock(&self.keys);
            if let Some(queue) = keys.get_mut(&key) {
                queue.push_back(job);
                return;
            }
            keys.insert(key.clone(), VecDeque::new());
        }
        let (lane, ctx2) = (self.clone(), ctx.clone());
        ctx.spawn(async move {
            let mut job = job;
            loop {
                lane.deliver(&ctx2, job).await;
                match lane.next_for(&key) {
                    Some(next) => job = next,
                    None => break,
                }
            }
        });
    }

    fn next_for(&self, key: &str) -> Option<Job> {
        let mut keys = lock(&self.keys);
        let queue = keys.get_mut(key)?;
        match queue.pop_front() {
            Some(job) => Some(job),
            None => {
                keys.remove(key);
                None
            }
        }
    }

    async fn deliver(&self, ctx: &DeliveryContext, job: Job) {
        ctx.deliver(self, job).await;
        self.metrics.in_flight.dec();
    }

    /// Waits for this lane's pause and rate limit. False once `stop` is cancelled (the bridge
    /// abandons work, or the event's partition was revoked).
    pub async fn wait_turn(&self, ctx: &DeliveryContext, stop: &CancellationToken) -> bool {
        let started = Instant::now();
        let ok = loop {
            let until = *lock(&self.paused_until);
            if let Some(until) = until.filter(|u| *u > Instant::now()) {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => continue,
                    _ = stop.cancelled() => break false,
                }
            }
            if let Some(rate) = &self.rate {
                tokio::select! {
                    _ = rate.until_ready() => {}
                    _ = stop.cancelled() => break false,
                }
            }
            // A 429 may have paused the lane while this event waited for the limiter.
            if lock(&self.paused_until).is_some_and(|u| u > Instant::now()) {
                continue;
            }
            break true;
        };
        let waited = started.elapsed().as_secs_f64();
        if waited > 0.0 {
            ctx.metrics
                .rate_limit_wait
                .with_label_values(&[&self.app.name])
                .inc_by(waited);
        }
        ok
    }

    /// While the lane probes, waits until this event may push: as the one prober (the guard,
    /// kept across its retries), or once the lane has closed again (`None`). `Err` once `stop`
    /// is cancelled. A failing app thus sees one request per backoff step, not one per held
    /// event; a recovering one sees a trickle before it gets everything.
    pub async fn admit<'a>(
        &'a self,
        stop: &CancellationToken,
        held: Option<ProbeGuard<'a>>,
    ) -> Result<Option<ProbeGuard<'a>>, ()> {
        if held.is_some() {
            return Ok(held);
        }
        loop {
            let changed = self.circuit_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut c = lock(&self.circuit);
                if !c.probing {
                    return Ok(None);
                }
                if !c.prober {
                    c.prober = true;
                    return Ok(Some(ProbeGuard { lane: self }));
                }
            }
            tokio::select! {
                _ = changed => {}
                _ = stop.cancelled() => return Err(()),
            }
        }
    }

    /// Orceum answered (2xx, or a final 4xx): the app is reachable; a probing lane closes.
    pub fn answered(&self) {
        let mut c = lock(&self.circuit);
        c.failures = 0;
        if c.probing {
            c.probing = false;
            drop(c);
            self.metrics.probing.set(0);
            tracing::info!(app = %self.app.name, "Orceum answers again: the app's lane resumes at full concurrency");
            self.circuit_changed.notify_waiters();
        }
    }

    /// A transient failure (5xx, timeout, connection error): enough in a row open the probe.
    pub fn failed(&self) {
        let mut c = lock(&self.circuit);
        c.failures = c.failures.saturating_add(1);
        if !c.probing && c.failures >= PROBE_AFTER_FAILURES {
            c.probing = true;
            let failures = c.failures;
            drop(c);
            self.metrics.probing.set(1);
            tracing::warn!(app = %self.app.name, failures,
                "Orceum keeps failing for this app: sending one probe at a time until it answers");
        }
    }

    /// A 429 pauses the whole lane: every event of this app waits until `until`.
    pub fn pause_until(&self, until: Instant) {
        let mut p = lock(&self.paused_until);
        if p.is_none_or(|current| current < until) {
            *p = Some(until);
        }
    }
}
