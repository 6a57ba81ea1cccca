//! The custom resources users write: [`LogDrain`] (where lines go) and [`LogBinding`] (which pods feed
//! which drains), group `sluice.dev`, version `v1alpha1`, both namespaced.
//!
//! Invariants, all enforced by the API server from the generated schema (OpenAPI + CEL), so
//! `kubectl apply` rejects a bad object with a message naming the field and no webhook is needed:
//! * a drain URL has a supported scheme (`syslog`, `syslog-tls`, `syslog-udp`, `http`, `https`), a
//!   host, a port from 1 to 65535 (required for syslog), no credentials and, for syslog, no path;
//! * TLS settings appear only on `syslog-tls://` and `https://` drains, credentials and HTTP
//!   settings only on `http(s)://` drains, and settings that need each other come together;
//! * a binding names drains by plain name: a drain of another namespace cannot be named at all
//!   (isolation), and selector requirements are well formed.
//!
//! The operator still re-checks what it reads (an object written before a schema change, or a
//! Secret that is missing or malformed) and reports problems in `status.conditions`; the condition
//! types and reasons it uses are the constants in [`condition`].
//!
//! `crds/*.yaml` is generated from these types by `cargo run -p sluice-api --features crd --bin
//! crdgen`; never edit it by hand.

pub mod binding;
pub mod condition;
pub mod drain;
pub mod rules;

pub use binding::{
    BindingStream, LogBinding, LogBindingSpec, LogBindingStatus, PodSelector, SelectorOperator,
    SelectorRequirement,
};
pub use drain::{
    ClientCertificateRef, DeliveryHealth, DrainCredentials, DrainTls, HttpSettings, LogDrain, LogDrainSpec,
    LogDrainStatus, MessageFormat, RateLimit, SecretKeyRef,
};

/// The label by which a Secret opts in to serve as a LogDrain's credentials or TLS material:
/// `sluice.dev/drain-credentials: "true"`. The operator refuses any other Secret a drain names, so
/// creating a LogDrain never lets its author send a Secret they could not read or label themselves.
pub const DRAIN_CREDENTIALS_LABEL: &str = "sluice.dev/drain-credentials";

/// The API group of sluice's custom resources.
pub const GROUP: &str = "sluice.dev";
/// The served (and stored) version.
pub const VERSION: &str = "v1alpha1";

/// Every CRD, in the order `crdgen` writes them, with the file name each goes to under `crds/`.
pub fn all() -> Vec<(
    &'static str,
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
)> {
    use kube::CustomResourceExt;
    vec![
        ("logdrains.sluice.dev.yaml", LogDrain::crd()),
        ("logbindings.sluice.dev.yaml", LogBinding::crd()),
    ]
}

#[cfg(test)]
mod tests;
