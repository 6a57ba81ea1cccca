//! The leader's bookkeeping of work: which nodes wait for a render (in the order they first
//! changed), which writes are in flight, and which keys wait for a retry.
//!
//! Invariants:
//! * a node is queued at most once, however many changes touch it before it is rendered (the
//!   queue coalesces), and it keeps the time of the first of those changes;
//! * at most one write per key is in flight: a key that changes meanwhile waits and is rendered
//!   again when the write completes, so writes of one object never overtake each other;
//! * a failing key is retried after a jittered delay that doubles per consecutive failure of that
//!   key (0.5 s up to 30 s), independently of other keys.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Duration,
};

use futures::{StreamExt, future::BoxFuture, stream::FuturesUnordered};
use rand::Rng;
use sluice_api::crd::{LogBinding, LogDrain};
use tokio::time::Instant;

use crate::{
    Result,
    reconcile::{StatusOutcome, node_config::NodeConfigWrite},
    world::ObjKey,
};

/// One thing the leader writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Key {
    /// A node's config Secret.
    Node(String),
    /// A custom resource's status.
    Status(StatusKey),
}

/// A custom resource whose status the leader writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum StatusKey {
    /// A LogDrain's.
    Drain(ObjKey),
    /// A LogBinding's.
    Binding(ObjKey),
}

impl StatusKey {
    /// The object's `(namespace, name)`.
    pub(super) fn object(&self) -> &ObjKey {
        match self {
            StatusKey::Drain(key) | StatusKey::Binding(key) => key,
        }
    }
}

impl Key {
    /// The metric label of this kind of write.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Key::Node(_) => "node_config",
            Key::Status(StatusKey::Drain(_)) => "drain_status",
            Key::Status(StatusKey::Binding(_)) => "binding_status",
        }
    }
}

/// What [`NodeQueue::take_while`] does with one queued node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Take {
    /// The node was taken (rendered): it leaves the queue.
    Taken,
    /// The node is busy (a write in flight): it keeps its place and time.
    Busy,
    /// No capacity is left: this node and all after it stay queued.
    Stop,
}

/// A write that completed (or failed).
pub(super) enum Done {
    /// A node config write, with when its node was first queued and when the write started.
    Node {
        write: NodeConfigWrite,
        queued: Instant,
        started: Instant,
        result: Result<()>,
    },
    /// A status write, with when that status was written before, and the object as written.
    Status {
        key: StatusKey,
        last: Option<Instant>,
        started: Instant,
        result: Result<StatusOutcome>,
        written: Option<WrittenObject>,
    },
}

/// A LogDrain or LogBinding as the API server returned it after a status write.
pub(super) enum WrittenObject {
    /// A LogDrain.
    Drain(Box<LogDrain>),
    /// A LogBinding.
    Binding(Box<LogBinding>),
}

/// Nodes waiting to be rendered, oldest change first.
#[derive(Default)]
pub(super) struct NodeQueue {
    order: VecDeque<String>,
    since: HashMap<String, Instant>,
}

impl NodeQueue {
    /// Queue `node` (changed at `now`) unless it is queued already.
    pub(super) fn push(&mut self, node: String, now: Instant) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.since.entry(node) {
            self.order.push_back(e.key().clone());
            e.insert(now);
        }
    }

    /// Whether no node waits.
    pub(super) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Offer the queued nodes to `take`, oldest first, until it answers [`Take::Stop`]; nodes it
    /// answers [`Take::Busy`] for keep their place and time.
    pub(super) fn take_while(&mut self, mut take: impl FnMut(&str, Instant) -> Take) {
        let mut kept = VecDeque::with_capacity(self.order.len());
        while let Some(node) = self.order.pop_front() {
            let since = self.since.get(&node).copied().unwrap_or_else(Instant::now);
            match take(&node, since) {
                Take::Taken => {
                    self.since.remove(&node);
                }
                Take::Busy => kept.push_back(node),
                Take::Stop => {
                    kept.push_back(node);
                    kept.append(&mut self.order);
                }
            }
        }
        self.order = kept;
    }
}

/// Writes in flight, at most one per key.
#[derive(Default)]
pub(super) struct Inflight {
    running: FuturesUnordered<BoxFuture<'static, (Key, Done)>>,
    keys: HashSet<Key>,
    nodes: usize,
}

impl Inflight {
    /// Whether a write of `key` is in flight.
    pub(super) fn contains(&self, key: &Key) -> bool {
        self.keys.contains(key)
    }

