//! The engine between a source and Orceum: map, queue per app, push, retry, dead-letter,
//! and acknowledge once the outcome is final.
//!
//! [`Dispatcher::submit`] is called by a source, in source order, for every message. It maps
//! the message synchronously (templates are pure and fast) so per-key order is fixed before
//! anything runs in parallel, then hands each event to its app's [`lane::AppLane`]. Every
//! message ends in exactly one of: acknowledged as final (delivered, dead-lettered, skipped),
//! or abandoned unfinished (shutdown deadline) — never acknowledged early.

pub mod deliver;
pub mod lane;
pub mod outcome;
pub mod rate;
pub mod retry;
pub mod ticket;
pub mod watch;

pub use deliver::DeliveryContext;

use crate::config::DeliveryConfig;
use crate::message::{AckHandle, Admission, Final, Message, Submit};
use crate::orceum::app::App;
use crate::orceum::event::Priority;
use crate::route::table::routes_for;
use crate::route::{Mapped, Parsed, Route};
use crate::telemetry::events::Skipped;
use deliver::record_for;
use lane::{AppLane, AppLimits};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use ticket::Part;

/// One event on its way to Orceum, with what is needed to dead-letter it.
pub struct Job {
    pub route: Arc<Route>,
    pub msg: Arc<Message>,
    pub installation_id: String,
    pub priority: Priority,
    /// The exact bytes signed and sent; shared by every attempt.
    pub body: bytes::Bytes,
    pub part: Part,
    /// This event's share of its app's budget, released when the job is dropped.
    pub held: lane::Held,
}

/// Routes messages from sources to app lanes.
pub struct Dispatcher {
    routes: Vec<Arc<Route>>,
    lanes: HashMap<String, Arc<AppLane>>,
    max_message_bytes: usize,
    ctx: Arc<DeliveryContext>,
    /// The mappings under way, for the watchdog ([`Dispatcher::run_watchdog`]).
    watch: Arc<watch::Watch>,
    /// Where Kafka sources report their partitions, for each app's share of its rate limit.
    rate_shares: Arc<rate::RateShares>,
    /// The Schema Registry, for routes that read a registry format.
    registry: Option<Arc<crate::format::registry::Registry>>,
}

impl Dispatcher {
    /// One lane per app (with its rate limit, if any) for `routes`.
    pub fn new(
        routes: Vec<Arc<Route>>,
        apps: &BTreeMap<String, App>,
        limits: &BTreeMap<String, AppLimits>,
        delivery: &DeliveryConfig,
        ctx: Arc<DeliveryContext>,
    ) -> Self {
        let lanes: HashMap<String, Arc<AppLane>> = apps
            .values()
            .map(|app| {
                let lane = AppLane::new(
                    app.clone(),
                    limits.get(&app.name).copied().unwrap_or(AppLimits {
                        rate_limit: None,
                        max_in_flight: delivery.max_in_flight,
                        max_in_flight_bytes: delivery.max_in_flight_bytes,
                    }),
                    delivery.ordering,
                    &ctx.metrics,
                );
                (app.name.clone(), Arc::new(lane))
            })
            .collect();
        let rates: BTreeMap<String, Arc<rate::AppRate>> = lanes
            .iter()
            .filter_map(|(name, lane)| lane.rate.clone().map(|r| (name.clone(), r)))
            .collect();
        let mut kafka_feeds: BTreeMap<String, Vec<rate::Feed>> = BTreeMap::new();
        for r in &routes {
            kafka_feeds
                .entry(r.app.clone())
                .or_default()
                .extend(r.topics.iter().map(|t| (r.source.clone(), t.clone())));
        }
        let rate_shares = Arc::new(rate::RateShares::new(&rates, &kafka_feeds));
        Self {
            routes,
            lanes,
            max_message_bytes: delivery.max_message_bytes,
            ctx,
            watch: Arc::default(),
            rate_shares,
            registry: None,
        }
    }

