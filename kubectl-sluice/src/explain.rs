//! `kubectl sluice explain pod/NAME`: for each drain of the pod's namespace (and each drain a
//! binding selecting the pod names), whether the pod's lines go there and, if not, the first
//! reason why, in the order the operator and the collector apply them: bound, container filter,
//! drain ready, scheduled, started, node covered by a live collector.

use std::collections::BTreeSet;

use anyhow::Result;
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Pod};
use kube::{Api, api::ListParams};
use serde::Serialize;
use sluice_api::{
    crd::{LogBinding, LogDrain, condition},
    health,
};

use crate::{
    cli::Output,
    connect::{Failure, Target},
    feed::{self, PodView},
    table::Table,
};

/// Whether the node's collector is running, as its Lease says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// A live Lease.
    Live,
    /// No Lease, or an expired one (the message says which).
    NotCovered(String),
    /// The Lease could not be read (the message says why).
    Unknown(String),
}

/// Whether lines go to a drain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shipped {
    /// They do.
    Yes,
    /// They do not.
    No,
    /// Cannot tell (the caller may not read what decides it).
    Unknown,
}

/// The answer for one drain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The drain's name (in the pod's namespace).
    pub drain: String,
    /// Whether the pod's lines go there.
    pub shipped: Shipped,
    /// A stable PascalCase reason.
    pub reason: &'static str,
    /// The details, for people.
    pub detail: String,
}

/// Fetch what decides it and print the verdicts.
pub async fn run(target: &Target, sluice_namespace: &str, pod_ref: &str, output: Output) -> Result<()> {
    let name = pod_name(pod_ref)?;
    let ns = &target.namespace;
    let what = format!("pod {ns}/{name}");
    let pod = Api::<Pod>::namespaced(target.client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| target.explain_error(e, &what, false))?;
    let pod = PodView::from_pod(&pod);
    let lp = ListParams::default();
    let drains = Api::<LogDrain>::namespaced(target.client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|e| target.explain_error(e, &format!("LogDrains in namespace {ns}"), true))?
        .items;
    let bindings = Api::<LogBinding>::namespaced(target.client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|e| target.explain_error(e, &format!("LogBindings in namespace {ns}"), true))?
        .items;
    let coverage = match &pod.node {
        Some(node) => coverage(target, sluice_namespace, node).await?,
        None => Coverage::Unknown("the pod has no node".into()),
    };
    let verdicts = explain(&pod, &drains, &bindings, &coverage);
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "pod": pod.name, "namespace": pod.namespace, "node": pod.node, "drains": verdicts,
            }))?
        ),
        Output::Table => print!("{}", render(&pod, &coverage, &verdicts)),
    }
    Ok(())
}

/// `pod/NAME`, `pods/NAME`, `po/NAME` or `NAME` → `NAME`.
fn pod_name(arg: &str) -> Result<&str> {
    let name = match arg.split_once('/') {
        Some(("pod" | "pods" | "po", name)) => name,
        Some((kind, _)) => {
            anyhow::bail!("explain takes a pod (pod/NAME), not {kind:?}")
        }
        None => arg,
    };
    if name.is_empty() {
        anyhow::bail!("explain needs a pod name: pod/NAME");
    }
    Ok(name)
}

/// The node's coverage from its collector Lease.
async fn coverage(target: &Target, sluice_ns: &str, node: &str) -> Result<Coverage> {
    let lease_name = health::lease_name(node);
    let api: Api<Lease> = Api::namespaced(target.client.clone(), sluice_ns);
    let what = format!("Lease {sluice_ns}/{lease_name}");
    match api.get_opt(&lease_name).await {
        Ok(Some(lease)) => Ok(lease_coverage(&lease, node, jiff::Timestamp::now())),
        Ok(None) => Ok(Coverage::NotCovered(format!(
            "no collector runs on node {node} (no Lease {lease_name} in namespace {sluice_ns})"
        ))),
        Err(e) => match target.explain_error(e, &what, false).downcast::<Failure>() {
            Ok(Failure::Forbidden(msg)) => Ok(Coverage::Unknown(msg)),
            Ok(other) => Err(other.into()),
            Err(other) => Err(other),
        },
    }
}

