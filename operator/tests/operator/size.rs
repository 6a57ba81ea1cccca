//! A node's config stays bounded whatever one tenant does: only the pod labels templates use are
//! copied, a CA bundle several drains trust is carried once, a drain over its budget is refused,
//! and a drain that would take the node's config past its limit is left out of it
//! (`Ready=False`, `ConfigTooLarge`, an Event, a metric) while the other tenant's drains stay.

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{ObjectMeta, PostParams},
};
use serde_json::{Value, json};
use sluice_api::crd::LogBinding;

use crate::{
    env_or_skip,
    support::{TestEnv, credential_labels, has_event, ready, wait_for},
    tenancy::{drain_and_binding, node_drains, wait_ready},
};

/// A self-signed CA certificate (PEM).
fn ca_pem() -> Result<String> {
    let key = rcgen::KeyPair::generate()?;
    let params = rcgen::CertificateParams::new(vec!["shared-ca".to_owned()])?;
    Ok(params.self_signed(&key)?.pem())
}

/// Secret `ca` in `ns` holding `pem` under `ca.crt`, opted in to serve drains.
async fn ca_secret(env: &TestEnv, ns: &str, pem: &str) -> Result<()> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("ca".into()),
            labels: credential_labels(),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("ca.crt".to_owned(), pem.to_owned())])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await?;
    Ok(())
}

/// `count` HTTP headers of `bytes` bytes each.
fn headers(count: usize, bytes: usize) -> Value {
    (0..count)
        .map(|i| (format!("X-Pad-{i}"), Value::String("p".repeat(bytes))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[tokio::test]
async fn one_tenants_oversized_drain_leaves_the_others_config_intact() -> Result<()> {
    let env = env_or_skip!("size-bound");
    let (a, b) = (env.tenant.clone(), format!("{}-b", env.tenant));
    env.namespace(&b).await?;
    let node = env.create_node("n").await?;
    let labels = |team: &str| {
        BTreeMap::from([
            ("app".to_owned(), "web".to_owned()),
            ("team".to_owned(), team.to_owned()),
            ("unused".to_owned(), "u".repeat(60)),
        ])
    };
    env.create_pod_in(&a, "web-a", labels("blue"), &node, &[("app", "containerd://a1")])
        .await?;
    env.create_pod_in(&b, "web-b", labels("red"), &node, &[("app", "containerd://b1")])
        .await?;
    let pem = ca_pem()?;
    ca_secret(&env, &a, &pem).await?;
    ca_secret(&env, &b, &pem).await?;
    let limit = 24 * 1024;
    let op = env
        .operator_with("z1", &[&b], |s| s.node_config_limit = limit)
        .await?;
    let tls = json!({"ca": {"name": "ca", "key": "ca.crt"}});
    drain_and_binding(
        &env,
        &a,
        "logs",
        json!({"url": "syslog-tls://logs-a.example.com:6514",
        "tls": tls, "format": {"appName": "{label:team}"}}),
    )
    .await?;
    drain_and_binding(
        &env,
        &b,
        "small",
        json!({"url": "syslog-tls://logs-b.example.com:6514", "tls": tls}),
    )
    .await?;
    // Within a drain's budget, but too much for this node's limit.
    drain_and_binding(
        &env,
        &b,
        "big",
        json!({"url": "https://in.example.com/v1",
        "http": {"headers": headers(20, 1500)}}),
    )
    .await?;
    // Over a drain's budget anywhere.
    drain_and_binding(
        &env,
        &b,
        "huge",
        json!({"url": "https://in.example.com/v1",
        "http": {"headers": headers(32, 2500)}}),
    )
    .await?;

    let message = wait_ready(&env, &b, "big", "False", "ConfigTooLarge").await?;
    assert!(
        message.starts_with(&format!("left out of the config of node(s) {node}: ")),
        "{message}"
    );
    let message = wait_ready(&env, &b, "huge", "False", "ConfigTooLarge").await?;
    assert!(message.ends_with("a drain may take at most 64 KiB"), "{message}");
    wait_for("a ConfigTooLarge Event", || {
        has_event(&env.client, &b, "big", "ConfigTooLarge")
    })
    .await?;
    let bindings: Api<LogBinding> = Api::namespaced(env.client.clone(), &b);
    wait_for("the binding of the left-out drain says why", || async {
        let status = bindings.get("big").await?.status;
        Ok(status
            .and_then(|s| ready(&s.conditions))
            .is_some_and(|(s, r, m)| {
                s == "False" && r == "DrainNotReady" && m.contains("(ConfigTooLarge): left out")
            }))
    })
    .await?;
    wait_ready(&env, &a, "logs", "True", "Resolved").await?;
    wait_ready(&env, &b, "small", "True", "Resolved").await?;
    let mut want = vec![format!("{a}-logs"), format!("{b}-small")];
    want.sort();
    wait_for("the node config holds the drains that fit", || async {
        Ok(node_drains(&env, &node).await? == want)
    })
    .await?;
    assert!(
        op.ctx
            .metrics
            .render()
            .contains("sluice_operator_drains_left_out 1\n"),
        "{}",
        op.ctx.metrics.render()
    );

    let secret = env
        .node_secret(&node)
        .await?
        .and_then(|s| s.data)
        .unwrap_or_default();
    let yaml = String::from_utf8_lossy(&secret["config.yaml"].0).into_owned();
    assert!(yaml.len() <= limit, "{} bytes", yaml.len());
    assert_eq!(
        yaml.matches("BEGIN CERTIFICATE").count(),
        1,
        "one shared CA bundle:\n{yaml}"
    );
    let config = env.node_config(&node).await?.expect("a config");
    let labels: Vec<_> = config
        .containers
        .iter()
        .map(|c| (c.pod.as_str(), c.labels.clone()))
        .collect();
    assert_eq!(
        labels,
        [
            ("web-a", BTreeMap::from([("team".to_owned(), "blue".to_owned())])),
            ("web-b", BTreeMap::new()),
        ],
        "only the labels a template uses"
    );
    assert!(
        config
            .drains
            .iter()
            .all(|d| d.tls.as_ref().and_then(|t| t.ca_pem.as_deref()) == Some(pem.as_str())),
        "the collector reads each drain with its CA"
    );
    op.stop().await
}
