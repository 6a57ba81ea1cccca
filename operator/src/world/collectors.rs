//! The collectors as their node Leases show them: which nodes are covered, and the delivery
//! figures they report ([`sluice_api::health`]), summed per `LogDrain`.
//!
//! Invariants:
//! * A node is covered while its collector Lease is live: it exists and `renewTime +
//!   leaseDurationSeconds` has not passed.
//! * A node's last report is kept after its Lease is deleted (a graceful stop) or expires, so the
//!   sums do not drop while a collector restarts; the restarted collector's figures continue from
//!   the saved ones (never lower). After an operator restart only Leases that exist are known.
//! * Reports are parsed defensively: an unreadable or other-version annotation counts as no report
//!   (and is logged once per Lease version), never as zeros that would move a sum backwards.

use std::collections::{BTreeSet, HashMap};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use sluice_api::health::{ANNOTATION, DrainHealth, HealthReport, REPORT_VERSION};

use super::ObjKey;

/// A drain's figures summed over the nodes that report it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Lines delivered.
    pub delivered: u64,
    /// Lines dropped, all causes.
    pub dropped: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Bytes behind, over the covered nodes.
    pub lag_bytes: u64,
    /// The latest error.
    pub last_error: Option<LatestError>,
    /// The latest success (unix time).
    pub last_success: Option<u64>,
    /// Covered nodes that report this drain.
    pub reporting: BTreeSet<String>,
    /// Covered nodes on which the drain is failing now.
    pub failing: BTreeSet<String>,
}

/// The latest error a collector reported for a drain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestError {
    /// When (unix seconds).
    pub time: u64,
    /// `kind: message`.
    pub text: String,
    /// The node that reported it.
    pub node: String,
}

/// What forgetting the Leases a (re)list did not show affected.
#[derive(Debug, Default)]
pub struct Forgotten {
    /// The drain owners their reports name.
    pub owners: BTreeSet<ObjKey>,
    /// Their nodes.
    pub nodes: BTreeSet<String>,
}

#[derive(Clone, Debug, Default)]
struct NodeState {
    /// When the Lease stops being live (`None`: no live Lease).
    expires: Option<Timestamp>,
    report: Option<HealthReport>,
}

/// Every collector Lease the operator has seen, by node.
#[derive(Debug, Default)]
pub struct Collectors {
    nodes: HashMap<String, NodeState>,
}

/// The node a collector Lease stands for (`sluice-collector-<node>`).
pub fn lease_node(lease: &Lease) -> Option<&str> {
    lease.metadata.name.as_deref()?.strip_prefix("sluice-collector-")
}

impl Collectors {
    /// Record a Lease (`Some`) or its deletion (`None`) for `node`; returns the drain owners its
    /// old or new report names, whose statuses may have changed.
    pub fn set_lease(&mut self, node: &str, lease: Option<&Lease>) -> BTreeSet<ObjKey> {
        let state = self.nodes.entry(node.to_owned()).or_default();
        let mut touched = owners(state.report.as_ref());
        match lease {
            Some(lease) => {
                state.expires = expiry(lease);
                if let Some(report) = parse_report(lease) {
                    state.report = Some(report);
                }
            }
            None => state.expires = None,
        }
        touched.extend(owners(state.report.as_ref()));
        touched
    }

    /// Forget the Leases of a (re)list that did not appear in it; returns what that affects.
    pub fn retain_listed(&mut self, listed: &BTreeSet<String>) -> Forgotten {
        let mut forgotten = Forgotten::default();
        for (node, state) in &mut self.nodes {
            if !listed.contains(node) && state.expires.is_some() {
                state.expires = None;
                forgotten.owners.extend(owners(state.report.as_ref()));
                forgotten.nodes.insert(node.clone());
            }
        }
        forgotten
    }

    /// Whether `node`'s collector holds a live Lease at `now`.
    pub fn is_live(&self, node: &str, now: Timestamp) -> bool {
        self.nodes
            .get(node)
            .and_then(|s| s.expires)
            .is_some_and(|at| at > now)
    }

    /// Nodes whose Lease was live at `since` and is not at `now` (to recheck their drains).
    pub fn expired_between(&self, since: Timestamp, now: Timestamp) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, s)| s.expires.is_some_and(|at| at > since && at <= now))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The figures of drain `owner` summed over every node that reported it.
    pub fn summary(&self, owner: &ObjKey, now: Timestamp) -> Summary {
        let mut sum = Summary::default();
        for (node, state) in &self.nodes {
            let Some(report) = &state.report else { continue };
            let live = state.expires.is_some_and(|at| at > now);
            for health in report.drains.values().filter(|h| owned_by(h, owner)) {
                add(&mut sum, node, health, live);
            }
        }
        sum
    }
}

