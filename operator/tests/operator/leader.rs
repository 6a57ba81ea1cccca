//! Two replicas: only the leader writes; killing the leader hands over to the other, which
//! rewrites a node config the old leader's late write changed.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use sluice_api::crd::{LogBinding, LogDrain};

use crate::{
    env_or_skip,
    support::{TestEnv, wait_for},
};

/// A node with pod `p1` bound to drain `logs`; the node's name.
async fn one_bound_pod(env: &TestEnv) -> Result<String> {
    let ns = env.tenant.clone();
    let node = env.create_node("n").await?;
    env.apply::<LogDrain>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain", "metadata": {"name": "logs"}, "spec": {"url": "syslog://h:514"}})).await?;
    env.apply::<LogBinding>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": "web"}, "spec": {"selector": {}, "drains": ["logs"]}})).await?;
    env.create_pod("p1", "web", &node, &[("app", "containerd://one")])
        .await?;
    Ok(node)
}

#[tokio::test]
async fn only_the_leader_writes_and_a_killed_leader_hands_over() -> Result<()> {
    let env = env_or_skip!("leader");
    let node = one_bound_pod(&env).await?;

    let one = env.operator("replica-1", &[]).await?;
    one.wait_ready_leader().await?;
    let two = env.operator("replica-2", &[]).await?;
    wait_for("the first config", || async {
        Ok(env.node_config(&node).await?.is_some())
    })
    .await?;
    // The second replica is up (ready as a standby) and must not lead or write.
    wait_for("replica-2 standing by", || async {
        Ok(two.ctx.health.is_ready())
    })
    .await?;
    env.create_pod("p2", "web", &node, &[("app", "containerd://two")])
        .await?;
    wait_for("p2 rendered by the leader", || async {
        Ok(env.containers(&node).await?.len() == 2)
    })
    .await?;
    assert!(!two.ctx.health.is_leader());
    assert_eq!(two.writes(), 0, "a standby must not write");

    // Kill the leader (no Lease release): the standby takes over after the lease expires and
    // renders the next change.
    one.kill();
    wait_for("replica-2 leads", || async {
        Ok(two.ctx.health.is_leader() && two.ctx.health.is_ready())
    })
    .await?;
    env.create_pod("p3", "web", &node, &[("app", "containerd://three")])
        .await?;
    wait_for("p3 rendered by the new leader", || async {
        Ok(env.containers(&node).await?.len() == 3)
    })
    .await?;
    assert!(two.writes() >= 1);
    two.stop().await
}

#[tokio::test]
async fn a_late_write_of_a_deposed_leader_is_corrected() -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, Patch, PatchParams};
    use sluice_operator::{reconcile::node_config, render::content_hash};

    let env = env_or_skip!("leader-late");
    let node = one_bound_pod(&env).await?;
    let one = env.operator("late-1", &[]).await?;
    one.wait_ready_leader().await?;
    wait_for("the first config", || async {
        Ok(env.containers(&node).await?.len() == 1)
    })
    .await?;
    one.kill();
    // A long lease: the new leader's second read comes well after the late write below.
    let two = env
        .operator_with("late-2", &[], |s| s.lease_duration = Duration::from_secs(10))
        .await?;
    two.wait_ready_leader().await?;
    // The deposed leader's write of an older config lands after the new leader read the configs.
    let stale = format!("version: 1\nnode: {node}\n");
    let patch = json!({"metadata": {"annotations": {node_config::HASH_ANNOTATION: content_hash(&stale)}},
        "stringData": {node_config::CONFIG_KEY: stale}});
    Api::<Secret>::namespaced(env.client.clone(), &env.system)
        .patch(
            &node_config::secret_name(&node),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    assert!(env.containers(&node).await?.is_empty(), "the late write landed");
    wait_for("the new leader restores the config", || async {
        Ok(env.containers(&node).await?.len() == 1)
    })
    .await?;
    two.stop().await
}
