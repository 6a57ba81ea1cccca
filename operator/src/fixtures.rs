//! Test fixtures (unit tests only): drains, bindings, pods, Secrets and Leases built in one line
//! each, and [`FakeCluster`], a recording stand-in for the API server behind the leader's
//! [`Cluster`] traits.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use futures::future::BoxFuture;
use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{ObjectReference, Secret},
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use sluice_api::{
    NodeConfig,
    crd::{
        DRAIN_CREDENTIALS_LABEL, LogBinding, LogBindingSpec, LogBindingStatus, LogDrain, LogDrainSpec,
        LogDrainStatus, PodSelector,
    },
    health::{LEASE_LABEL, LEASE_LABEL_VALUE},
};

use crate::{
    Context, Result, Settings,
    reconcile::{
        cluster::{Cluster, EventSink, NodeConfigStore, Notice, SecretSource, StatusStore},
        node_config::NodeConfigWrite,
    },
    world::{
        ObjKey, PodInfo,
        pod::{ContainerInstance, SlimContainerStatus, SlimPod, SlimPodSpec, SlimPodStatus},
    },
};

/// Object metadata for `ns/name`.
pub fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        generation: Some(1),
        ..ObjectMeta::default()
    }
}

/// A drain `ns/name` with `url` and nothing else.
pub fn drain(ns: &str, name: &str, url: &str) -> LogDrain {
    LogDrain {
        metadata: meta(ns, name),
        spec: LogDrainSpec {
            url: url.into(),
            tls: None,
            credentials: None,
            rate_limit: None,
            format: None,
            http: None,
        },
        status: None,
    }
}

/// A binding `ns/name` selecting `app=<app>` into `drains`.
pub fn binding(ns: &str, name: &str, app: &str, drains: &[&str]) -> LogBinding {
    LogBinding {
        metadata: meta(ns, name),
        spec: LogBindingSpec {
            selector: PodSelector {
                match_labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
                ..PodSelector::default()
            },
            containers: Vec::new(),
            streams: Vec::new(),
            drains: drains.iter().map(|d| (*d).to_owned()).collect(),
        },
        status: None,
    }
}

/// A pod `ns/name` with `app=<app>` on `node`, its containers `(name, runtime id)`.
pub fn pod(ns: &str, name: &str, app: &str, node: &str, containers: &[(&str, &str)]) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        node: node.into(),
        labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
        containers: containers
            .iter()
            .map(|(container, id)| ContainerInstance {
                name: (*container).to_owned(),
                id: (*id).to_owned(),
            })
            .collect(),
    }
}

/// The pod of [`pod`] as the watch decodes it.
pub fn slim_pod(ns: &str, name: &str, app: &str, node: &str, containers: &[(&str, &str)]) -> SlimPod {
    SlimPod {
        metadata: ObjectMeta {
            labels: Some(BTreeMap::from([("app".to_owned(), app.to_owned())])),
            uid: Some(format!("uid-{name}")),
            ..meta(ns, name)
        },
        spec: SlimPodSpec {
            node_name: Some(node.into()),
        },
        status: SlimPodStatus {
            init_container_statuses: Vec::new(),
            container_statuses: containers
                .iter()
                .map(|(container, id)| SlimContainerStatus {
                    name: (*container).to_owned(),
                    container_id: Some((*id).to_owned()),
                    last_state: None,
                })
                .collect(),
        },
    }
}

