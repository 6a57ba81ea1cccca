//! The slim pod: the operator decodes pods straight into [`SlimPod`] (only metadata, node name and
//! container ids; serde skips the rest of each object) and keeps only a [`PodInfo`] per pod, so its
//! memory grows with the number of pods by a few hundred bytes each, not by whole pod objects.
//! The pod index of the [`World`] (by node and by namespace) is kept here too.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use super::{Dirty, ObjKey, World};

/// A pod as the operator decodes it from the API server.
#[derive(Clone, Debug, Deserialize)]
pub struct SlimPod {
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// The parts of the spec the operator reads.
    #[serde(default)]
    pub spec: SlimPodSpec,
    /// The parts of the status the operator reads.
    #[serde(default)]
    pub status: SlimPodStatus,
}

/// `pod.spec`, reduced.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPodSpec {
    /// The node the pod is bound to.
    #[serde(default)]
    pub node_name: Option<String>,
}

/// `pod.status`, reduced.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimPodStatus {
    /// Init containers.
    #[serde(default)]
    pub init_container_statuses: Vec<SlimContainerStatus>,
    /// App containers.
    #[serde(default)]
    pub container_statuses: Vec<SlimContainerStatus>,
}

/// One container's status, reduced to its name and runtime ids.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlimContainerStatus {
    /// The container's name.
    pub name: String,
    /// `docker://…`, `containerd://…`: the running (or last) instance.
    #[serde(default, rename = "containerID")]
    pub container_id: Option<String>,
    /// The previous instance, kept so its last lines are still shipped after a restart.
    #[serde(default)]
    pub last_state: Option<SlimLastState>,
}

/// `containerStatus.lastState`, reduced.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimLastState {
    /// The previous instance, when it has terminated.
    #[serde(default)]
    pub terminated: Option<SlimTerminated>,
}

/// `lastState.terminated`, reduced.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SlimTerminated {
    /// The previous instance's runtime id.
    #[serde(default, rename = "containerID")]
    pub container_id: Option<String>,
}

impl k8s_openapi::Resource for SlimPod {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Pod";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "pods";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for SlimPod {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// What the operator keeps of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (part of the CRI log path).
    pub uid: String,
    /// The node it runs on.
    pub node: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its container instances, in status order, current instances first, then previous
    /// instances; without duplicates.
    pub containers: Vec<ContainerInstance>,
}

/// One instance of a pod's container: what a collector needs to find its log files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInstance {
    /// The container's name in the pod spec.
    pub name: String,
    /// The runtime's id (`containerd://…`, `docker://…`).
    pub id: String,
}

impl PodInfo {
    /// The slim projection of a decoded pod; `None` for a pod with no node yet (nothing to ship).
    pub fn from_pod(pod: SlimPod) -> Option<PodInfo> {
        let node = pod.spec.node_name.filter(|n| !n.is_empty())?;
        let statuses = pod
            .status
            .init_container_statuses
            .iter()
            .chain(&pod.status.container_statuses);
        let current = statuses
            .clone()
            .filter_map(|s| Some((s.name.as_str(), s.container_id.as_deref()?)));
        let previous = statuses.filter_map(|s| {
            let id = s
                .last_state
                .as_ref()?
                .terminated
                .as_ref()?
                .container_id
                .as_deref()?;
            Some((s.name.as_str(), id))
        });
        let mut containers: Vec<ContainerInstance> = Vec::new();
        for (name, id) in current.chain(previous) {
            if !id.is_empty() && !containers.iter().any(|known| known.id == id) {
                containers.push(ContainerInstance {
                    name: name.to_owned(),
                    id: id.to_owned(),
                });
            }
        }
        Some(PodInfo {
            namespace: pod.metadata.namespace.unwrap_or_default(),
            name: pod.metadata.name.unwrap_or_default(),
            uid: pod.metadata.uid.unwrap_or_default(),
            node,
            labels: pod.metadata.labels.unwrap_or_default(),
            containers,
        })
    }

    /// The pod's key.
    pub fn key(&self) -> ObjKey {
        ObjKey::new(self.namespace.clone(), self.name.clone())
    }
}

/// The pod index: every pod with a node, by node and by namespace.
impl World {
    /// The keys of the pods on a node.
    pub fn pods_on(&self, node: &str) -> impl Iterator<Item = &PodInfo> {
        self.pods_by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
    }

    /// Every node that runs at least one pod.
    pub fn nodes(&self) -> impl Iterator<Item = &String> {
        self.pods_by_node.keys()
    }

    /// The pods of a namespace.
    pub fn pods_in(&self, ns: &str) -> impl Iterator<Item = &PodInfo> {
        self.pods_by_namespace
            .get(ns)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
    }

    /// Insert or replace a pod (a pod without a node is removed instead).
    pub fn upsert_pod(&mut self, pod: Option<PodInfo>, key: ObjKey) -> Dirty {
        let old = self.remove_pod_quiet(&key);
        if old.as_ref() == pod.as_ref() {
            if let Some(old) = old {
                self.insert_pod_quiet(old);
            }
            return Dirty::default();
        }
        let mut dirty = Dirty::default();
        for p in old.iter().chain(pod.iter()) {
            dirty.merge(self.pod_dirty(p));
        }
        if let Some(pod) = pod {
            self.insert_pod_quiet(pod);
        }
        dirty
    }

    /// Remove a pod.
    pub fn delete_pod(&mut self, key: &ObjKey) -> Dirty {
        match self.remove_pod_quiet(key) {
            Some(old) => self.pod_dirty(&old),
            None => Dirty::default(),
        }
    }

    /// A pod's node (its config), and its namespace (the pod counts of its drains and bindings).
    fn pod_dirty(&self, pod: &PodInfo) -> Dirty {
        Dirty {
            nodes: [pod.node.clone()].into(),
            namespaces: [pod.namespace.clone()].into(),
            ..Dirty::default()
        }
    }

    fn insert_pod_quiet(&mut self, pod: PodInfo) {
        let key = pod.key();
        self.pods_by_node
            .entry(pod.node.clone())
            .or_default()
            .insert(key.clone());
        self.pods_by_namespace
            .entry(pod.namespace.clone())
            .or_default()
            .insert(key.clone());
        self.pods.insert(key, pod);
    }

    fn remove_pod_quiet(&mut self, key: &ObjKey) -> Option<PodInfo> {
        let old = self.pods.remove(key)?;
        for (index, group) in [
            (&mut self.pods_by_node, &old.node),
            (&mut self.pods_by_namespace, &old.namespace),
        ] {
            if let Some(set) = index.get_mut(group) {
                set.remove(key);
                if set.is_empty() {
                    index.remove(group);
                }
            }
        }
        Some(old)
    }

    /// Replace the pods of a namespace (`None`: of all namespaces) after a watch (re)list,
    /// returning what changed.
    pub fn replace_pods(&mut self, scope: Option<&str>, pods: Vec<PodInfo>) -> Dirty {
        let mut dirty = Dirty::default();
        let mut seen = std::collections::HashSet::new();
        for pod in pods {
            let key = pod.key();
            seen.insert(key.clone());
            dirty.merge(self.upsert_pod(Some(pod), key));
        }
        let gone: Vec<ObjKey> = self
            .pods
            .keys()
            .filter(|key| scope.is_none_or(|ns| ns == key.namespace) && !seen.contains(*key))
            .cloned()
            .collect();
        for key in gone {
            dirty.merge(self.delete_pod(&key));
        }
        dirty
    }
}
