//! Lock helpers shared by every stage.
//!
//! A panic while a lock is held poisons it; everything the bridge keeps behind a lock is
//! consistent after each statement (counters, maps of plain values), so the data is used as
//! it is rather than turning one panic into a cascade of them.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data of a poisoned lock as it is.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
