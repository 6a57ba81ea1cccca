//! The operator's Prometheus metrics (`sluice_operator_*`), in their own registry.
//!
//! Invariant: labels are bounded: `kind` (node_config, drain_status, binding_status), `error`
//! ([`crate::Error::kind`]), `resource` and `verb`. No node, pod or namespace names.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// Everything the operator counts.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciliations done, by kind.
    pub reconciles: IntCounterVec,
    /// Reconciliations that failed, by kind and error.
    pub errors: IntCounterVec,
    /// How long reconciliations took, by kind.
    pub duration: HistogramVec,
    /// Writes sent to the API server, by resource and verb (apply, delete, status, event).
    pub api_writes: IntCounterVec,
    /// Node config Secrets the operator currently keeps.
    pub node_configs: IntGauge,
    /// 1 while this replica holds the leader Lease.
    pub leader: IntGauge,
    /// (drain, node) pairs left out of node configs because the node's config would be too large.
    pub drains_left_out: IntGauge,
    /// Seconds from the first change that made a node's config stale to its new config written.
    pub node_config_lag: Histogram,
    api_writes_total: Arc<AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with all metrics registered.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "sluice_operator_reconciles_total",
                "Reconciliations done, by kind",
            ),
            &["kind"],
        )
        .expect("invariant: static metric definition is valid");
        let errors = IntCounterVec::new(
            Opts::new(
                "sluice_operator_reconcile_errors_total",
                "Reconciliations that failed, by kind and error",
            ),
            &["kind", "error"],
        )
        .expect("invariant: static metric definition is valid");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_operator_reconcile_duration_seconds",
                "Time spent per reconciliation",
            )
            .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
            &["kind"],
        )
        .expect("invariant: static metric definition is valid");
        let api_writes = IntCounterVec::new(
            Opts::new(
                "sluice_operator_api_writes_total",
                "Writes sent to the API server, by resource and verb",
            ),
            &["resource", "verb"],
        )
        .expect("invariant: static metric definition is valid");
        let node_configs = IntGauge::new(
            "sluice_operator_node_configs",
            "Node config Secrets the operator keeps",
        )
        .expect("invariant: static metric definition is valid");
        let leader = IntGauge::new(
            "sluice_operator_leader",
            "1 while this replica holds the leader Lease",
        )
        .expect("invariant: static metric definition is valid");
        let drains_left_out = IntGauge::new(
            "sluice_operator_drains_left_out",
            "(drain, node) pairs left out of node configs because the config would exceed its size limit",
        )
        .expect("invariant: static metric definition is valid");
        let node_config_lag = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_operator_node_config_lag_seconds",
                "Seconds from the first change that made a node's config stale to its new config written",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("invariant: static metric definition is valid");
        for c in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(api_writes.clone()),
            Box::new(node_configs.clone()),
            Box::new(leader.clone()),
            Box::new(drains_left_out.clone()),
            Box::new(node_config_lag.clone()),
        ] {
            registry
                .register(c)
                .expect("invariant: each metric is registered once");
        }
        Self {
            registry,
            reconciles,
            errors,
            duration,
            api_writes,
            node_configs,
            leader,
            drains_left_out,
            node_config_lag,
            api_writes_total: Arc::default(),
        }
    }

    /// Count one API write.
    pub fn write(&self, resource: &str, verb: &str) {
        self.api_writes.with_label_values(&[resource, verb]).inc();
        self.api_writes_total.fetch_add(1, Ordering::Relaxed);
    }

    /// The sum of all API writes (tests and the scale bench compare it).
    pub fn total_writes(&self) -> u64 {
        self.api_writes_total.load(Ordering::Relaxed)
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
