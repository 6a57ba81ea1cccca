//! `kubectl sluice logs -f` under load (run by `bench/logs-follow.sh`; not part of CI): PODS pods
//! on one collector write RATE lines/s in all for PHASE_SECONDS seconds, three times: with no follower,
//! with a follower that prints as fast as it can, and with a slow one (a reader that takes
//! SLOW_MS per line). It prints the time from a line written to it printed by the plugin (p50,
//! p99, max), the collector's CPU per phase, and the collector's shipping rate to its drain.
//!
//! The whole path is real: the kube-apiserver harness with its aggregation layer, the operator's
//! logs API, the collector (the static release build of `SLUICE_BIN_DIR`) in cluster mode reading
//! json-file logs this program writes, an HTTP drain, and the plugin binary.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result};
use serde_json::json;
use sluice_api::crd::{LogBinding, LogDrain};
use sluice_tests::{
    collector::{ClusterArgs, Collector},
    fixture::{FakeContainer, file_rig},
    http::HttpReceiver,
    kube::{COLLECTOR_USER, KubeRig},
    logs_api::{LogsApi, QueryPki, host_address, query_address},
    support::{need, wait_until},
};
use tokio::time::Instant;

const TOKEN: &str = "logs-bench-token-0123456789abcdefghijklmnop";
const NS: &str = "bench";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// A follower: the plugin, and a thread reading what it prints.
struct Follower {
    child: Child,
    latencies: Arc<Mutex<Vec<Duration>>>,
    printed: Arc<AtomicU64>,
    following: Arc<AtomicBool>,
}

impl Follower {
    fn start(kubeconfig: &std::path::Path, slow: Option<Duration>) -> Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-sluice"))
            .args(["--kubeconfig", &kubeconfig.display().to_string()])
            .args(["logs", "-n", NS, "-f", "-o", "json"])
            .env_remove("KUBECONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting kubectl sluice logs -f")?;
        let (latencies, printed, following) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let stdout = child.stdout.take().context("the follower's stdout")?;
        let stderr = child.stderr.take().context("the follower's stderr")?;
        let flag = Arc::clone(&following);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("Following") {
                    flag.store(true, Ordering::SeqCst);
                } else {
                    eprintln!("follower: {line}");
                }
            }
        });
        let (l, p) = (Arc::clone(&latencies), Arc::clone(&printed));
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let at = now_nanos();
                if let Some(written) = written_at(&line) {
                    let nanos = u64::try_from(at.saturating_sub(written)).unwrap_or(u64::MAX);
                    if let Ok(mut l) = l.lock() {
                        l.push(Duration::from_nanos(nanos));
                    }
                }
                p.fetch_add(1, Ordering::Relaxed);
                if let Some(pause) = slow {
                    std::thread::sleep(pause);
                }
            }
        });
        Ok(Self {
            child,
            latencies,
            printed,
            following,
        })
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The write time a bench line carries (`bench <phase> <pod> <seq> <nanos>`), from its JSON.
fn written_at(json_line: &str) -> Option<u128> {
    let value: serde_json::Value = serde_json::from_str(json_line).ok()?;
    value["line"].as_str()?.split(' ').nth(4)?.parse().ok()
}

