//! The leader's loop: watch LogDrains, LogBindings and Pods (all namespaces) into the [`World`],
//! read the Secrets drains name (by name only), and after each batch of changes re-render exactly
//! what the batch made dirty.
//!
//! The collector Leases of the operator's namespace are watched too ([`collectors`]): they say
//! which nodes are covered and carry the delivery figures summed into `LogDrain` status.
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

use std::collections::{BTreeSet, HashMap, HashSet};

use futures::{FutureExt, StreamExt, stream::BoxStream};
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use sluice_api::crd::{LogBinding, LogDrain};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    Context, Error, Result,
    reconcile::cluster::Cluster,
    world::{Dirty, PodInfo, SlimPod, Tracked, World, key_of},
};
use work::{Inflight, NodeQueue, Retry, StatusKey};

/// One event from one of the watches, with the namespace the watch is scoped to (`None`: all).
struct WatchEvent {
    scope: Option<String>,
    event: ResourceEvent,
}

/// A watcher event of one of the watched resources.
enum ResourceEvent {
    Drain(Box<watcher::Event<LogDrain>>),
    Binding(Box<watcher::Event<LogBinding>>),
    Pod(Box<watcher::Event<SlimPod>>),
    Lease(Box<watcher::Event<k8s_openapi::api::coordination::v1::Lease>>),
}

/// The resources the leader watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Watched {
    Drains,
    Bindings,
    Pods,
    CollectorLeases,
}

impl Watched {
    /// The API resource (plural), for errors.
    fn resource(self) -> &'static str {
        match self {
            Watched::Drains => "logdrains",
            Watched::Bindings => "logbindings",
            Watched::Pods => "pods",
            Watched::CollectorLeases => "leases",
        }
    }
}

/// One watch: a resource in a scope (`None`: all namespaces).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Watch {
    resource: Watched,
    scope: Option<String>,
}

fn api<K>(client: &kube::Client, scope: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn watch<K, F>(api: Api<K>, watch: Watch, wrap: F) -> BoxStream<'static, Result<WatchEvent>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(watcher::Event<K>) -> ResourceEvent + Send + 'static,
{
    let events = watcher(api, watcher::Config::default().any_semantic()).default_backoff();
    let Watch { resource, scope } = watch;
    events
        .map(move |event| {
            event
                .map(|event| WatchEvent {
                    scope: scope.clone(),
                    event: wrap(event),
                })
                .map_err(|source| Error::Watch {
                    resource: resource.resource(),
                    source,
                })
        })
        .boxed()
}

/// The objects a watch's running (re)list has shown so far, per watch scope; applied at once on
/// `InitDone`, so objects missing from the list are removed.
struct Listing<T> {
    running: HashMap<Option<String>, Vec<T>>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Self {
            running: HashMap::new(),
        }
    }
}

impl<T> Listing<T> {
    /// A (re)list of `scope` starts.
    fn begin(&mut self, scope: Option<String>) {
        self.running.insert(scope, Vec::new());
    }
    /// The (re)list of `scope` shows `object`.
    fn add(&mut self, scope: Option<String>, object: T) {
        self.running.entry(scope).or_default().push(object);
    }
    /// The (re)list of `scope` is complete: everything it showed.
    fn finish(&mut self, scope: &Option<String>) -> Vec<T> {
        self.running.remove(scope).unwrap_or_default()
    }
}

/// The watches' (re)lists in progress, and which watches have listed at least once.
#[derive(Default)]
struct Relist {
    drains: Listing<LogDrain>,
    bindings: Listing<LogBinding>,
    pods: Listing<PodInfo>,
    /// Nodes whose collector Lease the running (re)list has shown.
    leases: Option<BTreeSet<String>>,
    /// The watches that have listed at least once.
    synced: HashSet<Watch>,
    /// How many watches there are.
    watches: usize,
}

impl Relist {
    /// Whether every watch has listed once, so the picture is whole.
    fn complete(&self) -> bool {
        self.synced.len() == self.watches
    }
}

/// A custom resource that the leader watches and relists the same way for each kind.
trait Relisted: Tracked {
    /// Its watch.
    const WATCHED: Watched;
    /// Its (re)lists in progress.
    fn listing(relist: &mut Relist) -> &mut Listing<Self>;
}

impl Relisted for LogDrain {
    const WATCHED: Watched = Watched::Drains;
    fn listing(relist: &mut Relist) -> &mut Listing<Self> {
        &mut relist.drains
    }
}

