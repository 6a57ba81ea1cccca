//! The sluice collector: tails container logs on one node and delivers every line to the drains
//! its container is bound to, at least once, with a cursor per (file, drain).
//!
//! Modules, in the direction data flows (acknowledgements flow back through [`pipeline`]):
//! * [`config`]: loads and watches the node config file (standalone mode).
//! * [`cluster`]: cluster mode: this node's config Secret from the API server (the last good one
//!   saved in the state dir), the node Lease carrying the drains' [`health`] figures. The only
//!   module that talks to Kubernetes.
//! * [`engine`]: the kube-free tail engine: discovery of log files, fingerprints, parsing
//!   (Docker json-file, CRI), reading with per-(file, drain) cursors, checkpoints.
//! * [`pipeline`]: the contract between the engine and the drains (batches, acks, cursors).
//! * [`drain`]: encoders (RFC5424, JSON) and transports (syslog TCP/TLS/UDP, HTTP) behind a tower
//!   stack per drain.
//! * [`runtime`]: wires them: one engine, one task per drain, reloads in place, graceful stop.
//! * [`metrics`]: the Prometheus registry; [`server`]: `/metrics`, `/healthz`, `/readyz`.
//! * [`recent`]: the recent lines of each container and live followers; [`query`]: the
//!   authenticated API that serves them to the operator ([`query_tls`]: over mutual TLS).

pub mod cluster;
pub mod config;
pub mod drain;
pub mod engine;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod query;
pub mod query_tls;
pub mod recent;
pub mod runtime;
pub mod server;
