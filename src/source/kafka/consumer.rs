//! The group member: a dedicated thread with librdkafka's synchronous `BaseConsumer`, so
//! rebalance callbacks run inside `poll`, on this thread: commits, pauses and revokes never
//! race, and waiting for a revoked partition to drain blocks no async worker.
//!
//! Guarantees:
//! - the committed offset of a partition is the highest *contiguous* final offset + 1
//!   (the [`Book`]); a later success never commits over an earlier message still retrying;
//! - a message counts against the in-flight bound while it is *held* (read, not yet final);
//!   a final message costs only its offset's bits in the uncommitted window. At the global
//!   bound, or when an app at its own budget blocks a partition, the thread first waits (up to
//!   [`PAUSE_AFTER`]) for work to finish, then pauses (all partitions, or that one); at a
//!   partition's own bound or window that partition pauses at once ([`Book::flow`] decides,
//!   this thread applies). Memory is bounded by what is held; a crash re-delivers what was
//!   held plus what finished since the last commit (less what the offset map names final);
//! - every assigned partition starts at its committed offset (or the `auto.offset.reset`
//!   end when nothing is committed), set by this thread in the rebalance;
//! - on revoke, the revoked partitions drain (up to `shutdown_timeout`), their final prefix is
//!   committed while they are still owned, and acknowledgements that arrive later are ignored:
//!   no commit is ever sent for a partition this member no longer owns;
//! - on shutdown: fetching stops, in-flight work drains until the deadline, the final prefix is
//!   committed, the member leaves the group.

use super::book::{Book, KafkaAck, Limits, PartitionBook, Tp};
use super::{client_config, headers_of, KafkaSourceError};
use crate::config::KafkaSourceConfig;
use crate::message::{AckHandle, Admission, Message, Origin, Submit};
use crate::telemetry::events::CommitFailed;
use crate::telemetry::metrics::Metrics;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long the consumer waits at the global in-flight bound for work to finish before it
/// pauses the partitions ([`KafkaSource::wait_for_room`]).
const PAUSE_AFTER: Duration = Duration::from_millis(500);

/// The shortest gap between two commits made to relieve pressure (half the bound reached).
const MIN_COMMIT_GAP: Duration = Duration::from_millis(10);

struct Ctx {
    source_name: Arc<str>,
    book: Arc<PartitionBook>,
    limits: Limits,
    /// Set while leaving the group: the revoke callback then commits without waiting.
    closing: AtomicBool,
    abandon: CancellationToken,
    metrics: Arc<Metrics>,
    /// Where a partition with nothing committed starts (`auto.offset.reset`).
    start_uncommitted: Offset,
    /// Set by a rebalance: the partitions owned changed, the apps' rate shares are due.
    reshare: AtomicBool,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(source = %self.source_name, facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(source = %self.source_name, facility = fac, "librdkafka: {log_message}")
            }
            _ => {
                tracing::debug!(source = %self.source_name, facility = fac, "librdkafka: {log_message}")
            }
        }
    }

    /// librdkafka's statistics carry the consumer lag per partition (high watermark minus
    /// committed offset): the signal to alert and autoscale on.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let book = self.book.lock();
        for (topic, t) in &statistics.topics {
            for (&partition, p) in &t.partitions {
                // librdkafka measures from the commits it made itself: until this member
                // commits (a quiet partition after a restart), measure from the offset the
                // group had committed, read on assignment.
                let committed = book
                    .parts
                    .get(&(Arc::from(topic.as_str()), partition))
                    .and_then(|part| part.committed);
                let lag = match committed {
                    _ if p.consumer_lag >= 0 => p.consumer_lag,
                    Some(c) if p.hi_offset >= 0 => (p.hi_offset - c).max(0),
                    _ => continue,
                };
                if partition < 0 {
                    continue;
                }
                let partition = partition.to_string();
                self.metrics
                    .consumer_lag
                    .with_label_values(&[&self.source_name, topic.as_str(), partition.as_str()])
                    .set(lag);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(source = %self.source_name, error = %error, "kafka client error: {reason}");
    }
}