impl Relisted for LogBinding {
    const WATCHED: Watched = Watched::Bindings;
    fn listing(relist: &mut Relist) -> &mut Listing<Self> {
        &mut relist.bindings
    }
}

/// How far the first pass (every node, drain and binding) has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FirstPass {
    /// Not started: the watches have not all listed yet.
    Pending,
    /// Everything was marked dirty; node configs are being written.
    Started,
    /// Every node config was written (or found up to date): the replica is ready.
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

/// The watches of LogDrains, LogBindings and Pods in every scope, the events of each in order.
fn watches(client: &kube::Client, namespaces: &[String]) -> Vec<BoxStream<'static, Result<WatchEvent>>> {
    let scopes: Vec<Option<String>> = match namespaces {
        [] => vec![None],
        namespaces => namespaces.iter().cloned().map(Some).collect(),
    };
    let mut watches = Vec::new();
    for scope in scopes {
        let watch_of = |resource| Watch {
            resource,
            scope: scope.clone(),
        };
        watches.push(watch(
            api::<LogDrain>(client, &scope),
            watch_of(Watched::Drains),
            |event| ResourceEvent::Drain(Box::new(event)),
        ));
        watches.push(watch(
            api::<LogBinding>(client, &scope),
            watch_of(Watched::Bindings),
            |event| ResourceEvent::Binding(Box::new(event)),
        ));
        watches.push(watch(
            api::<SlimPod>(client, &scope),
            watch_of(Watched::Pods),
            |event| ResourceEvent::Pod(Box::new(event)),
        ));
    }
    watches
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
            relist: Relist {
                watches,
                ..Relist::default()
            },
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

impl Leader {
    fn apply(&mut self, event: Result<WatchEvent>) {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "watch failed; retrying with backoff");
                self.ctx
                    .metrics
                    .errors
                    .with_label_values(&["watch", e.kind()])
                    .inc();
                return;
            }
        };
        let WatchEvent { scope, event } = event;
        let dirty = match event {
            ResourceEvent::Drain(event) => self.apply_tracked(scope, *event),
            ResourceEvent::Binding(event) => self.apply_tracked(scope, *event),
            ResourceEvent::Pod(event) => self.apply_pod(scope, *event),
            ResourceEvent::Lease(event) => self.apply_lease(*event),
        };
        self.dirty.merge(dirty);
        self.count_namespaces.append(&mut self.dirty.namespaces);
    }

    /// A watch event of drains or bindings: applied at once, or, during a (re)list, collected and
    /// applied when the list is complete (then what it did not show is removed).
    fn apply_tracked<K: Relisted>(&mut self, scope: Option<String>, event: watcher::Event<K>) -> Dirty {
        match event {
            watcher::Event::Apply(object) => K::set(&mut self.world, key_of(object.meta()), Some(object)),
            watcher::Event::Delete(object) => K::set(&mut self.world, key_of(object.meta()), None),
            watcher::Event::Init => {
                K::listing(&mut self.relist).begin(scope);
                Dirty::default()
            }
            watcher::Event::InitApply(object) => {
                K::listing(&mut self.relist).add(scope, object);
                Dirty::default()
            }
            watcher::Event::InitDone => {
                let listed = K::listing(&mut self.relist).finish(&scope);
                let dirty = self.world.replace_all(scope.as_deref(), listed);
                self.relist.synced.insert(Watch {
                    resource: K::WATCHED,
                    scope,
                });
                dirty
            }
        }
    }

    fn apply_pod(&mut self, scope: Option<String>, event: watcher::Event<SlimPod>) -> Dirty {
        match event {
            watcher::Event::Apply(pod) => {
                let key = key_of(&pod.metadata);
                self.world.upsert_pod(PodInfo::from_pod(pod), key)
            }
            watcher::Event::Delete(pod) => self.world.delete_pod(&key_of(&pod.metadata)),
            watcher::Event::Init => {
                self.relist.pods.begin(scope);
                Dirty::default()
            }
            watcher::Event::InitApply(pod) => {
                if let Some(pod) = PodInfo::from_pod(pod) {
                    self.relist.pods.add(scope, pod);
                }
                Dirty::default()
            }
            watcher::Event::InitDone => {
                let listed = self.relist.pods.finish(&scope);
                let dirty = self.world.replace_pods(scope.as_deref(), listed);
                self.relist.synced.insert(Watch {
                    resource: Watched::Pods,
                    scope,
                });
                dirty
            }
        }
    }
}

mod collectors;
mod pass;
mod work;

#[cfg(test)]
mod tests;
