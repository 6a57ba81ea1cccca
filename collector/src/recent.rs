//! The recent lines of every container this collector reads, for `kubectl sluice logs --recent`
//! and `-f`: a bounded ring per container, a cap on the whole node, and a broadcast channel for
//! followers.
//!
//! Invariants:
//! * the tail thread only ever takes the store's lock for one push (no I/O, no allocation beyond
//!   the line itself) and never waits on a reader: a dump copies `Arc`s under the lock, and a
//!   follower that falls behind the broadcast channel loses lines (it is told how many) instead
//!   of slowing anything down;
//! * a ring holds at most `lines_per_container` lines, and all rings together at most
//!   `max_bytes` of message bytes (the container with the most bytes gives up its oldest line
//!   first); every line given up is counted;
//! * a container no longer bound keeps its ring for `keep_gone`, then it is forgotten;
//! * the ring holds lines as the engine first reads them: a container's lines appear once, in
//!   file order, whatever the number of drains reading it.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sluice_api::node_config::Stream;
pub use sluice_api::query::RecentLine;
use tokio::{sync::broadcast, time::Instant};

use crate::pipeline::ContainerMeta;

/// Bounds of the recent store.
#[derive(Clone, Debug)]
pub struct RecentSettings {
    /// Lines kept per container.
    pub lines_per_container: usize,
    /// Message bytes kept over all containers.
    pub max_bytes: usize,
    /// How long the lines of a container that is no longer bound are kept.
    pub keep_gone: Duration,
    /// Lines a follower may fall behind before it loses some.
    pub follow_buffer: usize,
}

impl Default for RecentSettings {
    fn default() -> Self {
        Self {
            lines_per_container: 1000,
            max_bytes: 64 << 20,
            keep_gone: Duration::from_secs(3600),
            follow_buffer: 4096,
        }
    }
}

struct Ring {
    /// `(arrival number, line)`, oldest first.
    lines: VecDeque<(u64, Arc<RecentLine>)>,
    bytes: usize,
    gone_since: Option<Instant>,
}

#[derive(Default)]
struct Store {
    rings: HashMap<String, Ring>,
    bytes: usize,
    arrivals: u64,
}

/// The recent lines of the node, shared by the tail thread (writer) and the query API (readers).
pub struct Recent {
    settings: RecentSettings,
    store: Mutex<Store>,
    follow: broadcast::Sender<Arc<RecentLine>>,
    evicted: AtomicU64,
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Which lines a query wants.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this namespace.
    pub namespace: String,
    /// Only these pods (empty: all of the namespace).
    pub pods: Vec<String>,
    /// Only this container.
    pub container: Option<String>,
    /// Only lines stamped at or after this RFC3339 time (compared as timestamps).
    pub since: Option<jiff::Timestamp>,
}

impl Filter {
    /// Whether `line` passes.
    pub fn matches(&self, line: &RecentLine) -> bool {
        line.namespace == self.namespace
            && (self.pods.is_empty() || self.pods.contains(&line.pod))
            && self.container.as_ref().is_none_or(|c| *c == line.container)
            && self
                .since
                .is_none_or(|since| line.time.parse::<jiff::Timestamp>().is_ok_and(|t| t >= since))
    }
}

