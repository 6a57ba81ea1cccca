//! One reconciliation pass of the leader, and the completion of the writes it starts.
//!
//! Order within a pass: read the Secrets newly named by dirty drains (so rendering sees them),
//! then render queued nodes and start the writes of those that changed, then recompute dirty
//! statuses and start their writes. A pass never waits for a write: writes run in
//! [`Inflight`](super::work::Inflight) and [`Leader::finish`] records them; failures wait in
//! [`Retry`](super::work::Retry). Node writes and status writes each have their own budget of
//! `write_concurrency`, so status writes never hold node configs back.

use std::collections::BTreeSet;

use futures::FutureExt;
use tokio::time::Instant;

use super::{
    FirstPass, Leader,
    work::{Done, Key, StatusKey, Take, WrittenObject},
};
use crate::{
    reconcile::{StatusOutcome, Step, binding, drain, node_config},
    render,
    world::key_of,
};

impl Leader {
    /// Reconcile what is dirty, as far as the write budgets allow.
    pub(super) async fn pass(&mut self) {
        if self.first_pass == FirstPass::Pending {
            self.first_pass = FirstPass::Started;
            let nodes: BTreeSet<String> = self.world.nodes().chain(self.hashes.keys()).cloned().collect();
            self.dirty.nodes.extend(nodes);
            self.dirty.drains.extend(self.world.drains.keys().cloned());
            self.dirty.bindings.extend(self.world.bindings.keys().cloned());
        }
        if !self.dirty.drains.is_empty() {
            self.load_new_secrets().await;
        }
        let now = Instant::now();
        for node in std::mem::take(&mut self.dirty.nodes) {
            self.queue.push(node, now);
        }
        self.start_node_writes();
        self.start_status_writes();
        if self.first_pass == FirstPass::Started && self.queue.is_empty() && self.inflight.nodes() == 0 {
            self.first_pass = FirstPass::Done;
            self.ctx.health.set_ready(true);
            tracing::info!(
                nodes = self.hashes.len(),
                "first pass done: node configs are up to date"
            );
        }
    }

    /// Mark a key for the next pass (a retry that is due).
    pub(super) fn mark(&mut self, key: Key) {
        match key {
            Key::Node(node) => self.dirty.nodes.insert(node),
            Key::Status(StatusKey::Drain(key)) => self.dirty.drains.insert(key),
            Key::Status(StatusKey::Binding(key)) => self.dirty.bindings.insert(key),
        };
    }

    /// Render queued nodes, oldest first, and start a write for each whose config changed, while
    /// the node write budget lasts. A node with a write in flight waits for it.
    fn start_node_writes(&mut self) {
        let budget = self.ctx.settings.write_concurrency.max(1);
        let Self {
            queue,
            inflight,
            world,
            hashes,
            cluster,
            ctx,
            retry,
            dirty,
            ..
        } = self;
        queue.take_while(|node, queued| {
            let key = Key::Node(node.to_owned());
            if inflight.nodes() >= budget {
                return Take::Stop;
            }
            if inflight.contains(&key) {
                return Take::Busy;
            }
            let started = Instant::now();
            let limit = ctx.settings.node_config_limit;
            let rendered = render::render_within(world, node, limit);
            if !rendered.left_out.is_empty() {
                tracing::warn!(node, drains = ?rendered.left_out.keys().collect::<Vec<_>>(), limit, "node config too large; drains left out");
            }
            dirty.merge(world.set_left_out(node, &rendered.left_out, limit));
            ctx.metrics
                .drains_left_out
                .set(i64::try_from(world.left_out_count()).unwrap_or(i64::MAX));
            let write = match node_config::plan(hashes, node, rendered.config) {
                Ok(Some(write)) => write,
                Ok(None) => return Take::Taken,
                Err(e) => {
                    tracing::warn!(node, error = %e, "could not render the node config; will retry");
                    ctx.metrics
                        .errors
                        .with_label_values(&[key.kind(), e.kind()])
                        .inc();
                    retry.fail(key);
                    return Take::Taken;
                }
            };
            let (store, leader) = (cluster.node_configs.clone(), ctx.clone());
            let task = async move {
                let result = match leader.may_write() {
                    Ok(()) => store.write(&write).await,
                    Err(e) => Err(e),
                };
                Done::Node {
                    write,
                    queued,
                    started,
                    result,
                }
            };
            inflight.start(key, task.boxed());
            Take::Taken
        });
    }

    /// Recompute dirty statuses and start the writes they need, while the status budget lasts.
    fn start_status_writes(&mut self) {
        let budget = self.ctx.settings.write_concurrency.max(1);
        let interval = self.ctx.settings.status_count_interval;
        let keys: Vec<StatusKey> = (self.dirty.drains.iter().cloned().map(StatusKey::Drain))
            .chain(self.dirty.bindings.iter().cloned().map(StatusKey::Binding))
            .filter(|key| !self.inflight.contains(&Key::Status(key.clone())))
            .collect();
        for key in keys {
            if self.inflight.statuses() >= budget {
                break;
            }
            let last = self.status_written.get(&key).copied();
            let due = last.is_none_or(|at| at.elapsed() >= interval);
            let started = Instant::now();
            let step = match &key {
                StatusKey::Drain(object) => {
                    self.dirty.drains.remove(object);
                    let step = drain::reconcile(&self.ctx, &self.cluster, &self.world, object, due);
                    erase(step, |drain| WrittenObject::Drain(Box::new(drain)))
                }
                StatusKey::Binding(object) => {
                    self.dirty.bindings.remove(object);
                    let step = binding::reconcile(&self.ctx, &self.cluster, &self.world, object, due);
                    erase(step, |binding| WrittenObject::Binding(Box::new(binding)))
                }
            };
            match step {
                Step::Done(outcome) => self.status_done(key, last, started, Ok(outcome), None),
                Step::Write(write) => {
                    let done_key = key.clone();
                    let write = write.map(move |result| {
                        let (result, written) = match result {
                            Ok(object) => (Ok(StatusOutcome::Written), Some(object)),
                            Err(e) => (Err(e), None),
                        };
                        Done::Status {
                            key: done_key,
                            last,
                            started,
                            result,
                            written,
                        }
                    });
                    self.inflight.start(Key::Status(key), write.boxed());
                }
            }
        }
        let world = &self.world;
        self.status_written.retain(|key, _| match key {
            StatusKey::Drain(object) => world.drains.contains_key(object),
            StatusKey::Binding(object) => world.bindings.contains_key(object),
        });
    }

