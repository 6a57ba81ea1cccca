//! The sluice collector: tails container logs on one node and delivers every line to the drains
//! its container is bound to, at least once, with a cursor per (file, drain).
//!
//! Modules, in the direction data flows (acknowledgements flow back through [`pipeline`]):
//! * [`config`]: loads and watches the node config, keeps the last good one.
//! * [`engine`]: the kube-free tail engine: discovery of log files, fingerprints, parsing
//!   (Docker json-file, CRI), reading with per-(file, drain) cursors, checkpoints.
//! * [`pipeline`]: the contract between the engine and the drains (batches, acks, cursors).
//! * [`drain`]: encoders (RFC5424, JSON) and transports (syslog TCP/TLS/UDP, HTTP) behind a tower
//!   stack per drain.
//! * [`runtime`]: wires them: one engine, one task per drain, reloads in place, graceful stop.
//! * [`metrics`]: the Prometheus registry; [`server`]: `/metrics`, `/healthz`, `/readyz`.

pub mod config;
pub mod drain;
pub mod engine;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod runtime;
pub mod server;
