//! What every part of the operator shares: the client, the settings, the metrics and the health
//! flags served on `/healthz` and `/readyz`.
//!
//! Invariant: [`Context`] is cheap to clone (everything heavy is behind `Arc` or is a handle).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use crate::metrics::Metrics;

/// The name of the field manager of every write (server-side apply) and of Event reporting.
pub const MANAGER: &str = "sluice-operator";

/// Tunables, with production defaults in [`Settings::new`]; tests shorten the intervals.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The namespace of the node config Secrets and of the leader Lease.
    pub namespace: String,
    /// This replica's identity in the Lease (the pod name in a cluster).
    pub identity: String,
    /// The name of the leader-election Lease.
    pub lease_name: String,
    /// How long a Lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// How often the leader renews (and a standby retries).
    pub renew_interval: Duration,
    /// How often every referenced Secret is re-read and every status rechecked.
    pub resync_interval: Duration,
    /// How often the Secrets of drains that do not resolve (missing, or holding something invalid)
    /// are read again.
    pub missing_secret_retry: Duration,
    /// Least time between two status writes of one object that change only its figures (pods,
    /// bindings, nodes, delivery); condition changes are written at once. Also how often
    /// collector Leases are checked for expiry.
    pub status_count_interval: Duration,
    /// How many node config writes run at once (and, separately, how many status writes).
    pub write_concurrency: usize,
    /// Watch only these namespaces for LogDrains, LogBindings and Pods (empty: all namespaces).
    pub watch_namespaces: Vec<String>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (none: do not serve).
    pub listen: Option<SocketAddr>,
    /// How long the leader's loop (or a standby's) may go without making progress before
    /// `/healthz` fails, so the kubelet restarts a stuck replica.
    pub stall_after: Duration,
    /// The most bytes of YAML a node's config may take; drains that would push it over are left
    /// out (largest first) and say so in their status.
    pub node_config_limit: usize,
}

impl Settings {
    /// Production defaults for an operator in `namespace` known as `identity`.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            identity: identity.into(),
            lease_name: "sluice-operator".into(),
            lease_duration: Duration::from_secs(15),
            renew_interval: Duration::from_secs(2),
            resync_interval: Duration::from_secs(300),
            missing_secret_retry: Duration::from_secs(10),
            status_count_interval: Duration::from_secs(15),
            write_concurrency: 32,
            watch_namespaces: Vec::new(),
            listen: None,
            node_config_limit: crate::render::NODE_CONFIG_LIMIT,
            stall_after: Duration::from_secs(60),
        }
    }
}

/// Liveness and readiness, as the HTTP server reports them.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    leader: AtomicBool,
    beat: std::sync::Mutex<Option<Instant>>,
}

impl Health {
    /// Whether `/readyz` answers 200: a standby is ready; a leader once its first full pass is done.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    /// Set readiness.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    /// Whether this replica leads.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }
    /// Set leadership.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }
    /// The replica's loop made progress (a standby's attempt on the Lease, a leader's loop turn).
    pub fn beat(&self) {
        if let Ok(mut beat) = self.beat.lock() {
            *beat = Some(Instant::now());
        }
    }
    /// Whether `/healthz` answers 200: the loop made progress within `stall_after` (or has not
    /// started yet).
    pub fn is_live(&self, stall_after: Duration) -> bool {
        self.beat
            .lock()
            .ok()
            .and_then(|beat| *beat)
            .is_none_or(|at| at.elapsed() < stall_after)
    }
}

/// Shared state of one operator replica.
#[derive(Clone)]
pub struct Context {
    /// The API client (the operator's own identity).
    pub client: kube::Client,
    /// Tunables.
    pub settings: Arc<Settings>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Health flags.
    pub health: Arc<Health>,
    /// Until when this replica may write as the leader.
    pub fence: Arc<crate::lease::Fence>,
}

impl Context {
    /// A context with fresh metrics and health.
    pub fn new(client: kube::Client, settings: Settings) -> Self {
        Self {
            client,
            settings: Arc::new(settings),
            metrics: Metrics::new(),
            health: Arc::default(),
            fence: Arc::default(),
        }
    }

    /// Count an API write about to be sent, or refuse it when this replica may no longer lead (its
    /// Lease may have expired), so a deposed leader never writes.
    pub fn before_write(&self, resource: &str, verb: &str) -> crate::Result<()> {
        self.may_write()?;
        self.metrics.write(resource, verb);
        Ok(())
    }

    /// Refuse a write when this replica may no longer lead (its Lease may have expired). The
    /// leader checks this before it hands a write to a [`crate::reconcile::cluster`] store.
    pub fn may_write(&self) -> crate::Result<()> {
        if self.fence.is_open() {
            Ok(())
        } else {
            Err(crate::Error::NotLeader)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn healthz_fails_once_the_loop_stops_making_progress() {
        let health = Health::default();
        let stall = Duration::from_secs(60);
        assert!(health.is_live(stall), "live until the loop starts");
        health.beat();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(health.is_live(stall));
        health.beat();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(health.is_live(stall), "each beat restarts the clock");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!health.is_live(stall));
    }
}
