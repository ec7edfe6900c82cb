//! The contiguous-offset tracker: what may be committed for one partition, and which offsets
//! beyond that are already final (the offset map a commit carries in its metadata).
//!
//! Requests finish out of order. The tracker only ever offers an offset to commit when every
//! message read below it has a final outcome: it never commits past an unfinished offset (the
//! "high-watermark" bug of other bridges). It is ours: no crate commits contiguous offsets for
//! rdkafka. Kafka offsets may have gaps (compaction, transaction markers): an offset that was
//! never read cannot be unfinished, so the commit point is the first *read* offset still
//! unfinished (or one past the last read).
//!
//! Two bits per offset between the last commit and the last read (read, unfinished), in 64-bit
//! words: a window of 100,000 uncommitted offsets costs 25 KB, and a message already final
//! costs its bits, nothing more.

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct OffsetTracker {
    /// The offset of bit 0 of the first word (a multiple of 64).
    base: i64,
    /// Offsets read and not yet committed.
    read: VecDeque<u64>,
    /// Offsets read whose outcome is not final.
    open: VecDeque<u64>,
    unfinished: usize,
    uncommitted: usize,
    /// The first offset read (before anything is committed) and the last.
    first_read: Option<i64>,
    last_read: Option<i64>,
    /// The last offset handed to a commit.
    committed: Option<i64>,
}

/// A gap of more than this many 64-offset words after only final offsets restarts the bitmap.
const MAX_GAP_WORDS: usize = 1024;

/// At most this many runs go into an offset map (the metadata holds about 500 of them).
const MAX_RUNS: usize = 2048;

fn bit(index: usize) -> (usize, u64) {
    (index / 64, 1u64 << (index % 64))
}

impl OffsetTracker {
    pub fn new() -> Self {
        Self::default()
    }

    fn index(&self, offset: i64) -> Option<usize> {
        usize::try_from(offset.checked_sub(self.base)?).ok()
    }

    /// A message at `offset` was read and is now in flight. Offsets arrive in increasing order
    /// (one partition); one below what was already committed is ignored.
    pub fn track(&mut self, offset: i64) {
        if self.first_read.is_none() {
            self.base = offset - offset.rem_euclid(64);
            self.first_read = Some(offset);
        }
        if self.committed.is_some_and(|c| offset < c) {
            return;
        }
        let Some(mut i) = self.index(offset) else {
            return;
        };
        if i / 64 > self.read.len() + MAX_GAP_WORDS && self.unfinished == 0 {
            // A long gap (a compacted topic) after offsets that are all final: start the
            // bitmap again at this offset instead of spanning the gap. Nothing before it is
            // unfinished, so the commit point moves to it; the final offsets dropped here are
            // covered by that commit.
            self.read.clear();
            self.open.clear();
            self.uncommitted = 0;
            self.base = offset - offset.rem_euclid(64);
            i = (offset - self.base) as usize;
        }
        let (w, m) = bit(i);
        while self.read.len() <= w {
            self.read.push_back(0);
            self.open.push_back(0);
        }
        if self.read[w] & m == 0 {
            self.read[w] |= m;
            self.open[w] |= m;
            self.unfinished += 1;
            self.uncommitted += 1;
        }
        self.last_read = Some(self.last_read.map_or(offset, |l| l.max(offset)));
    }

    /// The message at `offset` has a final outcome. Unknown offsets are ignored (a stale
    /// acknowledgement from before a revoke, say).
    pub fn finish(&mut self, offset: i64) {
        let Some(i) = self.index(offset) else { return };
        let (w, m) = bit(i);
        if let Some(word) = self.open.get_mut(w) {
            if *word & m != 0 {
                *word &= !m;
                self.unfinished -= 1;
            }
        }
    }

    /// The first read offset still unfinished, or one past the last read.
    fn frontier(&self) -> Option<i64> {
        let last = self.last_read?;
        for (w, word) in self.open.iter().enumerate() {
            if *word != 0 {
                return Some(self.base + (w * 64) as i64 + i64::from(word.trailing_zeros()));
            }
        }
        Some(last + 1)
    }

    /// Where a commit would point now (whether or not it moved): the first unfinished read
    /// offset, or one past the last read; `None` before anything was read.
    pub fn commit_point(&self) -> Option<i64> {
        self.frontier()
    }

