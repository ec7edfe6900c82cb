//! The partitions this member owns, what is in flight on each, and the pure flow-control
//! decision taken from them.
//!
//! The book is shared between the consumer thread (which tracks offsets as it reads them and
//! commits) and the delivery tasks (whose [`KafkaAck`]s mark offsets final). [`Book::flow`] and
//! [`Book::under_pressure`] are pure functions of the book and the [`Limits`]: which
//! partitions to pause or resume, and whether to commit early. The consumer thread applies
//! them to librdkafka; the tests here drive them with table cases, no broker needed.
//!
//! The bounds count what is *held* (read and not final: queued, rate-limited, retrying, or
//! waiting for its app's budget), globally, in bytes and per partition; a final message costs
//! only its offset's bits, up to `max_uncommitted_per_partition` per partition. So a throttled
//! app holds only its own messages: the partition keeps feeding the other apps until that
//! app's budget is full *and* the partition's next message is its (then the partition is
//! blocked by it: its `stash` is not empty), or the uncommitted window is.
//!
//! Guarantee: an acknowledgement from an earlier assignment of a partition (its `epoch`), or
//! for a partition no longer owned, changes nothing: no commit is ever computed from it.

use crate::commit::offset_map;
use crate::commit::offsets::OffsetTracker;
use crate::message::{AckHandle, Acknowledge, Final, Message};
use crate::sync::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Limits that decide when partitions pause.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Messages held at once, over every partition of the source.
    pub max_in_flight: usize,
    /// Their payload bytes.
    pub max_in_flight_bytes: usize,
    pub max_in_flight_per_partition: usize,
    /// Messages read and not committed on one partition.
    pub max_uncommitted_per_partition: usize,
    pub commit_interval: Duration,
    pub drain_timeout: Duration,
}

/// A topic and partition.
pub type Tp = (Arc<str>, i32);

pub struct PartitionState {
    pub tracker: OffsetTracker,
    /// Which assignment this state belongs to: acknowledgements from an older one are ignored.
    pub epoch: u64,
    pub paused: bool,
    /// Cancelled when the partition is released (revoked, or the bridge stops): the work
    /// still held for it stops at its next wait instead of retrying as an orphan.
    pub revoked: CancellationToken,
    /// Final offsets beyond the committed frontier that the last commit's offset map named
    /// (read back on assignment): skipped when read again, in increasing order.
    skip: VecDeque<(i64, u32)>,
    /// The offset map of the last commit sent for this partition.
    last_map: String,
    /// Payload bytes of the messages held.
    held_bytes: usize,
    /// Messages the engine refused for now (their app's budget is full), in order, with the
    /// app: submitted again before anything after them; the partition is paused meanwhile.
    pub stash: VecDeque<(Message, AckHandle, Arc<str>)>,
}

/// One partition's commit: the offset and its metadata (the offset map).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub tp: Tp,
    pub offset: i64,
    pub metadata: String,
}

/// What [`Book::flow`] decided: partitions to pause and to resume in librdkafka.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub pause: Vec<Tp>,
    pub resume: Vec<Tp>,
}

#[derive(Default)]
pub struct Book {
    pub parts: HashMap<Tp, PartitionState>,
    next_epoch: u64,
    /// Acknowledgements so far: what the consumer thread waits on to change.
    pub acks: u64,
}

impl Book {
    pub fn uncommitted(&self) -> usize {
        self.parts.values().map(|p| p.tracker.uncommitted()).sum()
    }

    pub fn unfinished(&self) -> usize {
        self.parts.values().map(|p| p.tracker.unfinished()).sum()
    }

    /// What the engine holds: unfinished messages other than those stashed here.
    pub fn in_engine(&self) -> usize {
        self.parts
            .values()
            .map(|p| p.tracker.unfinished().saturating_sub(p.stash.len()))
            .sum()
    }

