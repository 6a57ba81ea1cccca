//! The collectors as their node Leases show them: which nodes are covered, and the delivery
//! figures they report ([`sluice_api::health`]), summed per `LogDrain`.
//!
//! Invariants:
//! * A node is covered while its collector Lease is live: it exists and `renewTime +
//!   leaseDurationSeconds` has not passed.
//! * A node's last report is kept after its Lease is deleted (a graceful stop) or expires, so the
//!   sums do not drop while a collector restarts; the restarted collector's figures continue from
//!   the saved ones. After an operator restart only Leases that exist are known.
//! * A counter a node reports lower than before (a collector that lost its state dir starts at
//!   zero) is taken as a restart from zero: the node's figure becomes what it had plus the new
//!   count, so a sum never goes backwards and counts nothing twice.
//! * Reports are parsed defensively: an unreadable or other-version annotation counts as no report
//!   (and is logged once per Lease version), never as zeros that would move a sum backwards.
//! * The sums are kept per drain and updated on each Lease event by taking the node's previous
//!   figures out and its new ones in ([`Tally`]), so a renewal costs the drains its report names,
//!   not all reports. What depends on the clock (a Lease running out between events) is settled
//!   when a summary is read: the nodes whose Lease ran out are taken out of the live figures then.
//!   The latest error and success are maxima, kept in ordered sets so a node's withdrawal finds
//!   the next one.

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
    /// How many covered nodes report this drain.
    pub reporting: usize,
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
    /// The drain owners the node's last readable report names.
    owners: BTreeSet<ObjKey>,
}

/// One node's figures for one drain owner: its drains of that owner added up, counters carried
/// over restarts from zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Part {
    /// Counters as the node last reported them.
    reported: Counters,
    /// What the node had counted before its counters restarted from zero.
    carried: Counters,
    /// Bytes behind, over the active drains.
    lag_bytes: u64,
    /// Whether a drain of this owner is in the node's config (it counts as reporting).
    active: bool,
    /// Whether an active drain of this owner is failing.
    failing: bool,
    /// The node's latest error for this owner: time and `kind: message`.
    last_error: Option<(u64, String)>,
    last_success: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counters {
    delivered: u64,
    dropped: u64,
    failed: u64,
}

impl Counters {
    fn each(self) -> [u64; 3] {
        [self.delivered, self.dropped, self.failed]
    }
}

impl Part {
    /// The node's drains of one owner in `report`, added up as the status sums them.
    fn of<'a>(drains: impl Iterator<Item = &'a DrainHealth>) -> Part {
        let mut part = Part::default();
        for health in drains {
            let r = &mut part.reported;
            r.delivered = r.delivered.saturating_add(health.lines_delivered);
            r.dropped = r.dropped.saturating_add(health.dropped_total());
            r.failed = r.failed.saturating_add(health.attempts_failed);
            if let Some(error) = &health.last_error
                && part
                    .last_error
                    .as_ref()
                    .is_none_or(|(time, _)| error.time > *time)
            {
                part.last_error = Some((error.time, format!("{}: {}", error.kind, error.message)));
            }
            part.last_success = part.last_success.max(health.last_success);
            if health.active {
                part.lag_bytes = part.lag_bytes.saturating_add(health.lag_bytes);
                part.active = true;
                part.failing |= health.failing;
            }
        }
        part
    }

    /// `self` following `before` from the same node: a counter lower than before restarted from
    /// zero, so what it had is carried.
    fn after(mut self, before: &Part) -> Part {
        let had = |now: u64, reported: u64, carried: u64| {
            if now < reported {
                carried.saturating_add(reported)
            } else {
                carried
            }
        };
        let (now, old, carried) = (self.reported, before.reported, before.carried);
        self.carried = Counters {
            delivered: had(now.delivered, old.delivered, carried.delivered),
            dropped: had(now.dropped, old.dropped, carried.dropped),
            failed: had(now.failed, old.failed, carried.failed),
        };
        self
    }

    /// Delivered, dropped and failed with what was carried.
    fn totals(&self) -> [u128; 3] {
        let mut out = [0; 3];
        for ((o, r), c) in out.iter_mut().zip(self.reported.each()).zip(self.carried.each()) {
            *o = u128::from(r) + u128::from(c);
        }
        out
    }
}

