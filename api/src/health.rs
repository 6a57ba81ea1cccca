//! The collector's health report: per-drain delivery figures that travel to the operator as an
//! annotation on the collector's node Lease.
//!
//! Transport and API-server load: every collector holds one `coordination.k8s.io/v1` Lease
//! ([`lease_name`], in the sluice namespace, holder = pod name), renewed every
//! [`RENEW_INTERVAL_SECONDS`] with a duration of [`LEASE_DURATION_SECONDS`], and deleted on a
//! graceful stop. The report rides on that renewal as the JSON annotation [`ANNOTATION`], so health
//! costs no extra API write: one write per node per 10 s, whatever the number of drains. The
//! operator watches the Leases (one watch) and writes a `LogDrain`'s status at most once per 15 s,
//! and only when it changed.
//!
//! Invariants of the figures, which is what lets the operator sum them without going backwards or
//! counting twice:
//! * Counters ([`DrainHealth::lines_delivered`], [`DrainHealth::lines_dropped`],
//!   [`DrainHealth::attempts_failed`]) are totals per node since the collector's state dir was
//!   created, not since the process started: the collector persists them in its state dir
//!   (atomically) *before* it publishes them, and a restarted collector starts from the saved
//!   totals. So a published figure never decreases for a node, also across restarts; after a
//!   SIGKILL, at most the deliveries of the last renewal interval go uncounted (lines re-sent
//!   after the kill are counted again), so the figures may undercount slightly but never
//!   double-count what was reported.
//! * A drain keeps being reported (with its last figures) for [`RETAIN_REMOVED_SECONDS`] after it
//!   left the node's config, so a binding that moves away does not make the sums drop at once.
//! * Keys are node-config drain names; [`DrainHealth::owner`] names the `LogDrain` (copied from
//!   the node config), and the operator sums per owner.
//! * [`LastError::message`] is short ([`MAX_MESSAGE_CHARS`]) and built from the error's kind and
//!   its transport-level description only: never a credential, a request body or a response body.
//!
//! The report is versioned ([`HealthReport::version`] = [`REPORT_VERSION`]); a reader ignores a
//! report of another version (and says so) rather than misreading it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::node_config::DrainOwner;

/// The Lease annotation that carries a [`HealthReport`] as JSON.
pub const ANNOTATION: &str = "sluice.dev/health";
/// The label every collector Lease carries, so the operator can watch exactly those.
pub const LEASE_LABEL: &str = "sluice.dev/component";
/// The value of [`LEASE_LABEL`] on collector Leases.
pub const LEASE_LABEL_VALUE: &str = "collector";
/// The report schema version this crate reads and writes.
pub const REPORT_VERSION: u32 = 1;
/// How often a collector renews its Lease (and so reports).
pub const RENEW_INTERVAL_SECONDS: u64 = 10;
/// How long a Lease stays live without a renewal.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// How long a drain that left the node's config is still reported.
pub const RETAIN_REMOVED_SECONDS: u64 = 24 * 3600;
/// The longest [`LastError::message`].
pub const MAX_MESSAGE_CHARS: usize = 200;

/// The name of the Lease a collector holds for `node`.
pub fn lease_name(node: &str) -> String {
    format!("sluice-collector-{node}")
}

/// What one collector reports about its drains.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// Schema version; [`REPORT_VERSION`].
    pub version: u32,
    /// The node the collector runs on.
    pub node: String,
    /// Unix time (seconds) the report was made.
    pub reported_at: u64,
    /// Figures per node-config drain name.
    #[serde(default)]
    pub drains: BTreeMap<String, DrainHealth>,
}

/// One drain's figures on one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainHealth {
    /// The `LogDrain` this drain stands for (absent for hand-written configs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<DrainOwner>,
    /// Whether the drain is in the node's config now (false while it is only retained).
    #[serde(default)]
    pub active: bool,
    /// Lines the destination acknowledged (total, see the module invariants).
    #[serde(default)]
    pub lines_delivered: u64,
    /// Lines given up, by cause (`rotated_away`, `rejected`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lines_dropped: BTreeMap<String, u64>,
    /// Delivery attempts that failed (and were retried).
    #[serde(default)]
    pub attempts_failed: u64,
    /// Bytes in the node's log files after the drain's last acknowledged line.
    #[serde(default)]
    pub lag_bytes: u64,
    /// Whether the drain is failing right now (its last attempt failed and it is retrying).
    #[serde(default)]
    pub failing: bool,
    /// The last delivery error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// Unix time (seconds) a batch was last acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<u64>,
}

impl DrainHealth {
    /// All lines dropped, whatever the cause.
    pub fn dropped_total(&self) -> u64 {
        self.lines_dropped.values().fold(0, |a, b| a.saturating_add(*b))
    }
}

/// A delivery error, safe to show anywhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// A fixed cause name (`connect`, `timeout`, `status_5xx`, `rejected`, …).
    pub kind: String,
    /// A short description (at most [`MAX_MESSAGE_CHARS`] characters).
    pub message: String,
    /// Unix time (seconds) it happened.
    pub time: u64,
}

/// `text` cut to [`MAX_MESSAGE_CHARS`] characters (an ellipsis marks a cut), control characters
/// replaced by spaces.
pub fn short_message(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if text.chars().count() > MAX_MESSAGE_CHARS {
        out.pop();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_short_and_single_line() {
        assert_eq!(short_message("a\nb"), "a b");
        let long = "x".repeat(500);
        let short = short_message(&long);
        assert_eq!(short.chars().count(), MAX_MESSAGE_CHARS);
        assert!(short.ends_with('…'));
    }

    #[test]
    fn a_report_round_trips_and_tolerates_missing_fields() {
        let mut report = HealthReport {
            version: REPORT_VERSION,
            node: "n1".into(),
            reported_at: 7,
            ..HealthReport::default()
        };
        report.drains.insert(
            "shop-web".into(),
            DrainHealth {
                owner: Some(DrainOwner {
                    namespace: "shop".into(),
                    name: "web".into(),
                }),
                lines_delivered: 3,
                lines_dropped: BTreeMap::from([("rejected".into(), 2), ("rotated_away".into(), 1)]),
                ..DrainHealth::default()
            },
        );
        let text = serde_yaml::to_string(&report).expect("serialize");
        let back: HealthReport = serde_yaml::from_str(&text).expect("parse");
        assert_eq!(back, report);
        assert_eq!(back.drains["shop-web"].dropped_total(), 3);
        let sparse: HealthReport =
            serde_yaml::from_str("{version: 1, node: n, reportedAt: 1, drains: {d: {}}}").expect("sparse");
        assert_eq!(sparse.drains["d"], DrainHealth::default());
    }
}
