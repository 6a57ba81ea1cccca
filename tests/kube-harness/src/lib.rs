//! A real kube-apiserver (with embedded etcd) for sluice's tests.
//!
//! [`KubeHarness::start`] builds the Go program next to this crate once per
//! machine (see `build.sh`), starts it in a fresh temporary directory on free
//! loopback ports, waits for its ready marker and hands out [`kube::Client`]s:
//! an admin ([`KubeHarness::client`], `system:masters`) and restricted
//! identities for RBAC tests ([`KubeHarness::client_as`]).
//!
//! Invariants: every harness lives in its own temporary directory and is
//! stopped by pid when its [`KubeHarness`] is dropped (also when a test
//! fails); the shared harness ([`KubeHarness::shared`]) stops by itself when
//! the test process exits, because the Go program watches its parent.
//! Clients are built per call, so a client never outlives the tokio runtime
//! it was made on (each `#[tokio::test]` has its own runtime).
//!
//! By default the control plane is a bare apiserver: no controller-manager,
//! scheduler or kubelet, so no garbage collection, namespaces stay
//! Terminating, no `default` ServiceAccounts (ServiceAccount admission is
//! off), pods never run. [`StartOptions::controllers`] adds a
//! kube-controller-manager with the named controllers.

mod binary;
mod node;
mod options;
pub mod pods;
mod process;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::OnceCell;

pub use binary::{BIN_ENV, Error as BinaryError, harness_binary, pinned_kubernetes_version};
pub use node::{CGROUP, KubeNode, NODE_IP, NODE_NAME, NodeError, NodeOptions, POD_LOGS_DIR, STATE_DIR};
pub use options::{GC_AND_NAMESPACE_CONTROLLERS, StartOptions};
pub use process::Error as ProcessError;
use process::HarnessProcess;

/// Environment variable that turns "harness unavailable" into a failure.
pub const REQUIRE_ALL_ENV: &str = "SLUICE_REQUIRE_ALL";
/// Environment variable overriding the readiness timeout (seconds).
pub const READY_TIMEOUT_ENV: &str = "SLUICE_KUBE_HARNESS_READY_TIMEOUT_SECS";
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(180);
/// Attempts when the apiserver loses a race for its free port.
const PORT_RACE_ATTEMPTS: usize = 3;

