//! The collector's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the tail engine is
//! going round its loop: a hung or dead engine fails it, so a liveness probe restarts the
//! collector, which resumes from its checkpoint), `/readyz` (a config is loaded, the engine
//! runs, and its checkpoint can be written; the body lists drains that were skipped because
//! their settings cannot be used).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
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
}

impl Health {
    /// Not ready until [`Health::set_ready`]; not live once the tail engine has been silent for
    /// longer than `stall_after`.
    pub fn new(metrics: Metrics, stall_after: Duration) -> Self {
        Self {
            metrics,
            ready: Arc::new(AtomicBool::new(false)),
            stall_after,
        }
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
    if !health.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned());
    }
    if health.metrics.checkpoint_failing() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the checkpoint cannot be written (state directory unwritable or full); lines still ship, but a restart would send some again\n".to_owned(),
        );
    }
    // Ready, with a word about any drain left out: the others run.
    let mut body = "ready\n".to_owned();
    for (drain, why) in health.metrics.skipped_drains.list() {
        body.push_str(&format!("drain {drain:?} skipped: {why}\n"));
    }
    (StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;

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
