//! The contracts shared by sluice's parts.
//!
//! * [`node_config`]: the per-node configuration the operator renders and the collector reads (or a
//!   person writes by hand for a plain Docker host). It is deliberately free of any Kubernetes
//!   dependency so the collector can use it standalone.
#![deny(missing_docs)]

pub mod node_config;

pub use node_config::NodeConfig;
