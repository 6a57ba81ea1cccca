//! The health phase: one simulated collector per node renews its node Lease every 10 s
//! (staggered over the interval), each renewal carrying a health report that names every tenant
//! drain with figures that changed since the last one, as `sluice-collector` does, while pods
//! churn at `--health-churn-rate`. Measured: the operator's status writes against the renewals
//! (the write load the health path adds), status writes per drain per minute, API requests by verb
//! and resource, the operator's CPU and peak RSS, and the time from a figure change to the
//! LogDrain status that shows it, over every (renewal, drain) pair.
//!
//! How a change is matched to the status that shows it: each renewal's figures carry a last error
//! whose `time` is a sequence number that grows with each renewal sent (the operator shows the
//! error of the greatest `time`, so the status names exactly the latest renewal it had summed)
//! and whose message is the renewal's send time in milliseconds. A watch of the LogDrains records
//! when each status arrives and which send time it shows; a change sent at `t` is shown by the
//! first status that shows a send time `>= t`. Changes sent in the last [`SETTLE`] of the phase
//! are not sampled (their status may come after it ends). (The simulated errors make the
//! statuses' `lastErrorTime` read 1970 plus the sequence number; nothing else depends on it.)

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::watcher,
};
use sluice_api::{
    crd::LogDrain,
    health::{
        ANNOTATION, DrainHealth, HealthReport, LEASE_LABEL, LEASE_LABEL_VALUE, LastError, REPORT_VERSION,
        lease_name,
    },
    node_config::DrainOwner,
};
use tokio::time::Instant;

use crate::{
    Args, SYSTEM,
    churn::{self, lock},
    probe,
};

/// Changes sent this close to the end of the phase are not sampled.
const SETTLE: Duration = Duration::from_secs(45);
/// The kind of the simulated errors that carry the send times.
const PROBE_KIND: &str = "bench-probe";

/// What the LogDrain watch saw: per drain namespace, (arrival ms, send ms shown) in arrival order.
type Shown = Arc<Mutex<HashMap<String, Vec<(u64, u64)>>>>;

/// Run the health phase for `--health-seconds` against the operator serving metrics on `port`;
/// `churned` pods were replaced before (the churn goes on from there).
pub async fn health(
    client: &Client,
    args: &Args,
    operator_pid: u32,
    port: u16,
    churned: usize,
) -> Result<()> {
    let owners: Vec<DrainOwner> = (0..args.namespaces)
        .map(|i| DrainOwner {
            namespace: format!("team-{i}"),
            name: "logs".into(),
        })
        .collect();
    let status_writes = |text: &str| {
        probe::metric(
            text,
            "sluice_operator_api_writes_total{resource=\"logdrain\",verb=\"status\"}",
        )
    };
    let shown: Shown = Arc::default();
    let watch = tokio::spawn(watch_drains(client.clone(), Arc::clone(&shown)));
    let writes_before = status_writes(&probe::operator_metrics(port).await?);
    let requests_before = probe::apiserver_requests_by(client).await?;
    let cpu_before = probe::cpu_seconds(operator_pid)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.health_seconds);
    let renewals = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(Mutex::new(Vec::new()));
    let simulated = tokio::spawn(simulate(
        client.clone(),
        owners.clone(),
        args.nodes,
        deadline,
        Arc::clone(&renewals),
        Arc::clone(&sent),
    ));
    let replacements = (args.health_churn_rate as u64 * args.health_seconds) as usize;
    let churn = (replacements > 0).then(|| {
        let (client, args) = (client.clone(), args.clone());
        tokio::spawn(async move {
            let pending = churn::Pending::default();
            churn::replace_pods(
                &client,
                &args,
                churned..churned + replacements,
                args.health_churn_rate,
                &pending,
            )
            .await
        })
    });
    simulated.await??;
    if let Some(churn) = churn {
        churn.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    watch.abort();
    let writes = status_writes(&probe::operator_metrics(port).await?) - writes_before;
    let cpu = (probe::cpu_seconds(operator_pid)? - cpu_before) / elapsed;
    let renewals = renewals.load(Ordering::Relaxed) as f64;
    println!("health_seconds {elapsed:.0}");
    println!(
        "health_pod_replacements {replacements} ({}/s)",
        args.health_churn_rate
    );
    println!(
        "health_lease_renewals {renewals:.0} ({:.1}/s)",
        renewals / elapsed
    );
    println!(
        "health_status_writes {writes:.0} ({:.2}% of the renewals)",
        100.0 * writes / renewals.max(1.0)
    );
    println!(
        "health_status_writes_per_drain_per_minute {:.2}",
        writes / owners.len() as f64 / (elapsed / 60.0)
    );
    println!("health_operator_cpu_cores {cpu:.3}");
    println!(
        "health_operator_peak_rss_mib {:.1}",
        probe::peak_rss_kib(operator_pid)? as f64 / 1024.0
    );
    let requests = probe::apiserver_requests_by(client).await?;
    for ((verb, resource), n) in &requests {
        let n = n - requests_before
            .get(&(verb.clone(), resource.clone()))
            .unwrap_or(&0.0);
        if n / elapsed >= 0.05 {
            println!(
                "health_api_requests_per_second{{verb=\"{verb}\",resource=\"{resource}\"}} {:.2}",
                n / elapsed
            );
        }
    }
    let cutoff = Timestamp::now().as_millisecond().unsigned_abs() - SETTLE.as_millis() as u64;
    let sent: Vec<u64> = lock(&sent)?.iter().copied().filter(|t| *t <= cutoff).collect();
    let shown = lock(&shown)?.clone();
    let (mut samples, mut unseen) = (Vec::new(), 0);
    for owner in &owners {
        let seen = shown.get(&owner.namespace).map(Vec::as_slice).unwrap_or_default();
        let (l, u) = latencies(&sent, seen);
        samples.extend(l);
        unseen += u;
    }
    samples.sort_unstable();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    if samples.is_empty() {
        println!("health_figure_to_status_seconds no samples ({unseen} changes never shown)");
    } else {
        println!(
            "health_figure_to_status_seconds samples {} p50 {:.2} p99 {:.2} max {:.2} never_shown {unseen}",
            samples.len(),
            pick(0.5),
            pick(0.99),
            pick(1.0)
        );
    }
    Ok(())
}

