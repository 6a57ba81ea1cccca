//! Conditions and Events shared by the drain and binding status writers.
//!
//! Invariants: a condition keeps its `lastTransitionTime` unless its status changes; a warning
//! Event is published only when the `Ready` condition turns `False` or changes reason, so a
//! steady problem does not flood the Event stream.

use jiff::Timestamp;
use k8s_openapi::{
    NamespaceResourceScope,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde::{Serialize, de::DeserializeOwned};
use sluice_api::crd::{LogBindingStatus, LogDrainStatus, condition::READY};

use super::{Outcome, Step};
use crate::{Context, Error, context::MANAGER};

/// A custom resource's status as the operator writes it.
pub trait CrStatus: Serialize {
    /// The generation it describes.
    fn observed_generation(&self) -> Option<i64>;
    /// Its conditions, `Ready` first.
    fn conditions(&self) -> &[Condition];
    /// Whether it says the same as `other` (transition times aside).
    fn same_as(&self, other: &Self) -> bool;
}

impl CrStatus for LogDrainStatus {
    fn observed_generation(&self) -> Option<i64> {
        self.observed_generation
    }
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn same_as(&self, other: &Self) -> bool {
        self.observed_generation == other.observed_generation
            && (self.bindings, self.pods, self.nodes) == (other.bindings, other.pods, other.nodes)
            && self.delivery == other.delivery
            && same_conditions(&self.conditions, &other.conditions)
    }
}

impl CrStatus for LogBindingStatus {
    fn observed_generation(&self) -> Option<i64> {
        self.observed_generation
    }
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn same_as(&self, other: &Self) -> bool {
        self.observed_generation == other.observed_generation
            && self.matched_pods == other.matched_pods
            && self.unresolved_drains == other.unresolved_drains
            && same_conditions(&self.conditions, &other.conditions)
    }
}

/// Decide what `desired` needs against `current`: nothing ([`Outcome::Unchanged`]), a later write
/// ([`Outcome::Deferred`]: a change of the figures alone, condition messages included, while
/// `counts_due` is false; the caller
/// spaces such writes out, so pod churn does not become a stream of status writes), or a write
/// now (`None`).
pub fn check<S: CrStatus>(current: Option<&S>, desired: &S, counts_due: bool) -> Option<Outcome> {
    if current.is_some_and(|c| c.same_as(desired)) {
        return Some(Outcome::Unchanged);
    }
    // Only a changed verdict (a condition's status or reason) is written at once; figures, and
    // messages that only carry figures (counts, nodes reporting), wait for `counts_due`.
    let same_verdicts = current.is_some_and(|c| {
        c.observed_generation() == desired.observed_generation()
            && same_verdicts(c.conditions(), desired.conditions())
    });
    (same_verdicts && !counts_due).then_some(Outcome::Deferred)
}

/// Whether two condition lists reach the same verdicts (messages and times aside).
fn same_verdicts(a: &[Condition], b: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.observed_generation,
        )
    };
    a.len() == b.len() && a.iter().map(key).eq(b.iter().map(key))
}

/// The step that brings `object`'s status to `desired`: [`Step::Done`] when [`check`] says no write
/// is due, else a [`Step::Write`] future that owns what it needs, so it runs off the leader's loop:
/// a server-side apply of the status subresource, then a warning Event when `Ready` turns bad with
/// `problem` (reason, message). The future returns the object as written, so the caller can compare
/// the next desired status with it before the watch brings it back.
pub fn write<K, S>(
    ctx: &Context,
    recorder: &Recorder,
    object: &K,
    current: Option<&S>,
    desired: S,
    problem: Option<(&str, &str)>,
    counts_due: bool,
) -> Step<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    S: CrStatus + Send + 'static,
{
    if let Some(outcome) = check(current, &desired, counts_due) {
        return Step::Done(outcome);
    }
    let kind = K::kind(&());
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    let name = object.meta().name.clone().unwrap_or_default();
    let previous = current.map(|c| c.conditions().to_vec()).unwrap_or_default();
    let event = problem.and_then(|(reason, message)| {
        let ready = desired.conditions().first()?;
        newly_failing(&previous, ready).then(|| (reason.to_owned(), message.to_owned()))
    });
    let reference = object.object_ref(&());
    let (ctx, recorder) = (ctx.clone(), recorder.clone());
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": kind, "status": desired});
    Step::Write(Box::pin(async move {
        ctx.before_write(&kind.to_lowercase(), "status")?;
        let written = api
            .patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
            .await
            .map_err(|e| Error::kube("patch status", format!("{kind} {namespace}/{name}"), e))?;
        if let Some((reason, message)) = event {
            warn(&ctx, &recorder, &reference, &reason, &message).await;
        }
        Ok(written)
    }))
}

/// The Ready condition wanted now, keeping the transition time of `previous` when the status did
/// not change.
pub fn ready_condition(
    previous: &[Condition],
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let old = previous.iter().find(|c| c.type_ == READY);
    let last_transition_time = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(Timestamp::now()),
    };
    Condition {
        type_: READY.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Whether the Ready condition went bad (or changed why it is bad): worth an Event.
pub fn newly_failing(previous: &[Condition], now: &Condition) -> bool {
    now.status == "False"
        && !previous
            .iter()
            .any(|c| c.type_ == READY && c.status == "False" && c.reason == now.reason)
}

/// Whether two condition lists say the same, transition times aside.
pub fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    a.len() == b.len() && a.iter().map(key).eq(b.iter().map(key))
}

/// The Event recorder of this replica.
pub fn recorder(ctx: &Context) -> Recorder {
    Recorder::new(
        ctx.client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: Some(ctx.settings.identity.clone()),
        },
    )
}

/// Publish a warning Event about `object`; failures are logged, never fatal.
pub async fn warn(
    ctx: &Context,
    recorder: &Recorder,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    reason: &str,
    note: &str,
) {
    publish(ctx, recorder, object, true, reason, note).await;
}

/// Publish a warning (or normal) Event about `object`; failures are logged, never fatal.
pub async fn publish(
    ctx: &Context,
    recorder: &Recorder,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    warning: bool,
    reason: &str,
    note: &str,
) {
    if ctx.before_write("event", "create").is_err() {
        return;
    }
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, object).await {
        tracing::warn!(error = %e, reason, "could not publish an Event");
    }
}
