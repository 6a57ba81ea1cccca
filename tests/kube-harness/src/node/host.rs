//! The node's footprint on the host: what it creates outside its own
//! processes (directories, bridge, NAT rules, cgroups, network namespaces,
//! sysctls), how its processes are started inside its cgroup, and how all
//! of it is removed again. See the invariants of [`super`].

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process};
use tokio::time::Instant;

use super::{BRIDGE, CGROUP, NODE_IP, NodeError, POD_LOGS_DIR, RULE_COMMENT, RUN_DIR, STATE_DIR};

pub(super) const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Sysctls the kubelet sets (`setupKernelTunables`), restored at teardown.
pub(super) const SYSCTLS: &[&str] = &[
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
pub(super) const SHARED_DIRS: &[&str] = &[
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
pub(super) const SHARED_FILES: &[&str] = &["/var/lib/kubelet/device-plugins/kubelet.sock"];
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Creates the node's directories, bridge and cgroups, after saving what
/// teardown must restore (sysctls) or must not touch (network namespaces
/// and machine-wide directories that already exist).
pub(super) fn prepare() -> Result<(), NodeError> {
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

/// Removes everything a node may have left (idempotent; never fails, says
/// what it could not undo). Only called while holding the machine lock.
pub(super) fn clean() {
    end_leftover_processes();
    unmount_node_dirs();
    delete_pod_netns();
    delete_network();
    remove_cgroups();
    restore_host();
}

/// Kills every process left in the node's cgroups (shims, containers, a
/// containerd or kubelet whose test process was killed), by pid.
fn end_leftover_processes() {
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
}

/// Unmounts everything below the node's directories (rshared kubelet root, pod
/// volumes, container rootfs, sandbox shm), deepest first.
fn unmount_node_dirs() {
    for dir in [STATE_DIR, RUN_DIR] {
        unmount_under(Path::new(dir));
    }
}

/// Deletes the pod network namespaces created since the node started.
fn delete_pod_netns() {
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
}

/// Deletes the DNAT rules and the bridge.
fn delete_network() {
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
}

/// Removes the node's cgroups, leaves first.
fn remove_cgroups() {
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
}

/// Removes the kubelet's links to pod logs, restores the sysctls, removes
/// the directories.
fn restore_host() {
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

/// Spawns `cmd` inside the node's `runtime` cgroup (so it and everything it
/// starts are found by pid at cleanup), logging to `log`.
pub(super) fn spawn_in_cgroup(mut cmd: Command, log: &Path, name: &str) -> Result<Child, NodeError> {
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
pub(super) fn stop_child(child: &mut Option<Child>, name: &str) {
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

pub(super) fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("cgroup.procs").exists())
        .collect()
}

pub(super) fn cgroup_pids() -> BTreeSet<i32> {
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
pub(super) fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
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

pub(super) fn netns_names() -> BTreeSet<String> {
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
pub(super) fn unmount_under(dir: &Path) {
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

pub(super) fn free_port() -> Result<u16, NodeError> {
    std::net::TcpListener::bind((NODE_IP, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| NodeError::step("finding a free port for the kubelet", e))
}

pub(super) fn write(path: &Path, text: &str) -> Result<(), NodeError> {
    let mut f = File::create(path).map_err(|e| NodeError::step(format!("writing {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| NodeError::step(format!("writing {}", path.display()), e))
}

/// Runs `cmd`, returning its stdout, or its stderr as the error.
pub(super) fn run(cmd: &mut Command, step: &str) -> Result<String, NodeError> {
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

pub(super) fn quiet_status(mut cmd: Command, what: &str) {
    match cmd.output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => eprintln!(
            "sluice-kube-harness: {what}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("sluice-kube-harness: {what}: {e}"),
    }
}

pub(super) fn tail(path: &Path, count: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}
