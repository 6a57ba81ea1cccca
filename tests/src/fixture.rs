//! Building blocks of the end-to-end scenarios: node configs, fake Docker containers (json-file
//! logs written by the test itself), and the expected multisets of lines.
//!
//! Invariant: the YAML rendered here is the `sluice-api` node-config schema (version 1) written
//! the way a person would write it by hand for a plain Docker host.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;
use sluice_loggen::LineSpec;

use crate::{multiset::Multiset, support::wait_until};

/// One drain of a test config.
#[derive(Clone, Debug)]
pub struct Drain {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// `tls.caFile`, for `syslog-tls://` drains.
    pub ca_file: Option<PathBuf>,
    /// `delivery.batchMaxLines`, when not the default.
    pub batch_max_lines: Option<u32>,
    /// `delivery.timeoutMs`, when not the default.
    pub timeout_ms: Option<u64>,
    /// `delivery.retryMaxMs`, when not the default (tests keep it short so recovery is quick).
    pub retry_max_ms: Option<u64>,
}

impl Drain {
    /// A drain with default options.
    pub fn new(name: &str, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            ca_file: None,
            batch_max_lines: None,
            timeout_ms: None,
            retry_max_ms: Some(1000),
        }
    }

    /// With `tls.caFile`.
    pub fn ca(mut self, ca: &Path) -> Self {
        self.ca_file = Some(ca.into());
        self
    }

    /// With `delivery.batchMaxLines`.
    pub fn batch(mut self, lines: u32) -> Self {
        self.batch_max_lines = Some(lines);
        self
    }

    /// With `delivery.timeoutMs`.
    pub fn timeout(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }
}

/// A selector: containers whose name matches `glob` go to `drains`.
#[derive(Clone, Debug)]
pub struct Selector {
    /// Name glob.
    pub glob: String,
    /// Drain names.
    pub drains: Vec<String>,
}

/// A selector by name glob.
pub fn select(glob: &str, drains: &[&str]) -> Selector {
    Selector {
        glob: glob.into(),
        drains: drains.iter().map(|d| d.to_string()).collect(),
    }
}

/// Render a standalone node config.
pub fn config_yaml(docker_root: &Path, pods_root: &Path, drains: &[Drain], selectors: &[Selector]) -> String {
    let mut y = String::new();
    let _ = writeln!(y, "version: 1\nnode: {}", crate::collector::NODE);
    let _ = writeln!(
        y,
        "sources:\n  dockerRoot: {:?}\n  podsRoot: {:?}",
        docker_root, pods_root
    );
    y.push_str("drains:\n");
    for d in drains {
        let _ = writeln!(y, "  - name: {}\n    url: {:?}", d.name, d.url);
        if let Some(ca) = &d.ca_file {
            let _ = writeln!(y, "    tls:\n      caFile: {ca:?}");
        }
        y.push_str("    delivery:\n      retryInitialMs: 50\n");
        if let Some(n) = d.batch_max_lines {
            let _ = writeln!(y, "      batchMaxLines: {n}");
        }
        if let Some(ms) = d.timeout_ms {
            let _ = writeln!(y, "      timeoutMs: {ms}");
        }
        if let Some(ms) = d.retry_max_ms {
            let _ = writeln!(y, "      retryMaxMs: {ms}");
        }
    }
    if drains.is_empty() {
        y.push_str("  []\n");
    }
    y.push_str("selectors:\n");
    for s in selectors {
        let _ = writeln!(y, "  - name: {:?}\n    drains: [{}]", s.glob, s.drains.join(", "));
    }
    if selectors.is_empty() {
        y.push_str("  []\n");
    }
    y
}

/// The lines `seq in start..start+count` of `spec`, as a multiset of line texts.
pub fn lines(spec: &LineSpec, start: u64, count: u64) -> Multiset {
    (start..start + count).map(|seq| spec.line(seq)).collect()
}

/// The loggen arguments that write `count` lines of `spec` at `rate` lines/s.
pub fn loggen_args(spec: &LineSpec, count: u64, rate: u64) -> Vec<String> {
    let mut args = vec![
        "--tag".to_owned(),
        spec.tag.clone(),
        "--count".into(),
        count.to_string(),
        "--rate".into(),
        rate.to_string(),
        "--size".into(),
        format!("{}..{}", spec.min, spec.max),
    ];
    for (flag, value) in [
        ("--stderr-every", spec.stderr_every),
        ("--long-every", spec.long_every),
    ] {
        if value > 0 {
            args.extend([flag.to_owned(), value.to_string()]);
        }
    }
    if spec.long_every > 0 {
        args.extend(["--long-bytes".to_owned(), spec.long_bytes.to_string()]);
    }
    args
}

/// A container directory laid out like Docker's (`<root>/containers/<id>/`, with a
/// `config.v2.json` naming it), for tests that write json-file logs themselves.
#[derive(Clone, Debug)]
pub struct FakeContainer {
    /// The 64-hex container id.
    pub id: String,
    /// Its name (without `/`).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
}

/// A Docker container's state, as `config.v2.json` records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DockerState {
    /// `docker create`: not running, never finished (about to start).
    Created,
    /// Running.
    Running,
    /// Exited.
    Exited,
}

