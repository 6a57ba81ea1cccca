//! The leader's loop: watch LogDrains, LogBindings and Pods (all namespaces) into the [`World`],
//! read the Secrets drains name (by name only), and after each batch of changes re-render exactly
//! what the batch made dirty.
//!
//! The collector Leases of the operator's namespace are watched too ([`collectors`]): they say
//! which nodes are covered and carry the delivery figures summed into `LogDrain` status.
//!
//! Rooms: `watch` turns watch events into the world, `secrets` reads the Secrets drains name,
//! `pass` renders and starts writes, `work` keeps the queue, the writes in flight and the
//! retries. Everything the leader reads and writes besides its watches goes through a
//! [`Cluster`] (the API server in production, a recording fake in `tests`), so a pass is
//! unit-tested with events in and writes out.
//!
//! Invariants:
//! * nothing is written before all the watches have listed once (a partial picture would
//!   delete configs of nodes whose pods were not listed yet);
//! * the first pass considers every node that has pods or a config Secret, every drain and every
//!   binding; later passes only what changed ([`Dirty`]);
//! * Secrets are read with `get` by name in the drain's namespace, never listed or watched;
//! * a failed write is retried after a jittered, growing delay, without blocking other work;
//! * the node configs are read when the loop starts, once more a lease duration later and then on
//!   every resync, so a late write of a deposed leader (or a hand edit) is found and rewritten.

use std::collections::{BTreeSet, HashMap};

use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    Context, Result,
    reconcile::cluster::Cluster,
    world::{Dirty, World},
};
use watch::{Relist, watches};
use work::{Inflight, NodeQueue, Retry, StatusKey};

/// How far the first pass (every node, drain and binding) has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FirstPass {
    /// Not started: the watches have not all listed yet.
    Pending,
    /// Everything was marked dirty; node configs are being written.
    Started,
    /// Every node was rendered and its write, if any, finished (a failed one waits for its
    /// retry): the replica is ready.
    Done,
}

/// The leader's state.
struct Leader {
    ctx: Context,
    /// What it reads and writes besides its watches.
    cluster: Cluster,
    world: World,
    /// node → hash of the config its Secret holds (as of the last completed write).
    hashes: HashMap<String, String>,
    relist: Relist,
    /// Statuses to recompute (and nodes, until [`Leader::pass`] moves them into `queue`).
    dirty: Dirty,
    /// Nodes to render, oldest change first.
    queue: NodeQueue,
    /// Writes in flight.
    inflight: Inflight,
    /// Keys waiting for another attempt.
    retry: Retry,
    /// How far the first pass has come.
    first_pass: FirstPass,
    /// Namespaces whose pods changed since the last count refresh.
    count_namespaces: BTreeSet<String>,
    /// When each status was last written.
    status_written: HashMap<StatusKey, Instant>,
    /// When collector Leases were last checked for expiry.
    leases_checked: jiff::Timestamp,
}

/// Run the leader's loop until `stop` is cancelled.
pub async fn run(ctx: Context, stop: CancellationToken) -> Result<()> {
    let mut all = watches(&ctx.client, &ctx.settings.watch_namespaces);
    all.push(collectors::watch(&ctx.client, &ctx.settings.namespace));
    let mut events = futures::stream::select_all(all);
    let cluster = Cluster::kube(&ctx);
    let hashes = cluster.node_configs.stored().await?;
    let mut leader = Leader::new(ctx, cluster, hashes, events.len());
    let mut resync = tokio::time::interval(leader.ctx.settings.resync_interval);
    let mut missing = tokio::time::interval(leader.ctx.settings.missing_secret_retry);
    let mut counts = tokio::time::interval(leader.ctx.settings.status_count_interval);
    resync.reset();
    missing.reset();
    // A write of the previous leader can land after this leader's first read of the node configs;
    // by one lease duration it has landed or been given up, so they are read once more then (and
    // on every resync after, which also undoes hand edits).
    let mut recheck = Some(Instant::now() + leader.ctx.settings.lease_duration);
    // The loop only decides; API writes run in `inflight` and report back here, so a slow write
    // never holds up the events behind it.
    loop {
        leader.ctx.health.beat();
        let retry_at = leader.retry.next_at();
        tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            done = leader.inflight.next() => leader.finish(done),
            event = events.next() => {
                let Some(event) = event else { return Ok(()) };
                leader.apply(event);
                // Take every event that is already waiting, so a burst becomes one pass.
                while let Some(Some(event)) = events.next().now_or_never() {
                    leader.apply(event);
                }
            }
            () = sleep_until(retry_at) => leader.retry_due(),
            _ = resync.tick() => leader.resync(false).await,
            _ = counts.tick() => leader.refresh_counts(),
            _ = missing.tick() => leader.resync(true).await,
            () = sleep_until(recheck) => {
                recheck = Some(Instant::now() + leader.ctx.settings.resync_interval);
                leader.recheck_stored().await;
            }
        }
        if leader.relist.complete() {
            leader.pass().await;
        }
    }
}

impl Leader {
    /// A leader that knows nothing yet but `hashes` (node → hash of the config its Secret holds)
    /// and waits for `watches` watches to list once.
    fn new(ctx: Context, cluster: Cluster, hashes: HashMap<String, String>, watches: usize) -> Self {
        Leader {
            ctx,
            cluster,
            world: World::default(),
            hashes,
            relist: Relist::new(watches),
            dirty: Dirty::default(),
            queue: NodeQueue::default(),
            inflight: Inflight::default(),
            retry: Retry::default(),
            first_pass: FirstPass::Pending,
            status_written: HashMap::new(),
            count_namespaces: BTreeSet::new(),
            leases_checked: jiff::Timestamp::now(),
        }
    }

    /// Mark the keys whose retry is due.
    fn retry_due(&mut self) {
        for key in self.retry.take_due(Instant::now()) {
            self.mark(key);
        }
    }

    /// The slower beat: the pod counts in statuses are refreshed here, not per pod event, and
    /// collector Leases that ran out are noticed.
    fn refresh_counts(&mut self) {
        for ns in std::mem::take(&mut self.count_namespaces) {
            let statuses = self.world.statuses_in(&ns);
            self.dirty.merge(statuses);
        }
        self.check_expired();
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Leader {}

mod collectors;
mod pass;
mod secrets;
mod watch;
mod work;

#[cfg(test)]
mod tests;