    /// Of `only`'s partitions, what the engine holds.
    pub fn in_engine_of(&self, only: &[Tp]) -> usize {
        only.iter()
            .filter_map(|tp| self.parts.get(tp))
            .map(|p| p.tracker.unfinished().saturating_sub(p.stash.len()))
            .sum()
    }

    fn held_bytes(&self) -> usize {
        self.parts.values().map(|p| p.held_bytes).sum()
    }

    pub fn any_paused(&self) -> bool {
        self.parts.values().any(|p| p.paused)
    }

    /// Starts tracking a newly assigned partition, unpaused, under a new epoch. Its revoke
    /// token is a child of `abandon`: the bridge giving up work gives up this partition's too.
    pub fn assign(&mut self, tp: Tp, abandon: &CancellationToken) {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        if let Some(old) = self.parts.insert(
            tp,
            PartitionState {
                tracker: OffsetTracker::new(),
                epoch,
                paused: false,
                revoked: abandon.child_token(),
                skip: VecDeque::new(),
                last_map: String::new(),
                held_bytes: 0,
                stash: VecDeque::new(),
            },
        ) {
            old.revoked.cancel();
        }
    }

    /// The committed offset and metadata read back for a newly assigned partition: the final
    /// offsets the metadata names are skipped when they are read again. Absent, foreign,
    /// stale or corrupt metadata names none (plain at-least-once from the frontier).
    pub fn restore(&mut self, tp: &Tp, committed: i64, metadata: &str) -> usize {
        let Some(p) = self.parts.get_mut(tp) else {
            return 0;
        };
        let runs = offset_map::decode(metadata, committed).unwrap_or_default();
        let n = runs.iter().map(|(_, n)| *n as usize).sum();
        p.skip = runs.into();
        n
    }

    /// Whether `offset` was final before a restart (the offset map said so); such a message
    /// is tracked as final at once, never handed to the engine again.
    pub fn already_final(&mut self, tp: &Tp, offset: i64) -> bool {
        let Some(p) = self.parts.get_mut(tp) else {
            return false;
        };
        while let Some(&(start, n)) = p.skip.front() {
            if offset >= start + i64::from(n) {
                p.skip.pop_front();
            } else {
                return offset >= start;
            }
        }
        false
    }

    /// Forgets a partition no longer owned and stops the work still held for it.
    pub fn release(&mut self, tp: &Tp) {
        if let Some(p) = self.parts.remove(tp) {
            p.revoked.cancel();
        }
    }

    /// Registers a message just read: its epoch and revoke token; `None` if the partition is
    /// not (or no longer) owned.
    pub fn track(
        &mut self,
        tp: &Tp,
        offset: i64,
        bytes: usize,
    ) -> Option<(u64, CancellationToken)> {
        let p = self.parts.get_mut(tp)?;
        p.tracker.track(offset);
        p.held_bytes += bytes;
        Some((p.epoch, p.revoked.clone()))
    }

    /// Marks an offset final if it belongs to the current assignment of its partition.
    pub fn finish(&mut self, tp: &Tp, offset: i64, epoch: u64, bytes: usize) {
        if let Some(p) = self.parts.get_mut(tp) {
            if p.epoch == epoch {
                p.tracker.finish(offset);
                p.held_bytes = p.held_bytes.saturating_sub(bytes);
            }
        }
        self.acks += 1;
    }

    /// The global bound is full, or a partition is at its own bound: pause those (all of them
    /// at the global bound); resume paused partitions that have room again. Records the new
    /// state in the book, so applying the same book twice changes nothing.
    pub fn flow(&mut self, limits: &Limits) -> Flow {
        let global_full = self.global_full(limits);
        let mut flow = Flow::default();
        for (tp, p) in self.parts.iter_mut() {
            let full = global_full
                || !p.stash.is_empty()
                || p.tracker.unfinished() >= limits.max_in_flight_per_partition
                || p.tracker.uncommitted() >= limits.max_uncommitted_per_partition;
            if full && !p.paused {
                flow.pause.push(tp.clone());
                p.paused = true;
            } else if !full && p.paused {
                flow.resume.push(tp.clone());
                p.paused = false;
            }
        }
        flow.pause.sort();
        flow.resume.sort();
        flow
    }

