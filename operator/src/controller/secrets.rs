//! The Secrets drains name, read by name only (never listed or watched) in the drain's
//! namespace: those newly named before a pass renders, those of failing drains on the retry beat,
//! and all of them on the resync beat.
//!
//! Invariant: a Secret that could not be read keeps what was known of it; one never read stays
//! unknown, so its drain does not resolve until a read succeeds.

use std::collections::BTreeSet;

use futures::{StreamExt, stream};
use sluice_api::crd::LogDrain;

use super::Leader;
use crate::{
    resolve::{self, SecretData},
    world::ObjKey,
};

impl Leader {
    /// The Secrets named by dirty drains that were never read.
    pub(super) async fn load_new_secrets(&mut self) {
        let world = &self.world;
        let dirty = self
            .dirty
            .drains
            .iter()
            .filter_map(|k| Some((k, world.drains.get(k)?)));
        let wanted: BTreeSet<ObjKey> = secret_keys(dirty)
            .into_iter()
            .filter(|k| !world.secrets.contains_key(k))
            .collect();
        self.read_secrets(wanted).await;
    }

    /// Re-read referenced Secrets: all of them (`only_failing == false`, the periodic resync, which
    /// also rechecks every status and resolves every drain again, since a certificate can expire
    /// without any object changing), or only those of drains that do not
    /// resolve now (missing, or holding something invalid), so a fixed Secret shows soon.
    pub(super) async fn resync(&mut self, only_failing: bool) {
        let world = &self.world;
        let referenced = secret_keys(world.drains.iter());
        let wanted = secret_keys(
            world
                .drains
                .iter()
                .filter(|(k, _)| !only_failing || !matches!(world.resolved(k), Some(Ok(_)))),
        );
        self.world.secrets.retain(|k, _| referenced.contains(k));
        self.read_secrets(wanted).await;
        if !only_failing {
            self.dirty.drains.extend(self.world.drains.keys().cloned());
            self.dirty.bindings.extend(self.world.bindings.keys().cloned());
            let changed = self.world.refresh_resolved();
            self.dirty.merge(changed);
        }
    }

    /// Read Secrets by name, several at once. A Secret that could not be read keeps what was known
    /// of it (a passing API error must not take a working drain out of every node config); one
    /// never read stays unknown, so its drain does not resolve and is read again on the retry beat.
    async fn read_secrets(&mut self, keys: BTreeSet<ObjKey>) {
        let secrets = self.cluster.secrets.as_ref();
        let reads: Vec<_> = stream::iter(keys)
            .map(|key| async move {
                let result = secrets.get(&key).await;
                (key, result)
            })
            .buffer_unordered(self.ctx.settings.write_concurrency.max(1))
            .collect()
            .await;
        for (key, result) in reads {
            match result {
                Ok(found) => {
                    let dirty = self.world.set_secret(key, SecretData::of(found.as_ref()));
                    self.dirty.merge(dirty);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read a Secret a LogDrain names; keeping what was known of it");
                    self.ctx
                        .metrics
                        .errors
                        .with_label_values(&["secret", e.kind()])
                        .inc();
                }
            }
        }
    }
}

/// The key of every Secret these drains name.
fn secret_keys<'a>(drains: impl Iterator<Item = (&'a ObjKey, &'a LogDrain)>) -> BTreeSet<ObjKey> {
    drains
        .flat_map(|(k, d)| {
            resolve::secret_names(&d.spec)
                .into_iter()
                .map(|name| ObjKey::new(k.namespace.clone(), name))
        })
        .collect()
}
