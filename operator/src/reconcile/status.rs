//! Conditions and Events shared by the drain and binding status writers.
//!
//! Invariants: a condition keeps its `lastTransitionTime` unless its status changes; a warning
//! Event is published only when the `Ready` condition turns `False` or changes reason, so a
//! steady problem does not flood the Event stream.

use futures::future::BoxFuture;
use jiff::Timestamp;
use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::ObjectReference,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
    runtime::events::{Event, EventType, Recorder, Reporter},
};
use serde::{Serialize, de::DeserializeOwned};
use sluice_api::crd::{
    LogBinding, LogBindingStatus, LogDrain, LogDrainStatus,
    condition::{READY, reason::RESOLVED},
};

use super::{
    StatusOutcome, Step,
    cluster::{Cluster, EventSink, Notice, StatusStore},
};
use crate::{Context, Error, context::MANAGER, resolve::Problem};

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

/// Decide what `desired` needs against `current`: nothing ([`StatusOutcome::Unchanged`]), a later write
/// ([`StatusOutcome::Deferred`]: a change of the figures alone, condition messages included, while
/// `counts_due` is false; the caller
/// spaces such writes out, so pod churn does not become a stream of status writes), or a write
/// now (`None`).
pub fn check<S: CrStatus>(current: Option<&S>, desired: &S, counts_due: bool) -> Option<StatusOutcome> {
    if current.is_some_and(|c| c.same_as(desired)) {
        return Some(StatusOutcome::Unchanged);
    }
    // Only a changed verdict (a condition's status or reason) is written at once; figures, and
    // messages that only carry figures (counts, nodes reporting), wait for `counts_due`.
    let same_verdicts = current.is_some_and(|c| {
        c.observed_generation() == desired.observed_generation()
            && same_verdicts(c.conditions(), desired.conditions())
    });
    (same_verdicts && !counts_due).then_some(StatusOutcome::Deferred)
}

/// Whether two condition lists reach the same verdicts (messages and times aside).
fn same_verdicts(left: &[Condition], right: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.observed_generation,
        )
    };
    left.len() == right.len() && left.iter().map(key).eq(right.iter().map(key))
}

/// A custom resource whose status the operator writes: [`LogDrain`] or [`LogBinding`].
pub trait StatusObject: Resource<DynamicType = ()> + Clone + Send + Sync + 'static {
    /// Its status type.
    type Status: CrStatus + Send + 'static;
    /// Its current status.
    fn status(&self) -> Option<&Self::Status>;
    /// A copy carrying `status`: what a status write sends.
    fn with_status(&self, status: Self::Status) -> Self;
    /// Write its status to `store`; the object as stored after the write.
    fn send(self, store: &dyn StatusStore) -> BoxFuture<'_, crate::Result<Self>>;
}

impl StatusObject for LogDrain {
    type Status = LogDrainStatus;
    fn status(&self) -> Option<&LogDrainStatus> {
        self.status.as_ref()
    }
    fn with_status(&self, status: LogDrainStatus) -> Self {
        Self {
            status: Some(status),
            ..self.clone()
        }
    }
    fn send(self, store: &dyn StatusStore) -> BoxFuture<'_, crate::Result<Self>> {
        store.drain(self)
    }
}

impl StatusObject for LogBinding {
    type Status = LogBindingStatus;
    fn status(&self) -> Option<&LogBindingStatus> {
        self.status.as_ref()
    }
    fn with_status(&self, status: LogBindingStatus) -> Self {
        Self {
            status: Some(status),
            ..self.clone()
        }
    }
    fn send(self, store: &dyn StatusStore) -> BoxFuture<'_, crate::Result<Self>> {
        store.binding(self)
    }
}

