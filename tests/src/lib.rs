//! Harnesses for sluice's end-to-end tests: real daemons in fresh temp dirs on free ports.
//!
//! * [`docker`]: our own `dockerd` (own data root), `FROM scratch` images of `loggen`, containers
//!   with json-file log options;
//! * [`syslog`]: rsyslog and syslog-ng receivers (TCP with octet counting, TLS, UDP) writing one
//!   JSON object per received message, parsed back into [`syslog::Received`];
//! * [`http`]: an in-process HTTP receiver that records every JSON line (gzip-aware) and can be
//!   told to answer 503;
//! * [`collector`]: the `sluice-collector` binary under test (config rewrites, SIGTERM/SIGKILL,
//!   restarts, `/metrics` scraping, `/readyz`);
//! * [`kube`]: the kube-apiserver harness with sluice's CRDs and RBAC, the operator in-process
//!   under its restricted identity, pods as a kubelet reports them (cluster-mode tests);
//! * [`multiset`]: exact comparison of lines written and received, with readable reports;
//! * [`support`]: free ports, polling with a timeout, the process guard, and the "part missing"
//!   policy: locally a LOUD skip, with `SLUICE_REQUIRE_ALL=1` (CI) a failure.
//!
//! Invariant: every process a harness starts is owned by a [`support::Daemon`] guard that stops it
//! by pid (its whole process group) on drop, including when a test panics.

pub mod collector;
pub mod docker;
pub mod fixture;
pub mod http;
pub mod kube;
pub mod logs_api;
pub mod multiset;
pub mod support;
pub mod syslog;

pub use sluice_loggen::{LineSpec, Stream};