impl ConsumerContext for Ctx {
    /// The rebalance, done here rather than by rdkafka's default so that every assigned
    /// partition starts where this thread says: at the committed offset it read back (or, with
    /// nothing committed, the `auto.offset.reset` end), the same read the offset maps come
    /// from, so the start and the offsets skipped as final can never disagree.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::consumer::RebalanceProtocol;
        use rdkafka::types::RDKafkaRespErr as E;
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.reshare.store(true, Ordering::Relaxed);
                let committed = self.read_committed(consumer, tpl);
                self.assign_in_book(tpl);
                if let Some(committed) = &committed {
                    self.set_start_offsets(tpl, committed);
                }
                let assigned = if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    tracing::warn!(source = %self.source_name, error = %e, "cannot take the assigned partitions; librdkafka retries with the next rebalance");
                }
                if let Some(committed) = &committed {
                    self.restore_offset_maps(committed);
                }
                // A newly assigned partition starts unpaused in the book; resume it in
                // librdkafka too, whatever the protocol did with an earlier pause.
                if tpl.count() > 0 {
                    if let Err(e) = consumer.resume(tpl) {
                        tracing::warn!(source = %self.source_name, error = %e, "cannot resume newly assigned partitions");
                    }
                }
            }
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.reshare.store(true, Ordering::Relaxed);
                let revoked: Vec<Tp> = tpl
                    .elements()
                    .iter()
                    .map(|e| (Arc::<str>::from(e.topic()), e.partition()))
                    .collect();
                self.drain_and_release(consumer, &revoked);
                let released = if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = released {
                    tracing::warn!(source = %self.source_name, error = %e, "cannot release the revoked partitions");
                }
            }
            other => {
                let code: RDKafkaErrorCode = other.into();
                tracing::warn!(source = %self.source_name, error = %code, "rebalance error");
                // As librdkafka requires on an error: drop the assignment.
                let _ = consumer.unassign();
            }
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

impl Ctx {
    /// The committed offsets (with their metadata) of newly assigned partitions; `None` if
    /// the coordinator cannot say (librdkafka then picks the start itself).
    fn read_committed(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &TopicPartitionList,
    ) -> Option<TopicPartitionList> {
        if tpl.count() == 0 {
            return None;
        }
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
            Ok(c) => {
                tracing::debug!(source = %self.source_name, committed = %describe_offsets(&c), "committed offsets read back on assignment");
                Some(c)
            }
            Err(e) => {
                tracing::warn!(source = %self.source_name, error = %e, "cannot read the committed offsets of the assigned partitions; librdkafka picks where to start and every uncommitted message is delivered again");
                None
            }
        }
    }

    /// A new assignment in the book: each partition unpaused, under a new epoch.
    fn assign_in_book(&self, tpl: &TopicPartitionList) {
        let mut book = self.book.lock();
        for e in tpl.elements() {
            book.assign((Arc::from(e.topic()), e.partition()), &self.abandon);
        }
        self.metrics
            .assigned_partitions
            .with_label_values(&[&self.source_name])
            .set(book.parts.len() as i64);
        tracing::info!(source = %self.source_name, partitions = %describe(tpl), "partitions assigned");
    }

    /// Every assigned partition starts at its committed offset, or at `start_uncommitted`.
    fn set_start_offsets(&self, tpl: &mut TopicPartitionList, committed: &TopicPartitionList) {
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        for (topic, partition) in partitions {
            let start = committed
                .find_partition(&topic, partition)
                .map(|c| c.offset())
                .filter(|o| matches!(o, Offset::Offset(_)))
                .unwrap_or(self.start_uncommitted);
            // The group's committed offset is this member's to report from now on.
            if let Offset::Offset(at) = start {
                let p = partition.to_string();
                self.metrics
                    .committed_offset
                    .with_label_values(&[&*self.source_name, &topic, &p])
                    .set(at);
            }
            // Only fails for a partition not in the list, which it is.
            let _ = tpl.set_partition_offset(&topic, partition, start);
        }
    }

    /// The offset maps in the committed metadata: the offsets the last owner's map names as
    /// final are skipped. A broker that keeps no metadata (or an unreadable one) means plain
    /// at-least-once from the frontier.
    fn restore_offset_maps(&self, committed: &TopicPartitionList) {
        let mut book = self.book.lock();
        let mut skipped = 0;
        for e in committed.elements() {
            if let Offset::Offset(c) = e.offset() {
                skipped += book.restore(&(Arc::from(e.topic()), e.partition()), c, e.metadata());
            }
        }
        if skipped > 0 {
            tracing::info!(source = %self.source_name, already_final = skipped,
                "offset maps read back: these messages beyond the committed offsets were final and are skipped");
        }
    }

    /// On revoke: let the revoked partitions' in-flight work finish (bounded by the drain
    /// timeout), commit their final prefix while still owned, then forget them.
    fn drain_and_release(&self, consumer: &BaseConsumer<Self>, revoked: &[Tp]) {
        let deadline = Instant::now() + self.limits.drain_timeout;
        if !self.closing.load(Ordering::Acquire) {
            let drained = poll_until(deadline, Duration::from_millis(20), || {
                self.abandon.is_cancelled() || self.book.lock().in_engine_of(revoked) == 0
            });
            if !drained {
                let unfinished = self.book.lock().in_engine_of(revoked);
                tracing::warn!(source = %self.source_name, unfinished,
                    "revoked partitions did not drain within delivery.shutdown_timeout; their unfinished messages stay uncommitted and will be redelivered to the new owner");
            }
        }
        self.hand_over(revoked);
        commit_final(self, consumer, Some(revoked));
        let mut book = self.book.lock();
        for tp in revoked {
            // A partition held by an app's budget is no longer held by it once released.
            if let Some(app) = book
                .parts
                .get(tp)
                .and_then(|p| p.stash.front().map(|s| s.2.clone()))
            {
                self.metrics
                    .partitions_held_by_app
                    .with_label_values(&[&self.source_name, &app])
                    .dec();
            }
            book.release(tp);
            // A partition another member owns now is not this member's to report.
            let partition = tp.1.to_string();
            let labels = [&*self.source_name, tp.0.as_ref(), partition.as_str()];
            let _ = self.metrics.consumer_lag.remove_label_values(&labels);
            let _ = self.metrics.committed_offset.remove_label_values(&labels);
        }
        self.metrics
            .assigned_partitions
            .with_label_values(&[&self.source_name])
            .set(book.parts.len() as i64);
        tracing::info!(source = %self.source_name, partitions = revoked.len(), "partitions revoked");
    }

    /// Before revoked partitions go: stop their held work, then let the pushes already under
    /// way come back (up to `push_grace`), so what they finish is committed by this member
    /// rather than pushed again by the next owner.
    fn hand_over(&self, revoked: &[Tp]) {
        if self.book.lock().in_engine_of(revoked) == 0 {
            return;
        }
        self.book.lock().stop_work(revoked);
        let until = Instant::now() + self.limits.push_grace;
        let back = poll_until(until, Duration::from_millis(10), || {
            self.book.lock().pushes_of(revoked) == 0
        });
        if !back {
            let pushing = self.book.lock().pushes_of(revoked);
            tracing::warn!(source = %self.source_name, pushing,
                "pushes for revoked partitions still under way at the hand-over; the new owner may push those events again");
        }
    }
}

