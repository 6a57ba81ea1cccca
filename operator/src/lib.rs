//! sluice's operator: turns `LogDrain`s, `LogBinding`s and the pods they select into one config
//! Secret per node (`sluice-node-<node>`, read by that node's collector), and tells users in the
//! objects' status whether their drains and bindings work.
//!
//! Modules depend one way, in the order data flows: [`resolve`] ← [`world`] ← [`render`] ←
//! [`reconcile`] ← [`controller`] (see `docs/architecture-operator.md`).
//!
//! Invariants (see each module for its own):
//! * only the replica holding the leader Lease writes anything ([`run`]);
//! * a pod change re-renders only its node; a node's Secret is written only when its content hash
//!   changes; a restart with nothing changed writes nothing;
//! * a binding reaches only pods and drains of its own namespace; Secrets are read by name, never
//!   listed or watched, and their values never reach logs, Events, statuses or metrics.

pub mod cleanup;
pub mod context;
pub mod controller;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod lease;
pub mod logs;
pub mod logs_api;
pub mod metrics;
pub mod reconcile;
pub mod render;
pub mod resolve;
pub mod server;
pub mod telemetry;
pub mod world;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use context::{Context, Settings};
pub use error::{Error, Result};

/// Run one operator replica until `shutdown` is cancelled: serve metrics and health (if
/// configured), wait for the leader Lease, lead until the Lease is lost or shutdown, and on
/// shutdown stop writing and release the Lease so a standby takes over at once.
pub async fn run(ctx: Context, shutdown: CancellationToken) -> Result<()> {
    let server = match ctx.settings.listen {
        Some(addr) => Some(server::serve(ctx.clone(), addr, shutdown.clone()).await?.1),
        None => None,
    };
    let s = &ctx.settings;
    let mut elector = lease::LeaderElector::new(
        ctx.client.clone(),
        &s.namespace,
        &s.lease_name,
        &s.identity,
        s.lease_duration,
    );
    while !shutdown.is_cancelled() {
        ctx.health.set_leader(false);
        ctx.metrics.leader.set(0);
        ctx.health.set_ready(true);
        if !wait_for_lease(&ctx, &mut elector, &shutdown).await {
            break;
        }
        tracing::info!(identity = %s.identity, lease = %s.lease_name, "became leader");
        // Not ready until the first pass is done; cleared before leadership shows.
        ctx.health.set_ready(false);
        ctx.health.set_leader(true);
        ctx.metrics.leader.set(1);
        lead(&ctx, &mut elector, &shutdown).await;
    }
    ctx.health.set_leader(false);
    ctx.metrics.leader.set(0);
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(())
}

/// Standby: try the Lease every renew interval. `false` when shut down first. On success the
/// write fence is open until the renew deadline after the winning attempt started.
async fn wait_for_lease(
    ctx: &Context,
    elector: &mut lease::LeaderElector,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        ctx.health.beat();
        let started = Instant::now();
        let attempt = tokio::time::timeout(elector.renew_deadline(), elector.try_acquire_or_renew());
        match attempt.await {
            Ok(Ok(true)) => {
                ctx.fence.extend(started + elector.renew_deadline());
                return true;
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not read the leader Lease"),
            Err(_) => tracing::warn!("reading the leader Lease took too long"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            () = tokio::time::sleep(ctx.settings.renew_interval) => {}
        }
    }
}

/// Leader: run the controller while renewing; stop it when the Lease is lost or may have
/// expired (a renewal did not succeed before the fence's deadline), or on shutdown. Writes stop
/// the moment the fence closes, whatever the controller is doing.
async fn lead(ctx: &Context, elector: &mut lease::LeaderElector, shutdown: &CancellationToken) {
    let stop = shutdown.child_token();
    let mut task = tokio::spawn(controller::run(ctx.clone(), stop.clone()));
    let mut finished = false;
    while let Some(until) = ctx.fence.until() {
        tokio::select! {
            () = shutdown.cancelled() => break,
            result = &mut task => {
                finished = true;
                match result {
                    Ok(Err(e)) => tracing::error!(error = %e, "controller stopped; giving up leadership"),
                    Err(e) => tracing::error!(error = %e, "controller panicked; giving up leadership"),
                    Ok(Ok(())) => {}
                }
                break;
            }
            () = tokio::time::sleep(ctx.settings.renew_interval) => {}
            () = tokio::time::sleep_until(until) => {
                tracing::error!("could not renew the leader Lease in time; stepping down");
                break;
            }
        }
        // A renewal must succeed while the fence is still open: one that takes longer is abandoned.
        let started = Instant::now();
        match tokio::time::timeout_at(until, elector.try_acquire_or_renew()).await {
            Ok(Ok(true)) => ctx.fence.extend(started + elector.renew_deadline()),
            Ok(Ok(false)) => {
                tracing::warn!("another replica holds the leader Lease; stepping down");
                break;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not renew the leader Lease; retrying"),
            Err(_) => {
                tracing::error!("renewing the leader Lease did not finish in time; stepping down");
                break;
            }
        }
    }
    ctx.fence.close();
    stop.cancel();
    if !finished {
        let _ = task.await;
    }
    if let Err(e) = elector.release().await {
        tracing::warn!(error = %e, "could not release the leader Lease");
    }
    // Pause before competing again, so a replica that just failed does not flap.
    if !shutdown.is_cancelled() {
        tokio::time::sleep(ctx.settings.renew_interval).await;
    }
}
