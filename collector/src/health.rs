//! Per-drain delivery figures that survive restarts: the collector's side of
//! [`sluice_api::health`].
//!
//! Invariants:
//! * A figure in a report is `saved + this process's count`, where `saved` is what the state
//!   dir's `health.json` held when the process started. [`Book::report`] writes the totals
//!   (atomically: temp file, fsync, rename, directory fsync; mode 0600) *before* it returns the
//!   report, so nothing is ever published that a restarted collector would not start from: the
//!   figures a node reports never go down and are never counted twice.
//! * A drain that left the config is still reported, inactive, for
//!   [`sluice_api::health::RETAIN_REMOVED_SECONDS`]; then it is forgotten.
//! * Error messages are cut short and stripped of response bodies and URL queries before they are
//!   stored ([`safe_message`]).
//!
//! Kube-free: the report is built here and carried by [`crate::cluster`].

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use prometheus::core::Collector as _;
use serde::{Deserialize, Serialize};
use sluice_api::{
    health::{DrainHealth, HealthReport, LastError, REPORT_VERSION, RETAIN_REMOVED_SECONDS, short_message},
    node_config::DrainOwner,
};
use tracing::warn;

use crate::{drain::retry::HealthSnapshot, metrics::Metrics};

const FILE: &str = "health.json";
const FILE_VERSION: u32 = 1;

/// What one drain looks like now, as the running collector sees it.
#[derive(Clone, Debug, Default)]
pub struct DrainState {
    /// The LogDrain it stands for.
    pub owner: Option<DrainOwner>,
    /// Failing or not, last error, last success.
    pub snapshot: HealthSnapshot,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedFile {
    version: u32,
    drains: BTreeMap<String, Saved>,
}

/// The totals of one drain as last saved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Saved {
    #[serde(default)]
    health: DrainHealth,
    /// Unix time the drain was last in the config.
    #[serde(default)]
    last_active: u64,
}

/// The per-drain figures of this node, persisted in the state dir.
#[derive(Debug)]
pub struct Book {
    path: PathBuf,
    node: String,
    /// Totals saved by earlier processes (the base this process counts on top of).
    base: BTreeMap<String, Saved>,
    /// The last totals written (what reports are made of when a drain is inactive).
    last: BTreeMap<String, Saved>,
}

impl Book {
    /// Open the book in `state_dir`; a missing or unreadable file starts from zero (and says so).
    pub fn open(state_dir: &Path, node: &str) -> Self {
        let path = state_dir.join(FILE);
        let base = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<SavedFile>(&bytes) {
                Ok(file) if file.version == FILE_VERSION => file.drains,
                Ok(file) => {
                    warn!(path = %path.display(), version = file.version, "unknown health file version; counting from zero");
                    BTreeMap::new()
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "unreadable health file; counting from zero");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read the health file; counting from zero");
                BTreeMap::new()
            }
        };
        Self {
            path,
            node: node.to_owned(),
            last: base.clone(),
            base,
        }
    }

    /// Figures for every drain (active ones from `drains`, retained ones from the book), saved
    /// before they are returned. A failed save is returned as an error, and nothing is reported.
    pub fn report(
        &mut self,
        metrics: &Metrics,
        drains: &BTreeMap<String, DrainState>,
    ) -> std::io::Result<HealthReport> {
        let now = unix_now();
        let counts = Counts::gather(metrics);
        let mut totals = BTreeMap::new();
        for (name, state) in drains {
            let base = self.base.get(name).map(|s| &s.health);
            let mut health = counts.for_drain(name, base);
            health.owner = state.owner.clone();
            health.active = true;
            health.lag_bytes = metrics
                .lag_bytes
                .with_label_values(&[name])
                .get()
                .try_into()
                .unwrap_or(0);
            merge_snapshot(&mut health, &state.snapshot, base);
            totals.insert(
                name.clone(),
                Saved {
                    health,
                    last_active: now,
                },
            );
        }
        // Drains no longer configured: their last totals (plus anything counted since, e.g.
        // lines given up while the engine let go of them), until they are too old.
        for (name, saved) in self.last.iter().chain(self.base.iter()) {
            if totals.contains_key(name) || now.saturating_sub(saved.last_active) > RETAIN_REMOVED_SECONDS {
                continue;
            }
            let base = self.base.get(name).map(|s| &s.health);
            let mut health = counts.for_drain(name, base);
            health.owner = saved.health.owner.clone();
            health.last_error = saved.health.last_error.clone();
            health.last_success = saved.health.last_success;
            totals.insert(
                name.clone(),
                Saved {
                    health,
                    last_active: saved.last_active,
                },
            );
        }
        if totals != self.last || !self.path.exists() {
            write_atomically(
                &self.path,
                &serde_json::to_vec(&SavedFile {
                    version: FILE_VERSION,
                    drains: totals.clone(),
                })
                .map_err(std::io::Error::other)?,
            )?;
        }
        self.last = totals;
        Ok(HealthReport {
            version: REPORT_VERSION,
            node: self.node.clone(),
            reported_at: now,
            drains: self
                .last
                .iter()
                .map(|(name, saved)| (name.clone(), saved.health.clone()))
                .collect(),
        })
    }
}

