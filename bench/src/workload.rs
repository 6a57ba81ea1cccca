//! Docker json-file workloads for the collector benchmark.
//!
//! A workload is `containers` Docker containers under `<root>/containers/<id>/`, each with a
//! `<id>-json.log` of `lines_per_container` lines and a `config.v2.json` beside it (name
//! `bench-NNNN`, label `sluice.bench=1`) so that a collector's name/label selector picks it.
//!
//! Invariants:
//! * the output is a pure function of [`Workload`] (seeded PRNG, fixed timestamps), so every
//!   shipper of a run reads byte-identical files and reruns are reproducible;
//! * every application line (the JSON `log` value, without its trailing newline) is
//!   `min_bytes..=max_bytes` bytes long and begins with a unique [`marker`] carrying its global
//!   sequence number `container * lines_per_container + line`, which the counting receiver uses
//!   to detect loss and duplicates whatever framing or format a shipper chose;
//! * the payload alphabet has no `[`/`]` (so the marker cannot occur by accident) and no control
//!   characters (so no shipper escapes or rejects it); it does contain `"` and `\`, so JSON
//!   decoding is exercised.

use std::{
    fs,
    io::{self, BufWriter, Write as _},
    path::{Path, PathBuf},
};

/// The workload could not be written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Creating or writing a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The parameters make no workload.
    #[error("invalid workload: {0}")]
    Invalid(String),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The prefix of every marker; the digits of the sequence number and `]` follow.
pub const MARKER_PREFIX: &[u8] = b"[sb ";

/// Characters of the random payload (no brackets, no control characters).
const ALPHABET: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789     .,:;=-_/()'\"\\<>&+*#%!?@";

/// The shape of a workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The Docker data root to create (`<root>/containers/...`).
    pub root: PathBuf,
    /// How many containers (one log file each).
    pub containers: u32,
    /// Lines in each container's log.
    pub lines_per_container: u64,
    /// Shortest application line in bytes (marker included).
    pub min_bytes: usize,
    /// Longest application line in bytes (marker included).
    pub max_bytes: usize,
    /// PRNG seed.
    pub seed: u64,
}

/// One generated container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// The 64-hex-digit container id.
    pub id: String,
    /// The container name (without Docker's leading `/`).
    pub name: String,
    /// Path of its json-file log.
    pub log_path: PathBuf,
}

/// The marker of line `seq`: `[sb 0000000123]`.
pub fn marker(seq: u64) -> String {
    format!("[sb {seq:010}]")
}

/// SplitMix64: tiny, fast and good enough to make text look random; deterministic per seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

impl Workload {
    /// Total lines of the workload.
    pub fn total_lines(&self) -> u64 {
        u64::from(self.containers) * self.lines_per_container
    }

    /// The containers of this workload (ids derive from the seed and index).
    pub fn containers(&self) -> Vec<Container> {
        (0..self.containers)
            .map(|i| {
                let mut rng = Rng::new(self.seed ^ (u64::from(i) << 32) ^ 0xC0FF_EE00);
                let id: String = (0..4).map(|_| format!("{:016x}", rng.next_u64())).collect();
                let name = format!("bench-{i:04}");
                let log_path = self
                    .root
                    .join("containers")
                    .join(&id)
                    .join(format!("{id}-json.log"));
                Container { id, name, log_path }
            })
            .collect()
    }

    fn check(&self) -> Result<()> {
        let marker_len = marker(self.total_lines()).len() + 1;
        if self.containers == 0 || self.lines_per_container == 0 {
            return Err(Error::Invalid(
                "containers and lines per container must be > 0".into(),
            ));
        }
        if self.min_bytes < marker_len || self.max_bytes < self.min_bytes {
            return Err(Error::Invalid(format!(
                "line sizes must satisfy {marker_len} <= min ({}) <= max ({})",
                self.min_bytes, self.max_bytes
            )));
        }
        Ok(())
    }

    /// Write every container's directory, `config.v2.json` and log. Returns the containers.
    pub fn generate(&self) -> Result<Vec<Container>> {
        self.check()?;
        let containers = self.containers();
        for (index, container) in containers.iter().enumerate() {
            let dir = container
                .log_path
                .parent()
                .expect("invariant: a log path has a directory");
            fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_owned(),
                source,
            })?;
            let config = dir.join("config.v2.json");
            fs::write(&config, docker_config(container)).map_err(|source| Error::Io {
                path: config.clone(),
                source,
            })?;
            self.write_log(index as u64, container)?;
        }
        Ok(containers)
    }

    fn write_log(&self, index: u64, container: &Container) -> Result<()> {
        let path = &container.log_path;
        let io_err = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let mut out = BufWriter::with_capacity(1 << 20, fs::File::create(path).map_err(io_err)?);
        let mut rng = Rng::new(self.seed.wrapping_add(index.wrapping_mul(0x1000_0000_01B3)));
        let mut line = Vec::with_capacity(self.max_bytes * 2 + 128);
        for n in 0..self.lines_per_container {
            line.clear();
            let seq = index * self.lines_per_container + n;
            json_line(&mut line, &mut rng, seq, self.min_bytes, self.max_bytes);
            out.write_all(&line).map_err(io_err)?;
        }
        out.flush().map_err(io_err)
    }
}

