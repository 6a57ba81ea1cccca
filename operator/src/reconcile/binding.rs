//! `LogBinding` status: do all its drains resolve in its own namespace, and how many pods does
//! it select.
//!
//! Invariants: drains are looked up only in the binding's namespace (a `namespace/name`
//! reference, which the schema already refuses, is reported as `CrossNamespaceReference` and
//! never followed); the status is written only when it changed.

use sluice_api::crd::{LogBinding, LogBindingStatus, condition::reason};

use super::{StatusOutcome, Step, cluster::Cluster, status};
use crate::{
    Context,
    resolve::Problem,
    world::{ObjKey, World},
};

/// One drain name of a binding that does not lead to a usable drain.
fn drain_problem(world: &World, namespace: &str, name: &str) -> Option<Problem> {
    if name.contains('/') {
        return Some(Problem::new(
            reason::CROSS_NAMESPACE_REFERENCE,
            format!(
                "drain {name:?} is in another namespace; a binding can only use LogDrains of its own namespace ({namespace:?})"
            ),
        ));
    }
    let key = ObjKey::new(namespace, name);
    if world.resolved(&key).is_none() {
        return Some(Problem::new(
            reason::UNKNOWN_DRAIN,
            format!("LogDrain {name:?} does not exist in namespace {namespace:?}"),
        ));
    }
    let problem = world.problem(&key)?;
    Some(Problem::new(
        reason::DRAIN_NOT_READY,
        format!(
            "LogDrain {name:?} is not ready ({}): {}",
            problem.reason, problem.message
        ),
    ))
}

/// The status a binding should have now, and its problem if it has any: the first drain's reason,
/// with every drain's message.
pub fn desired_status(
    world: &World,
    key: &ObjKey,
    binding: &LogBinding,
) -> (LogBindingStatus, Option<Problem>) {
    let problems: Vec<(&String, Problem)> = binding
        .spec
        .drains
        .iter()
        .filter_map(|drain| Some((drain, drain_problem(world, &key.namespace, drain)?)))
        .collect();
    let matched = world
        .pods_in(&key.namespace)
        .filter(|p| binding.spec.selector.matches(&p.labels))
        .count();
    let previous = binding
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = binding.metadata.generation;
    let problem = problems.first().map(|(_, first)| {
        let messages: Vec<&str> = problems
            .iter()
            .map(|(_, problem)| problem.message.as_str())
            .collect();
        Problem::new(first.reason, messages.join("; "))
    });
    let resolved = format!(
        "all {} drain(s) resolve; {matched} pod(s) selected",
        binding.spec.drains.len()
    );
    let condition = status::ready_condition(previous, problem.as_ref(), resolved, generation);
    let status = LogBindingStatus {
        observed_generation: generation,
        conditions: vec![condition],
        matched_pods: i32::try_from(matched).unwrap_or(i32::MAX),
        unresolved_drains: problems.iter().map(|(drain, _)| (*drain).clone()).collect(),
    };
    (status, problem)
}

/// Recompute one binding's status and write it if it changed; publish an Event when it turns bad.
/// A change of the counts alone is written only when `counts_due` (the caller spaces such writes
/// out, so pod churn does not turn into a stream of status writes); otherwise it is
/// [`StatusOutcome::Deferred`].
pub fn reconcile(
    ctx: &Context,
    cluster: &Cluster,
    world: &World,
    key: &ObjKey,
    counts_due: bool,
) -> Step<LogBinding> {
    let Some(binding) = world.bindings.get(key) else {
        return Step::Done(StatusOutcome::Unchanged);
    };
    let (desired, problem) = desired_status(world, key, binding);
    status::write(ctx, cluster, binding, desired, problem.as_ref(), None, counts_due)
}
