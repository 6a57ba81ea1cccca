//! Pods as a kubelet would report them: the harness has no kubelet, so tests create a pod bound to
//! a node and patch its status themselves.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::ObjectMeta;
use serde_json::json;

/// A pod named `name` on `node` with `labels`, one container (image `image`) per `(name, _)` of
/// `containers`.
pub fn bound_pod(
    name: &str,
    node: &str,
    labels: BTreeMap<String, String>,
    containers: &[(&str, &str)],
    image: &str,
) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: containers
                .iter()
                .map(|(c, _)| Container {
                    name: (*c).into(),
                    image: Some(image.into()),
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// The status patch (a JSON merge patch) reporting `containers` — `(name, containerID)`, e.g.
/// `docker://<id>` — running.
pub fn running_status(containers: &[(&str, &str)], image: &str) -> serde_json::Value {
    let statuses: Vec<_> = containers
        .iter()
        .map(|(c, id)| {
            json!({"name": c, "containerID": id, "image": image, "imageID": "docker://sha256:1",
                   "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}})
        })
        .collect();
    json!({"status": {"phase": "Running", "containerStatuses": statuses}})
}
