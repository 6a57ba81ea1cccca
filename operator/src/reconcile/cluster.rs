//! What the leader reads from and writes to the API server, behind traits: the node config
//! Secrets ([`NodeConfigStore`]), the status subresources ([`StatusStore`]), Events
//! ([`EventSink`]) and the Secrets drains name ([`SecretSource`]). [`Cluster::kube`] is the real
//! one; unit tests put recording fixtures in its place and drive the leader's pass with events.
//!
//! Invariants: an implementation carries out exactly the call it is given (the leader decides
//! what to write and when; the fence check before each write is the leader's too, and the kube
//! implementations check it once more right before their API call).

use std::{collections::HashMap, sync::Arc};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::runtime::events::EventType;
use sluice_api::crd::{LogBinding, LogDrain};

use crate::{Context, Result, resolve::ObjKey};

use super::node_config::{KubeNodeConfigs, NodeConfigWrite};
use super::status::{KubeEvents, KubeStatuses};

/// Where the node config Secrets are kept.
pub trait NodeConfigStore: Send + Sync {
    /// node → content hash of the config each node config Secret holds now.
    fn stored(&self) -> BoxFuture<'_, Result<HashMap<String, String>>>;
    /// Carry out one write of a node's config Secret.
    fn write<'a>(&'a self, write: &'a NodeConfigWrite) -> BoxFuture<'a, Result<()>>;
}

/// Where the statuses of drains and bindings are written.
pub trait StatusStore: Send + Sync {
    /// Apply `drain`'s status; the drain as stored after the write.
    fn drain(&self, drain: LogDrain) -> BoxFuture<'_, Result<LogDrain>>;
    /// Apply `binding`'s status; the binding as stored after the write.
    fn binding(&self, binding: LogBinding) -> BoxFuture<'_, Result<LogBinding>>;
}

/// An Event to publish about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Warning or Normal.
    pub severity: EventType,
    /// PascalCase reason.
    pub reason: String,
    /// What happened, for a person.
    pub note: String,
}

/// Where Events are published. Failures are the implementation's to log: an Event is never worth
/// failing a reconciliation for.
pub trait EventSink: Send + Sync {
    /// Publish `notice` about `object`.
    fn publish<'a>(&'a self, object: &'a ObjectReference, notice: &'a Notice) -> BoxFuture<'a, ()>;
}

/// Where the Secrets drains name are read, by name only.
pub trait SecretSource: Send + Sync {
    /// The Secret `key` (`None`: it does not exist).
    fn get<'a>(&'a self, key: &'a ObjKey) -> BoxFuture<'a, Result<Option<Secret>>>;
}

/// Everything the leader reads and writes besides its watches.
#[derive(Clone)]
pub struct Cluster {
    /// The node config Secrets.
    pub node_configs: Arc<dyn NodeConfigStore>,
    /// The status subresources.
    pub statuses: Arc<dyn StatusStore>,
    /// Events.
    pub events: Arc<dyn EventSink>,
    /// The Secrets drains name.
    pub secrets: Arc<dyn SecretSource>,
}

impl Cluster {
    /// The API server of `ctx`'s client.
    pub fn kube(ctx: &Context) -> Self {
        Self {
            node_configs: Arc::new(KubeNodeConfigs::new(ctx.clone())),
            statuses: Arc::new(KubeStatuses::new(ctx.clone())),
            events: Arc::new(KubeEvents::new(ctx)),
            secrets: Arc::new(KubeSecrets {
                client: ctx.client.clone(),
            }),
        }
    }
}

/// Reads drains' Secrets with `get` in the drain's namespace.
struct KubeSecrets {
    client: kube::Client,
}

impl SecretSource for KubeSecrets {
    fn get<'a>(&'a self, key: &'a ObjKey) -> BoxFuture<'a, Result<Option<Secret>>> {
        Box::pin(async move {
            let api: kube::Api<Secret> = kube::Api::namespaced(self.client.clone(), &key.namespace);
            api.get_opt(&key.name)
                .await
                .map_err(|e| crate::Error::kube("get", format!("Secret {key}"), e))
        })
    }
}
