//! `kubectl-sluice` against a real kube-apiserver: tables that say exactly what the objects'
//! status and the pods' labels say, `explain` reasons, kubectl's flag conventions, and the exit
//! code and message of every failure a user can meet.

#[path = "plugin/support.rs"]
mod support;

use anyhow::Result;
use serde_json::json;
use sluice_api::crd::{LogBinding, LogDrain};

use crate::support::{Env, plugin};

fn drain(name: &str) -> serde_json::Value {
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain", "metadata": {"name": name},
           "spec": {"url": format!("syslog://{name}.example:514")}})
}

fn binding(
    name: &str,
    app: &str,
    drains: &[&str],
    containers: &[&str],
    streams: &[&str],
) -> serde_json::Value {
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": name},
           "spec": {"selector": {"matchLabels": {"app": app}}, "drains": drains,
                    "containers": containers, "streams": streams}})
}

const READY: (&str, &str, &str, &str) = ("Ready", "True", "Resolved", "");

fn args(env: &Env, kubeconfig: &std::path::Path, rest: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = rest.iter().map(|s| (*s).to_owned()).collect();
    args.extend(env.flags(kubeconfig));
    args
}

#[tokio::test(flavor = "multi_thread")]
async fn drains_show_what_the_status_says() -> Result<()> {
    let env = env_or_skip!("plg-drains");
    for name in ["main", "failing", "fresh"] {
        env.apply::<LogDrain>(drain(name)).await?;
    }
    env.drain_status(
        "main",
        &[READY, ("Delivering", "True", "Delivering", "")],
        Some(
            json!({"linesDelivered": 1200, "linesDropped": 0, "attemptsFailed": 0, "lagBytes": 0,
                    "nodesReporting": 2, "nodesExpected": 2}),
        ),
    )
    .await?;
    env.drain_status(
        "failing",
        &[
            READY,
            ("Delivering", "False", "DrainFailing", "failing on node n1"),
        ],
        Some(
            json!({"linesDelivered": 5, "linesDropped": 2, "attemptsFailed": 17, "lagBytes": 3145728,
                    "lastError": "connect: connection refused", "nodesReporting": 1, "nodesExpected": 1}),
        ),
    )
    .await?;
    let viewer = env.viewer("drains-viewer", false).await?;
    let run = plugin(args(&env, &viewer, &["drains"])).await?;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "NAME      READY     DELIVERING             DELIVERED   FAILED   DROPPED   LAG      LAST ERROR\n\
         failing   True      False (DrainFailing)   5           17       2         3.0MiB   connect: connection refused\n\
         fresh     Unknown   Unknown                -           -        -         -        <none>\n\
         main      True      True                   1200        0        0         0        <none>\n"
    );

    // -A as an admin: the same rows, under a NAMESPACE column.
    let admin = env.harness.kubeconfig_path().to_owned();
    let run = plugin(args(&env, &admin, &["drains", "-A"])).await?;
    assert_eq!(run.code, 0, "{run:?}");
    let ours: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("plg-drains "))
        .collect();
    let names: Vec<&str> = ours.iter().filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(names, ["failing", "fresh", "main"]);
    assert!(run.stdout.starts_with("NAMESPACE "), "{run:?}");

    // -A as someone who may list drains in one namespace only: refused, clearly.
    let run = plugin(args(&env, &viewer, &["drains", "-A"])).await?;
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr
            .contains("you may not read LogDrains in all namespaces"),
        "{run:?}"
    );

    // An empty namespace: a message, and success (as kubectl get).
    let mut flags = env.flags(&admin);
    flags.extend(["drains", "-n", "plg-drains-sys"].map(String::from));
    let run = plugin(flags).await?;
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run:?}");
    assert_eq!(run.stderr, "No LogDrains found in namespace plg-drains-sys.\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_namespace_comes_from_the_kubeconfig_context() -> Result<()> {
    let env = env_or_skip!("plg-context");
    env.apply::<LogDrain>(drain("only")).await?;
    let viewer = env.viewer("context-viewer", false).await?;
    let mut config = kube::config::Kubeconfig::read_from(&viewer)?;
    for context in &mut config.contexts {
        if let Some(c) = context.context.as_mut() {
            c.namespace = Some(env.ns.clone());
        }
    }
    let with_ns = viewer.with_file_name("context-viewer-with-namespace.json");
    std::fs::write(&with_ns, serde_json::to_vec(&config)?)?;
    let run = plugin(vec![
        "drains".into(),
        "--kubeconfig".into(),
        with_ns.display().to_string(),
    ])
    .await?;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().next()),
        Some("only")
    );

    let run = plugin(vec![
        "drains".into(),
        "--kubeconfig".into(),
        with_ns.display().to_string(),
        "--context".into(),
        "no-such-context".into(),
    ])
    .await?;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("no-such-context"), "{run:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bindings_evaluate_selectors_against_the_pods() -> Result<()> {
    let env = env_or_skip!("plg-bindings");
    for name in ["syslog", "http"] {
        env.apply::<LogDrain>(drain(name)).await?;
    }
    env.drain_status("syslog", &[READY], None).await?;
    env.drain_status(
        "http",
        &[("Ready", "False", "SecretNotFound", "no Secret creds")],
        None,
    )
    .await?;
    env.apply::<LogBinding>(binding(
        "web",
        "web",
        &["syslog", "http", "ghost"],
        &[],
        &["stdout"],
    ))
    .await?;
    env.apply::<LogBinding>(binding("sidecars", "web", &["syslog"], &["proxy"], &[]))
        .await?;
    env.apply::<LogBinding>(binding("nobody", "none", &["syslog"], &[], &[]))
        .await?;
    env.pod(
        "web-0",
        "web",
        Some("n1"),
        &[("app", "docker://a0"), ("proxy", "docker://p0")],
    )
    .await?;
    env.pod("web-1", "web", None, &[("app", "")]).await?;
    env.pod("api-0", "api", Some("n1"), &[("app", "docker://b0")])
        .await?;
    let viewer = env.viewer("bindings-viewer", false).await?;
    let run = plugin(args(&env, &viewer, &["bindings"])).await?;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "BINDING    DRAINS                                    POD      NODE        CONTAINERS   STREAMS\n\
         nobody     syslog                                    <none>   -           -            -\n\
         sidecars   syslog                                    web-0    n1          proxy        stdout,stderr\n\
         sidecars   syslog                                    web-1    <pending>   <none>       stdout,stderr\n\
         web        syslog,http (not ready),ghost (missing)   web-0    n1          app,proxy    stdout\n\
         web        syslog,http (not ready),ghost (missing)   web-1    <pending>   app          stdout\n"
    );
    Ok(())
}