/// Docker's `config.v2.json`, reduced to the fields a log shipper looks at.
fn docker_config(container: &Container) -> String {
    serde_json::json!({
        "ID": container.id,
        "Name": format!("/{}", container.name),
        "Created": "2026-01-01T00:00:00.000000000Z",
        "Config": {
            "Hostname": &container.id[..12],
            "Image": "sluice-bench",
            "Labels": { "sluice.bench": "1" },
        },
        "LogPath": container.log_path,
        "State": { "Running": true, "Pid": 0 },
    })
    .to_string()
}

/// Append one json-file line (with its newline) for line `seq` to `out`.
pub fn json_line(out: &mut Vec<u8>, rng: &mut Rng, seq: u64, min: usize, max: usize) {
    let marker = marker(seq);
    let len = rng.range(min as u64, max as u64) as usize;
    out.extend_from_slice(b"{\"log\":\"");
    out.extend_from_slice(marker.as_bytes());
    out.push(b' ');
    // The payload, JSON-escaped as Docker writes it (`"` and `\` escaped, `<>&` as \u00XX).
    for _ in marker.len() + 1..len {
        let c = ALPHABET[(rng.next_u64() % ALPHABET.len() as u64) as usize];
        match c {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', c]),
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            _ => out.push(c),
        }
    }
    let stream = if seq % 10 == 9 { "stderr" } else { "stdout" };
    let (secs, nanos) = (seq / 1000, (seq % 1000) * 1_000_000 + 123_456);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let tail =
        format!("\\n\",\"stream\":\"{stream}\",\"time\":\"2026-01-01T{h:02}:{m:02}:{s:02}.{nanos:09}Z\"}}\n");
    out.extend_from_slice(tail.as_bytes());
}

/// Whether `root` already holds exactly this workload (a stamp written after generation).
pub fn is_current(workload: &Workload) -> bool {
    fs::read_to_string(stamp_path(&workload.root)).is_ok_and(|s| s == stamp(workload))
}

/// Record that `root` holds this workload.
pub fn write_stamp(workload: &Workload) -> Result<()> {
    let path = stamp_path(&workload.root);
    fs::write(&path, stamp(workload)).map_err(|source| Error::Io { path, source })
}

fn stamp_path(root: &Path) -> PathBuf {
    root.join("workload.stamp")
}

fn stamp(workload: &Workload) -> String {
    format!(
        "v1 containers={} lines={} bytes={}..{} seed={}\n",
        workload.containers,
        workload.lines_per_container,
        workload.min_bytes,
        workload.max_bytes,
        workload.seed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_valid_json_with_sized_marked_payloads() {
        let mut rng = Rng::new(7);
        for seq in 0..2000 {
            let mut buf = Vec::new();
            json_line(&mut buf, &mut rng, seq, 100, 200);
            assert_eq!(buf.last(), Some(&b'\n'));
            let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
            let log = v["log"].as_str().unwrap();
            let body = log.strip_suffix('\n').unwrap();
            assert!((100..=200).contains(&body.len()), "length {}", body.len());
            assert!(body.starts_with(&format!("{} ", marker(seq))));
            assert_eq!(body.matches('[').count(), 1);
            assert_eq!(v["stream"], if seq % 10 == 9 { "stderr" } else { "stdout" });
        }
    }

    #[test]
    fn generation_is_deterministic_and_docker_shaped() {
        let dir = tempfile::tempdir().unwrap();
        let w = Workload {
            root: dir.path().join("a"),
            containers: 3,
            lines_per_container: 50,
            min_bytes: 100,
            max_bytes: 200,
            seed: 42,
        };
        let made = w.generate().unwrap();
        let again = Workload {
            root: dir.path().join("b"),
            ..w.clone()
        }
        .generate()
        .unwrap();
        for (a, b) in made.iter().zip(&again) {
            assert_eq!(a.id, b.id);
            assert_eq!(fs::read(&a.log_path).unwrap(), fs::read(&b.log_path).unwrap());
            let text = fs::read_to_string(&a.log_path).unwrap();
            assert_eq!(text.lines().count(), 50);
            let cfg: serde_json::Value = serde_json::from_str(
                &fs::read_to_string(a.log_path.with_file_name("config.v2.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(cfg["Name"], format!("/{}", a.name));
            assert_eq!(cfg["ID"], a.id.as_str());
        }
        let markers: Vec<_> = fs::read_to_string(&made[2].log_path)
            .unwrap()
            .lines()
            .map(|l| l[8..23].to_owned())
            .collect();
        assert_eq!(markers.first().map(String::as_str), Some("[sb 0000000100]"));
        assert!(!is_current(&w));
        write_stamp(&w).unwrap();
        assert!(is_current(&w));
    }
}
