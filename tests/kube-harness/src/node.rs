//! A real node beside the harness's control plane: containerd (Debian's,
//! with runc and the CNI bridge plugins) and the upstream kubelet from the
//! harness binary, plus kube-scheduler and kube-controller-manager (children
//! of `kube-harness up --node-ip`). Background:
//! `shared/research/real-node.md`.
//!
//! Invariants:
//! * One node per machine at a time: [`KubeNode::start`] holds an exclusive
//!   `flock` on [`LOCK_FILE`] for the node's whole life, because the bridge,
//!   the pod subnet and the `kubernetes` Service DNAT are machine-wide. A
//!   second test waits for the lock; the kubelet's ports are free ports, so
//!   nothing else on the machine is disturbed.
//! * Everything the node creates is findable from fixed names and removed by
//!   [`KubeNode`]'s teardown (also when a test fails) and, should a process
//!   have been killed before its teardown ran, by the next node's start:
//!   directories [`STATE_DIR`] and [`RUN_DIR`] (containerd root, state and
//!   socket, kubelet root, pod logs, CNI config and IPAM), the bridge
//!   [`BRIDGE`], the NAT rules commented [`RULE_COMMENT`], the cgroup subtree
//!   `/`[`CGROUP`] in every hierarchy (containerd, its shims, the kubelet and
//!   every container run inside it, so leftovers are ended by the pids listed
//!   there, never by name), the pod network namespaces containerd created,
//!   the `/var/log/containers` links into the pod log dir, and the kernel
//!   sysctls the kubelet changes (restored from the values saved at start).
//! * Pod logs go to [`POD_LOGS_DIR`] (the kubelet's `podLogsDir`), not the
//!   machine's `/var/log/pods`.

mod config;
mod host;

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::{Error, KubeHarness, StartOptions};
use config::{cni_config, containerd_config, ctr, dnat_rule, kubelet_config};
use host::{CGROUP_ROOT, free_port, run, spawn_in_cgroup, stop_child, tail, write};

/// Serializes nodes on this machine.
pub const LOCK_FILE: &str = "/run/sluice-e2e.lock";
/// Persistent node state: containerd root, kubelet root, pod logs, CNI.
pub const STATE_DIR: &str = "/var/lib/sluice-e2e";
/// Runtime state: containerd state and socket (short path: unix sockets).
pub const RUN_DIR: &str = "/run/sluice-e2e";
/// Where the kubelet puts pod logs (`<ns>_<pod>_<uid>/<container>/<n>.log`).
pub const POD_LOGS_DIR: &str = "/var/lib/sluice-e2e/pods";
/// The pod bridge; its address is the node IP and the apiserver's.
pub const BRIDGE: &str = "sluice-e2e0";
/// The node IP (on [`BRIDGE`]).
pub const NODE_IP: &str = "10.88.0.1";
const POD_SUBNET: &str = "10.88.0.0/16";
/// The `kubernetes` Service address (first of the harness's service range).
const SERVICE_IP: &str = "10.0.0.1";
/// Comment marking the node's iptables rules.
pub const RULE_COMMENT: &str = "sluice-e2e";
/// The cgroup subtree (under every hierarchy root) of the whole node.
pub const CGROUP: &str = "sluice-e2e";
/// The node's name.
pub const NODE_NAME: &str = "sluice-node";
/// Programs the node runs, with the Debian package providing each.
const PROGRAMS: &[(&str, &str)] = &[
    ("/usr/bin/containerd", "containerd"),
    ("/usr/bin/ctr", "containerd"),
    ("/usr/sbin/runc", "runc"),
    ("/usr/bin/containerd-shim-runc-v2", "containerd"),
    ("/usr/lib/cni/bridge", "containernetworking-plugins"),
    ("/usr/lib/cni/host-local", "containernetworking-plugins"),
    ("/usr/lib/cni/loopback", "containernetworking-plugins"),
    ("/usr/sbin/iptables", "iptables"),
    ("/usr/sbin/ip", "iproute2"),
];
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(300);

/// Errors of the node.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The machine lacks something the node needs (a skip unless required).
    #[error("a real node cannot run on this machine: {0}")]
    Unavailable(String),
    /// The control plane failed.
    #[error(transparent)]
    Harness(#[from] Error),
    /// A step of starting, using or stopping the node failed.
    #[error("{step}: {message}")]
    Step {
        /// What was being done.
        step: String,
        /// What went wrong (with log tails where useful).
        message: String,
    },
}

impl NodeError {
    fn step(step: impl Into<String>, message: impl ToString) -> Self {
        Self::Step {
            step: step.into(),
            message: message.to_string(),
        }
    }

