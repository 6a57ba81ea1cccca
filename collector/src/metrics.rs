//! The collector's Prometheus metrics, in one registry.
//!
//! Names follow `sluice_collector_<thing>_<unit>`; labels are bounded (`drain`, `cause`, `stream`),
//! never a path or a pod. The tail engine reports through the [`crate::engine::Emitter`] trait
//! (implemented here), so the engine itself never imports `prometheus`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tokio::time::Instant;

/// Every metric the collector exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Lines read from log files (before routing), by stream.
    pub lines_read: IntCounterVec,
    /// Bytes read from log files.
    pub bytes_read: IntCounter,
    /// Lines acknowledged by a drain.
    pub lines_delivered: IntCounterVec,
    /// Encoded bytes acknowledged by a drain.
    pub bytes_delivered: IntCounterVec,
    /// Delivery attempts that failed (and will be retried), by drain and cause.
    pub delivery_failures: IntCounterVec,
    /// Lines given up, by drain and cause (`rotated_away`, `oversize`, …).
    pub lines_dropped: IntCounterVec,
    /// Input problems that were skipped or repaired, by cause (`malformed_json`, `invalid_utf8`,
    /// `truncated`, `unreadable_file`, …).
    pub input_errors: IntCounterVec,
    /// Bytes a drain is behind the end of the files it reads.
    pub lag_bytes: IntGaugeVec,
    /// Seconds since the checkpoint file was last written (since the start, before the first).
    pub checkpoint_age_seconds: IntGauge,
    /// Checkpoint writes that failed (unwritable or full state directory).
    pub checkpoint_errors: IntCounter,
    /// The open-files limit in force (the soft limit, raised at start).
    pub open_files_limit: IntGauge,
    /// Log files held open.
    pub open_files: IntGauge,
    /// Config reloads, by result (`applied`, `rejected`).
    pub config_reloads: IntCounterVec,
    /// Failed requests to the Kubernetes API server (cluster mode), by operation (`watch`,
    /// `lease`); retried with backoff.
    pub api_errors: IntCounterVec,
    /// Syslog messages longer than a `syslog-udp://` drain's datagram limit, by drain and action
    /// (`split` into several datagrams, or `truncate`d).
    pub udp_oversize: IntCounterVec,
    /// Seconds since the tail engine last went round its loop (0 or 1 while it runs).
    pub engine_silent_seconds: IntGauge,
    /// Drain tasks that died (panicked) and were started again, by drain.
    pub drain_restarts: IntCounterVec,
    /// Drains of the config that are not running, with why (also the `drains_skipped` gauge).
    pub skipped_drains: crate::drain::SkippedDrains,
    /// Drains started and not forgotten: the engine's lag reports for any other drain (one that
    /// just left the config) are ignored, so a removed drain's gauge does not come back.
    live_drains: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// Unix time (seconds) of the last checkpoint write; the start before the first.
    last_checkpoint: Arc<AtomicU64>,
    /// The last checkpoint write failed (and none succeeded since): `/readyz` fails.
    checkpoint_failing: Arc<AtomicBool>,
    /// When these metrics were made: the engine's silence is measured from here (monotonic).
    started: Instant,
    /// Milliseconds after `started` when the engine last went round its loop.
    engine_alive_ms: Arc<AtomicU64>,
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(format!("sluice_collector_{name}"), help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let lines_read = counter(
            "lines_read_total",
            "Lines read from container log files.",
            &["stream"],
        )?;
        let lines_delivered = counter(
            "lines_delivered_total",
            "Lines acknowledged by the drain.",
            &["drain"],
        )?;
        let bytes_delivered = counter(
            "bytes_delivered_total",
            "Encoded bytes acknowledged by the drain.",
            &["drain"],
        )?;
        let delivery_failures = counter(
            "delivery_failures_total",
            "Delivery attempts that failed and were retried.",
            &["drain", "cause"],
        )?;
        let lines_dropped = counter(
            "lines_dropped_total",
            "Lines given up, by drain and cause.",
            &["drain", "cause"],
        )?;
        let input_errors = counter(
            "input_errors_total",
            "Bad input that was skipped or repaired, by cause.",
            &["cause"],
        )?;
        let config_reloads = counter("config_reloads_total", "Config reloads, by result.", &["result"])?;
        let api_errors = counter(
            "api_errors_total",
            "Failed requests to the Kubernetes API server (retried with backoff), by operation.",
            &["op"],
        )?;
        let udp_oversize = counter(
            "udp_oversize_total",
            "Syslog messages over a UDP drain's datagram limit, split or truncated.",
            &["drain", "action"],
        )?;
        let drain_restarts = counter(
            "drain_restarts_total",
            "Drain tasks that died (a bug) and were started again from what they had acknowledged.",
            &["drain"],
        )?;
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(format!("sluice_collector_{name}"), help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let bytes_read = IntCounter::new(
            "sluice_collector_bytes_read_total",
            "Bytes read from container log files.",
        )?;
        registry.register(Box::new(bytes_read.clone()))?;
        let checkpoint_age_seconds = gauge(
            "checkpoint_age_seconds",
            "Seconds since the checkpoint file was last written (since the start, before the first write).",
        )?;
        let open_files = gauge("open_files", "Log files held open.")?;
        let open_files_limit = gauge(
            "open_files_limit",
            "The process's open-files limit (its soft limit, raised at start toward the hard limit).",
        )?;
        let checkpoint_errors = IntCounter::new(
            "sluice_collector_checkpoint_errors_total",
            "Checkpoint writes that failed (unwritable or full state directory); /readyz fails until one succeeds.",
        )?;
        registry.register(Box::new(checkpoint_errors.clone()))?;
        let engine_silent_seconds = gauge(
            "engine_silent_seconds",
            "Seconds since the tail engine last went round its loop (it does about once a second; /healthz fails past --stall-timeout).",
        )?;
        let lag_bytes = IntGaugeVec::new(
            Opts::new(
                "sluice_collector_lag_bytes",
                "Bytes in the tailed files after the drain's last acknowledged line.",
            ),
            &["drain"],
        )?;
        registry.register(Box::new(lag_bytes.clone()))?;
        let skipped_drains = crate::drain::SkippedDrains::new(gauge(
            "drains_skipped",
            "Drains of the node config that are not running because their settings cannot be used (see /readyz and the log).",
        )?);
        Ok(Self {
            registry,
            lines_read,
            bytes_read,
            lines_delivered,
            bytes_delivered,
            delivery_failures,
            lines_dropped,
            input_errors,
            lag_bytes,
            checkpoint_age_seconds,
            checkpoint_errors,
            open_files_limit,
            open_files,
            config_reloads,
            api_errors,
            udp_oversize,
            engine_silent_seconds,
            drain_restarts,
            skipped_drains,
            live_drains: Arc::default(),
            last_checkpoint: Arc::new(AtomicU64::new(unix_now())),
            checkpoint_failing: Arc::new(AtomicBool::new(false)),
            started: Instant::now(),
            engine_alive_ms: Arc::new(AtomicU64::new(0)),
        })
    }

    fn live_drains(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<String>> {
        // A set updated in one step: a panic elsewhere cannot leave it torn.
        self.live_drains
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A drain named `drain` started: its series are wanted.
    pub fn drain_started(&self, drain: &str) {
        self.live_drains().insert(drain.to_owned());
    }

    /// Remove every series labelled with `drain` (the drain is gone from the config), so
    /// dashboards and alerts do not keep showing a drain that no longer exists.
    pub fn forget_drain(&self, drain: &str) {
        self.live_drains().remove(drain);
        fn forget<T: prometheus::core::MetricVecBuilder>(vec: &prometheus::core::MetricVec<T>, drain: &str) {
            use prometheus::core::Collector as _;
            for family in vec.collect() {
                for metric in family.get_metric() {
                    let labels: std::collections::HashMap<&str, &str> =
                        metric.get_label().iter().map(|l| (l.name(), l.value())).collect();
                    if labels.get("drain") == Some(&drain) {
                        let _ = vec.remove(&labels);
                    }
                }
            }
        }
        for vec in [
            &self.lines_delivered,
            &self.bytes_delivered,
            &self.delivery_failures,
            &self.lines_dropped,
            &self.udp_oversize,
            &self.drain_restarts,
        ] {
            forget(vec, drain);
        }
        forget(&self.lag_bytes, drain);
    }

    /// How long the tail engine has been silent: since it last went round its loop, or since
    /// these metrics were made if it never did (so a slow start has the same allowance).
    pub fn engine_silent_for(&self) -> Duration {
        let alive = Duration::from_millis(self.engine_alive_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(alive)
    }

    /// The registry, for the `/metrics` endpoint. Derived gauges (checkpoint age, engine
    /// silence) are brought up to date first.
    pub fn registry(&self) -> &Registry {
        let silent = self.engine_silent_for().as_secs();
        self.engine_silent_seconds
            .set(silent.try_into().unwrap_or(i64::MAX));
        let last = self.last_checkpoint.load(Ordering::Relaxed);
        self.checkpoint_age_seconds
            .set(unix_now().saturating_sub(last).try_into().unwrap_or(i64::MAX));
        &self.registry
    }

    /// Whether the last checkpoint write failed (none succeeded since).
    pub fn checkpoint_failing(&self) -> bool {
        self.checkpoint_failing.load(Ordering::Relaxed)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The tail engine reports through this; labels stay bounded (drain names and fixed causes).
impl crate::engine::Emitter for Metrics {
    fn lines_read(&self, stream: sluice_api::node_config::Stream, lines: u64, bytes: u64) {
        self.lines_read
            .with_label_values(&[stream.as_str()])
            .inc_by(lines);
        self.bytes_read.inc_by(bytes);
    }

    fn input_error(&self, cause: &'static str) {
        self.input_errors.with_label_values(&[cause]).inc();
    }

    fn lines_dropped(&self, drain: &str, cause: &'static str, lines: u64) {
        self.lines_dropped
            .with_label_values(&[drain, cause])
            .inc_by(lines);
    }

    fn lag_bytes(&self, drain: &str, bytes: u64) {
        if !self.live_drains().contains(drain) {
            return; // left the config; the engine has not caught up yet
        }
        self.lag_bytes
            .with_label_values(&[drain])
            .set(bytes.try_into().unwrap_or(i64::MAX));
    }

    fn open_files(&self, files: u64) {
        self.open_files.set(files.try_into().unwrap_or(i64::MAX));
    }

    fn checkpoint_written(&self) {
        self.last_checkpoint.store(unix_now(), Ordering::Relaxed);
        self.checkpoint_age_seconds.set(0);
        self.checkpoint_failing.store(false, Ordering::Relaxed);
    }

    fn checkpoint_failed(&self) {
        self.checkpoint_errors.inc();
        self.checkpoint_failing.store(true, Ordering::Relaxed);
    }

    fn engine_alive(&self) {
        let ms = self.started.elapsed().as_millis();
        self.engine_alive_ms
            .store(ms.try_into().unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gone_drain_leaves_no_series_behind() {
        use crate::engine::Emitter as _;
        let metrics = Metrics::new().unwrap();
        for drain in ["gone", "kept"] {
            metrics.drain_started(drain);
            metrics.lines_delivered.with_label_values(&[drain]).inc();
            metrics
                .delivery_failures
                .with_label_values(&[drain, "timeout"])
                .inc();
            metrics
                .lines_dropped
                .with_label_values(&[drain, "rejected"])
                .inc();
            metrics.lag_bytes.with_label_values(&[drain]).set(7);
        }
        metrics.forget_drain("gone");
        metrics.lag_bytes("gone", 9); // a late report from the engine
        let mut text = Vec::new();
        prometheus::Encoder::encode(
            &prometheus::TextEncoder::new(),
            &metrics.registry().gather(),
            &mut text,
        )
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(!text.contains("drain=\"gone\""), "{text}");
        assert_eq!(text.matches("drain=\"kept\"").count(), 4, "{text}");
    }
}
