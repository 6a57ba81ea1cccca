//! `sluice-collector`: ship container logs to drains, at least once.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use sluice_api::NodeConfig;
use sluice_collector::{
    cluster, config, drain, health,
    metrics::Metrics,
    runtime,
    server::{self, Origin},
};
use tokio::{signal::unix::SignalKind, sync::watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Tail container logs (Docker json-file, CRI) and deliver every line to the drains its
/// container is bound to, with a cursor per (file, drain) so nothing is lost or sent twice.
///
/// In Kubernetes (no --config) the collector watches its node's config Secret
/// (`sluice-node-<node>` in the sluice namespace), which the sluice operator renders, applies every
/// change live, keeps the last good config in --state-dir (and starts from it while the API server
/// is unreachable), and holds a Lease `sluice-collector-<node>` that carries its drains' health.
/// On a plain Docker host, write the node config by hand (see examples/standalone.yaml) and pass
/// --config: the file is watched, edits apply without a restart, and an invalid edit is rejected
/// (naming the field) while the last good config keeps running.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// The node config (YAML); standalone mode. Without it the collector runs in cluster mode.
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where cursors, health figures and (cluster mode) the last good node config are kept (a
    /// hostPath in Kubernetes, so restarts resume exactly).
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
    /// This node's name (default syslog HOSTNAME); from the downward API (`spec.nodeName`) in
    /// Kubernetes, where it is required.
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// Cluster mode: the sluice namespace (node config Secrets, Leases); default the pod's
    /// service-account namespace.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Cluster mode: a kubeconfig file; default the in-cluster service account (else $KUBECONFIG).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Cluster mode: this pod's name, the node Lease's holder (default the host name).
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pod_name: Option<String>,
    /// Cluster mode: Docker's data root on this node (it overrides the node config's).
    #[arg(long, default_value = "/var/lib/docker", value_name = "DIR")]
    docker_root: PathBuf,
    /// Cluster mode: the kubelet's pod log directory on this node (it overrides the node config's).
    #[arg(long, default_value = "/var/log/pods", value_name = "DIR")]
    pods_root: PathBuf,
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
    /// Address of the query API (recent lines and follow, for the operator only); not served
    /// unless given, with --query-token-file.
    #[arg(
        long,
        env = "SLUICE_QUERY_LISTEN",
        value_name = "ADDR",
        requires = "query_token_file"
    )]
    query_listen: Option<SocketAddr>,
    /// A file holding the bearer token the operator presents to the query API (at least 32
    /// characters; mounted from a Secret of the sluice namespace).
    #[arg(
        long,
        env = "SLUICE_QUERY_TOKEN_FILE",
        value_name = "FILE",
        requires = "query_listen"
    )]
    query_token_file: Option<PathBuf>,
    /// The IP the operator reaches the query API at, published on the node Lease with the bound
    /// port (default: --query-listen's IP; required when that is unspecified, e.g. 0.0.0.0: the
    /// chart passes the pod IP).
    #[arg(
        long,
        env = "SLUICE_QUERY_ADVERTISE",
        value_name = "IP",
        requires = "query_listen"
    )]
    query_advertise: Option<std::net::IpAddr>,
    /// Serve the query API over TLS with this certificate (PEM; for the name the operator
    /// verifies, --collector-query-server-name there), and require a client certificate of
    /// --query-client-ca: only the operator then completes a handshake (the token is still
    /// checked). Without the three, the query API is plain HTTP (token only; for a standalone
    /// host, not for a cluster).
    #[arg(
        long,
        env = "SLUICE_QUERY_TLS_CERT",
        value_name = "FILE",
        requires_all = ["query_listen", "query_tls_key", "query_client_ca"]
    )]
    query_tls_cert: Option<PathBuf>,
    /// The private key of --query-tls-cert (PEM).
    #[arg(
        long,
        env = "SLUICE_QUERY_TLS_KEY",
        value_name = "FILE",
        requires = "query_tls_cert"
    )]
    query_tls_key: Option<PathBuf>,
    /// The CA (PEM) whose client certificates the query API accepts: the operator's.
    #[arg(
        long,
        env = "SLUICE_QUERY_CLIENT_CA",
        value_name = "FILE",
        requires = "query_tls_cert"
    )]
    query_client_ca: Option<PathBuf>,
    /// Recent lines kept per container for queries (0: none kept).
    #[arg(long, default_value = "1000", value_name = "LINES")]
    recent_lines: usize,
    /// Message and label bytes of recent lines kept over all containers of the node.
    #[arg(long, default_value = "67108864", value_name = "BYTES")]
    recent_max_bytes: usize,
    /// How long the recent lines of a container no longer bound (a deleted pod) are kept.
    #[arg(long, default_value = "3600", value_name = "SECONDS")]
    recent_keep: u64,
    /// How long one follow of the query API lasts; it then ends with a cursor the operator
    /// follows again from at once, missing no line.
    #[arg(long, default_value = "3600", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    query_follow_max_seconds: u64,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Only check the config file and exit (0 when valid).
    #[arg(long, requires = "config")]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(&args.log_format);
    let mode = match &args.config {
        Some(path) => {
            let initial = match config::load(path) {
                Ok(config) => config,
                Err(e) => {
                    error!("{e}");
                    anyhow::bail!("{e}");
                }
            };
            if args.check {
                for (drain, why) in &initial.skipped {
                    println!("{}: drain {drain:?} would be skipped: {why}", path.display());
                }
                anyhow::ensure!(
                    initial.skipped.is_empty(),
                    "{} has unusable drains",
                    path.display()
                );
                let config = &initial.config;
                println!(
                    "{}: valid ({} drains, {} containers, {} selectors)",
                    path.display(),
                    config.drains.len(),
                    config.containers.len(),
                    config.selectors.len()
                );
                return Ok(());
            }
            Mode::File {
                path: path.clone(),
                initial,
            }
        }
        None => Mode::Cluster(cluster_identity(&args)?),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sluice-worker")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(args, mode))
}

