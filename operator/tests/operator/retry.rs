//! A node config write the API server refuses is counted, retried with backoff, and lands once
//! the cause is gone, without a restart and without blocking the rest of the operator (statuses
//! are still written meanwhile).
//!
//! The refusal is real: a ValidatingAdmissionPolicy (CEL, in the API server itself) that refuses
//! every Secret write in this test's operator namespace, deleted halfway through.

use anyhow::Result;
use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    core::v1::Secret,
};
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use serde_json::json;
use sluice_api::crd::{LogBinding, LogDrain};

use crate::{
    env_or_skip,
    support::{TestEnv, wait_for},
};

/// The sum of `sluice_operator_reconcile_errors_total` samples of kind `node_config`.
fn node_config_errors(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("sluice_operator_reconcile_errors_total{") && l.contains("kind=\"node_config\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A policy (and its binding), both named `name`, refusing every Secret write in `namespace`;
/// returns once the API server enforces it.
async fn refuse_secrets(env: &TestEnv, name: &str, namespace: &str) -> Result<()> {
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": ["secrets"]}]},
            "validations": [{"expression": "false", "message": "refused by the retry test"}]
        }
    }))?;
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
        }
    }))?;
    Api::<ValidatingAdmissionPolicy>::all(env.client.clone())
        .create(&PostParams::default(), &policy)
        .await?;
    Api::<ValidatingAdmissionPolicyBinding>::all(env.client.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), namespace);
    wait_for("the policy enforced", || async {
        let probe: Secret = serde_json::from_value(json!({"metadata": {"name": "probe"}}))?;
        Ok(match secrets.create(&PostParams::default(), &probe).await {
            Err(kube::Error::Api(e)) => e.message.contains("refused by the retry test"),
            Ok(_) => {
                secrets.delete("probe", &DeleteParams::default()).await?;
                false
            }
            Err(e) => return Err(e.into()),
        })
    })
    .await
}

#[tokio::test]
async fn a_refused_write_is_retried_until_it_lands() -> Result<()> {
    let env = env_or_skip!("retry");
    let ns = env.tenant.clone();
    let node = env.create_node("n").await?;
    let policy = format!("sluice-test-{}", env.system);
    refuse_secrets(&env, &policy, &env.system).await?;
    env.apply::<LogDrain>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain", "metadata": {"name": "logs"}, "spec": {"url": "syslog://h:514"}})).await?;
    env.apply::<LogBinding>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "drains": ["logs"]}})).await?;
    env.create_pod("web-1", "web", &node, &[("app", "containerd://r1")])
        .await?;
    let op = env.operator("r1", &[]).await?;

    wait_for(
        "two refused node config writes (a first try and a retry)",
        || async { Ok(node_config_errors(&op.ctx.metrics.render()) >= 2.0) },
    )
    .await?;
    assert!(
        env.node_secret(&node).await?.is_none(),
        "the policy refuses the Secret"
    );
    let bindings: Api<LogBinding> = Api::namespaced(env.client.clone(), &ns);
    wait_for("the binding status, written meanwhile", || async {
        Ok(bindings
            .get("web")
            .await?
            .status
            .is_some_and(|s| s.matched_pods == 1))
    })
    .await?;

    Api::<ValidatingAdmissionPolicyBinding>::all(env.client.clone())
        .delete(&policy, &DeleteParams::default())
        .await?;
    Api::<ValidatingAdmissionPolicy>::all(env.client.clone())
        .delete(&policy, &DeleteParams::default())
        .await?;
    wait_for("the node config, written by a retry", || async {
        Ok(env.containers(&node).await?
            == vec![(
                "web-1".to_owned(),
                "containerd://r1".to_owned(),
                vec![format!("{ns}-logs")],
            )])
    })
    .await?;
    op.stop().await
}
