//! Cluster mode end to end: the real kube-apiserver harness, the operator (in-process, as its
//! restricted identity), two collector processes standing for two nodes (each its own node name,
//! state dir and the collectors' restricted identity, each shipping only its node's containers),
//! real Docker containers whose pods are reported as a kubelet would, rsyslog and HTTP receivers.
//! Every delivery check compares the multiset of lines written with the multiset received.

use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Result, ensure};
use serde_json::json;
use sluice_api::crd::{LogBinding, LogDrain};
use sluice_tests::{
    LineSpec,
    collector::{ClusterArgs, Collector},
    docker::Docker,
    fixture::{docker_rig, expect_exact, lines, wait_for_lines},
    http::HttpReceiver,
    kube::{COLLECTOR_USER, KubeRig, Placement},
    multiset::{Multiset, assert_no_loss, compare},
    support::wait_until,
    syslog::Rsyslog,
};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(180);
/// Long enough for a Lease renewal (10 s), a status write and the operator's beat.
const STATUS_TIMEOUT: Duration = Duration::from_secs(90);

fn rs_msgs(receiver: &Rsyslog) -> Multiset {
    receiver.received().iter().map(|m| m.msg.clone()).collect()
}

fn http_msgs(receiver: &HttpReceiver) -> Multiset {
    receiver.messages().into_iter().collect()
}

fn drain(name: &str, url: &str) -> serde_json::Value {
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain",
           "metadata": {"name": name}, "spec": {"url": url}})
}

fn binding(name: &str, app: &str, drains: &[&str]) -> serde_json::Value {
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding",
           "metadata": {"name": name},
           "spec": {"selector": {"matchLabels": {"app": app}}, "drains": drains}})
}

/// A loggen container writing `count` lines of `spec` at `rate`/s, and its pod on `node`.
fn workload(
    docker: &Docker,
    kube: &KubeRig,
    node: &str,
    app: &str,
    spec: &LineSpec,
    count: u64,
    rate: u64,
) -> Result<String> {
    let at = Placement {
        ns: &kube.tenant,
        node,
        app,
    };
    kube.workload(docker, &at, spec, count, rate)
}

/// The `linesDelivered` of a drain's status.
fn delivered(kube: &KubeRig, drain: &str) -> Option<u64> {
    let status = kube.drain_status(drain).ok()??;
    u64::try_from(status.delivery?.lines_delivered).ok()
}

fn wait_delivered(kube: &KubeRig, drain: &str, want: u64) -> Result<()> {
    wait_until(
        &format!("status.delivery.linesDelivered of {drain} = {want}"),
        STATUS_TIMEOUT,
        || (delivered(kube, drain) == Some(want)).then_some(()),
        || format!("{:?}", kube.drain_status(drain)),
    )
}