/// A Secret `ns/name` holding `data`, opted in to serve drains or not.
pub fn secret(ns: &str, name: &str, opted_in: bool, data: &[(&str, &str)]) -> Secret {
    let labels = opted_in.then(|| BTreeMap::from([(DRAIN_CREDENTIALS_LABEL.to_owned(), "true".to_owned())]));
    Secret {
        metadata: ObjectMeta {
            labels,
            ..meta(ns, name)
        },
        string_data: Some(
            data.iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// The collector Lease of `node`, renewed now and valid for an hour (no report).
pub fn collector_lease(node: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(format!("sluice-collector-{node}")),
            namespace: Some("sluice-system".into()),
            labels: Some(BTreeMap::from([(
                LEASE_LABEL.to_owned(),
                LEASE_LABEL_VALUE.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            lease_duration_seconds: Some(3600),
            ..LeaseSpec::default()
        }),
    }
}

/// A context whose client points at an address where nothing answers: the leader's unit tests
/// reach the API server only through [`FakeCluster`], so a call that bypassed it would fail.
pub fn offline_context(settings: Settings) -> Context {
    let url = "http://127.0.0.1:1".parse().expect("static URL");
    let client = kube::Client::try_from(kube::Config::new(url)).expect("building a client connects nowhere");
    Context::new(client, settings)
}

/// One call the leader made on the [`FakeCluster`].
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// A node config Secret written with this config (`None`: deleted).
    NodeConfig {
        /// The node.
        node: String,
        /// The config it holds now.
        config: Option<NodeConfig>,
    },
    /// A drain status written.
    DrainStatus {
        /// The drain.
        drain: ObjKey,
        /// Its new status.
        status: LogDrainStatus,
    },
    /// A binding status written.
    BindingStatus {
        /// The binding.
        binding: ObjKey,
        /// Its new status.
        status: LogBindingStatus,
    },
    /// An Event published.
    Event {
        /// About this object.
        object: ObjKey,
        /// What it says.
        notice: Notice,
    },
}

/// A recording stand-in for the API server: it stores what the leader writes, serves the Secrets
/// a test puts in, and lists the calls in order.
#[derive(Default)]
pub struct FakeCluster {
    calls: Mutex<Vec<Call>>,
    /// node → hash, as a real store would list it.
    stored: Mutex<HashMap<String, String>>,
    secrets: Mutex<HashMap<ObjKey, Secret>>,
    /// node → how many more writes of its config Secret fail.
    refused: Mutex<HashMap<String, usize>>,
}

impl FakeCluster {
    /// A fake holding the node config Secrets whose hashes `stored` gives (node → hash).
    pub fn with_stored(stored: HashMap<String, String>) -> Arc<Self> {
        Arc::new(Self {
            stored: Mutex::new(stored),
            ..Self::default()
        })
    }

    /// The leader's view of it.
    pub fn cluster(self: &Arc<Self>) -> Cluster {
        Cluster {
            node_configs: self.clone(),
            statuses: self.clone(),
            events: self.clone(),
            secrets: self.clone(),
        }
    }

    /// Put (or replace) a Secret drains may name.
    pub fn put_secret(&self, secret: Secret) {
        let key = crate::world::key_of(&secret.metadata);
        self.secrets.lock().expect("test lock").insert(key, secret);
    }

    /// The calls made since the last `take`, in order.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().expect("test lock"))
    }

    /// Change what node `node`'s config Secret holds behind the leader's back (a late write of a
    /// deposed leader, a hand edit).
    pub fn overwrite_stored(&self, node: &str, hash: &str) {
        let mut stored = self.stored.lock().expect("test lock");
        stored.insert(node.to_owned(), hash.to_owned());
    }

    /// Fail the next `count` writes of node `node`'s config Secret (as an API server error would).
    pub fn refuse_writes(&self, node: &str, count: usize) {
        self.refused
            .lock()
            .expect("test lock")
            .insert(node.to_owned(), count);
    }

    /// node → hash of every node config Secret it holds.
    pub fn stored_hashes(&self) -> HashMap<String, String> {
        self.stored.lock().expect("test lock").clone()
    }

    fn record(&self, call: Call) {
        self.calls.lock().expect("test lock").push(call);
    }
}

impl NodeConfigStore for FakeCluster {
    fn stored(&self) -> BoxFuture<'_, Result<HashMap<String, String>>> {
        Box::pin(async move { Ok(self.stored_hashes()) })
    }

    fn write<'a>(&'a self, write: &'a NodeConfigWrite) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let node = write.node().to_owned();
            if let Some(left) = self.refused.lock().expect("test lock").get_mut(&node)
                && *left > 0
            {
                *left -= 1;
                let status = kube::core::Status {
                    code: 500,
                    message: "refused by the test".into(),
                    ..kube::core::Status::default()
                };
                let source = kube::Error::Api(Box::new(status));
                return Err(crate::Error::kube(
                    "apply",
                    format!("Secret of node {node}"),
                    source,
                ));
            }
            let config = match write {
                NodeConfigWrite::Apply { yaml, .. } => {
                    Some(NodeConfig::from_yaml(yaml).expect("the leader writes configs the collector reads"))
                }
                NodeConfigWrite::Delete { .. } => None,
            };
            write.record(&mut self.stored.lock().expect("test lock"));
            self.record(Call::NodeConfig { node, config });
            Ok(())
        })
    }
}

impl StatusStore for FakeCluster {
    fn drain(&self, drain: LogDrain) -> BoxFuture<'_, Result<LogDrain>> {
        Box::pin(async move {
            self.record(Call::DrainStatus {
                drain: crate::world::key_of(&drain.metadata),
                status: drain.status.clone().unwrap_or_default(),
            });
            Ok(drain)
        })
    }

    fn binding(&self, binding: LogBinding) -> BoxFuture<'_, Result<LogBinding>> {
        Box::pin(async move {
            self.record(Call::BindingStatus {
                binding: crate::world::key_of(&binding.metadata),
                status: binding.status.clone().unwrap_or_default(),
            });
            Ok(binding)
        })
    }
}

impl EventSink for FakeCluster {
    fn publish<'a>(&'a self, object: &'a ObjectReference, notice: &'a Notice) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let object = ObjKey::new(
                object.namespace.clone().unwrap_or_default(),
                object.name.clone().unwrap_or_default(),
            );
            self.record(Call::Event {
                object,
                notice: notice.clone(),
            });
        })
    }
}

impl SecretSource for FakeCluster {
    fn get<'a>(&'a self, key: &'a ObjKey) -> BoxFuture<'a, Result<Option<Secret>>> {
        Box::pin(async move { Ok(self.secrets.lock().expect("test lock").get(key).cloned()) })
    }
}
