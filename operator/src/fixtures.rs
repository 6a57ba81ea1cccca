//! Test fixtures: drains, bindings and pods built in one line each (unit tests only).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sluice_api::crd::{LogBinding, LogBindingSpec, LogDrain, LogDrainSpec, PodSelector};

use crate::world::PodInfo;

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
            .map(|(c, id)| ((*c).to_owned(), (*id).to_owned()))
            .collect(),
    }
}
