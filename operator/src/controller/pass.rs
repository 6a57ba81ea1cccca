//! One reconciliation pass of the leader, and the Secret reads that feed it.
//!
//! Order within a pass: read the Secrets newly named by dirty drains (so rendering sees them),
//! then write node configs, then drain and binding statuses. Failures go to the retry set.

use std::{collections::BTreeSet, time::Duration};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use rand::Rng;
use tokio::time::Instant;

use super::Leader;
use crate::{
    Error,
    reconcile::{Outcome, binding, drain},
    render,
    world::{Dirty, ObjKey},
};

impl Leader {
    /// Reconcile what is dirty.
    pub(super) async fn pass(&mut self) {
        if !self.first_pass_done {
            let nodes: BTreeSet<String> = self.world.nodes().chain(self.writer.nodes()).cloned().collect();
            self.dirty.nodes.extend(nodes);
            self.dirty.drains.extend(self.world.drains.keys().cloned());
            self.dirty.bindings.extend(self.world.bindings.keys().cloned());
        }
        if self.dirty.is_empty() && self.first_pass_done {
            return;
        }
        self.load_new_secrets().await;
        let dirty = std::mem::take(&mut self.dirty);
        let mut failed = Dirty::default();
        self.sync_nodes(dirty.nodes, &mut failed).await;
        self.sync_statuses(dirty.drains, dirty.bindings, &mut failed)
            .await;
        self.schedule_retry(failed);
        if !self.first_pass_done {
            self.first_pass_done = true;
            self.ctx.health.set_ready(true);
            tracing::info!(
                nodes = self.writer.nodes().count(),
                "first pass done: node configs are up to date"
            );
        }
    }

    async fn sync_nodes(&mut self, nodes: BTreeSet<String>, failed: &mut Dirty) {
        if nodes.is_empty() {
            return;
        }
        let started = Instant::now();
        let configs: Vec<_> = nodes
            .into_iter()
            .map(|n| {
                let config = render::render_node(&self.world, &n);
                (n, config)
            })
            .collect();
        let count = configs.len() as u64;
        for (node, e) in self.writer.sync(configs).await {
            tracing::warn!(node, error = %e, "could not write the node config; will retry");
            self.ctx
                .metrics
                .errors
                .with_label_values(&["node_config", e.kind()])
                .inc();
            failed.nodes.insert(node);
        }
        self.ctx
            .metrics
            .reconciles
            .with_label_values(&["node_config"])
            .inc_by(count);
        self.ctx
            .metrics
            .duration
            .with_label_values(&["node_config"])
            .observe(started.elapsed().as_secs_f64());
    }

    async fn sync_statuses(
        &mut self,
        drains: BTreeSet<ObjKey>,
        bindings: BTreeSet<ObjKey>,
        failed: &mut Dirty,
    ) {
        let interval = self.ctx.settings.status_count_interval;
        let items: Vec<(bool, ObjKey, Option<Instant>)> = drains
            .into_iter()
            .map(|k| (true, k))
            .chain(bindings.into_iter().map(|k| (false, k)))
            .map(|(is_drain, k)| {
                let last = self.status_written.get(&(is_drain, k.clone())).copied();
                (is_drain, k, last)
            })
            .collect();
        // Status writes run concurrently (each object is written at most once per pass).
        let (ctx, recorder, world) = (&self.ctx, &self.recorder, &self.world);
        let results: Vec<_> = stream::iter(items)
            .map(|(is_drain, key, last)| async move {
                let started = Instant::now();
                let due = last.is_none_or(|at| at.elapsed() >= interval);
                let outcome = if is_drain {
                    drain::reconcile(ctx, recorder, world, &key, due).await
                } else {
                    binding::reconcile(ctx, recorder, world, &key, due).await
                };
                let kind = if is_drain {
                    "drain_status"
                } else {
                    "binding_status"
                };
                ctx.metrics.reconciles.with_label_values(&[kind]).inc();
                ctx.metrics
                    .duration
                    .with_label_values(&[kind])
                    .observe(started.elapsed().as_secs_f64());
                (is_drain, key, last, outcome)
            })
            .buffer_unordered(self.ctx.settings.write_concurrency.max(1))
            .collect()
            .await;
        for (is_drain, key, last, outcome) in results {
            self.status_outcome(is_drain, key, last, outcome, failed);
        }
        let live = (&self.world.drains, &self.world.bindings);
        self.status_written.retain(|(d, k), _| {
            if *d {
                live.0.contains_key(k)
            } else {
                live.1.contains_key(k)
            }
        });
    }

