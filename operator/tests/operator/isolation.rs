//! A binding reaches only drains and pods of its own namespace.

use anyhow::Result;
use serde_json::json;
use sluice_api::crd::{LogBinding, LogDrain};

use crate::{
    env_or_skip,
    support::{ready, wait_for},
};

#[tokio::test]
async fn another_namespaces_drain_is_refused() -> Result<()> {
    let env = env_or_skip!("isolation");
    let (ns, other) = (env.tenant.clone(), format!("{}-other", env.tenant));
    env.namespace(&other).await?;
    let node = env.create_node("n").await?;
    // The other team has a drain called `logs`; this team names `other/logs`: refused by the API.
    env.apply::<LogDrain>(&other, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain", "metadata": {"name": "logs"}, "spec": {"url": "syslog://other.example:514"}})).await?;
    let refused = env
        .apply::<LogBinding>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": "steal"}, "spec": {"selector": {}, "drains": [format!("{other}/logs")]}}))
        .await;
    match refused {
        Err(kube::Error::Api(s)) => assert!(
            s.message
                .contains("a binding can only name LogDrains of its own namespace"),
            "unexpected message: {}",
            s.message
        ),
        other => panic!("a cross-namespace drain reference must be refused, got {other:?}"),
    }

    // Naming `logs` plainly means this namespace's `logs`, which does not exist: UnknownDrain,
    // and the other team's drain is not used for this team's pod.
    env.create_pod("web-1", "web", &node, &[("app", "containerd://mine")])
        .await?;
    let op = env.operator("i1", &[&other]).await?;
    env.apply::<LogBinding>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": "web"}, "spec": {"selector": {}, "drains": ["logs"]}})).await?;
    let bindings: kube::Api<LogBinding> = kube::Api::namespaced(env.client.clone(), &ns);
    wait_for("UnknownDrain", || async {
        let b = bindings.get("web").await?;
        Ok(b.status
            .and_then(|s| ready(&s.conditions))
            .is_some_and(|(s, r, _)| s == "False" && r == "UnknownDrain"))
    })
    .await?;
    op.wait_ready_leader().await?;
    assert!(
        env.node_secret(&node).await?.is_none(),
        "no config may route this pod to another namespace's drain"
    );

    // The other team's binding selecting `app=web` reaches only its own pods (it has none here).
    env.apply::<LogBinding>(&other, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "drains": ["logs"]}})).await?;
    let other_bindings: kube::Api<LogBinding> = kube::Api::namespaced(env.client.clone(), &other);
    wait_for("the other binding resolves with 0 pods", || async {
        let b = other_bindings.get("web").await?;
        Ok(b.status.is_some_and(|s| {
            s.matched_pods == 0 && ready(&s.conditions).is_some_and(|(s, _, _)| s == "True")
        }))
    })
    .await?;
    assert!(
        env.node_secret(&node).await?.is_none(),
        "another namespace's binding must not select this pod"
    );
    op.stop().await
}
