//! The chart on the real node: `helm install` of `charts/sluice` runs the operator Deployment and
//! the collector DaemonSet as pods of the upstream kubelet on containerd (the images of
//! `scripts/images.sh`, imported, never pulled), and the collector pod ships the CRI logs that
//! containerd wrote and the kubelet rotated to rsyslog receivers on the host. Two tenants, each
//! a namespace with its own LogDrain and LogBinding, receive exactly their own namespace's lines
//! (multisets of lines written and received, read from what rsyslog wrote), through the kubelet's
//! own rotation, lines longer than containerd's 16 KiB split, a `kubectl rollout restart` of the
//! DaemonSet while lines flow, and a `helm upgrade`; `helm uninstall` leaves only the CRDs.
//!
//! One node and one release serve every step: a node takes 5-15 s to start. Needs root, the
//! Debian packages of scripts/setup.sh, rsyslog, the pinned helm and the image archives of
//! `scripts/images.sh` in `SLUICE_IMAGE_DIR` (scripts/test.sh provides all of them); without
//! them it skips loudly, or fails under `SLUICE_REQUIRE_ALL=1`.

use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context, Result, ensure};
use sluice_kube_harness::{NodeOptions, POD_LOGS_DIR};
use sluice_tests::{
    LineSpec,
    chart_node::{ChartNode, DELIVERY_TIMEOUT, POD_TIMEOUT, RELEASE, SYSTEM, TENANTS},
    fixture::{lines, wait_for_lines},
    helm::chart_dir,
    multiset::Multiset,
    support::wait_until,
};

