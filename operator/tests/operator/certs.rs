//! Certificates from Secrets are checked as X.509, not only as PEM: a CA bundle with no
//! certificate, a certificate that is not X.509, an expired one, a client key that does not belong
//! to its certificate each give the drain `Ready=False` with reason `InvalidCertificate`, a
//! message naming the field, Secret and key, and a warning Event, and leave the drain out of node
//! configs; fixing the Secret makes it `True` and ships it. No key material ever shows.

use std::collections::BTreeMap;

use anyhow::Result;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Api,
    api::{ObjectMeta, Patch, PatchParams},
};
use rcgen::{CertificateParams, KeyPair, date_time_ymd};
use serde_json::json;
use sluice_api::crd::{LogBinding, LogDrain};

use crate::{
    env_or_skip,
    support::{TestEnv, has_event, ready, wait_for},
};

/// A self-signed certificate (PEM) and its key (PEM), valid in `years` (`None`: around now).
fn certificate(name: &str, years: Option<(i32, i32)>) -> Result<(String, String)> {
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    if let Some((from, to)) = years {
        params.not_before = date_time_ymd(from, 1, 1);
        params.not_after = date_time_ymd(to, 1, 1);
    }
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Create or replace Secret `name` with `data`, opted in to serve drains.
async fn put_secret(env: &TestEnv, name: &str, data: &[(&str, &str)]) -> Result<()> {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: crate::support::credential_labels(),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(env.client.clone(), &env.tenant)
        .patch(
            name,
            &PatchParams::apply("sluice-tests").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

/// The drain's Ready condition `(status, reason, message)`.
async fn condition(env: &TestEnv, drain: &str) -> Result<Option<(String, String, String)>> {
    let api: Api<LogDrain> = Api::namespaced(env.client.clone(), &env.tenant);
    Ok(api.get(drain).await?.status.and_then(|s| ready(&s.conditions)))
}

/// Wait until the drain's Ready condition is `status`/`reason` with a message containing
/// `needle`; return the message.
async fn wait_ready(env: &TestEnv, drain: &str, status: &str, reason: &str, needle: &str) -> Result<String> {
    let wanted = |c: &Option<(String, String, String)>| {
        c.as_ref()
            .is_some_and(|(s, r, m)| s == status && r == reason && m.contains(needle))
    };
    wait_for(
        &format!("drain {drain} Ready={status} {reason} saying {needle:?}"),
        || async { Ok(wanted(&condition(env, drain).await?)) },
    )
    .await?;
    let (_, _, message) = condition(env, drain).await?.unwrap_or_default();
    Ok(message)
}

#[tokio::test]
async fn bad_certificates_are_invalid_until_fixed() -> Result<()> {
    let env = env_or_skip!("certs");
    let ns = env.tenant.clone();
    let node = env.create_node("n").await?;
    env.create_pod("web-1", "web", &node, &[("app", "containerd://c1")])
        .await?;
    let op = env.operator("c1", &[]).await?;
    let (ca, ca_key) = certificate("logs-ca", None)?;
    let (client, client_key) = certificate("client", None)?;
    let (_, other_key) = certificate("other", None)?;
    let (expired, expired_key) = certificate("old", Some((2020, 2021)))?;
    put_secret(&env, "logs-ca", &[("ca.crt", "no certificate here")]).await?;
    put_secret(
        &env,
        "logs-client",
        &[("tls.crt", &client), ("tls.key", &client_key)],
    )
    .await?;
    env.apply::<LogDrain>(&ns, json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain", "metadata": {"name": "logs"},
        "spec": {"url": "syslog-tls://logs.example.com:6514", "tls": {"ca": {"name": "logs-ca", "key": "ca.crt"},
            "clientCertificate": {"secretName": "logs-client", "certKey": "tls.crt", "keyKey": "tls.key"}}}})).await?;
    env.apply::<LogBinding>(
        &ns,
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "drains": ["logs"]}}),
    )
    .await?;

    // A CA value with no certificate in it.
    let message = wait_ready(&env, "logs", "False", "InvalidCertificate", "").await?;
    assert!(
        message.contains("spec.tls.ca")
            && message.contains("\"logs-ca\"")
            && message.contains("no PEM certificate"),
        "{message}"
    );
    wait_for("an InvalidCertificate Event", || {
        has_event(&env.client, &ns, "logs", "InvalidCertificate")
    })
    .await?;
    assert!(
        env.node_secret(&node).await?.is_none(),
        "an invalid drain is not rendered"
    );

    // A PEM block whose content is not X.509 DER.
    let garbage =
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGUgYXQgYWxs\n-----END CERTIFICATE-----\n";
    put_secret(&env, "logs-ca", &[("ca.crt", garbage)]).await?;
    let message = wait_ready(&env, "logs", "False", "InvalidCertificate", "not valid X.509").await?;
    assert!(message.contains("certificate 1"), "{message}");

    // An expired CA certificate.
    put_secret(&env, "logs-ca", &[("ca.crt", &expired)]).await?;
    let message = wait_ready(&env, "logs", "False", "InvalidCertificate", "expired on").await?;
    assert!(
        message.contains("spec.tls.ca") && message.contains("CN=old"),
        "{message}"
    );

    // A valid CA, but a client key that belongs to another certificate.
    put_secret(&env, "logs-ca", &[("ca.crt", &ca)]).await?;
    put_secret(
        &env,
        "logs-client",
        &[("tls.crt", &client), ("tls.key", &other_key)],
    )
    .await?;
    let message = wait_ready(&env, "logs", "False", "InvalidCertificate", "does not belong").await?;
    assert!(
        message.contains("spec.tls.clientCertificate") && message.contains("\"tls.key\""),
        "{message}"
    );

    // An expired client certificate (with its own key), then fixed: Ready, and the node config
    // carries the drain with its CA and client certificate.
    for (crt, key, status, reason, needle) in [
        (
            &expired,
            &expired_key,
            "False",
            "InvalidCertificate",
            "expired on",
        ),
        (&client, &client_key, "True", "Resolved", ""),
    ] {
        put_secret(&env, "logs-client", &[("tls.crt", crt), ("tls.key", key)]).await?;
        wait_ready(&env, "logs", status, reason, needle).await?;
    }
    wait_for("the node config carries the drain", || async {
        Ok(env.node_config(&node).await?.is_some_and(|c| {
            c.drains.len() == 1
                && c.drains[0].tls.as_ref().is_some_and(|t| {
                    t.ca_pem.as_deref() == Some(ca.as_str()) && t.cert_pem.as_deref() == Some(client.as_str())
                })
        }))
    })
    .await?;

    // No key material in statuses or Events.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.client.clone(), &ns);
    let drain = Api::<LogDrain>::namespaced(env.client.clone(), &ns)
        .get("logs")
        .await?;
    let visible = format!("{drain:?}{:?}", events.list(&Default::default()).await?);
    for (what, pem) in [
        ("client key", &client_key),
        ("other key", &other_key),
        ("CA key", &ca_key),
    ] {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(
            !visible.contains(&body[..40]),
            "the {what} leaked into a status or an Event"
        );
    }
    op.stop().await
}
