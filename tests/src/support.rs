//! Process guards, free ports, polling, and the policy for missing parts.
//!
//! Invariants: a [`Daemon`] is always stopped when dropped (SIGTERM to its process group, SIGKILL
//! after a grace period), so no test leaves a process behind, even on panic. [`wait_until`] polls;
//! it never asserts on elapsed time, a timeout only bounds how long a test waits for a condition.

use std::{
    fs,
    net::{TcpListener, UdpSocket},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result, bail};

/// A part of the test environment that is not installed or not built.
#[derive(Debug, thiserror::Error)]
#[error("{part} is not available: {why}")]
pub struct Missing {
    /// What is missing (e.g. "dockerd").
    pub part: String,
    /// Why, and how to get it.
    pub why: String,
}

impl Missing {
    /// A missing part with an explanation.
    pub fn new(part: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            part: part.into(),
            why: why.into(),
        }
    }
}

/// Whether missing parts fail the test (`SLUICE_REQUIRE_ALL=1`, set by `scripts/test.sh`).
pub fn require_all() -> bool {
    std::env::var("SLUICE_REQUIRE_ALL").is_ok_and(|v| v == "1" || v == "true")
}

/// Unwrap a part, or handle its absence: panic under `SLUICE_REQUIRE_ALL=1`, otherwise print a
/// loud skip message and return `None` (the test then returns early).
pub fn need<T>(test: &str, part: Result<T, Missing>) -> Option<T> {
    match part {
        Ok(value) => Some(value),
        Err(missing) if require_all() => {
            panic!("{test}: {missing} (SLUICE_REQUIRE_ALL=1, so this fails instead of skipping)")
        }
        Err(missing) => {
            eprintln!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !!! SKIPPED {test}: {missing}\n\
                 !!! run scripts/test.sh (or scripts/setup.sh + scripts/build.sh) to run it\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            None
        }
    }
}

/// The directory of the static release binaries (`SLUICE_BIN_DIR`, set by `scripts/build.sh`).
pub fn bin_dir() -> Result<PathBuf, Missing> {
    let dir = std::env::var_os("SLUICE_BIN_DIR")
        .map(PathBuf::from)
        .ok_or_else(|| Missing::new("SLUICE_BIN_DIR", "not set; run `source scripts/build.sh` first"))?;
    for bin in ["sluice-collector", "loggen"] {
        if !dir.join(bin).is_file() {
            return Err(Missing::new(
                bin,
                format!("{} does not exist; run scripts/build.sh", dir.join(bin).display()),
            ));
        }
    }
    Ok(dir)
}

/// A path to an installed program, or [`Missing`].
pub fn program(path: &str, package: &str) -> Result<PathBuf, Missing> {
    let p = PathBuf::from(path);
    if p.is_file() {
        Ok(p)
    } else {
        Err(Missing::new(
            path,
            format!("not installed; scripts/setup.sh installs {package}"),
        ))
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("invariant: the loopback interface can bind an ephemeral port")
}

/// A port free for both TCP and UDP on 127.0.0.1.
pub fn free_udp_port() -> u16 {
    // Retry until the TCP-free port is also UDP-free (almost always the first try).
    loop {
        let port = free_port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Poll `check` every 50 ms until it returns `Some`, or fail after `timeout` with `what` and the
/// last state `describe` gives (so a failing test says how far it got).
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> Result<T> {
    let start = SystemTime::now();
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if start.elapsed().unwrap_or_default() > timeout {
            bail!(
                "timed out after {timeout:?} waiting for {what}; last state: {}",
                describe()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A child process in its own process group, stopped (group-wide) when dropped.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    /// Seconds between SIGTERM and SIGKILL when stopping.
    pub grace: Duration,
}

impl Daemon {
    /// Spawn `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("{log:?}"))?;
        let err = out.try_clone()?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Self {
            name: name.into(),
            child: Some(child),
            log: log.into(),
            grace: Duration::from_secs(10),
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `count` lines of its output (for error messages).
    pub fn log_tail(&self, count: usize) -> String {
        let text = fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(count)..].join("\n")
    }

    /// Whether it exited; `Some(status)` once it has.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Send a signal to the process itself (not its group).
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) with a pid we own; no memory is shared.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// SIGTERM, wait up to `timeout` for exit, and return the exit status (`None` if it did not exit).
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        let start = SystemTime::now();
        while start.elapsed().unwrap_or_default() < timeout {
            if let Some(status) = self.try_wait() {
                self.kill_group();
                self.child = None;
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL the whole process group and reap the process.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        self.kill_group();
        let status = self.child.as_mut().and_then(|c| c.wait().ok());
        self.child = None;
        status
    }

    fn kill_group(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the process group we created for this child.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
    }

    /// The daemon's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let grace = self.grace;
            if self.terminate(grace).is_none() {
                eprintln!(
                    "{} did not stop within {grace:?} of SIGTERM; killing it",
                    self.name
                );
                self.kill();
            }
        }
    }
}

/// Run a command to completion, failing with its output when it does not succeed.
pub fn run(command: &mut Command) -> Result<String> {
    let out = command.output().with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A fresh temporary directory, removed on drop.
pub fn temp_dir(prefix: &str) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix(prefix).tempdir()?)
}

pub use crate::tmpfs::Tmpfs;
