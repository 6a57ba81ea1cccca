//! Harnesses for sluice's end-to-end tests: real daemons in fresh temp dirs on free ports.
//!
//! * [`docker`]: our own `dockerd` (own data root), `FROM scratch` images of `loggen`, containers
//!   with json-file log options;
//! * [`syslog`]: rsyslog and syslog-ng receivers (TCP with octet counting, TLS, UDP) writing one
//!   JSON object per received message, parsed back into [`syslog::Received`];
//! * [`helm`]: the pinned helm with private directories, and the chart's path;
//! * [`http`]: an in-process HTTP receiver that records every JSON line (gzip-aware) and can be
//!   told to answer 503;
//! * [`faulty`]: destinations that refuse, stall or reset every connection;
//! * [`chart_node`]: the chart installed on the harness's real node, tenants with their own drain
//!   and receiver, loggen pods;
//! * [`collector`]: the `sluice-collector` binary under test (config rewrites, SIGTERM/SIGKILL,
//!   restarts, `/metrics` scraping, `/readyz`);
//! * [`kube`]: the kube-apiserver harness with sluice's CRDs and RBAC, the operator in-process
//!   under its restricted identity, pods as a kubelet reports them (cluster-mode tests);
//! * [`plugin`]: the `kubectl-sluice` binary run as a user runs it, and checks of the lines it prints;
//! * [`multiset`]: exact comparison of lines written and received, with readable reports;
//! * [`tmpfs`]: a small tmpfs to fill, for tests of a full disk;
//! * [`support`]: free ports, polling with a timeout, the process guard, and the "part missing"
//!   policy: locally a LOUD skip, with `SLUICE_REQUIRE_ALL=1` (CI) a failure.
//!
//! Invariant: every process a harness starts is owned by a [`support::Daemon`] guard that stops it
//! by pid (its whole process group) on drop, including when a test panics.

pub mod chart_node;
pub mod collector;
pub mod docker;
pub mod faulty;
pub mod fixture;
pub mod helm;
pub mod http;
pub mod kube;
pub mod logs_api;
pub mod multiset;
pub mod plugin;
pub mod support;
pub mod syslog;
pub mod tmpfs;

pub use sluice_loggen::{LineSpec, Stream};