    /// Record a completed write.
    pub(super) fn finish(&mut self, done: Done) {
        match done {
            Done::Node {
                write,
                queued,
                started,
                result,
            } => self.node_done(write, queued, started, result),
            Done::Status {
                key,
                last,
                started,
                result,
                written,
            } => self.status_done(key, last, started, result, written),
        }
    }

    fn node_done(
        &mut self,
        write: node_config::NodeConfigWrite,
        queued: Instant,
        started: Instant,
        result: crate::Result<()>,
    ) {
        let key = Key::Node(write.node().to_owned());
        self.count_reconcile(&key, started);
        let metrics = &self.ctx.metrics;
        match result {
            Ok(()) => {
                write.record(&mut self.hashes);
                metrics.node_config_lag.observe(queued.elapsed().as_secs_f64());
                metrics
                    .node_configs
                    .set(i64::try_from(self.hashes.len()).unwrap_or(i64::MAX));
                tracing::debug!(
                    node = write.node(),
                    lag_ms = queued.elapsed().as_millis() as u64,
                    write_ms = started.elapsed().as_millis() as u64,
                    "node config written"
                );
                self.retry.succeed(&key);
            }
            Err(e) => {
                let delay = self.retry.fail(key.clone());
                tracing::warn!(node = write.node(), error = %e, retry_in = ?delay, "could not write the node config; will retry");
                metrics.errors.with_label_values(&[key.kind(), e.kind()]).inc();
            }
        }
    }

    /// Count one reconciliation of `key` and its duration.
    fn count_reconcile(&self, key: &Key, started: Instant) {
        let metrics = &self.ctx.metrics;
        metrics.reconciles.with_label_values(&[key.kind()]).inc();
        metrics
            .duration
            .with_label_values(&[key.kind()])
            .observe(started.elapsed().as_secs_f64());
    }

    fn status_done(
        &mut self,
        status_key: StatusKey,
        last: Option<Instant>,
        started: Instant,
        outcome: crate::Result<StatusOutcome>,
        object: Option<WrittenObject>,
    ) {
        let key = Key::Status(status_key.clone());
        self.count_reconcile(&key, started);
        // Compare the next desired status with what was written, not with the object the watch
        // has not brought back yet (which would write the same status twice).
        match object {
            Some(WrittenObject::Drain(d)) => {
                if let Some(known) = self.world.drains.get_mut(&key_of(&d.metadata)) {
                    known.status = d.status;
                }
            }
            Some(WrittenObject::Binding(b)) => {
                if let Some(known) = self.world.bindings.get_mut(&key_of(&b.metadata)) {
                    known.status = b.status;
                }
            }
            None => {}
        }
        let metrics = &self.ctx.metrics;
        match outcome {
            Ok(StatusOutcome::Written) => {
                self.status_written.insert(status_key, Instant::now());
                self.retry.succeed(&key);
            }
            Ok(StatusOutcome::Unchanged) => self.retry.succeed(&key),
            Ok(StatusOutcome::Deferred) => {
                // Counts only, written recently: write them when the interval has passed.
                let at = last.map_or_else(Instant::now, |t| t + self.ctx.settings.status_count_interval);
                self.retry.schedule(key, at);
            }
            Err(e) => {
                // A conflict means our picture is a little behind; the watch event that follows fixes it.
                let object = status_key.object();
                let delay = self.retry.fail(key.clone());
                tracing::warn!(kind = key.kind(), namespace = object.namespace, name = object.name, error = %e, retry_in = ?delay, "reconcile failed; will retry");
                metrics.errors.with_label_values(&[key.kind(), e.kind()]).inc();
            }
        }
    }

    /// Compare the node configs as stored with what this leader believes they hold, and render
    /// again those that differ (a late write of a deposed leader).
    pub(super) async fn recheck_stored(&mut self) {
        let stored = match self.cluster.node_configs.stored().await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the node configs again");
                return;
            }
        };
        let changed: BTreeSet<String> = (stored.keys().chain(self.hashes.keys()))
            .filter(|n| stored.get(*n) != self.hashes.get(*n))
            .cloned()
            .collect();
        if !changed.is_empty() {
            tracing::warn!(
                nodes = changed.len(),
                "node configs changed behind this leader; rendering them again"
            );
        }
        for node in &changed {
            match stored.get(node) {
                Some(hash) => self.hashes.insert(node.clone(), hash.clone()),
                None => self.hashes.remove(node),
            };
        }
        self.dirty.nodes.extend(changed);
    }
}

/// A status step with the written object wrapped, so drains and bindings share one path.
fn erase<K: Send + 'static>(step: Step<K>, wrap: fn(K) -> WrittenObject) -> Step<WrittenObject> {
    match step {
        Step::Done(outcome) => Step::Done(outcome),
        Step::Write(write) => Step::Write(write.map(move |r| r.map(wrap)).boxed()),
    }
}
