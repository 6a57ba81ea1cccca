//! `kubectl sluice drains`: one row per LogDrain, from its status as the operator wrote it.

use anyhow::Result;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{Api, api::ListParams};
use sluice_api::crd::{LogDrain, condition};

use crate::{
    connect::Target,
    table::{self, Table},
};

/// List the drains of the target namespace (or all) and print the table.
pub async fn run(target: &Target, all_namespaces: bool) -> Result<()> {
    let api: Api<LogDrain> = if all_namespaces {
        Api::all(target.client.clone())
    } else {
        Api::namespaced(target.client.clone(), &target.namespace)
    };
    let what = scope("LogDrains", &target.namespace, all_namespaces);
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| target.explain_error(e, &what, true))?;
    let mut drains = list.items;
    drains.sort_by(|a, b| key(a).cmp(&key(b)));
    let table = table(&drains, all_namespaces, jiff::Timestamp::now());
    if table.is_empty() {
        eprintln!(
            "No LogDrains found{}.",
            found_in(&target.namespace, all_namespaces)
        );
    } else {
        print!("{}", table.render());
    }
    Ok(())
}

fn key(drain: &LogDrain) -> (Option<&str>, Option<&str>) {
    (
        drain.metadata.namespace.as_deref(),
        drain.metadata.name.as_deref(),
    )
}

/// `LogDrains in namespace shop` / `LogDrains in all namespaces`, for messages.
pub fn scope(kind: &str, namespace: &str, all: bool) -> String {
    if all {
        format!("{kind} in all namespaces")
    } else {
        format!("{kind} in namespace {namespace}")
    }
}

/// ` in namespace shop`, or nothing with `-A`.
pub fn found_in(namespace: &str, all: bool) -> String {
    if all {
        String::new()
    } else {
        format!(" in namespace {namespace}")
    }
}

/// The status of condition `type_`, with its reason when it is not `True` (`False (DrainFailing)`),
/// or `Unknown` when the operator has not written it.
pub fn condition_cell(conditions: &[Condition], type_: &str) -> String {
    match conditions.iter().find(|c| c.type_ == type_) {
        Some(c) if c.status == "True" || c.reason.is_empty() => c.status.clone(),
        Some(c) => format!("{} ({})", c.status, c.reason),
        None => "Unknown".into(),
    }
}

/// The table of `drains` (already sorted).
pub fn table(drains: &[LogDrain], all_namespaces: bool, now: jiff::Timestamp) -> Table {
    let mut header = vec![
        "NAME",
        "READY",
        "DELIVERING",
        "DELIVERED",
        "FAILED",
        "DROPPED",
        "LAG",
        "LAST ERROR",
    ];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut t = Table::new(&header);
    for drain in drains {
        let status = drain.status.clone().unwrap_or_default();
        let mut row = vec![
            drain.metadata.name.clone().unwrap_or_default(),
            condition_cell(&status.conditions, condition::READY),
            condition_cell(&status.conditions, condition::DELIVERING),
        ];
        match &status.delivery {
            Some(d) => {
                row.extend([
                    d.lines_delivered.to_string(),
                    d.attempts_failed.to_string(),
                    d.lines_dropped.to_string(),
                    table::bytes(d.lag_bytes),
                ]);
                row.push(match (&d.last_error, &d.last_error_time) {
                    (Some(e), Some(at)) => format!("{e} ({} ago)", table::age(at.0, now)),
                    (Some(e), None) => e.clone(),
                    (None, _) => "<none>".into(),
                });
            }
            None => row.extend(["-", "-", "-", "-", "<none>"].map(String::from)),
        }
        if all_namespaces {
            row.insert(0, drain.metadata.namespace.clone().unwrap_or_default());
        }
        t.row(row);
    }
    t
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use sluice_api::crd::{DeliveryHealth, LogDrainSpec, LogDrainStatus};

    use super::*;

    fn cond(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    #[test]
    fn rows_show_conditions_figures_and_the_last_error() {
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().unwrap();
        let mut failing = LogDrain::new(
            "failing",
            LogDrainSpec {
                url: "syslog://x:1".into(),
                tls: None,
                credentials: None,
                rate_limit: None,
                format: None,
                http: None,
            },
        );
        failing.metadata.namespace = Some("shop".into());
        failing.status = Some(LogDrainStatus {
            conditions: vec![
                cond("Ready", "True", "Resolved"),
                cond("Delivering", "False", "DrainFailing"),
            ],
            delivery: Some(DeliveryHealth {
                lines_delivered: 10,
                attempts_failed: 3,
                lag_bytes: 2048,
                last_error: Some("connect: refused".into()),
                last_error_time: Some(Time("2026-01-01T00:05:00Z".parse().unwrap())),
                ..DeliveryHealth::default()
            }),
            ..LogDrainStatus::default()
        });
        let mut fresh = failing.clone();
        fresh.metadata.name = Some("fresh".into());
        fresh.status = None;
        let text = table(&[failing, fresh], true, now).render();
        assert_eq!(
            text,
            "NAMESPACE   NAME      READY     DELIVERING             DELIVERED   FAILED   DROPPED   LAG      LAST ERROR\n\
             shop        failing   True      False (DrainFailing)   10          3        0         2.0KiB   connect: refused (5m ago)\n\
             shop        fresh     Unknown   Unknown                -           -        -         -        <none>\n"
        );
    }
}
