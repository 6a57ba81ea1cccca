//! The operator's in-memory picture of the cluster: drains, bindings, the slim projection of every
//! pod, and the Secrets drains name.
//!
//! Invariants:
//! * every pod in [`World::pods`] appears in exactly one `pods_by_node` set (its node) and one
//!   `pods_by_namespace` set; pods without a node are not kept at all (they have no logs yet);
//! * every mutation returns the [`Dirty`] set of what it may have changed (nodes whose config, and
//!   drains and bindings whose status, must be recomputed), so the caller re-renders only those;
//! * Secret values are held only here and in rendered configs, never logged.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sluice_api::{
    crd::{LogBinding, LogDrain},
    node_config::DrainConfig,
};

use crate::resolve::{self, Problem};
pub use crate::resolve::{ObjKey, SecretData};

pub mod collectors;
pub mod pod;

pub use pod::{ContainerInstance, PodInfo, SlimPod};

/// What a change may have affected.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dirty {
    /// Nodes whose config must be re-rendered.
    pub nodes: BTreeSet<String>,
    /// Drains whose status must be recomputed.
    pub drains: BTreeSet<ObjKey>,
    /// Bindings whose status must be recomputed.
    pub bindings: BTreeSet<ObjKey>,
    /// Namespaces whose pods changed: only the pod counts of their drains and bindings can have
    /// changed, which the caller refreshes on its own (slower) schedule.
    pub namespaces: BTreeSet<String>,
}

impl Dirty {
    /// Add everything another set names.
    pub fn merge(&mut self, other: Dirty) {
        self.nodes.extend(other.nodes);
        self.drains.extend(other.drains);
        self.bindings.extend(other.bindings);
        self.namespaces.extend(other.namespaces);
    }
    /// Whether nothing is dirty (namespaces aside: they only schedule a count refresh).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.drains.is_empty() && self.bindings.is_empty()
    }
}

/// The cluster as far as sluice cares.
#[derive(Debug, Default)]
pub struct World {
    /// LogDrains by key.
    pub drains: BTreeMap<ObjKey, LogDrain>,
    /// LogBindings by key.
    pub bindings: BTreeMap<ObjKey, LogBinding>,
    /// Pods (that have a node) by key.
    pub pods: HashMap<ObjKey, PodInfo>,
    pods_by_node: HashMap<String, BTreeSet<ObjKey>>,
    pods_by_namespace: HashMap<String, BTreeSet<ObjKey>>,
    /// Secrets named by drains, by key.
    pub secrets: HashMap<ObjKey, SecretData>,
    /// What each drain resolves to with its Secrets (the collector's settings, or why not), kept
    /// up to date by [`World::set_drain`] and [`World::set_secret`], so rendering a node never
    /// parses certificates again.
    resolved: HashMap<ObjKey, Resolved>,
    /// Drains left out of node configs that would be too large with them: drain → node → by how
    /// much.
    left_out: HashMap<ObjKey, BTreeMap<String, LeftOut>>,
    /// The collectors' node Leases: coverage and delivery figures.
    pub collectors: collectors::Collectors,
}

/// A drain left out of one node's config for size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeftOut {
    /// The bytes of YAML the drain would add to the node's config.
    pub adds: usize,
    /// The node's limit.
    pub limit: usize,
}

/// A drain resolved with its Secrets: the settings a collector gets, or why it cannot be used.
pub type Resolved = Result<DrainConfig, Problem>;

