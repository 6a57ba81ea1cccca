//! The collector's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the tail engine is
//! going round its loop: a hung or dead engine fails it, so a liveness probe restarts the
//! collector, which resumes from its checkpoint), `/readyz` (a config is in force and the engine
//! runs; the body says where the config came from: `api`, `saved` or `file`, any rejected
//! change or API-server trouble, and drains skipped because their settings cannot be used; it
//! fails while the checkpoint cannot be written).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus::{Encoder, TextEncoder};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What the endpoints report on.
#[derive(Clone, Debug)]
pub struct Health {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    stall_after: Duration,
    config: ConfigState,
}

/// Where the config in force came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// This node's Secret, read from the API server.
    Api,
    /// The copy saved in the state dir by an earlier run (the API server was not reachable).
    Saved,
    /// The `--config` file.
    File,
}

impl Origin {
    /// `api`, `saved` or `file`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Saved => "saved",
            Self::File => "file",
        }
    }
}

#[derive(Debug, Default)]
struct ConfigInner {
    origin: Option<Origin>,
    rejected: Option<String>,
    api_error: Option<String>,
}

/// The config's state, shown on `/readyz`: its origin, a rejected change, API-server trouble.
#[derive(Clone, Debug, Default)]
pub struct ConfigState(Arc<Mutex<ConfigInner>>);

impl ConfigState {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConfigInner> {
        // Plain data set in one step: a panic elsewhere cannot leave it torn.
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// A config from `origin` is in force.
    pub fn set_origin(&self, origin: Origin) {
        self.lock().origin = Some(origin);
    }

    /// Where the config in force came from (`None` before the first).
    pub fn origin(&self) -> Option<Origin> {
        self.lock().origin
    }

    /// The last change was rejected for this reason (or `None`: the last change was good).
    pub fn set_rejected(&self, why: Option<String>) {
        self.lock().rejected = why;
    }

    /// The API server cannot be reached (or `None`: it can). Returns whether that changed.
    pub fn api_error(&self, error: Option<String>) -> bool {
        let mut inner = self.lock();
        let changed = inner.api_error.is_some() != error.is_some();
        inner.api_error = error;
        changed
    }

    fn describe(&self) -> (bool, String) {
        let inner = self.lock();
        let mut text = match inner.origin {
            Some(origin) => format!("ready: config from {}\n", origin.as_str()),
            None => "not ready: no node config yet\n".to_owned(),
        };
        if let Some(why) = &inner.rejected {
            text.push_str(&format!(
                "last change rejected (the config in force stays): {why}\n"
            ));
        }
        if let Some(error) = &inner.api_error {
            text.push_str(&format!("API server: {error}\n"));
        }
        (inner.origin.is_some(), text)
    }
}

impl Health {
    /// Not ready until [`Health::set_ready`]; not live once the tail engine has been silent for
    /// longer than `stall_after`.
    pub fn new(metrics: Metrics, stall_after: Duration) -> Self {
        Self {
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            stall_after,
            config: ConfigState::default(),
        }
    }

    /// The config's state, for its sources to update.
    pub fn config(&self) -> &ConfigState {
        &self.config
    }

    /// Mark the collector ready (or not, while it shuts down).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// Bind `addr` now (so a port clash fails the start), serve until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    cancel: CancellationToken,
) -> std::io::Result<impl Future<Output = std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    Ok(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(cancel.cancelled_owned())
            .await
    })
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    let mut body = Vec::new();
    match TextEncoder::new().encode(&health.metrics.registry().gather(), &mut body) {
        Ok(()) => (StatusCode::OK, [("content-type", prometheus::TEXT_FORMAT)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn healthz(State(health): State<Health>) -> impl IntoResponse {
    liveness(health.metrics.engine_silent_for(), health.stall_after)
}

/// The `/healthz` answer for an engine silent for `silent`.
fn liveness(silent: Duration, stall_after: Duration) -> (StatusCode, String) {
    if silent <= stall_after {
        return (StatusCode::OK, "ok\n".into());
    }
    let message = format!(
        "the tail engine has not gone round its loop for {} s (limit {} s): it is hung or died; restarting the collector resumes from its checkpoint\n",
        silent.as_secs(),
        stall_after.as_secs()
    );
    (StatusCode::SERVICE_UNAVAILABLE, message)
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    let (has_config, mut text) = health.config.describe();
    if !health.ready.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready (starting or stopping)\n{text}"),
        );
    }
    if !has_config {
        return (StatusCode::SERVICE_UNAVAILABLE, text);
    }
    if health.metrics.checkpoint_failing() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the checkpoint cannot be written (state directory unwritable or full); lines still ship, but a restart would send some again\n{text}"
            ),
        );
    }
    // Ready, with a word about any drain left out: the others run.
    for (drain, why) in health.metrics.skipped_drains.list() {
        text.push_str(&format!("drain {drain:?} skipped: {why}\n"));
    }
    (StatusCode::OK, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_says_where_the_config_came_from() {
        let state = ConfigState::default();
        assert!(!state.describe().0);
        state.set_origin(Origin::Saved);
        assert!(state.api_error(Some("connection refused".into())));
        assert!(!state.api_error(Some("connection refused".into())));
        state.set_rejected(Some("drains[0].url: bad".into()));
        let (ready, text) = state.describe();
        assert!(ready);
        assert!(text.contains("config from saved"), "{text}");
        assert!(
            text.contains("drains[0].url") && text.contains("connection refused"),
            "{text}"
        );
    }

    #[test]
    fn a_silent_engine_fails_the_liveness_check() {
        let limit = Duration::from_secs(60);
        assert_eq!(liveness(Duration::from_secs(1), limit).0, StatusCode::OK);
        assert_eq!(liveness(limit, limit).0, StatusCode::OK);
        let (status, message) = liveness(Duration::from_secs(75), limit);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(message.contains("for 75 s (limit 60 s)"), "{message}");
    }

    #[test]
    fn the_engine_is_silent_from_the_start_until_it_reports() {
        use crate::engine::Emitter as _;
        let metrics = Metrics::new().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let before = metrics.engine_silent_for();
        assert!(before >= Duration::from_millis(200));
        metrics.engine_alive();
        assert!(metrics.engine_silent_for() < before);
    }
}
