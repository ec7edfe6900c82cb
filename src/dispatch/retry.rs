//! One [`RetryPolicy`] for every retry loop (a push, a dead-letter write, `replay`): how long to
//! wait after a failed attempt, and when to give up.
//!
//! The wait is exponential backoff with full jitter (random(0, min(max, initial × 2^attempt))),
//! or the server's `Retry-After` where it gave one, clamped to `max_retry_after`. The backoff
//! advances on every failure either way, and a `Retry-After` of 0 (or an HTTP date in the
//! past) waits the backoff's delay instead: no answer can make a loop spin.
//!
//! Hand-written rather than `backon`: here the delay is one input among `Retry-After` and the
//! app-wide pause, so the schedule is a plain value the delivery loop asks, not a driver.

use crate::config::RetryConfig;
use rand::Rng;
use std::time::Duration;
use tokio::time::Instant;

/// How a retry loop waits and when it gives up.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Give up once the first attempt is this long ago; `None`: never.
    pub max_elapsed: Option<Duration>,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// `delivery.retry` as a policy (pushes and `replay`).
    pub fn from_config(c: &RetryConfig) -> Self {
        Self {
            initial_backoff: c.initial_backoff,
            max_backoff: c.max_backoff,
            max_elapsed: c.max_elapsed,
            max_retry_after: c.max_retry_after,
        }
    }

    /// Dead-letter writes: a broker hiccup is retried quickly, and never given up (the source
    /// message stays uncommitted until its dead letter is stored).
    pub fn dead_letter_writes() -> Self {
        Self {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_elapsed: None,
            max_retry_after: Duration::ZERO,
        }
    }

    /// The same policy, giving up after `limit` (replay's `--max-elapsed`).
    pub fn giving_up_after(mut self, limit: Duration) -> Self {
        self.max_elapsed = Some(limit);
        self
    }

    /// Starts the attempts of one item (one event, one dead letter).
    pub fn start(&self) -> Attempts {
        Attempts {
            backoff: Backoff::new(self.initial_backoff, self.max_backoff),
            started: Instant::now(),
            count: 0,
            max_elapsed: self.max_elapsed,
            max_retry_after: self.max_retry_after,
        }
    }
}

/// The attempts of one item under a [`RetryPolicy`].
#[derive(Debug)]
pub struct Attempts {
    backoff: Backoff,
    started: Instant,
    /// Failed attempts so far.
    pub count: u32,
    max_elapsed: Option<Duration>,
    max_retry_after: Duration,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Wait(Duration),
    /// `max_elapsed` has passed since the first attempt.
    GiveUp {
        elapsed: Duration,
    },
}

impl Attempts {
    /// Records a failed attempt; `retry_after` is the server's, if any.
    pub fn failed(&mut self, retry_after: Option<Duration>) -> Next {
        self.count = self.count.saturating_add(1);
        let elapsed = self.started.elapsed();
        if self.max_elapsed.is_some_and(|limit| elapsed >= limit) {
            return Next::GiveUp { elapsed };
        }
        let backoff = self.backoff.next_delay();
        Next::Wait(match retry_after {
            Some(after) if !after.is_zero() => after.min(self.max_retry_after.max(backoff)),
            _ => backoff,
        })
    }

    /// Since the first attempt.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[derive(Debug, Clone)]
struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The cap for the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next delay: uniform in `[0, ceiling]`, then the ceiling doubles.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = cap.as_nanos().min(u64::MAX as u128) as u64;
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_elapsed: None,
            max_retry_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn retry_after_sets_the_wait_clamped_and_zero_never_spins() {
        let mut a = policy().start();
        assert_eq!(
            a.failed(Some(Duration::from_secs(20))),
            Next::Wait(Duration::from_secs(20))
        );
        assert_eq!(
            a.failed(Some(Duration::from_secs(600))),
            Next::Wait(Duration::from_secs(60)),
            "clamped to max_retry_after"
        );
        // Retry-After: 0 (or a date in the past) waits the backoff, and the backoff has kept
        // advancing: after 2 failures its ceiling is 400 ms. Over many draws, some wait > 0.
        let waits: Vec<Duration> = (0..20)
            .map(|_| match a.failed(Some(Duration::ZERO)) {
                Next::Wait(d) => d,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_secs(1)));
        assert!(waits.iter().any(|w| !w.is_zero()), "{waits:?}");
        assert_eq!(a.count, 22);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_give_up_after_max_elapsed() {
        let mut a = policy().giving_up_after(Duration::from_secs(5)).start();
        assert!(matches!(a.failed(None), Next::Wait(_)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(a.failed(None), Next::GiveUp { .. }));
    }

    #[test]
    fn delays_stay_under_a_doubling_capped_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings: Vec<_> = (0..6)
            .map(|_| {
                let c = b.ceiling();
                assert!(b.next_delay() <= c);
                c.as_millis()
            })
            .collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000]);
    }
}
