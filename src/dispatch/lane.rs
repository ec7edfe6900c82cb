//! One app's lane: its rate limit, its `Retry-After` pause, and per-key ordering.
//!
//! Lanes are independent: a slow or rate-limited app waits in its own lane and never delays
//! another app's pushes. With `ordering: key`, one installation's events are delivered one at
//! a time in source order — a retry holds the events behind it, it never lets them pass —
//! while other installations proceed in parallel. The queues here hold no more than the
//! source's in-flight bound: every queued job owns one uncommitted source message, and the
//! source pauses when that bound is reached.

use super::{DeliveryContext, Job};
use crate::config::{Ordering, RateLimitConfig};
use crate::orceum::app::App;
use crate::orceum::event::Priority;
use crate::sync::lock;
use crate::telemetry::metrics::Metrics;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use prometheus::{Histogram, IntCounter, IntGauge};
use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

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

pub struct AppLane {
    pub app: App,
    pub metrics: LaneMetrics,
    limiter: Option<DefaultDirectRateLimiter>,
    /// Set by a 429: nobody in this lane pushes before then.
    paused_until: Mutex<Option<Instant>>,
    /// Installations with a worker running, and the jobs waiting behind it.
    keys: Mutex<HashMap<String, VecDeque<Job>>>,
    ordering: Ordering,
}

impl AppLane {
    pub fn new(
        app: App,
        rate_limit: Option<RateLimitConfig>,
        ordering: Ordering,
        metrics: &Metrics,
    ) -> Self {
        let limiter = rate_limit.and_then(|rl| {
            let rate = NonZeroU32::new(rl.per_second)?;
            let burst = rl.burst.and_then(NonZeroU32::new).unwrap_or(rate);
            Some(RateLimiter::direct(
                Quota::per_second(rate).allow_burst(burst),
            ))
        });
        Self {
            metrics: LaneMetrics::new(metrics, &app.name),
            app,
            limiter,
            paused_until: Mutex::new(None),
            keys: Mutex::new(HashMap::new()),
            ordering,
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

    /// Waits for this lane's pause and rate limit. False if the bridge is abandoning work.
    pub async fn wait_turn(&self, ctx: &DeliveryContext) -> bool {
        let started = Instant::now();
        let ok = loop {
            let until = *lock(&self.paused_until);
            if let Some(until) = until.filter(|u| *u > Instant::now()) {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => continue,
                    _ = ctx.abandon.cancelled() => break false,
                }
            }
            if let Some(limiter) = &self.limiter {
                tokio::select! {
                    _ = limiter.until_ready() => {}
                    _ = ctx.abandon.cancelled() => break false,
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

    /// A 429 pauses the whole lane: every event of this app waits until `until`.
    pub fn pause_until(&self, until: Instant) {
        let mut p = lock(&self.paused_until);
        if p.is_none_or(|current| current < until) {
            *p = Some(until);
        }
    }
}