    /// Node config writes in flight.
    pub(super) fn nodes(&self) -> usize {
        self.nodes
    }

    /// Whether no write is in flight.
    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Status writes in flight.
    pub(super) fn statuses(&self) -> usize {
        self.keys.len() - self.nodes
    }

    /// Start a write of `key`.
    pub(super) fn start(&mut self, key: Key, write: BoxFuture<'static, Done>) {
        if matches!(key, Key::Node(_)) {
            self.nodes += 1;
        }
        self.keys.insert(key.clone());
        self.running.push(Box::pin(async move { (key, write.await) }));
    }

    /// The next write to complete (pending forever while none is in flight).
    pub(super) async fn next(&mut self) -> Done {
        let Some((key, done)) = self.running.next().await else {
            return std::future::pending().await;
        };
        if matches!(key, Key::Node(_)) {
            self.nodes -= 1;
        }
        self.keys.remove(&key);
        done
    }
}

/// Keys waiting for a later attempt: failures (with per-key backoff) and deferred status writes.
#[derive(Default)]
pub(super) struct Retry {
    at: HashMap<Key, Instant>,
    failures: HashMap<Key, u32>,
}

impl Retry {
    /// Record a failure of `key` and schedule it after its backoff; returns the delay.
    pub(super) fn fail(&mut self, key: Key) -> Duration {
        let failures = self.failures.entry(key.clone()).or_default();
        *failures = failures.saturating_add(1);
        let base = Duration::from_millis(250)
            .saturating_mul(1 << (*failures).min(7))
            .min(Duration::from_secs(30));
        let delay = base.mul_f64(rand::rng().random_range(0.75..1.25));
        self.schedule(key, Instant::now() + delay);
        delay
    }

    /// Record a success of `key`: its next failure starts the backoff afresh.
    pub(super) fn succeed(&mut self, key: &Key) {
        self.failures.remove(key);
    }

    /// Try `key` again at `at` (or earlier, if it is scheduled earlier already).
    pub(super) fn schedule(&mut self, key: Key, at: Instant) {
        let slot = self.at.entry(key).or_insert(at);
        *slot = (*slot).min(at);
    }

    /// When the next key is due.
    pub(super) fn next_at(&self) -> Option<Instant> {
        self.at.values().min().copied()
    }

    /// The keys due at `now`, removed from the schedule.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<Key> {
        let due: Vec<Key> = self
            .at
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &due {
            self.at.remove(key);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_queue_coalesces_keeps_order_and_first_time_and_skips_busy_nodes() {
        let mut queue = NodeQueue::default();
        let t0 = Instant::now();
        queue.push("a".into(), t0);
        queue.push("b".into(), t0 + Duration::from_secs(1));
        queue.push("a".into(), t0 + Duration::from_secs(2));
        queue.push("c".into(), t0 + Duration::from_secs(3));
        let mut seen = Vec::new();
        // "a" is busy: skipped, kept; "b" taken; then capacity runs out at "c".
        queue.take_while(|node, since| {
            seen.push((node.to_owned(), since - t0));
            match node {
                "a" => Take::Busy,
                "b" => Take::Taken,
                _ => Take::Stop,
            }
        });
        assert_eq!(
            seen,
            vec![
                ("a".to_owned(), Duration::ZERO),
                ("b".to_owned(), Duration::from_secs(1)),
                ("c".to_owned(), Duration::from_secs(3)),
            ]
        );
        let mut rest = Vec::new();
        queue.take_while(|node, _| {
            rest.push(node.to_owned());
            Take::Taken
        });
        assert_eq!(rest, vec!["a".to_owned(), "c".to_owned()]);
        assert!(queue.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_per_key_and_resets_on_success() {
        let mut retry = Retry::default();
        let a = Key::Node("a".into());
        let first = retry.fail(a.clone());
        let second = retry.fail(a.clone());
        assert!(first >= Duration::from_millis(375) && first <= Duration::from_millis(625));
        assert!(second >= Duration::from_millis(750) && second <= Duration::from_millis(1250));
        let other = retry.fail(Key::Node("b".into()));
        assert!(
            other <= Duration::from_millis(625),
            "another key has its own backoff"
        );
        retry.succeed(&a);
        assert!(retry.fail(a.clone()) <= Duration::from_millis(625));
        tokio::time::advance(Duration::from_secs(2)).await;
        let mut due = retry.take_due(Instant::now());
        due.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(due, vec![a, Key::Node("b".into())]);
        assert_eq!(retry.next_at(), None);
    }
}
