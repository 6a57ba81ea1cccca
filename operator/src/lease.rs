//! Leader election on a `coordination.k8s.io/v1` Lease (kube-runtime has none).
//!
//! Protocol: a replica may take the Lease when it does not exist, has no holder, is its own, or
//! has not been renewed for `leaseDurationSeconds`. Every write is a `replace` carrying the
//! `resourceVersion` it read, so of two replicas racing for the same Lease exactly one wins (the
//! other gets 409 Conflict and stays standby).
//!
//! Invariants for safety (as client-go's leader election):
//! * expiry is judged on this replica's own monotonic clock, from the moment it last saw the
//!   record change ([`Observer`]), never by comparing another process's `renewTime` with our wall
//!   clock; so a standby waits a full lease duration after the holder's last renewal it saw;
//! * the leader may write only until [`LeaderElector::renew_deadline`] after the *start* of its
//!   last successful renewal ([`Fence`]): a standby starts counting only when it sees that renewal,
//!   which is later, and waits the longer lease duration, so the leader has stopped before anyone
//!   else may start;
//! * each renewal must finish within the time the fence still allows (the caller bounds it), so a
//!   hanging request cannot keep a deposed leader acting.

use std::{sync::Mutex, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use crate::{Error, Result};

/// What a replica last saw of the Lease record, and when, by its own monotonic clock.
#[derive(Debug, Default)]
pub struct Observer {
    last: Option<(LeaseSpec, Instant)>,
}

impl Observer {
    /// Note the record a read returned at `now`; the expiry clock restarts when it changed.
    pub fn observe(&mut self, spec: &LeaseSpec, now: Instant) {
        if self.last.as_ref().is_none_or(|(seen, _)| seen != spec) {
            self.last = Some((spec.clone(), now));
        }
    }

    /// Whether the holder's claim has run out: `duration` passed on our clock since we saw the
    /// record change (nothing observed yet: not expired).
    pub fn expired(&self, now: Instant, duration: Duration) -> bool {
        self.last
            .as_ref()
            .is_some_and(|(_, seen)| now >= *seen + duration)
    }
}

/// Until when this replica may write as the leader. Shared by the elector (which extends it on
/// each renewal and closes it on stepping down) and every writer (which checks it before each
/// write).
#[derive(Debug, Default)]
pub struct Fence {
    until: Mutex<Option<Instant>>,
}

impl Fence {
    /// Allow writes until `until` (never shortens an allowance already given).
    pub fn extend(&self, until: Instant) {
        if let Ok(mut current) = self.until.lock() {
            *current = Some(current.map_or(until, |c| c.max(until)));
        }
    }

    /// Stop all writes now.
    pub fn close(&self) {
        if let Ok(mut current) = self.until.lock() {
            *current = None;
        }
    }

    /// When writes stop (`None`: they are not allowed).
    pub fn until(&self) -> Option<Instant> {
        self.until.lock().ok().and_then(|u| *u)
    }

    /// Whether a write may start now.
    pub fn is_open(&self) -> bool {
        self.until().is_some_and(|u| Instant::now() < u)
    }
}

/// Takes, renews and releases one Lease for one identity.
pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    duration: Duration,
    observer: Observer,
}

impl LeaderElector {
    /// An elector for Lease `namespace/name`, held as `identity` for `duration` per renewal.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            duration,
            observer: Observer::default(),
        }
    }

    /// How long the leader keeps acting without a successful renewal: two thirds of the lease.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    fn error(&self, source: kube::Error) -> Error {
        Error::Lease {
            lease: format!("{}/{}", self.namespace, self.name),
            source,
        }
    }

    /// Take or renew the Lease. `Ok(true)`: this identity holds it now, renewed at a time after
    /// the call started; `Ok(false)`: another live holder has it (or won a race).
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX).max(1);
        let read = self.api.get_opt(&self.name).await.map_err(|e| self.error(e))?;
        let Some(mut lease) = read else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(Timestamp::now())),
                    renew_time: Some(MicroTime(Timestamp::now())),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.error(e)),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        self.observer.observe(spec, Instant::now());
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let vacant = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        let valid_for = u64::try_from(spec.lease_duration_seconds.unwrap_or(seconds)).unwrap_or(0);
        let expired = self
            .observer
            .expired(Instant::now(), Duration::from_secs(valid_for.max(1)));
        if !(mine || vacant || expired) {
            return Ok(false);
        }
        let now = Timestamp::now();
        if !mine {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Give the Lease up (graceful shutdown), so a standby takes over at once instead of after the
    /// lease duration. Does nothing when another identity holds it.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(|e| self.error(e))? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).expect("time"))),
            ..LeaseSpec::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_runs_on_our_clock_from_the_last_change_seen() {
        let lease = Duration::from_secs(15);
        let mut observer = Observer::default();
        let start = Instant::now();
        assert!(!observer.expired(start, lease), "nothing seen: not expired");
        // The holder's renewTime is far in the past by any wall clock: irrelevant.
        observer.observe(&spec("a", 0), start);
        assert!(!observer.expired(start + Duration::from_secs(14), lease));
        // The holder renews (the record changes) at 10 s: the clock starts again.
        observer.observe(&spec("a", 1), start + Duration::from_secs(10));
        // The same record seen again does not restart it.
        observer.observe(&spec("a", 1), start + Duration::from_secs(20));
        assert!(!observer.expired(start + Duration::from_secs(24), lease));
        assert!(observer.expired(start + Duration::from_secs(25), lease));
    }

    #[tokio::test(start_paused = true)]
    async fn the_fence_closes_at_its_deadline_and_on_demand() {
        let fence = Fence::default();
        assert!(!fence.is_open(), "closed until a renewal opens it");
        let t = Instant::now();
        fence.extend(t + Duration::from_secs(10));
        fence.extend(t + Duration::from_secs(5));
        assert_eq!(
            fence.until(),
            Some(t + Duration::from_secs(10)),
            "never shortened"
        );
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(fence.is_open());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!fence.is_open(), "closed the moment the deadline passes");
        fence.extend(Instant::now() + Duration::from_secs(10));
        fence.close();
        assert!(!fence.is_open());
    }
}