    /// The source holds all it may (count or bytes): no partition is read.
    pub fn global_full(&self, limits: &Limits) -> bool {
        self.unfinished() >= limits.max_in_flight || self.held_bytes() >= limits.max_in_flight_bytes
    }

    /// Half a partition's uncommitted window is used: commit soon (at most every few ms) to
    /// make room, rather than waiting for the commit interval.
    pub fn under_pressure(&self, limits: &Limits) -> bool {
        self.parts
            .values()
            .any(|p| p.tracker.uncommitted() * 2 >= limits.max_uncommitted_per_partition)
    }

    /// The next commit of every owned partition (or only of `only`) whose frontier moved, or
    /// whose offset map changed, since its last commit: the frontier, and in the metadata the
    /// final offsets beyond it.
    pub fn committable(&self, only: Option<&[Tp]>) -> Vec<Commit> {
        let mut out: Vec<Commit> = self
            .parts
            .iter()
            .filter(|(tp, _)| only.is_none_or(|o| o.contains(tp)))
            .filter_map(|(tp, p)| {
                let moved = p.tracker.committable();
                let offset = moved.or_else(|| p.tracker.commit_point())?;
                let runs = p.tracker.final_beyond();
                if moved.is_none() && runs.is_empty() {
                    return None;
                }
                let metadata = offset_map::encode(offset, &runs, offset_map::MAX_METADATA_BYTES);
                (moved.is_some() || metadata != p.last_map).then(|| Commit {
                    tp: tp.clone(),
                    offset,
                    metadata,
                })
            })
            .collect();
        out.sort_by(|a, b| a.tp.cmp(&b.tp));
        out
    }

    /// Records a successful commit (for the partitions still owned).
    pub fn committed(&mut self, commits: &[Commit]) {
        for c in commits {
            if let Some(p) = self.parts.get_mut(&c.tp) {
                p.tracker.committed(c.offset);
                p.last_map.clone_from(&c.metadata);
            }
        }
    }
}

/// The book behind a lock, with the wake-up the consumer thread waits on at the bound.
#[derive(Default)]
pub struct PartitionBook {
    book: Mutex<Book>,
    /// Signalled by acknowledgements while the consumer thread waits for room.
    acked: Condvar,
    /// Whether the consumer thread waits on `acked` (so acknowledgements skip the wake-up
    /// system call the rest of the time).
    waiting: AtomicBool,
}

impl PartitionBook {
    pub fn lock(&self) -> MutexGuard<'_, Book> {
        lock(&self.book)
    }

    /// Blocks until an acknowledgement after the `seen`-th arrives, or `timeout` passes.
    /// `waiting` is set under the lock, so an acknowledgement either counted before the check
    /// (no wait) or sees the flag and wakes this thread: none is missed.
    pub fn wait_for_ack(&self, seen: u64, timeout: Duration) {
        let guard = self.lock();
        self.waiting.store(true, Ordering::SeqCst);
        let _ = self
            .acked
            .wait_timeout_while(guard, timeout, |b| b.acks == seen);
        self.waiting.store(false, Ordering::SeqCst);
    }
}

/// The acknowledgement of one Kafka message: marks its offset final in the book.
pub struct KafkaAck {
    pub book: Arc<PartitionBook>,
    pub tp: Tp,
    pub offset: i64,
    pub epoch: u64,
    pub bytes: usize,
    pub revoked: CancellationToken,
}

impl Acknowledge for KafkaAck {
    fn finish(self: Box<Self>, _outcome: Final) {
        self.book
            .lock()
            .finish(&self.tp, self.offset, self.epoch, self.bytes);
        if self.book.waiting.load(Ordering::SeqCst) {
            self.book.acked.notify_one();
        }
    }

