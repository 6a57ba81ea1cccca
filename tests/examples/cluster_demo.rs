//! The cluster demo (run by `scripts/demo.sh`): the test harness's control plane and real node,
//! `helm install` of the chart, two namespaces (tenant-a, tenant-b) each with a LogDrain to its
//! own rsyslog receiver on the host, a LogBinding and two demo loggen pods, and the files of
//! `examples/cluster/` applied. It prints the lines as they arrive at each receiver, `kubectl get
//! logdrains,logbindings -A` now and then, and how to use kubectl against the cluster; Ctrl-C
//! (or SIGTERM) removes everything.

use std::time::Duration;

use anyhow::{Result, bail};
use sluice_kube_harness::NodeOptions;
use sluice_tests::{
    LineSpec,
    chart_node::{ChartNode, RELEASE, TENANTS},
    helm::repo_root,
};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::Instant,
};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    // Before anything starts: a Ctrl-C during the setup then waits for it and tears down.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let started = Instant::now();
    let Some(rig) = ChartNode::start("cluster demo", &NodeOptions::default()).await? else {
        bail!("the node cannot run here (see above)");
    };
    println!("==> node Ready after {:.1?}; helm install …", started.elapsed());
    rig.install(&["--set", "operator.replicas=1"])?;
    println!(
        "==> operator and collector pods Ready after {:.1?}",
        started.elapsed()
    );
    for (i, ns) in TENANTS.iter().enumerate() {
        println!("==> namespace {ns}: a LogDrain, a LogBinding and two demo pods");
        rig.add_tenant(i)?;
        for app in ["web", "worker"] {
            let spec = LineSpec::new(format!("{ns}-{app}"), 40, 80);
            // --count 0: until the pod is deleted.
            rig.start_loggen(ns, &spec, 0, 2)?;
        }
    }
    let examples = repo_root().join("examples/cluster");
    println!("==> kubectl apply -f {}", examples.display());
    for file in ["logdrains.yaml", "logbinding.yaml"] {
        rig.kubectl(&["apply", "-f", &examples.join(file).display().to_string()])?;
    }

    let kubectl = rig.node.kubectl();
    let program = kubectl.get_program().to_string_lossy().into_owned();
    let args: Vec<String> = kubectl
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let kubeconfig = rig.node.harness().kubeconfig_path().display().to_string();
    println!(
        "\n==> kubectl against this cluster, from another shell:\n    export KUBECONFIG={kubeconfig}\n    alias kubectl='{program} {}'\n    kubectl get pods -A; kubectl get logdrains,logbindings -A; kubectl explain logdrain.spec\n",
        args.join(" ")
    );
    for (i, ns) in TENANTS.iter().enumerate() {
        println!(
            "==> {ns}'s drain: rsyslog on {}:{} (its pods' lines only)",
            rig.receivers[i].address, rig.receivers[i].ports.tcp
        );
    }
    println!("==> lines arriving (tenant, APP-NAME, MSG); Ctrl-C stops and removes everything\n");

    let mut shown = vec![0usize; TENANTS.len()];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = tick.tick() => {}
        }
        for (i, ns) in TENANTS.iter().enumerate() {
            let received = rig.receivers[i].received();
            for m in received.iter().skip(shown[i]) {
                println!("{ns}  {}  {}", m.app, m.msg);
            }
            shown[i] = received.len();
        }
        ticks += 1;
        if ticks % 15 == 1 {
            match rig.kubectl(&["get", "logdrains,logbindings", "-A"]) {
                Ok(table) => println!("\n{table}"),
                Err(e) => println!("kubectl get logdrains,logbindings -A: {e}"),
            }
        }
    }
    println!("\n==> stopping: helm uninstall, then the pods, the node and the control plane");
    // Without the release, no controller re-creates the pods the node's teardown deletes.
    if let Err(e) = rig.helm(&["uninstall", RELEASE, "--wait", "--timeout=60s"]) {
        println!("helm uninstall: {e}");
    }
    drop(rig);
    println!("==> done");
    Ok(())
}
