//! The HTTP endpoints: `/healthz`, `/readyz` (503 until the first pass, then 200) and `/metrics`
//! with the operator's counters.

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::{env_or_skip, support::wait_for};

async fn get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    let code = text.split(' ').nth(1).unwrap_or_default().parse()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() -> Result<()> {
    let env = env_or_skip!("health");
    let op = env.operator("h1", &[]).await?;
    let stop = CancellationToken::new();
    let (addr, server) =
        sluice_operator::server::serve(op.ctx.clone(), "127.0.0.1:0".parse()?, stop.clone()).await?;
    assert_eq!(get(addr, "/healthz").await?.0, 200);
    op.wait_ready_leader().await?;
    assert_eq!(get(addr, "/readyz").await?.0, 200);
    let drain = serde_json::json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain", "metadata": {"name": "logs"}, "spec": {"url": "syslog://h:514"}});
    env.apply::<sluice_api::crd::LogDrain>(&env.tenant, drain).await?;
    wait_for(
        "metrics show the leader, a reconcile and a status write",
        || async {
            let (code, body) = get(addr, "/metrics").await?;
            Ok(code == 200
                && body.contains("sluice_operator_leader 1")
                && body.contains("sluice_operator_reconciles_total")
                && body.contains("sluice_operator_reconcile_duration_seconds")
                && body.contains("sluice_operator_api_writes_total{resource=\"logdrain\",verb=\"status\"} 1"))
        },
    )
    .await?;
    op.ctx.health.set_ready(false);
    assert_eq!(get(addr, "/readyz").await?.0, 503);
    stop.cancel();
    server.await?;
    op.stop().await
}
