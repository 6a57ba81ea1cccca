//! Statuses explain problems: an unknown drain or a missing Secret gives `Ready=False` with the
//! reason and a warning Event; fixing it makes it `True`. Secret values never appear.

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use serde_json::json;
use sluice_api::crd::{LogBinding, LogDrain};

use crate::{
    env_or_skip,
    support::{has_event, ready, wait_for},
};

type Ready = Option<(String, String, String)>;

async fn binding_ready(api: &Api<LogBinding>, name: &str) -> Result<Ready> {
    Ok(api.get(name).await?.status.and_then(|s| ready(&s.conditions)))
}

async fn drain_ready(api: &Api<LogDrain>, name: &str) -> Result<Ready> {
    Ok(api.get(name).await?.status.and_then(|s| ready(&s.conditions)))
}

fn is(ready: &Ready, status: &str, reason: &str) -> bool {
    ready
        .as_ref()
        .is_some_and(|(s, why, _)| s == status && why == reason)
}

#[tokio::test]
async fn unknown_drain_then_fixed() -> Result<()> {
    let env = env_or_skip!("status-unknown");
    let ns = env.tenant.clone();
    let op = env.operator("s1", &[]).await?;
    env.apply::<LogBinding>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": "web"}, "spec": {"selector": {}, "drains": ["nowhere"]}})).await?;
    let bindings: Api<LogBinding> = Api::namespaced(env.client.clone(), &ns);
    wait_for("binding Ready=False UnknownDrain", || async {
        Ok(is(
            &binding_ready(&bindings, "web").await?,
            "False",
            "UnknownDrain",
        ))
    })
    .await?;
    let (_, _, message) = binding_ready(&bindings, "web").await?.expect("condition");
    assert!(message.contains("\"nowhere\" does not exist"), "{message}");
    wait_for("an UnknownDrain Event", || {
        has_event(&env.client, &ns, "web", "UnknownDrain")
    })
    .await?;
    let b = bindings.get("web").await?;
    assert_eq!(
        b.status.as_ref().map(|s| s.unresolved_drains.clone()),
        Some(vec!["nowhere".to_owned()])
    );
    assert_eq!(
        b.status.and_then(|s| s.observed_generation),
        b.metadata.generation
    );

    env.apply::<LogDrain>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain", "metadata": {"name": "nowhere"}, "spec": {"url": "syslog://h:514"}})).await?;
    wait_for("binding Ready=True", || async {
        Ok(is(&binding_ready(&bindings, "web").await?, "True", "Resolved"))
    })
    .await?;
    op.stop().await
}

#[tokio::test]
async fn missing_secret_then_fixed_and_never_leaked() -> Result<()> {
    let env = env_or_skip!("status-secret");
    let ns = env.tenant.clone();
    let node = env.create_node("n").await?;
    env.create_pod("web-1", "web", &node, &[("app", "containerd://w1")])
        .await?;
    let op = env.operator("s2", &[]).await?;
    env.apply::<LogDrain>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain", "metadata": {"name": "ingest"},
        "spec": {"url": "https://ingest.example.com/v1", "credentials": {"secretName": "ingest-token", "bearerTokenKey": "token"}}})).await?;
    env.apply::<LogBinding>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "drains": ["ingest"]}})).await?;
    let drains: Api<LogDrain> = Api::namespaced(env.client.clone(), &ns);
    let bindings: Api<LogBinding> = Api::namespaced(env.client.clone(), &ns);
    wait_for("drain Ready=False SecretNotFound", || async {
        Ok(is(
            &drain_ready(&drains, "ingest").await?,
            "False",
            "SecretNotFound",
        ))
    })
    .await?;
    wait_for("binding Ready=False DrainNotReady", || async {
        Ok(is(
            &binding_ready(&bindings, "web").await?,
            "False",
            "DrainNotReady",
        ))
    })
    .await?;
    wait_for("a SecretNotFound Event", || {
        has_event(&env.client, &ns, "ingest", "SecretNotFound")
    })
    .await?;
    assert!(
        env.node_secret(&node).await?.is_none(),
        "an unresolved drain is not rendered"
    );

    let token = "s3cret-token-value";
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("ingest-token".into()),
            labels: crate::support::credential_labels(),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("token".to_owned(), token.to_owned())])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(env.client.clone(), &ns)
        .create(&PostParams::default(), &secret)
        .await?;
    wait_for("drain Ready=True", || async {
        Ok(is(&drain_ready(&drains, "ingest").await?, "True", "Resolved"))
    })
    .await?;
    wait_for("binding Ready=True", || async {
        Ok(is(&binding_ready(&bindings, "web").await?, "True", "Resolved"))
    })
    .await?;
    wait_for("the node config carries the token", || async {
        Ok(env.node_config(&node).await?.is_some_and(|c| {
            c.drains[0]
                .http
                .as_ref()
                .and_then(|h| h.bearer_token.as_ref())
                .map(|t| t.expose().to_owned())
                == Some(token.to_owned())
        }))
    })
    .await?;
    let d = drains.get("ingest").await?;
    let status = d.status.clone().expect("status");
    assert_eq!(
        (status.bindings, status.pods, status.nodes),
        (Some(1), Some(1), Some(1))
    );
    // The token is nowhere but in the node config Secret.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.client.clone(), &ns);
    let visible = format!(
        "{:?}{:?}{:?}",
        d,
        bindings.get("web").await?,
        events.list(&Default::default()).await?
    );
    assert!(
        !visible.contains(token),
        "the token leaked into a status or an Event"
    );
    assert!(!op.ctx.metrics.render().contains(token));
    op.stop().await
}
