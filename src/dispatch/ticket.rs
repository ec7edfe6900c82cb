//! A message's completion: one [`Part`] per route that reads it; the message is acknowledged
//! when every part is final.
//!
//! A part dropped without [`Part::done`] (shutdown, a task that gave up) abandons the whole
//! message: its acknowledgement is dropped unfinished, so it is never committed.

use crate::message::{AckHandle, Final};
use crate::sync::lock;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

struct Shared {
    /// The message's stop token (see `Acknowledge::stop_token`), read once at the split.
    stop: Option<CancellationToken>,
    /// The message's push counter (see `Acknowledge::pushes`), read once at the split.
    pushes: Option<Arc<AtomicUsize>>,
    remaining: AtomicUsize,
    /// The strongest outcome so far: 0 skipped, 1 delivered, 2 dead-lettered.
    worst: AtomicU8,
    ack: Mutex<Option<AckHandle>>,
}

/// One route's share of a message.
pub struct Part {
    shared: Arc<Shared>,
    finished: bool,
}

/// Splits `ack` into `n` parts (`n ≥ 1`).
pub fn split(ack: AckHandle, n: usize) -> Vec<Part> {
    let shared = Arc::new(Shared {
        stop: ack.stop_token(),
        pushes: ack.pushes(),
        remaining: AtomicUsize::new(n.max(1)),
        worst: AtomicU8::new(0),
        ack: Mutex::new(Some(ack)),
    });
    (0..n.max(1))
        .map(|_| Part {
            shared: shared.clone(),
            finished: false,
        })
        .collect()
}

impl Part {
    /// This route's outcome is final.
    pub fn done(mut self, outcome: Final) {
        self.finished = true;
        let rank = match outcome {
            Final::Skipped => 0,
            Final::Delivered => 1,
            Final::DeadLettered => 2,
        };
        self.shared.worst.fetch_max(rank, Ordering::AcqRel);
        if self.shared.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let combined = match self.shared.worst.load(Ordering::Acquire) {
                0 => Final::Skipped,
                1 => Final::Delivered,
                _ => Final::DeadLettered,
            };
            if let Some(ack) = self.take_ack() {
                ack.finish(combined);
            }
        }
    }

    /// Keeps a long retry from being redelivered under our feet (JetStream).
    pub fn in_progress(&self) {
        if let Some(ack) = lock(&self.shared.ack).as_ref() {
            ack.in_progress();
        }
    }

    /// Cancelled once this process will no longer finish the message (partition revoked);
    /// `None` if only the bridge-wide abandon applies.
    pub fn stop_token(&self) -> Option<&CancellationToken> {
        self.shared.stop.as_ref()
    }

    /// Counts a push under way until the guard is dropped (see `Acknowledge::pushes`).
    pub fn pushing(&self) -> Pushing {
        let counter = self.shared.pushes.clone();
        if let Some(c) = &counter {
            c.fetch_add(1, Ordering::SeqCst);
        }
        Pushing(counter)
    }

    fn take_ack(&self) -> Option<AckHandle> {
        lock(&self.shared.ack).take()
    }
}

/// A push under way, counted where the bus waits for pushes (see [`Part::pushing`]).
pub struct Pushing(Option<Arc<AtomicUsize>>);

impl Drop for Pushing {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        if !self.finished {
            // Dropping the handle unfinished abandons the message.
            drop(self.take_ack());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Acknowledge;

    struct Probe(Arc<Mutex<Vec<String>>>);
    impl Acknowledge for Probe {
        fn finish(self: Box<Self>, outcome: Final) {
            self.0.lock().unwrap().push(format!("{outcome:?}"));
        }
        fn abandon(self: Box<Self>) {
            self.0.lock().unwrap().push("abandoned".into());
        }
    }

    #[test]
    fn acknowledged_once_when_every_route_is_final() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut parts = split(AckHandle::new(Probe(log.clone())), 3);
        parts.pop().unwrap().done(Final::Delivered);
        parts.pop().unwrap().done(Final::DeadLettered);
        assert!(log.lock().unwrap().is_empty());
        parts.pop().unwrap().done(Final::Skipped);
        assert_eq!(*log.lock().unwrap(), ["DeadLettered"]);
    }

    #[test]
    fn one_unfinished_route_abandons_the_message() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut parts = split(AckHandle::new(Probe(log.clone())), 2);
        parts.pop().unwrap().done(Final::Delivered);
        drop(parts);
        assert_eq!(*log.lock().unwrap(), ["abandoned"]);
    }
}
