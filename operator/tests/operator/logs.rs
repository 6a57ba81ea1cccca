//! The operator's side of `kubectl sluice logs`: the API server decides who may read which
//! namespace (SubjectAccessReview on `pods/log`, real RBAC), and the recent lines of real
//! collector query APIs (in-process, over loopback) merge by time.

use std::sync::Arc;

use anyhow::Result;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{Api, api::PostParams};
use serde_json::json;
use sluice_api::node_config::Stream;
use sluice_collector::{
    pipeline::ContainerMeta,
    query::{self, QuerySettings, Token},
    recent::{Recent, RecentSettings},
};
use sluice_operator::logs::{Caller, Collectors, Query, may_read_logs, readable_namespaces};
use tokio_util::sync::CancellationToken;

use crate::{env_or_skip, support::wait_for};

async fn grant(env: &crate::support::TestEnv, ns: &str, user: &str, resources: &[&str]) -> Result<()> {
    let name = format!("grant-{user}");
    let role: Role = serde_json::from_value(json!({"metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": resources, "verbs": ["get", "list"]}]}))?;
    let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}))?;
    Api::<Role>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await?;
    Api::<RoleBinding>::namespaced(env.client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

fn caller(user: &str) -> Caller {
    Caller {
        user: user.into(),
        groups: vec!["system:authenticated".into()],
        ..Caller::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_who_may_read_pod_logs_gets_a_namespace() -> Result<()> {
    let env = env_or_skip!("logs-sar");
    let other = format!("{}-other", env.tenant);
    env.namespace(&other).await?;
    grant(&env, &env.tenant, "log-reader", &["pods", "pods/log"]).await?;
    grant(&env, &env.tenant, "pod-lister", &["pods"]).await?;
    let reader = caller("log-reader");
    wait_for("the grant to reach the authorizer", || async {
        Ok(may_read_logs(&env.client, &reader, &env.tenant).await?)
    })
    .await?;
    assert!(!may_read_logs(&env.client, &reader, &other).await?);
    let readable = readable_namespaces(&env.client, &reader, [other.clone(), env.tenant.clone()]).await?;
    assert_eq!(readable, vec![env.tenant.clone()]);
    // Reading pods is not reading their logs.
    let lister = caller("pod-lister");
    assert!(!may_read_logs(&env.client, &lister, &env.tenant).await?);
    assert!(!may_read_logs(&env.client, &caller("nobody"), &env.tenant).await?);
    Ok(())
}

const TOKEN: &str = "operator-test-token-0123456789abcdef";

async fn collector(lines: &[(&str, &str, u32)]) -> Result<(String, CancellationToken)> {
    let recent = Arc::new(Recent::new(RecentSettings::default()));
    for (pod, message, second) in lines {
        let meta = ContainerMeta {
            container_id: format!("id-{pod}"),
            namespace: "shop".into(),
            pod: (*pod).into(),
            container: "app".into(),
            ..ContainerMeta::default()
        };
        let time = format!("2026-01-01T00:00:{second:02}Z");
        recent.push(&meta, Stream::Stdout, &time, message);
    }
    let stop = CancellationToken::new();
    let settings = QuerySettings::new(Token::parse(TOKEN).map_err(anyhow::Error::msg)?);
    let (addr, server) = query::serve("127.0.0.1:0".parse()?, settings, recent, stop.clone()).await?;
    tokio::spawn(server);
    Ok((format!("http://{addr}"), stop))
}

#[tokio::test(flavor = "multi_thread")]
async fn recent_lines_of_all_collectors_merge_by_time() -> Result<()> {
    let (one, stop_one) = collector(&[("web-0", "a", 1), ("web-0", "c", 3), ("web-0", "e", 5)]).await?;
    let (two, stop_two) = collector(&[("web-1", "b", 2), ("web-1", "d", 4)]).await?;
    let collectors = Collectors::new(vec![one.clone(), two.clone()], TOKEN.into());
    let shop = Query {
        namespace: "shop".into(),
        ..Query::default()
    };
    let got = |lines: Vec<sluice_api::query::RecentLine>| -> Vec<String> {
        lines.iter().map(|l| format!("{} {}", l.pod, l.line)).collect()
    };
    assert_eq!(
        got(collectors.recent(&shop).await?),
        ["web-0 a", "web-1 b", "web-0 c", "web-1 d", "web-0 e"]
    );
    let last_two = Query {
        tail: Some(2),
        ..shop.clone()
    };
    assert_eq!(got(collectors.recent(&last_two).await?), ["web-1 d", "web-0 e"]);
    let one_pod = Query {
        pods: vec!["web-1".into()],
        since: Some("2026-01-01T00:00:03Z".into()),
        ..shop.clone()
    };
    assert_eq!(got(collectors.recent(&one_pod).await?), ["web-1 d"]);
    let elsewhere = Query {
        namespace: "bank".into(),
        ..Query::default()
    };
    assert!(collectors.recent(&elsewhere).await?.is_empty());

    // A collector refuses an operator without the token.
    let impostor = Collectors::new(vec![one], "not-the-token".into());
    let error = impostor.recent(&shop).await.unwrap_err().to_string();
    assert!(error.contains("401"), "{error}");
    stop_one.cancel();
    stop_two.cancel();
    Ok(())
}

/// A follow outlasts the collector's follow limit (200 ms here, `--query-follow-max-seconds`):
/// the operator follows again at once from the collector's cursor, and passes on every line the
/// collector reads exactly once, in order, lines read between two follows included; a label
/// selector picks the lines of the pods it matches, by the labels the collector keeps.
#[tokio::test(flavor = "multi_thread")]
async fn a_follow_outlasts_the_collectors_follow_limit_without_losing_or_repeating_a_line() -> Result<()> {
    const LINES: usize = 60;
    let recent = Arc::new(Recent::new(RecentSettings::default()));
    let stop = CancellationToken::new();
    let settings = QuerySettings {
        follow_timeout: std::time::Duration::from_millis(200),
        ..QuerySettings::new(Token::parse(TOKEN).map_err(anyhow::Error::msg)?)
    };
    let (addr, server) = query::serve(
        "127.0.0.1:0".parse()?,
        settings,
        Arc::clone(&recent),
        stop.clone(),
    )
    .await?;
    tokio::spawn(server);
    let meta = |pod: &str, app: &str| ContainerMeta {
        container_id: format!("id-{pod}"),
        namespace: "shop".into(),
        pod: pod.into(),
        container: "app".into(),
        labels: [("app".to_owned(), app.to_owned())].into(),
        ..ContainerMeta::default()
    };
    let (web, db) = (meta("web-0", "web"), meta("db-0", "db"));
    let collectors = Collectors::new(vec![format!("http://{addr}")], TOKEN.into());
    let query = Query {
        namespace: "shop".into(),
        selector: Some("app=web".into()),
        ..Query::default()
    };
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::channel(4096);
    let (_added_tx, added_rx) = tokio::sync::mpsc::channel(1);
    let cancel = CancellationToken::new();
    let following = {
        let cancel = cancel.clone();
        tokio::spawn(async move { collectors.follow(&[query], added_rx, lines_tx, cancel).await })
    };
    // A missing line fails the test after this long instead of hanging it.
    const T: std::time::Duration = std::time::Duration::from_secs(30);
    let first = tokio::time::timeout(T, lines_rx.recv()).await?;
    assert_eq!(first.as_deref(), Some(&b"{\"following\":true}\n"[..]));
    // Lines spread over more than five follow limits (the pauses only spread them; nothing here
    // depends on when a follow ends).
    let writer = {
        let recent = Arc::clone(&recent);
        tokio::spawn(async move {
            for i in 0..LINES {
                let time = format!("2026-01-01T00:00:{:02}.{i:09}Z", i / 10);
                recent.push(&web, Stream::Stdout, &time, &format!("web {i}"));
                recent.push(&db, Stream::Stdout, &time, &format!("db {i}"));
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
    };
    let mut got = Vec::new();
    while got.len() < LINES {
        let Some(raw) = tokio::time::timeout(T, lines_rx.recv()).await? else {
            break;
        };
        let value: serde_json::Value = serde_json::from_slice(&raw)?;
        got.push(
            value["line"]
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned),
        );
    }
    writer.await?;
    // Every line of web is in; one more follow round (a resume) must add nothing.
    recent.push(
        &meta("web-0", "web"),
        Stream::Stdout,
        "2026-01-01T00:01:00Z",
        "last",
    );
    while let Some(raw) = tokio::time::timeout(T, lines_rx.recv()).await? {
        let value: serde_json::Value = serde_json::from_slice(&raw)?;
        let line = value["line"]
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned);
        if line == "last" {
            break;
        }
        got.push(line);
    }
    let want: Vec<String> = (0..LINES).map(|i| format!("web {i}")).collect();
    assert_eq!(got, want);
    cancel.cancel();
    following.await?;
    stop.cancel();
    Ok(())
}

/// A certificate for `name` signed by `ca` (a server's, with `name` as its DNS name, or a
/// client's): (certificate PEM, key PEM).
fn signed(ca: &rcgen::Issuer<'_, rcgen::KeyPair>, name: &str, client: bool) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let sans = if client { Vec::new() } else { vec![name.to_owned()] };
    let mut params = rcgen::CertificateParams::new(sans)?;
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    Ok((params.signed_by(&key, ca)?.pem(), key.serialize_pem()))
}

/// A CA named `name`: its certificate (PEM) and issuer.
fn ca(name: &str) -> Result<(String, rcgen::CertifiedIssuer<'static, rcgen::KeyPair>)> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let issuer = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
    Ok((issuer.pem(), issuer))
}

#[tokio::test(flavor = "multi_thread")]
async fn collectors_are_asked_over_mutual_tls_only() -> Result<()> {
    use sluice_api::query_tls::{DEFAULT_SERVER_NAME, client_config, server_config, server_name};
    use sluice_operator::logs::QueryClient;
    let dir = tempfile::tempdir()?;
    let write = |name: &str, pem: &str| -> Result<std::path::PathBuf> {
        let path = dir.path().join(name);
        std::fs::write(&path, pem)?;
        Ok(path)
    };
    let (ca_pem, issuer) = ca("query-ca")?;
    let (other_pem, other) = ca("another-ca")?;
    let ca_file = write("ca.crt", &ca_pem)?;
    let (serving, serving_key) = signed(&issuer, DEFAULT_SERVER_NAME, false)?;
    let (client, client_key) = signed(&issuer, "sluice-operator", true)?;
    let (stranger, stranger_key) = signed(&other, "sluice-operator", true)?;

    // A collector serving mutual TLS, with its handshake failures counted.
    let recent = Arc::new(Recent::new(RecentSettings::default()));
    let meta = ContainerMeta {
        container_id: "id-web-0".into(),
        namespace: "shop".into(),
        pod: "web-0".into(),
        container: "app".into(),
        ..ContainerMeta::default()
    };
    recent.push(&meta, Stream::Stdout, "2026-01-01T00:00:01Z", "a");
    let config = server_config(
        &write("serving.crt", &serving)?,
        &write("serving.key", &serving_key)?,
        &ca_file,
    )
    .map_err(anyhow::Error::msg)?;
    let tls = sluice_collector::query_tls::QueryTls {
        config: Arc::new(config),
        handshake_failures: sluice_collector::query_tls::QueryTls::failures_counter()?,
    };
    let failures = tls.handshake_failures.clone();
    let mut settings = QuerySettings::new(Token::parse(TOKEN).map_err(anyhow::Error::msg)?);
    settings.tls = Some(tls);
    let stop = CancellationToken::new();
    let (addr, server) = query::serve("127.0.0.1:0".parse()?, settings, recent, stop.clone()).await?;
    tokio::spawn(server);
    let https = vec![format!("https://{addr}")];
    let shop = Query {
        namespace: "shop".into(),
        ..Query::default()
    };
    let client_of = |ca: &std::path::Path, cert: &str, key: &str, name: &str| -> Result<QueryClient> {
        let config =
            client_config(ca, &write("c.crt", cert)?, &write("c.key", key)?).map_err(anyhow::Error::msg)?;
        Ok(QueryClient::tls(
            config,
            server_name(name).map_err(anyhow::Error::msg)?,
        ))
    };

    // The operator's certificate and token: served (the address is an IP; the name verified is
    // the fixed one).
    let operator = client_of(&ca_file, &client, &client_key, DEFAULT_SERVER_NAME)?;
    let lines = Collectors::with_client(https.clone(), TOKEN.into(), &operator)
        .recent(&shop)
        .await?;
    assert_eq!(lines.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(), ["a"]);
    // Without the token: 401 over TLS.
    let error = Collectors::with_client(https.clone(), "not-the-token".into(), &operator)
        .recent(&shop)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("401"), "{error}");
    // A TLS client never speaks plain HTTP, so never sends the token in clear.
    let error = Collectors::with_client(vec![format!("http://{addr}")], TOKEN.into(), &operator)
        .recent(&shop)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("collector http://{addr}")) && error.ends_with("unsupported scheme http"),
        "{error}"
    );
    // A plain client gets no answer from a TLS port.
    assert!(
        Collectors::new(vec![format!("http://{addr}")], TOKEN.into())
            .recent(&shop)
            .await
            .is_err()
    );
    // The operator refuses a collector whose certificate is not for the name it expects.
    let wrong_name = client_of(&ca_file, &client, &client_key, "another-name")?;
    let error = Collectors::with_client(https.clone(), TOKEN.into(), &wrong_name)
        .recent(&shop)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("certificate not valid for name \"another-name\""),
        "{error}"
    );
    // The collector refuses a client certificate of another CA in the handshake.
    let intruder = client_of(&ca_file, &stranger, &stranger_key, DEFAULT_SERVER_NAME)?;
    assert!(
        Collectors::with_client(https.clone(), TOKEN.into(), &intruder)
            .recent(&shop)
            .await
            .is_err()
    );
    // ... and a client that trusts another CA never gets to send.
    let distrustful = client_of(
        &write("other.crt", &other_pem)?,
        &client,
        &client_key,
        DEFAULT_SERVER_NAME,
    )?;
    assert!(
        Collectors::with_client(https.clone(), TOKEN.into(), &distrustful)
            .recent(&shop)
            .await
            .is_err()
    );
    // Counted: the plain request, the wrong name (the client gave up), the intruder, the
    // distrustful client.
    wait_for("the collector to count 4 failed handshakes", || async {
        Ok(failures.get() == 4)
    })
    .await?;
    assert_eq!(failures.get(), 4);
    stop.cancel();
    Ok(())
}
