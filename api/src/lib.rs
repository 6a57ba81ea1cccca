//! The contracts shared by sluice's parts.
//!
//! * [`node_config`]: the per-node configuration the operator renders and the collector reads (or a
//!   person writes by hand for a plain Docker host). It is deliberately free of any Kubernetes
//!   dependency so the collector can use it standalone.
//! * [`health`]: the per-drain delivery figures each collector reports on its node Lease, which
//!   the operator sums into `LogDrain` status.
//! * [`query`]: the lines the collectors' query API returns to the operator; [`query_tls`]: the
//!   mutual TLS between the two.
//! * [`selector`]: label selectors as text, parsed and matched against pod labels.
//! * [`crd`] (feature `crd`): the `LogDrain` and `LogBinding` custom resources users write, with the
//!   schema and CEL rules the API server enforces.
#![deny(missing_docs)]

#[cfg(feature = "crd")]
pub mod crd;
pub mod health;
pub mod node_config;
pub mod query;
pub mod query_tls;
pub mod selector;

pub use node_config::NodeConfig;
