//! `sluice-operator`: the command line around [`sluice_operator::run`].

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use sluice_operator::{Context, Settings, telemetry};
use tokio_util::sync::CancellationToken;

/// sluice's operator: renders one collector config Secret per node from LogDrains, LogBindings and
/// pods, and reports in their status whether they work. Run two replicas; they elect a leader on a
/// Lease, and only the leader writes.
#[derive(Parser, Debug)]
#[command(
    version,
    after_help = "Logging: RUST_LOG filters what is logged (default: info); RUST_LOG=info,sluice_operator=debug \
                  adds one line per node config write with its lag. Metrics: /metrics \
                  (sluice_operator_node_config_lag_seconds, sluice_operator_api_writes_total, ...)."
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Namespace for the node config Secrets and the leader Lease (default: this pod's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// This replica's identity in the leader Lease (default: the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "sluice-operator")]
    lease_name: String,
    /// Seconds a leader's Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Seconds between full re-reads of the Secrets LogDrains name, and rechecks of every status
    /// (Secrets of drains that are not ready are re-read every 10 s).
    #[arg(long, default_value_t = 300)]
    resync_seconds: u64,
    /// Watch only this namespace for LogDrains, LogBindings and pods (repeatable; default: all).
    #[arg(long = "watch-namespace", value_name = "NAMESPACE")]
    watch_namespaces: Vec<String>,
    /// How many node config writes run at once (status writes have a budget of the same size of
    /// their own, so they never hold node configs back).
    #[arg(long, default_value_t = 32)]
    write_concurrency: usize,
    /// /healthz fails when the operator's loop (a leader's, or a standby's attempts on the Lease)
    /// has made no progress for this many seconds, so a liveness probe restarts a stuck replica.
    #[arg(long, default_value_t = 60)]
    stall_seconds: u64,
    /// The most bytes of YAML one node's config may take (well below the API server's 1 MiB);
    /// drains that would push a node's config over it are left out of it, largest first.
    #[arg(long, default_value_t = sluice_operator::render::NODE_CONFIG_LIMIT)]
    node_config_limit: usize,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Serve the logs API (`logs.sluice.dev`, for `kubectl sluice logs`) to the API server's
    /// front proxy on this address; not served unless given, with the three files below.
    #[arg(long, env = "SLUICE_LOGS_API_LISTEN", value_name = "ADDR", requires_all = ["logs_api_cert_file", "logs_api_key_file", "query_token_file"])]
    logs_api_listen: Option<SocketAddr>,
    /// The logs API's serving certificate (PEM; the APIService's caBundle must sign it).
    #[arg(
        long,
        env = "SLUICE_LOGS_API_CERT_FILE",
        value_name = "FILE",
        requires = "logs_api_listen"
    )]
    logs_api_cert_file: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    #[arg(
        long,
        env = "SLUICE_LOGS_API_KEY_FILE",
        value_name = "FILE",
        requires = "logs_api_listen"
    )]
    logs_api_key_file: Option<std::path::PathBuf>,
    /// The token the collectors' query APIs accept (the Secret sluice-query-token, mounted).
    #[arg(
        long,
        env = "SLUICE_QUERY_TOKEN_FILE",
        value_name = "FILE",
        requires = "logs_api_listen"
    )]
    query_token_file: Option<std::path::PathBuf>,
    /// Send the query token to any address an unexpired collector Lease advertises, also when
    /// its holder is not a collector pod with that IP on that node: only for collectors run as
    /// host processes (whoever may write Leases in the sluice namespace then receives the token).
    #[arg(
        long,
        env = "SLUICE_LOGS_API_COLLECTORS_OUTSIDE_PODS",
        requires = "logs_api_listen"
    )]
    logs_api_collectors_outside_pods: bool,
    /// Ask the collectors' query APIs over mutual TLS: trust this CA (PEM) for their serving
    /// certificates (which must be for --collector-query-server-name) and present
    /// --collector-query-cert; a collector whose Lease does not advertise TLS is then never sent
    /// the token. Without the three, the collectors are asked over plain HTTP (the token in clear).
    #[arg(
        long,
        env = "SLUICE_COLLECTOR_QUERY_CA",
        value_name = "FILE",
        requires_all = ["logs_api_listen", "collector_query_cert", "collector_query_key"]
    )]
    collector_query_ca: Option<std::path::PathBuf>,
    /// The operator's client certificate for the collectors' query APIs (PEM; signed by the CA
    /// they are given as --query-client-ca).
    #[arg(
        long,
        env = "SLUICE_COLLECTOR_QUERY_CERT",
        value_name = "FILE",
        requires = "collector_query_ca"
    )]
    collector_query_cert: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    #[arg(
        long,
        env = "SLUICE_COLLECTOR_QUERY_KEY",
        value_name = "FILE",
        requires = "collector_query_ca"
    )]
    collector_query_key: Option<std::path::PathBuf>,
    /// The name the collectors' certificates are verified for, whatever their pod IP (the chart
    /// puts it in their certificate).
    #[arg(
        long,
        env = "SLUICE_COLLECTOR_QUERY_SERVER_NAME",
        value_name = "NAME",
        default_value = sluice_api::query_tls::DEFAULT_SERVER_NAME
    )]
    collector_query_server_name: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: telemetry::LogFormat,
}

