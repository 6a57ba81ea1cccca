//! The on-disk layouts of container logs; the only code that knows them.
//!
//! * Docker json-file: `<dockerRoot>/containers/<id>/<id>-json.log`, rotated by renaming to
//!   `<id>-json.log.1 … .N` (`.1` is the newest rotated file; `.N.gz` with `compress=true`), with
//!   `config.v2.json` beside it.
//! * CRI: `<podsRoot>/<ns>_<pod>_<uid>/<container>/<n>.log` (`n` is the restart count), rotated by
//!   the kubelet to `<n>.log.<timestamp>` and later compressed to `….gz`.
//!
//! Compressed files are listed apart: they are never tailed (nothing writes them), only read
//! when a checkpoint points into one (see `files::inflate`).
//!
//! Invariants: file lists are ordered oldest first; a container is named by a stable key
//! (`docker/<id>` or `cri/<ns>_<pod>_<uid>/<container>`) that the checkpoint uses.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use sluice_api::node_config::Sources;

use super::parse::Format;

/// The checkpoint key of a Docker container.
pub fn docker_key(id: &str) -> String {
    format!("docker/{id}")
}

/// The checkpoint key of a CRI container (its log directory, relative to the pods root).
pub fn cri_key(namespace: &str, pod: &str, uid: &str, container: &str) -> String {
    format!("cri/{namespace}_{pod}_{uid}/{container}")
}

/// The log directory and format of a container key.
pub fn locate(key: &str, sources: &Sources) -> Option<(PathBuf, Format)> {
    if let Some(id) = key.strip_prefix("docker/") {
        return Some((sources.docker_root.join("containers").join(id), Format::Docker));
    }
    let rel = key.strip_prefix("cri/")?;
    Some((sources.pods_root.join(rel), Format::Cri))
}

/// The log files of one container, oldest first, and the compressed ones (never tailed).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Files to tail, oldest first.
    pub files: Vec<PathBuf>,
    /// The device and inode behind each of `files` when listed (`None`: gone meanwhile).
    pub inodes: Vec<Option<(u64, u64)>>,
    /// Compressed rotated files (CRI `.gz`).
    pub compressed: Vec<PathBuf>,
}

/// List the log files in a container's directory. A missing directory lists nothing.
///
/// A directory read while files in it are renamed (a rotation) can miss a file; the listing is
/// taken again until two agree, inodes included (a few times at most), so files are rarely seen
/// out of order. The caller checks the inodes again as it opens the files: a rename after the
/// listing shows there.
pub fn list(dir: &Path, format: Format) -> io::Result<Listing> {
    let mut previous = list_once(dir, format)?;
    for _ in 0..8 {
        let again = list_once(dir, format)?;
        if again == previous {
            break;
        }
        previous = again;
    }
    Ok(previous)
}

/// What a container's directory holds: every listed file (compressed ones too) with its inode and
/// length, so a container read to its end can tell whether anything was written since. An
/// unreadable directory holds nothing.
pub type Footprint = Vec<(PathBuf, (u64, u64), u64)>;

/// The [`Footprint`] of the container in `dir` now.
pub fn footprint(dir: &Path, format: Format) -> Footprint {
    use std::os::unix::fs::MetadataExt;
    let Ok(listing) = list_once(dir, format) else {
        return Vec::new();
    };
    listing
        .files
        .iter()
        .chain(&listing.compressed)
        .filter_map(|p| {
            let m = fs::metadata(p).ok()?;
            Some((p.clone(), (m.dev(), m.ino()), m.len()))
        })
        .collect()
}

/// Device and inode behind each listed path, to notice a rename between listing and use.
fn identities(files: &[PathBuf]) -> Vec<Option<(u64, u64)>> {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|p| fs::metadata(p).ok().map(|m| (m.dev(), m.ino())))
        .collect()
}

fn list_once(dir: &Path, format: Format) -> io::Result<Listing> {
    let names = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect::<Vec<_>>(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Listing::default()),
        Err(e) => return Err(e),
    };
    let mut listing = match format {
        Format::Docker => {
            let id = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            docker_listing(dir, id, names)
        }
        Format::Cri => cri_listing(dir, names),
    };
    listing.inodes = identities(&listing.files);
    Ok(listing)
}

