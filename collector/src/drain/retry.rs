//! Typed retry decisions, the retry policy, and the drain's health reporting.
//!
//! Invariants:
//! * Errors are classified by type (walking the `source()` chain and downcasting), never by their
//!   text. Every delivery error is retried forever with jittered exponential backoff (the log file
//!   is the buffer, so waiting costs no memory), except an HTTP answer that the drain's policy
//!   (`delivery.dropOnStatus`, by default 400, 413 and 422) says refuses the data itself: that
//!   batch is rejected, its lines are counted dropped with cause `rejected`, and the drain goes on.
//! * Causes are a small fixed set of label values (`connect`, `destination`, `write`, `timeout`,
//!   `tls`, `http_5xx`, `http_4xx`, `http_3xx`, `http`, `other`), so metric cardinality stays
//!   bounded.
//! * A failing drain logs once when it starts failing or its cause changes, and once when it
//!   delivers again, not once per attempt.

use std::{
    error::Error as StdError,
    fmt,
    pin::Pin,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use prometheus::IntCounter;

use tower::{BoxError, retry::Policy};

use super::{backoff::Backoff, http, tcp, udp};
use crate::{metrics::Metrics, pipeline::Batch};

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Try again after a backoff; the failure is counted with this cause.
    Retry {
        /// The `cause` label.
        cause: &'static str,
    },
    /// Give the batch up (the destination refused it as invalid).
    Reject,
}

