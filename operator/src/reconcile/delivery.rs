//! A `LogDrain`'s delivery health from the collectors' reports: `status.delivery` and the
//! `Delivering` condition.
//!
//! Invariants:
//! * Figures are sums over the nodes that ever reported the drain ([`Summary`]); they do not go
//!   backwards when a collector restarts (its totals continue from what it saved).
//! * `Delivering` is `False` for the first of these that holds: a node runs pods feeding the drain
//!   but has no live collector Lease (`NodeNotCovered`); the drain is failing on a covered node
//!   (`DrainFailing`); lines were dropped since the last status (`LinesDropped`); a node is more
//!   than [`LAGGING_BYTES`] behind (`Lagging`). The message names the nodes (at most
//!   [`NAMED_NODES`], then a count). With no pods it is `Unknown` (`NoPods`).
//! * Messages carry only node names, counts and the collectors' already safe error text.

use std::collections::BTreeSet;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use sluice_api::crd::{
    DeliveryHealth, LogDrainStatus,
    condition::{DELIVERING, delivering},
};

use crate::world::{
    ObjKey,
    collectors::{Collectors, Summary},
};

/// A drain this far behind on one node is `Lagging`.
pub const LAGGING_BYTES: u64 = 64 * 1024 * 1024;
/// How many nodes a message names.
pub const NAMED_NODES: usize = 5;

/// The delivery figures and the `Delivering` condition of drain `key`, fed by pods on `expected`.
pub fn assess(
    collectors: &Collectors,
    key: &ObjKey,
    expected: &BTreeSet<&str>,
    previous: Option<&LogDrainStatus>,
    now: Timestamp,
) -> (DeliveryHealth, Condition) {
    let sum = collectors.summary(key, now);
    let uncovered: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|n| !collectors.is_live(n, now))
        .collect();
    let before = previous.and_then(|s| s.delivery.as_ref());
    let health = delivery(&sum, expected.len());
    let Verdict {
        status,
        reason,
        message,
    } = verdict(&sum, expected.len(), &uncovered, before, &health);
    let previous = previous.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let old = previous.iter().find(|c| c.type_ == DELIVERING);
    let last_transition_time = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let condition = Condition {
        type_: DELIVERING.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: None,
        last_transition_time,
    };
    (health, condition)
}

fn delivery(sum: &Summary, expected: usize) -> DeliveryHealth {
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let time = |t: u64| {
        Timestamp::from_second(i64::try_from(t).unwrap_or(i64::MAX))
            .ok()
            .map(Time)
    };
    DeliveryHealth {
        lines_delivered: int(sum.delivered),
        lines_dropped: int(sum.dropped),
        attempts_failed: int(sum.failed),
        lag_bytes: int(sum.lag_bytes),
        last_error: sum
            .last_error
            .as_ref()
            .map(|latest| format!("{} (node {})", latest.text, latest.node)),
        last_error_time: sum.last_error.as_ref().and_then(|latest| time(latest.time)),
        last_success_time: sum.last_success.and_then(time),
        nodes_reporting: i32::try_from(sum.reporting).unwrap_or(i32::MAX),
        nodes_expected: i32::try_from(expected).unwrap_or(i32::MAX),
    }
}

/// The `Delivering` condition's status, reason and message.
#[derive(Debug, PartialEq, Eq)]
struct Verdict {
    status: &'static str,
    reason: &'static str,
    message: String,
}

impl Verdict {
    fn new(status: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }
}

fn verdict(
    sum: &Summary,
    expected: usize,
    uncovered: &[&str],
    before: Option<&DeliveryHealth>,
    now: &DeliveryHealth,
) -> Verdict {
    if expected == 0 {
        return Verdict::new("Unknown", delivering::NO_PODS, "no pod feeds this drain");
    }
    if !uncovered.is_empty() {
        let message = format!(
            "no live collector on {} running pods that feed this drain: {}",
            plural(uncovered.len(), "node"),
            names(uncovered.iter().copied())
        );
        return Verdict::new("False", delivering::NODE_NOT_COVERED, message);
    }
    if !sum.failing.is_empty() {
        let error = now.last_error.as_deref().unwrap_or("no error text");
        let message = format!(
            "delivery failing on {}: {}; last error: {error}",
            plural(sum.failing.len(), "node"),
            names(sum.failing.iter().map(String::as_str))
        );
        return Verdict::new("False", delivering::DRAIN_FAILING, message);
    }
    let dropped_before = before.map_or(0, |b| b.lines_dropped);
    if now.lines_dropped > dropped_before {
        let message = format!(
            "{} lines given up since the last status ({} in all); see sluice_collector_lines_dropped_total",
            now.lines_dropped - dropped_before,
            now.lines_dropped
        );
        return Verdict::new("False", delivering::LINES_DROPPED, message);
    }
    if now.lag_bytes > i64::try_from(LAGGING_BYTES).unwrap_or(i64::MAX) {
        let message = format!(
            "{} bytes behind the logs over {}",
            now.lag_bytes,
            plural(sum.reporting, "node")
        );
        return Verdict::new("False", delivering::LAGGING, message);
    }
    let message = format!(
        "delivering; {} of {} reporting",
        sum.reporting,
        plural(expected, "node")
    );
    Verdict::new("True", delivering::DELIVERING, message)
}

fn plural(count: usize, word: &str) -> String {
    if count == 1 {
        format!("1 {word}")
    } else {
        format!("{count} {word}s")
    }
}

fn names<'a>(nodes: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = nodes.collect();
    let mut text = all
        .iter()
        .take(NAMED_NODES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > NAMED_NODES {
        text.push_str(&format!(" and {} more", all.len() - NAMED_NODES));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_problem_wins_and_names_the_nodes() {
        let sum = Summary {
            failing: BTreeSet::from(["b".to_owned()]),
            reporting: 2,
            ..Summary::default()
        };
        let health = delivery(&sum, 2);
        let uncovered = verdict(&sum, 2, &["c"], None, &health);
        assert_eq!(
            (uncovered.status, uncovered.reason),
            ("False", delivering::NODE_NOT_COVERED)
        );
        assert!(uncovered.message.contains(": c"), "{}", uncovered.message);
        let failing = verdict(&sum, 2, &[], None, &health);
        assert_eq!(failing.reason, delivering::DRAIN_FAILING);
        assert!(failing.message.contains("1 node: b"), "{}", failing.message);
        let ok = Summary {
            reporting: sum.reporting,
            ..Summary::default()
        };
        assert_eq!(
            verdict(&ok, 2, &[], None, &delivery(&ok, 2)).reason,
            delivering::DELIVERING
        );
        assert_eq!(
            verdict(&ok, 0, &[], None, &delivery(&ok, 0)).reason,
            delivering::NO_PODS
        );
    }

    #[test]
    fn drops_since_the_last_status_are_flagged_once() {
        let sum = Summary {
            dropped: 3,
            ..Summary::default()
        };
        let now = delivery(&sum, 1);
        assert_eq!(
            verdict(&sum, 1, &[], None, &now).reason,
            delivering::LINES_DROPPED
        );
        assert_eq!(
            verdict(&sum, 1, &[], Some(&now), &now).reason,
            delivering::DELIVERING
        );
    }

    #[test]
    fn long_node_lists_are_cut() {
        let many = ["a", "b", "c", "d", "e", "f", "g"];
        assert_eq!(names(many.into_iter()), "a, b, c, d, e and 2 more");
    }
}
