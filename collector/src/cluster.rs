//! Cluster mode: the node config comes from the API server, and the collector holds a Lease.
//!
//! * [`source`]: watches exactly this node's config Secret (`sluice-node-<node>` in the sluice
//!   namespace, by a field selector on `metadata.name`) and hands every valid change to the same
//!   apply path a file reload takes; keeps the last good config in the state dir and starts from
//!   it when the API server cannot be reached.
//! * [`lease`]: the node's `coordination.k8s.io/v1` Lease (`sluice-collector-<node>`, holder = pod
//!   name), renewed every 10 s with the drains' health figures as an annotation
//!   ([`sluice_api::health`]), deleted on a graceful stop.
//!
//! Invariants:
//! * The API server being away never stops shipping and never ends the process: the watch and the
//!   Lease retry with jittered backoff, the running config stays in force.
//! * Only this module talks to Kubernetes; the tail engine and the drains know nothing of it.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};

pub mod lease;
pub mod source;

/// Where the service account's namespace is mounted in a pod.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No namespace given and none mounted.
    #[error("no namespace for the node config: pass --namespace (or run in a pod with a service account)")]
    NoNamespace,
    /// The kubeconfig could not be read.
    #[error("cannot read kubeconfig {path}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No usable client configuration.
    #[error("cannot configure the Kubernetes client: {0}")]
    Config(String),
    /// The client could not be built.
    #[error("cannot build the Kubernetes client")]
    Client(#[source] kube::Error),
}

/// Who this collector is in the cluster.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The node it runs on (the downward API's `spec.nodeName`).
    pub node: String,
    /// The sluice namespace (node config Secrets, Leases).
    pub namespace: String,
    /// The pod's name: the Lease holder.
    pub pod: String,
}

/// The namespace: `explicit`, else the mounted service account's.
pub fn namespace(explicit: Option<String>) -> Result<String, Error> {
    explicit
        .or_else(|| {
            std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .ok_or(Error::NoNamespace)
}

/// A client from `kubeconfig`, else the in-cluster service account (else `$KUBECONFIG`).
/// Nothing here contacts the API server, so an unreachable one does not stop the start.
pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                path: path.to_owned(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: path.to_owned(),
                    source,
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::Config(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(Error::Client)
}
