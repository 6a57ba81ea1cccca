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

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
};

use futures::{FutureExt, StreamExt, stream::BoxStream};
use kube::{
    Api,
    runtime::{WatchStreamExt, events::Recorder, watcher},
};
use sluice_api::crd::{LogBinding, LogDrain};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    Context, Error, Result,
    reconcile::{node_config::NodeWriter, status},
    world::{Dirty, ObjKey, PodInfo, SlimPod, World, key_of},
};
use work::{Inflight, NodeQueue, Retry};

/// One event from one of the watches, with the namespace the watch is scoped to (`None`: all).
struct Change {
    scope: Option<String>,
    event: KindEvent,
}

enum KindEvent {
    Drain(Box<watcher::Event<LogDrain>>),
    Binding(Box<watcher::Event<LogBinding>>),
    Pod(Box<watcher::Event<SlimPod>>),
    Lease(Box<watcher::Event<k8s_openapi::api::coordination::v1::Lease>>),
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

fn watch<K, F>(
    api: Api<K>,
    scope: Option<String>,
    wrap: F,
    resource: &'static str,
) -> BoxStream<'static, Result<Change>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    F: Fn(watcher::Event<K>) -> KindEvent + Send + 'static,
{
    let stream = watcher(api, watcher::Config::default().any_semantic()).default_backoff();
    stream
        .map(move |e| {
            e.map(|e| Change {
                scope: scope.clone(),
                event: wrap(e),
            })
            .map_err(|source| Error::Watch { resource, source })
        })
        .boxed()
}

/// Objects listed during a watch's (re)list, applied at once on `InitDone`; per watch scope.
#[derive(Default)]
struct Relist {
    drains: HashMap<Option<String>, Vec<LogDrain>>,
    bindings: HashMap<Option<String>, Vec<LogBinding>>,
    pods: HashMap<Option<String>, Vec<PodInfo>>,
    /// Nodes whose collector Lease the running (re)list has shown.
    leases: Option<BTreeSet<String>>,
    /// `(kind, scope)` of the watches that have listed at least once.
    synced: HashSet<(u8, Option<String>)>,
    /// How many watches there are.
    watches: usize,
}

/// Whether `key` lies in a watch scope.
fn in_scope(scope: &Option<String>, key: &ObjKey) -> bool {
    scope.as_ref().is_none_or(|ns| *ns == key.0)
}

/// The leader's state.
struct Leader {
    ctx: Context,
    world: World,
    writer: Arc<NodeWriter>,
    /// node → hash of the config its Secret holds (as of the last completed write).
    hashes: HashMap<String, String>,
    recorder: Recorder,
    relist: Relist,
    /// Statuses to recompute (and nodes, until [`Leader::pass`] moves them into `queue`).
    dirty: Dirty,
    /// Nodes to render, oldest change first.
    queue: NodeQueue,
    /// Writes in flight.
    inflight: Inflight,
    /// Keys waiting for another attempt.
    retry: Retry,
    /// Whether the first pass (every node, drain and binding) was started, and finished.
    first_pass: (bool, bool),
    /// Namespaces whose pods changed since the last count refresh.
    count_namespaces: BTreeSet<String>,
    /// When each drain (`true`) or binding (`false`) status was last written.
    status_written: HashMap<(bool, ObjKey), Instant>,
    /// When collector Leases were last checked for expiry.
    leases_checked: jiff::Timestamp,
}

/// The watches of LogDrains, LogBindings and Pods in every scope, one stream per watch.
fn watches(client: &kube::Client, namespaces: &[String]) -> Vec<BoxStream<'static, Result<Change>>> {
    let scopes: Vec<Option<String>> = match namespaces {
        [] => vec![None],
        namespaces => namespaces.iter().cloned().map(Some).collect(),
    };
    let mut streams = Vec::new();
    for scope in &scopes {
        let drains = |e| KindEvent::Drain(Box::new(e));
        let bindings = |e| KindEvent::Binding(Box::new(e));
        streams.push(watch(
            api::<LogDrain>(client, scope),
            scope.clone(),
            drains,
            "logdrains",
        ));
        streams.push(watch(
            api::<LogBinding>(client, scope),
            scope.clone(),
            bindings,
            "logbindings",
        ));
        streams.push(watch(
            api::<SlimPod>(client, scope),
            scope.clone(),
            |e| KindEvent::Pod(Box::new(e)),
            "pods",
        ));
    }
    streams
}

