//! The HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process runs) and `/readyz`
//! (see [`crate::context::Health::is_ready`]).
//!
//! Invariant: the server stops when the shutdown token is cancelled; it never blocks the operator.

use std::net::SocketAddr;

use axum::{Router, extract::State, http::StatusCode, routing::get};
use tokio_util::sync::CancellationToken;

use crate::{Context, Error, Result};

/// Bind `addr` and serve until `shutdown`. Returns the bound address (useful with port 0) and the
/// serving task.
pub async fn serve(
    ctx: Context,
    addr: SocketAddr,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Serve { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Serve { addr, source })?;
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(ctx): State<Context>| async move { ctx.metrics.render() }),
        )
        .route(
            "/healthz",
            get(|State(ctx): State<Context>| async move {
                if ctx.health.is_live(ctx.settings.stall_after) {
                    (StatusCode::OK, "ok\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "stalled: the operator's loop made no progress recently\n",
                    )
                }
            }),
        )
        .route(
            "/readyz",
            get(|State(ctx): State<Context>| async move {
                if ctx.health.is_ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "starting: the first pass (every node config) is not done yet\n",
                    )
                }
            }),
        )
        .with_state(ctx);
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "metrics/health server stopped");
        }
    });
    Ok((bound, task))
}
