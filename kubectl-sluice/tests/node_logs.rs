//! `kubectl sluice` on the real node with the chart installed: `helm install` of `charts/sluice`
//! (its logs API on: the APIService, the operator serving it, the collector's query API) on the
//! harness's real kubelet and containerd, loggen pods of two tenant namespaces, real RBAC for
//! restricted users, and the plugin binary run with their kubeconfigs. Every check of lines
//! compares them exactly (each pod's lines as written, in order):
//!
//! * a follow (`-f`) and `--recent` across three pods of two namespaces, recent in time order;
//! * a deleted pod's lines with `--recent`;
//! * a user without `pods/log` refused (exit code 4), `-A` giving only the readable namespaces;
//! * the collector's query port (its pod IP) refusing any client without the operator's TLS client
//!   certificate in the handshake (with the token or not), leaving plain HTTP unanswered, and
//!   answering the operator's certificate without the token with 401; the operator refusing to
//!   send its token to an address a Lease advertises for a pod that is not the collector's;
//! * `drains` and `bindings` showing what the objects' status says, `explain` giving the reason
//!   for a pod that is not bound and for one on a node whose collector is not running;
//! * a follow begun while no collector runs picking up the collector once it starts.
//!
//! Needs what `tests/tests/node_chart.rs` needs (root, the node's Debian packages, rsyslog, the
//! pinned helm, the image archives in `SLUICE_IMAGE_DIR`); skips loudly without them, or fails
//! under `SLUICE_REQUIRE_ALL=1`.