/// Run the leader's loop until `stop` is cancelled.
pub async fn run(ctx: Context, stop: CancellationToken) -> Result<()> {
    let mut streams = watches(&ctx.client, &ctx.settings.watch_namespaces);
    streams.push(collectors::watch(&ctx.client, &ctx.settings.namespace));
    let watches = streams.len();
    let mut events = futures::stream::select_all(streams);
    let (writer, hashes) = NodeWriter::load(ctx.clone()).await?;
    let mut leader = Leader {
        recorder: status::recorder(&ctx),
        ctx,
        world: World::default(),
        writer: Arc::new(writer),
        hashes,
        relist: Relist {
            watches,
            ..Relist::default()
        },
        dirty: Dirty::default(),
        queue: NodeQueue::default(),
        inflight: Inflight::default(),
        retry: Retry::default(),
        first_pass: (false, false),
        status_written: HashMap::new(),
        count_namespaces: BTreeSet::new(),
        leases_checked: jiff::Timestamp::now(),
    };
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
            () = sleep_until(retry_at) => {
                for key in leader.retry.take_due(Instant::now()) {
                    leader.mark(key);
                }
            }
            _ = resync.tick() => leader.resync(false).await,
            _ = counts.tick() => {
                // Pod counts in statuses are refreshed on this slower beat, not per pod event.
                for ns in std::mem::take(&mut leader.count_namespaces) {
                    let statuses = leader.world.statuses_in(&ns);
                    leader.dirty.merge(statuses);
                }
                leader.check_expired();
            }
            _ = missing.tick() => leader.resync(true).await,
            () = sleep_until(recheck) => {
                recheck = Some(Instant::now() + leader.ctx.settings.resync_interval);
                leader.recheck_stored().await;
            }
        }
        if leader.relist.synced.len() == leader.relist.watches {
            leader.pass().await;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Leader {
    fn apply(&mut self, event: Result<Change>) {
        let change = match event {
            Ok(change) => change,
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
        let Change { scope, event } = change;
        let dirty = match event {
            KindEvent::Drain(e) => self.apply_drain(scope, *e),
            KindEvent::Binding(e) => self.apply_binding(scope, *e),
            KindEvent::Pod(e) => self.apply_pod(scope, *e),
            KindEvent::Lease(e) => self.apply_lease(*e),
        };
        self.dirty.merge(dirty);
        self.count_namespaces.append(&mut self.dirty.namespaces);
    }

    fn apply_drain(&mut self, scope: Option<String>, event: watcher::Event<LogDrain>) -> Dirty {
        match event {
            watcher::Event::Apply(d) => self.world.set_drain(key_of(&d.metadata), Some(d)),
            watcher::Event::Delete(d) => self.world.set_drain(key_of(&d.metadata), None),
            watcher::Event::Init => {
                self.relist.drains.insert(scope, Vec::new());
                Dirty::default()
            }
            watcher::Event::InitApply(d) => {
                self.relist.drains.entry(scope).or_default().push(d);
                Dirty::default()
            }
            watcher::Event::InitDone => {
                let listed = self.relist.drains.remove(&scope).unwrap_or_default();
                let keys: BTreeSet<ObjKey> = listed.iter().map(|d| key_of(&d.metadata)).collect();
                let gone: Vec<ObjKey> = self
                    .world
                    .drains
                    .keys()
                    .filter(|k| in_scope(&scope, k) && !keys.contains(*k))
                    .cloned()
                    .collect();
                let mut dirty = Dirty::default();
                for d in listed {
                    dirty.merge(self.world.set_drain(key_of(&d.metadata), Some(d)));
                }
                for k in gone {
                    dirty.merge(self.world.set_drain(k, None));
                }
                self.relist.synced.insert((0, scope));
                dirty
            }
        }
    }

    fn apply_binding(&mut self, scope: Option<String>, event: watcher::Event<LogBinding>) -> Dirty {
        match event {
            watcher::Event::Apply(b) => self.world.set_binding(key_of(&b.metadata), Some(b)),
            watcher::Event::Delete(b) => self.world.set_binding(key_of(&b.metadata), None),
            watcher::Event::Init => {
                self.relist.bindings.insert(scope, Vec::new());
                Dirty::default()
            }
            watcher::Event::InitApply(b) => {
                self.relist.bindings.entry(scope).or_default().push(b);
                Dirty::default()
            }
            watcher::Event::InitDone => {
                let listed = self.relist.bindings.remove(&scope).unwrap_or_default();
                let keys: BTreeSet<ObjKey> = listed.iter().map(|b| key_of(&b.metadata)).collect();
                let gone: Vec<ObjKey> = self
                    .world
                    .bindings
                    .keys()
                    .filter(|k| in_scope(&scope, k) && !keys.contains(*k))
                    .cloned()
                    .collect();
                let mut dirty = Dirty::default();
                for b in listed {
                    dirty.merge(self.world.set_binding(key_of(&b.metadata), Some(b)));
                }
                for k in gone {
                    dirty.merge(self.world.set_binding(k, None));
                }
                self.relist.synced.insert((1, scope));
                dirty
            }
        }
    }

    fn apply_pod(&mut self, scope: Option<String>, event: watcher::Event<SlimPod>) -> Dirty {
        match event {
            watcher::Event::Apply(p) => {
                let key = key_of(&p.metadata);
                self.world.upsert_pod(PodInfo::from_pod(p), key)
            }
            watcher::Event::Delete(p) => self.world.delete_pod(&key_of(&p.metadata)),
            watcher::Event::Init => {
                self.relist.pods.insert(scope, Vec::new());
                Dirty::default()
            }
            watcher::Event::InitApply(p) => {
                if let Some(pod) = PodInfo::from_pod(p) {
                    self.relist.pods.entry(scope).or_default().push(pod);
                }
                Dirty::default()
            }
            watcher::Event::InitDone => {
                let listed = self.relist.pods.remove(&scope).unwrap_or_default();
                let dirty = self.world.replace_pods(scope.as_deref(), listed);
                self.relist.synced.insert((2, scope));
                dirty
            }
        }
    }
}

mod collectors;
mod pass;
mod work;
