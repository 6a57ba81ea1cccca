//! The health phase: one simulated collector per node renews its node Lease every 10 s
//! (staggered over the interval), each renewal carrying a health report that names every tenant
//! drain with figures that changed since the last one, as `sluice-collector` does. Measured: the
//! operator's status writes against the renewals (the write load the health path adds), status
//! writes per drain per minute, API requests by verb and resource, the operator's CPU, and the
//! time from a figure change to the LogDrain status (a probe Lease raises `team-0/logs`' count
//! every few seconds; the time until a GET of the drain shows it).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Result;
use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use sluice_api::{
    crd::LogDrain,
    health::{
        ANNOTATION, DrainHealth, HealthReport, LEASE_LABEL, LEASE_LABEL_VALUE, REPORT_VERSION, lease_name,
    },
    node_config::DrainOwner,
};
use tokio::time::Instant;

use crate::{Args, SYSTEM, probe};

/// How long the probe waits for one figure to show.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Run the health phase for `--health-seconds` against the operator serving metrics on `port`.
pub async fn health(client: &Client, args: &Args, operator_pid: u32, port: u16) -> Result<()> {
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
    let writes_before = status_writes(&probe::operator_metrics(port).await?);
    let requests_before = probe::apiserver_requests_by(client).await?;
    let cpu_before = probe::cpu_seconds(operator_pid)?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.health_seconds);
    let renewals = Arc::new(AtomicU64::new(0));
    let simulated = tokio::spawn(simulate(
        client.clone(),
        owners.clone(),
        args.nodes,
        deadline,
        Arc::clone(&renewals),
    ));
    let mut samples = probe_latency(client, &owners[0], deadline).await?;
    simulated.await??;
    let elapsed = started.elapsed().as_secs_f64();
    let writes = status_writes(&probe::operator_metrics(port).await?) - writes_before;
    let renewals = renewals.load(Ordering::Relaxed) as f64;
    println!("health_seconds {elapsed:.0}");
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
    println!(
        "health_operator_cpu_cores {:.3}",
        (probe::cpu_seconds(operator_pid)? - cpu_before) / elapsed
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
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64();
    if !samples.is_empty() {
        println!(
            "health_figure_to_status_seconds samples {} p50 {:.2} p99 {:.2} max {:.2}",
            samples.len(),
            pick(0.5),
            pick(0.99),
            pick(1.0)
        );
    }
    Ok(())
}

/// Renew every node's Lease every 10 s until `deadline`, each with new figures.
async fn simulate(
    client: Client,
    owners: Vec<DrainOwner>,
    nodes: usize,
    deadline: Instant,
    renewals: Arc<AtomicU64>,
) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(client, SYSTEM);
    let interval = Duration::from_secs(10);
    let mut round: u64 = 0;
    while Instant::now() < deadline {
        let start = Instant::now();
        round += 1;
        for node in 0..nodes {
            tokio::time::sleep_until(start + interval * node as u32 / nodes as u32).await;
            let (api, owners, renewals) = (api.clone(), owners.clone(), Arc::clone(&renewals));
            tokio::spawn(async move {
                let lease = lease(&format!("node-{node}"), &owners, round, None);
                if renew(&api, &lease).await.is_ok() {
                    renewals.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        tokio::time::sleep_until(start + interval).await;
    }
    Ok(())
}

/// Raise `owner`'s figure through a Lease of its own, then time until the status shows it.
async fn probe_latency(client: &Client, owner: &DrainOwner, deadline: Instant) -> Result<Vec<Duration>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM);
    let drains: Api<LogDrain> = Api::namespaced(client.clone(), &owner.namespace);
    let mut samples = Vec::new();
    let mut k: u64 = 0;
    while Instant::now() + PROBE_TIMEOUT < deadline {
        k += 1;
        let mark = k * 1_000_000_000;
        renew(
            &leases,
            &lease("bench-probe", std::slice::from_ref(owner), 0, Some(mark)),
        )
        .await?;
        let sent = Instant::now();
        loop {
            let delivered = drains
                .get(&owner.name)
                .await?
                .status
                .and_then(|s| s.delivery)
                .map_or(0, |d| d.lines_delivered);
            if u64::try_from(delivered).unwrap_or(0) >= mark {
                samples.push(sent.elapsed());
                break;
            }
            if sent.elapsed() > PROBE_TIMEOUT {
                samples.push(PROBE_TIMEOUT);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(samples)
}

/// A collector Lease for `node` reporting `owners` with `round` lines delivered each (or `mark`).
fn lease(node: &str, owners: &[DrainOwner], round: u64, mark: Option<u64>) -> Lease {
    let drains: BTreeMap<String, DrainHealth> = owners
        .iter()
        .map(|o| {
            let health = DrainHealth {
                owner: Some(o.clone()),
                active: true,
                lines_delivered: mark.unwrap_or(round * 100),
                lag_bytes: 1024,
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