    /// True when this machine cannot run a node at all (see [`crate::Error::is_unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        match self {
            NodeError::Unavailable(_) => true,
            NodeError::Harness(e) => e.is_unavailable(),
            NodeError::Step { .. } => false,
        }
    }
}

/// How the node's kubelet keeps container logs (its `containerLog*` settings).
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// `containerLogMaxSize`: the kubelet rotates a container's log once it is this large
    /// (a quantity such as `10Mi`).
    pub container_log_max_size: String,
    /// `containerLogMaxFiles` (at least 2): the current file plus rotated ones, the newest rotated
    /// one uncompressed, older ones gzipped; the oldest beyond this are deleted.
    pub container_log_max_files: u32,
    /// `containerLogMonitorInterval`: how often the kubelet checks the sizes (at least `3s`).
    pub container_log_monitor_interval: String,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self {
            container_log_max_size: "10Mi".into(),
            container_log_max_files: 5,
            container_log_monitor_interval: "10s".into(),
        }
    }
}

/// A control plane with one real, Ready node; torn down on drop.
#[derive(Debug)]
pub struct KubeNode {
    kubelet: Option<Child>,
    containerd: Option<Child>,
    harness: Option<KubeHarness>,
    lock: Option<File>,
    /// Binary for `kubectl` and the kubelet.
    bin: PathBuf,
    /// The kubelet's and containerd's logs (a temp dir; copied to
    /// `$SLUICE_TEST_LOGS`, when set, at teardown).
    logs: PathBuf,
    _logs_dir: tempfile::TempDir,
    ready_after: Duration,
    binary_after: Duration,
    /// containerd's sandbox image.
    pause_name: String,
}

impl KubeNode {
    /// Starts the control plane and a node, imports `pause_image` (a
    /// docker-archive tar of the image named `pause_name`, containerd's
    /// sandbox image) and waits until the node is Ready.
    pub async fn start(pause_image: &Path, pause_name: &str) -> Result<Self, NodeError> {
        Self::start_with(pause_image, pause_name, &NodeOptions::default()).await
    }

    /// [`KubeNode::start`] with the kubelet's log settings of `node_options`.
    pub async fn start_with(
        pause_image: &Path,
        pause_name: &str,
        node_options: &NodeOptions,
    ) -> Result<Self, NodeError> {
        check_machine()?;
        let building = Instant::now();
        let bin = crate::harness_binary().await.map_err(Error::from)?;
        let binary_after = building.elapsed();
        let started = Instant::now();
        // Waiting for another node to finish must not block the runtime.
        let lock = tokio::task::spawn_blocking(lock_machine)
            .await
            .map_err(|e| NodeError::step("waiting for the machine lock", e))??;
        let logs_dir = tempfile::Builder::new()
            .prefix("sluice-node-logs-")
            .tempdir()
            .map_err(|e| NodeError::step("creating a log directory", e))?;
        let mut node = Self {
            kubelet: None,
            containerd: None,
            harness: None,
            lock: Some(lock),
            bin,
            binary_after,
            logs: logs_dir.path().to_owned(),
            _logs_dir: logs_dir,
            ready_after: Duration::ZERO,
            pause_name: String::new(),
        };
        // A node killed before its teardown left this behind.
        host::clean();
        host::prepare()?;
        node.pause_name = pause_name.to_owned();
        let options = StartOptions {
            controllers: vec!["*".into()],
            node_ip: Some(NODE_IP.into()),
            ..StartOptions::default()
        };
        node.harness = Some(KubeHarness::start_with(&options).await?);
        node.add_service_dnat()?;
        node.start_containerd()?;
        node.import_image(pause_image, pause_name)?;
        node.start_kubelet(node_options)?;
        node.wait_ready().await?;
        node.ready_after = started.elapsed();
        Ok(node)
    }

    /// [`KubeNode::start`], or `None` after a loud skip message when the
    /// machine cannot run a node, unless `SLUICE_REQUIRE_ALL=1`.
    pub async fn start_or_skip(
        test: &str,
        pause_image: &Path,
        pause_name: &str,
    ) -> Result<Option<Self>, NodeError> {
        Self::start_or_skip_with(test, pause_image, pause_name, &NodeOptions::default()).await
    }

    /// [`KubeNode::start_or_skip`] with the kubelet's log settings of `node_options`.
    pub async fn start_or_skip_with(
        test: &str,
        pause_image: &Path,
        pause_name: &str,
        node_options: &NodeOptions,
    ) -> Result<Option<Self>, NodeError> {
        match Self::start_with(pause_image, pause_name, node_options).await {
            Err(e) if e.is_unavailable() && std::env::var(crate::REQUIRE_ALL_ENV).as_deref() != Ok("1") => {
                eprintln!(
                    "\n!!!!!!!! SKIPPED {test}: {e}\n!!!!!!!! (run scripts/setup.sh as root; {}=1 makes this a failure)\n",
                    crate::REQUIRE_ALL_ENV
                );
                Ok(None)
            }
            other => other.map(Some),
        }
    }