#[test]
fn cluster_mode_end_to_end() -> Result<()> {
    let test = "cluster_mode_end_to_end";
    let Some(rig) = docker_rig(test)? else {
        return Ok(());
    };
    let Some(mut kube) = KubeRig::start(test)? else {
        return Ok(());
    };
    let docker = &rig.docker;
    let rsyslog = Rsyslog::start(&rig.rsyslog_bin)?;
    let (http, flaky) = (HttpReceiver::start()?, HttpReceiver::start()?);
    kube.start_operator()?;
    let kubeconfig = kube.kubeconfig_for(COLLECTOR_USER)?;
    let args = |node: &str| ClusterArgs {
        node: node.into(),
        namespace: kube.system.clone(),
        kubeconfig: kubeconfig.clone(),
        docker_root: docker.root().to_owned(),
    };
    let mut node_a = Collector::start_cluster(&rig.bins, args("node-a"))?;
    let mut node_b = Collector::start_cluster(&rig.bins, args("node-b"))?;
    let logs = |c: &Collector| c.log_tail(15);

    // 1. apply a drain and a binding → lines arrive on both nodes.
    let (web_a, web_b, api_a) = (
        LineSpec::new("web-a", 60, 140),
        LineSpec::new("web-b", 60, 140),
        LineSpec::new("api-a", 60, 140),
    );
    let mut running = vec![
        workload(docker, &kube, "node-a", "web", &web_a, 3000, 500)?,
        workload(docker, &kube, "node-b", "web", &web_b, 3000, 500)?,
        workload(docker, &kube, "node-a", "api", &api_a, 2000, 500)?,
    ];
    let applied = Instant::now();
    kube.apply::<LogDrain>(drain("web", &format!("syslog://127.0.0.1:{}", rsyslog.ports.tcp)))?;
    kube.apply::<LogBinding>(binding("web", "web", &["web"]))?;
    kube.apply::<LogDrain>(drain("api", &http.url()))?;
    kube.apply::<LogBinding>(binding("api", "api", &["api"]))?;
    wait_for_lines(
        "rsyslog",
        1,
        DELIVERY_TIMEOUT,
        || rs_msgs(&rsyslog),
        || logs(&node_a),
    )?;
    eprintln!(
        "cluster: first line {:?} after the drain and binding were applied",
        applied.elapsed()
    );
    for id in running.drain(..) {
        ensure!(docker.wait(&id)? == 0, "loggen failed");
    }
    let mut web = lines(&web_a, 0, 3000);
    web.merge(&lines(&web_b, 0, 3000));
    expect_exact(
        "web on both nodes",
        &web,
        DELIVERY_TIMEOUT,
        || rs_msgs(&rsyslog),
        || logs(&node_b),
    )?;
    let mut api = lines(&api_a, 0, 2000);
    expect_exact(
        "api on node-a",
        &api,
        DELIVERY_TIMEOUT,
        || http_msgs(&http),
        || logs(&node_a),
    )?;
    assert!(
        !rs_msgs(&rsyslog).iter().any(|(l, _)| l.contains("api-a")),
        "a drain received a container it is not bound to"
    );

    // 2. linesDelivered equals what the receivers counted; Delivering is True.
    wait_delivered(&kube, "web", rs_msgs(&rsyslog).len())?;
    wait_delivered(&kube, "api", http_msgs(&http).len())?;
    kube.wait_delivering("web", "True", "Delivering", STATUS_TIMEOUT)?;

    // 3. a collector restarted with SIGTERM: exact; its Lease is gone while it is stopped.
    let web_a2 = LineSpec::new("web-a2", 60, 140);
    let id = workload(docker, &kube, "node-a", "web", &web_a2, 4000, 400)?;
    wait_for_lines(
        "web-a2 before the restart",
        web.len() + 500,
        DELIVERY_TIMEOUT,
        || rs_msgs(&rsyslog),
        || logs(&node_a),
    )?;
    ensure!(node_a.sigterm()?.success(), "the collector did not stop cleanly");
    wait_until(
        "node-a's Lease to be deleted on a graceful stop",
        Duration::from_secs(30),
        || kube.lease("node-a").ok().and_then(|l| l.is_none().then_some(())),
        || format!("{:?}", kube.lease("node-a")),
    )?;
    node_a.restart()?;
    ensure!(docker.wait(&id)? == 0, "loggen failed");
    web.merge(&lines(&web_a2, 0, 4000));
    expect_exact(
        "web across a SIGTERM restart",
        &web,
        DELIVERY_TIMEOUT,
        || rs_msgs(&rsyslog),
        || logs(&node_a),
    )?;

    // 4. the API server stopped while lines flow; node-b restarted meanwhile ships from its saved
    //    config; both collectors follow later changes.
    let web_b2 = LineSpec::new("web-b2", 60, 140);
    let id = workload(docker, &kube, "node-b", "web", &web_b2, 6000, 200)?;
    wait_for_lines(
        "web-b2 before the outage",
        web.len() + 200,
        DELIVERY_TIMEOUT,
        || rs_msgs(&rsyslog),
        || logs(&node_b),
    )?;
    kube.pause()?;
    ensure!(node_b.sigterm()?.success(), "the collector did not stop cleanly");
    node_b.restart()?;
    let (_, ready) = node_b.readyz()?;
    assert!(
        ready.contains("config from saved"),
        "node-b after a start without the API server: {ready}"
    );
    ensure!(docker.wait(&id)? == 0, "loggen failed"); // about 30 s of lines without the API server
    web.merge(&lines(&web_b2, 0, 6000));
    expect_exact(
        "web while the API server is down",
        &web,
        DELIVERY_TIMEOUT,
        || rs_msgs(&rsyslog),
        || logs(&node_b),
    )?;
    kube.resume()?;
    wait_until(
        "node-b to take its config from the API server again",
        STATUS_TIMEOUT,
        || {
            node_b
                .readyz()
                .ok()
                .filter(|(_, t)| t.contains("config from api"))
        },
        || format!("{:?}", node_b.readyz()),
    )?;

    // 5. change the binding's selector → routing follows; delete the binding → lines stop.
    let other_b = LineSpec::new("other-b", 60, 140);
    let id = workload(docker, &kube, "node-b", "other", &other_b, 1500, 500)?;
    let changed = Instant::now();
    kube.apply::<LogBinding>(binding("api", "other", &["api"]))?;
    wait_for_lines(
        "other-b",
        api.len() + 1,
        DELIVERY_TIMEOUT,
        || http_msgs(&http),
        || logs(&node_b),
    )?;
    eprintln!("cluster: selector change followed in {:?}", changed.elapsed());
    ensure!(docker.wait(&id)? == 0, "loggen failed");
    api.merge(&lines(&other_b, 0, 1500));
    expect_exact(
        "api after the selector change",
        &api,
        DELIVERY_TIMEOUT,
        || http_msgs(&http),
        || logs(&node_b),
    )?;

    let more_b = LineSpec::new("more-b", 60, 140);
    let written = 20_000;
    let id = workload(docker, &kube, "node-b", "other", &more_b, written, 400)?;
    wait_for_lines(
        "more-b before the binding goes",
        api.len() + 200,
        DELIVERY_TIMEOUT,
        || http_msgs(&http),
        || logs(&node_b),
    )?;
    let reloads = node_b.metric_sum("sluice_collector_config_reloads_total", &[("result", "applied")]);
    kube.delete::<LogBinding>("api")?;
    wait_until(
        "node-b to apply the config without the binding",
        STATUS_TIMEOUT,
        || {
            let now = node_b.metric_sum("sluice_collector_config_reloads_total", &[("result", "applied")]);
            (now > reloads).then_some(())
        },
        || logs(&node_b),
    )?;
    docker.kill(&id)?;
    let mut all_more = api.clone();
    all_more.merge(&lines(&more_b, 0, written));
    let diff = compare(&all_more, &http_msgs(&http));
    assert!(
        diff.duplicated == 0 && diff.unexpected == 0,
        "after the binding was deleted:\n{diff}"
    );
    assert!(
        diff.received < all_more.len(),
        "lines kept arriving after the binding was deleted"
    );

    // 6. a failing drain: Delivering=False (DrainFailing) while its destination fails, True
    //    again once it answers; every line delivered once, the other drains exact.
    flaky.set_failing(true);
    kube.apply::<LogDrain>(drain("flaky", &flaky.url()))?;
    kube.apply::<LogBinding>(binding("flaky", "flaky", &["flaky"]))?;
    let flaky_a = LineSpec::new("flaky-a", 60, 140);
    let id = workload(docker, &kube, "node-a", "flaky", &flaky_a, 1000, 500)?;
    kube.wait_delivering("flaky", "False", "DrainFailing", STATUS_TIMEOUT)?;
    flaky.set_failing(false);
    kube.wait_delivering("flaky", "True", "Delivering", STATUS_TIMEOUT)?;
    ensure!(docker.wait(&id)? == 0, "loggen failed");
    expect_exact(
        "the drain that failed",
        &lines(&flaky_a, 0, 1000),
        DELIVERY_TIMEOUT,
        || http_msgs(&flaky),
        || logs(&node_a),
    )?;
    expect_exact(
        "web beside the failing drain",
        &web,
        DELIVERY_TIMEOUT,
        || rs_msgs(&rsyslog),
        || logs(&node_a),
    )?;

    for reason in ["DrainFailing", "DrainRecovered"] {
        assert!(
            kube.has_event("flaky", reason)?,
            "no {reason} Event about the drain"
        );
    }

    // 7. change one drain's URL → the new destination receives, the old one no more.
    let moved = HttpReceiver::start()?;
    let applied_a = || node_a.metric_sum("sluice_collector_config_reloads_total", &[("result", "applied")]);
    let before = applied_a();
    kube.apply::<LogDrain>(drain("flaky", &moved.url()))?;
    wait_until(
        "node-a to apply the new URL",
        STATUS_TIMEOUT,
        || (applied_a() > before).then_some(()),
        || logs(&node_a),
    )?;
    let flaky_a2 = LineSpec::new("flaky-a2", 60, 140);
    let id = workload(docker, &kube, "node-a", "flaky", &flaky_a2, 1000, 500)?;
    ensure!(docker.wait(&id)? == 0, "loggen failed");
    expect_exact(
        "the drain's new URL",
        &lines(&flaky_a2, 0, 1000),
        DELIVERY_TIMEOUT,
        || http_msgs(&moved),
        || logs(&node_a),
    )?;
    expect_exact(
        "the drain's old URL",
        &lines(&flaky_a, 0, 1000),
        DELIVERY_TIMEOUT,
        || http_msgs(&flaky),
        || logs(&node_a),
    )?;

    // 8. a collector killed ten times while lines flow: nothing lost, repeats bounded by what was
    //    in flight.
    let killed = HttpReceiver::start()?;
    kube.apply::<LogDrain>(drain("kills", &killed.url()))?;
    kube.apply::<LogBinding>(binding("kills", "kills", &["kills"]))?;
    let (kill_b, count, rate, kills) = (LineSpec::new("kill-b", 60, 140), 9000, 300, 10);
    let id = workload(docker, &kube, "node-b", "kills", &kill_b, count, rate)?;
    let distinct = |h: &HttpReceiver| http_msgs(h).iter().count() as u64;
    for round in 0..kills {
        let before = distinct(&killed);
        wait_until(
            &format!("progress before kill {round}"),
            DELIVERY_TIMEOUT,
            || (distinct(&killed) >= before + 200).then_some(()),
            || logs(&node_b),
        )?;
        node_b.sigkill();
        node_b.restart()?;
    }
    ensure!(docker.wait(&id)? == 0, "loggen failed");
    wait_until(
        "every kill-b line at least once",
        DELIVERY_TIMEOUT,
        || (distinct(&killed) >= count).then_some(()),
        || format!("{} of {count}; {}", distinct(&killed), logs(&node_b)),
    )?;
    let repeats = assert_no_loss(
        "kill-b across ten SIGKILLs",
        &lines(&kill_b, 0, count),
        &http_msgs(&killed),
    );
    eprintln!("cluster: SIGKILL x{kills}: {repeats} repeats of {count} lines");
    assert!(
        repeats <= kills * 5 * rate,
        "more repeats than 5 s of lines per kill"
    );
    expect_exact(
        "web after the kills",
        &web,
        DELIVERY_TIMEOUT,
        || rs_msgs(&rsyslog),
        || logs(&node_b),
    )?;

    // 9. a collector killed: its node is not covered once its Lease expires.
    node_a.sigkill();
    kube.wait_delivering("web", "False", "NodeNotCovered", Duration::from_secs(150))?;
    let (_, _, message) = kube.delivering("web").unwrap_or_default();
    assert!(
        message.contains("node-a") && !message.contains("node-b"),
        "{message}"
    );
    Ok(())
}