/// What to do instead of running the operator.
#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Delete what sluice wrote at run time in its namespace (every node's config Secret, the
    /// collectors' node Leases and the leader Lease named by --lease-name), then exit. The Helm
    /// chart runs it after `helm uninstall` removed the operator, the collectors and their RBAC.
    Cleanup,
}

fn in_cluster_namespace() -> Option<String> {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    telemetry::init(args.log_format);
    let namespace = args.namespace.or_else(in_cluster_namespace).context(
        "no namespace for the node configs: pass --namespace or set POD_NAMESPACE (from the downward API)",
    )?;
    if let Some(Command::Cleanup) = args.command {
        let client = kube::Client::try_default().await.context(
            "cannot build a Kubernetes client (no in-cluster service account and no usable kubeconfig)",
        )?;
        let removed = sluice_operator::cleanup::cleanup(client, &namespace, &args.lease_name)
            .await
            .with_context(|| format!("cannot remove sluice's run-time objects in {namespace}"))?;
        tracing::info!(namespace, removed = ?removed.objects, "removed sluice's run-time objects");
        return Ok(());
    }
    let identity = args
        .identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .context("no identity for leader election: pass --identity or set POD_NAME")?;
    let client = kube::Client::try_default().await.context(
        "cannot build a Kubernetes client (no in-cluster service account and no usable kubeconfig)",
    )?;
    let args_logs_api = LogsApiArgs {
        listen: args.logs_api_listen,
        cert_file: args.logs_api_cert_file.clone(),
        key_file: args.logs_api_key_file.clone(),
        token_file: args.query_token_file.clone(),
        collectors_outside_pods: args.logs_api_collectors_outside_pods,
        query_ca: args.collector_query_ca.clone(),
        query_cert: args.collector_query_cert.clone(),
        query_key: args.collector_query_key.clone(),
        query_server_name: args.collector_query_server_name.clone(),
    };
    let mut settings = Settings::new(namespace, identity);
    settings.lease_name = args.lease_name;
    settings.lease_duration = Duration::from_secs(args.lease_seconds.max(3));
    settings.renew_interval = settings.lease_duration / 5;
    settings.resync_interval = Duration::from_secs(args.resync_seconds.max(10));
    settings.listen = Some(args.listen);
    settings.watch_namespaces = args.watch_namespaces;
    settings.write_concurrency = args.write_concurrency.max(1);
    settings.node_config_limit = args.node_config_limit.clamp(64 * 1024, 900 * 1024);
    // Beyond the slowest beat of the leader's loop (the status count interval).
    settings.stall_after = Duration::from_secs(args.stall_seconds.max(30));
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing the current pass and releasing the leader Lease");
        on_signal.cancel();
    });
    if let Some(api) = logs_api_settings(&args_logs_api, &settings.namespace)? {
        // Every replica serves it (it writes nothing), so a standby answers as well as the leader.
        // A logs API that cannot start (no aggregation layer, RBAC not bound yet) is retried and
        // never stops the operator's own work.
        let (client, stop) = (client.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                match sluice_operator::logs_api::serve(client.clone(), api.clone(), stop.clone()).await {
                    Ok(_) => break,
                    Err(e) => tracing::error!(error = %e, "cannot serve the logs API; trying again in 30 s"),
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        });
    }
    sluice_operator::run(Context::new(client, settings), shutdown).await?;
    Ok(())
}

