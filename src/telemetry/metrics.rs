//! The Prometheus metrics of the bridge, all prefixed `orceum_bridge_`.
//!
//! One [`Metrics`] per process, registered in its own registry (no global state, so tests can
//! run several bridges in one process). Label values are bounded: apps, routes, topics,
//! partitions, status codes and reason kinds — never installation ids or event ids.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub messages_received: IntCounterVec,
    pub events_delivered: IntCounterVec,
    pub push_requests: IntCounterVec,
    pub push_duration: HistogramVec,
    pub retries: IntCounterVec,
    pub dead_letters: IntCounterVec,
    pub skipped: IntCounterVec,
    pub rate_limit_wait: prometheus::CounterVec,
    pub in_flight: IntGaugeVec,
    pub app_probing: IntGaugeVec,
    pub uncommitted: IntGaugeVec,
    pub committed_offset: IntGaugeVec,
    pub consumer_lag: IntGaugeVec,
    pub assigned_partitions: IntGaugeVec,
    pub source_ready: IntGaugeVec,
    pub jetstream_pending: IntGaugeVec,
    pub jetstream_ack_pending: IntGaugeVec,
    pub end_to_end_latency: HistogramVec,
    pub commit_failures: IntCounterVec,
    pub offset_map_skipped: IntCounterVec,
    pub partitions_held_by_app: IntGaugeVec,
    pub templates_stalled: IntGaugeVec,
    pub last_commit_latency: Histogram,
    pub lookup_entries: IntGaugeVec,
    pub lookup_updates: IntCounterVec,
    pub lookup_ready: IntGaugeVec,
    pub lookup_refused: IntCounterVec,
    pub lookup_last_update_age: prometheus::GaugeVec,
    pub lookup_stale: prometheus::GaugeVec,
    pub orceum_actions: IntCounterVec,
    pub dead_letter_write_failures: IntCounterVec,
    pub rate_limit_per_second: prometheus::GaugeVec,
    pub schema_registry_errors: IntCounterVec,
}

