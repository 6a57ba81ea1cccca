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
//!   `max_bytes` of message and label bytes (the container with the most message bytes gives up
//!   its oldest line first); every line given up is counted;
//! * a ring keeps its container's pod labels once (shared by its lines, and by the lines sent to
//!   followers), so a label selector matches a pod's lines also after the pod was deleted;
//! * a container no longer bound keeps its ring (and its labels) for `keep_gone`, then it is
//!   forgotten;
//! * every line gets an arrival number (the store's count of lines pushed) and is sent to
//!   followers under the store's lock, so a follower that subscribes and copies the rings under
//!   that lock ([`Recent::follow`]) gets each line exactly once: from the copy, or from the
//!   channel;
//! * the ring holds lines as the engine first reads them: a container's lines appear once, in
//!   file order, whatever the number of drains reading it.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

pub use sluice_api::query::RecentLine;
use sluice_api::{node_config::Stream, selector::Selector};
use tokio::{sync::broadcast, time::Instant};

use crate::pipeline::ContainerMeta;

/// Bounds of the recent store.
#[derive(Clone, Debug)]
pub struct RecentSettings {
    /// Lines kept per container.
    pub lines_per_container: usize,
    /// Message and label bytes kept over all containers.
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

/// A pod's labels.
pub type Labels = BTreeMap<String, String>;

struct Ring {
    /// `(arrival number, line)`, oldest first.
    lines: VecDeque<(u64, Arc<RecentLine>)>,
    /// Message bytes of `lines`.
    bytes: usize,
    /// The pod's labels as last pushed, and the metadata revision they came with.
    labels: Arc<Labels>,
    revision: u64,
    gone_since: Option<Instant>,
}

/// Bytes `labels` hold (keys and values).
fn label_bytes(labels: &Labels) -> usize {
    labels.iter().map(|(k, v)| k.len() + v.len()).sum()
}

#[derive(Default)]
struct Store {
    rings: HashMap<String, Ring>,
    /// Message bytes of every ring.
    bytes: usize,
    /// Label bytes of every ring.
    label_bytes: usize,
    arrivals: u64,
}

/// A line as followers get it: with its arrival number and its pod's labels.
#[derive(Clone, Debug)]
pub struct Followed {
    /// The store's count of lines pushed, this one included.
    pub arrival: u64,
    /// The pod's labels when the line was read.
    pub labels: Arc<Labels>,
    /// The line.
    pub line: Arc<RecentLine>,
}

/// Where a follow that ended left off: the store (`epoch`, new for every collector process) and
/// the arrival number of the last line it looked at. As text, `EPOCH-ARRIVAL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The store it belongs to.
    pub epoch: u64,
    /// The last arrival looked at.
    pub arrival: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.epoch, self.arrival)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a cursor EPOCH-ARRIVAL");
        let (epoch, arrival) = text.split_once('-').ok_or_else(bad)?;
        Ok(Self {
            epoch: epoch.parse().map_err(|_| bad())?,
            arrival: arrival.parse().map_err(|_| bad())?,
        })
    }
}

/// A follow's start: the lines to send first, then the channel of every later line.
#[derive(Debug)]
pub struct FollowStart {
    /// The lines kept after the cursor that pass the filter, in arrival order (at most the limit
    /// asked for: the newest).
    pub replay: Vec<Followed>,
    /// Lines after the cursor that passed the filter but were beyond the limit.
    pub skipped: u64,
    /// The arrival number of the last line pushed before the subscription.
    pub arrival: u64,
    /// Every line pushed after `arrival`.
    pub receiver: broadcast::Receiver<Followed>,
}

/// A cursor of another store (the collector restarted): the lines in between are unknown.
#[derive(Debug, thiserror::Error)]
#[error("cursor {0} is not of this collector process (it restarted): its lines in between are unknown")]
pub struct StaleCursor(pub Cursor);

/// The recent lines of the node, shared by the tail thread (writer) and the query API (readers).
pub struct Recent {
    settings: RecentSettings,
    store: Mutex<Store>,
    follow: broadcast::Sender<Followed>,
    evicted: AtomicU64,
    epoch: u64,
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
    /// Only lines of pods whose labels (as last read, also for a deleted pod) it selects.
    pub selector: Option<Selector>,
}

impl Filter {
    /// Whether `line`, of a pod labelled `labels`, passes.
    pub fn matches(&self, labels: &Labels, line: &RecentLine) -> bool {
        self.selector.as_ref().is_none_or(|s| s.matches(labels)) && self.matches_line(line)
    }