/// Errors of the harness driver.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Obtaining the binary failed (or is impossible here: see [`Error::is_unavailable`]).
    #[error(transparent)]
    Binary(#[from] binary::Error),
    /// Starting or stopping the process failed.
    #[error(transparent)]
    Process(#[from] process::Error),
    /// The temporary directory could not be created.
    #[error("creating a temporary directory for the harness: {0}")]
    TempDir(#[source] std::io::Error),
    /// The harness exited before it was ready.
    #[error("the kube-apiserver harness exited ({status}) before it was ready; last lines of {log}:\n{tail}")]
    Exited {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// The harness did not become ready in time.
    #[error(
        "the kube-apiserver harness was not ready after {waited:?} ({READY_TIMEOUT_ENV} raises this); last lines of {log}:\n{tail}"
    )]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// The ready marker is not what the Go program writes.
    #[error("reading the ready marker {path}: {source}")]
    ReadyMarker {
        /// The marker file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// `mint-user` failed.
    #[error("minting a kubeconfig for user {user:?}: {message}")]
    MintUser {
        /// The requested user.
        user: String,
        /// What went wrong.
        message: String,
    },
    /// A kubeconfig could not be turned into a client.
    #[error("building a client from {path}: {source}")]
    Client {
        /// The kubeconfig.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// True when this machine cannot build the harness at all (no Go); tests
    /// may skip loudly then, unless `SLUICE_REQUIRE_ALL=1`.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Binary(binary::Error::Unavailable { .. }))
    }
}

/// What the Go program writes into its ready marker.
#[derive(Debug, Clone, serde::Deserialize)]
struct ReadyInfo {
    server: String,
    kubeconfig: PathBuf,
    version: String,
}

/// A running kube-apiserver + etcd; stopped (by pid) when dropped.
#[derive(Debug)]
pub struct KubeHarness {
    process: HarnessProcess,
    info: ReadyInfo,
    bin: PathBuf,
    dir: PathBuf,
    /// Removes the directory on drop, after `process` has stopped the
    /// harness (fields drop in declaration order). `None` when shared.
    _tempdir: Option<tempfile::TempDir>,
    minted: AtomicUsize,
    /// The arguments after `up --dir DIR` it was started with (for [`KubeHarness::resume`]).
    args: Vec<String>,
}

impl KubeHarness {
    /// Builds (once) and starts a harness of its own for the caller.
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(&StartOptions::default()).await
    }

    /// [`KubeHarness::start`] with extra kube-apiserver flags (see
    /// [`StartOptions::apiserver_flags`]).
    pub async fn start_with_apiserver_flags(flags: &[&str]) -> Result<Self, Error> {
        let apiserver_flags = flags.iter().map(|f| (*f).to_owned()).collect();
        Self::start_with(&StartOptions {
            apiserver_flags,
            ..StartOptions::default()
        })
        .await
    }

    /// [`KubeHarness::start`] with options, e.g. a kube-controller-manager for
    /// garbage collection: `StartOptions::with_controllers(GC_AND_NAMESPACE_CONTROLLERS)`.
    pub async fn start_with(options: &StartOptions) -> Result<Self, Error> {
        Self::start_inner(false, options).await
    }

    /// The harness shared by the whole test binary, started on first use.
    /// It stops by itself when the test process exits.
    pub async fn shared() -> Result<&'static Self, Error> {
        static SHARED: OnceCell<KubeHarness> = OnceCell::const_new();
        SHARED
            .get_or_try_init(|| async { Self::start_inner(true, &StartOptions::default()).await })
            .await
    }

    /// [`KubeHarness::start`], or `None` after a loud skip message when this
    /// machine cannot build the harness, unless `SLUICE_REQUIRE_ALL=1`.
    pub async fn start_or_skip(test: &str) -> Result<Option<Self>, Error> {
        skip_if_unavailable(test, Self::start().await)
    }

    /// [`KubeHarness::start_with`] with the same skip rule as [`KubeHarness::start_or_skip`].
    pub async fn start_with_or_skip(test: &str, options: &StartOptions) -> Result<Option<Self>, Error> {
        skip_if_unavailable(test, Self::start_with(options).await)
    }

    /// [`KubeHarness::shared`] with the same skip rule as [`KubeHarness::start_or_skip`].
    pub async fn shared_or_skip(test: &str) -> Result<Option<&'static Self>, Error> {
        skip_if_unavailable(test, Self::shared().await)
    }

    async fn start_inner(shared: bool, options: &StartOptions) -> Result<Self, Error> {
        let bin = harness_binary().await?;
        // Retry only the one failure that is not ours: another process
        // taking the free port between the probe and the apiserver's bind.
        let mut attempt = 1;
        loop {
            match Self::launch(&bin, shared, options).await {
                Err(Error::Exited { tail, .. })
                    if attempt < PORT_RACE_ATTEMPTS && tail.contains("address already in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn launch(bin: &Path, shared: bool, options: &StartOptions) -> Result<Self, Error> {
        let tempdir = tempfile::Builder::new()
            .prefix("sluice-kube-harness-")
            .tempdir()
            .map_err(Error::TempDir)?;
        let dir = tempdir.path().to_owned();
        let log = dir.join("harness.log");
        // The harness deletes its own directory when it stops, so nothing is
        // left even when this process is killed (the shared harness relies on it).
        let controllers = format!("--controllers={}", options.controllers.join(","));
        let rm_dir = (!options.restartable).then_some("--rm-dir");
        let node_ip = options.node_ip.as_ref().map(|ip| format!("--node-ip={ip}"));
        let args: Vec<String> = rm_dir
            .into_iter()
            .chain([controllers.as_str()])
            .chain(node_ip.as_deref())
            .chain(["--"])
            .chain(options.apiserver_flags.iter().map(String::as_str))
            .map(str::to_owned)
            .collect();
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = HarnessProcess::spawn(bin, &dir, &log, &arg_refs)?;
        let info = wait_ready(&mut process, &dir.join("ready"), &log).await?;
        let tempdir = if shared {
            let _ = tempdir.keep();
            None
        } else {
            Some(tempdir)
        };
        Ok(Self {
            process,
            info,
            bin: bin.to_owned(),
            dir,
            _tempdir: tempdir,
            minted: AtomicUsize::new(0),
            args,
        })
    }

    /// Stops the API server (and its etcd) but keeps its directory, for
    /// [`KubeHarness::resume`]. Needs [`StartOptions::restartable`].
    pub fn pause(&mut self) -> Result<std::process::ExitStatus, Error> {
        if self.args.iter().any(|a| a == "--rm-dir") {
            return Err(Error::Process(process::Error::NotRestartable));
        }
        Ok(self.process.stop()?)
    }

    /// Starts the API server again after [`KubeHarness::pause`], on the same
    /// port with the same certificates and data, and waits until it is ready.
    pub async fn resume(&mut self) -> Result<(), Error> {
        let port = self.info.server.rsplit(':').next().unwrap_or_default().to_owned();
        let log = self.dir.join("harness.log");
        // A marker left by the stopped server would be taken for the new one's.
        let _ = std::fs::remove_file(self.dir.join("ready"));
        let mut args: Vec<&str> = vec!["--port", &port];
        args.extend(self.args.iter().map(String::as_str));
        let mut process = HarnessProcess::spawn(&self.bin, &self.dir, &log, &args)?;
        self.info = wait_ready(&mut process, &self.dir.join("ready"), &log).await?;
        self.process = process;
        Ok(())
    }

    /// A client with the admin identity (`system:masters`).
    pub async fn client(&self) -> Result<kube::Client, Error> {
        client_from(&self.info.kubeconfig).await
    }

    /// A client authenticated as `user` in `groups` (a client certificate
    /// from the harness CA). It is authorized for nothing beyond what RBAC
    /// grants it (plus the `system:authenticated` defaults).
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Result<kube::Client, Error> {
        client_from(&self.kubeconfig_for(user, groups).await?).await
    }

    /// Writes a kubeconfig for `user` in `groups` (as [`KubeHarness::client_as`])
    /// and returns its path, e.g. for a process under test.
    pub async fn kubeconfig_for(&self, user: &str, groups: &[&str]) -> Result<PathBuf, Error> {
        let n = self.minted.fetch_add(1, Ordering::Relaxed);
        let out = self.dir.join("users").join(format!("{n}.kubeconfig"));
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.arg("mint-user")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--user")
            .arg(user)
            .arg("--out")
            .arg(&out);
        for group in groups {
            cmd.arg("--group").arg(group);
        }
        let mint_err = |message: String| Error::MintUser {
            user: user.to_owned(),
            message,
        };
        let output = cmd.output().await.map_err(|e| mint_err(e.to_string()))?;
        if !output.status.success() {
            return Err(mint_err(
                String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            ));
        }
        Ok(out)
    }

    /// The admin kubeconfig (for processes under test: `KUBECONFIG=…`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.info.kubeconfig
    }

    /// The API server URL, `https://127.0.0.1:<port>` (with a node: `https://<node IP>:<port>`).
    pub fn server_url(&self) -> &str {
        &self.info.server
    }

    /// The version the running server reports, e.g. `v1.34.3`.
    pub fn version(&self) -> &str {
        &self.info.version
    }

    /// The harness process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The harness directory (certificates, etcd data, kubeconfigs, `harness.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the harness now and returns its exit status (0 after a clean
    /// shutdown). Dropping does the same, without reporting.
    pub fn stop(mut self) -> Result<std::process::ExitStatus, Error> {
        Ok(self.process.stop()?)
    }
}

/// Turns "cannot build here" into `Ok(None)` with a loud message, unless required.
fn skip_if_unavailable<T>(test: &str, result: Result<T, Error>) -> Result<Option<T>, Error> {
    skip_unless_required(test, result, std::env::var(REQUIRE_ALL_ENV).as_deref() == Ok("1"))
}

fn skip_unless_required<T>(test: &str, result: Result<T, Error>, required: bool) -> Result<Option<T>, Error> {
    match result {
        Err(e) if e.is_unavailable() && !required => {
            eprintln!(
                "\n!!!!!!!! SKIPPED {test}: {e}\n!!!!!!!! (install Go >= 1.24 via scripts/setup.sh; {REQUIRE_ALL_ENV}=1 makes this a failure)\n"
            );
            Ok(None)
        }
        other => other.map(Some),
    }
}

/// Polls for the ready marker until the process is ready, exits, or the timeout passes.
async fn wait_ready(process: &mut HarnessProcess, ready: &Path, log: &Path) -> Result<ReadyInfo, Error> {
    let timeout = std::env::var(READY_TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(DEFAULT_READY_TIMEOUT, Duration::from_secs);
    let started = Instant::now();
    loop {
        // The Go side writes the marker atomically: existing means complete.
        if let Ok(data) = std::fs::read(ready) {
            return serde_json::from_slice(&data).map_err(|source| Error::ReadyMarker {
                path: ready.to_owned(),
                source,
            });
        }
        if let Some(status) = process.try_exited() {
            return Err(Error::Exited {
                status,
                log: log.to_owned(),
                tail: log_tail(log),
            });
        }
        if started.elapsed() > timeout {
            return Err(Error::NotReady {
                waited: started.elapsed(),
                log: log.to_owned(),
                tail: log_tail(log),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last lines of the harness log, for error messages.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("(cannot read the log: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn client_from(path: &Path) -> Result<kube::Client, Error> {
    let client_err = |source: Box<dyn std::error::Error + Send + Sync>| Error::Client {
        path: path.to_owned(),
        source,
    };
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| client_err(e.into()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| client_err(e.into()))?;
    kube::Client::try_from(config).map_err(|e| client_err(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> Result<(), Error> {
        Err(binary::Error::Unavailable {
            reason: "no go".into(),
        }
        .into())
    }

    #[test]
    fn unavailable_skips_locally_and_fails_when_required() {
        assert!(matches!(
            skip_unless_required("t", unavailable(), false),
            Ok(None)
        ));
        let required = skip_unless_required("t", unavailable(), true);
        assert!(
            required.as_ref().is_err_and(Error::is_unavailable),
            "{required:?}"
        );
    }

    #[test]
    fn other_failures_never_skip() {
        let failed: Result<(), Error> = Err(Error::TempDir(std::io::Error::other("disk full")));
        assert!(matches!(
            skip_unless_required("t", failed, false),
            Err(Error::TempDir(_))
        ));
        assert!(matches!(skip_unless_required("t", Ok(7), false), Ok(Some(7))));
    }
}
