//! The contiguous-offset tracker: what may be committed for one partition.
//!
//! Requests finish out of order. The tracker only ever offers an offset to commit when every
//! message read below it has a final outcome: it never commits past an unfinished offset (the
//! "high-watermark" bug of other bridges). It is ours: no crate commits contiguous offsets for
//! rdkafka. Kafka offsets may have gaps (compaction, transaction markers), so "contiguous" means
//! contiguous among the offsets actually read, not `n, n+1, …`.

use std::collections::{BTreeMap, VecDeque};

#[derive(Debug, Default)]
pub struct OffsetTracker {
    /// Offsets read, in order, with whether each is finished. Front = oldest unfinished.
    pending: BTreeMap<i64, bool>,
    /// Finished offsets in the final prefix that are not committed yet.
    final_uncommitted: VecDeque<i64>,
    /// The next offset to commit (highest contiguous finished + 1), once anything finished.
    frontier: Option<i64>,
    /// The last offset handed to a commit.
    committed: Option<i64>,
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// A message at `offset` was read and is now in flight.
    pub fn track(&mut self, offset: i64) {
        self.pending.insert(offset, false);
    }

    /// The message at `offset` has a final outcome. Unknown offsets are ignored (a stale
    /// acknowledgement from before a revoke, say).
    pub fn finish(&mut self, offset: i64) {
        if let Some(done) = self.pending.get_mut(&offset) {
            *done = true;
        }
        while let Some(entry) = self.pending.first_entry() {
            if !*entry.get() {
                break;
            }
            let (off, _) = entry.remove_entry();
            self.final_uncommitted.push_back(off);
            self.frontier = Some(off + 1);
        }
    }

    /// The offset to commit if it moved since the last commit: highest contiguous final + 1.
    pub fn committable(&self) -> Option<i64> {
        match (self.frontier, self.committed) {
            (Some(f), Some(c)) if f <= c => None,
            (f, _) => f,
        }
    }

    /// Records that `offset` was committed; the final messages below it stop counting.
    pub fn committed(&mut self, offset: i64) {
        self.committed = Some(self.committed.map_or(offset, |c| c.max(offset)));
        while self.final_uncommitted.front().is_some_and(|&o| o < offset) {
            self.final_uncommitted.pop_front();
        }
    }

    /// Messages read and not yet committed: the partition's share of the in-flight bound,
    /// and an upper bound on what a crash right now could deliver twice.
    pub fn uncommitted(&self) -> usize {
        self.pending.len() + self.final_uncommitted.len()
    }

    /// Messages read whose outcome is not final yet.
    pub fn unfinished(&self) -> usize {
        self.pending.values().filter(|done| !**done).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_later_success_does_not_commit_over_an_earlier_retry() {
        let mut t = OffsetTracker::new();
        for o in 10..15 {
            t.track(o);
        }
        t.finish(12);
        t.finish(13);
        assert_eq!(t.committable(), None, "10 is still in flight");
        t.finish(10);
        assert_eq!(t.committable(), Some(11));
        t.finish(11);
        assert_eq!(t.committable(), Some(14));
        t.committed(14);
        assert_eq!(t.committable(), None);
        assert_eq!(t.uncommitted(), 1);
        assert_eq!(t.unfinished(), 1);
    }

    #[test]
    fn gaps_in_offsets_do_not_stall_the_frontier() {
        let mut t = OffsetTracker::new();
        for o in [5, 9, 20] {
            t.track(o);
        }
        t.finish(9);
        t.finish(5);
        assert_eq!(t.committable(), Some(10));
    }

    proptest! {
        /// Model check: whatever the completion order, the committable offset is exactly
        /// one past the longest finished prefix of what was read.
        #[test]
        fn commits_never_pass_an_unfinished_offset(
            gaps in proptest::collection::vec(1i64..4, 1..60),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..80),
        ) {
            let mut offsets = Vec::new();
            let mut o = 100;
            for g in gaps { o += g; offsets.push(o); }
            let mut t = OffsetTracker::new();
            for &o in &offsets { t.track(o); }
            let mut done = vec![false; offsets.len()];
            let mut last_commit = None;
            for idx in order {
                let i = idx.index(offsets.len());
                done[i] = true;
                t.finish(offsets[i]);
                let prefix = done.iter().take_while(|d| **d).count();
                let expected = if prefix == 0 { None } else { Some(offsets[prefix - 1] + 1) };
                if let Some(c) = t.committable() {
                    prop_assert_eq!(Some(c), expected);
                    // Every offset below the commit is finished.
                    for (k, &off) in offsets.iter().enumerate() {
                        if off < c { prop_assert!(done[k]); }
                    }
                    t.committed(c);
                    last_commit = Some(c);
                } else {
                    prop_assert_eq!(expected, last_commit);
                }
                prop_assert_eq!(t.uncommitted(), offsets.len() - prefix);
            }
        }
    }
}