use std::{path::Path, time::Duration};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use serde_json::{Value, json};
use sluice_api::{
    health::{LEASE_LABEL, LEASE_LABEL_VALUE, lease_name},
    query::{ADDRESS_ANNOTATION, RecentLine},
    query_tls::SCHEME_ANNOTATION,
};
use sluice_kube_harness::{NODE_IP, NodeOptions};
use sluice_tests::{
    LineSpec,
    chart_node::{ChartNode, IMAGES, POD_TIMEOUT, RELEASE, SYSTEM, TENANTS},
    plugin::{
        Plugin, Run, collector_status_tls, expect_pods, expect_refused, expect_time_order, grant, json_lines,
        plain_http_unanswered,
    },
    support::wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(180);
/// Lines each loggen pod writes (below the chart's 1000 recent lines per container).
const LINES: u64 = 300;
/// The collector pods' label.
const COLLECTOR_PODS: &str = "app.kubernetes.io/component=collector";

fn plugin() -> Plugin {
    Plugin::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
}

/// The cells of a table row the plugin printed (columns are at least two spaces apart).
fn cells(row: &str) -> Vec<String> {
    row.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The table cell of condition `type_` as the plugin shows it: its status, with its reason when
/// it is not True; `Unknown` when the status has none.
fn condition_cell(status: &Value, type_: &str) -> String {
    let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
    match conditions.iter().find(|c| c["type"] == type_) {
        Some(c) => {
            let (s, reason) = (
                c["status"].as_str().unwrap_or_default(),
                c["reason"].as_str().unwrap_or_default(),
            );
            if s == "True" || reason.is_empty() {
                s.to_owned()
            } else {
                format!("{s} ({reason})")
            }
        }
        None => "Unknown".to_owned(),
    }
}

/// The collector pod's name and IP.
fn collector_pod(rig: &ChartNode) -> Result<(String, String)> {
    let out = rig.kubectl(&[
        "get",
        "pods",
        "-n",
        SYSTEM,
        "-l",
        COLLECTOR_PODS,
        "-o",
        "jsonpath={.items[0].metadata.name} {.items[0].status.podIP}",
    ])?;
    let (name, ip) = out
        .trim()
        .split_once(' ')
        .with_context(|| format!("no collector pod with an IP: {out:?}"))?;
    Ok((name.to_owned(), ip.to_owned()))
}

/// The value of `key` in the Secret `name` of the sluice namespace (decoded).
fn secret_value(rig: &ChartNode, name: &str, key: &str) -> Result<String> {
    use base64::Engine as _;
    let jsonpath = format!("jsonpath={{.data.{}}}", key.replace('.', "\\."));
    let encoded = rig.kubectl(&["get", "secret", "-n", SYSTEM, name, "-o", &jsonpath])?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .with_context(|| format!("Secret {name} key {key} is not base64"))?;
    String::from_utf8(bytes).with_context(|| format!("Secret {name} key {key} is not text"))
}

/// The reason `explain pod/NAME -o json` gives for `pod`'s lines and its tenant's drain.
fn explain_reason(admin: &Path, namespace: &str, pod: &str) -> Result<String> {
    let run = plugin().run_as(
        admin,
        &["explain", &format!("pod/{pod}"), "-n", namespace, "-o", "json"],
    )?;
    ensure!(run.code == 0, "explain pod/{pod}: {run:?}");
    let value: Value = serde_json::from_str(&run.stdout).context("explain -o json")?;
    let drain = format!("{namespace}-syslog");
    let verdict = value["drains"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["drain"] == drain.as_str()))
        .with_context(|| format!("explain pod/{pod} names no drain {drain}: {}", run.stdout))?;
    Ok(verdict["reason"].as_str().unwrap_or_default().to_owned())
}

/// A pause pod in `namespace` labelled `app`.
fn pause_pod(rig: &ChartNode, namespace: &str, name: &str, app: &str) -> Result<()> {
    rig.apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": app}},
        "spec": {"automountServiceAccountToken": false, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "pause", "image": IMAGES[0].1, "imagePullPolicy": "Never"}]},
    }))?;
    rig.kubectl(&[
        "wait",
        "-n",
        namespace,
        "--for=condition=Ready",
        POD_TIMEOUT,
        &format!("pod/{name}"),
    ])
    .with_context(|| rig.context())
    .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sluice_on_the_real_node_with_the_chart() -> Result<()> {
    let test = "kubectl_sluice_on_the_real_node_with_the_chart";
    let Some(rig) = ChartNode::start(test, &NodeOptions::default()).await? else {
        return Ok(());
    };
    rig.install(&[])?;
    rig.kubectl(&[
        "wait",
        "--for=condition=Available",
        POD_TIMEOUT,
        "apiservice/v1alpha1.logs.sluice.dev",
    ])
    .with_context(|| rig.context())?;
    for i in 0..TENANTS.len() {
        rig.add_tenant(i)?;
    }
    let (ta, tb) = (TENANTS[0], TENANTS[1]);
    let harness = rig.node.harness();
    let admin = harness.kubeconfig_path().to_owned();
    let dir = tempfile::tempdir()?;

    // Identities: alice reads pod logs in both tenants, carol only in tenant-a, bob may see
    // tenant-a's pods but not their logs.
    let reader = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]);
    let pods_only = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]);
    let client = harness.client().await?;
    grant(&client, ta, "reader", "alice", reader.clone()).await?;
    grant(&client, tb, "reader", "alice", reader.clone()).await?;
    grant(&client, ta, "reader", "carol", reader).await?;
    grant(&client, ta, "pods-only", "bob", pods_only).await?;
    for (user, ns, verb, want) in [
        ("alice", tb, "pods/log", "yes"),
        ("carol", ta, "pods/log", "yes"),
        ("bob", ta, "pods", "yes"),
    ] {
        wait_until(
            &format!("RBAC: {user} may get {verb} in {ns}"),
            TIMEOUT,
            || {
                rig.kubectl(&["auth", "can-i", "get", verb, "-n", ns, "--as", user])
                    .ok()
                    .filter(|answer| answer.trim() == want)
            },
            String::new,
        )?;
    }
    let (alice, bob, carol) = (
        harness.kubeconfig_for("alice", &[]).await?,
        harness.kubeconfig_for("bob", &[]).await?,
        harness.kubeconfig_for("carol", &[]).await?,
    );

    // 1. A follow of every namespace alice may read, begun before any line is written; three
    //    pods of two namespaces: exactly their lines, each pod's in order.
    let follow_dir = dir.path().join("first");
    std::fs::create_dir(&follow_dir)?;
    let follow = plugin().follow(&follow_dir, &alice, &["logs", "-A", "-f", "-o", "json"])?;
    follow.wait_for_stderr("the follow to be in place on the collector", "Following", TIMEOUT)?;
    let (a1, a2, b1) = (
        LineSpec::new("a-1", 40, 120),
        LineSpec::new("a-2", 40, 120),
        LineSpec::new("b-1", 40, 120),
    );
    for (ns, spec) in [(ta, &a1), (ta, &a2), (tb, &b1)] {
        rig.start_loggen(ns, spec, LINES, 300)?;
    }
    for (ns, spec) in [(ta, &a1), (ta, &a2), (tb, &b1)] {
        rig.wait_succeeded(ns, &spec.tag)?;
    }
    let all = [
        ("tenant-a/a-1", &a1),
        ("tenant-a/a-2", &a2),
        ("tenant-b/b-1", &b1),
    ];
    let followed = follow.wait_for_lines(
        "the follow to print every line written",
        3 * LINES as usize,
        TIMEOUT,
    )?;
    expect_pods("follow -A", &followed, &all, LINES)?;
    drop(follow);

    // 2. The recent lines of both namespaces, merged in time order.
    let recent = json_lines(&plugin().run_as(&alice, &["logs", "-A", "--recent", "-o", "json"])?)?;
    expect_pods("recent -A", &recent, &all, LINES)?;
    expect_time_order("recent -A", &recent)?;

    // 3. A deleted pod: not found without --recent, its lines with it.
    rig.kubectl(&["delete", "pod", "-n", ta, "a-2", "--wait", POD_TIMEOUT])?;
    let gone = plugin().run_as(&alice, &["logs", "-n", ta, "a-2"])?;
    ensure!(gone.code == 5 && gone.stderr.contains("--recent"), "{gone:?}");
    let recent_gone =
        json_lines(&plugin().run_as(&alice, &["logs", "-n", ta, "a-2", "--recent", "-o", "json"])?)?;
    expect_pods(
        "a deleted pod with --recent",
        &recent_gone,
        &[("tenant-a/a-2", &a2)],
        LINES,
    )?;

    // 4. No pods/log: refused with the reason and exit code 4; -A: only what the caller may read.
    expect_refused(&plugin().run_as(&bob, &["logs", "-n", ta, "a-1"])?, Some(ta))?;
    expect_refused(&plugin().run_as(&bob, &["logs", "-A"])?, None)?;
    let served = json_lines(&plugin().run_as(&carol, &["logs", "-n", ta, "a-1", "-o", "json"])?)?;
    expect_pods("carol's tenant-a/a-1", &served, &[("tenant-a/a-1", &a1)], LINES)?;
    let only_a = json_lines(&plugin().run_as(&carol, &["logs", "-A", "--recent", "-o", "json"])?)?;
    expect_pods(
        "carol's -A",
        &only_a,
        &[("tenant-a/a-1", &a1), ("tenant-a/a-2", &a2)],
        LINES,
    )?;

    // 5. The collector's query port on its pod IP serves nobody but the operator: no handshake
    //    without the operator's client certificate (token or not), no answer to plain HTTP, and
    //    the operator's certificate still needs the token.
    let (collector, collector_ip) = collector_pod(&rig)?;
    let address = format!("{collector_ip}:9881");
    let operator_tls = format!("{RELEASE}-query-operator-tls");
    let (ca, cert, key, token) = (
        secret_value(&rig, &operator_tls, "ca.crt")?,
        secret_value(&rig, &operator_tls, "tls.crt")?,
        secret_value(&rig, &operator_tls, "tls.key")?,
        secret_value(&rig, &format!("{RELEASE}-query-token"), "token")?,
    );
    let socket: std::net::SocketAddr = address.parse()?;
    let status = |client: Option<(&str, &str)>, token: Option<&str>| {
        collector_status_tls(socket, "sluice-collector-query", &ca, client, token)
    };
    ensure!(
        plain_http_unanswered(&address, &token)?,
        "a plain HTTP request (with the token) must get no answer"
    );
    ensure!(
        status(None, Some(&token))?.is_none() && status(None, None)?.is_none(),
        "a client without the operator's certificate must be refused in the handshake"
    );
    ensure!(
        status(Some((&cert, &key)), None)? == Some(401),
        "the operator's certificate without the token must get 401"
    );
    ensure!(
        status(Some((&cert, &key)), Some(&token))? == Some(200),
        "the operator's certificate and token must be served"
    );

    // 6. A Lease that advertises an address that is not its holder pod's (here: the collector
    //    pod's name on a Lease of another node, pointing at a listener of this test): the
    //    operator warns and sends nothing there.
    let listener = std::net::TcpListener::bind((NODE_IP, 0))?;
    listener.set_nonblocking(true)?;
    let decoy = Lease {
        metadata: ObjectMeta {
            name: Some(lease_name("elsewhere")),
            namespace: Some(SYSTEM.into()),
            labels: Some([(LEASE_LABEL.to_owned(), LEASE_LABEL_VALUE.to_owned())].into()),
            // It says TLS, as the collectors do, so the holder pod check is what refuses it.
            annotations: Some(
                [
                    (ADDRESS_ANNOTATION.to_owned(), listener.local_addr()?.to_string()),
                    (SCHEME_ANNOTATION.to_owned(), "https".to_owned()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(collector.clone()),
            lease_duration_seconds: Some(3600),
            renew_time: Some(MicroTime(jiff::Timestamp::now())),
            ..LeaseSpec::default()
        }),
    };
    let mut decoy = serde_json::to_value(&decoy)?;
    decoy["apiVersion"] = json!("coordination.k8s.io/v1");
    decoy["kind"] = json!("Lease");
    rig.apply(&decoy)?;
    let redirected = plugin().run_as(&alice, &["logs", "-A", "--recent", "-o", "json"])?;
    ensure!(
        redirected.stderr.contains("does not send its token there")
            && redirected.stderr.contains("runs on node"),
        "the decoy Lease was not refused: {redirected:?}"
    );
    expect_pods(
        "recent -A beside a decoy Lease",
        &json_lines(&redirected)?,
        &all,
        LINES,
    )?;
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => anyhow::bail!("the operator connected from {peer} to the decoy Lease's address"),
        Err(e) => return Err(e).context("checking the decoy listener"),
    }
    rig.kubectl(&["delete", "lease", "-n", SYSTEM, &lease_name("elsewhere")])?;

    // 7. drains and bindings show what the objects say.
    let drain = format!("{ta}-syslog");
    wait_until(
        "kubectl sluice drains to show the LogDrain's status",
        TIMEOUT,
        || {
            let status = || -> Option<Value> {
                let out = rig
                    .kubectl(&["get", "logdrain", "-n", ta, &drain, "-o", "jsonpath={.status}"])
                    .ok()?;
                serde_json::from_str(&out).ok()
            };
            let before = status()?;
            let run = plugin().run_as(&admin, &["drains", "-n", ta]).ok()?;
            let after = status()?;
            let delivery = &before["delivery"];
            let want = [
                drain.clone(),
                condition_cell(&before, "Ready"),
                condition_cell(&before, "Delivering"),
                delivery["linesDelivered"].as_u64()?.to_string(),
                delivery["attemptsFailed"].as_u64().unwrap_or(0).to_string(),
                delivery["linesDropped"].as_u64().unwrap_or(0).to_string(),
            ];
            let rows: Vec<Vec<String>> = run.stdout.lines().skip(1).map(cells).collect();
            (before == after
                && run.code == 0
                && rows.len() == 1
                && rows[0].len() >= want.len()
                && rows[0][..want.len()] == want[..])
                .then_some(())
        },
        || format!("{:?}", plugin().run_as(&admin, &["drains", "-n", ta])),
    )?;
    pause_pod(&rig, ta, "unbound", "other")?;
    pause_pod(&rig, ta, "bound", "loggen")?;
    let bindings: Run = plugin().run_as(&admin, &["bindings", "-n", ta])?;
    let rows: Vec<Vec<String>> = bindings.stdout.lines().skip(1).map(cells).collect();
    let node = rig.node.name().to_owned();
    let want: Vec<Vec<String>> = ["a-1", "bound"]
        .iter()
        .map(|pod| {
            ["loggen", &drain, pod, &node, "loggen"]
                .iter()
                .map(|c| (*c).to_owned())
                .collect()
        })
        .collect();
    let bound_pod_container = |row: &Vec<String>| row.get(..5).map(<[String]>::to_vec);
    let shown: Vec<Vec<String>> = rows.iter().filter_map(bound_pod_container).collect();
    // The pause pod's container is named pause.
    let want: Vec<Vec<String>> = want
        .into_iter()
        .map(|mut row| {
            if row[2] == "bound" {
                row[4] = "pause".into();
            }
            row
        })
        .collect();
    ensure!(
        bindings.code == 0 && shown == want,
        "kubectl sluice bindings -n {ta}: {bindings:?}\nwant rows (first five cells): {want:?}"
    );

    // 8. explain: a pod no binding selects; a bound pod while the node's collector is not running
    //    (the DaemonSet selects no node: its pod goes, and with it the node's Lease).
    ensure!(
        explain_reason(&admin, ta, "unbound")? == "NotBound",
        "explain of a pod no binding selects"
    );
    ensure!(
        explain_reason(&admin, ta, "bound")? == "Shipped",
        "explain of a bound pod"
    );
    let select = |value: Value| {
        let patch =
            json!({"spec": {"template": {"spec": {"nodeSelector": {"sluice.dev/test-no-node": value}}}}});
        rig.kubectl(&[
            "patch",
            "daemonset/sluice-collector",
            "-n",
            SYSTEM,
            "--type=merge",
            "-p",
            &patch.to_string(),
        ])
    };
    select(json!("none"))?;
    wait_until(
        "the collector pod to be gone",
        TIMEOUT,
        || {
            rig.kubectl(&["get", "pods", "-n", SYSTEM, "-l", COLLECTOR_PODS, "-o", "name"])
                .ok()
                .filter(|pods| pods.trim().is_empty())
        },
        || rig.context(),
    )?;
    wait_until(
        "explain to say the node has no collector",
        TIMEOUT,
        || {
            explain_reason(&admin, ta, "bound")
                .ok()
                .filter(|r| r == "NodeNotCovered")
        },
        || format!("{:?}", explain_reason(&admin, ta, "bound")),
    )?;

    // 9. A follow begun while no collector runs follows the collector once it starts.
    let follow_dir = dir.path().join("later");
    std::fs::create_dir(&follow_dir)?;
    let follow = plugin().follow(&follow_dir, &alice, &["logs", "-A", "-f", "-o", "json"])?;
    follow.wait_for_stderr("the follow to begin with no collector", "Following", TIMEOUT)?;
    select(Value::Null)?;
    wait_until(
        "the follow to follow the collector that started",
        TIMEOUT,
        || {
            follow
                .stderr()
                .contains("Following a collector that started")
                .then_some(())
        },
        || format!("follow: {}\n{}", follow.stderr(), rig.context()),
    )?;
    let b2 = LineSpec::new("b-2", 40, 120);
    rig.start_loggen(tb, &b2, LINES, 300)?;
    rig.wait_succeeded(tb, &b2.tag)?;
    let followed: Vec<RecentLine> =
        follow.wait_for_lines("the later follow to print b-2's lines", LINES as usize, TIMEOUT)?;
    expect_pods(
        "a follow begun before the collector started",
        &followed,
        &[("tenant-b/b-2", &b2)],
        LINES,
    )?;
    Ok(())
}
