//! `sluice-collector`: ship container logs to drains, at least once.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use sluice_collector::{config, drain, metrics::Metrics, runtime, server};
use tokio::{signal::unix::SignalKind, sync::watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Tail container logs (Docker json-file, CRI) and deliver every line to the drains its
/// container is bound to, with a cursor per (file, drain) so nothing is lost or sent twice.
///
/// On a plain Docker host, write the node config by hand (see examples/standalone.yaml); in
/// Kubernetes the sluice operator renders it. The file is watched: edits apply without a restart,
/// and an invalid edit is rejected (naming the field) while the last good config keeps running.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The node config (YAML).
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// Where cursors are kept (a hostPath in Kubernetes, so restarts resume exactly).
    #[arg(
        long,
        env = "SLUICE_STATE_DIR",
        default_value = "/var/lib/sluice",
        value_name = "DIR"
    )]
    state_dir: PathBuf,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(
        long,
        env = "SLUICE_LISTEN",
        default_value = "0.0.0.0:9880",
        value_name = "ADDR"
    )]
    listen: SocketAddr,
    /// This node's name (default syslog HOSTNAME); from the downward API in Kubernetes.
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// On SIGTERM, how long drains may take to deliver what is in flight.
    #[arg(long, default_value = "20", value_name = "SECONDS")]
    grace_period: u64,
    /// /healthz fails once the tail engine has been stuck this long (it goes round its loop
    /// about once a second); a liveness probe then restarts the collector, which resumes from
    /// its checkpoint.
    #[arg(long, default_value = "60", value_name = "SECONDS")]
    stall_timeout: u64,
    /// Address ranges drains may not connect to, besides the built-in ones (loopback, link-local
    /// 169.254.0.0/16 and fe80::/10, unspecified), judged after name resolution.
    #[arg(
        long,
        env = "SLUICE_DENY_DESTINATIONS",
        value_name = "CIDR,..",
        value_delimiter = ','
    )]
    deny_destinations: Vec<drain::destinations::Cidr>,
    /// Address ranges drains may connect to even inside the refused ones (e.g. 127.0.0.1/32 for a
    /// receiver on this host).
    #[arg(
        long,
        env = "SLUICE_ALLOW_DESTINATIONS",
        value_name = "CIDR,..",
        value_delimiter = ','
    )]
    allow_destinations: Vec<drain::destinations::Cidr>,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Only check the config file and exit (0 when valid).
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(&args.log_format);
    let initial = match config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            error!("{e}");
            anyhow::bail!("{e}");
        }
    };
    if args.check {
        for (drain, why) in &initial.skipped {
            println!(
                "{}: drain {drain:?} would be skipped: {why}",
                args.config.display()
            );
        }
        anyhow::ensure!(
            initial.skipped.is_empty(),
            "{} has unusable drains",
            args.config.display()
        );
        let config = &initial.config;
        println!(
            "{}: valid ({} drains, {} containers, {} selectors)",
            args.config.display(),
            config.drains.len(),
            config.containers.len(),
            config.selectors.len()
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sluice-worker")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args, initial))
}

async fn run(args: Args, initial: config::Loaded) -> anyhow::Result<()> {
    let metrics = Metrics::new().context("cannot register metrics")?;
    match sluice_collector::limits::raise_open_files() {
        Ok(limit) => metrics.open_files_limit.set(limit.try_into().unwrap_or(i64::MAX)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-files limit; a busy node may run out of descriptors")
        }
    }
    initial.log_skipped();
    metrics
        .skipped_drains
        .set(drain::SkipStage::Config, initial.skipped);
    let stall_after = Duration::from_secs(args.stall_timeout);
    let health = server::Health::new(metrics.clone(), stall_after);
    let cancel = CancellationToken::new();
    let server = server::serve(args.listen, health.clone(), cancel.child_token())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let server = tokio::spawn(server);

    let node_name = args.node_name.clone().unwrap_or_else(hostname);
    let settings = runtime::Settings {
        state_dir: args.state_dir.clone(),
        node_name,
        destinations: Arc::new(drain::destinations::Destinations::new(
            args.deny_destinations.clone(),
            args.allow_destinations.clone(),
        )),
    };
    let initial = Arc::new(initial.config);
    let mut collector = runtime::Collector::start(settings, Arc::clone(&initial), metrics.clone())
        .context("cannot start the collector")?;
    let (config_tx, mut config_rx) = watch::channel(initial);
    let watcher = tokio::spawn(config::watch(
        args.config.clone(),
        config_tx,
        metrics.clone(),
        cancel.child_token(),
    ));
    health.set_ready(true);

    let mut sigterm =
        tokio::signal::unix::signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => { info!("interrupted: stopping"); break; }
            death = collector.next_death() => collector.restart_drain(&death),
            changed = config_rx.changed() => {
                if changed.is_err() { break; }
                let config = config_rx.borrow_and_update().clone();
                match collector.apply(config) {
                    Ok(()) => metrics.config_reloads.with_label_values(&["applied"]).inc(),
                    Err(e) => {
                        error!(error = %e, "config change rejected; the last good config keeps running");
                        metrics.config_reloads.with_label_values(&["rejected"]).inc();
                    }
                }
            }
        }
    }
    health.set_ready(false);
    collector.shutdown(Duration::from_secs(args.grace_period)).await;
    cancel.cancel();
    if let Ok(Err(e)) = watcher.await {
        error!(error = %e, "config watcher failed");
    }
    let _ = server.await;
    Ok(())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never in files or `kubectl logs`.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
