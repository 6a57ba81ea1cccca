//! `kubectl sluice logs` end to end through the aggregated API: the real kube-apiserver (with
//! its aggregation layer and real RBAC), the operator serving `logs.sluice.dev` (in-process, as
//! its restricted identity, on a non-loopback host address the API server proxies to through a
//! Service and an EndpointSlice), two collector processes standing for two nodes (cluster mode,
//! query API on), real Docker containers whose pods are reported as a kubelet would, and the
//! plugin binary run as restricted users; the operator asks the collectors over mutual TLS (a CA of
//! the test signing their serving certificate and its client one). Every check compares exact lines.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::{Api, api::DeleteParams};
use serde_json::json;
use sluice_api::{
    crd::{LogBinding, LogDrain},
    query::RecentLine,
};
use sluice_tests::{
    LineSpec,
    collector::{ClusterArgs, Collector},
    docker::RunSpec,
    fixture::{docker_rig, loggen_args},
    http::HttpReceiver,
    kube::{COLLECTOR_USER, KubeRig},
    logs_api::{LogsApi, QueryPki, certificate_authority, host_address, leaf_cert, query_address},
    plugin::{
        Plugin, Run, collector_status_tls, expect_refused, expect_time_order, grant, json_lines,
        plain_http_unanswered, tls_exchange,
    },
    support::{need, wait_until},
};

const TIMEOUT: Duration = Duration::from_secs(120);
/// The query token the operator and the collectors share.
const TOKEN: &str = "logs-test-token-0123456789abcdefghijklmnop";
/// Lines each workload writes (below the collectors' 1000 recent lines per container).
const LINES: u64 = 300;

fn plugin(kubeconfig: &Path, args: &[&str]) -> Result<Run> {
    Plugin::new(env!("CARGO_BIN_EXE_kubectl-sluice")).run_as(kubeconfig, args)
}

/// Exactly these pods' lines, each pod's in the order written.
fn expect_pods(what: &str, lines: &[RecentLine], want: &[(&str, &LineSpec)]) -> Result<()> {
    sluice_tests::plugin::expect_pods(what, lines, want, LINES)
}