/// The key of any namespaced object.
pub fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjKey {
    ObjKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// A custom resource the world keeps by key and replaces the same way for each kind after a
/// watch's (re)list: [`LogDrain`] and [`LogBinding`].
pub trait Tracked: kube::Resource + Sized {
    /// Those the world holds.
    fn all(world: &World) -> &BTreeMap<ObjKey, Self>;
    /// Insert, replace (`Some`) or remove (`None`) one, returning what that may have changed.
    fn set(world: &mut World, key: ObjKey, object: Option<Self>) -> Dirty;
}

impl Tracked for LogDrain {
    fn all(world: &World) -> &BTreeMap<ObjKey, Self> {
        &world.drains
    }
    fn set(world: &mut World, key: ObjKey, object: Option<Self>) -> Dirty {
        world.set_drain(key, object)
    }
}

impl Tracked for LogBinding {
    fn all(world: &World) -> &BTreeMap<ObjKey, Self> {
        &world.bindings
    }
    fn set(world: &mut World, key: ObjKey, object: Option<Self>) -> Dirty {
        world.set_binding(key, object)
    }
}

/// The objects of one namespace in a key-ordered map.
pub fn in_namespace<'a, V>(
    map: &'a BTreeMap<ObjKey, V>,
    namespace: &str,
) -> impl Iterator<Item = (&'a ObjKey, &'a V)> {
    map.range(ObjKey::new(namespace, String::new())..)
        .take_while(move |(key, _)| key.namespace == namespace)
}

impl World {
    /// Everything in a namespace: its pods' nodes, its drains and its bindings.
    pub fn namespace_dirty(&self, ns: &str) -> Dirty {
        Dirty {
            nodes: self.pods_in(ns).map(|p| p.node.clone()).collect(),
            ..self.statuses_in(ns)
        }
    }

    /// The drains whose status a change of `node`'s collector Lease may change: those that feed
    /// from its pods (coverage) and `owners` (the drains its report names).
    pub fn collector_dirty(&self, node: &str, owners: BTreeSet<ObjKey>) -> Dirty {
        let mut drains = owners;
        let namespaces: BTreeSet<&str> = self.pods_on(node).map(|p| p.namespace.as_str()).collect();
        for ns in namespaces {
            drains.extend(in_namespace(&self.drains, ns).map(|(k, _)| k.clone()));
        }
        drains.retain(|k| self.drains.contains_key(k));
        Dirty {
            drains,
            ..Dirty::default()
        }
    }

    /// The drains and bindings of a namespace (their statuses, not its nodes).
    pub fn statuses_in(&self, ns: &str) -> Dirty {
        Dirty {
            drains: in_namespace(&self.drains, ns).map(|(k, _)| k.clone()).collect(),
            bindings: in_namespace(&self.bindings, ns).map(|(k, _)| k.clone()).collect(),
            ..Dirty::default()
        }
    }

    /// Replace the objects of kind `K` in a namespace (`None`: in all namespaces) with those a watch
    /// (re)list showed, returning what changed.
    pub fn replace_all<K: Tracked>(&mut self, scope: Option<&str>, listed: Vec<K>) -> Dirty {
        let keys: BTreeSet<ObjKey> = listed.iter().map(|object| key_of(object.meta())).collect();
        let gone: Vec<ObjKey> = K::all(self)
            .keys()
            .filter(|key| scope.is_none_or(|ns| ns == key.namespace) && !keys.contains(*key))
            .cloned()
            .collect();
        let mut dirty = Dirty::default();
        for object in listed {
            let key = key_of(object.meta());
            dirty.merge(K::set(self, key, Some(object)));
        }
        for key in gone {
            dirty.merge(K::set(self, key, None));
        }
        dirty
    }

    /// Insert, replace (`Some`) or remove (`None`) a drain.
    pub fn set_drain(&mut self, key: ObjKey, drain: Option<LogDrain>) -> Dirty {
        // Only a spec change matters: our own status writes come back as events too.
        let changed = self.drains.get(&key).map(|d| &d.spec) != drain.as_ref().map(|d| &d.spec);
        match drain {
            Some(d) => self.drains.insert(key.clone(), d),
            None => self.drains.remove(&key),
        };
        if changed {
            self.resolve(&key);
            self.namespace_dirty(&key.namespace)
        } else {
            Dirty::default()
        }
    }

    /// Insert, replace (`Some`) or remove (`None`) a binding.
    pub fn set_binding(&mut self, key: ObjKey, binding: Option<LogBinding>) -> Dirty {
        let changed = self.bindings.get(&key).map(|b| &b.spec) != binding.as_ref().map(|b| &b.spec);
        match binding {
            Some(b) => self.bindings.insert(key.clone(), b),
            None => self.bindings.remove(&key),
        };
        if changed {
            self.namespace_dirty(&key.namespace)
        } else {
            Dirty::default()
        }
    }