/// Whether a collector Lease is live at `now` (renewed within its duration).
pub fn lease_coverage(lease: &Lease, node: &str, now: jiff::Timestamp) -> Coverage {
    let spec = lease.spec.clone().unwrap_or_default();
    let expires = spec
        .renew_time
        .zip(spec.lease_duration_seconds)
        .and_then(|(renewed, secs)| {
            renewed
                .0
                .checked_add(jiff::SignedDuration::from_secs(i64::from(secs)))
                .ok()
        });
    match expires {
        Some(at) if at > now => Coverage::Live,
        Some(at) => Coverage::NotCovered(format!(
            "the collector of node {node} stopped renewing its Lease (expired {at})"
        )),
        None => Coverage::NotCovered(format!("the collector Lease of node {node} was never renewed")),
    }
}

/// The verdict for every drain that concerns the pod, sorted by drain name.
pub fn explain(
    pod: &PodView,
    drains: &[LogDrain],
    bindings: &[LogBinding],
    coverage: &Coverage,
) -> Vec<Verdict> {
    let bindings: Vec<&LogBinding> = bindings
        .iter()
        .filter(|b| b.metadata.namespace.as_deref() == Some(pod.namespace.as_str()))
        .collect();
    let mut names: BTreeSet<&str> = drains
        .iter()
        .filter(|d| d.metadata.namespace.as_deref() == Some(pod.namespace.as_str()))
        .filter_map(|d| d.metadata.name.as_deref())
        .collect();
    for b in bindings.iter().filter(|b| feed::selects(b, pod)) {
        names.extend(b.spec.drains.iter().map(String::as_str));
    }
    names
        .into_iter()
        .map(|name| {
            let drain = drains.iter().find(|d| {
                d.metadata.name.as_deref() == Some(name)
                    && d.metadata.namespace.as_deref() == Some(pod.namespace.as_str())
            });
            let naming: Vec<&LogBinding> = bindings
                .iter()
                .copied()
                .filter(|b| b.spec.drains.iter().any(|d| d == name))
                .collect();
            let (shipped, reason, detail) = verdict(pod, drain, &naming, coverage);
            Verdict {
                drain: name.to_owned(),
                shipped,
                reason,
                detail,
            }
        })
        .collect()
}

fn verdict(
    pod: &PodView,
    drain: Option<&LogDrain>,
    naming: &[&LogBinding],
    coverage: &Coverage,
) -> (Shipped, &'static str, String) {
    use Shipped::{No, Unknown, Yes};
    let selecting: Vec<&LogBinding> = naming.iter().copied().filter(|b| feed::selects(b, pod)).collect();
    let binding_names = |bs: &[&LogBinding]| -> String {
        let names: Vec<&str> = bs.iter().filter_map(|b| b.metadata.name.as_deref()).collect();
        names.join(", ")
    };
    let Some(drain) = drain else {
        return (
            No,
            "DrainMissing",
            format!(
                "binding {} names this drain, but no LogDrain of that name exists in namespace {}",
                binding_names(&selecting),
                pod.namespace
            ),
        );
    };
    if selecting.is_empty() {
        let detail = if naming.is_empty() {
            "no LogBinding names this drain".to_owned()
        } else {
            let selectors: Vec<String> = naming
                .iter()
                .map(|b| {
                    let name = b.metadata.name.as_deref().unwrap_or_default();
                    format!("{name} ({})", feed::selector_text(&b.spec.selector))
                })
                .collect();
            format!(
                "binding {} names this drain but does not select this pod (labels {})",
                selectors.join(", "),
                feed::labels_text(&pod.labels)
            )
        };
        return (No, "NotBound", detail);
    }
    let mut containers: BTreeSet<&str> = BTreeSet::new();
    let mut streams: BTreeSet<&str> = BTreeSet::new();
    for b in &selecting {
        containers.extend(feed::containers(b, pod));
        streams.extend(feed::streams(b));
    }
    if containers.is_empty() {
        let wanted: BTreeSet<&str> = selecting
            .iter()
            .flat_map(|b| b.spec.containers.iter().map(String::as_str))
            .collect();
        return (
            No,
            "ContainersFiltered",
            format!(
                "binding {} ships only containers {}; the pod has {}",
                binding_names(&selecting),
                join(&wanted),
                pod.containers.join(", ")
            ),
        );
    }
    let conditions = drain
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let ready = conditions.iter().find(|c| c.type_ == condition::READY);
    if ready.is_none_or(|c| c.status != "True") {
        let why = ready.map_or("the operator has not reported on it yet".to_owned(), |c| {
            format!("Ready is {} ({}): {}", c.status, c.reason, c.message)
        });
        return (No, "DrainNotReady", why);
    }
    let Some(node) = &pod.node else {
        return (No, "NotScheduled", "the pod is not on a node yet".into());
    };
    if !containers.iter().any(|c| pod.started.contains(*c)) {
        return (
            No,
            "NotStarted",
            format!(
                "no container of {} has started on node {node} yet",
                join(&containers)
            ),
        );
    }
    match coverage {
        Coverage::NotCovered(why) => return (No, "NodeNotCovered", why.clone()),
        Coverage::Unknown(why) => {
            return (
                Unknown,
                "CoverageUnknown",
                format!("bound, but whether a collector runs on node {node} is unknown: {why}"),
            );
        }
        Coverage::Live => {}
    }
    let mut detail = format!(
        "binding {}: containers {}; streams {}",
        binding_names(&selecting),
        join(&containers),
        join(&streams)
    );
    if streams.len() == 1 {
        let other = if streams.contains("stdout") {
            "stderr"
        } else {
            "stdout"
        };
        detail.push_str(&format!(" ({other} filtered)"));
    }
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == condition::DELIVERING && c.status == "False")
    {
        detail.push_str(&format!(
            "; but the drain is not delivering ({}): {}",
            c.reason, c.message
        ));
    }
    (Yes, "Shipped", detail)
}

