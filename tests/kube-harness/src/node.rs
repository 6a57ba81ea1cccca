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

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::core::v1::Node;
use kube::Api;
use rustix::process::{Pid, Signal, kill_process};

use crate::{Error, KubeHarness, StartOptions};

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
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Sysctls the kubelet sets (`setupKernelTunables`), restored at teardown.
const SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];
/// Machine-wide directories containerd, the kubelet and the
/// controller-manager create whatever their configuration says (CNI result
/// cache, network namespaces, container log links, containerd 1.6's shim
/// sockets, the kubelet's device-plugin socket, the flex-volume plugin dir),
/// children before parents. At teardown, each one the node created is
/// removed once empty; the files in [`SHARED_FILES`] are removed first.
const SHARED_DIRS: &[&str] = &[
    "/var/lib/cni/results",
    "/var/lib/cni",
    "/run/netns",
    "/var/log/containers",
    "/run/containerd/s",
    "/run/containerd/runc/k8s.io",
    "/run/containerd/runc",
    "/run/containerd",
    "/var/lib/kubelet/device-plugins",
    "/var/lib/kubelet",
    "/usr/libexec/kubernetes/kubelet-plugins/volume/exec",
    "/usr/libexec/kubernetes/kubelet-plugins/volume",
    "/usr/libexec/kubernetes/kubelet-plugins",
    "/usr/libexec/kubernetes",
];
/// Sockets left in [`SHARED_DIRS`] (removed only with a directory the node created).
const SHARED_FILES: &[&str] = &["/var/lib/kubelet/device-plugins/kubelet.sock"];
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
const STOP_GRACE: Duration = Duration::from_secs(10);

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
        check_machine()?;
        let building = Instant::now();
        let bin = crate::harness_binary().await.map_err(Error::from)?;
        let binary_after = building.elapsed();
        let started = Instant::now();
        let lock = lock_machine()?;
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
        clean_machine();
        node.setup_host()?;
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
        node.start_kubelet()?;
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
        match Self::start(pause_image, pause_name).await {
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
        cmd.arg("kubectl")
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

    fn setup_host(&mut self) -> Result<(), NodeError> {
        let step = "preparing the host for the node";
        for dir in [STATE_DIR, RUN_DIR, POD_LOGS_DIR] {
            fs::create_dir_all(dir).map_err(|e| NodeError::step(step, format!("{dir}: {e}")))?;
        }
        // Saved before the kubelet changes them; teardown restores them.
        let mut saved = String::new();
        for name in SYSCTLS {
            if let Ok(v) = fs::read_to_string(Path::new("/proc/sys").join(name)) {
                saved.push_str(&format!("{name}={}\n", v.trim()));
            }
        }
        write(&Path::new(STATE_DIR).join("sysctl.saved"), &saved)?;
        // Network namespaces present before the node: never ours to delete.
        let before: Vec<String> = netns_names().into_iter().collect();
        write(&Path::new(STATE_DIR).join("netns.before"), &before.join("\n"))?;
        let absent: Vec<&str> = SHARED_DIRS
            .iter()
            .copied()
            .filter(|d| !Path::new(d).exists())
            .collect();
        write(&Path::new(STATE_DIR).join("dirs.absent"), &absent.join("\n"))?;
        run(
            Command::new("ip").args(["link", "add", BRIDGE, "type", "bridge"]),
            step,
        )?;
        run(
            Command::new("ip").args(["addr", "add", &format!("{NODE_IP}/16"), "dev", BRIDGE]),
            step,
        )?;
        run(Command::new("ip").args(["link", "set", BRIDGE, "up"]), step)?;
        for hierarchy in cgroup_hierarchies() {
            let root = hierarchy.join(CGROUP);
            fs::create_dir_all(root.join("runtime"))
                .map_err(|e| NodeError::step(step, format!("{}: {e}", root.display())))?;
            if hierarchy.ends_with("cpuset") {
                // A new cpuset cgroup starts empty: copy the parent's sets.
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let v = fs::read_to_string(hierarchy.join(file)).map_err(|e| NodeError::step(step, e))?;
                    for dir in [root.clone(), root.join("runtime")] {
                        fs::write(dir.join(file), v.trim()).map_err(|e| NodeError::step(step, e))?;
                    }
                }
            }
        }
        Ok(())
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

    fn start_kubelet(&mut self) -> Result<(), NodeError> {
        let harness = self.harness();
        let pki = harness.dir().join("pki");
        let kubelet_kubeconfig = harness.dir().join("kubelet.kubeconfig");
        let root = Path::new(STATE_DIR).join("kubelet");
        let config = Path::new(STATE_DIR).join("kubelet.yaml");
        write(&config, &kubelet_config(&pki.join("ca.crt"), free_port()?))?;
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
    /// by the kubelet and containerd themselves.
    fn drain(&mut self) {
        if self.kubelet.is_none() || self.harness.is_none() {
            return;
        }
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
        clean_machine();
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

/// Removes everything a node may have left (idempotent; never fails, says
/// what it could not undo). Only called while holding the machine lock.
fn clean_machine() {
    // 1. Every process in the node's cgroups (leftover shims and containers).
    for _ in 0..50 {
        let pids = cgroup_pids();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            if let Some(p) = Pid::from_raw(pid) {
                let _ = kill_process(p, Signal::KILL);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // 2. Mounts below the node's directories (rshared kubelet root, pod
    //    volumes, container rootfs, sandbox shm), deepest first.
    for dir in [STATE_DIR, RUN_DIR] {
        unmount_under(Path::new(dir));
    }
    // 3. Pod network namespaces created since the node started.
    let before: BTreeSet<String> = fs::read_to_string(Path::new(STATE_DIR).join("netns.before"))
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default();
    if Path::new(STATE_DIR).join("netns.before").exists() {
        for name in netns_names().difference(&before) {
            if name.starts_with("cni-") {
                let path = Path::new("/run/netns").join(name);
                let _ = Command::new("umount").arg("-l").arg(&path).status();
                let _ = fs::remove_file(&path);
            }
        }
    }
    // 4. The DNAT rules and the bridge.
    if let Ok(out) = Command::new("iptables").args(["-w", "-t", "nat", "-S"]).output() {
        for rule in String::from_utf8_lossy(&out.stdout).lines() {
            if rule.starts_with("-A ") && rule.contains(&format!("--comment {RULE_COMMENT}")) {
                let args: Vec<&str> = rule.split_whitespace().collect();
                let mut cmd = Command::new("iptables");
                cmd.args(["-w", "-t", "nat", "-D"]).args(&args[1..]);
                quiet_status(cmd, "deleting a leftover DNAT rule");
            }
        }
    }
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        let mut cmd = Command::new("ip");
        cmd.args(["link", "del", BRIDGE]);
        quiet_status(cmd, "deleting the bridge");
    }
    // 5. The cgroups, leaves first.
    for hierarchy in cgroup_hierarchies() {
        let root = hierarchy.join(CGROUP);
        let mut dirs = Vec::new();
        collect_dirs(&root, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            if let Err(e) = fs::remove_dir(&dir) {
                eprintln!("sluice-kube-harness: cannot remove cgroup {}: {e}", dir.display());
            }
        }
    }
    // 6. The kubelet's links to pod logs, the sysctls, the directories.
    if let Ok(entries) = fs::read_dir("/var/log/containers") {
        for entry in entries.flatten() {
            if fs::read_link(entry.path()).is_ok_and(|t| t.starts_with(POD_LOGS_DIR)) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    if let Ok(saved) = fs::read_to_string(Path::new(STATE_DIR).join("sysctl.saved")) {
        for line in saved.lines() {
            if let Some((name, value)) = line.split_once('=')
                && SYSCTLS.contains(&name)
                && let Err(e) = fs::write(Path::new("/proc/sys").join(name), value)
            {
                eprintln!("sluice-kube-harness: cannot restore sysctl {name}={value}: {e}");
            }
        }
    }
    if let Ok(absent) = fs::read_to_string(Path::new(STATE_DIR).join("dirs.absent")) {
        let ours = |d: &str| absent.lines().any(|l| l == d);
        for file in SHARED_FILES {
            if Path::new(file)
                .parent()
                .is_some_and(|d| ours(&d.to_string_lossy()))
            {
                let _ = fs::remove_file(file);
            }
        }
        for dir in SHARED_DIRS.iter().filter(|d| ours(d)) {
            let _ = fs::remove_dir(dir); // only if empty: anything else is not ours
        }
    }
    for dir in [STATE_DIR, RUN_DIR] {
        if let Err(e) = fs::remove_dir_all(dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("sluice-kube-harness: cannot remove {dir}: {e}");
        }
    }
}

fn dnat_rule(port: u16) -> Vec<String> {
    [
        "-d",
        &format!("{SERVICE_IP}/32"),
        "-p",
        "tcp",
        "--dport",
        "443",
        "-m",
        "comment",
        "--comment",
        RULE_COMMENT,
        "-j",
        "DNAT",
        "--to-destination",
        &format!("{NODE_IP}:{port}"),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn containerd_config(pause_image: &str) -> String {
    format!(
        r#"version = 2
root = "{STATE_DIR}/containerd"
state = "{RUN_DIR}/containerd"
[grpc]
  address = "{RUN_DIR}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # Machines of this kind withhold CAP_SYS_RESOURCE even from root, so no
  # process may lower its oom_score_adj (the sandbox asks for -998): cap
  # the requested values at containerd's own instead of failing every pod.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{RUN_DIR}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{STATE_DIR}/cni/net.d"
"#
    )
}

fn cni_config() -> String {
    format!(
        r#"{{"cniVersion": "1.0.0", "name": "sluice-e2e",
 "plugins": [{{"type": "bridge", "bridge": "{BRIDGE}", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {{"type": "host-local", "dataDir": "{STATE_DIR}/cni/ipam",
     "ranges": [[{{"subnet": "{POD_SUBNET}", "gateway": "{NODE_IP}"}}]], "routes": [{{"dst": "0.0.0.0/0"}}]}}}}]}}
"#
    )
}

fn kubelet_config(ca: &Path, port: u16) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://{RUN_DIR}/containerd.sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupRoot: /{CGROUP}
cgroupsPerQOS: true
address: {NODE_IP}
port: {port}
readOnlyPort: 0
healthzPort: 0
podLogsDir: {POD_LOGS_DIR}
volumePluginDir: {STATE_DIR}/volume-plugins
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{nodefs.available: "0%", nodefs.inodesFree: "0%", imagefs.available: "0%"}}
serializeImagePulls: false
containerLogMaxSize: 10Mi
containerLogMaxFiles: 5
"#,
        ca = ca.display()
    )
}

/// `ctr` against the node's containerd, in the kubelet's namespace.
fn ctr() -> Command {
    let mut cmd = Command::new("ctr");
    cmd.arg("--address")
        .arg(format!("{RUN_DIR}/containerd.sock"))
        .args(["--namespace", "k8s.io"])
        .stdin(Stdio::null());
    cmd
}

/// Spawns `cmd` inside the node's `runtime` cgroup (so it and everything it
/// starts are found by pid at cleanup), logging to `log`.
fn spawn_in_cgroup(mut cmd: Command, log: &Path, name: &str) -> Result<Child, NodeError> {
    let step = format!("starting {name}");
    let out = File::create(log).map_err(|e| NodeError::step(&step, e))?;
    let err = out.try_clone().map_err(|e| NodeError::step(&step, e))?;
    let procs: Vec<PathBuf> = cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(CGROUP).join("runtime/cgroup.procs"))
        .collect();
    // SAFETY: the closure only opens, writes and closes files; the paths
    // were built before fork and are short enough for std's on-stack C
    // string conversion, so nothing allocates between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for p in &procs {
                fs::write(p, b"0")?;
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| NodeError::step(step, e))
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`]; the child is ours and unreaped.
fn stop_child(child: &mut Option<Child>, name: &str) {
    let Some(mut c) = child.take() else { return };
    if c.try_wait().ok().flatten().is_some() {
        return;
    }
    if let Some(p) = Pid::from_raw(i32::try_from(c.id()).unwrap_or(i32::MAX)) {
        let _ = kill_process(p, Signal::TERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if c.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("sluice-kube-harness: {name} did not stop in {STOP_GRACE:?}; killing it");
    let _ = c.kill();
    let _ = c.wait();
}

fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

fn cgroup_pids() -> BTreeSet<i32> {
    let mut pids = BTreeSet::new();
    for hierarchy in cgroup_hierarchies() {
        let mut dirs = Vec::new();
        collect_dirs(&hierarchy.join(CGROUP), &mut dirs);
        for dir in dirs {
            if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
    }
    pids
}

/// `dir` and every directory below it.
fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_owned());
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}

fn netns_names() -> BTreeSet<String> {
    fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Lazily unmounts every mount point at or below `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(p).status();
    }
}

fn free_port() -> Result<u16, NodeError> {
    std::net::TcpListener::bind((NODE_IP, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| NodeError::step("finding a free port for the kubelet", e))
}

fn write(path: &Path, text: &str) -> Result<(), NodeError> {
    let mut f = File::create(path).map_err(|e| NodeError::step(format!("writing {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| NodeError::step(format!("writing {}", path.display()), e))
}

/// Runs `cmd`, returning its stdout, or its stderr as the error.
fn run(cmd: &mut Command, step: &str) -> Result<String, NodeError> {
    let out = cmd
        .output()
        .map_err(|e| NodeError::step(step, format!("{cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(NodeError::step(
            step,
            format!(
                "{cmd:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn quiet_status(mut cmd: Command, what: &str) {
    match cmd.output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "sluice-kube-harness: {what}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("sluice-kube-harness: {what}: {e}"),
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