    /// The control plane.
    pub fn harness(&self) -> &KubeHarness {
        self.harness
            .as_ref()
            .expect("invariant: the harness is set from start until drop")
    }

    /// How long [`KubeNode::start`] took from having the binary until the
    /// node was Ready (a wait for the machine lock included).
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// How long obtaining the harness binary took (building it, unless
    /// build.sh found it cached).
    pub fn binary_after(&self) -> Duration {
        self.binary_after
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        NODE_NAME
    }

    /// The kubelet's pod log directory.
    pub fn pod_logs_dir(&self) -> &Path {
        Path::new(POD_LOGS_DIR)
    }

    /// A `kubectl` (built from the same Kubernetes module) talking to the
    /// control plane as the admin.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        // Its discovery cache lives (and goes) with the harness, not in ~/.kube.
        cmd.arg("kubectl")
            .arg(format!(
                "--cache-dir={}",
                self.harness().dir().join("kubectl-cache").display()
            ))
            .env("KUBECONFIG", self.harness().kubeconfig_path())
            .stdin(Stdio::null());
        cmd
    }

    /// Imports a docker-archive tar into containerd's `k8s.io` namespace
    /// (the one the kubelet uses) and checks that `name` is then listed.
    pub fn import_image(&self, archive: &Path, name: &str) -> Result<(), NodeError> {
        let step = format!("importing {} as {name}", archive.display());
        run(
            ctr()
                .args(["images", "import", "--snapshotter", "overlayfs"])
                .arg(archive),
            &step,
        )?;
        let listed = run(ctr().args(["images", "ls", "-q"]), &step)?;
        if !listed.lines().any(|l| l == name) {
            return Err(NodeError::step(
                step,
                format!("containerd lists no image {name} after the import; it has:\n{listed}"),
            ));
        }
        Ok(())
    }

    /// The end of the kubelet's log (for failure messages).
    pub fn kubelet_log_tail(&self) -> String {
        tail(&self.logs.join("kubelet.log"), 30)
    }

    fn add_service_dnat(&self) -> Result<(), NodeError> {
        let port = self
            .harness()
            .server_url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse::<u16>().ok())
            .ok_or_else(|| NodeError::step("reading the apiserver port", self.harness().server_url()))?;
        for chain in ["PREROUTING", "OUTPUT"] {
            run(
                Command::new("iptables")
                    .args(["-w", "-t", "nat", "-A", chain])
                    .args(dnat_rule(port)),
                "adding the kubernetes Service DNAT rule",
            )?;
        }
        Ok(())
    }

    fn start_containerd(&mut self) -> Result<(), NodeError> {
        let config = Path::new(STATE_DIR).join("containerd.toml");
        write(&config, &containerd_config(&self.pause_name))?;
        let cni_dir = Path::new(STATE_DIR).join("cni/net.d");
        fs::create_dir_all(&cni_dir).map_err(|e| NodeError::step("writing the CNI config", e))?;
        write(&cni_dir.join("10-sluice-e2e.conflist"), &cni_config())?;
        let mut cmd = Command::new("containerd");
        cmd.arg("--config").arg(&config);
        self.containerd = Some(spawn_in_cgroup(
            cmd,
            &self.logs.join("containerd.log"),
            "containerd",
        )?);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ctr().arg("version").output().is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if let Some(status) = self.containerd.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                return Err(NodeError::step(
                    "starting containerd",
                    format!(
                        "exited ({status}):\n{}",
                        tail(&self.logs.join("containerd.log"), 30)
                    ),
                ));
            }
            if Instant::now() > deadline {
                return Err(NodeError::step(
                    "starting containerd",
                    format!(
                        "no answer after 60 s:\n{}",
                        tail(&self.logs.join("containerd.log"), 30)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_kubelet(&mut self, options: &NodeOptions) -> Result<(), NodeError> {
        let harness = self.harness();
        let pki = harness.dir().join("pki");
        let kubelet_kubeconfig = harness.dir().join("kubelet.kubeconfig");
        let root = Path::new(STATE_DIR).join("kubelet");
        let config = Path::new(STATE_DIR).join("kubelet.yaml");
        write(
            &config,
            &kubelet_config(&pki.join("ca.crt"), free_port()?, options),
        )?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("kubelet")
            .arg(format!("--config={}", config.display()))
            .arg(format!("--kubeconfig={}", kubelet_kubeconfig.display()))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg(format!("--node-ip={NODE_IP}"))
            .arg(format!("--root-dir={}", root.display()))
            .arg(format!("--cert-dir={}", root.join("pki").display()))
            .arg("--v=2");
        self.kubelet = Some(spawn_in_cgroup(cmd, &self.logs.join("kubelet.log"), "kubelet")?);
        Ok(())
    }

    async fn wait_ready(&mut self) -> Result<(), NodeError> {
        let client = self.harness().client().await?;
        let nodes: Api<Node> = Api::all(client);
        let deadline = Instant::now() + NODE_READY_TIMEOUT;
        loop {
            if let Ok(Some(node)) = nodes.get_opt(NODE_NAME).await
                && node_ready(&node)
            {
                return Ok(());
            }
            for (name, child) in [
                ("kubelet", &mut self.kubelet),
                ("containerd", &mut self.containerd),
            ] {
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    return Err(NodeError::step(
                        "waiting for the node to be Ready",
                        format!(
                            "{name} exited ({status}):\n{}",
                            tail(&self.logs.join(format!("{name}.log")), 40)
                        ),
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(NodeError::step(
                    "waiting for the node to be Ready",
                    format!(
                        "not Ready after {NODE_READY_TIMEOUT:?}; kubelet log:\n{}",
                        self.kubelet_log_tail()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Deletes every pod and waits (up to a minute) until containerd runs
    /// no container any more, so their sandboxes and networks are released
    /// by the kubelet and containerd themselves. The workload controllers go
    /// first (their pods orphaned), or the controller-manager would start
    /// their pods again as fast as they are deleted.
    fn drain(&mut self) {
        if self.kubelet.is_none() || self.harness.is_none() {
            return;
        }
        let _ = self
            .kubectl()
            .args([
                "delete",
                "daemonsets,deployments,replicasets,statefulsets,jobs",
                "--all",
                "--all-namespaces",
                "--cascade=orphan",
                "--wait=false",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self
            .kubectl()
            .args([
                "delete",
                "pods",
                "--all",
                "--all-namespaces",
                "--grace-period=1",
                "--wait=false",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let tasks = ctr().args(["tasks", "ls", "-q"]).output();
            if tasks.is_ok_and(|o| o.status.success() && o.stdout.iter().all(u8::is_ascii_whitespace)) {
                // The kubelet stops sandboxes (and their networks) right after the tasks.
                std::thread::sleep(Duration::from_secs(2));
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("sluice-kube-harness: pods still running after 60 s; ending them by pid");
    }

    fn teardown(&mut self) {
        self.drain();
        stop_child(&mut self.kubelet, "kubelet");
        if let Some(harness) = self.harness.take()
            && let Err(e) = harness.stop()
        {
            eprintln!("sluice-kube-harness: stopping the control plane: {e}");
        }
        stop_child(&mut self.containerd, "containerd");
        host::clean();
        if let Some(keep) = std::env::var_os("SLUICE_TEST_LOGS") {
            let keep = PathBuf::from(keep).join(format!("node-{}", std::process::id()));
            let copied = fs::create_dir_all(&keep).and_then(|()| {
                for name in ["kubelet.log", "containerd.log"] {
                    fs::copy(self.logs.join(name), keep.join(name))?;
                }
                Ok(())
            });
            match copied {
                Ok(()) => eprintln!("sluice-kube-harness: node logs kept in {}", keep.display()),
                Err(e) => eprintln!(
                    "sluice-kube-harness: keeping the node logs in {}: {e}",
                    keep.display()
                ),
            }
        }
        self.lock = None;
    }
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The checks that make a missing piece a skip rather than a failure.
fn check_machine() -> Result<(), NodeError> {
    if !rustix::process::geteuid().is_root() {
        return Err(NodeError::Unavailable("a node needs root".into()));
    }
    let missing: BTreeSet<&str> = PROGRAMS
        .iter()
        .filter(|(path, _)| !Path::new(path).exists())
        .map(|(_, package)| *package)
        .collect();
    if !missing.is_empty() {
        return Err(NodeError::Unavailable(format!(
            "missing Debian packages: {} (scripts/setup.sh installs them)",
            missing.into_iter().collect::<Vec<_>>().join(" ")
        )));
    }
    if !Path::new(CGROUP_ROOT)
        .join("memory/memory.limit_in_bytes")
        .exists()
    {
        return Err(NodeError::Unavailable(
            "the node is set up for cgroup v1 hierarchies under /sys/fs/cgroup (memory.limit_in_bytes not found)".into(),
        ));
    }
    Ok(())
}

fn lock_machine() -> Result<File, NodeError> {
    let file = File::create(LOCK_FILE).map_err(|e| NodeError::step(format!("creating {LOCK_FILE}"), e))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| NodeError::step(format!("locking {LOCK_FILE} (one node per machine)"), e))?;
    Ok(file)
}
