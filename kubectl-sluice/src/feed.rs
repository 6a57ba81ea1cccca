//! What a LogBinding ships of a pod, decided exactly as the operator renders node configs: the
//! selector (`sluice_api`'s [`PodSelector::matches`]), the binding's container filter, its streams
//! (both when it names none), and only containers the kubelet has started (those with a runtime
//! id in the pod's status) have log files to read.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Pod;
use sluice_api::crd::{BindingStream, LogBinding, PodSelector, SelectorOperator};

/// The parts of a pod that decide where its lines go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The node it is bound to (`None`: not scheduled yet).
    pub node: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Container names (init containers first), in spec order.
    pub containers: Vec<String>,
    /// Containers with a runtime id in the status (current or previous instance).
    pub started: BTreeSet<String>,
}

impl PodView {
    /// The view of a pod object.
    pub fn from_pod(pod: &Pod) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|c| c.name.clone())
            .collect();
        let status = pod.status.clone().unwrap_or_default();
        let started = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
            .filter(|s| {
                let previous = s.last_state.as_ref().and_then(|l| l.terminated.as_ref());
                s.container_id.as_deref().is_some_and(|id| !id.is_empty())
                    || previous
                        .and_then(|t| t.container_id.as_deref())
                        .is_some_and(|id| !id.is_empty())
            })
            .map(|s| s.name.clone())
            .collect();
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            node: spec.node_name.filter(|n| !n.is_empty()),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            containers,
            started,
        }
    }
}

/// Whether `binding` selects `pod` (same namespace, selector matches).
pub fn selects(binding: &LogBinding, pod: &PodView) -> bool {
    binding.metadata.namespace.as_deref() == Some(pod.namespace.as_str())
        && binding.spec.selector.matches(&pod.labels)
}

/// The pod's containers the binding's container filter lets through.
pub fn containers<'a>(binding: &LogBinding, pod: &'a PodView) -> Vec<&'a str> {
    let wanted = &binding.spec.containers;
    pod.containers
        .iter()
        .filter(|c| wanted.is_empty() || wanted.contains(c))
        .map(String::as_str)
        .collect()
}

/// The streams the binding ships (both when it names none), in `stdout`, `stderr` order.
pub fn streams(binding: &LogBinding) -> Vec<&'static str> {
    let named = &binding.spec.streams;
    [
        (BindingStream::Stdout, "stdout"),
        (BindingStream::Stderr, "stderr"),
    ]
    .into_iter()
    .filter(|(s, _)| named.is_empty() || named.contains(s))
    .map(|(_, name)| name)
    .collect()
}

/// A selector the way kubectl prints one: `app=web,tier in (a,b),!canary`; `<all pods>` when empty.
pub fn selector_text(selector: &PodSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for r in &selector.match_expressions {
        parts.push(match r.operator {
            SelectorOperator::In => format!("{} in ({})", r.key, r.values.join(",")),
            SelectorOperator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
            SelectorOperator::Exists => r.key.clone(),
            SelectorOperator::DoesNotExist => format!("!{}", r.key),
        });
    }
    if parts.is_empty() {
        "<all pods>".into()
    } else {
        parts.join(",")
    }
}

/// Labels as `k=v,k=v` (`<none>` when there are none).
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "<none>".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
