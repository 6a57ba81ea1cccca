//! The running `kube-harness up` process and how it is stopped.
//!
//! Invariants: a [`HarnessProcess`] owns exactly one child it spawned itself
//! and signals it only by its pid while it is unreaped (so the pid cannot
//! belong to anyone else); dropping it stops and reaps the child (SIGTERM,
//! then SIGKILL after [`GRACE`]), also while a failing test unwinds.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use rustix::process::{Pid, Signal, kill_process};

/// How long a stopping harness may drain before it is killed.
pub const GRACE: Duration = Duration::from_secs(10);

/// Errors of starting or stopping the harness process.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The harness binary could not be started.
    #[error("starting {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The log file could not be created.
    #[error("creating the harness log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A harness started with `--rm-dir` cannot be paused and resumed.
    #[error(
        "this harness deletes its directory when it stops; start it with StartOptions::restartable to pause it"
    )]
    NotRestartable,
    /// Signalling or reaping the process failed.
    #[error("stopping the harness (pid {pid}): {source}")]
    Stop {
        /// The harness pid.
        pid: u32,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A spawned `kube-harness up`, stopped on drop.
#[derive(Debug)]
pub struct HarnessProcess {
    child: Option<Child>,
    pid: u32,
}

impl HarnessProcess {
    /// Spawns `bin up --dir dir …` with stdout and stderr going to `log`.
    pub fn spawn(bin: &Path, dir: &Path, log: &Path, extra: &[&str]) -> Result<Self, Error> {
        let log_err = |source| Error::Log {
            path: log.to_owned(),
            source,
        };
        let out = File::create(log).map_err(log_err)?;
        let err = out.try_clone().map_err(log_err)?;
        let child = Command::new(bin)
            .arg("up")
            .arg("--dir")
            .arg(dir)
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|source| Error::Spawn {
                bin: bin.to_owned(),
                source,
            })?;
        Ok(Self {
            pid: child.id(),
            child: Some(child),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status if the process has already exited (it is then reaped).
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Stops the process (SIGTERM, SIGKILL after [`GRACE`]) and returns how it exited.
    pub fn stop(&mut self) -> Result<ExitStatus, Error> {
        let pid = self.pid;
        let stop_err = |source| Error::Stop { pid, source };
        let Some(mut child) = self.child.take() else {
            return Err(stop_err(std::io::Error::other("already stopped")));
        };
        if let Some(status) = child.try_wait().map_err(stop_err)? {
            return Ok(status);
        }
        // The child is unreaped here, so the pid is still ours to signal.
        if let Some(p) = Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)) {
            kill_process(p, Signal::TERM).map_err(|e| stop_err(e.into()))?;
        }
        // Poll for a clean exit within the grace period, then force it.
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().map_err(stop_err)? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().map_err(stop_err)?;
        child.wait().map_err(stop_err)
    }
}

impl Drop for HarnessProcess {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Err(e) = self.stop()
        {
            eprintln!("sluice-kube-harness: {e}");
        }
    }
}
