//! Routing: which containers to tail, with which metadata, for which drains and streams. What
//! Docker's files say comes already read ([`DockerContainers`], from `discover`); the only look
//! at the disk left here is whether a CRI container's log directory exists.
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
    discover::{self, DockerContainers, DockerInfo},
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

/// The Docker containers the routes name by id: their configs are read before [`resolve`].
pub fn docker_ids(routes: &Routes) -> impl Iterator<Item = String> + '_ {
    routes.containers.iter().filter_map(|c| match c.runtime_id() {
        Ok(RuntimeId::Docker(id)) => Some(id),
        _ => None,
    })
}

/// Every container to tail, by key, given what `docker` read of Docker's containers (those
/// [`docker_ids`] names, and every one when there are selectors). Entries naming an invalid
/// runtime id are skipped (the config validation already rejects them).
pub fn resolve(
    routes: &Routes,
    sources: &Sources,
    node: &str,
    docker: &DockerContainers,
) -> BTreeMap<String, Desired> {
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
            Format::Docker => docker
                .get(&id)
                .is_some_and(|info| info.is_none_or(|info| info.running)),
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
        select_docker(routes, sources, node, docker, &mut out);
    }
    out.retain(|_, d| !d.drains.is_empty());
    out
}

fn operator_meta(config: &ContainerConfig, id: String, node: &str) -> ContainerMeta {
    ContainerMeta {
        container_id: id,
        namespace: config.namespace.clone(),
        pod: config.pod.clone(),
        pod_uid: config.pod_uid.clone(),
        container: config.container.clone(),
        labels: config.labels.clone(),
        node: node.to_owned(),
        revision: ContainerMeta::next_revision(),
    }
}

fn add_drains(desired: &mut Desired, routes: &Routes, drains: &[String], wanted: Wanted) {
    for drain in drains.iter().filter(|d| routes.drains.contains_key(*d)) {
        let entry = desired.drains.entry(drain.clone()).or_insert([false; 2]);
        entry[0] |= wanted[0];
        entry[1] |= wanted[1];
    }
}

/// Resolve name/label selectors against every Docker container on disk (as `docker` read them).
fn select_docker(
    routes: &Routes,
    sources: &Sources,
    node: &str,
    docker: &DockerContainers,
    out: &mut BTreeMap<String, Desired>,
) {
    for (id, info) in docker.described() {
        let dir = sources.docker_root.join("containers").join(id);
        let matching: Vec<_> = routes
            .selectors
            .iter()
            .filter(|s| s.matches(&info.name, &info.labels))
            .collect();
        if matching.is_empty() {
            continue;
        }
        let desired = match out.entry(discover::docker_key(id)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Desired {
                dir,
                format: Format::Docker,
                meta: docker_meta(id, info, node),
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

#[cfg(test)]
mod tests {
    use std::{fs, sync::Arc};

    use sluice_api::node_config::SelectorConfig;

    use super::*;
    use crate::pipeline::{Batch, DrainEndpoint, Encoder, LogLine};

    struct Unused;

    impl Encoder for Unused {
        fn encode(&mut self, _: &LogLine<'_>, _: &mut Batch) {}
    }

    fn by_id(id: &str) -> ContainerConfig {
        ContainerConfig {
            id: format!("docker://{id}"),
            namespace: "ns".into(),
            pod: format!("pod-{id}"),
            pod_uid: "uid".into(),
            container: "app".into(),
            labels: BTreeMap::new(),
            streams: Stream::all(),
            drains: vec!["d".into()],
        }
    }

    /// Containers named by id and selected by label, resolved from what `discover` read of
    /// Docker's files: whether each may still write, and whose metadata it carries.
    #[test]
    fn docker_containers_by_id_and_by_selector() {
        let root = tempfile::tempdir().unwrap();
        let config = |id: &str, json: &str| {
            let dir = root.path().join("containers").join(id);
            fs::create_dir_all(&dir).unwrap();
            if !json.is_empty() {
                fs::write(dir.join("config.v2.json"), json).unwrap();
            }
        };
        config("aaa", r#"{"Name":"/web","State":{"Running":true}}"#);
        config(
            "bbb",
            r#"{"Name":"/job","Config":{"Labels":{"app":"x"}},"State":{"Running":false}}"#,
        );
        config("ccc", "");
        let (batches, _rx) = tokio::sync::mpsc::channel(1);
        let endpoint = DrainEndpoint {
            name: "d".into(),
            generation: 1,
            batches,
            new_encoder: Arc::new(|| Box::new(Unused) as Box<dyn Encoder>),
            batch_max_lines: 1,
            batch_max_bytes: 1,
        };
        let routes = Routes {
            drains: [("d".to_string(), endpoint)].into(),
            containers: ["aaa", "ccc", "ddd"].map(by_id).to_vec(),
            selectors: vec![SelectorConfig {
                name: None,
                labels: [("app".to_string(), "x".to_string())].into(),
                streams: vec![Stream::Stderr],
                drains: vec!["d".into()],
            }],
        };
        let sources = Sources {
            docker_root: root.path().to_owned(),
            pods_root: root.path().join("pods"),
        };
        let docker = DockerContainers::read(&sources.docker_root, docker_ids(&routes), true);
        let out = resolve(&routes, &sources, "node-1", &docker);
        let seen: Vec<(&str, bool, &str, Wanted)> = out
            .iter()
            .map(|(key, d)| (key.as_str(), d.running, d.meta.pod.as_str(), d.drains["d"]))
            .collect();
        assert_eq!(
            seen,
            [
                // Running; the operator's metadata.
                ("docker/aaa", true, "pod-aaa", [true, true]),
                // Exited, selected by its label: the pod is the container's name.
                ("docker/bbb", false, "job", [false, true]),
                // No config (yet): it may still write.
                ("docker/ccc", true, "pod-ccc", [true, true]),
                // No directory: removed, finished.
                ("docker/ddd", false, "pod-ddd", [true, true]),
            ]
        );
    }
}
