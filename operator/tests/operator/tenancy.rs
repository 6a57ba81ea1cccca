//! One tenant cannot hurt another on a shared node: a drain the collector could not build is
//! refused on its own (`Ready=False`, `InvalidSpec`, the field named) and never rendered, while the
//! other drains of the node, of its own namespace too, are rendered and Ready.

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{Value, json};
use sluice_api::crd::{LogBinding, LogDrain};

use crate::{
    env_or_skip,
    support::{TestEnv, drain_ready, has_event, wait_for},
};

/// Apply LogDrain `name` in `ns` with `spec`, and a LogBinding of the same name feeding it from
/// the pods with `app=web`.
pub async fn drain_and_binding(env: &TestEnv, ns: &str, name: &str, spec: Value) -> Result<()> {
    env.apply::<LogDrain>(
        ns,
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain",
        "metadata": {"name": name}, "spec": spec}),
    )
    .await?;
    env.apply::<LogBinding>(
        ns,
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding",
        "metadata": {"name": name}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "drains": [name]}}),
    )
    .await?;
    Ok(())
}

/// Wait until drain `ns/name` has `Ready` = `status` with `reason`; its message.
pub async fn wait_ready(env: &TestEnv, ns: &str, name: &str, status: &str, reason: &str) -> Result<String> {
    let what = format!("drain {ns}/{name} Ready={status} {reason}");
    wait_for(&what, || async {
        Ok(drain_ready(&env.client, ns, name)
            .await?
            .is_some_and(|(s, r, _)| s == status && r == reason))
    })
    .await?;
    Ok(drain_ready(&env.client, ns, name)
        .await?
        .map(|(_, _, message)| message)
        .unwrap_or_default())
}

/// The drain names of a node's config, sorted.
pub async fn node_drains(env: &TestEnv, node: &str) -> Result<Vec<String>> {
    let config = env.node_config(node).await?;
    let mut names: Vec<String> = config
        .into_iter()
        .flat_map(|c| c.drains)
        .map(|d| d.name)
        .collect();
    names.sort();
    Ok(names)
}

#[tokio::test]
async fn a_drain_the_collector_cannot_build_is_refused_alone() -> Result<()> {
    let env = env_or_skip!("tenancy-bad");
    let (a, b) = (env.tenant.clone(), format!("{}-b", env.tenant));
    env.namespace(&b).await?;
    let node = env.create_node("n").await?;
    let web = || BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    env.create_pod_in(&a, "web-a", web(), &node, &[("app", "containerd://a1")])
        .await?;
    env.create_pod_in(&b, "web-b", web(), &node, &[("app", "containerd://b1")])
        .await?;
    let op = env.operator("t1", &[&b]).await?;
    drain_and_binding(
        &env,
        &a,
        "logs",
        json!({"url": "syslog://logs-a.example.com:514"}),
    )
    .await?;
    drain_and_binding(
        &env,
        &b,
        "fine",
        json!({"url": "syslog://logs-b.example.com:514"}),
    )
    .await?;
    // Accepted by the schema, refused by the collector: an unknown template placeholder and a
    // header value with a line break.
    drain_and_binding(
        &env,
        &b,
        "bad",
        json!({"url": "syslog://logs-b.example.com:514",
        "format": {"appName": "{namespace}/{bogus}"}}),
    )
    .await?;
    drain_and_binding(
        &env,
        &b,
        "bad-header",
        json!({"url": "https://in.example.com/v1",
        "http": {"headers": {"X-Tenant": "b\r\nX-Injected: 1"}}}),
    )
    .await?;

    let message = wait_ready(&env, &b, "bad", "False", "InvalidSpec").await?;
    assert!(
        message.starts_with("spec.format.appName: ") && message.contains("{bogus}"),
        "{message}"
    );
    let message = wait_ready(&env, &b, "bad-header", "False", "InvalidSpec").await?;
    assert!(message.starts_with("spec.http.headers.X-Tenant: "), "{message}");
    wait_for("an InvalidSpec Event", || {
        has_event(&env.client, &b, "bad", "InvalidSpec")
    })
    .await?;
    wait_ready(&env, &a, "logs", "True", "Resolved").await?;
    wait_ready(&env, &b, "fine", "True", "Resolved").await?;
    let mut want = vec![format!("{a}-logs"), format!("{b}-fine")];
    want.sort();
    wait_for("the node config holds the good drains", || async {
        Ok(node_drains(&env, &node).await? == want)
    })
    .await?;
    let routes: Vec<(String, Vec<String>)> = env
        .node_config(&node)
        .await?
        .into_iter()
        .flat_map(|c| c.containers)
        .map(|c| (c.pod, c.drains))
        .collect();
    assert_eq!(
        routes,
        [
            ("web-a".to_owned(), vec![format!("{a}-logs")]),
            ("web-b".to_owned(), vec![format!("{b}-fine")]),
        ]
    );
    op.stop().await
}