/// `(drain, shipped, reason)` of an `explain -o json` run.
fn verdicts(stdout: &str) -> Result<Vec<(String, String, String)>> {
    let doc: serde_json::Value = serde_json::from_str(stdout)?;
    let mut out = Vec::new();
    for v in doc["drains"].as_array().into_iter().flatten() {
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        out.push((field("drain"), field("shipped"), field("reason")));
    }
    Ok(out)
}

fn expect(rows: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    rows.iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_gives_the_reason_for_each_drain() -> Result<()> {
    let env = env_or_skip!("plg-explain");
    for name in ["main", "broken", "other", "errs", "side"] {
        env.apply::<LogDrain>(drain(name)).await?;
    }
    for name in ["main", "other", "errs", "side"] {
        env.drain_status(name, &[READY], None).await?;
    }
    env.drain_status(
        "broken",
        &[("Ready", "False", "SecretNotFound", "no Secret creds")],
        None,
    )
    .await?;
    env.apply::<LogBinding>(binding("web", "web", &["main", "broken", "ghost"], &[], &[]))
        .await?;
    env.apply::<LogBinding>(binding("only-errs", "web", &["errs"], &["app"], &["stderr"]))
        .await?;
    env.apply::<LogBinding>(binding("sidecar", "web", &["side"], &["proxy"], &[]))
        .await?;
    env.apply::<LogBinding>(binding("api", "api", &["other"], &[], &[]))
        .await?;
    let now = jiff::Timestamp::now();
    env.lease("n1", now, 3600).await?;
    env.lease("n3", now - jiff::SignedDuration::from_hours(2), 40)
        .await?;
    env.pod("web-0", "web", Some("n1"), &[("app", "docker://w0")])
        .await?;
    env.pod("web-1", "web", Some("n2"), &[("app", "docker://w1")])
        .await?;
    env.pod("web-2", "web", Some("n3"), &[("app", "docker://w2")])
        .await?;
    env.pod("web-3", "web", Some("n1"), &[("app", "")]).await?;
    env.pod("lonely", "none", Some("n1"), &[("app", "docker://l0")])
        .await?;
    let viewer = env.viewer("explain-viewer", true).await?;
    let explain = |pod: &str| args(&env, &viewer, &["explain", pod, "-o", "json"]);

    let run = plugin(explain("pod/web-0")).await?;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        verdicts(&run.stdout)?,
        expect(&[
            ("broken", "no", "DrainNotReady"),
            ("errs", "yes", "Shipped"),
            ("ghost", "no", "DrainMissing"),
            ("main", "yes", "Shipped"),
            ("other", "no", "NotBound"),
            ("side", "no", "ContainersFiltered"),
        ])
    );
    assert!(
        run.stdout.contains("streams stderr (stdout filtered)"),
        "{}",
        run.stdout
    );

    for (pod, reason, detail) in [
        ("web-1", "NodeNotCovered", "no collector runs on node n2"),
        (
            "web-2",
            "NodeNotCovered",
            "the collector of node n3 stopped renewing its Lease",
        ),
        (
            "web-3",
            "NotStarted",
            "no container of app has started on node n1 yet",
        ),
    ] {
        let run = plugin(explain(pod)).await?;
        assert_eq!(run.code, 0, "{run:?}");
        let doc: serde_json::Value = serde_json::from_str(&run.stdout)?;
        let main = doc["drains"]
            .as_array()
            .and_then(|a| a.iter().find(|v| v["drain"] == "main"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (main["shipped"].as_str(), main["reason"].as_str()),
            (Some("no"), Some(reason))
        );
        assert!(
            main["detail"].as_str().unwrap_or_default().contains(detail),
            "{main}"
        );
    }

    // The table form, for a pod no binding selects.
    let run = plugin(args(&env, &viewer, &["explain", "lonely"])).await?;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout,
        "Pod plg-explain/lonely on node n1 (collector running), labels app=none\n\
         DRAIN    SHIPPED   REASON     DETAIL\n\
         broken   no        NotBound   binding web (app=web) names this drain but does not select this pod (labels app=none)\n\
         errs     no        NotBound   binding only-errs (app=web) names this drain but does not select this pod (labels app=none)\n\
         main     no        NotBound   binding web (app=web) names this drain but does not select this pod (labels app=none)\n\
         other    no        NotBound   binding api (app=api) names this drain but does not select this pod (labels app=none)\n\
         side     no        NotBound   binding sidecar (app=web) names this drain but does not select this pod (labels app=none)\n"
    );

    // Someone who may not read the collectors' Leases gets an honest "unknown".
    let blind = env.viewer("explain-blind", false).await?;
    let run = plugin(args(&env, &blind, &["explain", "pod/web-0", "-o", "json"])).await?;
    assert_eq!(run.code, 0, "{run:?}");
    let main = verdicts(&run.stdout)?.into_iter().find(|v| v.0 == "main");
    assert_eq!(
        main,
        Some(("main".into(), "unknown".into(), "CoverageUnknown".into()))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_have_a_clear_message_and_their_own_exit_code() -> Result<()> {
    let env = env_or_skip!("plg-errors");
    let nobody = env.harness.kubeconfig_for("plg-nobody", &[]).await?;
    let viewer = env.viewer("errors-viewer", false).await?;
    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (
            args(&env, &nobody, &["drains"]),
            4,
            "error: you may not read LogDrains in namespace plg-errors".into(),
        ),
        (
            args(&env, &viewer, &["explain", "pod/nope"]),
            5,
            "error: pod plg-errors/nope not found".into(),
        ),
        (
            args(&env, &viewer, &["explain", "deploy/web"]),
            1,
            "error: explain takes a pod (pod/NAME), not \"deploy\"".into(),
        ),
        (args(&env, &viewer, &["drains", "--bogus"]), 2, "--bogus".into()),
        (
            args(&env, &viewer, &["logs", "pod/nope"]),
            5,
            "error: pod nope not found in namespace plg-errors (the lines of a deleted pod: add --recent)"
                .into(),
        ),
        (
            args(&env, &viewer, &["logs", "deploy/nope"]),
            4,
            "error: you may not read deployment nope: ".into(),
        ),
        (
            args(&env, &viewer, &["logs", "-l", "app=none"]),
            5,
            "error: no pods match in namespace plg-errors".into(),
        ),
        (
            args(&env, &viewer, &["logs", "cronjob/x"]),
            1,
            "error: cannot read logs of \"cronjob\"".into(),
        ),
        (
            args(&env, &viewer, &["logs", "web", "-l", "app=web"]),
            2,
            "cannot be used with".into(),
        ),
        (
            args(&env, &viewer, &["logs", "web", "--since", "5d"]),
            2,
            "not a duration".into(),
        ),
        (
            vec![
                "drains".into(),
                "--kubeconfig".into(),
                "/nonexistent/kubeconfig".into(),
            ],
            3,
            "error: cannot read kubeconfig /nonexistent/kubeconfig".into(),
        ),
    ];
    for (args, code, message) in cases {
        let run = plugin(args.clone()).await?;
        assert_eq!(run.code, code, "{args:?}: {run:?}");
        assert!(run.stderr.contains(&message), "{args:?}: {run:?}");
    }

    // An API server that does not answer: a kubeconfig pointing at a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let text = std::fs::read_to_string(&viewer)?;
    let server = env.harness.server_url();
    let dead = viewer.with_file_name("errors-viewer-dead.kubeconfig");
    std::fs::write(&dead, text.replace(server, &format!("https://{closed}")))?;
    let run = plugin(args(&env, &dead, &["drains"])).await?;
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("cannot reach the API server at https://{closed}")),
        "{run:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_without_sluice_says_so() -> Result<()> {
    let Some(bare) = sluice_kube_harness::KubeHarness::start_or_skip("plg-bare").await? else {
        return Ok(());
    };
    let run = plugin(vec![
        "drains".into(),
        "--kubeconfig".into(),
        bare.kubeconfig_path().display().to_string(),
    ])
    .await?;
    assert_eq!(run.code, 6, "{run:?}");
    assert!(run.stderr.contains("sluice is not installed"), "{run:?}");
    // No APIService for the logs API: the API server answers 404 for its group.
    let run = plugin(vec![
        "logs".into(),
        "-n".into(),
        "default".into(),
        "--kubeconfig".into(),
        bare.kubeconfig_path().display().to_string(),
    ])
    .await?;
    assert_eq!(run.code, 6, "{run:?}");
    assert!(
        run.stderr
            .contains("does not serve sluice's logs API (APIService v1alpha1.logs.sluice.dev)"),
        "{run:?}"
    );
    Ok(())
}

#[tokio::test]
async fn completion_scripts_name_the_subcommands() -> Result<()> {
    for shell in ["bash", "zsh", "fish"] {
        let run = plugin(vec!["completion".into(), shell.into()]).await?;
        assert_eq!(run.code, 0, "{run:?}");
        for word in ["drains", "bindings", "explain", "kubeconfig"] {
            assert!(run.stdout.contains(word), "{shell} completion lacks {word}");
        }
    }
    Ok(())
}