fn float_gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
    let g = prometheus::GaugeVec::new(Opts::new(format!("orceum_bridge_{name}"), help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
    let _ = r.register(Box::new(g.clone()));
    g
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(format!("orceum_bridge_{name}"), help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
    let _ = r.register(Box::new(c.clone()));
    c
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(format!("orceum_bridge_{name}"), help), labels)
        .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
    let _ = r.register(Box::new(g.clone()));
    g
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(format!("orceum_bridge_{name}"), help).buckets(buckets),
        labels,
    )
    .unwrap_or_else(|e| unreachable!("static metric definition {name}: {e}"));
    let _ = r.register(Box::new(h.clone()));
    h
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let latency = vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
        ];
        let build = gauge(
            &r,
            "build_info",
            "Build information; always 1.",
            &["version", "revision"],
        );
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::REVISION])
            .set(1);
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, … (Linux).
        #[cfg(target_os = "linux")]
        let _ = r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));
        let rate_limit_wait = prometheus::CounterVec::new(
            Opts::new(
                "orceum_bridge_rate_limit_wait_seconds_total",
                "Seconds events waited for their app's rate limit or Retry-After pause.",
            ),
            &["app"],
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let _ = r.register(Box::new(rate_limit_wait.clone()));
        let uncommitted = gauge(
            &r,
            "uncommitted_messages",
            "Messages of a Kafka source read and not yet committed (bounded per partition by delivery.max_uncommitted_per_partition).",
            &["source"],
        );
        let last_commit_latency = Histogram::with_opts(
            HistogramOpts::new(
                "orceum_bridge_commit_duration_seconds",
                "Time taken by one offset commit.",
            )
            .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
        )
        .unwrap_or_else(|e| unreachable!("static metric definition: {e}"));
        let _ = r.register(Box::new(last_commit_latency.clone()));
        Self {
            messages_received: counter(
                &r,
                "messages_received_total",
                "Messages read from a source: Kafka by topic, core NATS by subscription subject, JetStream by stream (the other labels empty).",
                &["source", "topic", "subject", "stream"],
            ),
            events_delivered: counter(
                &r,
                "events_delivered_total",
                "Events Orceum accepted (2xx).",
                &["app", "priority"],
            ),
            push_requests: counter(
                &r,
                "push_requests_total",
                "Push requests by HTTP status code (\"error\" for no response).",
                &["app", "code"],
            ),
            push_duration: histogram(
                &r,
                "push_duration_seconds",
                "Duration of one push request.",
                &["app"],
                latency.clone(),
            ),
            retries: counter(
                &r,
                "retries_total",
                "Push attempts that will be retried, by reason.",
                &["app", "reason"],
            ),
            dead_letters: counter(
                &r,
                "dead_letters_total",
                "Messages dead-lettered, by reason.",
                &["route", "reason"],
            ),
            skipped: counter(
                &r,
                "skipped_total",
                "Messages committed without a push (filter false, no route).",
                &["route", "reason"],
            ),
            rate_limit_wait,
            app_probing: gauge(
                &r,
                "app_probing",
                "1 while the app's lane sends one probe at a time after repeated transient failures.",
                &["app"],
            ),
            in_flight: gauge(
                &r,
                "in_flight_events",
                "Events waiting for or in a push, per app.",
                &["app"],
            ),
            uncommitted,
            committed_offset: gauge(
                &r,
                "kafka_committed_offset",
                "Last committed offset of a partition this member owns (removed on revoke).",
                &["source", "topic", "partition"],
            ),
            consumer_lag: gauge(
                &r,
                "kafka_consumer_lag_messages",
                "High watermark minus committed offset, of a partition this member owns.",
                &["source", "topic", "partition"],
            ),
            source_ready: gauge(
                &r,
                "source_ready",
                "1 when the source is connected (what /readyz checks), else 0.",
                &["source"],
            ),
            assigned_partitions: gauge(
                &r,
                "kafka_assigned_partitions",
                "Partitions this member owns.",
                &["source"],
            ),
            jetstream_pending: gauge(
                &r,
                "jetstream_pending_messages",
                "Messages in the stream not yet delivered to the consumer.",
                &["stream", "consumer"],
            ),
            jetstream_ack_pending: gauge(
                &r,
                "jetstream_ack_pending_messages",
                "Messages delivered to the consumer and not yet acknowledged.",
                &["stream", "consumer"],
            ),
            end_to_end_latency: histogram(
                &r,
                "end_to_end_latency_seconds",
                "From the source timestamp to Orceum's 2xx.",
                &["app"],
                latency,
            ),
            partitions_held_by_app: gauge(
                &r,
                "kafka_partitions_held_by_app",
                "Partitions paused because their next message is for an app that holds its whole in-flight budget.",
                &["source", "app"],
            ),
            templates_stalled: gauge(
                &r,
                "templates_stalled",
                "Messages whose templates have been mapping for over 5 s (their source waits meanwhile).",
                &["source"],
            ),
            offset_map_skipped: counter(
                &r,
                "offset_map_skipped_total",
                "Messages read again after a restart or rebalance that the last commit's offset map named final: skipped, not pushed again.",
                &["source"],
            ),
            commit_failures: counter(
                &r,
                "commit_failures_total",
                "Offset commits that failed (retried on the next commit).",
                &["source"],
            ),
            last_commit_latency,
            lookup_entries: gauge(
                &r,
                "lookup_entries",
                "Keys held by a lookup table.",
                &["lookup"],
            ),
            lookup_updates: counter(
                &r,
                "lookup_updates_total",
                "Updates (puts and deletes) applied to a lookup table from its source.",
                &["lookup"],
            ),
            lookup_ready: gauge(
                &r,
                "lookup_ready",
                "1 once a lookup table has caught up with its source (routes that use it wait until then).",
                &["lookup"],
            ),
            lookup_refused: counter(
                &r,
                "lookup_refused_total",
                "Updates a lookup table did not apply: over max_entries / max_bytes, a key or value too big, no UTF-8 key, a value neither JSON nor text.",
                &["lookup", "reason"],
            ),
            lookup_last_update_age: float_gauge(
                &r,
                "lookup_last_update_age_seconds",
                "Seconds since a lookup table last applied an update (0 before the first).",
                &["lookup"],
            ),
            lookup_stale: float_gauge(
                &r,
                "lookup_stale_seconds",
                "Seconds since a lookup table was last known to be in step with its source: a few seconds while the source answers; grows while it is down (the table keeps answering from what it has).",
                &["lookup"],
            ),
            orceum_actions: counter(
                &r,
                "orceum_actions_total",
                "Delivered events by what Orceum's answer says it did (action_taken; unknown when the answer does not say).",
                &["app", "action"],
            ),
            dead_letter_write_failures: counter(
                &r,
                "dead_letter_write_failures_total",
                "Dead letters that could not be written (topic or stream missing, broker down): the source message stays uncommitted and the write is retried.",
                &["route"],
            ),
            rate_limit_per_second: float_gauge(
                &r,
                "rate_limit_per_second",
                "The rate limit in force on this replica for an app: its share of rate_limit.per_second (by the partitions it owns of the topics feeding the app, or 1/rate_limit.replicas).",
                &["app"],
            ),
            schema_registry_errors: counter(
                &r,
                "schema_registry_errors_total",
                "Schema fetches the registry did not answer (down, 5xx, timeout): the message waits and the fetch is retried.",
                &["registry"],
            ),
            registry: r,
        }
    }

    /// Every counter the dashboard and alert rules read, at 0 for each label set known at
    /// start, so `rate()`, `increase()` and `absent()` work from the first scrape rather than
    /// from the first incident.
    pub fn initialise(&self, known: &Known<'_>) {
        for channel in known.channels {
            self.messages_received.with_label_values(channel);
        }
        for app in known.apps {
            for reason in RETRY_REASONS {
                self.retries.with_label_values(&[app, reason]);
            }
            self.push_requests.with_label_values(&[app, "200"]);
            self.push_requests.with_label_values(&[app, "error"]);
            self.rate_limit_wait.with_label_values(&[app]);
            self.in_flight.with_label_values(&[app]);
            self.app_probing.with_label_values(&[app]);
        }
        for route in known.routes {
            for reason in SKIP_REASONS {
                self.skipped.with_label_values(&[route, reason]);
            }
            for kind in crate::dead_letter::KINDS {
                self.dead_letters.with_label_values(&[route, kind]);
            }
            self.dead_letter_write_failures.with_label_values(&[route]);
        }
        self.skipped.with_label_values(&["", "no_route"]);
        for source in known.kafka_sources {
            self.commit_failures.with_label_values(&[source]);
            self.offset_map_skipped.with_label_values(&[source]);
            self.uncommitted.with_label_values(&[source]).set(0);
            self.assigned_partitions.with_label_values(&[source]);
        }
        for source in known.sources {
            self.source_ready.with_label_values(&[source]);
            self.templates_stalled.with_label_values(&[source]);
        }
    }

    /// The text exposition format, for `/metrics`.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The label values known from the config, for [`Metrics::initialise`].
pub struct Known<'a> {
    /// `messages_received_total`'s label values: `[source, topic, subject, stream]`.
    pub channels: &'a [[&'a str; 4]],
    pub apps: &'a [&'a str],
    pub routes: &'a [&'a str],
    pub sources: &'a [&'a str],
    pub kafka_sources: &'a [&'a str],
}

/// The retry reasons a push can meet (`Outcome::label()` of a retryable outcome) for the
/// statuses Orceum documents as transient.
pub const RETRY_REASONS: [&str; 12] = [
    "http_429",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
    "http_408",
    "http_425",
    "timeout",
    "connect",
    "transport",
    "unauthorized",
    "redirect",
];

/// Why a message is committed without a push.
pub const SKIP_REASONS: [&str; 2] = ["filter", "no_route"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
