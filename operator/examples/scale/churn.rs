//! The churn phase: replace pods at a fixed rate and measure, per replacement, the time from its
//! status patch to a node config (seen through a watch of the config Secrets) carrying the new
//! container id. Alongside, it reads where the time went: the operator's own lag histogram (first
//! change → config written) and the CPU each process used.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{Api, Client, api::DeleteParams, runtime::watcher};
use sluice_api::NodeConfig;
use tokio::time::Instant;

use crate::{Args, SYSTEM, create_pod, probe, tenant};

/// The processes whose CPU time the churn phase reports.
pub struct Pids {
    /// The operator.
    pub operator: u32,
    /// The kube-apiserver harness (apiserver and etcd in one process).
    pub apiserver: u32,
    /// The operator's metrics port.
    pub operator_port: u16,
}

/// The container ids in flight and the latencies measured so far.
#[derive(Default)]
pub struct Probes {
    /// id → when its status patch returned (`None`: the patch is still in flight).
    waiting: HashMap<String, Option<Instant>>,
    /// Ids a config carried before their status patch returned (latency 0 from that point).
    seen_early: HashSet<String>,
    latencies: Vec<Duration>,
    early: usize,
}

impl Probes {
    /// The status patch carrying `id` returned now.
    fn patched(&mut self, id: String) {
        if self.seen_early.remove(&id) {
            self.early += 1;
            self.latencies.push(Duration::ZERO);
        } else {
            self.waiting.insert(id, Some(Instant::now()));
        }
    }

    /// A node config carrying `id` was seen at `now`.
    fn seen(&mut self, id: &str, now: Instant) {
        match self.waiting.remove(id) {
            Some(Some(at)) => self.latencies.push(now - at),
            Some(None) => {
                self.seen_early.insert(id.to_owned());
            }
            None => {}
        }
    }
}

/// The probes shared by the pod replacements and the config watch.
pub type Pending = Arc<Mutex<Probes>>;

/// The value behind `mutex` (an error if a holder panicked).
pub fn lock<T>(mutex: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    mutex.lock().map_err(|_| anyhow::anyhow!("poisoned"))
}

/// Replace pods at the churn rate; print the latency percentiles and where the time went.
pub async fn churn(client: &Client, args: &Args, pids: &Pids) -> Result<()> {
    let pending: Pending = Arc::default();
    let watch = tokio::spawn(watch_configs(client.clone(), pending.clone()));
    let lag = "sluice_operator_node_config_lag_seconds";
    let lag_before = probe::buckets(&probe::operator_metrics(pids.operator_port).await?, lag);
    let cpu_before = cpu(pids)?;
    let started = Instant::now();
    let profile = args
        .apiserver_profile
        .clone()
        .map(|path| tokio::spawn(apiserver_profile(client.clone(), path)));
    let total = args.churn_rate as usize * args.churn_seconds as usize;
    replace_pods(client, args, 0..total, args.churn_rate, &pending).await?;
    if let Some(profile) = profile {
        profile.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lock(&pending)?.waiting.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu_after = cpu(pids)?;
    let lag_after = probe::buckets(&probe::operator_metrics(pids.operator_port).await?, lag);
    watch.abort();
    let (missing, early, mut l) = {
        let probes = lock(&pending)?;
        (probes.waiting.len(), probes.early, probes.latencies.clone())
    };
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "churn_replacements {}",
        args.churn_rate as u64 * args.churn_seconds
    );
    println!("churn_latency_p50_ms {:.0}", ms(pct(0.50)));
    println!("churn_latency_p90_ms {:.0}", ms(pct(0.90)));
    println!("churn_latency_p99_ms {:.0}", ms(pct(0.99)));
    println!(
        "churn_latency_max_ms {:.0}",
        ms(l.last().copied().unwrap_or_default())
    );
    println!(
        "churn_over_1s {}",
        l.iter().filter(|d| **d > Duration::from_secs(1)).count()
    );
    println!("churn_never_rendered {missing}");
    println!("churn_rendered_before_the_status_patch_returned {early} (counted as 0 ms)");
    for q in [0.5, 0.99] {
        println!(
            "operator_node_lag_p{:.0}_le_ms {:.0} (operator's own histogram: first change seen → config written)",
            q * 100.0,
            probe::quantile_bound(&lag_before, &lag_after, q) * 1000.0
        );
    }
    let names = ["apiserver+etcd", "operator", "bench", "machine (of 2 cores)"];
    for (i, name) in names.iter().enumerate() {
        let used = cpu_after[i] - cpu_before[i];
        println!("churn_cpu_cores {name} {:.2}", used / wall);
    }
    Ok(())
}

/// From 20 s into the churn, a 20 s CPU profile of the apiserver (its `/debug/pprof`), saved.
async fn apiserver_profile(client: Client, path: std::path::PathBuf) -> Result<()> {
    use futures::AsyncReadExt;
    tokio::time::sleep(Duration::from_secs(20)).await;
    let request = http::Request::get("/debug/pprof/profile?seconds=20").body(Vec::new())?;
    let mut body = Box::pin(client.request_stream(request).await?);
    let mut bytes = Vec::new();
    body.read_to_end(&mut bytes).await?;
    std::fs::write(&path, bytes)?;
    eprintln!("apiserver CPU profile: {}", path.display());
    Ok(())
}

/// CPU seconds so far: apiserver, operator, this bench, the whole machine.
fn cpu(pids: &Pids) -> Result<[f64; 4]> {
    Ok([
        probe::cpu_seconds(pids.apiserver)?,
        probe::cpu_seconds(pids.operator)?,
        probe::cpu_seconds(std::process::id())?,
        probe::machine_busy_seconds()?,
    ])
}

/// Delete, re-create (new node, new container id) and status-patch pods at `rate` per second,
/// replacements `range` (replacement k takes pod k mod `--pods`, generation 1 + k div `--pods`, so
/// ranges that follow each other never repeat an id); each new id goes into `pending` with the time
/// its status patch returned.
pub async fn replace_pods(
    client: &Client,
    args: &Args,
    range: std::ops::Range<usize>,
    rate: u32,
    pending: &Pending,
) -> Result<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for k in range {
        tick.tick().await;
        let (client, pending) = (client.clone(), pending.clone());
        let j = k % args.pods;
        let generation = 1 + k / args.pods;
        let ns = tenant(j % args.bindings, args);
        let args = args.clone();
        tasks.spawn(async move {
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            api.delete(&format!("p-{j}"), &DeleteParams::default().grace_period(0))
                .await?;
            // The id is registered before the status patch goes out, so a config that carries it
            // before the patch call returns is not missed (that would wait for the node's next
            // change and report seconds).
            let register = |id: &str| {
                lock(&pending)?.waiting.insert(id.to_owned(), None);
                Ok(())
            };
            let id = create_pod(client, &args, j, generation, register).await?;
            lock(&pending)?.patched(id);
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

/// Watch the node config Secrets; for each container id that is pending, record its latency.
async fn watch_configs(client: Client, pending: Pending) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client, SYSTEM);
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.try_next().await? {
        let (watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) = event else {
            continue;
        };
        let Some(yaml) = secret.data.as_ref().and_then(|d| d.get("config.yaml")) else {
            continue;
        };
        let Ok(config) = NodeConfig::from_yaml(&String::from_utf8_lossy(&yaml.0)) else {
            continue;
        };
        let now = Instant::now();
        let mut probes = lock(&pending)?;
        for c in config.containers {
            probes.seen(&c.id, now);
        }
    }
    Ok(())
}
