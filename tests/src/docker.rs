//! Our own Docker daemon, with its own data root, for tests that need Docker's real json-file logs.
//!
//! Invariants: the daemon lives in a fresh temp dir (socket, data root, exec root, pid file), runs
//! with no network setup of its own (`--bridge=none`, no iptables) and the `vfs` storage driver, and
//! is stopped with its containerd child (the whole process group) when [`Docker`] drops; leftover
//! mounts under the temp dir are unmounted before the dir is removed. Images are built `FROM
//! scratch` from the static `loggen` binary, so no registry is needed.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::support::{Daemon, Missing, program, run, temp_dir, wait_until};

/// The name of the image [`Docker::build_loggen_image`] builds.
pub const LOGGEN_IMAGE: &str = "sluice-loggen:test";

/// A running Docker daemon of our own.
#[derive(Debug)]
pub struct Docker {
    daemon: Option<Daemon>,
    cli: PathBuf,
    socket: PathBuf,
    root: PathBuf,
    dir: Option<tempfile::TempDir>,
}

/// How to run one loggen container.
#[derive(Clone, Debug, Default)]
pub struct RunSpec {
    /// Container name.
    pub name: String,
    /// Container labels.
    pub labels: BTreeMap<String, String>,
    /// Arguments to `loggen`.
    pub args: Vec<String>,
    /// `--log-opt max-size` (e.g. "100k"); none means no rotation.
    pub max_size: Option<String>,
    /// `--log-opt max-file`.
    pub max_file: Option<u32>,
    /// `--log-opt compress=true`: rotated files are gzipped (`<id>-json.log.N.gz`).
    pub compress: bool,
}

/// Which binaries this harness needs, or what is missing.
pub fn available() -> Result<(PathBuf, PathBuf), Missing> {
    let dockerd = program("/usr/sbin/dockerd", "docker.io")?;
    // Debian's client matches Debian's daemon; fall back to whatever `docker` is installed.
    let cli =
        program("/usr/bin/docker", "docker.io").or_else(|_| program("/usr/local/bin/docker", "docker.io"))?;
    if !nix_is_root() {
        return Err(Missing::new("root", "starting dockerd needs root"));
    }
    Ok((dockerd, cli))
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Docker {
    /// Start a daemon in a fresh temp dir and wait until it answers.
    pub fn start(dockerd: &Path, cli: &Path) -> Result<Self> {
        let dir = temp_dir("sluice-docker-")?;
        let d = dir.path();
        let (socket, root) = (d.join("docker.sock"), d.join("root"));
        let mut cmd = Command::new(dockerd);
        cmd.arg("--storage-driver=vfs")
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--shutdown-timeout=2",
            ])
            .arg(format!("--host=unix://{}", socket.display()))
            .arg(format!("--data-root={}", root.display()))
            .arg(format!("--exec-root={}", d.join("exec").display()))
            .arg(format!("--pidfile={}", d.join("docker.pid").display()));
        let daemon = Daemon::spawn("dockerd", cmd, &d.join("dockerd.log"))?;
        let mut docker = Docker {
            daemon: Some(daemon),
            cli: cli.into(),
            socket,
            root,
            dir: Some(dir),
        };
        let ready = wait_until(
            "dockerd to answer",
            Duration::from_secs(60),
            || {
                docker
                    .cli()
                    .arg("version")
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
            },
            || docker.daemon.as_ref().map(|d| d.log_tail(15)).unwrap_or_default(),
        );
        if let Err(e) = ready {
            docker.stop();
            return Err(e);
        }
        Ok(docker)
    }

    /// Start a daemon when the parts exist, or say what is missing.
    pub fn start_if_available() -> Result<Result<Self>, Missing> {
        let (dockerd, cli) = available()?;
        Ok(Self::start(&dockerd, &cli))
    }

    /// A `docker` command talking to this daemon.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(&self.cli);
        c.arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .env("DOCKER_BUILDKIT", "0");
        c
    }

    /// The `unix://…` address of this daemon (for `DOCKER_HOST`).
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The daemon's data root (what the collector's `sources.dockerRoot` points at).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Build [`LOGGEN_IMAGE`] `FROM scratch` with `bin_dir/loggen` as its entrypoint.
    pub fn build_loggen_image(&self, bin_dir: &Path) -> Result<()> {
        let ctx = temp_dir("sluice-image-")?;
        fs::copy(bin_dir.join("loggen"), ctx.path().join("loggen")).context("copying loggen")?;
        fs::write(
            ctx.path().join("Dockerfile"),
            "FROM scratch\nCOPY loggen /loggen\nENTRYPOINT [\"/loggen\"]\n",
        )?;
        run(self
            .cli()
            .args(["build", "-q", "-t", LOGGEN_IMAGE])
            .arg(ctx.path()))?;
        Ok(())
    }

    /// Start a container from [`LOGGEN_IMAGE`] (detached, no network, json-file logs) and return
    /// its full id.
    pub fn run(&self, spec: &RunSpec) -> Result<String> {
        let mut cmd = self.cli();
        cmd.args([
            "run",
            "-d",
            "--network",
            "none",
            "--log-driver",
            "json-file",
            "--name",
            &spec.name,
        ]);
        for (k, v) in &spec.labels {
            cmd.arg("--label").arg(format!("{k}={v}"));
        }
        if let Some(size) = &spec.max_size {
            cmd.arg("--log-opt").arg(format!("max-size={size}"));
        }
        if let Some(n) = spec.max_file {
            cmd.arg("--log-opt").arg(format!("max-file={n}"));
        }
        if spec.compress {
            cmd.arg("--log-opt").arg("compress=true");
        }
        cmd.arg(LOGGEN_IMAGE).args(&spec.args);
        let id = run(&mut cmd)?.trim().to_owned();
        if id.len() != 64 {
            bail!("docker run printed {id:?}, not a container id");
        }
        Ok(id)
    }

    /// Wait for a container to exit; returns its exit code.
    pub fn wait(&self, id: &str) -> Result<i32> {
        let out = run(self.cli().args(["wait", id]))?;
        out.trim()
            .parse()
            .with_context(|| format!("docker wait printed {out:?}"))
    }

    /// Kill a container (SIGKILL) and wait until it is gone from `docker ps`.
    pub fn kill(&self, id: &str) -> Result<()> {
        run(self.cli().args(["kill", id]))?;
        self.wait(id).map(|_| ())
    }

    /// Remove a container (with its log files).
    pub fn rm(&self, id: &str) -> Result<()> {
        run(self.cli().args(["rm", "-f", id])).map(|_| ())
    }

    /// The json-file log of a container.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.root
            .join("containers")
            .join(id)
            .join(format!("{id}-json.log"))
    }

    /// Stop the daemon (and its containerd) and unmount what it left behind.
    pub fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.grace = Duration::from_secs(20);
            if daemon.terminate(Duration::from_secs(20)).is_none() {
                daemon.kill();
            }
        }
        if let Some(dir) = self.dir.take() {
            unmount_under(dir.path());
            if let Err(e) = dir.close() {
                eprintln!("could not remove the Docker temp dir: {e}");
            }
        }
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lazily unmount every mount point below `dir` (deepest first), so the dir can be removed.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/self/mounts") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}