/// For each change sent at `sent[i]` (ms), the ms until the first status in `shown` (arrival ms,
/// send ms shown; in arrival order) that shows it or a later one; and how many none showed.
fn latencies(sent: &[u64], shown: &[(u64, u64)]) -> (Vec<u64>, usize) {
    // The latest send time shown so far, at each arrival: non-decreasing, so searchable.
    let mut latest = Vec::with_capacity(shown.len());
    let mut max = 0;
    for (arrived, t) in shown {
        max = max.max(*t);
        latest.push((*arrived, max));
    }
    let (mut out, mut unseen) = (Vec::new(), 0);
    for t in sent {
        let i = latest.partition_point(|(_, m)| m < t);
        match latest.get(i) {
            Some((arrived, _)) => out.push(arrived.saturating_sub(*t)),
            None => unseen += 1,
        }
    }
    (out, unseen)
}

/// Record, for each LogDrain status that arrives, the send time its latest error shows.
async fn watch_drains(client: Client, shown: Shown) -> Result<()> {
    let api: Api<LogDrain> = Api::all(client);
    let mut events = watcher(api, watcher::Config::default()).boxed();
    while let Some(event) = events.try_next().await? {
        let (watcher::Event::Apply(drain) | watcher::Event::InitApply(drain)) = event else {
            continue;
        };
        let arrived = Timestamp::now().as_millisecond().unsigned_abs();
        let Some(text) = drain.status.and_then(|s| s.delivery).and_then(|d| d.last_error) else {
            continue;
        };
        // `<kind>: <message> (node <node>)`
        let Some(ms) = text
            .strip_prefix(&format!("{PROBE_KIND}: "))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|ms| ms.parse::<u64>().ok())
        else {
            continue;
        };
        let ns = drain.metadata.namespace.unwrap_or_default();
        lock(&shown)?.entry(ns).or_default().push((arrived, ms));
    }
    Ok(())
}

/// Renew every node's Lease every 10 s until `deadline`, each with new figures; the send time of
/// each renewal that succeeded goes to `sent` (ms).
async fn simulate(
    client: Client,
    owners: Vec<DrainOwner>,
    nodes: usize,
    deadline: Instant,
    renewals: Arc<AtomicU64>,
    sent: Arc<Mutex<Vec<u64>>>,
) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client, SYSTEM);
    let interval = Duration::from_secs(10);
    let mut round: u64 = 0;
    let mut sequence: u64 = 0;
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < deadline {
        let start = Instant::now();
        round += 1;
        for node in 0..nodes {
            tokio::time::sleep_until(start + interval * node as u32 / nodes as u32).await;
            sequence += 1;
            let (api, owners, renewals, sent) = (
                api.clone(),
                owners.clone(),
                Arc::clone(&renewals),
                Arc::clone(&sent),
            );
            let probe = Probe {
                sequence,
                sent_ms: Timestamp::now().as_millisecond().unsigned_abs(),
            };
            tasks.spawn(async move {
                let lease = lease(&format!("node-{node}"), &owners, round, probe);
                if renew(&api, &lease).await.is_ok() {
                    renewals.fetch_add(1, Ordering::Relaxed);
                    lock(&sent)?.push(probe.sent_ms);
                }
                anyhow::Ok(())
            });
        }
        tokio::time::sleep_until(start + interval).await;
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

/// What one renewal carries to be matched to the status: see the module doc.
#[derive(Clone, Copy)]
struct Probe {
    sequence: u64,
    sent_ms: u64,
}

/// A collector Lease for `node` reporting `owners` with `round` lines delivered each, and `probe`
/// as their last error.
fn lease(node: &str, owners: &[DrainOwner], round: u64, probe: Probe) -> Lease {
    let drains: BTreeMap<String, DrainHealth> = owners
        .iter()
        .map(|o| {
            let health = DrainHealth {
                owner: Some(o.clone()),
                active: true,
                lines_delivered: round * 100,
                lag_bytes: 1024,
                last_error: Some(LastError {
                    kind: PROBE_KIND.into(),
                    message: probe.sent_ms.to_string(),
                    time: probe.sequence,
                }),
                last_success: Some(Timestamp::now().as_second().unsigned_abs()),
                ..DrainHealth::default()
            };
            (format!("{}-{}", o.namespace, o.name), health)
        })
        .collect();
    let report = HealthReport {
        version: REPORT_VERSION,
        node: node.to_owned(),
        reported_at: Timestamp::now().as_second().unsigned_abs(),
        drains,
    };
    Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(node)),
            labels: Some(BTreeMap::from([(LEASE_LABEL.into(), LEASE_LABEL_VALUE.into())])),
            annotations: Some(BTreeMap::from([(
                ANNOTATION.into(),
                serde_json::to_string(&report).unwrap_or_default(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(format!("sim-{node}")),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime(Timestamp::now())),
            ..LeaseSpec::default()
        }),
    }
}

async fn renew(api: &Api<Lease>, lease: &Lease) -> Result<()> {
    let name = lease.metadata.name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply("sluice-collector").force(),
        &Patch::Apply(lease),
    )
    .await?;
    Ok(())
}
