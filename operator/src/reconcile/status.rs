//! Conditions and Events shared by the drain and binding status writers.
//!
//! Invariants: a condition keeps its `lastTransitionTime` unless its status changes; a warning
//! Event is published only when the `Ready` condition turns `False` or changes reason, so a
//! steady problem does not flood the Event stream.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use sluice_api::crd::condition::READY;

use crate::{Context, context::MANAGER};

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
    ctx.metrics.write("event", "create");
    let event = Event {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, object).await {
        tracing::warn!(error = %e, reason, "could not publish an Event");
    }
}