fn join(items: &BTreeSet<&str>) -> String {
    items.iter().copied().collect::<Vec<_>>().join(", ")
}

/// The text form: a header line about the pod, then a table.
fn render(pod: &PodView, coverage: &Coverage, verdicts: &[Verdict]) -> String {
    let node = match (&pod.node, coverage) {
        (None, _) => "no node yet".to_owned(),
        (Some(n), Coverage::Live) => format!("node {n} (collector running)"),
        (Some(n), Coverage::NotCovered(_)) => format!("node {n} (no collector running)"),
        (Some(n), Coverage::Unknown(_)) => format!("node {n} (collector state unknown)"),
    };
    let mut out = crate::table::printable(&format!(
        "Pod {}/{} on {node}, labels {}",
        pod.namespace,
        pod.name,
        feed::labels_text(&pod.labels)
    ));
    out.push('\n');
    if verdicts.is_empty() {
        out.push_str(&format!("No LogDrains in namespace {}.\n", pod.namespace));
        return out;
    }
    let mut t = Table::new(&["DRAIN", "SHIPPED", "REASON", "DETAIL"]);
    for v in verdicts {
        let shipped = match v.shipped {
            Shipped::Yes => "yes",
            Shipped::No => "no",
            Shipped::Unknown => "unknown",
        };
        t.row(vec![
            v.drain.clone(),
            shipped.into(),
            v.reason.into(),
            v.detail.clone(),
        ]);
    }
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

    use super::*;

    #[test]
    fn pod_references() {
        for (arg, want) in [("pod/a", "a"), ("pods/b", "b"), ("po/c", "c"), ("d", "d")] {
            assert_eq!(pod_name(arg).unwrap(), want);
        }
        assert!(pod_name("deploy/web").is_err());
        assert!(pod_name("pod/").is_err());
    }

    #[test]
    fn a_lease_is_live_until_renewal_plus_duration() {
        let renewed: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let lease = Lease {
            metadata: ObjectMeta::default(),
            spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(40),
                ..Default::default()
            }),
        };
        let at = |secs| renewed + jiff::SignedDuration::from_secs(secs);
        assert_eq!(lease_coverage(&lease, "n1", at(39)), Coverage::Live);
        assert!(matches!(
            lease_coverage(&lease, "n1", at(40)),
            Coverage::NotCovered(_)
        ));
        let never = Lease::default();
        assert!(matches!(
            lease_coverage(&never, "n1", at(0)),
            Coverage::NotCovered(_)
        ));
    }
}
