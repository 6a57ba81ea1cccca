//! Condition types and reasons the operator writes into `status.conditions` and uses as Event
//! reasons. Reasons are PascalCase and stable: people write alerts on them.

/// The condition type both kinds carry: whether the object does what it says.
pub const READY: &str = "Ready";

/// The condition type of a `LogDrain` that says whether its lines reach the destination, from
/// the collectors' reports.
pub const DELIVERING: &str = "Delivering";

/// Reasons for the `Delivering` condition (and Event reasons).
pub mod delivering {
    /// Every node that runs pods feeding the drain is covered, and none reports a problem (True).
    pub const DELIVERING: &str = "Delivering";
    /// No pod feeds the drain, so there is nothing to deliver (Unknown).
    pub const NO_PODS: &str = "NoPods";
    /// A node runs pods feeding the drain but has no live collector Lease (False).
    pub const NODE_NOT_COVERED: &str = "NodeNotCovered";
    /// The drain's delivery attempts are failing on some node (False).
    pub const DRAIN_FAILING: &str = "DrainFailing";
    /// Lines were given up since the last status (False).
    pub const LINES_DROPPED: &str = "LinesDropped";
    /// The drain is far behind the logs on some node (False).
    pub const LAGGING: &str = "Lagging";
    /// Event reason: the drain delivers again after failing.
    pub const DRAIN_RECOVERED: &str = "DrainRecovered";
}

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