    /// Whether `line` passes all but the selector.
    pub fn matches_line(&self, line: &RecentLine) -> bool {
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
        // Tells this process's cursors from an earlier one's (a restarted collector).
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id()).rotate_left(40);
        Self {
            settings,
            store: Mutex::new(Store::default()),
            follow,
            evicted: AtomicU64::new(0),
            epoch,
        }
    }

    /// The store's epoch (see [`Cursor`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
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
        let mut store = self.lock();
        store.arrivals += 1;
        let arrival = store.arrivals;
        let size = line.line.len();
        let mut labels_added = 0;
        let mut labels_freed = 0;
        let ring = store.rings.entry(meta.container_id.clone()).or_insert_with(|| {
            labels_added = label_bytes(&meta.labels);
            Ring {
                lines: VecDeque::new(),
                bytes: 0,
                labels: Arc::new(meta.labels.clone()),
                revision: meta.revision,
                gone_since: None,
            }
        });
        // New metadata (a changed label): compared by content only when it comes unnumbered.
        if ring.revision != meta.revision || (meta.revision == 0 && *ring.labels != meta.labels) {
            if *ring.labels != meta.labels {
                labels_freed = label_bytes(&ring.labels);
                labels_added = label_bytes(&meta.labels);
                ring.labels = Arc::new(meta.labels.clone());
            }
            ring.revision = meta.revision;
        }
        ring.gone_since = None;
        if self.follow.receiver_count() > 0 {
            // Under the lock, so a follower's subscription and copy see each line once (see the
            // module docs). No receiver keeps up? It is told it lagged; the send never waits.
            let _ = self.follow.send(Followed {
                arrival,
                labels: Arc::clone(&ring.labels),
                line: Arc::clone(&line),
            });
        }
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
        store.label_bytes = store.label_bytes + labels_added - labels_freed;
        while store.bytes + store.label_bytes > self.settings.max_bytes {
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
        let (mut freed, mut labels_freed) = (0, 0);
        store.rings.retain(|_, r| {
            let kept = r.gone_since.is_none_or(|at| now.duration_since(at) < keep);
            if !kept {
                freed += r.bytes;
                labels_freed += label_bytes(&r.labels);
            }
            kept
        });
        store.bytes -= freed;
        store.label_bytes -= labels_freed;
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
                .filter(|r| filter.selector.as_ref().is_none_or(|s| s.matches(&r.labels)))
                .flat_map(|r| r.lines.iter())
                .filter(|(_, l)| l.namespace == filter.namespace)
                .cloned()
                .collect()
        };
        out.retain(|(_, l)| filter.matches_line(l));
        // By the runtime's time stamp, then by arrival (a container's own order, and the order
        // the engine read lines stamped alike).
        out.sort_by_cached_key(|(arrival, l)| (l.time.parse::<jiff::Timestamp>().ok(), *arrival));
        if out.len() > tail {
            out.drain(..out.len() - tail);
        }
        out.into_iter().map(|(_, l)| l).collect()
    }

    /// A receiver of every line pushed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Followed> {
        self.follow.subscribe()
    }

    /// Start a follow: subscribe, and with `after` (where an earlier follow left off) copy the
    /// kept lines pushed after it that pass `filter` (the newest `limit` of them), at once under
    /// the lock, so that each line pushed after `after` is in the copy or comes on the channel,
    /// never both. The lines given up to the bounds in between are not in the copy.
    pub fn follow(
        &self,
        filter: &Filter,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<FollowStart, StaleCursor> {
        if let Some(cursor) = after
            && cursor.epoch != self.epoch
        {
            return Err(StaleCursor(cursor));
        }
        let store = self.lock();
        let receiver = self.follow.subscribe();
        let arrival = store.arrivals;
        let mut replay: Vec<Followed> = match after {
            None => Vec::new(),
            Some(cursor) => store
                .rings
                .values()
                .flat_map(|r| {
                    r.lines
                        .iter()
                        .filter(move |(n, l)| *n > cursor.arrival && filter.matches(&r.labels, l))
                        .map(|(n, l)| Followed {
                            arrival: *n,
                            labels: Arc::clone(&r.labels),
                            line: Arc::clone(l),
                        })
                })
                .collect(),
        };
        drop(store);
        replay.sort_by_key(|f| f.arrival);
        let skipped = replay.len().saturating_sub(limit);
        replay.drain(..skipped);
        Ok(FollowStart {
            replay,
            skipped: skipped as u64,
            arrival,
            receiver,
        })
    }

    /// Lines given up to the bounds since the start.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Message and label bytes held now.
    pub fn bytes(&self) -> usize {
        let store = self.lock();
        store.bytes + store.label_bytes
    }
}

#[cfg(test)]
mod tests;
