//! Finding or building the `kube-harness` Go binary.
//!
//! Invariants: the binary is resolved at most once per process (later calls
//! get the cached path); `SLUICE_KUBE_HARNESS_BIN` wins over building; the
//! only condition reported as [`Error::Unavailable`] (a skip, unless
//! `SLUICE_REQUIRE_ALL=1`) is a machine without Go: a build that starts and
//! fails is a real failure.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::OnceCell;

/// Environment variable naming a prebuilt harness binary (skips `build.sh`).
pub const BIN_ENV: &str = "SLUICE_KUBE_HARNESS_BIN";

/// `build.sh`'s exit code when no Go toolchain is installed.
const EXIT_NO_GO: i32 = 127;

/// Why the harness binary could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The machine cannot build the harness (no Go toolchain).
    #[error("the kube-apiserver harness cannot be built on this machine: {reason}")]
    Unavailable {
        /// What is missing, for the user.
        reason: String,
    },
    /// `SLUICE_KUBE_HARNESS_BIN` names something that is not a file.
    #[error("{BIN_ENV}={path} is not an existing file")]
    BadOverride {
        /// The value of the variable.
        path: PathBuf,
    },
    /// `build.sh` could not be run at all.
    #[error("running {script}: {source}")]
    Spawn {
        /// The build script.
        script: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `build.sh` failed.
    #[error("{script} failed ({status}); its output:\n{output}")]
    BuildFailed {
        /// The build script.
        script: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its stderr (the Go compiler's messages).
        output: String,
    },
}

/// Returns the harness binary, building it on first use.
pub async fn harness_binary() -> Result<PathBuf, Error> {
    static BIN: OnceCell<PathBuf> = OnceCell::const_new();
    BIN.get_or_try_init(resolve).await.cloned()
}

/// The Kubernetes version the harness pins (from its `go.mod`, e.g. `v1.34.3`).
pub fn pinned_kubernetes_version() -> &'static str {
    include_str!("../go.mod")
        .lines()
        .find_map(|line| line.trim().strip_prefix("k8s.io/kubernetes "))
        .map(str::trim)
        .expect("invariant: tests/kube-harness/go.mod requires k8s.io/kubernetes")
}

async fn resolve() -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os(BIN_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::BadOverride { path })
        };
    }
    build(&Path::new(env!("CARGO_MANIFEST_DIR")).join("build.sh")).await
}

/// Runs `build.sh`: its progress is echoed live to our stderr (a cold build
/// takes many minutes and the user should see why) and kept for the error;
/// its stdout is the binary's path.
async fn build(script: &Path) -> Result<PathBuf, Error> {
    eprintln!(
        "sluice-kube-harness: ensuring the kube-apiserver harness is built ({})",
        script.display()
    );
    let spawn_err = |source| Error::Spawn {
        script: script.to_owned(),
        source,
    };
    let mut child = Command::new("bash")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let stdout = child.stdout.take().expect("invariant: stdout is piped");
    let stderr = child.stderr.take().expect("invariant: stderr is piped");
    let collect_stdout = tokio::spawn(async move {
        let mut out = String::new();
        tokio::io::BufReader::new(stdout)
            .read_to_string(&mut out)
            .await
            .map(|_| out)
    });
    // Echo and keep every stderr line until the script closes it.
    let mut log = String::new();
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    while let Some(line) = lines.next_line().await.map_err(spawn_err)? {
        eprintln!("{line}");
        log.push_str(&line);
        log.push('\n');
    }
    let status = child.wait().await.map_err(spawn_err)?;
    let path = collect_stdout
        .await
        .map_err(|join| spawn_err(std::io::Error::other(join)))?
        .map_err(spawn_err)?;
    if status.code() == Some(EXIT_NO_GO) {
        return Err(Error::Unavailable {
            reason: log.trim().to_owned(),
        });
    }
    let path = path.trim();
    if !status.success() || path.is_empty() {
        return Err(Error::BuildFailed {
            script: script.to_owned(),
            status,
            output: log,
        });
    }
    Ok(PathBuf::from(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a stand-in for build.sh with the given body.
    fn script(dir: &tempfile::TempDir, body: &str) -> PathBuf {
        let path = dir.path().join("build.sh");
        std::fs::write(&path, body).expect("writing a test script");
        path
    }

    #[tokio::test]
    async fn no_go_is_unavailable_with_the_scripts_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = script(&dir, "echo 'no go here' >&2; exit 127\n");
        match build(&s).await {
            Err(Error::Unavailable { reason }) => assert_eq!(reason, "no go here"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_failing_build_is_a_failure_with_its_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = script(&dir, "echo 'main.go:1: syntax error' >&2; exit 1\n");
        match build(&s).await {
            Err(Error::BuildFailed { status, output, .. }) => {
                assert_eq!(status.code(), Some(1));
                assert_eq!(output, "main.go:1: syntax error\n");
            }
            other => panic!("expected BuildFailed, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn success_yields_the_printed_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = script(&dir, "echo progress >&2; echo /cache/bin/kube-harness-0123\n");
        assert_eq!(
            build(&s).await.expect("build"),
            PathBuf::from("/cache/bin/kube-harness-0123")
        );
    }

    #[test]
    fn pinned_version_comes_from_go_mod() {
        let v = pinned_kubernetes_version();
        assert!(v.starts_with("v1.") && v.split('.').count() == 3, "{v}");
        assert!(
            include_str!("../build.sh").contains(&format!("K8S_VERSION={v}\n")),
            "build.sh pins {v} too"
        );
    }
}