/// The rotated files of `namespace`/`pod`'s container: every file but the current `0.log`.
fn rotated_files(namespace: &str, pod: &str) -> Result<Vec<String>> {
    let prefix = format!("{namespace}_{pod}_");
    let mut rotated = Vec::new();
    for entry in std::fs::read_dir(POD_LOGS_DIR)? {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        for file in std::fs::read_dir(entry.path().join("loggen"))? {
            let name = file?.file_name().to_string_lossy().into_owned();
            if name != "0.log" {
                rotated.push(name);
            }
        }
    }
    Ok(rotated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_on_the_real_node_ships_each_tenant_exactly_its_lines() -> Result<()> {
    let test = "helm_install_on_the_real_node_ships_each_tenant_exactly_its_lines";
    // Small files and a frequent check, so the kubelet rotates while loggen writes.
    let node_options = NodeOptions {
        container_log_max_size: "1Mi".into(),
        container_log_max_files: 3,
        container_log_monitor_interval: "3s".into(),
    };
    let Some(rig) = ChartNode::start(test, &node_options).await? else {
        return Ok(());
    };
    println!("node Ready {:.1?} after the start", rig.node.ready_after());

    // 1. helm install: the operator and collector pods become Ready.
    let installing = Instant::now();
    rig.install(&[])?;
    println!(
        "helm install: operator and collector pods Ready {:.1?} after the install began",
        installing.elapsed()
    );

    // 2. Two tenants, each its own drain and binding: each receives exactly its own lines.
    let mut want = [Multiset::new(), Multiset::new()];
    let mut first = Vec::new();
    for (i, ns) in TENANTS.iter().enumerate() {
        rig.add_tenant(i)?;
        let mut spec = LineSpec::new(format!("{ns}-first"), 60, 140);
        if i == 1 {
            // Longer than containerd's 16 KiB split: written as partial entries, shipped whole.
            spec.long_every = 500;
            spec.long_bytes = 40_000;
            spec.stderr_every = 3;
        }
        rig.start_loggen(ns, &spec, 3000, 1000)?;
        want[i].merge(&lines(&spec, 0, 3000));
        first.push(spec.tag);
    }
    wait_for_lines(
        "the first tenant's drain",
        1,
        DELIVERY_TIMEOUT,
        || rig.received(0),
        || rig.context(),
    )?;
    println!(
        "first line at a drain {:.1?} after helm install began",
        installing.elapsed()
    );
    for (i, ns) in TENANTS.iter().enumerate() {
        rig.wait_succeeded(ns, &first[i])?;
        rig.expect_exact(&format!("{ns}'s drain"), i, &want[i])?;
    }

    // 3. The kubelet's own rotation at a high line rate: exact, and the files did rotate.
    let fast = LineSpec::new("tenant-a-fast", 100, 200);
    rig.start_loggen(TENANTS[0], &fast, 200_000, 20_000)?;
    rig.wait_succeeded(TENANTS[0], &fast.tag)?;
    want[0].merge(&lines(&fast, 0, 200_000));
    rig.expect_exact("tenant-a through the kubelet's rotation", 0, &want[0])?;
    let rotated = rotated_files(TENANTS[0], &fast.tag)?;
    ensure!(
        !rotated.is_empty(),
        "the kubelet rotated no file of {} (containerLogMaxSize 1Mi)",
        fast.tag
    );
    println!("kubelet rotation: {} kept rotated files {rotated:?}", fast.tag);

    // 4. kubectl rollout restart of the DaemonSet while lines flow: the checkpoint on the
    //    hostPath carries over, nothing is lost or repeated.
    let flowing = LineSpec::new("tenant-b-restart", 60, 140);
    rig.start_loggen(TENANTS[1], &flowing, 12_000, 1000)?;
    wait_for_lines(
        "tenant-b before the rollout restart",
        want[1].len() + 2000,
        DELIVERY_TIMEOUT,
        || rig.received(1),
        || rig.context(),
    )?;
    rig.kubectl(&["rollout", "restart", "-n", SYSTEM, "daemonset/sluice-collector"])?;
    rig.kubectl(&[
        "rollout",
        "status",
        "-n",
        SYSTEM,
        "daemonset/sluice-collector",
        POD_TIMEOUT,
    ])?;
    rig.wait_succeeded(TENANTS[1], &flowing.tag)?;
    want[1].merge(&lines(&flowing, 0, 12_000));
    rig.expect_exact("tenant-b across a rollout restart", 1, &want[1])?;

    // 5. helm upgrade with changed values: still exact.
    rig.helm(
        &[
            &[
                "upgrade",
                RELEASE,
                &chart_dir().display().to_string(),
                "--reuse-values",
                "--wait",
                "--timeout=5m",
            ],
            &[
                "--set",
                "collector.logLevel=debug",
                "--set",
                "collector.gracePeriodSeconds=15",
            ][..],
        ]
        .concat(),
    )?;
    let args = rig.kubectl(&[
        "get",
        "-n",
        SYSTEM,
        "daemonset/sluice-collector",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].args}",
    ])?;
    ensure!(
        args.contains("--grace-period=15"),
        "helm upgrade did not change the DaemonSet: {args}"
    );
    for (i, ns) in TENANTS.iter().enumerate() {
        let spec = LineSpec::new(format!("{ns}-upgraded"), 60, 140);
        rig.start_loggen(ns, &spec, 3000, 1000)?;
        rig.wait_succeeded(ns, &spec.tag)?;
        want[i].merge(&lines(&spec, 0, 3000));
    }
    for (i, ns) in TENANTS.iter().enumerate() {
        rig.expect_exact(&format!("{ns} after helm upgrade"), i, &want[i])?;
    }

    // 6. The real client explains the CRD's fields.
    let explain = rig.kubectl(&["explain", "logdrain.spec.url"])?;
    ensure!(
        explain.contains("FIELD: url") && explain.contains("DESCRIPTION"),
        "kubectl explain logdrain.spec.url printed no documentation:\n{explain}"
    );

    // The examples of every drain kind are accepted as written.
    let examples = sluice_tests::helm::repo_root().join("examples/cluster");
    rig.kubectl(&[
        "apply",
        "-f",
        &examples.join("logdrains.yaml").display().to_string(),
    ])?;
    rig.kubectl(&[
        "apply",
        "-f",
        &examples.join("logbinding.yaml").display().to_string(),
    ])?;
    let drains = rig.kubectl(&["get", "logdrains", "-n", "sluice-examples", "-o", "name"])?;
    ensure!(
        drains.lines().count() == 4,
        "examples/cluster: expected 4 LogDrains, kubectl shows:\n{drains}"
    );

    // 7. helm uninstall: every object the chart rendered is gone, the CRDs stay.
    let rendered = rig.template()?;
    rig.helm(&["uninstall", RELEASE, "--wait", "--timeout=2m"])?;
    let mut left = Vec::new();
    for object in &rendered {
        let kind = object["kind"].as_str().unwrap_or_default();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let found = rig.kubectl(&[
            "get",
            "-n",
            SYSTEM,
            kind,
            name,
            "--ignore-not-found",
            "-o",
            "name",
        ])?;
        if !found.trim().is_empty() {
            left.push(found.trim().to_owned());
        }
    }
    ensure!(left.is_empty(), "left after helm uninstall: {left:?}");
    wait_until(
        "the release's pods to be gone after helm uninstall",
        Duration::from_secs(120),
        || {
            rig.kubectl(&["get", "pods", "-n", SYSTEM, "-o", "name"])
                .ok()
                .filter(|p| p.trim().is_empty())
        },
        || rig.context(),
    )?;
    for crd in ["logdrains.sluice.dev", "logbindings.sluice.dev"] {
        rig.kubectl(&["get", "crd", crd])
            .with_context(|| format!("helm uninstall removed the CRD {crd}"))?;
    }
    // What the components wrote at run time (the node's config Secret, the leader Lease and the
    // collector's node Lease) is removed by the chart's post-delete hook, and the hook's own
    // objects go once it succeeded: nothing of sluice's is left in its namespace.
    let left = rig.kubectl(&[
        "get",
        "secrets,leases,jobs,serviceaccounts,roles,rolebindings",
        "-n",
        SYSTEM,
        "-o",
        "name",
    ])?;
    let left: Vec<&str> = left.lines().filter(|o| *o != "serviceaccount/default").collect();
    ensure!(left.is_empty(), "left in {SYSTEM} after helm uninstall: {left:?}");
    println!("helm uninstall: nothing left in {SYSTEM}; the CRDs remain");
    Ok(())
}
