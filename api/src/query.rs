//! The collector's query API, as the operator calls it (see the collector's `query` module):
//! `GET /v1/recent` and `GET /v1/follow` answer JSON lines, one [`RecentLine`] each (a follow
//! may also send `{"lagged":N}` for N lines it lost), to a request carrying the token the operator
//! and the collectors share ([`TOKEN_KEY`] of the Secret [`TOKEN_SECRET`] in the sluice namespace).

use serde::{Deserialize, Serialize};

/// The Secret (in the sluice namespace) holding the query token.
pub const TOKEN_SECRET: &str = "sluice-query-token";
/// The key of the token in [`TOKEN_SECRET`].
pub const TOKEN_KEY: &str = "token";
/// The path of a recent-lines dump.
pub const RECENT_PATH: &str = "/v1/recent";
/// The path of a follow.
pub const FOLLOW_PATH: &str = "/v1/follow";

/// One line as the query API returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentLine {
    /// The runtime's timestamp (RFC3339, as in the log file).
    pub time: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The message.
    pub line: String,
}