    /// Record a Secret's current data; a change dirties its namespace.
    pub fn set_secret(&mut self, key: ObjKey, data: SecretData) -> Dirty {
        if self.secrets.get(&key) == Some(&data) {
            return Dirty::default();
        }
        self.secrets.insert(key.clone(), data);
        let named: Vec<ObjKey> = in_namespace(&self.drains, &key.namespace)
            .filter(|(_, d)| resolve::secret_names(&d.spec).contains(&key.name))
            .map(|(k, _)| k.clone())
            .collect();
        for drain in named {
            self.resolve(&drain);
        }
        self.namespace_dirty(&key.namespace)
    }

    /// What drain `key` resolves to (`None`: no such drain).
    pub fn resolved(&self, key: &ObjKey) -> Option<&Resolved> {
        self.resolved.get(key)
    }

    /// Why drain `key` is not (everywhere) in use: it does not resolve, or some node's config left
    /// it out for size.
    pub fn problem(&self, key: &ObjKey) -> Option<Problem> {
        if let Some(Err(problem)) = self.resolved(key) {
            return Some(problem.clone());
        }
        let nodes = self.left_out.get(key)?;
        let LeftOut { adds, limit } = nodes.values().max()?;
        let names: Vec<&str> = nodes.keys().map(String::as_str).collect();
        Some(Problem {
            reason: sluice_api::crd::condition::reason::CONFIG_TOO_LARGE,
            message: format!(
                "left out of the config of node(s) {}: with this drain (about {} KiB of settings and \
                 pod labels) the node's config would exceed its {} KiB limit; make its settings \
                 smaller or bind fewer pods on those nodes",
                names.join(", "),
                adds.div_ceil(1024),
                limit / 1024
            ),
        })
    }

    /// Record which drains the config of `node` left out for size (drain → bytes it would add),
    /// under the node's `limit`; returns the drains whose status that changes.
    pub fn set_left_out(&mut self, node: &str, drains: &BTreeMap<ObjKey, usize>, limit: usize) -> Dirty {
        let mut dirty = Dirty::default();
        for (key, nodes) in &mut self.left_out {
            if !drains.contains_key(key) && nodes.remove(node).is_some() {
                dirty.drains.insert(key.clone());
            }
        }
        for (key, adds) in drains {
            let nodes = self.left_out.entry(key.clone()).or_default();
            if nodes
                .insert(node.to_owned(), LeftOut { adds: *adds, limit })
                .is_none()
            {
                dirty.drains.insert(key.clone());
            }
        }
        self.left_out.retain(|_, nodes| !nodes.is_empty());
        // The bindings that name those drains say so too.
        for ns in dirty
            .drains
            .iter()
            .map(|key| key.namespace.clone())
            .collect::<BTreeSet<_>>()
        {
            dirty.merge(self.statuses_in(&ns));
        }
        dirty
    }

    /// How many (drain, node) pairs are left out for size.
    pub fn left_out_count(&self) -> usize {
        self.left_out.values().map(BTreeMap::len).sum()
    }

    /// Resolve every drain again (a certificate may have expired, or become valid, with nothing
    /// else changing) and return the namespaces whose drains now resolve differently.
    pub fn refresh_resolved(&mut self) -> Dirty {
        let keys: Vec<ObjKey> = self.drains.keys().cloned().collect();
        let mut dirty = Dirty::default();
        for key in keys {
            let before = self.resolved.get(&key).cloned();
            self.resolve(&key);
            if self.resolved.get(&key) != before.as_ref() {
                dirty.merge(self.namespace_dirty(&key.namespace));
            }
        }
        dirty
    }

    fn resolve(&mut self, key: &ObjKey) {
        match self.drains.get(key) {
            Some(drain) => {
                let name = resolve::node_drain_name(&key.namespace, &key.name);
                let resolved = resolve::resolve_drain(drain, &self.secrets, name);
                self.resolved.insert(key.clone(), resolved);
            }
            None => {
                self.resolved.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests;