/// One drain owner's figures: each node's part and their running sums.
#[derive(Debug, Default)]
struct Tally {
    parts: HashMap<String, Part>,
    /// Delivered, dropped, failed over all parts (wide, so taking a part out is exact).
    totals: [u128; 3],
    /// Lag over the parts in `live`.
    lag_bytes: u128,
    /// The active parts of nodes that hold a Lease, by when it runs out (it may have by now:
    /// [`Tally::summary`] settles that).
    live: BTreeSet<(Timestamp, String)>,
    /// The nodes of `live` whose part is failing.
    failing: BTreeSet<String>,
    /// Latest errors: (time, node) of every part that has one.
    errors: BTreeSet<(u64, String)>,
    /// Latest successes: (time, node) of every part that has one.
    successes: BTreeSet<(u64, String)>,
}

impl Tally {
    /// Add `node`'s `part`, live until `expires`.
    fn insert(&mut self, node: &str, part: Part, expires: Option<Timestamp>) {
        for (sum, n) in self.totals.iter_mut().zip(part.totals()) {
            *sum += n;
        }
        if let (Some(at), true) = (expires, part.active) {
            self.lag_bytes += u128::from(part.lag_bytes);
            self.live.insert((at, node.to_owned()));
            if part.failing {
                self.failing.insert(node.to_owned());
            }
        }
        if let Some((time, _)) = &part.last_error {
            self.errors.insert((*time, node.to_owned()));
        }
        if let Some(time) = part.last_success {
            self.successes.insert((time, node.to_owned()));
        }
        self.parts.insert(node.to_owned(), part);
    }

    /// Take `node`'s part out (it was added live until `expires`).
    fn remove(&mut self, node: &str, expires: Option<Timestamp>) -> Option<Part> {
        let part = self.parts.remove(node)?;
        for (sum, n) in self.totals.iter_mut().zip(part.totals()) {
            *sum -= n;
        }
        if let (Some(at), true) = (expires, part.active) {
            self.lag_bytes -= u128::from(part.lag_bytes);
            self.live.remove(&(at, node.to_owned()));
            self.failing.remove(node);
        }
        if let Some((time, _)) = &part.last_error {
            self.errors.remove(&(*time, node.to_owned()));
        }
        if let Some(time) = part.last_success {
            self.successes.remove(&(time, node.to_owned()));
        }
        Some(part)
    }

    /// The sums at `now`: live figures leave out the nodes whose Lease has run out.
    fn summary(&self, now: Timestamp) -> Summary {
        let clamp = |n: u128| u64::try_from(n).unwrap_or(u64::MAX);
        let mut lag_bytes = self.lag_bytes;
        let mut failing = self.failing.clone();
        let mut expired = 0;
        for (_, node) in self.live.iter().take_while(|(at, _)| *at <= now) {
            expired += 1;
            failing.remove(node);
            if let Some(part) = self.parts.get(node) {
                lag_bytes -= u128::from(part.lag_bytes);
            }
        }
        let last_error = self.errors.last().and_then(|(time, node)| {
            let (_, text) = self.parts.get(node)?.last_error.as_ref()?;
            Some(LatestError {
                time: *time,
                text: text.clone(),
                node: node.clone(),
            })
        });
        let [delivered, dropped, failed] = self.totals;
        Summary {
            delivered: clamp(delivered),
            dropped: clamp(dropped),
            failed: clamp(failed),
            lag_bytes: clamp(lag_bytes),
            last_error,
            last_success: self.successes.last().map(|(time, _)| *time),
            reporting: self.live.len() - expired,
            failing,
        }
    }
}

