//! `LogBinding`: which pods of a namespace feed which drains of that namespace.
//!
//! Invariants (schema + CEL): `drains` names between 1 and 16 distinct LogDrains by plain name (a
//! `namespace/name` reference is rejected: a binding reaches only its own namespace);
//! `containers` and `streams` are sets; selector requirements are well formed (`In`/`NotIn` with
//! values, `Exists`/`DoesNotExist` without). An empty selector selects every pod of the namespace.

// kube's `printcolumn(type_ = …)` repeats attribute keys, which clippy mistakes for duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Sends the stdout/stderr lines of the selected pods of this namespace to LogDrains of this
/// namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "LogBinding",
    namespaced,
    status = "LogBindingStatus",
    derive = "PartialEq",
    shortname = "lbind",
    category = "sluice",
    doc = "Sends the stdout/stderr lines of the selected pods of this namespace to LogDrains of this namespace.",
    printcolumn(name = "Drains", type_ = "string", json_path = ".spec.drains"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Pods", type_ = "integer", json_path = ".status.matchedPods"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].message"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LogBindingSpec {
    /// Which pods of this namespace feed the drains (by labels). An empty selector (`{}`) selects
    /// every pod of the namespace.
    pub selector: PodSelector,

    /// Only these containers of the selected pods (default: all of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("self.all(c, size(c) <= 63 && c.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))")
        .message("containers are container names: DNS labels of at most 63 characters"))]
    pub containers: Vec<String>,

    /// Which output streams to ship (default both).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2), extend("x-kubernetes-list-type" = "set"))]
    pub streams: Vec<BindingStream>,

    /// Names of LogDrains in this namespace. A binding cannot name a drain of another namespace.
    #[schemars(length(min = 1, max = 16), inner(length(min = 1, max = 253)), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(
        validation = Rule::new("self.all(d, !d.contains('/'))")
            .message("a binding can only name LogDrains of its own namespace: write the drain's name without a namespace (cross-namespace references are refused)"),
        validation = Rule::new("self.all(d, size(d) <= 63 && d.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))")
            .message("drains are LogDrain names: DNS labels of at most 63 characters"),
    )]
    pub drains: Vec<String>,
}

/// A label selector over pods (the shape of a Kubernetes LabelSelector, checked more strictly).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodSelector {
    /// Labels a pod must carry with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements a pod's labels must all meet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One requirement of a pod selector.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.operator == 'In' || self.operator == 'NotIn') == (has(self.values) && size(self.values) > 0)")
    .message("In and NotIn need at least one value; Exists and DoesNotExist take no values"))]
pub struct SelectorRequirement {
    /// The label key.
    #[schemars(length(min = 1, max = 317))]
    pub key: String,
    /// How the key relates to the values.
    pub operator: SelectorOperator,
    /// The values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 63)))]
    pub values: Vec<String>,
}

/// How a selector requirement's key relates to its values.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelectorOperator {
    /// The label's value is one of the values.
    In,
    /// The label is absent or its value is none of the values.
    NotIn,
    /// The label is present (any value).
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// An output stream of a container.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub enum BindingStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl PodSelector {
    /// Whether a pod with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let value = labels.get(&r.key);
                match r.operator {
                    SelectorOperator::In => value.is_some_and(|v| r.values.contains(v)),
                    SelectorOperator::NotIn => value.is_none_or(|v| !r.values.contains(v)),
                    SelectorOperator::Exists => value.is_some(),
                    SelectorOperator::DoesNotExist => value.is_none(),
                }
            })
    }
}

/// What the operator knows about a binding.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogBindingStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: whether every drain resolves; the reason says what is wrong when it is `False`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// How many pods the selector matches now.
    #[serde(default)]
    pub matched_pods: i32,
    /// Drain names that do not resolve to a usable LogDrain of this namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved_drains: Vec<String>,
}
