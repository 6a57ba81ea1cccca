//! Fault injection for tests (feature `fault-injection`, which only the crate's own tests turn
//! on; a release build has none of this): make a named drain's task panic once, right after it
//! takes its next batch off its channel, with earlier batches possibly still in flight. That is
//! the situation of a bug in a drain task, so a test can follow the whole path: the death is
//! reported, the collector starts the drain again as a new generation, and the engine rewinds it.

use std::{collections::BTreeSet, sync::Mutex};

static PANIC_ONCE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Make the task of drain `drain` panic once, when it next takes a batch.
pub fn panic_once(drain: &str) {
    if let Ok(mut marked) = PANIC_ONCE.lock() {
        marked.insert(drain.to_owned());
    }
}

/// Called by a drain task that took a batch: panics if [`panic_once`] marked `drain` (and clears
/// the mark).
pub(crate) fn took_batch(drain: &str) {
    let marked = PANIC_ONCE
        .lock()
        .map(|mut marked| marked.remove(drain))
        .unwrap_or(false);
    assert!(
        !marked,
        "injected fault: the task of drain {drain} panics after taking a batch"
    );
}