    /// The Schema Registry the routes' formats read schemas from.
    pub fn with_registry(
        mut self,
        registry: Option<Arc<crate::format::registry::Registry>>,
    ) -> Self {
        self.registry = registry;
        self
    }

    /// Where a Kafka source reports the partitions it owns after each rebalance.
    pub fn rate_shares(&self) -> Arc<rate::RateShares> {
        self.rate_shares.clone()
    }

    /// Scans the mappings under way once a second until `stop`: a template running for over
    /// 5 s is logged and counted (`orceum_bridge_templates_stalled`).
    pub async fn run_watchdog(&self, stop: tokio_util::sync::CancellationToken) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => self.watch.scan(&self.ctx.metrics),
                () = stop.cancelled() => return,
            }
        }
    }

    pub fn context(&self) -> &Arc<DeliveryContext> {
        &self.ctx
    }
}

/// `messages_received_total`'s labels for one message.
fn received_labels(msg: &Message) -> [&str; 4] {
    let [topic, subject, stream] = msg.origin.labels();
    [&msg.source, topic, subject, stream]
}

impl Submit for Dispatcher {
    /// Takes one message, in source order; never blocks. The source's in-flight bound is what
    /// keeps the work started here bounded.
    fn submit(&self, msg: Message, ack: AckHandle) -> Admission {
        let metrics = &self.ctx.metrics;
        let routes: Vec<Arc<Route>> = routes_for(&self.routes, &msg).cloned().collect();
        if routes.is_empty() {
            metrics
                .messages_received
                .with_label_values(&received_labels(&msg))
                .inc();
            Skipped {
                route: "",
                reason: "no_route",
            }
            .emit(metrics);
            ack.finish(Final::Skipped);
            return Admission::Accepted;
        }
        // Decoded once per format its routes read (one, nearly always); a schema not cached
        // yet is fetched first, waiting while the registry cannot answer.
        let decoding = crate::format::Decoding {
            registry: self.registry.as_deref(),
            stop: &self.ctx.abandon,
            max_bytes: self.max_message_bytes,
        };
        // The first route's format (nearly always every route's): no allocation.
        let first = &routes[0].format;
        let Ok(parsed) = crate::format::decode_as(&msg, first, &decoding) else {
            // The bridge gives up what is unfinished: not final, not committed.
            return Admission::Accepted;
        };
        let mut others: Vec<(&crate::format::Format, Parsed)> = Vec::new();
        for r in routes.iter().filter(|r| !r.format.same(first)) {
            if !others.iter().any(|(f, _)| f.same(&r.format)) {
                match crate::format::decode_as(&msg, &r.format, &decoding) {
                    Ok(p) => others.push((&r.format, p)),
                    Err(crate::format::registry::Abandoned) => return Admission::Accepted,
                }
            }
        }
        let mapping = self.watch.mapping(&msg.source, &msg.origin);
        let mapped: Vec<Mapped> = routes
            .iter()
            .map(|r| {
                let parsed = if r.format.same(first) {
                    &parsed
                } else {
                    others
                        .iter()
                        .find(|(f, _)| f.same(&r.format))
                        .map_or(&parsed, |(_, p)| p)
                };
                r.map(&msg, parsed)
            })
            .collect();
        drop(others);
        drop(parsed);
        drop(mapping);
        // Admission after mapping: only the apps this message really goes to (a filter may
        // send it nowhere) decide whether it may come in. All or nothing, so a message is
        // never half taken.
        for (route, mapped) in routes.iter().zip(&mapped) {
            if let (Mapped::Event(_), Some(lane)) = (mapped, self.lanes.get(&route.app)) {
                if !lane.budget.has_room() {
                    return Admission::Full {
                        msg,
                        ack,
                        app: Arc::from(route.app.as_str()),
                    };
                }
            }
        }
        metrics
            .messages_received
            .with_label_values(&received_labels(&msg))
            .inc();
        let bytes = msg.payload.len();
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
                        held: lane.budget.hold(bytes),
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
        Admission::Accepted
    }
}