/// Where the node config comes from.
enum Mode {
    File { path: PathBuf, initial: config::Loaded },
    Cluster(cluster::Identity),
}

fn cluster_identity(args: &Args) -> anyhow::Result<cluster::Identity> {
    let node = args.node_name.clone().context(
        "cluster mode (no --config) needs --node-name (or NODE_NAME, from the downward API's spec.nodeName)",
    )?;
    Ok(cluster::Identity {
        node,
        namespace: cluster::namespace(args.namespace.clone())?,
        pod: args.pod_name.clone().unwrap_or_else(hostname),
    })
}

/// The stream of configs to apply, with their origin.
enum Updates {
    File(watch::Receiver<Arc<NodeConfig>>),
    Cluster(watch::Receiver<Option<Arc<NodeConfig>>>),
}

impl Updates {
    /// The next config; `None` once its source has ended.
    async fn next(&mut self) -> Option<(Arc<NodeConfig>, Origin)> {
        match self {
            Self::File(rx) => {
                rx.changed().await.ok()?;
                Some((rx.borrow_and_update().clone(), Origin::File))
            }
            Self::Cluster(rx) => loop {
                rx.changed().await.ok()?;
                if let Some(config) = rx.borrow_and_update().clone() {
                    return Some((config, Origin::Api));
                }
            },
        }
    }
}

/// Cluster mode's parts beside the collector.
struct ClusterParts {
    lease: tokio::task::JoinHandle<()>,
    lease_cancel: CancellationToken,
    drains: watch::Sender<BTreeMap<String, health::DrainState>>,
}

