//! Bindings over pods on two nodes give exactly those nodes' configs; pod, binding and drain
//! changes update exactly the affected nodes; a node with nothing bound has no config.

use anyhow::Result;
use serde_json::json;
use sluice_api::crd::{LogBinding, LogDrain};

use crate::{env_or_skip, support::wait_for};

fn v(items: &[(&str, &str, &[&str])]) -> Vec<(String, String, Vec<String>)> {
    items
        .iter()
        .map(|(p, id, d)| {
            (
                (*p).into(),
                (*id).into(),
                d.iter().map(|s| (*s).to_owned()).collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn configs_follow_pods_bindings_and_drains() -> Result<()> {
    let env = env_or_skip!("render");
    let (a, b, c) = (
        env.create_node("a").await?,
        env.create_node("b").await?,
        env.create_node("c").await?,
    );
    let ns = env.tenant.clone();
    env.apply::<LogDrain>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain", "metadata": {"name": "logs"}, "spec": {"url": "syslog://logs.example.com:514"}})).await?;
    env.apply::<LogBinding>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "drains": ["logs"]}})).await?;
    env.create_pod("web-1", "web", &a, &[("app", "containerd://a1")])
        .await?;
    env.create_pod("web-2", "web", &b, &[("app", "docker://b1")])
        .await?;
    env.create_pod("db-1", "db", &c, &[("db", "containerd://c1")])
        .await?;

    let op = env.operator("r1", &[]).await?;
    op.wait_ready_leader().await?;
    let drain = format!("{ns}-logs");
    assert_eq!(
        env.containers(&a).await?,
        v(&[("web-1", "containerd://a1", &[drain.as_str()])])
    );
    assert_eq!(
        env.containers(&b).await?,
        v(&[("web-2", "docker://b1", &[drain.as_str()])])
    );
    assert!(
        env.node_secret(&c).await?.is_none(),
        "node c runs nothing bound: no config"
    );
    let secret_a = env.node_secret(&a).await?.expect("config of a");
    let owner = &secret_a.metadata.owner_references.clone().unwrap_or_default()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", a.as_str()));
    let rv = |s: Option<k8s_openapi::api::core::v1::Secret>| s.and_then(|s| s.metadata.resource_version);
    let rv_a = rv(Some(secret_a));

    // A restart with a new container id on b updates b only.
    env.set_container_ids("web-2", &[("app", "docker://b2")]).await?;
    wait_for("b's config has the new container id", || async {
        Ok(env.containers(&b).await? == v(&[("web-2", "docker://b2", &[drain.as_str()])]))
    })
    .await?;
    assert_eq!(
        rv(env.node_secret(&a).await?),
        rv_a,
        "a's config must not be rewritten"
    );

    // A pod moved (deleted, re-created on another node): b loses its config, a gains it.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(env.client.clone(), &ns);
    // No kubelet confirms a graceful deletion here: delete at once, as a kubelet finally does.
    pods.delete("web-2", &kube::api::DeleteParams::default().grace_period(0))
        .await?;
    wait_for("b's config deleted", || async {
        Ok(env.node_secret(&b).await?.is_none())
    })
    .await?;
    assert_eq!(rv(env.node_secret(&a).await?), rv_a, "a untouched by b's pod");
    env.create_pod("web-2", "web", &a, &[("app", "containerd://a2")])
        .await?;
    wait_for("a has both pods", || async {
        Ok(env.containers(&a).await?
            == v(&[
                ("web-1", "containerd://a1", &[drain.as_str()]),
                ("web-2", "containerd://a2", &[drain.as_str()]),
            ]))
    })
    .await?;

    // The binding now also selects db: c gets a config.
    env.apply::<LogBinding>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": "web"}, "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]}, "drains": ["logs"]}})).await?;
    wait_for("c has db-1", || async {
        Ok(env.containers(&c).await? == v(&[("db-1", "containerd://c1", &[drain.as_str()])]))
    })
    .await?;

    // The drain changes: every node using it gets the new URL.
    env.apply::<LogDrain>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain", "metadata": {"name": "logs"}, "spec": {"url": "syslog-tls://logs.example.com:6514"}})).await?;
    for node in [&a, &c] {
        wait_for("the new URL on every node", || async {
            Ok(env
                .node_config(node)
                .await?
                .is_some_and(|cfg| cfg.drains[0].url == "syslog-tls://logs.example.com:6514"))
        })
        .await?;
    }

    // The binding goes: no node has anything bound, so no configs remain.
    let bindings: kube::Api<LogBinding> = kube::Api::namespaced(env.client.clone(), &ns);
    bindings.delete("web", &Default::default()).await?;
    for node in [&a, &b, &c] {
        wait_for("configs deleted", || async {
            Ok(env.node_secret(node).await?.is_none())
        })
        .await?;
    }
    op.stop().await
}
