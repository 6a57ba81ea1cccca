//! The collector pod's cost on the real node (run by `bench/node.sh`; figures, not a test):
//! `helm install` of the chart on the harness's node, one tenant with a syslog drain to rsyslog
//! on the host, then for each rate a loggen pod writing `rate × seconds` lines at that rate. For
//! each rate it prints the collector container's CPU (from its cgroup's `cpuacct.usage`, over the
//! time from the pod's start until the drain has every line) and its peak memory
//! (`memory.max_usage_in_bytes`, reset before each rate), and checks that the drain received
//! every line. The first row (rate 0) is the collector idle for SECONDS.
//!
//!   node_bench [SECONDS] [RATE...]     defaults: 30 s, rates 1000 10000

use std::{fs, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use sluice_kube_harness::{CGROUP, NodeOptions};
use sluice_tests::{
    LineSpec,
    chart_node::{ChartNode, TENANTS},
    support::wait_until,
};
use tokio::time::Instant;

/// The collector container's cgroup directories: (cpuacct, memory).
fn collector_cgroups(rig: &ChartNode) -> Result<(PathBuf, PathBuf)> {
    let field = |path: &str| rig.collector_field(path);
    let uid = field("metadata.uid")?;
    let qos = field("status.qosClass")?.to_lowercase();
    let id = field("status.containerStatuses[0].containerID")?;
    let id = id
        .strip_prefix("containerd://")
        .with_context(|| format!("unexpected container id {id:?}"))?;
    let pod = match qos.as_str() {
        "guaranteed" => format!("kubepods/pod{uid}"),
        other => format!("kubepods/{other}/pod{uid}"),
    };
    let dir = |hierarchy: &str| {
        let d = PathBuf::from(format!("/sys/fs/cgroup/{hierarchy}/{CGROUP}/{pod}/{id}"));
        if d.is_dir() {
            Ok(d)
        } else {
            bail!("the collector's cgroup {} does not exist", d.display())
        }
    };
    Ok((dir("cpuacct")?, dir("memory")?))
}

fn read_u64(path: PathBuf) -> Result<u64> {
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: not a number: {text:?}", path.display()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(Ok(30), |s| s.parse()).context("SECONDS")?;
    let mut rates: Vec<u64> = args
        .map(|r| r.parse())
        .collect::<Result<_, _>>()
        .context("RATE")?;
    if rates.is_empty() {
        rates = vec![1000, 10_000];
    }
    let Some(rig) = ChartNode::start("node_bench", &NodeOptions::default()).await? else {
        bail!("the node cannot run here (see above)");
    };
    let installing = Instant::now();
    rig.install(&["--set", "operator.replicas=1"])?;
    println!("helm install → pods Ready: {:.1?}", installing.elapsed());
    rig.add_tenant(0)?;
    let (cpuacct, memory) = collector_cgroups(&rig)?;
    println!("collector cgroups: {} {}", cpuacct.display(), memory.display());
    println!(
        "rate_lines_per_s\tlines\tseconds\tcollector_cpu_millicores\tcpu_us_per_line\tpeak_memory_mib\trss_mib_after"
    );
    // The baseline: the collector with its config in force and no line to ship.
    let cpu_before = read_u64(cpuacct.join("cpuacct.usage"))?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let idle_ns = read_u64(cpuacct.join("cpuacct.usage"))? - cpu_before;
    println!(
        "0\t0\t{seconds}\t{:.1}\t-\t-\t-",
        idle_ns as f64 / 1e6 / seconds as f64
    );
    let mut delivered = 0;
    for rate in rates {
        let count = rate * seconds;
        // Reset the peak so each rate reports its own.
        fs::write(memory.join("memory.max_usage_in_bytes"), "0")
            .context("resetting memory.max_usage_in_bytes")?;
        let cpu_before = read_u64(cpuacct.join("cpuacct.usage"))?;
        let started = Instant::now();
        let spec = LineSpec::new(format!("bench-{rate}"), 100, 200);
        rig.start_loggen(TENANTS[0], &spec, count, rate)?;
        delivered += count;
        wait_until(
            &format!("{delivered} lines at the drain"),
            Duration::from_secs(seconds * 4 + 120),
            || (rig.receivers[0].received_count() >= delivered).then_some(()),
            || format!("{} arrived; {}", rig.receivers[0].received_count(), rig.context()),
        )?;
        let wall = started.elapsed().as_secs_f64();
        let cpu_ns = read_u64(cpuacct.join("cpuacct.usage"))? - cpu_before;
        let peak = read_u64(memory.join("memory.max_usage_in_bytes"))?;
        let stat = fs::read_to_string(memory.join("memory.stat"))?;
        let rss: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("total_rss "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        rig.wait_succeeded(TENANTS[0], &spec.tag)?;
        ensure!(
            rig.receivers[0].received_count() == delivered,
            "the drain received {} lines, {delivered} were written",
            rig.receivers[0].received_count()
        );
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!(
            "{rate}\t{count}\t{wall:.1}\t{:.1}\t{:.2}\t{:.1}\t{:.1}",
            cpu_ns as f64 / 1e6 / wall,
            cpu_ns as f64 / 1e3 / count as f64,
            mib(peak),
            mib(rss)
        );
    }
    Ok(())
}
