//! The watchdog over mapping: templates run synchronously (on the Kafka consumer thread, or an
//! async worker for NATS) and cannot be stopped once they run. `check` refuses templates that
//! could loop (`route::budget`), so a mapping's cost is bounded by its message; this watchdog
//! is the backstop that makes a slow one visible: a mapping running for over [`STALLED_AFTER`]
//! is logged once at ERROR with its coordinates and counted in `orceum_bridge_templates_stalled`.
//!
//! Each thread that maps has a slot (an uncontended lock, set and cleared per message);
//! [`Watch::scan`] reads them all once a second.

use crate::message::Origin;
use crate::sync::lock;
use crate::telemetry::metrics::Metrics;
use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a mapping may run before it is reported.
pub const STALLED_AFTER: Duration = Duration::from_secs(5);

/// A mapping under way: since when, the source and the message, and whether it was reported.
type Busy = (Instant, Arc<str>, Origin, bool);

#[derive(Default)]
struct Slot {
    busy: Mutex<Option<Busy>>,
}

/// Every thread's slot.
#[derive(Default)]
pub struct Watch {
    slots: Mutex<Vec<Arc<Slot>>>,
}

thread_local! {
    static SLOT: RefCell<Option<Arc<Slot>>> = const { RefCell::new(None) };
}

/// Clears its thread's slot when the mapping is done.
pub struct Mapping(Arc<Slot>);

impl Drop for Mapping {
    fn drop(&mut self) {
        *lock(&self.0.busy) = None;
    }
}

impl Watch {
    /// Marks this thread as mapping the message from `source`'s `origin` until the guard is
    /// dropped.
    pub fn mapping(&self, source: &Arc<str>, origin: &Origin) -> Mapping {
        let slot = SLOT.with(|s| {
            s.borrow_mut()
                .get_or_insert_with(|| {
                    let slot = Arc::new(Slot::default());
                    lock(&self.slots).push(slot.clone());
                    slot
                })
                .clone()
        });
        *lock(&slot.busy) = Some((Instant::now(), source.clone(), origin.clone(), false));
        Mapping(slot)
    }

    /// Reports mappings running for over [`STALLED_AFTER`] (each once) and sets the gauge.
    pub fn scan(&self, metrics: &Metrics) {
        let slots: Vec<Arc<Slot>> = lock(&self.slots).clone();
        let mut stalled: std::collections::BTreeMap<String, i64> = Default::default();
        for slot in slots {
            let mut busy = lock(&slot.busy);
            if let Some((since, source, origin, reported)) = busy.as_mut() {
                let running = since.elapsed();
                if running >= STALLED_AFTER {
                    *stalled.entry(source.to_string()).or_default() += 1;
                    if !*reported {
                        *reported = true;
                        tracing::error!(source = %source, coordinates = %origin.coordinates(), running = ?running,
                            "a template has been mapping this message for over 5 s: its source waits until it is done; simplify the route's templates (route::budget bounds loops, not polynomial work on a large message)");
                    }
                }
            }
        }
        metrics.templates_stalled.reset();
        for (source, n) in stalled {
            metrics
                .templates_stalled
                .with_label_values(&[&source])
                .set(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_running_too_long_is_counted_until_it_ends() {
        let watch = Arc::new(Watch::default());
        let metrics = Metrics::new();
        let origin = Origin::Kafka {
            topic: Arc::from("t"),
            partition: 0,
            offset: 7,
        };
        let w = watch.clone();
        let o = origin.clone();
        let (started, finish) = (std::sync::mpsc::channel(), std::sync::mpsc::channel::<()>());
        let worker = std::thread::spawn(move || {
            let guard = w.mapping(&Arc::from("events"), &o);
            // Pretend it began long ago.
            if let Some(b) = lock(&SLOT.with(|s| s.borrow().clone()).unwrap().busy).as_mut() {
                b.0 -= STALLED_AFTER * 2;
            }
            started.0.send(()).unwrap();
            finish.1.recv().unwrap();
            drop(guard);
        });
        started.1.recv().unwrap();
        watch.scan(&metrics);
        assert_eq!(
            metrics
                .templates_stalled
                .with_label_values(&["events"])
                .get(),
            1
        );
        finish.0.send(()).unwrap();
        worker.join().unwrap();
        watch.scan(&metrics);
        assert_eq!(
            metrics
                .templates_stalled
                .with_label_values(&["events"])
                .get(),
            0
        );
    }
}