/// Classify a delivery error by its type.
pub fn classify(err: &(dyn StdError + 'static)) -> Decision {
    let mut next = Some(err);
    // Walk the cause chain: layers (timeout, retry) wrap transport errors.
    while let Some(e) = next {
        if e.is::<tower::timeout::error::Elapsed>() {
            return Decision::Retry { cause: "timeout" };
        }
        if let Some(e) = e.downcast_ref::<tcp::Error>() {
            return Decision::Retry { cause: e.cause() };
        }
        if let Some(e) = e.downcast_ref::<udp::Error>() {
            return Decision::Retry { cause: e.cause() };
        }
        if let Some(e) = e.downcast_ref::<http::Error>() {
            return if e.is_rejected() {
                Decision::Reject
            } else {
                Decision::Retry { cause: e.cause() }
            };
        }
        if http::is_tls(e) {
            return Decision::Retry { cause: "tls" };
        }
        next = e.source();
    }
    Decision::Retry { cause: "other" }
}

/// Renders an error with its whole `source()` chain: `a: b: c`.
pub struct Chain<'a>(pub &'a (dyn StdError + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

/// What a drain's delivery looks like right now (for status reporting).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthSnapshot {
    /// The cause of the current failure streak (`None` while delivering).
    pub failing: Option<&'static str>,
    /// The last delivery error, with its causes (errors never carry credentials).
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<SystemTime>,
    /// When a batch was last delivered.
    pub last_success_at: Option<SystemTime>,
}

/// A drain's delivery health: counts failures and logs state changes.
#[derive(Debug)]
pub struct Health {
    drain: String,
    metrics: Metrics,
    lines_delivered: IntCounter,
    bytes_delivered: IntCounter,
    state: Mutex<HealthSnapshot>,
}

impl Health {
    /// Health of drain `drain`.
    pub fn new(drain: &str, metrics: Metrics) -> Self {
        Self {
            drain: drain.to_owned(),
            lines_delivered: metrics.lines_delivered.with_label_values(&[drain]),
            bytes_delivered: metrics.bytes_delivered.with_label_values(&[drain]),
            metrics,
            state: Mutex::new(HealthSnapshot::default()),
        }
    }

    /// The drain's name.
    pub fn drain(&self) -> &str {
        &self.drain
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HealthSnapshot> {
        // The state is plain data updated in one step; a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> HealthSnapshot {
        self.state().clone()
    }

    /// An attempt failed with `cause`; it will be retried.
    pub fn failure(&self, cause: &'static str, err: &(dyn StdError + 'static)) {
        self.metrics
            .delivery_failures
            .with_label_values(&[self.drain.as_str(), cause])
            .inc();
        let text = Chain(err).to_string();
        let mut state = self.state();
        if state.failing != Some(cause) {
            state.failing = Some(cause);
            tracing::warn!(drain = %self.drain, cause, error = %text, "drain delivery failing; retrying with backoff");
        }
        state.last_error = Some(text);
        state.last_error_at = Some(SystemTime::now());
    }

    /// A batch was delivered.
    pub fn success(&self, lines: u32, bytes: usize) {
        self.lines_delivered.inc_by(u64::from(lines));
        self.bytes_delivered.inc_by(bytes as u64);
        let mut state = self.state();
        state.last_success_at = Some(SystemTime::now());
        if state.failing.take().is_some() {
            tracing::info!(drain = %self.drain, "drain delivering again");
        }
    }

    /// The destination rejected a batch: its lines are given up (and counted).
    pub fn rejected(&self, lines: u32, err: &(dyn StdError + 'static)) {
        self.refused_lines(lines, &Chain(err).to_string());
    }

    /// The destination refused `lines` lines as invalid (`why`): they are given up and counted.
    pub fn refused_lines(&self, lines: u32, why: &str) {
        self.metrics
            .lines_dropped
            .with_label_values(&[self.drain.as_str(), "rejected"])
            .inc_by(u64::from(lines));
        tracing::error!(drain = %self.drain, lines, error = %why, "the destination refused lines as invalid; they are dropped");
        let mut state = self.state();
        state.last_error = Some(why.to_owned());
        state.last_error_at = Some(SystemTime::now());
    }
}

/// The retry policy: typed decisions, jittered exponential backoff, no attempt limit.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    backoff: Backoff,
    attempt: u32,
    health: Arc<Health>,
}

impl RetryPolicy {
    /// A policy reporting to `health`.
    pub fn new(backoff: Backoff, health: Arc<Health>) -> Self {
        Self {
            backoff,
            attempt: 0,
            health,
        }
    }
}

impl<Res> Policy<Arc<Batch>, Res, BoxError> for RetryPolicy {
    type Future = Pin<Box<tokio::time::Sleep>>;

    fn retry(&mut self, _req: &mut Arc<Batch>, result: &mut Result<Res, BoxError>) -> Option<Self::Future> {
        let err = result.as_ref().err()?;
        match classify(&**err) {
            Decision::Reject => None,
            Decision::Retry { cause } => {
                self.health.failure(cause, &**err);
                let delay = self.backoff.delay(self.attempt);
                self.attempt = self.attempt.saturating_add(1);
                Some(Box::pin(tokio::time::sleep(delay)))
            }
        }
    }

    fn clone_request(&mut self, req: &Arc<Batch>) -> Option<Arc<Batch>> {
        Some(Arc::clone(req))
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn boxed(err: impl StdError + Send + Sync + 'static) -> BoxError {
        Box::new(err)
    }

    #[test]
    fn decisions_come_from_error_types() {
        let io = || io::Error::from(io::ErrorKind::ConnectionReset);
        let tls_io = || io::Error::other(io::Error::other(rustls::Error::DecryptError));
        let url = || "https://h/".to_owned();
        let status = |code: u16| ::http::StatusCode::from_u16(code).unwrap();
        let cases: Vec<(BoxError, Decision)> = vec![
            (
                boxed(tower::timeout::error::Elapsed::new()),
                Decision::Retry { cause: "timeout" },
            ),
            (
                boxed(tcp::Error::Connect {
                    address: "h:1".into(),
                    source: io(),
                }),
                Decision::Retry { cause: "connect" },
            ),
            (
                boxed(tcp::Error::Handshake {
                    address: "h:1".into(),
                    source: io(),
                }),
                Decision::Retry { cause: "tls" },
            ),
            (
                boxed(tcp::Error::Closed {
                    address: "h:1".into(),
                }),
                Decision::Retry { cause: "write" },
            ),
            (
                boxed(tcp::Error::Stalled {
                    address: "h:1".into(),
                    idle: std::time::Duration::from_secs(1),
                }),
                Decision::Retry { cause: "timeout" },
            ),
            (
                boxed(udp::Error::Send {
                    address: "h:1".into(),
                    source: io(),
                }),
                Decision::Retry { cause: "write" },
            ),
            (
                boxed(http::Error::Status {
                    url: url(),
                    status: status(503),
                }),
                Decision::Retry { cause: "http_5xx" },
            ),
            (
                boxed(http::Error::Status {
                    url: url(),
                    status: status(429),
                }),
                Decision::Retry { cause: "http_4xx" },
            ),
            (
                boxed(http::Error::Redirect {
                    url: url(),
                    status: status(308),
                    location: "https://elsewhere/".into(),
                }),
                Decision::Retry { cause: "http_3xx" },
            ),
            (
                boxed(http::Error::Rejected {
                    url: url(),
                    status: status(400),
                }),
                Decision::Reject,
            ),
            (boxed(tls_io()), Decision::Retry { cause: "tls" }),
            (boxed(io()), Decision::Retry { cause: "other" }),
        ];
        for (err, want) in cases {
            assert_eq!(classify(&*err), want, "{}", Chain(&*err));
        }
    }

    #[test]
    fn health_logs_state_changes_and_keeps_the_last_error() {
        let metrics = Metrics::new().unwrap();
        let health = Health::new("d", metrics.clone());
        let err = tcp::Error::Closed {
            address: "h:1".into(),
        };
        health.failure("write", &err);
        health.failure("write", &err);
        let snapshot = health.snapshot();
        assert_eq!(snapshot.failing, Some("write"));
        assert_eq!(snapshot.last_error.as_deref(), Some("h:1 closed the connection"));
        assert_eq!(
            metrics.delivery_failures.with_label_values(&["d", "write"]).get(),
            2
        );
        health.success(3, 30);
        let snapshot = health.snapshot();
        assert_eq!(snapshot.failing, None);
        assert!(snapshot.last_success_at.is_some());
        assert_eq!(metrics.lines_delivered.with_label_values(&["d"]).get(), 3);
        assert_eq!(metrics.bytes_delivered.with_label_values(&["d"]).get(), 30);
    }
}