impl Recent {
    /// An empty store.
    pub fn new(settings: RecentSettings) -> Self {
        let (follow, _) = broadcast::channel(settings.follow_buffer.max(1));
        Self {
            settings,
            store: Mutex::new(Store::default()),
            follow,
            evicted: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // Every mutation keeps the store consistent between statements that can panic.
        self.store.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Keep a line the engine read for the first time (called on the tail thread).
    pub fn push(&self, meta: &ContainerMeta, stream: Stream, time: &str, message: &str) {
        let line = Arc::new(RecentLine {
            time: time.to_owned(),
            namespace: meta.namespace.clone(),
            pod: meta.pod.clone(),
            container: meta.container.clone(),
            stream: stream.as_str().to_owned(),
            line: message.to_owned(),
        });
        if self.follow.receiver_count() > 0 {
            // No receiver keeps up? It is told it lagged; the send itself never waits.
            let _ = self.follow.send(Arc::clone(&line));
        }
        let mut store = self.lock();
        store.arrivals += 1;
        let arrival = store.arrivals;
        let size = line.line.len();
        let ring = store
            .rings
            .entry(meta.container_id.clone())
            .or_insert_with(|| Ring {
                lines: VecDeque::new(),
                bytes: 0,
                gone_since: None,
            });
        ring.gone_since = None;
        ring.lines.push_back((arrival, line));
        ring.bytes += size;
        let mut freed = 0;
        let mut evicted = 0;
        while ring.lines.len() > self.settings.lines_per_container {
            if let Some((_, old)) = ring.lines.pop_front() {
                ring.bytes -= old.line.len();
                freed += old.line.len();
                evicted += 1;
            }
        }
        store.bytes = store.bytes + size - freed;
        while store.bytes > self.settings.max_bytes {
            // The biggest ring gives up its oldest line; among equals, the one holding the oldest.
            let biggest = store.rings.values_mut().max_by_key(|r| {
                let oldest = r.lines.front().map_or(u64::MAX, |(n, _)| *n);
                (r.bytes, std::cmp::Reverse(oldest))
            });
            let Some((_, old)) = biggest.and_then(|r| {
                let old = r.lines.pop_front()?;
                r.bytes -= old.1.line.len();
                Some(old)
            }) else {
                break;
            };
            store.bytes -= old.line.len();
            evicted += 1;
        }
        drop(store);
        if evicted > 0 {
            self.evicted.fetch_add(evicted, Ordering::Relaxed);
        }
    }

    /// The containers (by runtime id without scheme) now bound: the others are gone from now on,
    /// and the rings gone longer than `keep_gone` are forgotten.
    pub fn retain_bound(&self, bound: &HashSet<String>) {
        let now = Instant::now();
        let mut store = self.lock();
        for (id, ring) in &mut store.rings {
            if bound.contains(id) {
                ring.gone_since = None;
            } else if ring.gone_since.is_none() {
                ring.gone_since = Some(now);
            }
        }
        drop(store);
        self.sweep();
    }

    /// Forget the rings of containers gone longer than `keep_gone`.
    pub fn sweep(&self) {
        let now = Instant::now();
        let keep = self.settings.keep_gone;
        let mut store = self.lock();
        let before = store.bytes;
        let mut freed = 0;
        store.rings.retain(|_, r| {
            let kept = r.gone_since.is_none_or(|at| now.duration_since(at) < keep);
            if !kept {
                freed += r.bytes;
            }
            kept
        });
        store.bytes = before - freed;
    }

    /// The lines passing `filter`, in time order (file order within a container), at most the
    /// last `tail` of them.
    pub fn dump(&self, filter: &Filter, tail: usize) -> Vec<Arc<RecentLine>> {
        self.sweep();
        let mut out: Vec<(u64, Arc<RecentLine>)> = {
            let store = self.lock();
            store
                .rings
                .values()
                .flat_map(|r| r.lines.iter())
                .filter(|(_, l)| l.namespace == filter.namespace)
                .cloned()
                .collect()
        };
        out.retain(|(_, l)| filter.matches(l));
        // By the runtime's time stamp, then by arrival (a container's own order, and the order
        // the engine read lines stamped alike).
        out.sort_by_cached_key(|(arrival, l)| (l.time.parse::<jiff::Timestamp>().ok(), *arrival));
        if out.len() > tail {
            out.drain(..out.len() - tail);
        }
        out.into_iter().map(|(_, l)| l).collect()
    }

    /// A receiver of every line pushed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RecentLine>> {
        self.follow.subscribe()
    }

    /// Lines given up to the bounds since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Message bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests;