/// Checks `done` every `step` until it holds (true) or `deadline` passes (false): the waits
/// of the rebalance callbacks, which run on (and may block) the consumer thread.
fn poll_until(deadline: Instant, step: Duration, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(step);
    }
}

/// Commits the final prefix of every owned partition (or only of `only`), synchronously.
/// False if the commit failed (it is retried with the next one).
fn commit_final(ctx: &Ctx, consumer: &BaseConsumer<Ctx>, only: Option<&[Tp]>) -> bool {
    let offsets = ctx.book.lock().committable(only);
    if offsets.is_empty() {
        return true;
    }
    let mut tpl = TopicPartitionList::new();
    for c in &offsets {
        // Only fails for an invalid partition, which the book cannot hold.
        let _ = tpl.add_partition_offset(&c.tp.0, c.tp.1, Offset::Offset(c.offset));
        if let Some(mut e) = tpl.find_partition(&c.tp.0, c.tp.1) {
            e.set_metadata(c.metadata.as_str());
        }
    }
    let started = Instant::now();
    tracing::debug!(source = %ctx.source_name, offsets = %describe_offsets(&tpl), "committing");
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => {
            ctx.metrics
                .last_commit_latency
                .observe(started.elapsed().as_secs_f64());
            let mut book = ctx.book.lock();
            book.committed(&offsets);
            for c in &offsets {
                ctx.metrics
                    .committed_offset
                    .with_label_values(&[
                        &*ctx.source_name,
                        c.tp.0.as_ref(),
                        c.tp.1.to_string().as_str(),
                    ])
                    .set(c.offset);
            }
            ctx.metrics
                .uncommitted
                .with_label_values(&[&ctx.source_name])
                .set(book.uncommitted() as i64);
            true
        }
        Err(e) => {
            CommitFailed {
                source: &ctx.source_name,
                error: &e,
            }
            .emit(&ctx.metrics);
            false
        }
    }
}

