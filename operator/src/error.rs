//! The operator's errors. Each carries the action and object it was about, and [`Error::kind`]
//! gives a bounded label for metrics and Event reasons.
//!
//! Invariant: no variant carries Secret values (API errors from kube never echo them either).

/// Something the operator could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("{action} {object}: {source}")]
    Kube {
        /// What the operator was doing (`apply`, `delete`, `patch status`, `get`, …).
        action: &'static str,
        /// The object, as `kind namespace/name`.
        object: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// A watch stream failed (it is retried with backoff; this is for reporting).
    #[error("watching {resource}: {source}")]
    Watch {
        /// The watched resource.
        resource: &'static str,
        /// The watcher error.
        #[source]
        source: kube::runtime::watcher::Error,
    },
    /// A node config could not be rendered to YAML.
    #[error("rendering the config of node {node}: {source}")]
    Render {
        /// The node.
        node: String,
        /// The serializer error.
        #[source]
        source: sluice_api::node_config::ConfigError,
    },
    /// The Lease used for leader election could not be read or written.
    #[error("leader election lease {lease}: {source}")]
    Lease {
        /// `namespace/name` of the Lease.
        lease: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The metrics/health server could not start.
    /// A write was not sent: this replica's leader Lease may have expired.
    #[error("not writing: this replica may no longer hold the leader Lease")]
    NotLeader,
    /// The metrics/health server could not start.
    #[error("serving metrics and health on {addr}: {source}")]
    Serve {
        /// The listen address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with the operator's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short PascalCase label: the `error` label of metrics and the reason of warning Events.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube { source, .. } | Error::Lease { source, .. } => match source {
                kube::Error::Api(status) if status.code == 409 => "Conflict",
                kube::Error::Api(status) if status.code == 404 => "NotFound",
                kube::Error::Api(status) if status.code == 403 => "Forbidden",
                kube::Error::Api(_) => "ApiError",
                _ => "ApiUnreachable",
            },
            Error::Watch { .. } => "WatchFailed",
            Error::Render { .. } => "RenderFailed",
            Error::Serve { .. } => "ServeFailed",
            Error::NotLeader => "NotLeader",
        }
    }

    /// Build a [`Error::Kube`].
    pub fn kube(action: &'static str, object: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            action,
            object: object.into(),
            source,
        }
    }
}