/// `<id>-json.log.N` (highest N is oldest), then `<id>-json.log`; compressed ones
/// (`--log-opt compress=true`: `<id>-json.log.N.gz`) apart, oldest first.
fn docker_listing(dir: &Path, id: &str, names: Vec<String>) -> Listing {
    let current = format!("{id}-json.log");
    let mut rotated: Vec<(u64, String)> = Vec::new();
    let mut compressed: Vec<(u64, String)> = Vec::new();
    let mut has_current = false;
    for name in names {
        if name == current {
            has_current = true;
            continue;
        }
        let Some(suffix) = name.strip_prefix(&current).and_then(|s| s.strip_prefix('.')) else {
            continue;
        };
        let (n, into) = match suffix.strip_suffix(".gz") {
            Some(n) => (n, &mut compressed),
            None => (suffix, &mut rotated),
        };
        if let Ok(n) = n.parse::<u64>() {
            into.push((n, name));
        }
    }
    let oldest_first = |mut v: Vec<(u64, String)>| -> Vec<PathBuf> {
        v.sort_by_key(|r| std::cmp::Reverse(r.0));
        v.into_iter().map(|(_, name)| dir.join(name)).collect()
    };
    let mut files = oldest_first(rotated);
    if has_current {
        files.push(dir.join(current));
    }
    Listing {
        files,
        inodes: Vec::new(),
        compressed: oldest_first(compressed),
    }
}

/// Ordered by restart count; within one, rotated files by their suffix, then the current file.
fn cri_listing(dir: &Path, names: Vec<String>) -> Listing {
    let mut files: Vec<((u64, u8, String), PathBuf)> = Vec::new();
    let mut compressed = Vec::new();
    for name in names {
        let Some((n, rest)) = name.split_once(".log") else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        if rest.is_empty() {
            files.push(((n, 1, String::new()), dir.join(&name)));
        } else if let Some(suffix) = rest.strip_prefix('.') {
            // Only the kubelet's rotated names: anything else beside them (the `….tmp` it
            // compresses into before renaming it to `….gz`) is not a log file.
            match suffix.strip_suffix(".gz") {
                Some(stamp) if is_rotation_stamp(stamp) => {
                    compressed.push(((n, stamp.to_owned()), dir.join(&name)))
                }
                None if is_rotation_stamp(suffix) => files.push(((n, 0, suffix.to_owned()), dir.join(&name))),
                _ => {}
            }
        }
    }
    files.sort();
    compressed.sort();
    Listing {
        files: files.into_iter().map(|(_, p)| p).collect(),
        inodes: Vec::new(),
        compressed: compressed.into_iter().map(|(_, p)| p).collect(),
    }
}

/// The kubelet's rotation stamp, `YYYYMMDD-HHMMSS` (its `20060102-150405` format).
fn is_rotation_stamp(stamp: &str) -> bool {
    let bytes = stamp.as_bytes();
    bytes.len() == 15
        && bytes[8] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 8 || b.is_ascii_digit())
}

/// What Docker's `config.v2.json` says about a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DockerInfo {
    /// The container name without the leading `/`.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Whether it is running.
    pub running: bool,
}

#[derive(Deserialize)]
struct ConfigV2 {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: ConfigSection,
    #[serde(rename = "State", default)]
    state: StateSection,
}

#[derive(Deserialize, Default)]
struct ConfigSection {
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
struct StateSection {
    #[serde(rename = "Running", default)]
    running: bool,
    #[serde(rename = "Restarting", default)]
    restarting: bool,
    #[serde(rename = "FinishedAt", default)]
    finished_at: Option<String>,
}

impl StateSection {
    /// Whether the container may still write. Docker writes `config.v2.json` at create time,
    /// before the start, with `Running: false` and a zero `FinishedAt`: such a container is
    /// about to run, not finished (nor is one its restart policy is restarting).
    fn may_write(&self) -> bool {
        let never_finished = self
            .finished_at
            .as_deref()
            .is_some_and(|t| t.starts_with("0001-01-01"));
        self.running || self.restarting || never_finished
    }
}

/// Read `config.v2.json` of the Docker container in `dir`; `None` when absent or unreadable.
fn docker_info(dir: &Path) -> Option<DockerInfo> {
    let text = fs::read(dir.join("config.v2.json")).ok()?;
    let config: ConfigV2 = serde_json::from_slice(&text).ok()?;
    Some(DockerInfo {
        name: config.name.trim_start_matches('/').to_owned(),
        labels: config.config.labels.unwrap_or_default(),
        running: config.state.may_write(),
    })
}

/// Docker's containers as the disk shows them at one rescan: for each one asked for (or every
/// one on disk), whether its directory exists and what its `config.v2.json` says. Read once per
/// rescan, so routing reads nothing itself.
#[derive(Debug, Default)]
pub struct DockerContainers {
    /// By id, the containers whose directory exists, with their config (`None`: absent or
    /// unreadable).
    present: BTreeMap<String, Option<DockerInfo>>,
}

impl DockerContainers {
    /// Read the containers `ids` under `docker_root`, and every container on disk too when
    /// `every` (selectors match them by name and labels).
    pub fn read(docker_root: &Path, ids: impl IntoIterator<Item = String>, every: bool) -> Self {
        let mut wanted: BTreeSet<String> = ids.into_iter().collect();
        if every {
            wanted.extend(docker_ids(docker_root));
        }
        let containers = docker_root.join("containers");
        let present = wanted
            .into_iter()
            .filter_map(|id| {
                let dir = containers.join(&id);
                dir.is_dir().then(|| (id, docker_info(&dir)))
            })
            .collect();
        Self { present }
    }

