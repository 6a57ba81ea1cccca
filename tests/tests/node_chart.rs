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

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use sluice_kube_harness::{KubeNode, NODE_IP, NodeOptions, POD_LOGS_DIR, STATE_DIR};
use sluice_tests::{
    LineSpec,
    fixture::{expect_exact, lines, loggen_args, wait_for_lines},
    helm::{Helm, chart_dir},
    multiset::Multiset,
    support::{Missing, need, temp_dir, wait_until},
    syslog::Rsyslog,
};

const IMAGE_DIR_ENV: &str = "SLUICE_IMAGE_DIR";
/// The archives scripts/images.sh writes and the image each holds.
const IMAGES: [(&str, &str); 4] = [
    ("pause", "sluice.local/pause:dev"),
    ("loggen", "sluice.local/loggen:dev"),
    ("collector", "sluice.local/collector:dev"),
    ("operator", "sluice.local/operator:dev"),
];
const RELEASE: &str = "sluice";
const SYSTEM: &str = "sluice-system";
const TENANTS: [&str; 2] = ["tenant-a", "tenant-b"];
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(180);
const POD_TIMEOUT: &str = "--timeout=180s";

/// The image archives, all present.
fn image_dir() -> Result<PathBuf, Missing> {
    let dir = std::env::var_os(IMAGE_DIR_ENV).map(PathBuf::from);
    match dir {
        Some(d) if IMAGES.iter().all(|(n, _)| d.join(format!("{n}.tar")).is_file()) => Ok(d),
        other => Err(Missing::new(
            "image archives",
            format!(
                "{IMAGE_DIR_ENV} ({other:?}) lacks one of pause, loggen, collector, operator .tar: run `eval \"$(scripts/images.sh | tail -n1)\"; export {IMAGE_DIR_ENV}`"
            ),
        )),
    }
}

/// The node, the receivers and helm of the test.
struct Rig {
    node: KubeNode,
    helm: Helm,
    /// One receiver per tenant, listening on the node IP (the pods' gateway).
    receivers: Vec<Rsyslog>,
    files: tempfile::TempDir,
}

impl Rig {
    fn kubectl(&self, args: &[&str]) -> Result<String> {
        output(self.node.kubectl().args(args))
    }

    /// `kubectl apply` of one object.
    fn apply(&self, object: &Value) -> Result<String> {
        let name = object["metadata"]["name"].as_str().unwrap_or("object");
        let path = self.files.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(object)?)?;
        self.kubectl(&["apply", "-f", &path.display().to_string()])
    }

    /// helm against the node's control plane, in the release's namespace.
    fn helm(&self, args: &[&str]) -> Result<String> {
        let kubeconfig = self.node.harness().kubeconfig_path().display().to_string();
        let on_cluster = ["--namespace", SYSTEM, "--kubeconfig", &kubeconfig];
        self.helm.ok(&[args, &on_cluster[..]].concat())
    }

    fn received(&self, tenant: usize) -> Multiset {
        self.receivers[tenant]
            .received()
            .iter()
            .map(|m| m.msg.clone())
            .collect()
    }

    /// The collector pod's log and its pods' states, for failure messages.
    fn context(&self) -> String {
        let logs = self
            .kubectl(&["logs", "-n", SYSTEM, "daemonset/sluice-collector", "--tail=20"])
            .unwrap_or_else(|e| e.to_string());
        let pods = self
            .kubectl(&["get", "pods", "-A", "-o", "wide"])
            .unwrap_or_else(|e| e.to_string());
        format!("pods:\n{pods}\ncollector log:\n{logs}")
    }

    /// A loggen pod in `namespace` writing `count` lines of `spec` at `rate`/s, labelled as the
    /// tenant's binding selects.
    fn start_loggen(&self, namespace: &str, spec: &LineSpec, count: u64, rate: u64) -> Result<()> {
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": spec.tag, "namespace": namespace, "labels": {"app": "loggen"}},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "loggen", "image": IMAGES[1].1, "imagePullPolicy": "Never",
                    "args": loggen_args(spec, count, rate),
                }],
            },
        });
        // The ServiceAccount admission plugin needs the namespace's `default` account, which
        // the controller-manager creates shortly after the namespace.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.apply(&pod) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() < deadline && e.to_string().contains("serviceaccount") => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e).with_context(|| format!("creating the pod {}", spec.tag)),
            }
        }
    }

    /// Waits until the loggen pod has written everything and exited 0.
    fn wait_succeeded(&self, namespace: &str, name: &str) -> Result<()> {
        self.kubectl(&[
            "wait",
            "-n",
            namespace,
            "--for=jsonpath={.status.phase}=Succeeded",
            POD_TIMEOUT,
            &format!("pod/{name}"),
        ])
        .with_context(|| self.context())
        .map(drop)
    }

    /// Waits until `tenant`'s drain has received exactly `want`; also checks that the other
    /// tenant's drain received none of these lines.
    fn expect_exact(&self, label: &str, tenant: usize, want: &Multiset) -> Result<()> {
        expect_exact(
            label,
            want,
            DELIVERY_TIMEOUT,
            || self.received(tenant),
            || self.context(),
        )
    }
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn drain(namespace: &str, url: &str) -> Value {
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain",
           "metadata": {"name": format!("{namespace}-syslog"), "namespace": namespace},
           "spec": {"url": url}})
}

