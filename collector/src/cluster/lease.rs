//! The node's Lease: renewed on a heartbeat, carrying the drains' health, deleted on a graceful
//! stop.
//!
//! Invariants:
//! * One write per renewal (a server-side apply that creates the Lease when it is missing), every
//!   [`RENEW_INTERVAL_SECONDS`], with `leaseDurationSeconds` = [`LEASE_DURATION_SECONDS`]; the
//!   health report rides on it as the [`ANNOTATION`], so health costs no extra write.
//! * The report is saved in the state dir before it is sent ([`crate::health::Book`]).
//! * A failed renewal is counted (`api_errors_total{op="lease"}`), logged when renewals start or
//!   stop failing, and tried again at the next beat; it never stops the collector.
//! * On a graceful stop the Lease is deleted only while this pod still holds it (a precondition
//!   on its resourceVersion), so a successor's Lease is never removed.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api,
    api::{DeleteParams, Patch, PatchParams, Preconditions},
};
use sluice_api::health::{
    ANNOTATION, HealthReport, LEASE_DURATION_SECONDS, LEASE_LABEL, LEASE_LABEL_VALUE, RENEW_INTERVAL_SECONDS,
    lease_name,
};
use tokio::sync::{Mutex, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Identity;
use crate::{
    health::{Book, DrainState},
    metrics::Metrics,
};

/// The field manager of the collector's writes.
const MANAGER: &str = "sluice-collector";
/// The longest a single Lease request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a graceful stop keeps trying to delete the Lease.
const DELETE_DEADLINE: Duration = Duration::from_secs(5);

/// The node's Lease and what it reports.
pub struct NodeLease {
    api: Api<Lease>,
    identity: Identity,
    book: Arc<Mutex<Book>>,
    metrics: Metrics,
    drains: watch::Receiver<BTreeMap<String, DrainState>>,
    failing: bool,
    query_address: Option<String>,
    query_tls: bool,
}

impl NodeLease {
    /// A Lease for `identity`, reporting the drains published on `drains`.
    pub fn new(
        client: kube::Client,
        identity: Identity,
        book: Book,
        metrics: Metrics,
        drains: watch::Receiver<BTreeMap<String, DrainState>>,
    ) -> Self {
        Self {
            api: Api::namespaced(client, &identity.namespace),
            identity,
            book: Arc::new(Mutex::new(book)),
            metrics,
            drains,
            failing: false,
            query_address: None,
            query_tls: false,
        }
    }

    /// Publish `address` (`IP:PORT` of the query API) on the Lease, for the operator.
    pub fn with_query_address(mut self, address: Option<String>) -> Self {
        self.query_address = address;
        self
    }

    /// Say on the Lease that the query API is served over mutual TLS
    /// ([`sluice_api::query_tls::SCHEME_ANNOTATION`]); without, the operator takes it for plain
    /// HTTP.
    pub fn with_query_tls(mut self, tls: bool) -> Self {
        self.query_tls = tls;
        self
    }

    /// Renew every [`RENEW_INTERVAL_SECONDS`] until `cancel` ([`NodeLease::release`] then deletes
    /// the Lease).
    pub async fn run(&mut self, cancel: CancellationToken) {
        let mut beat = tokio::time::interval(Duration::from_secs(RENEW_INTERVAL_SECONDS));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => break,
                _ = beat.tick() => self.renew().await,
            }
        }
    }

    /// Save and send the current figures now.
    pub async fn renew(&mut self) {
        let result = match self.report().await {
            Ok(report) => self.apply(&report).await,
            Err(e) => Err(format!("cannot save the health figures: {e}")),
        };
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                info!(lease = %lease_name(&self.identity.node), "node Lease renewed again");
            }
            Ok(()) => {}
            Err(e) => {
                self.metrics.api_errors.with_label_values(&["lease"]).inc();
                if !self.failing {
                    self.failing = true;
                    warn!(lease = %lease_name(&self.identity.node), error = %e, "cannot renew the node Lease; trying again at the next beat");
                }
            }
        }
    }

    async fn report(&self) -> std::io::Result<HealthReport> {
        let drains = self.drains.borrow().clone();
        let (book, metrics) = (Arc::clone(&self.book), self.metrics.clone());
        // The book writes a file (fsync): off the async workers.
        tokio::task::spawn_blocking(move || book.blocking_lock().report(&metrics, &drains))
            .await
            .map_err(std::io::Error::other)?
    }

    async fn apply(&self, report: &HealthReport) -> Result<(), String> {
        let name = lease_name(&self.identity.node);
        let json = serde_json::to_string(report).map_err(|e| e.to_string())?;
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.identity.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    LEASE_LABEL.to_owned(),
                    LEASE_LABEL_VALUE.to_owned(),
                )])),
                annotations: Some(
                    std::iter::once((ANNOTATION.to_owned(), json))
                        .chain(
                            self.query_address
                                .iter()
                                .map(|a| (sluice_api::query::ADDRESS_ANNOTATION.to_owned(), a.clone())),
                        )
                        .chain((self.query_address.is_some() && self.query_tls).then(|| {
                            (
                                sluice_api::query_tls::SCHEME_ANNOTATION.to_owned(),
                                sluice_api::query_tls::HTTPS.to_owned(),
                            )
                        }))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.pod.clone()),
                lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        let params = PatchParams::apply(MANAGER).force();
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.api.patch(&name, &params, &Patch::Apply(&lease)),
        )
        .await
        .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// Save the figures a last time, then delete the Lease if this pod still holds it.
    pub async fn release(self) {
        if let Err(e) = self.report().await {
            warn!(error = %e, "cannot save the health figures at stop");
        }
        let name = lease_name(&self.identity.node);
        let deadline = tokio::time::Instant::now() + DELETE_DEADLINE;
        loop {
            match tokio::time::timeout(REQUEST_TIMEOUT, self.delete_if_held(&name)).await {
                Ok(Ok(())) => {
                    info!(lease = %name, "node Lease deleted");
                    return;
                }
                Ok(Err(e)) => warn!(lease = %name, error = %e, "cannot delete the node Lease"),
                Err(_) => warn!(lease = %name, "deleting the node Lease took too long"),
            }
            if tokio::time::Instant::now() >= deadline {
                warn!(lease = %name, "giving up on deleting the node Lease; it expires by itself");
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn delete_if_held(&self, name: &str) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(name).await? else {
            return Ok(());
        };
        let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.identity.pod.as_str()) {
            info!(lease = %name, holder, "the node Lease has another holder now; leaving it");
            return Ok(());
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: lease.metadata.resource_version.clone(),
                uid: lease.metadata.uid.clone(),
            }),
            ..DeleteParams::default()
        };
        match self.api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}