async fn run(args: Args, mode: Mode) -> anyhow::Result<()> {
    let metrics = Metrics::new().context("cannot register metrics")?;
    match sluice_collector::limits::raise_open_files() {
        Ok(limit) => metrics.open_files_limit.set(limit.try_into().unwrap_or(i64::MAX)),
        Err(e) => {
            warn!(error = %e, "cannot raise the open-files limit; a busy node may run out of descriptors")
        }
    }
    let stall_after = Duration::from_secs(args.stall_timeout);
    let health = server::Health::new(metrics.clone(), stall_after);
    let cancel = CancellationToken::new();
    let server = server::serve(args.listen, health.clone(), cancel.child_token())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let server = tokio::spawn(server);

    let (recent, query_address, query_tls) = match start_query(&args, &metrics, &cancel).await? {
        Some((recent, address, tls)) => (Some(recent), Some(address), tls),
        None => (None, None, false),
    };
    let settings = runtime::Settings {
        state_dir: args.state_dir.clone(),
        node_name: args.node_name.clone().unwrap_or_else(hostname),
        destinations: Arc::new(drain::destinations::Destinations::new(
            args.deny_destinations.clone(),
            args.allow_destinations.clone(),
        )),
        recent,
    };
    let (initial, mut updates, watcher, identity) = match mode {
        Mode::File { path, initial } => {
            initial.log_skipped();
            metrics
                .skipped_drains
                .set(drain::SkipStage::Config, initial.skipped);
            let initial = Arc::new(initial.config);
            let (tx, rx) = watch::channel(Arc::clone(&initial));
            let watcher = tokio::spawn(config::watch(path, tx, metrics.clone(), cancel.child_token()));
            let watcher = tokio::spawn(async move {
                if let Ok(Err(e)) = watcher.await {
                    error!(error = %e, "config watcher failed");
                }
            });
            health.config().set_origin(Origin::File);
            (initial, Updates::File(rx), watcher, None)
        }
        Mode::Cluster(identity) => {
            let client = cluster::client(args.kubeconfig.as_deref()).await?;
            let fit = fit_to_node(&args, &identity.node);
            let initial = match cluster::source::load_saved(&args.state_dir) {
                Some(saved) => {
                    info!(drains = saved.drains.len(), "starting from the saved node config");
                    health.config().set_origin(Origin::Saved);
                    fit(saved)
                }
                None => {
                    info!("no saved node config: shipping nothing until the API server sends one");
                    fit(cluster::source::empty(&identity.node))
                }
            };
            let (tx, rx) = watch::channel(None);
            let watcher = tokio::spawn(cluster::source::watch(
                client.clone(),
                identity.clone(),
                fit,
                tx,
                health.config().clone(),
                metrics.clone(),
                cancel.child_token(),
            ));
            (
                Arc::new(initial),
                Updates::Cluster(rx),
                watcher,
                Some((client, identity)),
            )
        }
    };
    let mut collector = runtime::Collector::start(settings, Arc::clone(&initial), metrics.clone())
        .context("cannot start the collector")?;
    let mut in_force = initial;
    let cluster = identity.map(|(client, identity)| {
        let (drains, rx) = watch::channel(collector.drain_states());
        let book = health::Book::open(&args.state_dir, &identity.node);
        let mut lease = cluster::lease::NodeLease::new(client, identity, book, metrics.clone(), rx)
            .with_query_address(query_address)
            .with_query_tls(query_tls);
        let lease_cancel = CancellationToken::new();
        let token = lease_cancel.clone();
        let lease = tokio::spawn(async move {
            lease.run(token).await;
            lease.release().await;
        });
        ClusterParts {
            lease,
            lease_cancel,
            drains,
        }
    });
    health.set_ready(true);

    let mut sigterm =
        tokio::signal::unix::signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut states = tokio::time::interval(DRAIN_STATE_INTERVAL);
    loop {
        tokio::select! {
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => { info!("interrupted: stopping"); break; }
            death = collector.next_death() => collector.restart_drain(&death),
            _ = states.tick() => {
                if let Some(c) = &cluster { c.drains.send_replace(collector.drain_states()); }
            }
            update = updates.next() => {
                let Some((config, origin)) = update else { break };
                if config == in_force {
                    // The API server confirmed the saved copy: nothing to change.
                    health.config().set_origin(origin);
                    continue;
                }
                match collector.apply(Arc::clone(&config)) {
                    Ok(()) => {
                        metrics.config_reloads.with_label_values(&["applied"]).inc();
                        health.config().set_origin(origin);
                        if origin == Origin::Api {
                            save(&args.state_dir, Arc::clone(&config)).await;
                        }
                        in_force = config;
                        if let Some(c) = &cluster { c.drains.send_replace(collector.drain_states()); }
                    }
                    Err(e) => {
                        error!(error = %e, "config change rejected; the last good config keeps running");
                        metrics.config_reloads.with_label_values(&["rejected"]).inc();
                        health.config().set_rejected(Some(e.to_string()));
                    }
                }
            }
        }
    }
    health.set_ready(false);
    let last_states = collector.drain_states();
    collector.shutdown(Duration::from_secs(args.grace_period)).await;
    cancel.cancel();
    if let Some(c) = cluster {
        // The final figures (what the drains delivered while stopping), then the Lease goes.
        c.drains.send_replace(last_states);
        c.lease_cancel.cancel();
        let _ = c.lease.await;
    }
    let _ = watcher.await;
    let _ = server.await;
    Ok(())
}

