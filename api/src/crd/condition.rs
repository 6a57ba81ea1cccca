//! Condition types and reasons the operator writes into `status.conditions` and uses as Event
//! reasons. Reasons are PascalCase and stable: people write alerts on them.

/// The condition type both kinds carry: whether the object does what it says.
pub const READY: &str = "Ready";

/// Reasons for the `Ready` condition (and Event reasons).
pub mod reason {
    /// Everything resolves (True).
    pub const RESOLVED: &str = "Resolved";
    /// A binding names a LogDrain that does not exist in its namespace.
    pub const UNKNOWN_DRAIN: &str = "UnknownDrain";
    /// A binding names a LogDrain that exists but is not ready itself.
    pub const DRAIN_NOT_READY: &str = "DrainNotReady";
    /// A drain names a Secret that does not exist in its namespace.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// A drain names a Secret that has not opted in to serve drains (it lacks the
    /// [`DRAIN_CREDENTIALS_LABEL`](crate::crd::DRAIN_CREDENTIALS_LABEL) label).
    pub const SECRET_NOT_PERMITTED: &str = "SecretNotPermitted";
    /// A drain names a key its Secret does not have.
    pub const SECRET_KEY_NOT_FOUND: &str = "SecretKeyNotFound";
    /// A CA bundle or client certificate (or its key) is unusable: not PEM, not X.509, outside its
    /// validity period (for a CA bundle: every certificate in it), or a private key that does not
    /// belong to the client certificate.
    pub const INVALID_CERTIFICATE: &str = "InvalidCertificate";
    /// A drain's settings take more than a drain's budget once rendered, or a node's config would
    /// exceed its size limit with the drain, so it is left out of that node's config.
    pub const CONFIG_TOO_LARGE: &str = "ConfigTooLarge";
    /// A drain's settings are invalid (written before the schema forbade it).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// An object names something in another namespace, which sluice refuses.
    pub const CROSS_NAMESPACE_REFERENCE: &str = "CrossNamespaceReference";
}