/// A GET of alice's recent lines sent straight to the logs API at `address` (not through the API
/// server) over TLS trusting `ca_pem`, presenting `client` (certificate and key PEM) if given:
/// the raw answer, empty when the server closed the connection without one.
fn direct_request(
    address: std::net::SocketAddr,
    server_name: &str,
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> Result<String> {
    let request = "GET /apis/logs.sluice.dev/v1alpha1/namespaces/shop/podlogs HTTP/1.1\r\nHost: x\r\n\
                   X-Remote-User: alice\r\nX-Remote-Group: system:authenticated\r\nConnection: close\r\n\r\n";
    tls_exchange(address, server_name, ca_pem, client, request)
}

/// A client certificate for `cn` signed by the CA in `ca_cert`/`ca_key` (PEM files).
fn client_cert(ca_cert: &Path, ca_key: &Path, cn: &str) -> Result<(String, String)> {
    leaf_cert(
        &std::fs::read_to_string(ca_cert)?,
        &std::fs::read_to_string(ca_key)?,
        cn,
        true,
    )
}

#[test]
fn logs_through_the_aggregated_api() -> Result<()> {
    let test = "logs_through_the_aggregated_api";
    let Some(host) = need(test, host_address()) else {
        return Ok(());
    };
    let Some(rig) = docker_rig(test)? else {
        return Ok(());
    };
    let Some(mut kube) = KubeRig::start(test)? else {
        return Ok(());
    };
    let docker = &rig.docker;
    let (shop, ops) = ("shop".to_owned(), "ops".to_owned());
    kube.create_namespace(&ops)?;
    kube.start_operator_with(&[ops.as_str()], |_| {})?;
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN)?;

    // The logs API, served by the operator as its own identity on a host address; it asks the
    // collectors over mutual TLS (one CA for their serving certificate and its client one).
    let pki = QueryPki::create(dir.path())?;
    let api = LogsApi::start(&kube, host, TOKEN, pki.query_client()?)?;
    let (bound, ca, service_name) = (api.address, api.ca_pem.clone(), api.server_name.clone());
    let admin = kube.admin()?;

    // Two collectors with the query API on, over mutual TLS.
    let collector_kubeconfig = kube.kubeconfig_for(COLLECTOR_USER)?;
    let mut query_args = vec![
        "--query-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--query-token-file".to_owned(),
        token_file.display().to_string(),
        // Every follow here outlasts a collector's follow: the operator must follow again from
        // where it ended, losing and repeating nothing.
        "--query-follow-max-seconds".to_owned(),
        "2".to_owned(),
    ];
    query_args.extend(pki.collector_args());
    let cluster_args = |node: &str| ClusterArgs {
        node: node.into(),
        namespace: kube.system.clone(),
        kubeconfig: collector_kubeconfig.clone(),
        docker_root: docker.root().to_owned(),
    };
    let node_a = Collector::start_cluster_with(&rig.bins, cluster_args("node-a"), &query_args)?;
    let mut node_b = Collector::start_cluster_with(&rig.bins, cluster_args("node-b"), &query_args)?;
    for node in ["node-a", "node-b"] {
        wait_until(
            &format!("{node}'s Lease to publish its query address"),
            TIMEOUT,
            || query_address(&kube, node),
            || format!("{:?}", kube.lease(node)),
        )?;
    }

    // A drain and a binding per namespace, so the collectors read these pods.
    let http = HttpReceiver::start()?;
    for ns in [&shop, &ops] {
        kube.apply_in::<LogDrain>(
            ns,
            json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain",
                   "metadata": {"name": "sink"}, "spec": {"url": http.url()}}),
        )?;
        kube.apply_in::<LogBinding>(
            ns,
            json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding",
                   "metadata": {"name": "all"},
                   "spec": {"selector": {"matchLabels": {"logs-test": "yes"}}, "drains": ["sink"]}}),
        )?;
    }

    // Identities: alice reads pod logs in both namespaces, carol only in shop, bob may see shop's
    // pods but not their logs.
    let reader = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
                        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]);
    let pods_only = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]);
    kube.rt.block_on(async {
        grant(&admin, &shop, "reader", "alice", reader.clone()).await?;
        grant(&admin, &ops, "reader", "alice", reader.clone()).await?;
        grant(&admin, &shop, "reader", "carol", reader.clone()).await?;
        grant(&admin, &shop, "pods-only", "bob", pods_only).await
    })?;
    let (alice, bob, carol) = (
        kube.kubeconfig_for("alice")?,
        kube.kubeconfig_for("bob")?,
        kube.kubeconfig_for("carol")?,
    );

    // 1. A follow of every namespace alice may read, started before any line is written.
    let follow = Plugin::new(env!("CARGO_BIN_EXE_kubectl-sluice")).follow(
        dir.path(),
        &alice,
        &["logs", "-A", "-f", "-o", "json"],
    )?;
    follow.wait_for_stderr(
        "the follow to be in place on every collector",
        "Following",
        TIMEOUT,
    )?;
    let (web_1, web_2, api_1) = (
        LineSpec::new("web-1", 40, 120),
        LineSpec::new("web-2", 40, 120),
        LineSpec::new("api-1", 40, 120),
    );
    let mut running = Vec::new();
    for (ns, node, app, spec) in [
        (&shop, "node-a", "web", &web_1),
        (&shop, "node-b", "web", &web_2),
        (&ops, "node-a", "api", &api_1),
    ] {
        let id = docker.run(&RunSpec {
            name: spec.tag.clone(),
            args: loggen_args(spec, LINES, 200),
            ..RunSpec::default()
        })?;
        kube.create_pod_in(
            ns,
            &spec.tag,
            node,
            &[("app", app), ("logs-test", "yes")],
            &[("main", &id)],
        )?;
        running.push(id);
    }
    for id in running {
        ensure!(docker.wait(&id)? == 0, "loggen failed");
    }
    let all: [(&str, &LineSpec); 3] = [
        ("shop/web-1", &web_1),
        ("shop/web-2", &web_2),
        ("ops/api-1", &api_1),
    ];
    let followed = follow.wait_for_lines(
        "the follow to print every line written",
        3 * LINES as usize,
        TIMEOUT,
    )?;
    expect_pods("follow -A", &followed, &all)?;
    drop(follow);

    // 2. The recent lines of both namespaces, merged by time.
    let recent = json_lines(&plugin(&alice, &["logs", "-A", "-o", "json"])?)?;
    expect_pods("recent -A", &recent, &all)?;
    expect_time_order("recent -A", &recent)?;

    // A selector in one namespace, printed as text with the pod/container prefix.
    let run = plugin(&alice, &["logs", "-n", "shop", "-l", "app=web", "--tail", "5"])?;
    ensure!(run.code == 0, "{run:?}");
    let mut last: Vec<(String, String)> = recent
        .iter()
        .filter(|l| l.namespace == "shop")
        .map(|l| (l.time.clone(), format!("[{}/main] {}", l.pod, l.line)))
        .collect();
    last.drain(..last.len() - 5);
    let want: Vec<String> = last.into_iter().map(|(_, l)| l).collect();
    ensure!(
        run.stdout.lines().collect::<Vec<_>>() == want,
        "--tail 5 printed:\n{}\nwant:\n{}",
        run.stdout,
        want.join("\n")
    );

    // 3. A deleted pod: not found without --recent, its lines with it.
    kube.rt.block_on(
        Api::<Pod>::namespaced(admin.clone(), &shop)
            .delete("web-2", &DeleteParams::default().grace_period(0)),
    )?;
    let gone = plugin(&alice, &["logs", "-n", "shop", "web-2"])?;
    ensure!(gone.code == 5 && gone.stderr.contains("--recent"), "{gone:?}");
    let recent_gone = json_lines(&plugin(
        &alice,
        &["logs", "-n", "shop", "web-2", "--recent", "-o", "json"],
    )?)?;
    expect_pods(
        "a deleted pod with --recent",
        &recent_gone,
        &[("shop/web-2", &web_2)],
    )?;

    // 3b. A label selector with --recent matches the deleted pod by the labels its collector
    //     kept (and the live one), not a pod with other labels; without --recent, live pods only.
    let selected = json_lines(&plugin(
        &alice,
        &["logs", "-A", "-l", "app=web", "--recent", "-o", "json"],
    )?)?;
    expect_pods(
        "-l app=web --recent",
        &selected,
        &[("shop/web-1", &web_1), ("shop/web-2", &web_2)],
    )?;
    expect_time_order("-l app=web --recent", &selected)?;
    let set_based = json_lines(&plugin(
        &alice,
        &[
            "logs",
            "-A",
            "-l",
            "app notin (web),logs-test",
            "--recent",
            "-o",
            "json",
        ],
    )?)?;
    expect_pods(
        "-l 'app notin (web)' --recent",
        &set_based,
        &[("ops/api-1", &api_1)],
    )?;
    let live = json_lines(&plugin(
        &alice,
        &["logs", "-n", "shop", "-l", "app=web", "-o", "json"],
    )?)?;
    expect_pods("-l app=web", &live, &[("shop/web-1", &web_1)])?;
    // A workload resolves through its selector, deleted pods included (web-2's name is not one
    // a Deployment gives: only the selector finds it).
    kube.apply_in::<k8s_openapi::api::apps::v1::Deployment>(
        &shop,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "main", "image": "none"}]}}}}),
    )?;
    let workload = json_lines(&plugin(
        &alice,
        &["logs", "-n", "shop", "deploy/web", "--recent", "-o", "json"],
    )?)?;
    expect_pods(
        "deploy/web --recent",
        &workload,
        &[("shop/web-1", &web_1), ("shop/web-2", &web_2)],
    )?;
    // A selector that is not one: a usage error, before anything is asked.
    let bad = plugin(&alice, &["logs", "-n", "shop", "-l", "app in web", "--recent"])?;
    ensure!(
        bad.code == 2 && bad.stderr.contains("expected ( after in or notin"),
        "{bad:?}"
    );

    // 3c. A follow across several of the collectors' follow limits (2 s): every line written
    //     exactly once, in order.
    let follow_dir = dir.path().join("follow-long");
    std::fs::create_dir(&follow_dir)?;
    let long_follow = Plugin::new(env!("CARGO_BIN_EXE_kubectl-sluice")).follow(
        &follow_dir,
        &alice,
        &[
            "logs", "-n", "shop", "-l", "app=slow", "--recent", "-f", "-o", "json",
        ],
    )?;
    long_follow.wait_for_stderr("the long follow to be in place", "Following", TIMEOUT)?;
    let slow = LineSpec::new("slow-1", 40, 120);
    let slow_id = docker.run(&RunSpec {
        name: slow.tag.clone(),
        // 6 s of lines: more than two follow limits.
        args: loggen_args(&slow, LINES, 50),
        ..RunSpec::default()
    })?;
    kube.create_pod_in(
        &shop,
        &slow.tag,
        "node-a",
        &[("app", "slow"), ("logs-test", "yes")],
        &[("main", &slow_id)],
    )?;
    ensure!(docker.wait(&slow_id)? == 0, "loggen failed");
    let long = long_follow.wait_for_lines(
        "the long follow to print every line written",
        LINES as usize,
        TIMEOUT,
    )?;
    expect_pods("a follow across follow limits", &long, &[("shop/slow-1", &slow)])?;
    drop(long_follow);

    // 4. No pods/log: refused, with the reason.
    expect_refused(&plugin(&bob, &["logs", "-n", "shop", "web-1"])?, Some("shop"))?;
    expect_refused(&plugin(&bob, &["logs", "-A"])?, None)?;

    // 5. -A: only the namespaces the caller may read.
    let only_shop = json_lines(&plugin(&carol, &["logs", "-A", "-o", "json"])?)?;
    expect_pods(
        "carol's -A",
        &only_shop,
        &[
            ("shop/web-1", &web_1),
            ("shop/web-2", &web_2),
            ("shop/slow-1", &slow),
        ],
    )?;

    // 6. A collector's query port serves only the operator: mutual TLS with its client
    //    certificate, and its token.
    let address = query_address(&kube, "node-a").context("node-a's query address")?;
    let lease = kube.lease("node-a")?.context("node-a's Lease")?;
    ensure!(
        lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(sluice_api::query_tls::SCHEME_ANNOTATION))
            .map(String::as_str)
            == Some("https"),
        "node-a's Lease does not say its query API is TLS: {:?}",
        lease.metadata.annotations
    );
    ensure!(
        plain_http_unanswered(&address, TOKEN)?,
        "a plain HTTP request (with the token) must get no answer"
    );
    let socket: std::net::SocketAddr = address.parse()?;
    let name = sluice_api::query_tls::DEFAULT_SERVER_NAME;
    let status = |client: Option<(&str, &str)>, token: Option<&str>| {
        collector_status_tls(socket, name, &pki.ca_pem, client, token)
    };
    let operator = (pki.operator_pem.0.as_str(), pki.operator_pem.1.as_str());
    ensure!(
        status(None, Some(TOKEN))?.is_none(),
        "a client without a certificate must be refused in the handshake, token or not"
    );
    let (other_ca, other_ca_key) = certificate_authority("not-the-query-ca")?;
    let stranger = leaf_cert(&other_ca, &other_ca_key, "sluice-operator", true)?;
    ensure!(
        status(Some((&stranger.0, &stranger.1)), Some(TOKEN))?.is_none(),
        "a client certificate of another CA must be refused in the handshake"
    );
    ensure!(
        status(Some(operator), None)? == Some(401),
        "the operator's certificate without the token must get 401"
    );
    ensure!(
        status(Some(operator), Some("not-the-token-0123456789abcdefghijkl"))? == Some(401),
        "a wrong token must get 401"
    );
    ensure!(
        status(Some(operator), Some(TOKEN))? == Some(200),
        "the operator's certificate and token must be served"
    );

    // 7. The logs API itself serves only the API server's front proxy: a certificate of the
    //    front-proxy CA whose name is allowed. Spoofed X-Remote-User headers get nothing otherwise.
    let pki = kube.harness.dir().join("pki");
    let front = |name: &str| pki.join(name);
    let proxy_cert = std::fs::read_to_string(front("front-proxy-client.crt"))?;
    let proxy_key = std::fs::read_to_string(front("front-proxy-client.key"))?;
    let served = direct_request(bound, &service_name, &ca, Some((&proxy_cert, &proxy_key)))?;
    ensure!(
        served.starts_with("HTTP/1.1 200"),
        "the front proxy's certificate must be served: {served}"
    );
    let no_cert = direct_request(bound, &service_name, &ca, None)?;
    ensure!(
        !no_cert.contains("HTTP/"),
        "a client without a certificate got an answer: {no_cert}"
    );
    let other_name = client_cert(
        &front("front-proxy-ca.crt"),
        &front("front-proxy-ca.key"),
        "mallory",
    )?;
    let refused_name = direct_request(bound, &service_name, &ca, Some((&other_name.0, &other_name.1)))?;
    ensure!(
        !refused_name.contains("HTTP/"),
        "a name not in requestheader-allowed-names got an answer: {refused_name}"
    );
    let main_ca = client_cert(&front("ca.crt"), &front("ca.key"), "front-proxy-client")?;
    let refused_ca = direct_request(bound, &service_name, &ca, Some((&main_ca.0, &main_ca.1)))?;
    ensure!(
        !refused_ca.contains("HTTP/"),
        "a certificate of another CA got an answer: {refused_ca}"
    );

    // A requestheader CA added to kube-system/extension-apiserver-authentication (a rotation)
    // is trusted without a restart: the operator reads the ConfigMap again (every second here).
    let (new_ca, new_ca_key) = certificate_authority("rotated-front-proxy-ca")?;
    let (new_ca_file, new_ca_key_file) = (dir.path().join("new-ca.crt"), dir.path().join("new-ca.key"));
    std::fs::write(&new_ca_file, &new_ca)?;
    std::fs::write(&new_ca_key_file, &new_ca_key)?;
    let rotated = client_cert(&new_ca_file, &new_ca_key_file, "front-proxy-client")?;
    let before = direct_request(bound, &service_name, &ca, Some((&rotated.0, &rotated.1)))?;
    ensure!(
        !before.contains("HTTP/"),
        "a certificate of a CA not yet published got an answer: {before}"
    );
    kube.rt.block_on(async {
        let maps = Api::<ConfigMap>::namespaced(admin.clone(), "kube-system");
        let mut map = maps.get("extension-apiserver-authentication").await?;
        let data = map.data.get_or_insert_default();
        let bundle = data
            .get("requestheader-client-ca-file")
            .cloned()
            .context("the API server publishes no requestheader CA")?;
        data.insert(
            "requestheader-client-ca-file".into(),
            format!("{}\n{new_ca}", bundle.trim_end()),
        );
        maps.replace("extension-apiserver-authentication", &Default::default(), &map)
            .await?;
        anyhow::Ok(())
    })?;
    wait_until(
        "the operator to trust the added requestheader CA",
        TIMEOUT,
        || {
            direct_request(bound, &service_name, &ca, Some((&rotated.0, &rotated.1)))
                .ok()
                .filter(|answer| answer.starts_with("HTTP/1.1 200"))
        },
        || "a client certificate of the added CA is still refused".to_owned(),
    )?;

    // 8. A collector that does not answer (killed; its Lease has not expired yet): the others'
    //    lines come, with a warning naming it.
    node_b.sigkill();
    let partial = plugin(&alice, &["logs", "-A", "-o", "json"])?;
    ensure!(
        partial.stderr.contains("warning: collector https://")
            && partial.stderr.contains("its lines are missing"),
        "{partial:?}"
    );
    expect_pods(
        "recent -A without node-b",
        &json_lines(&partial)?,
        &[
            ("shop/web-1", &web_1),
            ("ops/api-1", &api_1),
            ("shop/slow-1", &slow),
        ],
    )?;

    drop((node_a, node_b));
    Ok(())
}