/// `topic/partition@offset,…` for a debug line.
fn describe_offsets(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| {
            format!(
                "{}/{}@{:?}+{}B",
                e.topic(),
                e.partition(),
                e.offset(),
                e.metadata().len()
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Applies [`Book::flow`]: pauses partitions at their bound (or all at the global bound) and
/// resumes the others.
fn apply_flow_control(ctx: &Ctx, consumer: &BaseConsumer<Ctx>) {
    let flow = ctx.book.lock().flow(&ctx.limits);
    if flow.pause.is_empty() && flow.resume.is_empty() {
        return;
    }
    let list = |tps: &[Tp]| {
        let mut tpl = TopicPartitionList::new();
        for tp in tps {
            tpl.add_partition(&tp.0, tp.1);
        }
        tpl
    };
    tracing::debug!(source = %ctx.source_name, paused = flow.pause.len(), resumed = flow.resume.len(),
        uncommitted = ctx.book.lock().uncommitted(), "in-flight bound: partitions paused/resumed");
    // Pause/resume only fail for partitions not assigned, which the book does not hold.
    if !flow.pause.is_empty() {
        if let Err(e) = consumer.pause(&list(&flow.pause)) {
            tracing::debug!(source = %ctx.source_name, error = %e, "pause failed");
        }
    }
    if !flow.resume.is_empty() {
        if let Err(e) = consumer.resume(&list(&flow.resume)) {
            tracing::debug!(source = %ctx.source_name, error = %e, "resume failed");
        }
    }
}

/// Everything a Kafka source thread needs.
pub struct KafkaSource {
    pub name: Arc<str>,
    pub config: KafkaSourceConfig,
    pub topics: Vec<String>,
    pub limits: Limits,
    pub submit: Arc<dyn Submit>,
    pub metrics: Arc<Metrics>,
    pub ready: Arc<AtomicBool>,
    /// Cancelled on SIGTERM: stop fetching and drain.
    pub stop: CancellationToken,
    /// Cancelled at the drain deadline: give up what is unfinished.
    pub abandon: CancellationToken,
    /// Told the partitions owned after each rebalance (each app's share of its rate limit).
    pub rate_shares: Arc<crate::dispatch::rate::RateShares>,
}

impl KafkaSource {
    /// Runs the consumer on a new thread until `stop`, then drains and leaves the group.
    pub fn spawn(self) -> std::thread::JoinHandle<Result<(), KafkaSourceError>> {
        let name = format!("kafka-{}", self.name);
        let builder = std::thread::Builder::new().name(name);
        match builder.spawn(move || self.run()) {
            Ok(h) => h,
            Err(e) => std::thread::spawn(move || {
                Err(KafkaSourceError::Create {
                    source_name: "?".into(),
                    reason: format!("cannot start the consumer thread: {e}"),
                })
            }),
        }
    }

    fn run(self) -> Result<(), KafkaSourceError> {
        let ctx = Ctx {
            source_name: self.name.clone(),
            book: Arc::new(PartitionBook::default()),
            limits: self.limits,
            closing: AtomicBool::new(false),
            abandon: self.abandon.clone(),
            metrics: self.metrics.clone(),
            start_uncommitted: client_config::start_when_uncommitted(&self.config),
            reshare: AtomicBool::new(false),
        };
        let book = ctx.book.clone();
        let consumer: BaseConsumer<Ctx> = client_config::consumer(&self.name, &self.config)?
            .create_with_context(ctx)
            .map_err(|e| KafkaSourceError::Create {
                source_name: self.name.to_string(),
                reason: e.to_string(),
            })?;

        self.wait_for_brokers(&consumer);
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| KafkaSourceError::Subscribe {
                source_name: self.name.to_string(),
                topics: self.topics.clone(),
                reason: e.to_string(),
            })?;
        tracing::info!(source = %self.name, topics = ?self.topics, group = %self.config.group_id, "consuming");

        let mut topic_names: HashMap<String, Arc<str>> = HashMap::new();
        let uncommitted = self.metrics.uncommitted.with_label_values(&[&self.name]);
        let mut partition_counts: HashMap<String, u32> = HashMap::new();
        let mut last_commit = Instant::now();
        let mut last_error_log: Option<Instant> = None;
        while !self.stop.is_cancelled() {
            let any_paused = book.lock().any_paused();
            let timeout = if any_paused {
                Duration::from_millis(5)
            } else {
                Duration::from_millis(100)
            };
            match consumer.poll(timeout) {
                Some(Ok(m)) => {
                    self.ready.store(true, Ordering::Relaxed);
                    self.accept(&consumer, &book, &m, &mut topic_names);
                }
                Some(Err(e)) => self.on_error(&consumer, e, &mut last_error_log),
                None => {}
            }
            let pressure = {
                let b = book.lock();
                uncommitted.set(b.uncommitted() as i64);
                b.under_pressure(&self.limits)
            };
            // Under pressure, commit often enough to make room, but not after every message:
            // each commit is a broker round trip on this thread.
            let since = last_commit.elapsed();
            if (pressure && since >= MIN_COMMIT_GAP) || since >= self.limits.commit_interval {
                commit_final(consumer.context(), &consumer, None);
                last_commit = Instant::now();
            }
            self.wait_for_room(&book);
            self.retry_stashed(&book);
            self.wait_for_app_room(&book);
            apply_flow_control(consumer.context(), &consumer);
            if consumer.context().reshare.swap(false, Ordering::Relaxed) {
                self.report_partitions(&consumer, &book, &mut partition_counts);
            }
        }
        self.drain(&consumer, &book);
        Ok(())
    }

    /// After a rebalance: the partitions this member owns of each topic, out of how many, for
    /// each app's share of its rate limit. A topic whose partition count cannot be read now
    /// keeps the count read last.
    fn report_partitions(
        &self,
        consumer: &BaseConsumer<Ctx>,
        book: &PartitionBook,
        counts: &mut HashMap<String, u32>,
    ) {
        for topic in &self.topics {
            match consumer.fetch_metadata(Some(topic), Duration::from_secs(5)) {
                Ok(md) => {
                    let n = md
                        .topics()
                        .iter()
                        .find(|t| t.name() == topic && t.error().is_none())
                        .map_or(0, |t| t.partitions().len());
                    if n > 0 {
                        counts.insert(topic.clone(), n as u32);
                    }
                }
                Err(e) => {
                    tracing::debug!(source = %self.name, topic, error = %e, "cannot read the partition count; the rate shares keep the last one")
                }
            }
        }
        let b = book.lock();
        let report: Vec<(String, u32, u32)> = self
            .topics
            .iter()
            .filter_map(|topic| {
                let total = *counts.get(topic)?;
                let owned = b.parts.keys().filter(|(t, _)| &**t == topic).count() as u32;
                Some((topic.clone(), owned, total))
            })
            .collect();
        drop(b);
        self.rate_shares.report(&self.name, &report);
    }

    /// At the global in-flight bound, waits for held work to finish, for up to
    /// [`PAUSE_AFTER`], before `apply_flow_control` pauses the partitions: librdkafka needs up
    /// to a second to fetch again after a resume (measured: a drain at the bound stalled 1 s
    /// per pause), so pausing whenever the bound is touched at full speed would cap a drain at
    /// `max_in_flight` events per second. Messages already fetched stay in librdkafka's queue
    /// meanwhile (bounded by `queued.max.messages.kbytes`); only a bound that holds (Orceum
    /// slow or down) pauses. No commit here: the bound counts what is held, which a commit
    /// does not change (a synchronous commit per message read at the bound capped a drain at
    /// one broker round trip per message).
    fn wait_for_room(&self, book: &PartitionBook) {
        let full = |b: &Book| b.global_full(&self.limits);
        {
            let b = book.lock();
            if !full(&b) || b.any_paused() {
                return;
            }
        }
        let deadline = Instant::now() + PAUSE_AFTER;
        loop {
            let seen = book.lock().acks;
            if !full(&book.lock()) || self.stop.is_cancelled() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            book.wait_for_ack(seen, (deadline - now).min(Duration::from_millis(10)));
        }
    }

    /// A partition just blocked by an app at its budget (a stashed message, not yet paused):
    /// wait up to [`PAUSE_AFTER`] for that app to finish something, offering the stash again
    /// on each acknowledgement, before the flow decision pauses the partition. An app busy at
    /// its budget frees a slot within milliseconds, and a pause would cost a second of
    /// refetching per cycle (a drain at an app's budget ran at one budget per second); an app
    /// that is throttled or down holds its budget, and its partition pauses after the wait.
    fn wait_for_app_room(&self, book: &PartitionBook) {
        let blocked = |b: &Book| b.parts.values().any(|p| !p.stash.is_empty() && !p.paused);
        let deadline = Instant::now() + PAUSE_AFTER;
        loop {
            let seen = {
                let b = book.lock();
                if !blocked(&b) {
                    return;
                }
                b.acks
            };
            let now = Instant::now();
            if now >= deadline || self.stop.is_cancelled() {
                return;
            }
            book.wait_for_ack(seen, (deadline - now).min(Duration::from_millis(10)));
            self.retry_stashed(book);
        }
    }

    /// Blocks until a metadata request succeeds, logging why it does not; readiness stays
    /// false meanwhile. Returns early on stop.
    fn wait_for_brokers(&self, consumer: &BaseConsumer<Ctx>) {
        let mut delay = Duration::from_millis(500);
        while !self.stop.is_cancelled() {
            match consumer.fetch_metadata(None, Duration::from_secs(5)) {
                Ok(_) => {
                    self.ready.store(true, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    self.ready.store(false, Ordering::Relaxed);
                    tracing::error!(source = %self.name, brokers = %self.config.bootstrap_servers, error = %e,
                        retry_in = ?delay, "cannot reach the Kafka brokers; check sources.{}.kafka.bootstrap_servers and the network", self.name);
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    fn on_error(
        &self,
        consumer: &BaseConsumer<Ctx>,
        e: KafkaError,
        last_log: &mut Option<Instant>,
    ) {
        let all_down = matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown)
        );
        if all_down {
            self.ready.store(false, Ordering::Relaxed);
        }
        if last_log.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
            tracing::warn!(source = %self.name, error = %e, "kafka consumer error; librdkafka keeps retrying");
            *last_log = Some(Instant::now());
        }
        if all_down {
            // Probe again so readiness comes back as soon as a broker answers.
            if consumer
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok()
            {
                self.ready.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Registers one message in its partition's tracker and hands it to the engine.
    fn accept(
        &self,
        _consumer: &BaseConsumer<Ctx>,
        book: &Arc<PartitionBook>,
        m: &BorrowedMessage<'_>,
        topic_names: &mut HashMap<String, Arc<str>>,
    ) {
        let topic: Arc<str> = match topic_names.get(m.topic()) {
            Some(t) => t.clone(),
            None => {
                let t: Arc<str> = Arc::from(m.topic());
                topic_names.insert(m.topic().to_string(), t.clone());
                t
            }
        };
        let tp = (topic.clone(), m.partition());
        let offset = m.offset();
        let bytes = m.payload_len();
        let (epoch, revoked, pushes) = {
            let mut b = book.lock();
            let Some((epoch, revoked, pushes)) = b.track(&tp, offset, bytes) else {
                // Fetched before a revoke completed: not ours to process or commit.
                return;
            };
            if b.already_final(&tp, offset) {
                // Final before a restart (the offset map said so): not pushed again.
                b.finish(&tp, offset, epoch, bytes);
                drop(b);
                self.metrics
                    .offset_map_skipped
                    .with_label_values(&[&self.name])
                    .inc();
                return;
            }
            (epoch, revoked, pushes)
        };
        let headers = headers_of(m);
        let timestamp = m
            .timestamp()
            .to_millis()
            .and_then(chrono::DateTime::from_timestamp_millis);
        let msg = Message {
            source: self.name.clone(),
            origin: Origin::Kafka {
                topic,
                partition: m.partition(),
                offset,
            },
            route: None,
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            key: m.key().map(<[u8]>::to_vec),
            headers,
            timestamp,
        };
        let ack = AckHandle::new(KafkaAck {
            book: book.clone(),
            tp: tp.clone(),
            offset,
            epoch,
            bytes,
            revoked,
            pushes,
        });
        // Behind a message already waiting for its app's budget: wait behind it (order).
        let mut b = book.lock();
        if let Some(p) = b.parts.get_mut(&tp).filter(|p| !p.stash.is_empty()) {
            let app = p
                .stash
                .back()
                .map(|s| s.2.clone())
                .unwrap_or_else(|| Arc::from(""));
            p.stash.push_back((msg, ack, app));
            return;
        }
        drop(b);
        if let Admission::Full { msg, ack, app } = self.submit.submit(msg, ack) {
            self.stash(book, tp, msg, ack, app);
        }
    }

    /// The engine refused a message because `app` holds its whole budget: keep it (and, in
    /// order, what comes after it on the partition) and pause the partition until the app
    /// has room again. Every other partition, and this one's other apps' messages before it,
    /// flowed on until now.
    fn stash(&self, book: &PartitionBook, tp: Tp, msg: Message, ack: AckHandle, app: Arc<str>) {
        let mut b = book.lock();
        let Some(p) = b.parts.get_mut(&tp) else {
            return; // revoked meanwhile: dropping the handle abandons the message
        };
        if p.stash.is_empty() {
            self.metrics
                .partitions_held_by_app
                .with_label_values(&[&self.name, &app])
                .inc();
            tracing::info!(source = %self.name, partition = %format!("{}/{}", tp.0, tp.1), app = %app,
                "partition paused: its next message is for an app that holds its whole in-flight budget (apps.<name>.max_in_flight); other apps' messages before it went through");
        }
        p.stash.push_back((msg, ack, app));
    }

    /// Offers each partition's waiting messages to the engine again, in order; a partition
    /// whose stash empties is unblocked (and resumed by the flow decision).
    fn retry_stashed(&self, book: &PartitionBook) {
        let blocked: Vec<Tp> = book
            .lock()
            .parts
            .iter()
            .filter(|(_, p)| !p.stash.is_empty())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in blocked {
            loop {
                // Taken out of the book while submitting: acknowledgements lock the book.
                let Some((msg, ack, app)) = book
                    .lock()
                    .parts
                    .get_mut(&tp)
                    .and_then(|p| p.stash.pop_front())
                else {
                    break;
                };
                match self.submit.submit(msg, ack) {
                    Admission::Accepted => {
                        let b = book.lock();
                        let empty = b.parts.get(&tp).is_none_or(|p| p.stash.is_empty());
                        let next_app = b
                            .parts
                            .get(&tp)
                            .and_then(|p| p.stash.front().map(|s| s.2.clone()));
                        drop(b);
                        if empty || next_app.as_deref() != Some(&*app) {
                            self.metrics
                                .partitions_held_by_app
                                .with_label_values(&[&self.name, &app])
                                .dec();
                        }
                        if empty {
                            break;
                        }
                    }
                    Admission::Full { msg, ack, app } => {
                        if let Some(p) = book.lock().parts.get_mut(&tp) {
                            p.stash.push_front((msg, ack, app));
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Shutdown: stop fetching, let in-flight work finish until the deadline (the caller
    /// cancels `abandon` then), commit what is final, leave the group.
    fn drain(&self, consumer: &BaseConsumer<Ctx>, book: &Arc<PartitionBook>) {
        if let Ok(assignment) = consumer.assignment() {
            let _ = consumer.pause(&assignment);
        }
        let unfinished = book.lock().in_engine();
        tracing::info!(source = %self.name, unfinished, "stopping: fetching paused, draining in-flight messages");
        loop {
            // Keep serving the group protocol; messages fetched now are not tracked, so they
            // are neither processed nor committed.
            let _ = consumer.poll(Duration::from_millis(20));
            commit_final(consumer.context(), consumer, None);
            // Messages still waiting here for their app's budget never reached the engine:
            // they stay uncommitted (the commit stops before the first of them).
            let unfinished = book.lock().in_engine();
            if unfinished == 0 {
                break;
            }
            if self.abandon.is_cancelled() {
                tracing::warn!(source = %self.name, unfinished,
                    "drain deadline (delivery.shutdown_timeout) reached; unfinished messages stay uncommitted and will be redelivered");
                break;
            }
        }
        commit_final(consumer.context(), consumer, None);
        consumer.context().closing.store(true, Ordering::Release);
        consumer.unsubscribe();
        // Let the revoke callback run so the member leaves the group cleanly.
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until && !book.lock().parts.is_empty() {
            let _ = consumer.poll(Duration::from_millis(50));
        }
        self.ready.store(false, Ordering::Relaxed);
        tracing::info!(source = %self.name, "consumer stopped");
    }
}

#[cfg(test)]
mod tests {
    //! The consumer thread against librdkafka's mock cluster (in this process) and a [`Submit`]
    //! double that holds every acknowledgement until the test finishes it.
    use super::*;
    use crate::message::Final;
    use crate::sync::lock;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    use rdkafka::ClientConfig;
    use std::sync::Mutex;

    /// Holds what it is given, by offset.
    #[derive(Default)]
    struct Held(Mutex<Vec<(i64, AckHandle)>>);

    impl Submit for Held {
        fn submit(&self, msg: Message, ack: AckHandle) -> Admission {
            if let Origin::Kafka { offset, .. } = msg.origin {
                lock(&self.0).push((offset, ack));
            }
            Admission::Accepted
        }
    }

    impl Held {
        fn len(&self) -> usize {
            lock(&self.0).len()
        }
        /// Finishes the held messages at these offsets.
        fn finish(&self, offsets: impl Fn(i64) -> bool) {
            let mut held = lock(&self.0);
            let (done, keep): (Vec<_>, Vec<_>) = held.drain(..).partition(|(o, _)| offsets(*o));
            *held = keep;
            drop(held);
            for (_, ack) in done {
                ack.finish(Final::Delivered);
            }
        }
    }

    fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn committed(brokers: &str, group: &str) -> Option<i64> {
        committed_on(brokers, group, 0)
    }

    fn committed_on(brokers: &str, group: &str, partition: i32) -> Option<i64> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("t", partition);
        let got = c.committed_offsets(tpl, Duration::from_secs(5)).ok()?;
        match got.elements()[0].offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }

    /// A mock cluster with topic `t` of `partitions` partitions, `per_partition` records on each.
    fn cluster_with(
        partitions: i32,
        per_partition: usize,
    ) -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("t", partitions, 1).unwrap();
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .create()
            .unwrap();
        for p in 0..partitions {
            for i in 0..per_partition {
                let payload = format!("{{\"n\":{i}}}");
                producer
                    .send(BaseRecord::<(), _>::to("t").partition(p).payload(&payload))
                    .unwrap();
            }
        }
        producer.flush(Duration::from_secs(5)).unwrap();
        cluster
    }

    /// Starts a source on `t` in `group` whose messages go to `held`.
    fn start_source(
        brokers: &str,
        group: &str,
        max_in_flight: usize,
        held: &Arc<Held>,
        metrics: &Arc<Metrics>,
        stop: &CancellationToken,
    ) -> std::thread::JoinHandle<Result<(), KafkaSourceError>> {
        let config: KafkaSourceConfig = yaml_serde::from_str(&format!(
            "bootstrap_servers: {brokers}\ngroup_id: {group}\nproperties: {{ session.timeout.ms: 6000, heartbeat.interval.ms: 500 }}\n"
        ))
        .unwrap();
        KafkaSource {
            name: Arc::from("events"),
            config,
            topics: vec!["t".into()],
            limits: Limits {
                max_in_flight,
                max_in_flight_bytes: usize::MAX,
                max_in_flight_per_partition: max_in_flight,
                max_uncommitted_per_partition: 100_000,
                commit_interval: Duration::from_millis(50),
                drain_timeout: Duration::from_secs(1),
                push_grace: Duration::from_secs(1),
            },
            submit: held.clone(),
            metrics: metrics.clone(),
            ready: Arc::new(AtomicBool::new(false)),
            stop: stop.clone(),
            // Shutdown gives up what is unfinished at once (the tests' "crash").
            abandon: stop.clone(),
            rate_shares: Arc::new(crate::dispatch::rate::RateShares::new(
                &Default::default(),
                &Default::default(),
            )),
        }
        .spawn()
    }

    #[test]
    fn the_bound_holds_commits_wait_for_the_first_offset_and_a_failed_commit_is_retried() {
        let cluster = cluster_with(1, 40);
        let brokers = cluster.bootstrap_servers();
        let held = Arc::new(Held::default());
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let thread = start_source(&brokers, "g-bound", 10, &held, &metrics, &stop);

        // The bound: ten read, nothing more while they are held.
        wait_until("ten messages", || held.len() == 10);
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(held.len(), 10, "read past max_in_flight");

        // Nine of them final, offset 0 still open: final messages cost only their bits, so
        // nine more are read (ten held again), and the commit may not pass offset 0 (it may
        // sit at 0, carrying the final ones in its offset map).
        held.finish(|o| o > 0);
        wait_until("ten held again", || held.len() == 10);
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(held.len(), 10, "read past max_in_flight");
        let c = committed(&brokers, "g-bound");
        assert!(
            matches!(c, None | Some(0)),
            "committed {c:?} past the open offset 0"
        );

        // Offset 0 final; the first commit of it fails (injected), the next one lands.
        cluster.request_errors(
            RDKafkaApiKey::OffsetCommit,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED],
        );
        held.finish(|o| o == 0);
        wait_until("the commit of offset 10", || {
            committed(&brokers, "g-bound") == Some(10)
        });
        assert!(
            metrics.commit_failures.with_label_values(&["events"]).get() >= 1,
            "the injected commit error was not seen"
        );

        // Room again: the next ten are read; finish everything as it comes.
        wait_until("the rest", || {
            held.finish(|_| true);
            committed(&brokers, "g-bound") == Some(40)
        });
        stop.cancel();
        thread.join().unwrap().unwrap();
        assert_eq!(held.len(), 0);
    }

    #[test]
    fn a_revoke_commits_what_is_final_and_later_acks_of_the_old_assignment_commit_nothing() {
        let cluster = cluster_with(2, 20);
        let brokers = cluster.bootstrap_servers();
        let held = Arc::new(Held::default());
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let thread = start_source(&brokers, "g-revoke", 1000, &held, &metrics, &stop);
        wait_until("both partitions read", || held.len() == 40);
        // Offsets 0..5 of both partitions final; the rest held through the revoke.
        held.finish(|o| o < 5);
        wait_until("the first commit", || {
            committed_on(&brokers, "g-revoke", 0) == Some(5)
                && committed_on(&brokers, "g-revoke", 1) == Some(5)
        });
        let old: Vec<AckHandle> = lock(&held.0).drain(..).map(|(_, a)| a).collect();
        assert_eq!(old.len(), 30);

        // A second member joins: this one's partitions are revoked (eager protocol), drain
        // for `drain_timeout` with 30 messages still held, and are reassigned.
        let other: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "g-revoke")
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "500")
            .create()
            .unwrap();
        other.subscribe(&["t"]).unwrap();
        let mut theirs = 0;
        wait_until("the second member's assignment", || {
            let _ = other.poll(Duration::from_millis(100));
            theirs = other.assignment().map(|a| a.count()).unwrap_or(0);
            theirs == 1
        });
        // The partition kept is read again from its commit (5): 15 messages, a new epoch.
        wait_until("the kept partition re-read", || held.len() == 15);

        // The old assignment's acknowledgements arrive now: nothing may be committed from them.
        for ack in old {
            ack.finish(Final::Delivered);
        }
        for _ in 0..10 {
            let _ = other.poll(Duration::from_millis(100));
        }
        assert_eq!(committed_on(&brokers, "g-revoke", 0), Some(5));
        assert_eq!(committed_on(&brokers, "g-revoke", 1), Some(5));

        // The re-read messages, finished, commit the kept partition to its end.
        held.finish(|_| true);
        wait_until("the kept partition committed to the end", || {
            let _ = other.poll(Duration::from_millis(50));
            let c = [0, 1].map(|p| committed_on(&brokers, "g-revoke", p));
            c.contains(&Some(20)) && c.contains(&Some(5))
        });
        stop.cancel();
        thread.join().unwrap().unwrap();
    }

    #[test]
    fn a_restart_skips_what_the_offset_map_names_final_and_delivers_the_rest() {
        let cluster = cluster_with(1, 30);
        let brokers = cluster.bootstrap_servers();
        let first = Arc::new(Held::default());
        let stop = CancellationToken::new();
        let thread = start_source(
            &brokers,
            "g-map",
            20,
            &first,
            &Arc::new(Metrics::new()),
            &stop,
        );
        wait_until("twenty read", || first.len() == 20);
        // 1..19 final, 0 still open: the commit stays at 0 and its metadata names 1..19.
        first.finish(|o| o > 0);
        wait_until("the offset map committed", || {
            committed(&brokers, "g-map") == Some(0)
        });
        std::thread::sleep(Duration::from_millis(300));
        // A crash-like stop: offset 0 is given up unfinished.
        stop.cancel();
        drop(lock(&first.0).drain(..).collect::<Vec<_>>());
        thread.join().unwrap().unwrap();
        assert_eq!(committed(&brokers, "g-map"), Some(0));

        // The next member reads from 0 again: only 0 and 20..29 come to the engine.
        let second = Arc::new(Held::default());
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let thread = start_source(&brokers, "g-map", 100, &second, &metrics, &stop);
        wait_until("the rest", || second.len() == 11);
        std::thread::sleep(Duration::from_millis(500));
        let offsets: Vec<i64> = lock(&second.0).iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, [0].into_iter().chain(20..30).collect::<Vec<_>>());
        assert_eq!(
            metrics
                .offset_map_skipped
                .with_label_values(&["events"])
                .get(),
            19
        );
        second.finish(|_| true);
        wait_until("the end committed", || {
            committed(&brokers, "g-map") == Some(30)
        });
        stop.cancel();
        thread.join().unwrap().unwrap();
    }
}