/// The step that brings `object`'s status to `desired`: [`Step::Done`] when [`check`] says no write
/// is due, else a [`Step::Write`] future that owns what it needs, so it runs off the leader's loop:
/// the status write, then a warning Event when `Ready` turns bad with `problem`, then `notice`.
/// The future returns the object as written, so the caller can compare the next desired status
/// with it before the watch brings it back.
pub fn write<K: StatusObject>(
    ctx: &Context,
    cluster: &Cluster,
    object: &K,
    desired: K::Status,
    problem: Option<&Problem>,
    notice: Option<Notice>,
    counts_due: bool,
) -> Step<K> {
    let current = object.status();
    if let Some(outcome) = check(current, &desired, counts_due) {
        return Step::Done(outcome);
    }
    let previous = current.map(|c| c.conditions().to_vec()).unwrap_or_default();
    let warning = problem.and_then(|problem| {
        let ready = desired.conditions().first()?;
        newly_failing(&previous, ready).then(|| Notice {
            severity: EventType::Warning,
            reason: problem.reason.to_owned(),
            note: problem.message.clone(),
        })
    });
    let reference = object.object_ref(&());
    let target = object.with_status(desired);
    let (ctx, statuses, events) = (ctx.clone(), cluster.statuses.clone(), cluster.events.clone());
    Step::Write(Box::pin(async move {
        ctx.may_write()?;
        let written = target.send(statuses.as_ref()).await?;
        for notice in warning.iter().chain(notice.iter()) {
            publish(&ctx, events.as_ref(), &reference, notice).await;
        }
        Ok(written)
    }))
}

/// The Ready condition wanted now: `False` with the problem's reason and message when there is
/// one, else `True` (`Resolved`) with `resolved`. Keeps the transition time of `previous` when the
/// status did not change.
pub fn ready_condition(
    previous: &[Condition],
    problem: Option<&Problem>,
    resolved: String,
    generation: Option<i64>,
) -> Condition {
    let (status, reason, message) = match problem {
        None => ("True", RESOLVED, resolved),
        Some(problem) => ("False", problem.reason, problem.message.clone()),
    };
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
pub fn same_conditions(left: &[Condition], right: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    left.len() == right.len() && left.iter().map(key).eq(right.iter().map(key))
}

/// Publish `notice` about `object`, unless this replica may no longer lead.
pub async fn publish(ctx: &Context, events: &dyn EventSink, object: &ObjectReference, notice: &Notice) {
    if ctx.may_write().is_ok() {
        events.publish(object, notice).await;
    }
}

/// Writes statuses with a server-side apply of the status subresource.
pub struct KubeStatuses {
    ctx: Context,
}

impl KubeStatuses {
    /// Writes through `ctx`'s client.
    pub fn new(ctx: Context) -> Self {
        Self { ctx }
    }
}

impl StatusStore for KubeStatuses {
    fn drain(&self, drain: LogDrain) -> BoxFuture<'_, crate::Result<LogDrain>> {
        Box::pin(apply_status(&self.ctx, drain))
    }
    fn binding(&self, binding: LogBinding) -> BoxFuture<'_, crate::Result<LogBinding>> {
        Box::pin(apply_status(&self.ctx, binding))
    }
}

/// Server-side apply of `object`'s status (field manager [`MANAGER`]).
async fn apply_status<K>(ctx: &Context, object: K) -> crate::Result<K>
where
    K: StatusObject + Resource<Scope = NamespaceResourceScope> + DeserializeOwned + std::fmt::Debug,
{
    let kind = K::kind(&());
    let namespace = object.meta().namespace.clone().unwrap_or_default();
    let name = object.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch =
        serde_json::json!({"apiVersion": K::api_version(&()), "kind": kind, "status": object.status()});
    ctx.before_write(&kind.to_lowercase(), "status")?;
    api.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(|e| Error::kube("patch status", format!("{kind} {namespace}/{name}"), e))
}

/// Publishes Events through kube's [`Recorder`] as this replica.
pub struct KubeEvents {
    ctx: Context,
    recorder: Recorder,
}

impl KubeEvents {
    /// A recorder reporting as [`MANAGER`], instance `ctx`'s identity.
    pub fn new(ctx: &Context) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: Some(ctx.settings.identity.clone()),
        };
        Self {
            ctx: ctx.clone(),
            recorder: Recorder::new(ctx.client.clone(), reporter),
        }
    }
}

impl EventSink for KubeEvents {
    fn publish<'a>(&'a self, object: &'a ObjectReference, notice: &'a Notice) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.ctx.before_write("event", "create").is_err() {
                return;
            }
            let event = Event {
                type_: notice.severity,
                reason: notice.reason.clone(),
                note: Some(notice.note.clone()),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&event, object).await {
                tracing::warn!(error = %e, reason = notice.reason, "could not publish an Event");
            }
        })
    }
}