fn percentile(sorted: &[Duration], quantile: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((quantile / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Write `rate` lines/s over `files` for `seconds`, in 10 ms steps; returns the lines written.
fn write_phase(files: &mut [(String, std::fs::File)], phase: &str, rate: u64, seconds: u64) -> Result<u64> {
    let steps = seconds * 100;
    let per_step = rate as f64 / 100.0;
    let start = Instant::now();
    let (mut owed, mut written, mut next) = (0.0, 0u64, 0usize);
    for step in 0..steps {
        owed += per_step;
        while owed >= 1.0 {
            owed -= 1.0;
            let (pod, file) = &mut files[next % files.len()];
            next += 1;
            let time = jiff::Timestamp::now();
            let message = format!("bench {phase} {pod} {written} {}", now_nanos());
            let line = json!({"log": format!("{message}\n"), "stream": "stdout", "time": time.to_string()});
            writeln!(file, "{line}")?;
            written += 1;
        }
        let due = start + Duration::from_millis(10 * (step + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    Ok(written)
}

fn main() -> Result<()> {
    let (pods, rate, seconds) = (
        env_u64("PODS", 50),
        env_u64("RATE", 2000),
        env_u64("PHASE_SECONDS", 20),
    );
    let slow = Duration::from_millis(env_u64("SLOW_MS", 5));
    let bench = "logs_follow";
    let Some(host) = need(bench, host_address()) else {
        return Ok(());
    };
    let Some(rig) = file_rig(bench)? else {
        return Ok(());
    };
    let Some(mut kube) = KubeRig::start(bench)? else {
        return Ok(());
    };
    kube.create_namespace(NS)?;
    kube.start_operator_with(&[NS], |_| {})?;
    let dir = tempfile::tempdir()?;
    // Mutual TLS between the operator and the collector, as the chart runs them.
    let pki = QueryPki::create(dir.path())?;
    let _api = LogsApi::start(&kube, host, TOKEN, pki.query_client()?)?;
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN)?;
    let mut query_args = vec![
        "--query-listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--query-token-file".to_owned(),
        token_file.display().to_string(),
    ];
    query_args.extend(pki.collector_args());
    let collector = Collector::start_cluster_with(
        &rig.bins,
        ClusterArgs {
            node: "node-a".into(),
            namespace: kube.system.clone(),
            kubeconfig: kube.kubeconfig_for(COLLECTOR_USER)?,
            docker_root: rig.root.path().to_owned(),
        },
        &query_args,
    )?;
    let pid = collector.pid().context("the collector's pid")?;
    wait_until(
        "the collector's query address",
        Duration::from_secs(60),
        || query_address(&kube, "node-a"),
        || collector.log_tail(10),
    )?;
    let http = HttpReceiver::start()?;
    kube.apply_in::<LogDrain>(
        NS,
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain",
               "metadata": {"name": "sink"}, "spec": {"url": http.url()}}),
    )?;
    kube.apply_in::<LogBinding>(
        NS,
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": "all"},
               "spec": {"selector": {"matchLabels": {"logs-bench": "yes"}}, "drains": ["sink"]}}),
    )?;
    let mut files = Vec::new();
    for i in 0..pods {
        let name = format!("bench-{i:03}");
        let container = FakeContainer::create(rig.root.path(), &name, &Default::default())?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(container.log_path())?;
        kube.create_pod_in(
            NS,
            &name,
            "node-a",
            &[("logs-bench", "yes")],
            &[("main", &container.id)],
        )?;
        files.push((name, file));
    }
    // A first line per pod, so every container is being read before the phases start.
    let warm = write_phase(&mut files, "warm", pods * 10, 1)?;
    wait_until(
        "the warm-up lines at the drain",
        Duration::from_secs(120),
        || (http.messages().len() as u64 >= warm).then_some(()),
        || format!("{} of {warm}", http.messages().len()),
    )?;
    let admin = kube.harness.kubeconfig_path().to_owned();
    println!(
        "{pods} pods, {rate} lines/s in all, {seconds} s per phase; slow follower: {} ms per line",
        slow.as_millis()
    );
    println!("| follower | lines printed | p50 | p99 | max | collector CPU | shipped lines/s |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let mut shipped_before = http.messages().len() as u64;
    for (phase, follower) in [("none", None), ("fast", Some(None)), ("slow", Some(Some(slow)))] {
        let follower = match follower {
            Some(pause) => {
                let f = Follower::start(&admin, pause)?;
                wait_until(
                    "the follow to be in place",
                    Duration::from_secs(60),
                    || f.following.load(Ordering::SeqCst).then_some(()),
                    String::new,
                )?;
                Some(f)
            }
            None => None,
        };
        let cpu_start = sluice_bench::procstat::process_cpu_seconds(pid)?;
        let start = Instant::now();
        let written = write_phase(&mut files, phase, rate, seconds)?;
        let want = shipped_before + written;
        wait_until(
            &format!("phase {phase}'s lines at the drain"),
            Duration::from_secs(120),
            || (http.messages().len() as u64 >= want).then_some(()),
            || format!("{} of {want}", http.messages().len()),
        )?;
        let elapsed = start.elapsed().as_secs_f64();
        let cpu = (sluice_bench::procstat::process_cpu_seconds(pid)? - cpu_start) / elapsed;
        let shipped = (want - shipped_before) as f64 / elapsed;
        shipped_before = want;
        let (printed, mut latencies) = match &follower {
            Some(f) => {
                if phase == "fast" {
                    // Give the fast follower the time to print the last lines it was sent.
                    let _ = wait_until(
                        "the fast follower to print every line",
                        Duration::from_secs(30),
                        || (f.printed.load(Ordering::Relaxed) >= written).then_some(()),
                        String::new,
                    );
                }
                let l = f.latencies.lock().map(|l| l.clone()).unwrap_or_default();
                (f.printed.load(Ordering::Relaxed).to_string(), l)
            }
            None => ("-".to_owned(), Vec::new()),
        };
        latencies.sort();
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        let (p50, p99, max) = if latencies.is_empty() {
            ("-".into(), "-".into(), "-".into())
        } else {
            (
                ms(percentile(&latencies, 50.0)),
                ms(percentile(&latencies, 99.0)),
                ms(*latencies.last().unwrap_or(&Duration::ZERO)),
            )
        };
        println!(
            "| {phase} | {printed} of {written} | {p50} | {p99} | {max} | {:.1} % of a core | {shipped:.0} |",
            cpu * 100.0
        );
        drop(follower);
    }
    Ok(())
}
