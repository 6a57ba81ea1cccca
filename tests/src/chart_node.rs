//! The chart `charts/sluice` on the harness's real node: the images of `scripts/images.sh`
//! imported (never pulled), `helm install` with the values that fit the node, tenants (a
//! namespace each, with its own LogDrain and LogBinding and an rsyslog receiver on the host,
//! reachable from pods at the node IP), and loggen pods. Used by `tests/tests/node_chart.rs` and
//! the node benchmark (`bench/node.sh`).

use std::{net::IpAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sluice_kube_harness::{KubeNode, NODE_IP, NodeOptions, POD_LOGS_DIR, STATE_DIR};
use tokio::time::Instant;

use crate::{
    LineSpec,
    fixture::{expect_exact, loggen_args},
    helm::{Helm, chart_dir},
    multiset::Multiset,
    support::{Missing, need, run, temp_dir},
    syslog::Rsyslog,
};

const IMAGE_DIR_ENV: &str = "SLUICE_IMAGE_DIR";
/// The archives scripts/images.sh writes and the image each holds.
pub const IMAGES: [(&str, &str); 4] = [
    ("pause", "sluice.local/pause:dev"),
    ("loggen", "sluice.local/loggen:dev"),
    ("collector", "sluice.local/collector:dev"),
    ("operator", "sluice.local/operator:dev"),
];
/// The release's name.
pub const RELEASE: &str = "sluice";
/// The release's namespace.
pub const SYSTEM: &str = "sluice-system";
/// The tenants' namespaces.
pub const TENANTS: [&str; 2] = ["tenant-a", "tenant-b"];
/// How long lines may take to arrive.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long kubectl waits for a pod or rollout.
pub const POD_TIMEOUT: &str = "--timeout=180s";

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

/// The node, helm, and one receiver per tenant.
pub struct ChartNode {
    /// The node (with its control plane).
    pub node: KubeNode,
    /// The pinned helm.
    pub helm: Helm,
    /// One receiver per tenant of [`TENANTS`], listening on the node IP (the pods' gateway).
    pub receivers: Vec<Rsyslog>,
    files: tempfile::TempDir,
}

impl ChartNode {
    /// Starts the node with `node_options`, imports the images and starts a receiver per
    /// tenant; `None` after a loud skip when a part is missing (a failure under
    /// `SLUICE_REQUIRE_ALL=1`).
    pub async fn start(test: &str, node_options: &NodeOptions) -> Result<Option<Self>> {
        let Some(images) = need(test, image_dir()) else {
            return Ok(None);
        };
        let Some(rsyslog_bin) = need(test, Rsyslog::available()) else {
            return Ok(None);
        };
        let Some(helm) = Helm::new(test) else {
            return Ok(None);
        };
        let pause = images.join("pause.tar");
        let Some(node) = KubeNode::start_or_skip_with(test, &pause, IMAGES[0].1, node_options).await? else {
            return Ok(None);
        };
        for (name, image) in &IMAGES[1..] {
            node.import_image(&images.join(format!("{name}.tar")), image)?;
        }
        let address: IpAddr = NODE_IP.parse()?;
        let receivers = TENANTS
            .iter()
            .map(|_| Rsyslog::start_on(&rsyslog_bin, address))
            .collect::<Result<_>>()?;
        Ok(Some(Self {
            node,
            helm,
            receivers,
            files: temp_dir("sluice-node-chart-")?,
        }))
    }

    /// `helm install --wait` of the chart with [`install_values`] and `extra` arguments: returns
    /// once the operator and collector pods are Ready.
    pub fn install(&self, extra: &[&str]) -> Result<()> {
        let chart = chart_dir().display().to_string();
        let values = install_values();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        let install = [
            "install",
            RELEASE,
            &chart,
            "--create-namespace",
            "--wait",
            "--timeout=5m",
        ];
        self.helm(&[&install[..], &values[..], extra].concat())
            .with_context(|| self.context())
            .map(drop)
    }

    /// What the chart renders with the values of [`ChartNode::install`].
    pub fn template(&self) -> Result<Vec<Value>> {
        let values = install_values();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        self.helm.template_in(RELEASE, SYSTEM, &values)
    }

    /// Creates tenant `index`'s namespace ([`TENANTS`]), a LogDrain to its receiver and a LogBinding
    /// of its pods labelled `app: loggen` to that drain.
    pub fn add_tenant(&self, index: usize) -> Result<()> {
        let ns = TENANTS[index];
        self.kubectl(&["create", "namespace", ns])?;
        let url = format!("syslog://{NODE_IP}:{}", self.receivers[index].ports.tcp);
        self.apply(&drain(ns, &url))?;
        self.apply(&binding(ns))?;
        Ok(())
    }

    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        run(self.node.kubectl().args(args))
    }

    /// A field of the (one) collector pod, by its JSONPath below the pod (`metadata.uid`,
    /// `status.podIP`, …); empty while there is no collector pod.
    pub fn collector_field(&self, path: &str) -> Result<String> {
        self.kubectl(&[
            "get",
            "pods",
            "-n",
            SYSTEM,
            "-l",
            "app.kubernetes.io/component=collector",
            "-o",
            &format!("jsonpath={{.items[0].{path}}}"),
        ])
    }

    /// `kubectl apply` of one object.
    pub fn apply(&self, object: &Value) -> Result<String> {
        let name = object["metadata"]["name"].as_str().unwrap_or("object");
        let path = self.files.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(object)?)?;
        self.kubectl(&["apply", "-f", &path.display().to_string()])
    }

    /// helm against the node's control plane, in the release's namespace.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        let kubeconfig = self.node.harness().kubeconfig_path().display().to_string();
        let on_cluster = ["--namespace", SYSTEM, "--kubeconfig", &kubeconfig];
        self.helm.ok(&[args, &on_cluster[..]].concat())
    }

    pub fn received(&self, tenant: usize) -> Multiset {
        self.receivers[tenant]
            .received()
            .iter()
            .map(|m| m.msg.clone())
            .collect()
    }

    /// The collector pod's log and its pods' states, for failure messages.
    pub fn context(&self) -> String {
        let logs = self
            .kubectl(&["logs", "-n", SYSTEM, "daemonset/sluice-collector", "--tail=20"])
            .unwrap_or_else(|e| e.to_string());
        let pods = self
            .kubectl(&["get", "pods", "-A", "-o", "wide"])
            .unwrap_or_else(|e| e.to_string());
        format!(
            "pods:\n{pods}\ncollector log:\n{logs}\ncollector counters (non-zero):\n{}",
            self.collector_counters()
        )
    }

    /// The collector's loss, drop, bad-input and lag figures that are not zero, from its
    /// `/metrics` through the API server's pod proxy: what a failed exact comparison needs to
    /// tell a line counted lost from one still on its way.
    fn collector_counters(&self) -> String {
        let pod = match self.collector_field("metadata.name") {
            Ok(pod) if !pod.trim().is_empty() => pod.trim().to_owned(),
            Ok(_) => return "no collector pod".to_owned(),
            Err(e) => return e.to_string(),
        };
        let path = format!("/api/v1/namespaces/{SYSTEM}/pods/{pod}:9880/proxy/metrics");
        match self.kubectl(&["get", "--raw", &path]) {
            Ok(text) => crate::collector::parse_metrics(&text)
                .into_iter()
                .filter(|(series, value)| {
                    *value != 0.0
                        && [
                            "lost",
                            "dropped",
                            "bad",
                            "unterminated",
                            "lag",
                            "skipped",
                            "errors",
                            "open_files",
                        ]
                        .iter()
                        .any(|word| series.contains(word))
                })
                .map(|(series, value)| format!("{series} {value}\n"))
                .collect(),
            Err(e) => e.to_string(),
        }
    }

    /// A loggen pod in `namespace` writing `count` lines of `spec` at `rate`/s, labelled as the
    /// tenant's binding selects.
    pub fn start_loggen(&self, namespace: &str, spec: &LineSpec, count: u64, rate: u64) -> Result<()> {
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
    pub fn wait_succeeded(&self, namespace: &str, name: &str) -> Result<()> {
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
    pub fn expect_exact(&self, label: &str, tenant: usize, want: &Multiset) -> Result<()> {
        expect_exact(
            label,
            want,
            DELIVERY_TIMEOUT,
            || self.received(tenant),
            || self.context(),
        )
    }
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