/// The logs API's flags.
struct LogsApiArgs {
    listen: Option<SocketAddr>,
    cert_file: Option<std::path::PathBuf>,
    key_file: Option<std::path::PathBuf>,
    token_file: Option<std::path::PathBuf>,
    collectors_outside_pods: bool,
    query_ca: Option<std::path::PathBuf>,
    query_cert: Option<std::path::PathBuf>,
    query_key: Option<std::path::PathBuf>,
    query_server_name: String,
}

/// The logs API's settings, its files read; `None` when it is not to be served.
fn logs_api_settings(
    args: &LogsApiArgs,
    namespace: &str,
) -> anyhow::Result<Option<sluice_operator::logs_api::ApiSettings>> {
    let (Some(listen), Some(cert), Some(key), Some(token)) =
        (args.listen, &args.cert_file, &args.key_file, &args.token_file)
    else {
        return Ok(None);
    };
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read the {what} {}", path.display()))
    };
    let token = String::from_utf8(read(token, "query token")?)
        .with_context(|| format!("the query token {} is not text", token.display()))?
        .trim()
        .to_owned();
    anyhow::ensure!(
        token.chars().count() >= 32,
        "the query token in {} has fewer than 32 characters",
        args.token_file
            .as_deref()
            .unwrap_or(std::path::Path::new(""))
            .display()
    );
    let query_client = match (&args.query_ca, &args.query_cert, &args.query_key) {
        (Some(ca), Some(cert), Some(key)) => {
            let config = sluice_api::query_tls::client_config(ca, cert, key).map_err(anyhow::Error::msg)?;
            let name = sluice_api::query_tls::server_name(&args.query_server_name)
                .map_err(|e| anyhow::anyhow!("--collector-query-server-name: {e}"))?;
            sluice_operator::logs::QueryClient::tls(config, name)
        }
        _ => {
            tracing::warn!(
                "the collectors' query APIs are asked over plain HTTP: the query token and the lines cross \
                 the network in clear; pass --collector-query-ca, --collector-query-cert and \
                 --collector-query-key (the chart does)"
            );
            sluice_operator::logs::QueryClient::plain()
        }
    };
    Ok(Some(sluice_operator::logs_api::ApiSettings {
        listen,
        cert_pem: read(cert, "logs API certificate")?,
        key_pem: read(key, "logs API key")?,
        namespace: namespace.to_owned(),
        token,
        query_client,
        front_proxy_refresh: sluice_operator::logs_api::FRONT_PROXY_REFRESH,
        collectors_are_pods: !args.collectors_outside_pods,
    }))
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A collector query TLS file that cannot be used stops the logs API's start, naming the
    /// file (what makes a file unusable, and the messages, are `sluice_api::query_tls`'s); the
    /// three flags come together.
    #[test]
    fn collector_query_tls_files_that_cannot_be_used_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("token"), "t".repeat(40)).unwrap();
        let args = LogsApiArgs {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            cert_file: Some(path("serving.crt")),
            key_file: Some(path("serving.key")),
            token_file: Some(path("token")),
            collectors_outside_pods: false,
            query_ca: Some(path("missing-ca.crt")),
            query_cert: Some(path("c.crt")),
            query_key: Some(path("c.key")),
            query_server_name: sluice_api::query_tls::DEFAULT_SERVER_NAME.into(),
        };
        let missing = logs_api_settings(&args, "sluice").unwrap_err().to_string();
        assert!(
            missing.starts_with(&format!(
                "cannot read the collector query CA {}: ",
                path("missing-ca.crt").display()
            )),
            "{missing}"
        );
        let partial = Args::try_parse_from([
            "sluice-operator",
            "--logs-api-listen=127.0.0.1:0",
            "--logs-api-cert-file=c",
            "--logs-api-key-file=k",
            "--query-token-file=t",
            "--collector-query-ca=a",
        ])
        .unwrap_err()
        .to_string();
        assert!(partial.contains("--collector-query-cert"), "{partial}");
    }
}
