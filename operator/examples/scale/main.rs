//! Scale benchmark of the operator against the real kube-apiserver harness (not a test: it prints
//! figures). Run through `bench/operator-scale.sh`, which builds the release operator first.
//!
//! 1. Creates `--nodes` Nodes, `--namespaces` tenant namespaces each with one LogDrain,
//!    `--bindings` LogBindings (binding i selects `app=app-i`), and `--pods` pods spread over the
//!    nodes, each with its status patched as a kubelet would (a containerd container id).
//! 2. Starts the operator binary (its own process, so its peak RSS is its own) and measures the
//!    time until every node has its config, the node config writes, and the API requests the
//!    apiserver served meanwhile.
//! 3. Churn: replaces `--churn-rate` pods per second for `--churn-seconds` (delete, re-create with
//!    a new container id, patch status) and measures, per replacement, the time from the status
//!    patch to the node config that carries the new id (p50/p99/max), next to the operator's own
//!    lag histogram and the CPU each process used, so a tail can be told apart (see `churn`).
//! 4. Health: one simulated collector per node renews its Lease every 10 s with drain figures
//!    while pods churn at `--health-churn-rate`; measures the status writes this adds, the
//!    operator's CPU, and the time from each figure change to the status (`health`).

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::{
    api::core::v1::{Container, Namespace, Node, Pod, PodSpec, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ListParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use tokio::time::Instant;

#[derive(Parser, Debug, Clone)]
#[command(about = "Scale benchmark of sluice-operator against the project's kube-apiserver harness")]
struct Args {
    /// The operator binary to run (build it with --release).
    #[arg(long)]
    operator_bin: std::path::PathBuf,
    #[arg(long, default_value_t = 500)]
    nodes: usize,
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    #[arg(long, default_value_t = 200)]
    bindings: usize,
    #[arg(long, default_value_t = 20)]
    namespaces: usize,
    /// Pod replacements per second during churn (0: no churn phase).
    #[arg(long, default_value_t = 100)]
    churn_rate: u32,
    #[arg(long, default_value_t = 60)]
    churn_seconds: u64,
    /// How long simulated collectors renew their node Leases with health figures (0: no health
    /// phase).
    #[arg(long, default_value_t = 120)]
    health_seconds: u64,
    /// Pod replacements per second during the health phase (0: none).
    #[arg(long, default_value_t = 10)]
    health_churn_rate: u32,
    /// Write the operator's log (debug level for the operator: one line per node config write,
    /// with its lag and write time) to this file.
    #[arg(long)]
    operator_log: Option<std::path::PathBuf>,
    /// Save a 20 s CPU profile of the apiserver+etcd process, taken from 20 s into the churn, to
    /// this file (Go pprof format: `go tool pprof -top FILE`).
    #[arg(long)]
    apiserver_profile: Option<std::path::PathBuf>,
    /// One more argument for the operator (repeatable), e.g. `--operator-arg=--write-concurrency=32`.
    #[arg(long = "operator-arg", value_name = "ARG", allow_hyphen_values = true)]
    operator_args: Vec<String>,
    /// Concurrent requests while setting up.
    #[arg(long, default_value_t = 48)]
    concurrency: usize,
}

mod churn;
mod health;
mod probe;

const SYSTEM: &str = "sluice-system";

/// Kills the operator process by pid when dropped (also on failure).
struct OperatorProcess(tokio::process::Child);

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let harness = sluice_kube_harness::KubeHarness::start()
        .await
        .context("starting the kube-apiserver harness")?;
    let client = harness.client().await?;
    install_crds(&client).await?;
    let setup = Instant::now();
    populate(&client, &args).await?;
    eprintln!(
        "setup: {} nodes, {} pods, {} bindings in {:.1}s",
        args.nodes,
        args.pods,
        args.bindings,
        setup.elapsed().as_secs_f64()
    );

    let port = probe::free_port()?;
    let before = probe::apiserver_requests(&client).await?;
    let started = Instant::now();
    let mut operator = start_operator(&args, &harness, port)?;
    let pid = operator.0.id().context("operator pid")?;
    let expected = args.nodes.min(args.pods);
    wait_converged(&client, expected, started).await?;
    let converged = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = probe::operator_metrics(port).await?;
    let applies = probe::metric(
        &metrics,
        "sluice_operator_api_writes_total{resource=\"secret\",verb=\"apply\"}",
    );
    let startup_requests = probe::apiserver_requests(&client).await? - before;
    println!("converge_seconds {:.2}", converged.as_secs_f64());
    println!("node_configs {expected}");
    println!("writes_per_node {:.3}", applies / expected as f64);
    println!(
        "startup_api_requests_total {startup_requests:.0} (all clients; the bench issued ~2 list calls per 50 ms while polling)"
    );
    println!(
        "startup_operator_writes {:.0}",
        probe::metric(&metrics, "sluice_operator_api_writes_total")
    );

    if args.churn_rate > 0 {
        let pids = churn::Pids {
            operator: pid,
            apiserver: harness.pid(),
            operator_port: port,
        };
        churn::churn(&client, &args, &pids).await?;
        let metrics = probe::operator_metrics(port).await?;
        println!(
            "total_operator_writes {:.0}",
            probe::metric(&metrics, "sluice_operator_api_writes_total")
        );
    }
    if args.health_seconds > 0 {
        let churned = args.churn_rate as usize * args.churn_seconds as usize;
        health::health(&client, &args, pid, port, churned).await?;
    }
    println!("peak_rss_mib {:.1}", probe::peak_rss_kib(pid)? as f64 / 1024.0);
    operator.0.kill().await.ok();
    Ok(())
}

/// Start the operator binary against the harness, serving metrics on `port`.
fn start_operator(
    args: &Args,
    harness: &sluice_kube_harness::KubeHarness,
    port: u16,
) -> Result<OperatorProcess> {
    let (log_level, log): (_, std::process::Stdio) = match &args.operator_log {
        Some(path) => (
            "warn,sluice_operator=debug",
            std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?
                .into(),
        ),
        None => ("warn", std::process::Stdio::inherit()),
    };
    let child = tokio::process::Command::new(&args.operator_bin)
        .args([
            "--namespace",
            SYSTEM,
            "--identity",
            "bench",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("KUBECONFIG", harness.kubeconfig_path())
        .args(&args.operator_args)
        .env("RUST_LOG", log_level)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting the operator binary")?;
    Ok(OperatorProcess(child))
}

/// Poll until `expected` node config Secrets exist (at most 300 s after `started`).
async fn wait_converged(client: &Client, expected: usize, started: Instant) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), SYSTEM);
    loop {
        let n = secrets
            .list_metadata(&ListParams::default().labels("app.kubernetes.io/component=node-config"))
            .await?
            .items
            .len();
        if n >= expected {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("only {n} of {expected} node configs after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in sluice_api::crd::all() {
        let name = crd.metadata.name.clone().context("CRD name")?;
        api.patch(
            &name,
            &PatchParams::apply("sluice-bench").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !api
            .get(&name)
            .await?
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True")
        {
            if Instant::now() > deadline {
                bail!("CRD {name} not established");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

pub(crate) fn tenant(binding: usize, args: &Args) -> String {
    format!("team-{}", binding % args.namespaces)
}

async fn populate(client: &Client, args: &Args) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for name in (0..args.namespaces)
        .map(|i| format!("team-{i}"))
        .chain([SYSTEM.to_owned()])
    {
        namespaces
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: meta(&name),
                    ..Default::default()
                },
            )
            .await?;
    }
    for i in 0..args.namespaces {
        let ns = format!("team-{i}");
        let drain = json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain", "metadata": {"name": "logs"}, "spec": {"url": "syslog-tls://logs.example.com:6514"}});
        Api::<sluice_api::crd::LogDrain>::namespaced(client.clone(), &ns)
            .patch("logs", &PatchParams::apply("sluice-bench"), &Patch::Apply(&drain))
            .await?;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    stream::iter(0..args.nodes)
        .map(|n| {
            let nodes = nodes.clone();
            async move {
                nodes
                    .create(
                        &PostParams::default(),
                        &Node {
                            metadata: meta(&format!("node-{n}")),
                            ..Default::default()
                        },
                    )
                    .await
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    for b in 0..args.bindings {
        let ns = tenant(b, args);
        let binding = json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": format!("b-{b}")},
            "spec": {"selector": {"matchLabels": {"app": format!("app-{b}")}}, "drains": ["logs"]}});
        Api::<sluice_api::crd::LogBinding>::namespaced(client.clone(), &ns)
            .patch(
                &format!("b-{b}"),
                &PatchParams::apply("sluice-bench"),
                &Patch::Apply(&binding),
            )
            .await?;
    }
    stream::iter(0..args.pods)
        .map(|j| create_pod(client.clone(), args, j, 0, |_| Ok(())))
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn container_id(index: usize, generation: usize) -> String {
    format!("containerd://{index:08x}{generation:08x}")
}

/// Create pod `p-<j>` (bound by binding `j % bindings`) on node `j % nodes` and report its
/// container running; returns the container id.
/// `before_status` hears the id just before the status patch is sent.
pub(crate) async fn create_pod(
    client: Client,
    args: &Args,
    index: usize,
    generation: usize,
    before_status: impl FnOnce(&str) -> Result<()>,
) -> Result<String> {
    let b = index % args.bindings;
    let api: Api<Pod> = Api::namespaced(client, &tenant(b, args));
    let name = format!("p-{index}");
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([("app".to_owned(), format!("app-{b}"))].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(format!("node-{}", (index + generation) % args.nodes)),
            containers: vec![Container {
                name: "app".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    api.create(&PostParams::default(), &pod).await?;
    let id = container_id(index, generation);
    let status = json!({"status": {"phase": "Running", "containerStatuses": [{"name": "app", "containerID": id,
        "image": "busybox", "imageID": "docker://sha256:1", "ready": true, "restartCount": 0,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}});
    before_status(&id)?;
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(id)
}
