//! Pure rendering: from the [`World`] to a node's [`NodeConfig`], and from a `LogDrain` plus its
//! Secrets to the drain settings a collector needs. No I/O here, so all of it is table-tested.
//!
//! Invariants:
//! * a node's config lists only drains that one of its containers uses, each with only the
//!   credential material that drain names;
//! * a binding reaches only pods and drains of its own namespace (lookups are by
//!   `(binding namespace, name)`, never by a name from the spec alone);
//! * a drain that does not resolve (missing Secret, bad certificate, invalid settings) is left out
//!   of every node config; its status and the bindings' statuses say why;
//! * the output is deterministic (sorted), so equal inputs give byte-identical YAML and hashes.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use sluice_api::{
    crd::LogBinding,
    node_config::{self, ContainerConfig, DrainConfig, NodeConfig, Stream},
};

use crate::world::{ObjKey, World, in_namespace};

pub mod cert;
pub mod drain;

pub use drain::{Problem, resolve_drain, secret_names};

/// The name a tenant drain gets in node configs: `<namespace>-<name>`, or, when that is longer
/// than a DNS label allows, a shortened form with a hash suffix. Stable: the collector keys its
/// cursors by it, so it must not depend on anything but the drain's own identity.
pub fn node_drain_name(namespace: &str, name: &str) -> String {
    let plain = format!("{namespace}-{name}");
    if plain.len() <= 63 {
        return plain;
    }
    hashed_name(&plain, namespace, name)
}

fn hashed_name(plain: &str, namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let suffix: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}-{suffix}", plain[..54].trim_end_matches('-'))
}

/// The hex SHA-256 of a rendered config: written into the Secret's annotation and compared before
/// every write.
pub fn content_hash(yaml: &str) -> String {
    Sha256::digest(yaml.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The streams a binding ships (both when it names none).
fn streams_of(binding: &LogBinding) -> Vec<Stream> {
    let mut streams: Vec<Stream> = binding
        .spec
        .streams
        .iter()
        .map(|s| match s {
            sluice_api::crd::BindingStream::Stdout => Stream::Stdout,
            sluice_api::crd::BindingStream::Stderr => Stream::Stderr,
        })
        .collect();
    if streams.is_empty() {
        streams = Stream::all();
    }
    streams.sort();
    streams.dedup();
    streams
}

/// The entries of a pod's containers that `binding` ships (its container filter applied), with
/// their drains still to be filled in.
fn bound_containers<'a>(
    pod: &'a crate::world::PodInfo,
    binding: &'a LogBinding,
) -> impl Iterator<Item = ContainerConfig> + 'a {
    let wanted = &binding.spec.containers;
    pod.containers
        .iter()
        .filter(move |(container, _)| wanted.is_empty() || wanted.contains(container))
        .map(move |(container, id)| ContainerConfig {
            id: id.clone(),
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            container: container.clone(),
            labels: pod.labels.clone(),
            streams: streams_of(binding),
            drains: Vec::new(),
        })
}

/// Render one node's config; `None` when nothing on the node is bound to a usable drain.
pub fn render_node(world: &World, node: &str) -> Option<NodeConfig> {
    // (namespace, drain name) → resolved settings, for the drains this node needs.
    let mut drains: BTreeMap<ObjKey, DrainConfig> = BTreeMap::new();
    let mut containers = Vec::new();
    // Each pod on the node, against each binding of its namespace that selects it.
    for pod in world.pods_on(node) {
        for (_, binding) in in_namespace(&world.bindings, &pod.namespace) {
            if !binding.spec.selector.matches(&pod.labels) {
                continue;
            }
            let mut names = BTreeSet::new();
            for drain_name in &binding.spec.drains {
                let key = (pod.namespace.clone(), drain_name.clone());
                if !drains.contains_key(&key) {
                    let Some(Ok(config)) = world.resolved(&key) else {
                        continue;
                    };
                    drains.insert(key.clone(), config.clone());
                }
                names.insert(key);
            }
            if names.is_empty() {
                continue;
            }
            containers.extend(bound_containers(pod, binding).map(|c| (names.clone(), c)));
        }
    }
    if containers.is_empty() {
        return None;
    }
    let names = unique_names(drains.keys());
    let mut rendered: Vec<ContainerConfig> = containers
        .into_iter()
        .map(|(keys, mut c)| {
            c.drains = keys.iter().map(|k| names[k].clone()).collect();
            c.drains.sort();
            c
        })
        .collect();
    merge_duplicates(&mut rendered);
    let mut drains: Vec<DrainConfig> = drains
        .into_iter()
        .map(|(k, mut d)| {
            d.name = names[&k].clone();
            // The collector reports health under the node-config name; the owner lets the
            // operator sum it per LogDrain.
            d.owner = Some(node_config::DrainOwner {
                namespace: k.0.clone(),
                name: k.1.clone(),
            });
            d
        })
        .collect();
    drains.sort_by(|a, b| a.name.cmp(&b.name));
    Some(NodeConfig {
        version: node_config::CURRENT_VERSION,
        node: Some(node.to_owned()),
        drains,
        containers: rendered,
        ..NodeConfig::default()
    })
}

/// Node-config names for drain keys; `<ns>-<name>` is ambiguous (`a-b`/`c` vs `a`/`b-c`), so
/// keys that would collide fall back to the hashed form.
fn unique_names<'a>(keys: impl Iterator<Item = &'a ObjKey>) -> BTreeMap<ObjKey, String> {
    let mut names: BTreeMap<ObjKey, String> =
        keys.map(|k| (k.clone(), node_drain_name(&k.0, &k.1))).collect();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for n in names.values() {
        *count.entry(n.clone()).or_default() += 1;
    }
    for ((ns, name), n) in names.iter_mut() {
        if count[n.as_str()] > 1 {
            *n = hashed_name(&format!("{ns}-{name}-{}", "x".repeat(63)), ns, name);
        }
    }
    names
}

/// Sort container entries and merge those that differ only in drains (two bindings selecting the
/// same container with the same streams), so each container appears once per stream set.
fn merge_duplicates(containers: &mut Vec<ContainerConfig>) {
    containers.sort_by(|a, b| {
        (&a.namespace, &a.pod, &a.container, &a.id, &a.streams).cmp(&(
            &b.namespace,
            &b.pod,
            &b.container,
            &b.id,
            &b.streams,
        ))
    });
    let mut merged: Vec<ContainerConfig> = Vec::with_capacity(containers.len());
    for c in containers.drain(..) {
        match merged.last_mut() {
            Some(last) if last.id == c.id && last.container == c.container && last.streams == c.streams => {
                last.drains.extend(c.drains);
                last.drains.sort();
                last.drains.dedup();
            }
            _ => merged.push(c),
        }
    }
    *containers = merged;
}

#[cfg(test)]
mod tests;