/// This process's counters, by drain.
#[derive(Default)]
struct Counts {
    delivered: BTreeMap<String, u64>,
    failed: BTreeMap<String, u64>,
    dropped: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Counts {
    fn gather(metrics: &Metrics) -> Self {
        let mut counts = Self::default();
        for (labels, value) in series(&metrics.lines_delivered) {
            *counts.delivered.entry(label(&labels, "drain")).or_default() += value;
        }
        for (labels, value) in series(&metrics.delivery_failures) {
            *counts.failed.entry(label(&labels, "drain")).or_default() += value;
        }
        for (labels, value) in series(&metrics.lines_dropped) {
            *counts
                .dropped
                .entry(label(&labels, "drain"))
                .or_default()
                .entry(label(&labels, "cause"))
                .or_default() += value;
        }
        counts
    }

    /// `base` plus this process's counts for `drain`.
    fn for_drain(&self, drain: &str, base: Option<&DrainHealth>) -> DrainHealth {
        let base = base.cloned().unwrap_or_default();
        let mut dropped = base.lines_dropped;
        for (cause, n) in self.dropped.get(drain).into_iter().flatten() {
            let total = dropped.entry(cause.clone()).or_default();
            *total = total.saturating_add(*n);
        }
        DrainHealth {
            lines_delivered: base
                .lines_delivered
                .saturating_add(self.delivered.get(drain).copied().unwrap_or(0)),
            attempts_failed: base
                .attempts_failed
                .saturating_add(self.failed.get(drain).copied().unwrap_or(0)),
            lines_dropped: dropped,
            ..DrainHealth::default()
        }
    }
}

/// `(labels, value)` of every series of a counter vector.
fn series(vec: &prometheus::IntCounterVec) -> Vec<(Vec<(String, String)>, u64)> {
    vec.collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| {
            let labels = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect();
            // Counter values are whole numbers stored as f64.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let value = m.get_counter().get_value().max(0.0) as u64;
            (labels, value)
        })
        .collect()
}

fn label(labels: &[(String, String)], name: &str) -> String {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Failing state, last error and last success from the drain's snapshot, falling back to what an
/// earlier process saved.
fn merge_snapshot(health: &mut DrainHealth, snapshot: &HealthSnapshot, base: Option<&DrainHealth>) {
    health.failing = snapshot.failing.is_some();
    health.last_error = match (&snapshot.last_error, snapshot.last_error_at) {
        (Some(text), Some(at)) => Some(LastError {
            kind: snapshot.failing.unwrap_or("delivery").to_owned(),
            message: safe_message(text),
            time: unix(at),
        }),
        _ => base.and_then(|b| b.last_error.clone()),
    };
    health.last_success = snapshot
        .last_success_at
        .map(unix)
        .or_else(|| base.and_then(|b| b.last_success));
}

/// A delivery error's text made safe for statuses and Events: the response body that HTTP errors
/// carry after their status (`… answered 503 Service Unavailable: <body>`) and URL queries are
/// removed, control characters replaced, and the result cut short.
pub fn safe_message(text: &str) -> String {
    let mut out = text.to_owned();
    for marker in [" answered ", " rejected the batch with "] {
        if let Some(at) = out.find(marker) {
            let after = at + marker.len();
            if let Some(colon) = out[after..].find(": ") {
                out.truncate(after + colon);
            }
        }
    }
    let without_queries: Vec<String> = out
        .split(' ')
        .map(|word| match word.split_once('?') {
            Some((head, _)) if head.contains("://") => format!("{head}?…"),
            _ => word.to_owned(),
        })
        .collect();
    short_message(&without_queries.join(" "))
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn unix_now() -> u64 {
    unix(SystemTime::now())
}

/// Write `bytes` to `path` so that a crash leaves either the old or the new file: a temp file
/// (mode 0600) is written and fsynced, renamed over `path`, and the directory fsynced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(owner: &str) -> DrainState {
        DrainState {
            owner: Some(DrainOwner {
                namespace: "shop".into(),
                name: owner.into(),
            }),
            snapshot: HealthSnapshot::default(),
        }
    }

    #[test]
    fn totals_continue_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let drains = BTreeMap::from([("shop-web".to_owned(), state("web"))]);
        let first = Metrics::new().expect("metrics");
        first.lines_delivered.with_label_values(&["shop-web"]).inc_by(10);
        first
            .lines_dropped
            .with_label_values(&["shop-web", "rejected"])
            .inc_by(2);
        let report = Book::open(dir.path(), "n1")
            .report(&first, &drains)
            .expect("report");
        assert_eq!(report.drains["shop-web"].lines_delivered, 10);
        let mode = std::fs::metadata(dir.path().join(FILE)).expect("saved");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );

        // A restarted process counts from zero on top of what was saved.
        let second = Metrics::new().expect("metrics");
        second.lines_delivered.with_label_values(&["shop-web"]).inc_by(5);
        let mut book = Book::open(dir.path(), "n1");
        let report = book.report(&second, &drains).expect("report");
        let web = &report.drains["shop-web"];
        assert_eq!(web.lines_delivered, 15);
        assert_eq!(web.dropped_total(), 2);
        assert!(web.active);

        // Removed from the config: still reported, inactive, with its totals.
        let report = book.report(&second, &BTreeMap::new()).expect("report");
        let web = &report.drains["shop-web"];
        assert_eq!((web.active, web.lines_delivered), (false, 15));
        assert_eq!(web.owner.as_ref().map(|o| o.name.as_str()), Some("web"));
    }

    #[test]
    fn messages_lose_bodies_and_queries() {
        let text = "http://h:1/in?token=abc answered 503 Service Unavailable: {\"secret\":1}";
        assert_eq!(
            safe_message(text),
            "http://h:1/in?… answered 503 Service Unavailable"
        );
        assert_eq!(
            safe_message("cannot connect to 127.0.0.1:9: Connection refused (os error 111)"),
            "cannot connect to 127.0.0.1:9: Connection refused (os error 111)"
        );
    }
}
