//! `kubectl sluice bindings`: which pods feed which drains, from each LogBinding's selector
//! evaluated against the pods of its namespace now (not from counts in its status).

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};
use sluice_api::crd::{LogBinding, LogDrain, condition};

use crate::{
    connect::Target,
    drains::{found_in, scope},
    feed::{self, PodView},
    table::Table,
};

/// List bindings, drains and pods of the target namespace (or all) and print the table.
pub async fn run(target: &Target, all_namespaces: bool) -> Result<()> {
    let ns = &target.namespace;
    let lp = ListParams::default();
    let c = target.client.clone();
    let (bindings, drains, pods): (Api<LogBinding>, Api<LogDrain>, Api<Pod>) = if all_namespaces {
        (Api::all(c.clone()), Api::all(c.clone()), Api::all(c))
    } else {
        (
            Api::namespaced(c.clone(), ns),
            Api::namespaced(c.clone(), ns),
            Api::namespaced(c, ns),
        )
    };
    let err = |kind: &str, crd: bool| {
        let what = scope(kind, ns, all_namespaces);
        move |e| target.explain_error(e, &what, crd)
    };
    let bindings = bindings.list(&lp).await.map_err(err("LogBindings", true))?.items;
    if bindings.is_empty() {
        eprintln!("No LogBindings found{}.", found_in(ns, all_namespaces));
        return Ok(());
    }
    let drains = drains.list(&lp).await.map_err(err("LogDrains", true))?.items;
    let pods = pods.list(&lp).await.map_err(err("pods", false))?.items;
    let pods: Vec<PodView> = pods.iter().map(PodView::from_pod).collect();
    print!("{}", table(&bindings, &drains, &pods, all_namespaces).render());
    Ok(())
}

/// One row per (binding, selected pod), and one `<none>` row for a binding that selects no pod.
/// Drains that do not exist or are not ready are marked as such.
pub fn table(bindings: &[LogBinding], drains: &[LogDrain], pods: &[PodView], all_namespaces: bool) -> Table {
    let ready: BTreeMap<(&str, &str), bool> = drains
        .iter()
        .map(|d| {
            let ns = d.metadata.namespace.as_deref().unwrap_or_default();
            let name = d.metadata.name.as_deref().unwrap_or_default();
            let conditions = d
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            let ok = conditions
                .iter()
                .any(|c| c.type_ == condition::READY && c.status == "True");
            ((ns, name), ok)
        })
        .collect();
    let mut header = vec!["BINDING", "DRAINS", "POD", "NODE", "CONTAINERS", "STREAMS"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut t = Table::new(&header);
    let mut sorted: Vec<&LogBinding> = bindings.iter().collect();
    sorted.sort_by_key(|b| (b.metadata.namespace.clone(), b.metadata.name.clone()));
    for b in sorted {
        let ns = b.metadata.namespace.as_deref().unwrap_or_default();
        let drains: Vec<String> = b
            .spec
            .drains
            .iter()
            .map(|d| match ready.get(&(ns, d.as_str())) {
                Some(true) => d.clone(),
                Some(false) => format!("{d} (not ready)"),
                None => format!("{d} (missing)"),
            })
            .collect();
        let mut selected: Vec<&PodView> = pods.iter().filter(|p| feed::selects(b, p)).collect();
        selected.sort_by(|a, b| a.name.cmp(&b.name));
        let mut rows = Vec::new();
        for pod in selected {
            let containers = feed::containers(b, pod);
            rows.push(vec![
                pod.name.clone(),
                pod.node.clone().unwrap_or_else(|| "<pending>".into()),
                if containers.is_empty() {
                    "<none>".into()
                } else {
                    containers.join(",")
                },
                feed::streams(b).join(","),
            ]);
        }
        if rows.is_empty() {
            rows.push(vec!["<none>".into(), "-".into(), "-".into(), "-".into()]);
        }
        for cells in rows {
            let mut row = vec![b.metadata.name.clone().unwrap_or_default(), drains.join(",")];
            row.extend(cells);
            if all_namespaces {
                row.insert(0, ns.to_owned());
            }
            t.row(row);
        }
    }
    t
}
