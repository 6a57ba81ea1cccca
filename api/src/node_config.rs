//! The node config: what one collector ships, and where to.
//!
//! The operator renders one of these per node (into a Secret, because drains may carry credential
//! material); on a plain Docker host a person writes the same YAML by hand and passes it with
//! `sluice-collector --config FILE`. The schema is versioned: [`NodeConfig::version`] must be
//! [`CURRENT_VERSION`], so an old collector refuses a config it does not understand instead of
//! silently ignoring fields (unknown fields are rejected for the same reason).
//!
//! Invariants established by [`NodeConfig::from_yaml`] (and [`NodeConfig::validate`]):
//! * drain names are unique, non-empty DNS labels, and every drain URL parses to a [`DrainKind`];
//! * every drain a container or selector names exists;
//! * TLS and HTTP options appear only on drains whose scheme uses them, and options that need each
//!   other (a client certificate and its key) come together;
//! * every drain passes the checks a collector makes when it builds it (templates, server name, PEM
//!   material, header names and values, credential characters): [`DrainConfig::plan`] turns a
//!   drain into the [`DrainPlan`] a collector builds it from, which cannot fail, and
//!   [`DrainConfig::validate`] makes the same checks on one drain without reading the files it
//!   names (see `plan`);
//! * every `tls.caBundle` names an entry of [`NodeConfig::ca_bundles`], each a usable CA bundle.
//!
//! Errors name the offending field as a path (`drains[1].url`), so a person fixing a hand-written
//! file is pointed at the line to change.
//!
//! Where each part lives: `types` (the schema, its defaults and redacting `Debug`), `url` (what a
//! drain URL names), `validate` (the invariants above), `plan` (a drain checked into what a
//! collector builds it from), [`template`] (syslog templates) and `glob` (selector name globs).

mod glob;
mod plan;
pub mod template;
mod types;
mod url;
mod validate;

pub use plan::{ClientTls, DrainPlan, HttpPlan, SyslogPlan, TcpPlan, TlsPlan, TransportPlan, Trust, UdpPlan};
pub use types::*;
pub use url::{DrainKind, UrlError};

/// The node-config schema version this crate reads and writes.
pub const CURRENT_VERSION: u32 = 1;

/// A node config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not YAML of the right shape (the message carries the field path and position).
    #[error("invalid node config: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// The YAML has the right shape but a value is not acceptable.
    #[error("invalid node config: {field}: {message}")]
    Invalid {
        /// Path of the offending field, e.g. `drains[1].url`.
        field: String,
        /// What is wrong with it, in words a person can act on.
        message: String,
    },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests;