/// Every collector Lease the operator has seen, by node, and the figures summed per drain.
#[derive(Debug, Default)]
pub struct Collectors {
    nodes: HashMap<String, NodeState>,
    tallies: HashMap<ObjKey, Tally>,
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
        let before = state.expires;
        let report = lease.and_then(parse_report);
        state.expires = lease.and_then(expiry);
        let expires = state.expires;
        let mut touched = state.owners.clone();
        match report {
            Some(report) => {
                let mut parts: HashMap<ObjKey, Vec<&DrainHealth>> = HashMap::new();
                for health in report.drains.values() {
                    if let Some(o) = &health.owner {
                        parts
                            .entry(ObjKey::new(o.namespace.clone(), o.name.clone()))
                            .or_default()
                            .push(health);
                    }
                }
                // Owners the new report no longer names leave the sums (as a rescan would).
                for owner in touched.iter().filter(|o| !parts.contains_key(*o)) {
                    if let Some(tally) = self.tallies.get_mut(owner) {
                        tally.remove(node, before);
                        if tally.parts.is_empty() {
                            self.tallies.remove(owner);
                        }
                    }
                }
                state.owners = parts.keys().cloned().collect();
                for (owner, drains) in parts {
                    let tally = self.tallies.entry(owner.clone()).or_default();
                    let part = Part::of(drains.into_iter());
                    let part = match tally.remove(node, before) {
                        Some(old) => part.after(&old),
                        None => part,
                    };
                    tally.insert(node, part, expires);
                    touched.insert(owner);
                }
            }
            // No (readable) report: the last figures stay, only the liveness moves.
            None => {
                for owner in &touched {
                    self.relive(owner, node, before, expires);
                }
            }
        }
        touched
    }

    /// Re-file `node`'s part of `owner` from live until `before` to live until `expires`.
    fn relive(&mut self, owner: &ObjKey, node: &str, before: Option<Timestamp>, expires: Option<Timestamp>) {
        if before == expires {
            return;
        }
        if let Some(tally) = self.tallies.get_mut(owner)
            && let Some(part) = tally.remove(node, before)
        {
            tally.insert(node, part, expires);
        }
    }

    /// Forget the Leases of a (re)list that did not appear in it; returns what that affects.
    pub fn retain_listed(&mut self, listed: &BTreeSet<String>) -> Forgotten {
        let mut forgotten = Forgotten::default();
        let mut gone = Vec::new();
        for (node, state) in &mut self.nodes {
            if !listed.contains(node)
                && let Some(before) = state.expires.take()
            {
                forgotten.owners.extend(state.owners.iter().cloned());
                forgotten.nodes.insert(node.clone());
                gone.push((node.clone(), before, state.owners.clone()));
            }
        }
        for (node, before, owners) in gone {
            for owner in &owners {
                self.relive(owner, &node, Some(before), None);
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
        self.tallies
            .get(owner)
            .map(|tally| tally.summary(now))
            .unwrap_or_default()
    }
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

    /// A drain of `shop/<name>` with these figures.
    fn drain(name: &str, delivered: u64, dropped: u64, error_at: Option<u64>) -> DrainHealth {
        DrainHealth {
            owner: Some(DrainOwner {
                namespace: "shop".into(),
                name: name.into(),
            }),
            active: true,
            lines_delivered: delivered,
            lines_dropped: BTreeMap::from([("rejected".to_owned(), dropped)]),
            attempts_failed: dropped,
            lag_bytes: 10,
            last_error: error_at.map(|time| LastError {
                kind: "connect".into(),
                message: format!("at {time}"),
                time,
            }),
            last_success: Some(delivered),
            ..DrainHealth::default()
        }
    }

    /// `node`'s Lease renewed at `renewed` reporting `drains` (keyed by node-config name).
    fn report(node: &str, renewed: Timestamp, drains: &[(&str, DrainHealth)]) -> Lease {
        let mut lease = lease(node, renewed, 0, false);
        let report = HealthReport {
            version: REPORT_VERSION,
            node: node.into(),
            drains: drains
                .iter()
                .map(|(name, health)| ((*name).to_owned(), health.clone()))
                .collect(),
            ..HealthReport::default()
        };
        lease.metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION.to_owned(),
            serde_json::to_string(&report).expect("json"),
        )]));
        lease
    }

    /// The sums as the status shows them, from nothing but the Leases as they stand: every
    /// node's last readable report, live while its Lease is.
    fn rescan(
        leases: &BTreeMap<String, (Option<Timestamp>, HealthReport)>,
        owner: &ObjKey,
        now: Timestamp,
    ) -> Summary {
        let mut sum = Summary::default();
        let mut reporting = BTreeSet::new();
        for (node, (expires, report)) in leases {
            let live = expires.is_some_and(|at| at > now);
            let drains = report.drains.values().filter(|h| {
                h.owner
                    .as_ref()
                    .is_some_and(|o| o.namespace == owner.namespace && o.name == owner.name)
            });
            for h in drains {
                sum.delivered += h.lines_delivered;
                sum.dropped += h.dropped_total();
                sum.failed += h.attempts_failed;
                if let Some(e) = &h.last_error
                    && sum
                        .last_error
                        .as_ref()
                        .is_none_or(|l| (e.time, node) >= (l.time, &l.node))
                {
                    sum.last_error = Some(LatestError {
                        time: e.time,
                        text: format!("{}: {}", e.kind, e.message),
                        node: node.clone(),
                    });
                }
                sum.last_success = sum.last_success.max(h.last_success);
                if live && h.active {
                    sum.lag_bytes += h.lag_bytes;
                    reporting.insert(node);
                    if h.failing {
                        sum.failing.insert(node.clone());
                    }
                }
            }
        }
        sum.reporting = reporting.len();
        sum
    }

    /// Adds, replacements, deletions, expiries, unreadable reports, drains moving between owners
    /// and a relist, each checked against a full rescan of the Leases at three instants.
    #[test]
    fn the_running_sums_equal_a_rescan_after_every_change() {
        let t0 = Timestamp::now();
        let at = |s: i64| t0 + SignedDuration::from_secs(s);
        let web = ObjKey::new("shop", "web");
        let db = ObjKey::new("shop", "db");
        let mut failing = drain("web", 3, 0, Some(9));
        failing.failing = true;
        let mut inactive = drain("web", 4, 0, None);
        inactive.active = false;
        // (node, Lease or deletion)
        let steps: Vec<(&str, Option<Lease>)> = vec![
            (
                "a",
                Some(report("a", at(0), &[("shop-web", drain("web", 7, 1, Some(5)))])),
            ),
            (
                "b",
                Some(report(
                    "b",
                    at(1),
                    &[
                        ("shop-web", failing.clone()),
                        ("shop-db", drain("db", 2, 0, None)),
                    ],
                )),
            ),
            (
                "a",
                Some(report("a", at(10), &[("shop-web", drain("web", 9, 1, Some(5)))])),
            ),
            // Two drains of one owner on a node (a renamed drain still retained).
            (
                "c",
                Some(report(
                    "c",
                    at(12),
                    &[("shop-web", drain("web", 1, 0, Some(9))), ("old", inactive)],
                )),
            ),
            ("b", None),
            // b's report moves its drain from web to db only.
            (
                "b",
                Some(report("b", at(20), &[("shop-db", drain("db", 5, 0, Some(30)))])),
            ),
            ("a", Some(report("a", at(25), &[]))),
            (
                "c",
                Some({
                    let mut bad = report("c", at(40), &[]);
                    bad.metadata.annotations =
                        Some(BTreeMap::from([(ANNOTATION.to_owned(), "{".to_owned())]));
                    bad
                }),
            ),
            (
                "a",
                Some(report("a", at(50), &[("shop-web", drain("web", 12, 2, None))])),
            ),
        ];
        let mut c = Collectors::default();
        let mut leases: BTreeMap<String, (Option<Timestamp>, HealthReport)> = BTreeMap::new();
        for (i, (node, lease)) in steps.into_iter().enumerate() {
            let touched = c.set_lease(node, lease.as_ref());
            let entry = leases.entry(node.to_owned()).or_default();
            let old_owners = owners_of(&entry.1);
            entry.0 = lease.as_ref().and_then(expiry);
            if let Some(report) = lease.as_ref().and_then(parse_report) {
                entry.1 = report;
            }
            let mut expected = old_owners;
            expected.extend(owners_of(&entry.1));
            assert_eq!(touched, expected, "step {i}: owners touched");
            for s in [0, 30, 45, 60, 95] {
                for owner in [&web, &db] {
                    assert_eq!(
                        c.summary(owner, at(s)),
                        rescan(&leases, owner, at(s)),
                        "step {i}, {owner:?} at +{s}s"
                    );
                }
            }
        }
        // A relist that shows only a: b and c are no longer covered, their figures stay.
        let forgotten = c.retain_listed(&BTreeSet::from(["a".to_owned()]));
        assert_eq!(forgotten.nodes, BTreeSet::from(["b".to_owned(), "c".to_owned()]));
        for node in ["b", "c"] {
            leases.get_mut(node).expect("known").0 = None;
        }
        for owner in [&web, &db] {
            assert_eq!(c.summary(owner, at(55)), rescan(&leases, owner, at(55)));
        }
    }

    fn owners_of(report: &HealthReport) -> BTreeSet<ObjKey> {
        report
            .drains
            .values()
            .filter_map(|h| h.owner.as_ref())
            .map(|o| ObjKey::new(o.namespace.clone(), o.name.clone()))
            .collect()
    }

    /// A collector that lost its state dir starts its counters at zero: what it had is carried,
    /// so the sums never go backwards and what it counts anew is added once.
    #[test]
    fn counters_restarting_from_zero_neither_go_backwards_nor_count_twice() {
        let now = Timestamp::now();
        let web = ObjKey::new("shop", "web");
        let mut c = Collectors::default();
        // (node, delivered and dropped it reports; `None`: its Lease is deleted), then the sums
        // (delivered, dropped, failed).
        type Reported = Option<(u64, u64)>;
        type Sums = (u64, u64, u64);
        let steps: [(&str, Reported, Sums); 8] = [
            ("a", Some((100, 4)), (100, 4, 4)),
            ("b", Some((50, 0)), (150, 4, 4)),
            // a stops and comes back with empty state: nothing lost.
            ("a", None, (150, 4, 4)),
            ("a", Some((0, 0)), (150, 4, 4)),
            // It counts on from zero: each new line once.
            ("a", Some((30, 1)), (180, 5, 5)),
            // The same report again (a renewal without news) changes nothing.
            ("a", Some((30, 1)), (180, 5, 5)),
            // A second reset carries on top of the first.
            ("a", Some((10, 0)), (190, 5, 5)),
            ("a", Some((11, 0)), (191, 5, 5)),
        ];
        for (i, (node, figures, sums)) in steps.into_iter().enumerate() {
            let lease = figures.map(|(delivered, dropped)| {
                report(node, now, &[("shop-web", drain("web", delivered, dropped, None))])
            });
            c.set_lease(node, lease.as_ref());
            let s = c.summary(&web, now);
            assert_eq!((s.delivered, s.dropped, s.failed), sums, "step {i}");
            // An unreadable report in between keeps the counters and what was carried (it renews
            // the Lease, so a deleted one is live again).
            let mut bad = report(node, now, &[]);
            bad.metadata.annotations = Some(BTreeMap::from([(ANNOTATION.to_owned(), "{".to_owned())]));
            c.set_lease(node, Some(&bad));
            let t = c.summary(&web, now);
            assert_eq!((t.delivered, t.dropped, t.failed), sums, "step {i}, unreadable");
        }
    }

    /// The latest error is a maximum: when the node that reported it moves on, the next latest
    /// shows; figures near `u64::MAX` saturate as before and come back exactly when taken out.
    #[test]
    fn latest_error_and_saturated_sums_follow_withdrawals() {
        let now = Timestamp::now();
        let web = ObjKey::new("shop", "web");
        let mut c = Collectors::default();
        c.set_lease(
            "a",
            Some(&report(
                "a",
                now,
                &[("shop-web", drain("web", u64::MAX, 0, Some(20)))],
            )),
        );
        c.set_lease(
            "b",
            Some(&report("b", now, &[("shop-web", drain("web", 5, 0, Some(10)))])),
        );
        let sum = c.summary(&web, now);
        assert_eq!(sum.delivered, u64::MAX);
        let error = sum.last_error.expect("an error");
        assert_eq!(
            (error.time, error.text.as_str(), error.node.as_str()),
            (20, "connect: at 20", "a")
        );
        assert_eq!(sum.last_success, Some(u64::MAX));
        // a's drain goes away from its report: b's error and figures are what is left.
        c.set_lease("a", Some(&report("a", now, &[])));
        let sum = c.summary(&web, now);
        assert_eq!(sum.delivered, 5);
        assert_eq!(
            sum.last_error.map(|e| (e.time, e.node)),
            Some((10, "b".to_owned()))
        );
        assert_eq!(sum.last_success, Some(5));
        // b's last drain goes too: no figures for the drain at all.
        c.set_lease("b", Some(&report("b", now, &[])));
        assert_eq!(c.summary(&web, now), Summary::default());
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