impl FakeContainer {
    /// Create the directory and `config.v2.json` (running, with `labels`).
    pub fn create(docker_root: &Path, name: &str, labels: &BTreeMap<String, String>) -> Result<Self> {
        let id = fake_id(name);
        let dir = docker_root.join("containers").join(&id);
        fs::create_dir_all(&dir)?;
        let c = Self {
            id,
            name: name.into(),
            dir,
        };
        c.set_state(DockerState::Running, labels)?;
        Ok(c)
    }

    /// Write `config.v2.json` as Docker does for a container in `state`, with `labels`.
    pub fn set_state(&self, state: DockerState, labels: &BTreeMap<String, String>) -> Result<()> {
        let zero = "0001-01-01T00:00:00Z";
        let (running, pid, finished) = match state {
            DockerState::Created => (false, 0, zero),
            DockerState::Running => (true, 1, zero),
            DockerState::Exited => (false, 0, "2026-01-01T00:00:00.000000001Z"),
        };
        let config = serde_json::json!({
            "ID": self.id, "Name": format!("/{}", self.name),
            "Config": { "Labels": labels, "Image": "sluice-loggen:test" },
            "State": { "Running": running, "Pid": pid, "FinishedAt": finished },
        });
        // Docker replaces the file atomically; a reader never sees half of it.
        let tmp = self.dir.join(".config.v2.json.tmp");
        fs::write(&tmp, serde_json::to_vec(&config)?)?;
        fs::rename(tmp, self.dir.join("config.v2.json"))?;
        Ok(())
    }

    /// The json-file log path (`<id>-json.log`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}-json.log", self.id))
    }
}

/// A deterministic 64-hex id for a fake container name.
pub fn fake_id(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut id = String::new();
    for round in 0..4u64 {
        for b in name.bytes().chain(round.to_le_bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let _ = write!(id, "{h:016x}");
    }
    id
}

/// Wait until `received()` holds at least `want` lines (or fail after `timeout`, saying how many
/// arrived), then return them.
pub fn wait_for_lines(
    what: &str,
    want: u64,
    timeout: Duration,
    received: impl Fn() -> Multiset,
    context: impl Fn() -> String,
) -> Result<Multiset> {
    wait_until(
        &format!("{want} lines at {what}"),
        timeout,
        || Some(received()).filter(|m| m.len() >= want),
        || format!("{} of {want} arrived; {}", received().len(), context()),
    )
}

/// Wait until `received()` holds as many lines as `want` (see [`wait_for_lines`]), then require
/// exactly `want`: none missing, none twice, none never written. `label` names both the wait and
/// the comparison.
pub fn expect_exact(
    label: &str,
    want: &Multiset,
    timeout: Duration,
    received: impl Fn() -> Multiset,
    context: impl Fn() -> String,
) -> Result<()> {
    let got = wait_for_lines(label, want.len(), timeout, received, context)?;
    crate::multiset::assert_exact(label, want, &got);
    Ok(())
}

/// What every Docker end-to-end test needs: the static binaries, rsyslog, and a Docker daemon of
/// its own with the loggen image built.
pub struct DockerRig {
    /// `SLUICE_BIN_DIR`: the static `sluice-collector` and `loggen`.
    pub bins: std::path::PathBuf,
    /// The rsyslogd binary.
    pub rsyslog_bin: std::path::PathBuf,
    /// The test's own Docker daemon.
    pub docker: crate::docker::Docker,
}

/// Start a [`DockerRig`] for `test`: `Ok(None)` after a loud SKIPPED banner when a part is
/// missing locally (with `SLUICE_REQUIRE_ALL=1` a missing part fails the test instead).
pub fn docker_rig(test: &str) -> Result<Option<DockerRig>> {
    use crate::support::{bin_dir, need};
    let Some(bins) = need(test, bin_dir()) else {
        return Ok(None);
    };
    let Some(rsyslog_bin) = need(test, crate::syslog::Rsyslog::available()) else {
        return Ok(None);
    };
    let Some(docker) = need(test, crate::docker::Docker::start_if_available()) else {
        return Ok(None);
    };
    let docker = docker?;
    docker.build_loggen_image(&bins)?;
    Ok(Some(DockerRig {
        bins,
        rsyslog_bin,
        docker,
    }))
}

/// What every end-to-end test on json-file logs it writes itself needs: the static binaries,
/// rsyslog, and an empty fake Docker root (`<root>/containers`) and pods root.
pub struct FileRig {
    /// `SLUICE_BIN_DIR`: the static `sluice-collector`.
    pub bins: PathBuf,
    /// The rsyslogd binary.
    pub rsyslog_bin: PathBuf,
    /// The fake Docker root.
    pub root: tempfile::TempDir,
    /// The (empty) pods root.
    pub pods: tempfile::TempDir,
}

/// Start a [`FileRig`] for `test`: `Ok(None)` after a loud SKIPPED banner when a part is
/// missing locally (with `SLUICE_REQUIRE_ALL=1` a missing part fails the test instead).
pub fn file_rig(test: &str) -> Result<Option<FileRig>> {
    use crate::support::{bin_dir, need, temp_dir};
    let Some(bins) = need(test, bin_dir()) else {
        return Ok(None);
    };
    let Some(rsyslog_bin) = need(test, crate::syslog::Rsyslog::available()) else {
        return Ok(None);
    };
    let (root, pods) = (temp_dir("sluice-docker-root-")?, temp_dir("sluice-pods-")?);
    fs::create_dir_all(root.path().join("containers"))?;
    Ok(Some(FileRig {
        bins,
        rsyslog_bin,
        root,
        pods,
    }))
}
