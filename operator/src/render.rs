//! Pure rendering: from the [`World`] to a node's [`NodeConfig`], and from a `LogDrain` plus its
//! Secrets to the drain settings a collector needs. No I/O here, so all of it is table-tested.
//!
//! Invariants:
//! * a node's config lists only drains that one of its containers uses, each with only the
//!   credential material that drain names;
//! * a binding reaches only pods and drains of its own namespace (lookups are by
//!   `(binding namespace, name)`, never by a name from the spec alone);
//! * a drain that does not resolve (missing Secret, Secret not opted in, bad certificate, invalid
//!   settings, over its budget) is left out of every node config; its status and the bindings'
//!   statuses say why;
//! * a container carries only the pod labels its drains emit, each CA bundle appears once
//!   (`caBundles`), and [`render_within`] keeps a config within its size limit by leaving out the
//!   drains that push it over, largest first;
//! * the output is deterministic (sorted), so equal inputs give byte-identical YAML and hashes.

use std::collections::{BTreeMap, BTreeSet};

use sluice_api::{
    crd::LogBinding,
    node_config::{self, ContainerConfig, DrainConfig, NodeConfig, Stream},
};

pub use crate::resolve::content_hash;
use crate::{
    resolve::{ObjKey, node_drain_names},
    world::{World, in_namespace},
};

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
        .filter(move |instance| wanted.is_empty() || wanted.contains(&instance.name))
        .map(move |instance| ContainerConfig {
            id: instance.id.clone(),
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            pod_uid: pod.uid.clone(),
            container: instance.name.clone(),
            labels: pod.labels.clone(),
            streams: streams_of(binding),
            drains: Vec::new(),
        })
}

/// The most bytes of YAML a node's config may take by default: well below the API server's 1 MiB
/// limit on a Secret's data, with room for growth between renders.
pub const NODE_CONFIG_LIMIT: usize = 768 * 1024;

/// A node's config rendered within a size limit.
#[derive(Debug, Default, PartialEq)]
pub struct Rendered {
    /// The config; `None` when nothing on the node is bound to a usable drain.
    pub config: Option<NodeConfig>,
    /// The drains left out because with them the config would exceed the limit, with the bytes
    /// each would add.
    pub left_out: BTreeMap<ObjKey, usize>,
}

/// Render one node's config, whatever its size; `None` when nothing on the node is bound to a
/// usable drain.
pub fn render_node(world: &World, node: &str) -> Option<NodeConfig> {
    render_within(world, node, usize::MAX).config
}

/// Render one node's config within `limit` bytes of YAML: while it is larger, the drain that adds
/// the most (its settings and the pod labels only it needs) is left out, so one tenant's big drain
/// never takes the node's config, and every other tenant's drains, past the API server's limit.
pub fn render_within(world: &World, node: &str, limit: usize) -> Rendered {
    let mut left_out = BTreeMap::new();
    loop {
        let Some((config, adds)) = render_excluding(world, node, &left_out) else {
            return Rendered {
                config: None,
                left_out,
            };
        };
        // A config that cannot be serialized is reported by the writer; size does not decide it.
        let size = config.to_yaml().map_or(0, |yaml| yaml.len());
        let largest = adds.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)));
        match largest {
            Some((key, bytes)) if size > limit => {
                left_out.insert(key, bytes);
            }
            _ => {
                return Rendered {
                    config: Some(config),
                    left_out,
                };
            }
        }
    }
}

/// Render `node`'s config without the drains in `excluded`, with the bytes each drain in it adds.
fn render_excluding(
    world: &World,
    node: &str,
    excluded: &BTreeMap<ObjKey, usize>,
) -> Option<(NodeConfig, BTreeMap<ObjKey, usize>)> {
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
                let key = ObjKey::new(pod.namespace.clone(), drain_name.clone());
                if excluded.contains_key(&key) {
                    continue;
                }
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
    let mut adds: BTreeMap<ObjKey, usize> = drains
        .iter()
        .map(|(k, d)| (k.clone(), serde_yaml::to_string(d).map_or(0, |y| y.len())))
        .collect();
    let names = node_drain_names(drains.keys());
    let mut rendered: Vec<ContainerConfig> = containers
        .into_iter()
        .map(|(keys, mut c)| {
            let (labels, _) = labels_for(&keys, &drains, &c.labels);
            for key in &keys {
                let (_, bytes) = labels_for(&BTreeSet::from([key.clone()]), &drains, &c.labels);
                *adds.entry(key.clone()).or_default() += bytes;
            }
            c.labels = labels;
            c.drains = keys.iter().map(|k| names[k].clone()).collect();
            c.drains.sort();
            c
        })
        .collect();
    merge_duplicates(&mut rendered);
    same_labels_per_container(&mut rendered);
    let mut drains: Vec<DrainConfig> = drains
        .into_iter()
        .map(|(k, mut d)| {
            d.name = names[&k].clone();
            // The collector reports health under the node-config name; the owner lets the
            // operator sum it per LogDrain.
            d.owner = Some(node_config::DrainOwner {
                namespace: k.namespace.clone(),
                name: k.name.clone(),
            });
            d
        })
        .collect();
    drains.sort_by(|a, b| a.name.cmp(&b.name));
    let config = NodeConfig {
        version: node_config::CURRENT_VERSION,
        node: Some(node.to_owned()),
        ca_bundles: share_ca_bundles(&mut drains),
        drains,
        containers: rendered,
        ..NodeConfig::default()
    };
    Some((config, adds))
}

/// The pod labels the drains `keys` carry (the union of what each uses), and their bytes.
fn labels_for(
    keys: &BTreeSet<ObjKey>,
    drains: &BTreeMap<ObjKey, DrainConfig>,
    labels: &BTreeMap<String, String>,
) -> (BTreeMap<String, String>, usize) {
    let mut used = BTreeSet::new();
    for drain in keys.iter().filter_map(|k| drains.get(k)) {
        match drain.labels_used() {
            None => return (labels.clone(), label_bytes(labels)),
            Some(keys) => used.extend(keys),
        }
    }
    let kept: BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, _)| used.contains(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let bytes = label_bytes(&kept);
    (kept, bytes)
}

fn label_bytes(labels: &BTreeMap<String, String>) -> usize {
    labels.iter().map(|(k, v)| k.len() + v.len() + 8).sum()
}

/// A container listed more than once (different streams) carries the union of the labels of its
/// entries in each, since a collector takes a container's metadata from one of them.
fn same_labels_per_container(containers: &mut [ContainerConfig]) {
    let mut union: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for c in containers.iter() {
        union
            .entry(c.id.clone())
            .or_default()
            .extend(c.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    for c in containers.iter_mut() {
        if let Some(labels) = union.get(&c.id) {
            c.labels.clone_from(labels);
        }
    }
}

/// Move every drain's CA bundle into a table keyed by the bundle's hash, so a bundle several drains
/// trust is carried once.
fn share_ca_bundles(drains: &mut [DrainConfig]) -> BTreeMap<String, String> {
    let mut bundles = BTreeMap::new();
    for tls in drains.iter_mut().filter_map(|d| d.tls.as_mut()) {
        if let Some(pem) = tls.ca_pem.take() {
            let name = format!("sha256-{}", &content_hash(&pem)[..16]);
            tls.ca_bundle = Some(name.clone());
            bundles.insert(name, pem);
        }
    }
    bundles
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
