//! The node config from a file: loaded at start, watched, re-applied on change.
//!
//! Invariants:
//! * Only a config that parses and validates is ever handed on; a bad edit is logged with the
//!   offending field, counted (`config_reloads_total{result="rejected"}`), and the last good
//!   config keeps running.
//! * A file is read once its writes have settled (no event for [`DEBOUNCE`]), and a file that does
//!   not load, or loads with drains left out, is acted on only once it stayed the same for
//!   [`SETTLE`]: an editor or a tool that writes in several steps is never caught half-way.
//! * A drain that does not parse or validate is left out (with the routes to it) and reported
//!   ([`Loaded::skipped`]); the rest of the file applies.
//! * A change is noticed however the file is replaced: written in place, renamed over (editors),
//!   or swapped through a symlink (Kubernetes Secret and ConfigMap volumes). The parent directory
//!   is watched, and a slow poll backs the watcher up, since inotify can miss events.
//! * The same content is never applied twice (changes are compared on the parsed value).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::{RecursiveMode, Watcher};
use sluice_api::{
    NodeConfig,
    node_config::{ConfigError, DrainConfig},
};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{drain::SkipStage, metrics::Metrics};

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
        source: ConfigError,
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

/// A config file as loaded: every drain that parses and validates, and the ones left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The usable config (without the skipped drains, nor references to them).
    pub config: NodeConfig,
    /// Drains left out: (name, or `drains[i]` when it has none; why, naming the field).
    pub skipped: Vec<(String, String)>,
}

impl Loaded {
    /// Log each skipped drain.
    pub fn log_skipped(&self) {
        for (drain, why) in &self.skipped {
            error!(drain = %drain, error = %why, "drain skipped: its settings cannot be used; the other drains run");
        }
    }
}

/// Read and validate the config file. A drain that does not parse or validate is left out (and
/// listed in [`Loaded::skipped`]) rather than failing the whole file: one bad drain is that
/// drain's problem only. Anything else that is wrong fails the file.
pub fn load(path: &Path) -> Result<Loaded, Error> {
    parse(path, &read(path)?)
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parse and validate a node config's `text` (from `path`, named in errors) as [`load`] does:
/// a drain that does not parse or validate is left out and listed, the rest runs.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, Error> {
    let invalid = |source| Error::Invalid {
        path: path.to_owned(),
        source,
    };
    let yaml = |e: serde_yaml::Error| invalid(ConfigError::from(e));
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(yaml)?;
    // Take the drains out and judge each on its own; the rest is parsed as a whole.
    let entries = match value.as_mapping_mut().map(|m| (m.remove("drains"), m)) {
        Some((Some(serde_yaml::Value::Sequence(entries)), _)) => entries,
        Some((Some(other), mapping)) => {
            mapping.insert("drains".into(), other); // not a list: the whole parse says so
            Vec::new()
        }
        _ => Vec::new(),
    };
    // Everything but the drains, as a whole; each drain is judged against it (CA bundles and
    // the like) with no routes.
    let mut config: NodeConfig = serde_yaml::from_value(value).map_err(yaml)?;
    let containers = std::mem::take(&mut config.containers);
    let selectors = std::mem::take(&mut config.selectors);
    let mut drains: Vec<DrainConfig> = Vec::new();
    let mut skipped = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let name = entry
            .get("name")
            .and_then(serde_yaml::Value::as_str)
            .map_or_else(|| format!("drains[{i}]"), str::to_owned);
        match check_drain(i, entry, &mut config) {
            Ok(drain) if drains.iter().any(|d| d.name == drain.name) => {
                skipped.push((name, format!("drains[{i}].name: duplicate drain name")));
            }
            Ok(drain) => drains.push(drain),
            Err(why) => skipped.push((name, why)),
        }
    }
    // Containers and selectors lose their routes to skipped drains (and go, if they had no other).
    let bad: BTreeSet<&str> = skipped
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| !drains.iter().any(|d| d.name == *name))
        .collect();
    config.containers = containers;
    config.selectors = selectors;
    for c in &mut config.containers {
        c.drains.retain(|d| !bad.contains(d.as_str()));
    }
    config.containers.retain(|c| !c.drains.is_empty());
    for s in &mut config.selectors {
        s.drains.retain(|d| !bad.contains(d.as_str()));
    }
    config.selectors.retain(|s| !s.drains.is_empty());
    config.drains = drains;
    // What is left goes through the one official path (validation and whatever it normalizes).
    let text = serde_yaml::to_string(&config).map_err(yaml)?;
    let config = NodeConfig::from_yaml(&text).map_err(invalid)?;
    Ok(Loaded { config, skipped })
}

