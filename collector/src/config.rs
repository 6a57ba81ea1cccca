//! The node config from a file: loaded at start, watched, re-applied on change.
//!
//! Invariants:
//! * Only a config that parses and validates is ever handed on; a bad edit is logged with the
//!   offending field, counted (`config_reloads_total{result="rejected"}`), and the last good
//!   config keeps running.
//! * A change is noticed however the file is replaced: written in place, renamed over (editors),
//!   or swapped through a symlink (Kubernetes Secret and ConfigMap volumes). The parent directory
//!   is watched, and a slow poll backs the watcher up, since inotify can miss events.
//! * The same content is never applied twice (changes are compared on the parsed value).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use sluice_api::NodeConfig;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::metrics::Metrics;

/// The node config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a valid node config.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        #[source]
        source: sluice_api::node_config::ConfigError,
    },
    /// The file watcher could not be set up.
    #[error("cannot watch {path}: {source}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: notify::Error,
    },
}

/// Read and validate the config file.
pub fn load(path: &Path) -> Result<NodeConfig, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    NodeConfig::from_yaml(&text).map_err(|source| Error::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// How often the file is re-read even without a watcher event.
const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Editors write a file in several steps; wait this long after an event before reading.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watch `path` and publish every new valid config on `tx`, until `cancel`.
///
/// `tx` starts out holding the config loaded at start.
pub async fn watch(
    path: PathBuf,
    tx: watch::Sender<Arc<NodeConfig>>,
    metrics: Metrics,
    cancel: CancellationToken,
) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let (event_tx, mut events) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
        // Only a wake-up: the file itself is the truth. A full channel already holds a wake-up.
        let _ = event_tx.try_send(());
    })
    .map_err(|source| Error::Watch {
        path: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| Error::Watch {
            path: dir.clone(),
            source,
        })?;
    info!(path = %path.display(), "watching the config file for changes");

    let mut poll = tokio::time::interval(POLL_INTERVAL);
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            _ = events.recv() => tokio::time::sleep(DEBOUNCE).await,
            _ = poll.tick() => {}
        }
        match load(&path) {
            Ok(config) => {
                last_error = None;
                if **tx.borrow() != config {
                    info!(path = %path.display(), drains = config.drains.len(), "config changed; applying");
                    tx.send_replace(Arc::new(config));
                }
            }
            Err(e) => {
                let message = e.to_string();
                // Say it once per distinct problem, not on every poll.
                if last_error.as_deref() != Some(message.as_str()) {
                    error!(error = %message, "config change rejected; the last good config keeps running");
                    metrics.config_reloads.with_label_values(&["rejected"]).inc();
                    last_error = Some(message);
                }
            }
        }
    }
}

/// Log a warning for settings that only take effect at start.
pub fn warn_about_restart_only_changes(old: &NodeConfig, new: &NodeConfig) {
    if old.sources != new.sources || old.limits != new.limits || old.node != new.node {
        warn!("changes to `sources`, `limits` or `node` take effect at the next restart");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "version: 1\ndrains:\n  - name: a\n    url: syslog://127.0.0.1:514\n";

    #[test]
    fn load_names_the_file_and_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sluice.yaml");
        std::fs::write(&path, GOOD.replace("514", "99999")).expect("write");
        let message = load(&path).expect_err("bad port").to_string();
        assert!(
            message.contains("sluice.yaml") && message.contains("drains[0].url"),
            "{message}"
        );
        let missing = load(&dir.path().join("nope.yaml"))
            .expect_err("missing")
            .to_string();
        assert!(missing.contains("nope.yaml"), "{missing}");
    }

    #[tokio::test]
    async fn watch_applies_good_changes_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sluice.yaml");
        std::fs::write(&path, GOOD).expect("write");
        let metrics = Metrics::new().expect("metrics");
        let (tx, mut rx) = watch::channel(Arc::new(load(&path).expect("load")));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watch(path.clone(), tx, metrics.clone(), cancel.clone()));

        // A bad edit is rejected: nothing is published.
        std::fs::write(&path, GOOD.replace("syslog://", "gopher://")).expect("write");
        let rejected = async {
            while metrics.config_reloads.with_label_values(&["rejected"]).get() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), rejected)
            .await
            .expect("rejection counted");
        assert!(!rx.has_changed().expect("sender alive"));

        // A good edit, written by rename like an editor does, is published.
        let tmp = dir.path().join(".sluice.yaml.tmp");
        std::fs::write(&tmp, GOOD.replace("name: a", "name: b")).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("change seen")
            .expect("alive");
        assert_eq!(rx.borrow().drains[0].name, "b");

        cancel.cancel();
        task.await.expect("join").expect("watch ends cleanly");
    }
}
