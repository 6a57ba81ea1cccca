//! Quiet: a restarted operator with nothing changed writes nothing (resourceVersions unchanged).

use anyhow::Result;
use serde_json::json;
use sluice_api::crd::{LogBinding, LogDrain};

use crate::{env_or_skip, support::wait_for};

#[tokio::test]
async fn a_restart_writes_nothing() -> Result<()> {
    let env = env_or_skip!("quiet");
    let ns = env.tenant.clone();
    let (a, b) = (env.create_node("a").await?, env.create_node("b").await?);
    env.apply::<LogDrain>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain", "metadata": {"name": "logs"}, "spec": {"url": "syslog://h:514"}})).await?;
    env.apply::<LogBinding>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": "web"}, "spec": {"selector": {}, "drains": ["logs", "missing"]}})).await?;
    for (i, node) in [&a, &b, &a].into_iter().enumerate() {
        env.create_pod(
            &format!("p{i}"),
            "web",
            node,
            &[("app", &format!("containerd://c{i}"))],
        )
        .await?;
    }
    let first = env.operator("q1", &[]).await?;
    first.wait_ready_leader().await?;
    let bindings: kube::Api<LogBinding> = kube::Api::namespaced(env.client.clone(), &ns);
    let drains: kube::Api<LogDrain> = kube::Api::namespaced(env.client.clone(), &ns);
    wait_for("statuses written", || async {
        Ok(bindings.get("web").await?.status.is_some() && drains.get("logs").await?.status.is_some())
    })
    .await?;
    assert!(
        first.writes() >= 2 + 2,
        "two node configs and two statuses at least"
    );
    let versions = || async {
        anyhow::Ok((
            env.node_secret(&a)
                .await?
                .and_then(|s| s.metadata.resource_version),
            env.node_secret(&b)
                .await?
                .and_then(|s| s.metadata.resource_version),
            bindings.get("web").await?.metadata.resource_version,
            drains.get("logs").await?.metadata.resource_version,
        ))
    };
    let before = versions().await?;
    first.stop().await?;

    let second = env.operator("q2", &[]).await?;
    second.wait_ready_leader().await?;
    assert_eq!(
        second.writes(),
        0,
        "a restart with nothing changed must not write"
    );
    assert_eq!(versions().await?, before);
    second.stop().await
}