    fn stop_token(&self) -> Option<CancellationToken> {
        Some(self.revoked.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::AckHandle;

    fn tp(p: i32) -> Tp {
        (Arc::from("t"), p)
    }

    fn limits(global: usize, per_partition: usize) -> Limits {
        windowed(global, per_partition, 1_000_000)
    }

    fn windowed(global: usize, per_partition: usize, window: usize) -> Limits {
        Limits {
            max_in_flight: global,
            max_in_flight_bytes: usize::MAX,
            max_in_flight_per_partition: per_partition,
            max_uncommitted_per_partition: window,
            commit_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(1),
        }
    }

    /// A book with partitions 0..n, partition i holding `held[i]` unfinished offsets 0..held[i].
    fn book(held: &[i64]) -> Book {
        let mut b = Book::default();
        for (p, n) in held.iter().enumerate() {
            b.assign(tp(p as i32), &CancellationToken::new());
            for o in 0..*n {
                b.track(&tp(p as i32), o, 0);
            }
        }
        b
    }

    #[test]
    fn flow_pauses_at_each_bound_and_resumes_once_there_is_room() {
        // (held per partition, global bound, per-partition bound, paused, resumed)
        let cases: &[(&[i64], usize, usize, &[i32])] = &[
            (&[1, 1], 10, 10, &[]),
            (&[5, 1], 10, 5, &[0]),    // partition 0 at its own bound
            (&[5, 5], 10, 8, &[0, 1]), // global bound: every partition
            (&[0, 0], 1, 1, &[]),
        ];
        for (held, global, per, paused) in cases {
            let mut b = book(held);
            let flow = b.flow(&limits(*global, *per));
            let want: Vec<Tp> = paused.iter().map(|p| tp(*p)).collect();
            assert_eq!(flow.pause, want, "{held:?} {global} {per}");
            assert!(flow.resume.is_empty());
            // Applied once, the same book decides nothing more.
            assert_eq!(b.flow(&limits(*global, *per)), Flow::default());
        }
    }

    #[test]
    fn a_partition_at_its_held_bound_resumes_once_its_messages_are_final() {
        let l = limits(4, 4);
        let mut b = book(&[4]);
        assert_eq!(b.flow(&l).pause, [tp(0)]);
        for o in 0..4 {
            let epoch = b.parts[&tp(0)].epoch;
            b.finish(&tp(0), o, epoch, 0);
        }
        // Final, not committed: a final message costs only its bits, so there is room.
        assert_eq!(b.flow(&l).resume, [tp(0)]);
    }

    #[test]
    fn a_partition_at_its_uncommitted_window_resumes_once_committed() {
        let l = windowed(100, 100, 4);
        let mut b = book(&[4]);
        for o in 0..4 {
            let epoch = b.parts[&tp(0)].epoch;
            b.finish(&tp(0), o, epoch, 0);
        }
        assert_eq!(b.flow(&l).pause, [tp(0)], "the window is full");
        let c = b.committable(None);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].tp.clone(), c[0].offset), (tp(0), 4));
        b.committed(&c);
        assert_eq!(b.flow(&l).resume, [tp(0)]);
    }

    #[test]
    fn a_partition_with_a_stashed_message_pauses_and_the_others_flow() {
        let l = limits(100, 100);
        let mut b = book(&[1, 1]);
        let msg = Message {
            source: Arc::from("s"),
            origin: crate::message::Origin::Kafka {
                topic: Arc::from("t"),
                partition: 0,
                offset: 0,
            },
            route: None,
            payload: Vec::new(),
            key: None,
            headers: Vec::new(),
            timestamp: None,
        };
        if let Some(p) = b.parts.get_mut(&tp(0)) {
            p.stash.push_back((msg, AckHandle::noop(), Arc::from("a")));
        }
        assert_eq!(b.flow(&l).pause, [tp(0)]);
        assert_eq!(b.in_engine(), 1, "the stashed message is not in the engine");
        assert_eq!(b.unfinished(), 2);
        if let Some(p) = b.parts.get_mut(&tp(0)) {
            p.stash.clear();
        }
        assert_eq!(b.flow(&l).resume, [tp(0)]);
    }

    #[test]
    fn the_byte_budget_pauses_everything() {
        let mut l = limits(100, 100);
        l.max_in_flight_bytes = 1000;
        let mut b = Book::default();
        b.assign(tp(0), &CancellationToken::new());
        b.assign(tp(1), &CancellationToken::new());
        b.track(&tp(0), 0, 999);
        assert!(b.flow(&l).pause.is_empty());
        b.track(&tp(0), 1, 1);
        assert_eq!(b.flow(&l).pause, [tp(0), tp(1)]);
        let epoch = b.parts[&tp(0)].epoch;
        b.finish(&tp(0), 0, epoch, 999);
        assert_eq!(b.flow(&l).resume, [tp(0), tp(1)]);
    }

    #[test]
    fn pressure_starts_at_half_the_uncommitted_window() {
        assert!(!book(&[4]).under_pressure(&windowed(100, 100, 10)));
        assert!(book(&[5]).under_pressure(&windowed(100, 100, 10)));
        assert!(book(&[1, 3]).under_pressure(&windowed(100, 100, 6)));
    }

    #[test]
    fn commits_never_pass_an_unfinished_offset() {
        let mut b = book(&[3]);
        let epoch = b.parts[&tp(0)].epoch;
        b.finish(&tp(0), 1, epoch, 0);
        b.finish(&tp(0), 2, epoch, 0);
        // Offset 0 still open: the commit stays at 0, with 1 and 2 in its offset map.
        let c = b.committable(None);
        assert_eq!(c[0].offset, 0);
        assert_eq!(offset_map::decode(&c[0].metadata, 0), Some(vec![(1, 2)]));
        b.finish(&tp(0), 0, epoch, 0);
        assert_eq!(b.committable(None)[0].offset, 3);
    }

    #[test]
    fn an_ack_after_revoke_or_reassignment_changes_nothing() {
        let shared = Arc::new(PartitionBook::default());
        let (old_epoch, held) = {
            let mut b = shared.lock();
            b.assign(tp(0), &CancellationToken::new());
            b.assign(tp(1), &CancellationToken::new());
            let (e, _) = b.track(&tp(0), 0, 0).unwrap();
            b.track(&tp(1), 0, 0);
            (e, b.parts[&tp(1)].epoch)
        };
        let ack = |tp: Tp, epoch| {
            AckHandle::new(KafkaAck {
                book: shared.clone(),
                tp,
                offset: 0,
                epoch,
                bytes: 0,
                revoked: CancellationToken::new(),
            })
        };
        let (stale, revoked) = (ack(tp(0), old_epoch), ack(tp(1), held));
        {
            let mut b = shared.lock();
            // Partition 0 is revoked and assigned again (a new epoch); partition 1 is gone.
            b.release(&tp(0));
            b.release(&tp(1));
            b.assign(tp(0), &CancellationToken::new());
            b.track(&tp(0), 0, 0);
        }
        stale.finish(Final::Delivered);
        revoked.finish(Final::Delivered);
        let b = shared.lock();
        assert!(
            b.committable(None).is_empty(),
            "the new owner's offset 0 is still open"
        );
        assert_eq!(b.unfinished(), 1);
        assert_eq!(b.acks, 2);
    }

    #[test]
    fn releasing_a_partition_stops_the_work_held_for_it() {
        let abandon = CancellationToken::new();
        let mut b = Book::default();
        b.assign(tp(0), &abandon);
        b.assign(tp(1), &abandon);
        let (_, held0) = b.track(&tp(0), 0, 0).unwrap();
        let (_, held1) = b.track(&tp(1), 0, 0).unwrap();
        b.release(&tp(0));
        assert!(held0.is_cancelled(), "revoked partition's work must stop");
        assert!(!held1.is_cancelled());
        abandon.cancel();
        assert!(
            held1.is_cancelled(),
            "the bridge-wide abandon reaches every partition"
        );
    }
}
