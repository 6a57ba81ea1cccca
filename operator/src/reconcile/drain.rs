//! `LogDrain` status: does the drain resolve (URL, Secrets, certificates), and how many bindings,
//! pods and nodes feed it.
//!
//! Invariants: the status is written (server-side apply of the status subresource) only when it
//! differs from the object's current status, transition times aside; a change of the figures alone
//! (counts, `delivery`) waits for the caller's interval, so a drain's status is written at most
//! once per interval for them. `delivery` and the `Delivering` condition come from the collectors'
//! node Leases ([`super::delivery`]); an Event marks a drain starting (`DrainFailing`) and stopping
//! (`DrainRecovered`) to fail.

use std::collections::BTreeSet;

use jiff::Timestamp;
use sluice_api::crd::{
    LogDrain, LogDrainStatus,
    condition::{DELIVERING, delivering},
};

use super::{
    StatusOutcome, Step,
    cluster::{Cluster, Notice},
    delivery, status,
};
use crate::{
    Context, resolve,
    world::{ObjKey, World, in_namespace},
};
use kube::runtime::events::EventType;

/// The status a drain should have now, and the problem if it does not resolve.
pub fn desired_status(
    world: &World,
    key: &ObjKey,
    drain: &LogDrain,
) -> (LogDrainStatus, Option<resolve::Problem>) {
    let problem = world.problem(key);
    let mut bindings = 0;
    let (mut pods, mut nodes) = (BTreeSet::new(), BTreeSet::new());
    for (_, binding) in in_namespace(&world.bindings, &key.namespace) {
        if !binding.spec.drains.contains(&key.name) {
            continue;
        }
        bindings += 1;
        for pod in world
            .pods_in(&key.namespace)
            .filter(|p| binding.spec.selector.matches(&p.labels))
        {
            pods.insert(pod.name.as_str());
            nodes.insert(pod.node.as_str());
        }
    }
    let previous = drain
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = drain.metadata.generation;
    let resolved = format!(
        "settings resolve; fed by {bindings} binding(s), {} pod(s) on {} node(s)",
        pods.len(),
        nodes.len()
    );
    let condition = status::ready_condition(previous, problem.as_ref(), resolved, generation);
    let count = |n: usize| Some(i32::try_from(n).unwrap_or(i32::MAX));
    let (delivery, delivering) = delivery::assess(
        &world.collectors,
        key,
        &nodes,
        drain.status.as_ref(),
        Timestamp::now(),
    );
    let status = LogDrainStatus {
        observed_generation: generation,
        conditions: vec![condition, delivering],
        bindings: count(bindings),
        pods: count(pods.len()),
        nodes: count(nodes.len()),
        delivery: Some(delivery),
    };
    (status, problem)
}

/// Recompute one drain's status and write it if it changed; publish an Event when it turns bad.
/// A change of the counts alone is written only when `counts_due` (the caller spaces such writes
/// out, so pod churn does not turn into a stream of status writes); otherwise it is
/// [`StatusOutcome::Deferred`].
pub fn reconcile(
    ctx: &Context,
    cluster: &Cluster,
    world: &World,
    key: &ObjKey,
    counts_due: bool,
) -> Step<LogDrain> {
    let Some(drain) = world.drains.get(key) else {
        return Step::Done(StatusOutcome::Unchanged);
    };
    let (desired, problem) = desired_status(world, key, drain);
    let notice = delivery_notice(drain.status.as_ref(), &desired);
    status::write(ctx, cluster, drain, desired, problem.as_ref(), notice, counts_due)
}

/// The Event a status change calls for: the drain starts failing (a warning) or delivers again
/// after failing.
fn delivery_notice(current: Option<&LogDrainStatus>, desired: &LogDrainStatus) -> Option<Notice> {
    let find = |s: &LogDrainStatus| s.conditions.iter().find(|c| c.type_ == DELIVERING).cloned();
    let before = current.and_then(find);
    let now = find(desired)?;
    let was_failing = before.is_some_and(|c| c.reason == delivering::DRAIN_FAILING);
    let is_failing = now.reason == delivering::DRAIN_FAILING;
    match (was_failing, is_failing) {
        (false, true) => Some(Notice {
            severity: EventType::Warning,
            reason: now.reason,
            note: now.message,
        }),
        (true, false) => Some(Notice {
            severity: EventType::Normal,
            reason: delivering::DRAIN_RECOVERED.to_owned(),
            note: format!("delivering again ({})", now.message),
        }),
        _ => None,
    }
}
