//! The node's configuration files and commands (pure text, no I/O).

use std::path::Path;
use std::process::{Command, Stdio};

use super::{
    BRIDGE, CGROUP, NODE_IP, NodeOptions, POD_LOGS_DIR, POD_SUBNET, RULE_COMMENT, RUN_DIR, SERVICE_IP,
    STATE_DIR,
};

pub(super) fn dnat_rule(port: u16) -> Vec<String> {
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

pub(super) fn containerd_config(pause_image: &str) -> String {
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

pub(super) fn cni_config() -> String {
    format!(
        r#"{{"cniVersion": "1.0.0", "name": "sluice-e2e",
 "plugins": [{{"type": "bridge", "bridge": "{BRIDGE}", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {{"type": "host-local", "dataDir": "{STATE_DIR}/cni/ipam",
     "ranges": [[{{"subnet": "{POD_SUBNET}", "gateway": "{NODE_IP}"}}]], "routes": [{{"dst": "0.0.0.0/0"}}]}}}}]}}
"#
    )
}

pub(super) fn kubelet_config(ca: &Path, port: u16, options: &NodeOptions) -> String {
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
containerLogMaxSize: {max_size}
containerLogMaxFiles: {max_files}
containerLogMonitorInterval: {interval}
"#,
        ca = ca.display(),
        max_size = options.container_log_max_size,
        max_files = options.container_log_max_files,
        interval = options.container_log_monitor_interval,
    )
}

/// `ctr` against the node's containerd, in the kubelet's namespace.
pub(super) fn ctr() -> Command {
    let mut cmd = Command::new("ctr");
    cmd.arg("--address")
        .arg(format!("{RUN_DIR}/containerd.sock"))
        .args(["--namespace", "k8s.io"])
        .stdin(Stdio::null());
    cmd
}
