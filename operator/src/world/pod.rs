//! The slim pod: the operator decodes pods straight into [`SlimPod`] (only metadata, node name and
//! container ids; serde skips the rest of each object) and keeps only a [`PodInfo`] per pod, so its
//! memory grows with the number of pods by a few hundred bytes each, not by whole pod objects.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

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
    /// `(container name, runtime id)`, in status order, current instances first, then previous
    /// instances; without duplicates.
    pub containers: Vec<(String, String)>,
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
        let mut containers: Vec<(String, String)> = Vec::new();
        for (name, id) in current.chain(previous) {
            if !id.is_empty() && !containers.iter().any(|(_, known)| known == id) {
                containers.push((name.to_owned(), id.to_owned()));
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

    /// The `(namespace, name)` key.
    pub fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }
}
