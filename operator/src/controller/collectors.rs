//! The leader's view of the collectors: one watch of the collector Leases in the operator's
//! namespace (selected by label), and the drains whose status a Lease change touches.
//!
//! Invariants: a Lease change dirties only the drains its report names and the drains of the
//! namespaces whose pods run on its node (coverage); Leases that run out are noticed by
//! [`Leader::check_expired`] on the status beat, since an expiry produces no event.

use std::collections::BTreeSet;

use futures::{StreamExt, stream::BoxStream};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use sluice_api::health::{LEASE_LABEL, LEASE_LABEL_VALUE};

use super::{
    Leader,
    watch::{ResourceEvent, Watch, WatchEvent, Watched},
};
use crate::{Error, Result, world::Dirty, world::collectors::lease_node};

/// The watch of the collector Leases in `namespace`.
pub(super) fn watch(client: &kube::Client, namespace: &str) -> BoxStream<'static, Result<WatchEvent>> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    let config = watcher::Config::default()
        .labels(&format!("{LEASE_LABEL}={LEASE_LABEL_VALUE}"))
        .any_semantic();
    watcher(api, config)
        .default_backoff()
        .map(|event| {
            event
                .map(|event| WatchEvent {
                    scope: None,
                    event: ResourceEvent::Lease(Box::new(event)),
                })
                .map_err(|source| Error::Watch {
                    resource: Watched::CollectorLeases.resource(),
                    source,
                })
        })
        .boxed()
}

impl Leader {
    pub(super) fn apply_lease(&mut self, event: watcher::Event<Lease>) -> Dirty {
        match event {
            watcher::Event::Apply(lease) | watcher::Event::InitApply(lease) => {
                if let Some(listed) = &mut self.relist.leases {
                    listed.extend(lease_node(&lease).map(str::to_owned));
                }
                self.lease_changed(&lease, true)
            }
            watcher::Event::Delete(lease) => self.lease_changed(&lease, false),
            watcher::Event::Init => {
                self.relist.leases = Some(BTreeSet::new());
                Dirty::default()
            }
            watcher::Event::InitDone => {
                let listed = self.relist.leases.take().unwrap_or_default();
                let forgotten = self.world.collectors.retain_listed(&listed);
                let mut dirty = Dirty::default();
                for node in forgotten.nodes {
                    dirty.merge(self.world.collector_dirty(&node, BTreeSet::new()));
                }
                dirty.merge(self.world.collector_dirty("", forgotten.owners));
                self.relist.synced.insert(Watch {
                    resource: Watched::CollectorLeases,
                    scope: None,
                });
                dirty
            }
        }
    }

    fn lease_changed(&mut self, lease: &Lease, present: bool) -> Dirty {
        let Some(node) = lease_node(lease) else {
            return Dirty::default();
        };
        let owners = self.world.collectors.set_lease(node, present.then_some(lease));
        self.world.collector_dirty(node, owners)
    }

    /// Mark the drains of nodes whose collector Lease ran out since the last check.
    pub(super) fn check_expired(&mut self) {
        let now = Timestamp::now();
        let since = std::mem::replace(&mut self.leases_checked, now);
        for node in self.world.collectors.expired_between(since, now) {
            tracing::info!(node, "collector Lease expired: the node is not covered");
            let dirty = self.world.collector_dirty(&node, BTreeSet::new());
            self.dirty.merge(dirty);
        }
    }
}
