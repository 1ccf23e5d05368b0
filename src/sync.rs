//! Locking a `std::sync::Mutex` whatever panicked while it was held.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// `m`'s guard, poisoned or not: every mutex in teal guards state that a panic cannot leave
/// half-written (idle lists, a slot, a sample window, watch lists), so the next user carries on.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
