//! What sluice writes at run time in its own namespace, removed when sluice is uninstalled.
//!
//! Helm deletes what the chart rendered; it does not know the objects the components create
//! while they run: the operator's config Secret per node (`sluice-node-<node>`), its leader
//! Lease, and each node's collector Lease (a collector deletes its own on a graceful stop, but
//! helm removes its RBAC at the same moment, so that delete is often refused). The chart runs
//! `sluice-operator cleanup` as a post-delete hook: by then the operator's and the collectors'
//! RBAC is gone, so nothing can write these objects again after they are deleted here.
//!
//! Only objects selected by the labels sluice itself sets, plus the leader Lease by name, are
//! deleted; nothing outside the namespace is touched.

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
use kube::{
    Api, Client, Resource,
    api::{DeleteParams, ListParams},
};
use serde::de::DeserializeOwned;
use sluice_api::health::{LEASE_LABEL, LEASE_LABEL_VALUE};

use crate::{
    error::{Error, Result},
    reconcile::node_config::COMPONENT_SELECTOR,
};

/// The objects [`cleanup`] deleted, as `kind/name`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub objects: Vec<String>,
}

/// Delete the node config Secrets, the collectors' node Leases and the leader Lease
/// `leader_lease` in `namespace`. Objects already gone are not an error.
pub async fn cleanup(client: Client, namespace: &str, leader_lease: &str) -> Result<Removed> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    let mut removed = Removed::default();
    let collector_leases = format!("{LEASE_LABEL}={LEASE_LABEL_VALUE}");
    for name in names(&secrets, COMPONENT_SELECTOR).await? {
        delete(&secrets, &name, &mut removed).await?;
    }
    for name in names(&leases, &collector_leases).await? {
        delete(&leases, &name, &mut removed).await?;
    }
    delete(&leases, leader_lease, &mut removed).await?;
    Ok(removed)
}

/// The names of the objects `selector` selects.
async fn names<K>(api: &Api<K>, selector: &str) -> Result<Vec<String>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let list = api
        .list_metadata(&ListParams::default().labels(selector))
        .await
        .map_err(|e| Error::kube("list", format!("{} with {selector}", K::kind(&())), e))?;
    Ok(list.items.into_iter().filter_map(|o| o.metadata.name).collect())
}

/// Delete `name`, noting it in `removed`; a 404 means someone was first.
async fn delete<K>(api: &Api<K>, name: &str, removed: &mut Removed) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&());
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {
            removed.objects.push(format!("{}/{name}", kind.to_lowercase()));
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(Error::kube("delete", format!("{kind} {name}"), e)),
    }
}