/// How often the drains' states are handed to the Lease (which reports every 10 s).
const DRAIN_STATE_INTERVAL: Duration = Duration::from_secs(2);

/// What this node decides rather than the operator: where its logs live.
fn fit_to_node(args: &Args, node: &str) -> impl Fn(NodeConfig) -> NodeConfig + Send + 'static {
    let sources = sluice_api::node_config::Sources {
        docker_root: args.docker_root.clone(),
        pods_root: args.pods_root.clone(),
    };
    let node = node.to_owned();
    move |mut config| {
        config.sources = sources.clone();
        config.node.get_or_insert_with(|| node.clone());
        config
    }
}

/// Keep `config` as the last good one; a failure is logged (the next start then uses an older
/// copy, or waits for the API server).
async fn save(state_dir: &std::path::Path, config: Arc<NodeConfig>) {
    let dir = state_dir.to_owned();
    match tokio::task::spawn_blocking(move || cluster::source::save(&dir, &config)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "cannot save the node config in the state dir"),
        Err(e) => warn!(error = %e, "saving the node config panicked"),
    }
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

/// With `--query-listen`: the recent store, the query API serving it, and a task that forgets the
/// lines of containers gone longer than `--recent-keep` and publishes the store's size
/// (`sluice_collector_recent_bytes`) and evictions (`sluice_collector_recent_lines_evicted_total`).
/// Also returns the address to publish on the node Lease (`IP:PORT`) and whether it is served
/// over TLS.
async fn start_query(
    args: &Args,
    metrics: &Metrics,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<(Arc<sluice_collector::recent::Recent>, String, bool)>> {
    use sluice_collector::{query, recent};
    let (Some(addr), Some(token_file)) = (args.query_listen, &args.query_token_file) else {
        return Ok(None);
    };
    if args.recent_lines == 0 {
        return Ok(None);
    }
    let text = std::fs::read_to_string(token_file)
        .with_context(|| format!("cannot read the query token {}", token_file.display()))?;
    let token = query::Token::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", token_file.display()))?;
    let store = Arc::new(recent::Recent::new(recent::RecentSettings {
        lines_per_container: args.recent_lines,
        max_bytes: args.recent_max_bytes,
        keep_gone: Duration::from_secs(args.recent_keep),
        ..recent::RecentSettings::default()
    }));
    let advertise = match args.query_advertise {
        Some(ip) => ip,
        None if !addr.ip().is_unspecified() => addr.ip(),
        None => anyhow::bail!(
            "--query-listen {addr} has no address the operator can reach: pass --query-advertise IP \
             (in a pod: its IP, from the downward API)"
        ),
    };
    let mut settings = query::QuerySettings {
        follow_timeout: Duration::from_secs(args.query_follow_max_seconds),
        ..query::QuerySettings::new(token)
    };
    match (&args.query_tls_cert, &args.query_tls_key, &args.query_client_ca) {
        (Some(cert), Some(key), Some(ca)) => {
            let config = sluice_api::query_tls::server_config(cert, key, ca).map_err(anyhow::Error::msg)?;
            let failures = sluice_collector::query_tls::QueryTls::failures_counter()?;
            metrics.registry().register(Box::new(failures.clone()))?;
            settings.tls = Some(sluice_collector::query_tls::QueryTls {
                config: Arc::new(config),
                handshake_failures: failures,
            });
        }
        _ => warn!(
            "the query API is not encrypted: the operator's token and the lines it asks for cross the \
             network in clear; pass --query-tls-cert, --query-tls-key and --query-client-ca (the chart does)"
        ),
    }
    let tls = settings.tls.is_some();
    let (bound, server) = query::serve(addr, settings, Arc::clone(&store), cancel.child_token())
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let advertised = std::net::SocketAddr::new(advertise, bound.port()).to_string();
    tokio::spawn(async move {
        if let Err(e) = server.await {
            error!(error = %e, "the query API stopped");
        }
    });
    let bytes = prometheus::IntGauge::new(
        "sluice_collector_recent_bytes",
        "Message and label bytes of recent lines held for queries.",
    )?;
    let evicted = prometheus::IntCounter::new(
        "sluice_collector_recent_lines_evicted_total",
        "Recent lines given up to the per-container and per-node bounds.",
    )?;
    metrics.registry().register(Box::new(bytes.clone()))?;
    metrics.registry().register(Box::new(evicted.clone()))?;
    let sweeper = Arc::clone(&store);
    let stop = cancel.child_token();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            sweeper.sweep();
            bytes.set(i64::try_from(sweeper.bytes()).unwrap_or(i64::MAX));
            evicted.inc_by(sweeper.evicted().saturating_sub(evicted.get()));
        }
    });
    Ok(Some((store, advertised, tls)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Args, clap::Error> {
        let base = [
            "sluice-collector",
            "--query-listen",
            "127.0.0.1:0",
            "--query-token-file",
        ];
        Args::try_parse_from(base.iter().chain(["token"].iter()).chain(extra))
    }

    #[test]
    fn the_query_tls_flags_come_together() {
        let all = [
            "--query-tls-cert",
            "c",
            "--query-tls-key",
            "k",
            "--query-client-ca",
            "a",
        ];
        assert!(args(&all).is_ok());
        for missing in ["--query-tls-key", "--query-client-ca", "--query-tls-cert"] {
            let given: Vec<&str> = all
                .chunks(2)
                .filter(|flag| flag[0] != missing)
                .flatten()
                .copied()
                .collect();
            let error = args(&given).unwrap_err().to_string();
            assert!(error.contains(missing), "without {missing}: {error}");
        }
    }

    /// A query TLS file that cannot be used stops the start, naming the file (what makes a file
    /// unusable, and the messages, are `sluice_api::query_tls`'s).
    #[tokio::test]
    async fn query_tls_files_that_cannot_be_used_stop_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(path("token"), "t".repeat(40)).unwrap();
        let args = args(&[
            "--query-tls-cert",
            &path("missing.crt"),
            "--query-tls-key",
            &path("k"),
            "--query-client-ca",
            &path("a"),
        ])
        .map(|a| Args {
            query_token_file: Some(path("token").into()),
            ..a
        })
        .unwrap();
        let error = start_query(&args, &Metrics::new().unwrap(), &CancellationToken::new())
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.starts_with(&format!(
                "cannot read the query TLS certificate {}: ",
                path("missing.crt")
            )),
            "{error}"
        );
    }
}