    /// The offset to commit if it moved since the last commit (or since the first read).
    pub fn committable(&self) -> Option<i64> {
        let f = self.frontier()?;
        let floor = self.committed.or(self.first_read)?;
        (f > floor).then_some(f)
    }

    /// Records that `offset` was committed; the read offsets below it stop counting.
    pub fn committed(&mut self, offset: i64) {
        let offset = self.committed.map_or(offset, |c| c.max(offset));
        self.committed = Some(offset);
        // Clear the read bits below the commit, then drop the words wholly below it.
        let upto = self.index(offset).unwrap_or(0);
        for w in 0..self.read.len().min(upto.div_ceil(64)) {
            let below = if (w + 1) * 64 <= upto {
                u64::MAX
            } else {
                (1u64 << (upto % 64)) - 1
            };
            let cleared = self.read[w] & below;
            self.uncommitted -= cleared.count_ones() as usize;
            self.read[w] &= !below;
            self.open[w] &= !below;
        }
        while self.read.len() > 1 && self.base + 64 <= offset {
            self.read.pop_front();
            self.open.pop_front();
            self.base += 64;
        }
    }

    /// Messages read and not yet committed: the partition's uncommitted window, and an upper
    /// bound on what a crash right now could deliver twice without an offset map.
    pub fn uncommitted(&self) -> usize {
        self.uncommitted
    }

    /// Messages read whose outcome is not final yet: what the engine holds for this partition.
    pub fn unfinished(&self) -> usize {
        self.unfinished
    }

    /// The final offsets beyond the commit point, as runs `(first, count)` in increasing
    /// order: the offset map a commit carries.
    pub fn final_beyond(&self) -> Vec<(i64, u32)> {
        let Some(frontier) = self.frontier() else {
            return Vec::new();
        };
        let mut runs: Vec<(i64, u32)> = Vec::new();
        // Word by word: a final offset is read and not open; everything before the frontier
        // is final already and not part of the map.
        for (w, (read, open)) in self.read.iter().zip(&self.open).enumerate() {
            let mut finals = read & !open;
            while finals != 0 {
                let o = self.base + (w * 64) as i64 + i64::from(finals.trailing_zeros());
                finals &= finals - 1;
                if o < frontier {
                    continue;
                }
                if let Some((_, n)) = runs.last_mut().filter(|(s, n)| *s + i64::from(*n) == o) {
                    *n += 1;
                } else if runs.len() == MAX_RUNS {
                    return runs;
                } else {
                    runs.push((o, 1));
                }
            }
        }
        runs
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
        // 6..8 and 10..19 were never read (compacted away): the first unfinished read is 20.
        assert_eq!(t.committable(), Some(20));
    }

    #[test]
    fn a_long_gap_after_final_offsets_does_not_span_the_bitmap() {
        let mut t = OffsetTracker::new();
        t.track(0);
        t.finish(0);
        // Compaction left offsets 1..10^12 out: the bitmap must not cover them.
        t.track(1_000_000_000_000);
        assert!(t.read.len() <= 2, "{} words", t.read.len());
        assert_eq!(t.committable(), Some(1_000_000_000_000));
        t.finish(1_000_000_000_000);
        assert_eq!(t.committable(), Some(1_000_000_000_001));
        assert_eq!(t.unfinished(), 0);
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
                // The first unfinished read offset (never-read gaps cannot be unfinished),
                // or one past the last read.
                let expected = if prefix == 0 {
                    None
                } else {
                    Some(offsets.get(prefix).copied().unwrap_or(offsets[offsets.len() - 1] + 1))
                };
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
                prop_assert_eq!(t.unfinished(), done.iter().filter(|d| !**d).count());
                // The offset map holds exactly the finished offsets beyond the commit point.
                let beyond: Vec<i64> = t
                    .final_beyond()
                    .iter()
                    .flat_map(|(s, n)| (*s..*s + i64::from(*n)).collect::<Vec<_>>())
                    .collect();
                let want: Vec<i64> = offsets.iter().zip(&done).skip(prefix).filter(|(_, d)| **d).map(|(o, _)| *o).collect();
                prop_assert_eq!(beyond, want);
            }
        }
    }
}
