//! The leader's watches, and how their events reach the [`World`](crate::world::World): one
//! watch per resource and scope, each applied event by event, and each (re)list applied as a
//! whole when it completes, so what it did not show is removed.
//!
//! Invariant: a watch counts as synced only after its first list completed; the leader writes
//! nothing before every watch is synced ([`Relist::complete`]).

use std::collections::{BTreeSet, HashMap, HashSet};

use futures::{StreamExt, stream::BoxStream};
use kube::{
    Api,
    runtime::{WatchStreamExt, watcher},
};
use sluice_api::crd::{LogBinding, LogDrain};

use super::Leader;
use crate::{
    Error, Result,
    world::{Dirty, PodInfo, SlimPod, Tracked, key_of},
};

/// One event from one of the watches, with the namespace the watch is scoped to (`None`: all).
pub(super) struct WatchEvent {
    pub(super) scope: Option<String>,
    pub(super) event: ResourceEvent,
}

/// A watcher event of one of the watched resources.
pub(super) enum ResourceEvent {
    Drain(Box<watcher::Event<LogDrain>>),
    Binding(Box<watcher::Event<LogBinding>>),
    Pod(Box<watcher::Event<SlimPod>>),
    Lease(Box<watcher::Event<k8s_openapi::api::coordination::v1::Lease>>),
}

/// The resources the leader watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Watched {
    Drains,
    Bindings,
    Pods,
    CollectorLeases,
}

impl Watched {
    /// The API resource (plural), for errors.
    pub(super) fn resource(self) -> &'static str {
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
pub(super) struct Watch {
    pub(super) resource: Watched,
    pub(super) scope: Option<String>,
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
pub(super) struct Relist {
    drains: Listing<LogDrain>,
    bindings: Listing<LogBinding>,
    pods: Listing<PodInfo>,
    /// Nodes whose collector Lease the running (re)list has shown.
    pub(super) leases: Option<BTreeSet<String>>,
    /// The watches that have listed at least once.
    pub(super) synced: HashSet<Watch>,
    /// How many watches there are.
    pub(super) watches: usize,
}

impl Relist {
    /// No list seen yet of `watches` watches.
    pub(super) fn new(watches: usize) -> Self {
        Self {
            watches,
            ..Self::default()
        }
    }

    /// Whether every watch has listed once, so the picture is whole.
    pub(super) fn complete(&self) -> bool {
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

/// The watches of LogDrains, LogBindings and Pods in every scope, the events of each in order.
pub(super) fn watches(
    client: &kube::Client,
    namespaces: &[String],
) -> Vec<BoxStream<'static, Result<WatchEvent>>> {
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

impl Leader {
    /// Apply one watch event (or report a failed watch, which retries with backoff).
    pub(super) fn apply(&mut self, event: Result<WatchEvent>) {
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