fn add(sum: &mut Summary, node: &str, health: &DrainHealth, live: bool) {
    sum.delivered = sum.delivered.saturating_add(health.lines_delivered);
    sum.dropped = sum.dropped.saturating_add(health.dropped_total());
    sum.failed = sum.failed.saturating_add(health.attempts_failed);
    if let Some(error) = &health.last_error
        && sum
            .last_error
            .as_ref()
            .is_none_or(|latest| error.time > latest.time)
    {
        sum.last_error = Some(LatestError {
            time: error.time,
            text: format!("{}: {}", error.kind, error.message),
            node: node.to_owned(),
        });
    }
    sum.last_success = sum.last_success.max(health.last_success);
    if live && health.active {
        sum.lag_bytes = sum.lag_bytes.saturating_add(health.lag_bytes);
        sum.reporting.insert(node.to_owned());
        if health.failing {
            sum.failing.insert(node.to_owned());
        }
    }
}

fn owned_by(health: &DrainHealth, owner: &ObjKey) -> bool {
    health
        .owner
        .as_ref()
        .is_some_and(|o| o.namespace == owner.namespace && o.name == owner.name)
}

fn owners(report: Option<&HealthReport>) -> BTreeSet<ObjKey> {
    report
        .into_iter()
        .flat_map(|r| r.drains.values())
        .filter_map(|h| h.owner.as_ref())
        .map(|owner| ObjKey::new(owner.namespace.clone(), owner.name.clone()))
        .collect()
}

fn expiry(lease: &Lease) -> Option<Timestamp> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref()?.0;
    let seconds = spec.lease_duration_seconds?;
    renewed
        .checked_add(SignedDuration::from_secs(i64::from(seconds)))
        .ok()
}

fn parse_report(lease: &Lease) -> Option<HealthReport> {
    let text = lease.metadata.annotations.as_ref()?.get(ANNOTATION)?;
    match serde_json::from_str::<HealthReport>(text) {
        Ok(report) if report.version == REPORT_VERSION => Some(report),
        Ok(report) => {
            tracing::warn!(
                lease = lease.metadata.name.as_deref().unwrap_or_default(),
                version = report.version,
                "collector health report of an unknown version; ignored"
            );
            None
        }
        Err(e) => {
            tracing::warn!(
                lease = lease.metadata.name.as_deref().unwrap_or_default(),
                error = %e,
                "unreadable collector health report; ignored"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::{
        api::coordination::v1::LeaseSpec,
        apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    };
    use sluice_api::{health::LastError, node_config::DrainOwner};

    use super::*;

    fn lease(node: &str, renewed: Timestamp, delivered: u64, failing: bool) -> Lease {
        let mut report = HealthReport {
            version: REPORT_VERSION,
            node: node.into(),
            ..HealthReport::default()
        };
        report.drains.insert(
            "shop-web".into(),
            DrainHealth {
                owner: Some(DrainOwner {
                    namespace: "shop".into(),
                    name: "web".into(),
                }),
                active: true,
                lines_delivered: delivered,
                lag_bytes: 10,
                failing,
                last_error: failing.then(|| LastError {
                    kind: "connect".into(),
                    message: "refused".into(),
                    time: 5,
                }),
                ..DrainHealth::default()
            },
        );
        Lease {
            metadata: ObjectMeta {
                name: Some(format!("sluice-collector-{node}")),
                annotations: Some(BTreeMap::from([(
                    ANNOTATION.to_owned(),
                    serde_json::to_string(&report).expect("json"),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(renewed)),
                lease_duration_seconds: Some(40),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn sums_over_nodes_and_keeps_figures_of_stopped_collectors() {
        let now = Timestamp::now();
        let owner = ObjKey::new("shop", "web");
        let mut c = Collectors::default();
        let a = lease("a", now, 7, false);
        assert_eq!(lease_node(&a), Some("a"));
        assert!(c.set_lease("a", Some(&a)).contains(&owner));
        c.set_lease("b", Some(&lease("b", now, 5, true)));
        let sum = c.summary(&owner, now);
        assert_eq!((sum.delivered, sum.lag_bytes), (12, 20));
        assert_eq!(sum.failing, BTreeSet::from(["b".to_owned()]));
        assert_eq!(
            sum.last_error.as_ref().map(|e| e.text.as_str()),
            Some("connect: refused")
        );

        // b stops gracefully: not covered, but its delivered lines still count.
        c.set_lease("b", None);
        assert!(!c.is_live("b", now) && c.is_live("a", now));
        let sum = c.summary(&owner, now);
        assert_eq!((sum.delivered, sum.lag_bytes), (12, 10));
        assert!(sum.failing.is_empty());

        // a's Lease runs out.
        let later = now + SignedDuration::from_secs(41);
        assert_eq!(c.expired_between(now, later), vec!["a".to_owned()]);
        assert!(!c.is_live("a", later));
    }

    #[test]
    fn an_unreadable_report_keeps_the_last_figures() {
        let now = Timestamp::now();
        let owner = ObjKey::new("shop", "web");
        let mut c = Collectors::default();
        c.set_lease("a", Some(&lease("a", now, 7, false)));
        let mut bad = lease("a", now, 0, false);
        bad.metadata.annotations = Some(BTreeMap::from([(ANNOTATION.to_owned(), "{".to_owned())]));
        c.set_lease("a", Some(&bad));
        assert_eq!(c.summary(&owner, now).delivered, 7);
    }
}