    /// Whether the container's directory exists, and what its config says if it could be read.
    pub fn get(&self, id: &str) -> Option<Option<&DockerInfo>> {
        self.present.get(id).map(Option::as_ref)
    }

    /// The containers read whose config could be read, by id.
    pub fn described(&self) -> impl Iterator<Item = (&str, &DockerInfo)> {
        self.present
            .iter()
            .filter_map(|(id, info)| Some((id.as_str(), info.as_ref()?)))
    }
}

/// The ids of every Docker container directory under `<dockerRoot>/containers`.
fn docker_ids(docker_root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(docker_root.join("containers")) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .collect();
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_and_cri_orders() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("abc");
        fs::create_dir(&d).unwrap();
        for name in [
            "abc-json.log",
            "abc-json.log.1",
            "abc-json.log.10",
            "abc-json.log.2",
            "abc-json.log.3.gz",
            "abc-json.log.12.gz",
            "config.v2.json",
            "x",
        ] {
            fs::write(d.join(name), b"").unwrap();
        }
        let docker = list(&d, Format::Docker).unwrap();
        let file_names = |paths: &[PathBuf]| -> Vec<String> {
            paths
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            file_names(&docker.compressed),
            ["abc-json.log.12.gz", "abc-json.log.3.gz"]
        );
        let names = file_names(&docker.files);
        assert_eq!(
            names,
            [
                "abc-json.log.10",
                "abc-json.log.2",
                "abc-json.log.1",
                "abc-json.log"
            ]
        );
        let c = dir.path().join("ns_pod_uid/app");
        fs::create_dir_all(&c).unwrap();
        for name in [
            "1.log",
            "0.log",
            "1.log.20261121-101010",
            "0.log.20261120-000000.gz",
            "1.log.20261121-080000.gz",
            "1.log.20261121-070000.gz",
            "1.log.20261121-090000",
            // Being compressed by the kubelet (gzip, renamed to `.gz` when done): not a log.
            "1.log.20261121-090000.tmp",
            "1.log.notes",
            "1.log.20261121-0900.gz",
        ] {
            fs::write(c.join(name), b"").unwrap();
        }
        let listing = list(&c, Format::Cri).unwrap();
        let names: Vec<_> = listing
            .files
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["0.log", "1.log.20261121-090000", "1.log.20261121-101010", "1.log"]
        );
        assert_eq!(
            file_names(&listing.compressed),
            [
                "0.log.20261120-000000.gz",
                "1.log.20261121-070000.gz",
                "1.log.20261121-080000.gz"
            ]
        );
        assert_eq!(
            list(&dir.path().join("missing"), Format::Cri).unwrap(),
            Listing::default()
        );
    }

    #[test]
    fn docker_config() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("config.v2.json"),
            br#"{"Name":"/web-1","Config":{"Labels":{"app":"web"},"Image":"x"},"State":{"Running":true,"Pid":4}}"#,
        )
        .unwrap();
        let info = docker_info(dir.path()).unwrap();
        assert_eq!(info.name, "web-1");
        assert_eq!(info.labels["app"], "web");
        assert!(info.running);
    }

    #[test]
    fn docker_states_that_may_still_write() {
        let dir = tempfile::tempdir().unwrap();
        let zero = "0001-01-01T00:00:00Z";
        let cases = [
            (
                format!(r#"{{"Running":true,"FinishedAt":"{zero}"}}"#),
                true,
                "running",
            ),
            (
                format!(r#"{{"Running":false,"FinishedAt":"{zero}"}}"#),
                true,
                "created, not started yet",
            ),
            (
                r#"{"Running":false,"Restarting":true,"FinishedAt":"2026-11-21T10:00:00Z"}"#.into(),
                true,
                "restarting",
            ),
            (
                r#"{"Running":false,"FinishedAt":"2026-11-21T10:00:00Z"}"#.into(),
                false,
                "exited",
            ),
            (r#"{"Running":false}"#.into(), false, "stopped, no times"),
        ];
        for (state, may_write, what) in cases {
            let json = format!(r#"{{"Name":"/c","State":{state}}}"#);
            fs::write(dir.path().join("config.v2.json"), json).unwrap();
            assert_eq!(docker_info(dir.path()).unwrap().running, may_write, "{what}");
        }
    }
}
