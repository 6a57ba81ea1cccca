//! The `sluice-collector` binary under test.
//!
//! [`Collector::start`] writes the config file, spawns
//! `sluice-collector --config FILE --state-dir DIR --listen 127.0.0.1:PORT --node-name NODE` and
//! waits for `/readyz`. The state dir survives restarts (that is the point of the restart tests);
//! everything lives in one temp dir removed on drop, after the process is stopped.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::support::{Daemon, free_port, temp_dir, wait_until};

/// The node name the harness gives the collector (what syslog HOSTNAME shows by default).
pub const NODE: &str = "test-node";

/// How a cluster-mode collector finds its node config: the API server, as a restricted identity.
#[derive(Clone, Debug)]
pub struct ClusterArgs {
    /// The node it stands for.
    pub node: String,
    /// The sluice namespace.
    pub namespace: String,
    /// Its identity's kubeconfig.
    pub kubeconfig: PathBuf,
    /// Docker's data root (the node's logs).
    pub docker_root: PathBuf,
}

/// A collector process and its files.
#[derive(Debug)]
pub struct Collector {
    bin: PathBuf,
    cluster: Option<ClusterArgs>,
    config: PathBuf,
    state: PathBuf,
    port: u16,
    daemon: Option<Daemon>,
    starts: u32,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Collector {
    /// Write `config_yaml`, start the collector from `bin_dir`, and wait until it is ready.
    pub fn start(bin_dir: &Path, config_yaml: &str) -> Result<Self> {
        Self::launch(bin_dir, Some(config_yaml), None, None, Vec::new())
    }

    /// As [`Collector::start`], with the state directory at `state` (else in its own temp dir).
    pub fn start_with_state(bin_dir: &Path, config_yaml: &str, state: Option<&Path>) -> Result<Self> {
        Self::launch(bin_dir, Some(config_yaml), None, state, Vec::new())
    }

    /// Start a collector in cluster mode (no config file: its node's Secret through the API
    /// server) and wait until it is ready, which needs the API server or a saved config.
    pub fn start_cluster(bin_dir: &Path, cluster: ClusterArgs) -> Result<Self> {
        Self::launch(bin_dir, None, Some(cluster), None, Vec::new())
    }

    /// As [`Collector::start_cluster`], with more command-line arguments (e.g. the query API's).
    pub fn start_cluster_with(bin_dir: &Path, cluster: ClusterArgs, extra: &[String]) -> Result<Self> {
        Self::launch(bin_dir, None, Some(cluster), None, extra.to_vec())
    }

    fn launch(
        bin_dir: &Path,
        config_yaml: Option<&str>,
        cluster: Option<ClusterArgs>,
        state: Option<&Path>,
        extra: Vec<String>,
    ) -> Result<Self> {
        let dir = temp_dir("sluice-collector-")?;
        let config = dir.path().join("sluice.yaml");
        let state = state.map_or_else(|| dir.path().join("state"), Path::to_owned);
        fs::create_dir_all(&state)?;
        if let Some(yaml) = config_yaml {
            fs::write(&config, yaml)?;
        }
        let mut c = Self {
            bin: bin_dir.join("sluice-collector"),
            cluster,
            config,
            state,
            port: free_port(),
            daemon: None,
            starts: 0,
            dir,
            extra,
        };
        c.spawn()?;
        Ok(c)
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let mut cmd = Command::new(&self.bin);
        match &self.cluster {
            None => {
                cmd.arg("--config").arg(&self.config).arg("--node-name").arg(NODE);
            }
            Some(c) => {
                cmd.arg("--node-name")
                    .arg(&c.node)
                    .arg("--namespace")
                    .arg(&c.namespace)
                    .arg("--kubeconfig")
                    .arg(&c.kubeconfig)
                    .arg("--pod-name")
                    .arg(format!("sluice-collector-{}-{}", c.node, self.starts))
                    .arg("--docker-root")
                    .arg(&c.docker_root);
            }
        }
        cmd.arg("--state-dir")
            .arg(&self.state)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--grace-period")
            .arg("10")
            // The tests' receivers listen on this host's loopback, refused by default.
            .arg("--allow-destinations")
            .arg("127.0.0.0/8,::1/128")
            .args(&self.extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let log = self.dir.path().join("collector.log");
        let header = format!("----- start #{} -----\n", self.starts);
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?
            .write_all(header.as_bytes())?;
        let mut daemon = Daemon::spawn("sluice-collector", cmd, &log)?;
        daemon.grace = Duration::from_secs(30); // longer than --grace-period: let it finish
        self.daemon = Some(daemon);
        self.wait_ready()
    }

    /// Poll `/readyz` until it answers 200.
    pub fn wait_ready(&mut self) -> Result<()> {
        let port = self.port;
        let result = wait_until(
            "the collector's /readyz",
            Duration::from_secs(30),
            || get(port, "/readyz").ok().filter(|(status, _)| *status == 200),
            || self.log_tail(20),
        );
        if let Some(status) = self.daemon.as_mut().and_then(Daemon::try_wait) {
            bail!("the collector exited with {status}:\n{}", self.log_tail(30));
        }
        result.map(|_| ())
    }

    /// Replace the config file (atomically: write a temp file, then rename it over the old one).
    pub fn write_config(&self, yaml: &str) -> Result<()> {
        let tmp = self.config.with_extension("yaml.tmp");
        fs::write(&tmp, yaml)?;
        fs::rename(&tmp, &self.config).context("replacing the config file")
    }

    /// The running process's id (for its CPU figures).
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().and_then(Daemon::pid)
    }

    /// The port of `/metrics`, `/healthz` and `/readyz`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What `/readyz` says now (status, body).
    pub fn readyz(&self) -> Result<(u16, String)> {
        get(self.port, "/readyz")
    }

    /// The config file's path.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// SIGTERM and wait (up to 60 s) for a graceful exit; returns the exit status.
    pub fn sigterm(&mut self) -> Result<ExitStatus> {
        let mut daemon = self.daemon.take().context("the collector is not running")?;
        match daemon.terminate(Duration::from_secs(60)) {
            Some(status) => Ok(status),
            None => {
                daemon.kill();
                bail!(
                    "the collector did not exit within 60 s of SIGTERM:\n{}",
                    self.log_tail(30)
                )
            }
        }
    }

    /// SIGKILL (no chance to clean up).
    pub fn sigkill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.kill();
        }
    }

    /// SIGSTOP/SIGCONT: a stopped collector reads, sends and looks at nothing until continued.
    pub fn pause(&self, paused: bool) {
        if let Some(daemon) = &self.daemon {
            daemon.signal(if paused { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    /// Start again with the same config and state dir.
    pub fn restart(&mut self) -> Result<()> {
        if self.daemon.is_some() {
            bail!("restart() needs a stopped collector");
        }
        self.spawn()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(|d| d.try_wait().is_none())
    }

    /// Scrape `/metrics` into `name{labels} → value` (labels as printed, sorted by Prometheus).
    pub fn metrics(&self) -> Result<BTreeMap<String, f64>> {
        let (status, body) = get(self.port, "/metrics")?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(parse_metrics(&body))
    }

    /// One metric's value (0 when absent), e.g. `metric("sluice_collector_lines_delivered_total{drain=\"a\"}")`.
    pub fn metric(&self, key: &str) -> f64 {
        self.metrics()
            .ok()
            .and_then(|m| m.get(key).copied())
            .unwrap_or(0.0)
    }

    /// The sum of a metric over all label sets whose labels contain every `name="value"` in `labels`.
    pub fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let Ok(metrics) = self.metrics() else { return 0.0 };
        metrics
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .filter(|(k, _)| labels.iter().all(|(l, v)| k.contains(&format!("{l}=\"{v}\""))))
            .map(|(_, v)| v)
            .sum()
    }

    /// The last `count` lines of the collector's log (all runs).
    pub fn log_tail(&self, count: usize) -> String {
        let text = fs::read_to_string(self.dir.path().join("collector.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(count)..].join("\n")
    }

    /// The whole log of the collector (all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("collector.log")).unwrap_or_default()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        // `SLUICE_TEST_LOGS=DIR` keeps every collector's whole log, for chasing rare failures.
        if let Some(keep) = std::env::var_os("SLUICE_TEST_LOGS") {
            let name = self.dir.path().file_name().unwrap_or_default().to_string_lossy();
            let _ = fs::create_dir_all(&keep);
            let _ = fs::copy(
                self.dir.path().join("collector.log"),
                std::path::Path::new(&keep).join(format!("{name}.log")),
            );
        }
        // A failing test shows what the collector said, and which state files it left.
        if std::thread::panicking() {
            let state: Vec<String> = fs::read_dir(&self.state)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            eprintln!(
                "----- sluice-collector log (last 60 lines; state dir: {state:?}) -----\n{}",
                self.log_tail(60)
            );
        }
    }
}

/// Parse the Prometheus text format into `series → value` (comments skipped).
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A minimal HTTP/1.1 GET on 127.0.0.1 (no client library needed): (status, body).
pub fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    // Each chunk: hex size, CRLF, data, CRLF; a zero size ends the body.
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_parses() {
        let m = parse_metrics("# HELP x y\n# TYPE x counter\nx_total{drain=\"a\"} 3\ny 1.5\n");
        assert_eq!(m["x_total{drain=\"a\"}"], 3.0);
        assert_eq!(m["y"], 1.5);
    }

    #[test]
    fn chunked_bodies_decode() {
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }
}