fn binding(namespace: &str) -> Value {
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding",
           "metadata": {"name": "loggen", "namespace": namespace},
           "spec": {"selector": {"matchLabels": {"app": "loggen"}},
                    "drains": [format!("{namespace}-syslog")]}})
}

/// The values that fit the harness's node: its pod log directory, state under its state
/// directory (removed with the node), the images just imported, the receivers' address allowed.
fn install_values() -> Vec<String> {
    [
        format!("collector.podsRoot={POD_LOGS_DIR}"),
        format!("collector.stateDir={STATE_DIR}/sluice"),
        format!("collector.dockerRoot={STATE_DIR}/docker"),
        "collector.image.tag=dev".into(),
        "operator.image.tag=dev".into(),
        format!("collector.destinations.allow={{{NODE_IP}/32}}"),
    ]
    .into_iter()
    .flat_map(|v| ["--set".to_owned(), v])
    .collect()
}

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
    let Some(images) = need(test, image_dir()) else {
        return Ok(());
    };
    let Some(rsyslog_bin) = need(test, Rsyslog::available()) else {
        return Ok(());
    };
    let Some(helm) = Helm::new(test) else {
        return Ok(());
    };
    // Small files and a frequent check, so the kubelet rotates while loggen writes.
    let node_options = NodeOptions {
        container_log_max_size: "1Mi".into(),
        container_log_max_files: 3,
        container_log_monitor_interval: "3s".into(),
    };
    let pause = images.join("pause.tar");
    let Some(node) = KubeNode::start_or_skip_with(test, &pause, IMAGES[0].1, &node_options).await? else {
        return Ok(());
    };
    println!("node Ready {:.1?} after the start", node.ready_after());
    for (name, image) in &IMAGES[1..] {
        node.import_image(&images.join(format!("{name}.tar")), image)?;
    }
    let address: IpAddr = NODE_IP.parse()?;
    let receivers = vec![
        Rsyslog::start_on(&rsyslog_bin, address)?,
        Rsyslog::start_on(&rsyslog_bin, address)?,
    ];
    let rig = Rig {
        node,
        helm,
        receivers,
        files: temp_dir("sluice-node-chart-")?,
    };

    // 1. helm install: the operator and collector pods become Ready.
    let chart = chart_dir().display().to_string();
    let values = install_values();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let installing = Instant::now();
    rig.helm(
        &[
            &[
                "install",
                RELEASE,
                &chart,
                "--create-namespace",
                "--wait",
                "--timeout=5m",
            ],
            &values[..],
        ]
        .concat(),
    )
    .with_context(|| rig.context())?;
    println!(
        "helm install: operator and collector pods Ready {:.1?} after the install began",
        installing.elapsed()
    );

    // 2. Two tenants, each its own drain and binding: each receives exactly its own lines.
    let mut want = [Multiset::new(), Multiset::new()];
    let mut first = Vec::new();
    for (i, ns) in TENANTS.iter().enumerate() {
        rig.kubectl(&["create", "namespace", ns])?;
        let url = format!("syslog://{NODE_IP}:{}", rig.receivers[i].ports.tcp);
        rig.apply(&drain(ns, &url))?;
        rig.apply(&binding(ns))?;
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
    rig.start_loggen(TENANTS[1], &flowing, 20_000, 1000)?;
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
    want[1].merge(&lines(&flowing, 0, 20_000));
    rig.expect_exact("tenant-b across a rollout restart", 1, &want[1])?;

    // 5. helm upgrade with changed values: still exact.
    rig.helm(
        &[
            &[
                "upgrade",
                RELEASE,
                &chart,
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

    // 7. helm uninstall: every object the chart rendered is gone, the CRDs stay.
    let rendered = rig.helm.template_in(RELEASE, SYSTEM, &values)?;
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
    // What the components wrote at run time is not the chart's, so helm leaves it: the node's
    // config Secret (the operator's), the operator's leader Lease, and the collector's Lease
    // when the collector could not delete it on its way out (helm deletes its RBAC at the same
    // time). Nothing else may remain.
    let runtime = [
        format!("secret/sluice-node-{}", rig.node.name()),
        format!("lease.coordination.k8s.io/sluice-collector-{}", rig.node.name()),
        "lease.coordination.k8s.io/sluice-operator".to_owned(),
    ];
    let others = rig.kubectl(&["get", "secrets,leases", "-n", SYSTEM, "-o", "name"])?;
    let unexpected: Vec<&str> = others
        .lines()
        .filter(|o| !runtime.iter().any(|r| r == o))
        .collect();
    ensure!(
        unexpected.is_empty(),
        "left in {SYSTEM} after helm uninstall: {unexpected:?}"
    );
    println!(
        "helm uninstall: only the CRDs and run-time objects remain: {:?}",
        others.lines().collect::<Vec<_>>()
    );
    Ok(())
}
