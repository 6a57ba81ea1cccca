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
    condition::{DELIVERING, delivering, reason},
};

use super::{Outcome, Step, delivery, status};
use crate::{
    Context, resolve,
    world::{ObjKey, World, in_namespace},
};

/// The status a drain should have now, and the problem if it does not resolve.
pub fn desired_status(
    world: &World,
    key: &ObjKey,
    drain: &LogDrain,
) -> (LogDrainStatus, Option<resolve::Problem>) {
    let problem = world.problem(key);
    let mut bindings = 0;
    let (mut pods, mut nodes) = (BTreeSet::new(), BTreeSet::new());
    for (_, binding) in in_namespace(&world.bindings, &key.0) {
        if !binding.spec.drains.contains(&key.1) {
            continue;
        }
        bindings += 1;
        for pod in world
            .pods_in(&key.0)
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
    let condition = match &problem {
        None => status::ready_condition(
            previous,
            true,
            reason::RESOLVED,
            format!(
                "settings resolve; fed by {bindings} binding(s), {} pod(s) on {} node(s)",
                pods.len(),
                nodes.len()
            ),
            generation,
        ),
        Some(p) => status::ready_condition(previous, false, p.reason, p.message.clone(), generation),
    };
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
/// [`Outcome::Deferred`].
pub fn reconcile(
    ctx: &Context,
    recorder: &kube::runtime::events::Recorder,
    world: &World,
    key: &ObjKey,
    counts_due: bool,
) -> Step<LogDrain> {
    let Some(drain) = world.drains.get(key) else {
        return Step::Done(Outcome::Unchanged);
    };
    let (desired, problem) = desired_status(world, key, drain);
    let problem = problem.as_ref().map(|p| (p.reason, p.message.as_str()));
    let event = failing_event(drain.status.as_ref(), &desired);
    let step = status::write(
        ctx,
        recorder,
        drain,
        drain.status.as_ref(),
        desired,
        problem,
        counts_due,
    );
    match (step, event) {
        (Step::Write(write), Some((warning, reason, message))) => {
            let (ctx, recorder) = (ctx.clone(), recorder.clone());
            let reference = kube::Resource::object_ref(drain, &());
            Step::Write(Box::pin(async move {
                let written = write.await?;
                status::publish(&ctx, &recorder, &reference, warning, &reason, &message).await;
                Ok(written)
            }))
        }
        (step, _) => step,
    }
}

/// The Event a status change calls for: the drain starts failing (a warning) or delivers again
/// after failing; `(warning, reason, message)`.
fn failing_event(
    current: Option<&LogDrainStatus>,
    desired: &LogDrainStatus,
) -> Option<(bool, String, String)> {
    let find = |s: &LogDrainStatus| s.conditions.iter().find(|c| c.type_ == DELIVERING).cloned();
    let before = current.and_then(find);
    let now = find(desired)?;
    let was_failing = before.is_some_and(|c| c.reason == delivering::DRAIN_FAILING);
    let is_failing = now.reason == delivering::DRAIN_FAILING;
    match (was_failing, is_failing) {
        (false, true) => Some((true, now.reason, now.message)),
        (true, false) => Some((
            false,
            delivering::DRAIN_RECOVERED.to_owned(),
            format!("delivering again ({})", now.message),
        )),
        _ => None,
    }
}