    fn status_outcome(
        &mut self,
        is_drain: bool,
        key: ObjKey,
        last: Option<Instant>,
        outcome: crate::Result<Outcome>,
        failed: &mut Dirty,
    ) {
        let later = |d: &mut Dirty| {
            if is_drain {
                d.drains.insert(key.clone())
            } else {
                d.bindings.insert(key.clone())
            }
        };
        match outcome {
            Ok(Outcome::Written) => {
                self.status_written
                    .insert((is_drain, key.clone()), Instant::now());
            }
            Ok(Outcome::Unchanged) => {}
            Ok(Outcome::Deferred) => {
                // Counts only, written recently: write them when the interval has passed.
                let at = last.map_or_else(Instant::now, |t| t + self.ctx.settings.status_count_interval);
                self.retry_at = Some(self.retry_at.map_or(at, |t| t.min(at)));
                later(&mut self.retry);
            }
            Err(e) => {
                self.note_failure(
                    if is_drain {
                        "drain_status"
                    } else {
                        "binding_status"
                    },
                    &key,
                    &e,
                );
                later(failed);
            }
        }
    }

    fn note_failure(&self, kind: &str, key: &ObjKey, e: &Error) {
        // A conflict means our picture is a little behind; the watch event that follows fixes it.
        tracing::warn!(kind, namespace = key.0, name = key.1, error = %e, "reconcile failed; will retry");
        self.ctx.metrics.errors.with_label_values(&[kind, e.kind()]).inc();
    }

    /// Retry failures after 0.5 s, doubling per consecutive failing pass up to 30 s, ±25 % jitter.
    fn schedule_retry(&mut self, failed: Dirty) {
        if failed.is_empty() {
            self.failures = 0;
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let base = Duration::from_millis(500)
            .saturating_mul(1 << self.failures.min(6))
            .min(Duration::from_secs(30));
        let jitter = rand::rng().random_range(0.75..1.25);
        self.retry.merge(failed);
        let at = Instant::now() + base.mul_f64(jitter);
        self.retry_at = Some(self.retry_at.map_or(at, |t| t.min(at)));
    }

    /// The Secrets named by dirty drains that were never read.
    async fn load_new_secrets(&mut self) {
        let wanted: BTreeSet<ObjKey> = self
            .dirty
            .drains
            .iter()
            .filter_map(|k| Some((k, self.world.drains.get(k)?)))
            .flat_map(|(k, d)| {
                render::secret_names(&d.spec)
                    .into_iter()
                    .map(|n| (k.0.clone(), n))
            })
            .filter(|k| !self.world.secrets.contains_key(k))
            .collect();
        self.read_secrets(wanted).await;
    }

    /// Re-read referenced Secrets: all of them (`only_missing == false`, the periodic resync, which
    /// also rechecks every status) or only those that were missing.
    pub(super) async fn resync(&mut self, only_missing: bool) {
        let referenced: BTreeSet<ObjKey> = self
            .world
            .drains
            .iter()
            .flat_map(|(k, d)| {
                render::secret_names(&d.spec)
                    .into_iter()
                    .map(|n| (k.0.clone(), n))
            })
            .collect();
        self.world.secrets.retain(|k, _| referenced.contains(k));
        let wanted: BTreeSet<ObjKey> = referenced
            .into_iter()
            .filter(|k| !only_missing || matches!(self.world.secrets.get(k), Some(None) | None))
            .collect();
        self.read_secrets(wanted).await;
        if !only_missing {
            self.dirty.drains.extend(self.world.drains.keys().cloned());
            self.dirty.bindings.extend(self.world.bindings.keys().cloned());
        }
    }

    async fn read_secrets(&mut self, keys: BTreeSet<ObjKey>) {
        for key in keys {
            let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &key.0);
            let data = match api.get_opt(&key.1).await {
                Ok(found) => found.map(|s| render::drain::secret_data(&s)),
                Err(e) => {
                    let e = Error::kube("get", format!("Secret {}/{}", key.0, key.1), e);
                    tracing::warn!(error = %e, "could not read a Secret a LogDrain names");
                    self.ctx
                        .metrics
                        .errors
                        .with_label_values(&["secret", e.kind()])
                        .inc();
                    None
                }
            };
            let dirty = self.world.set_secret(key, data);
            self.dirty.merge(dirty);
        }
    }
}
