//! Routing (pure apart from reading Docker's `config.v2.json`): which containers to tail, with
//! which metadata, for which drains and streams.
//!
//! Invariants: a container appears once, keyed by its checkpoint key; its drains are the union of
//! every entry and selector that names it, restricted to drains that exist in the routing table;
//! metadata comes from the operator's entry when there is one, else from Docker's own config.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    path::PathBuf,
};

use sluice_api::node_config::{ContainerConfig, RuntimeId, Sources, Stream};

use super::{
    Routes,
    discover::{self, DockerInfo},
    parse::Format,
};
use crate::pipeline::ContainerMeta;

/// Which streams of a container a drain takes: `[stdout, stderr]`.
pub type Wanted = [bool; 2];

/// Index of a stream in a [`Wanted`].
pub fn stream_index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

fn wanted(streams: &[Stream]) -> Wanted {
    let mut w = [false; 2];
    for &s in streams {
        w[stream_index(s)] = true;
    }
    w
}

/// One container to tail.
#[derive(Clone, Debug)]
pub struct Desired {
    /// Its log directory.
    pub dir: PathBuf,
    /// Its log format.
    pub format: Format,
    /// Who it is.
    pub meta: ContainerMeta,
    /// Its drains and the streams each takes.
    pub drains: BTreeMap<String, Wanted>,
    /// Whether it may still write (else it is read to its end and forgotten).
    pub running: bool,
}

/// Every container to tail, by key. Entries naming an invalid runtime id are skipped (the config
/// validation already rejects them).
pub fn resolve(routes: &Routes, sources: &Sources, node: &str) -> BTreeMap<String, Desired> {
    let mut out = BTreeMap::new();
    for c in &routes.containers {
        // Invalid ids and names (the config validation rejects them) are never made into paths.
        let Ok(runtime) = c.runtime_id() else { continue };
        let (key, dir, format, id) = match runtime {
            RuntimeId::Docker(id) => (
                discover::docker_key(&id),
                sources.docker_root.join("containers").join(&id),
                Format::Docker,
                id,
            ),
            RuntimeId::Cri(_) if c.check_path_names().is_err() => continue,
            RuntimeId::Cri(id) => {
                let key = discover::cri_key(&c.namespace, &c.pod, &c.pod_uid, &c.container);
                let dir = sources
                    .pods_root
                    .join(format!("{}_{}_{}", c.namespace, c.pod, c.pod_uid))
                    .join(&c.container);
                (key, dir, Format::Cri, id)
            }
        };
        // A removed container's directory is gone (Docker removes it with the container, the
        // kubelet with the pod): it is finished, even while the routes still name it.
        let running = match format {
            Format::Docker => dir.is_dir() && discover::docker_info(&dir).is_none_or(|info| info.running),
            Format::Cri => dir.is_dir(),
        };
        let desired = out.entry(key).or_insert_with(|| Desired {
            dir,
            format,
            meta: operator_meta(c, id, node),
            drains: BTreeMap::new(),
            running,
        });
        add_drains(desired, routes, &c.drains, wanted(&c.streams));
    }
    if !routes.selectors.is_empty() {
        select_docker(routes, sources, node, &mut out);
    }
    out.retain(|_, d| !d.drains.is_empty());
    out
}

fn operator_meta(c: &ContainerConfig, id: String, node: &str) -> ContainerMeta {
    ContainerMeta {
        container_id: id,
        namespace: c.namespace.clone(),
        pod: c.pod.clone(),
        pod_uid: c.pod_uid.clone(),
        container: c.container.clone(),
        labels: c.labels.clone(),
        node: node.to_owned(),
        revision: ContainerMeta::next_revision(),
    }
}

fn add_drains(desired: &mut Desired, routes: &Routes, drains: &[String], w: Wanted) {
    for drain in drains.iter().filter(|d| routes.drains.contains_key(*d)) {
        let entry = desired.drains.entry(drain.clone()).or_insert([false; 2]);
        entry[0] |= w[0];
        entry[1] |= w[1];
    }
}

/// Resolve name/label selectors against every Docker container on disk.
fn select_docker(routes: &Routes, sources: &Sources, node: &str, out: &mut BTreeMap<String, Desired>) {
    for id in discover::docker_ids(&sources.docker_root) {
        let dir = sources.docker_root.join("containers").join(&id);
        let Some(info) = discover::docker_info(&dir) else {
            continue;
        };
        let matching: Vec<_> = routes
            .selectors
            .iter()
            .filter(|s| s.matches(&info.name, &info.labels))
            .collect();
        if matching.is_empty() {
            continue;
        }
        let desired = match out.entry(discover::docker_key(&id)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Desired {
                dir,
                format: Format::Docker,
                meta: docker_meta(&id, &info, node),
                drains: BTreeMap::new(),
                running: info.running,
            }),
        };
        for s in matching {
            add_drains(desired, routes, &s.drains, wanted(&s.streams));
        }
    }
}

/// Metadata of a container on a plain Docker host: the pod is the container name.
fn docker_meta(id: &str, info: &DockerInfo, node: &str) -> ContainerMeta {
    ContainerMeta {
        container_id: id.to_owned(),
        namespace: String::new(),
        pod: info.name.clone(),
        pod_uid: String::new(),
        container: info.name.clone(),
        labels: info.labels.clone(),
        node: node.to_owned(),
        revision: ContainerMeta::next_revision(),
    }
}