/// Parse and validate drain number `index` on its own, in `config` (which has no drains nor
/// routes, and is left so); the error names the field (`drains[index].url: …`).
fn check_drain(
    index: usize,
    entry: serde_yaml::Value,
    config: &mut NodeConfig,
) -> Result<DrainConfig, String> {
    let drain: DrainConfig = serde_yaml::from_value(entry).map_err(|e| format!("drains[{index}]: {e}"))?;
    config.drains = vec![drain];
    let result = config.validate();
    let drain = config.drains.pop().expect("invariant: the probe holds one drain");
    match result {
        Ok(()) => Ok(drain),
        // A problem outside the drain (the version, say) is the whole file's: reported there.
        Err(ConfigError::Invalid { field, message }) if field.starts_with("drains[0]") => Err(format!(
            "{}: {message}",
            field.replacen("drains[0]", &format!("drains[{index}]"), 1)
        )),
        Err(_) => Ok(drain),
    }
}

/// How often the file is re-read even without a watcher event.
const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Editors write a file in several steps: read it only once no event came for this long.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// A file that does not load is reported only once its content stayed the same this long.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Wait until no event came for [`DEBOUNCE`].
async fn settle(events: &mut mpsc::Receiver<()>) {
    while tokio::time::timeout(DEBOUNCE, events.recv())
        .await
        .is_ok_and(|e| e.is_some())
    {}
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

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
    let mut last_skipped = metrics.skipped_drains.list_stage(SkipStage::Config);
    // A content that did not load cleanly, and since when it has not changed (it may be
    // half-written); and the content last acted upon.
    let mut suspect: Option<(Result<String, String>, Instant)> = None;
    let mut settled: Option<Result<String, String>> = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            _ = events.recv() => settle(&mut events).await,
            _ = poll.tick() => {}
            () = sleep_until_opt(suspect.as_ref().map(|(_, since)| *since + SETTLE)) => {}
        }
        let text = read(&path).map_err(|e| e.to_string());
        let loaded = text
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|text| parse(&path, text).map_err(|e| e.to_string()));
        // A file that fails, or loads with drains left out, may be half-written: act on it only
        // once it stayed the same for SETTLE (or if it is what was acted on last).
        let doubtful = loaded.as_ref().map_or(true, |l| !l.skipped.is_empty());
        if doubtful && settled.as_ref() != Some(&text) {
            match &suspect {
                Some((seen, since)) if *seen == text && since.elapsed() >= SETTLE => {}
                Some((seen, _)) if *seen == text => continue,
                _ => {
                    suspect = Some((text, Instant::now()));
                    continue;
                }
            }
        }
        suspect = None;
        settled = Some(text);
        match loaded {
            Ok(loaded) => {
                last_error = None;
                if last_skipped != loaded.skipped {
                    loaded.log_skipped();
                    metrics
                        .skipped_drains
                        .set(SkipStage::Config, loaded.skipped.clone());
                    last_skipped = loaded.skipped;
                }
                if **tx.borrow() != loaded.config {
                    let drains = loaded.config.drains.len();
                    info!(path = %path.display(), drains, "config changed; applying");
                    tx.send_replace(Arc::new(loaded.config));
                }
            }
            // Say it once per distinct problem, not on every poll.
            Err(message) if last_error.as_deref() != Some(message.as_str()) => {
                error!(error = %message, "config change rejected; the last good config keeps running");
                metrics.config_reloads.with_label_values(&["rejected"]).inc();
                last_error = Some(message);
            }
            Err(_) => {}
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

    /// Two drains, `a` and `b`, and a container and a selector routed to both or only to `b`.
    const TWO: &str = "version: 1
drains:
  - name: a
    url: syslog://127.0.0.1:514
  - name: b
    url: BAD
containers:
  - {id: c0ffee, namespace: ns, pod: p, podUid: u, container: c, drains: [a, b]}
  - {id: beef, namespace: ns, pod: p, podUid: u, container: c, drains: [b]}
selectors:
  - {name: '*', drains: [b]}
";

    #[test]
    fn load_names_the_file_and_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sluice.yaml");
        std::fs::write(&path, GOOD.replace("version: 1", "version: 9")).expect("write");
        let message = load(&path).expect_err("bad version").to_string();
        assert!(
            message.contains("sluice.yaml") && message.contains("version"),
            "{message}"
        );
        let missing = load(&dir.path().join("nope.yaml"))
            .expect_err("missing")
            .to_string();
        assert!(missing.contains("nope.yaml"), "{missing}");
    }

    #[test]
    fn a_bad_drain_is_left_out_with_its_routes_and_the_rest_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sluice.yaml");
        let cases = [
            ("url: BAD", "drains[1].url: "),
            ("url: syslog://h:99999", "drains[1].url: "),
            (
                "url: syslog://h:1\n    colour: red",
                "drains[1]: unknown field `colour`",
            ),
        ];
        for (bad, why) in cases {
            std::fs::write(&path, TWO.replace("url: BAD", bad)).expect("write");
            let loaded = load(&path).expect("the file loads");
            let names: Vec<&str> = loaded.config.drains.iter().map(|d| d.name.as_str()).collect();
            assert_eq!(names, ["a"]);
            assert_eq!(loaded.skipped.len(), 1, "{bad}");
            assert_eq!(loaded.skipped[0].0, "b");
            assert!(
                loaded.skipped[0].1.starts_with(why),
                "{bad}: {}",
                loaded.skipped[0].1
            );
            // Routes to `b` are gone; what only fed `b` is gone too.
            assert_eq!(loaded.config.containers.len(), 1);
            assert_eq!(loaded.config.containers[0].drains, ["a"]);
            assert!(loaded.config.selectors.is_empty());
        }
        // A duplicate name: the second is left out, the first runs.
        let duplicate = format!("{GOOD}  - name: a\n    url: syslog://h:2\n");
        std::fs::write(&path, duplicate).expect("write");
        let loaded = load(&path).expect("the file loads");
        assert_eq!(loaded.config.drains.len(), 1);
        assert_eq!(loaded.config.drains[0].url, "syslog://127.0.0.1:514");
        assert_eq!(
            loaded.skipped,
            [("a".to_owned(), "drains[1].name: duplicate drain name".to_owned())]
        );
    }

    #[tokio::test]
    async fn watch_applies_good_changes_and_keeps_the_last_good_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sluice.yaml");
        std::fs::write(&path, GOOD).expect("write");
        let metrics = Metrics::new().expect("metrics");
        let (tx, mut rx) = watch::channel(Arc::new(load(&path).expect("load").config));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watch(path.clone(), tx, metrics.clone(), cancel.clone()));

        // A bad edit is rejected: nothing is published.
        std::fs::write(&path, GOOD.replace("drains:", "drains: 7\nextra:")).expect("write");
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

    #[tokio::test]
    async fn a_file_read_while_half_written_is_not_rejected_and_its_final_content_applies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sluice.yaml");
        std::fs::write(&path, GOOD).expect("write");
        let metrics = Metrics::new().expect("metrics");
        let (tx, mut rx) = watch::channel(Arc::new(load(&path).expect("load").config));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(watch(path.clone(), tx, metrics.clone(), cancel.clone()));

        // Written in place in two steps, with a pause longer than the debounce in between (as a
        // tool that writes, computes, writes on does): the first half alone does not parse.
        let new = GOOD.replace("name: a", "name: b");
        let (first, rest) = new.split_at(new.len() / 2);
        let mut file = std::fs::File::create(&path).expect("truncate");
        std::io::Write::write_all(&mut file, first.as_bytes()).expect("write");
        file.sync_all().expect("sync");
        assert!(
            NodeConfig::from_yaml(first).is_err(),
            "the first half must not parse"
        );
        tokio::time::sleep(DEBOUNCE * 3).await;
        std::io::Write::write_all(&mut file, rest.as_bytes()).expect("write");
        drop(file);

        tokio::time::timeout(Duration::from_secs(10), rx.changed())
            .await
            .expect("change seen")
            .expect("alive");
        assert_eq!(rx.borrow_and_update().drains[0].name, "b");
        // Past the settle time of anything read half-way: still nothing rejected.
        tokio::time::sleep(SETTLE * 2).await;
        assert_eq!(metrics.config_reloads.with_label_values(&["rejected"]).get(), 0);
        assert!(!rx.has_changed().expect("sender alive"));

        cancel.cancel();
        task.await.expect("join").expect("watch ends cleanly");
    }
}
