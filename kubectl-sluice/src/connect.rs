//! From kubectl's flags to a client and a namespace, and from API errors to the failures a user
//! (and a script, by exit code) can act on.

use anyhow::Result;
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};

use crate::cli::Global;

/// A failure with its own exit code (see the `--help` text).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// No kubeconfig, an unknown context, or an API server that does not answer.
    #[error("{0}")]
    NoCluster(String),
    /// The API server refused the request.
    #[error("{0}")]
    Forbidden(String),
    /// The named object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The sluice.dev CRDs are absent.
    #[error("{0}")]
    NotInstalled(String),
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::NoCluster(_) => 3,
            Failure::Forbidden(_) => 4,
            Failure::NotFound(_) => 5,
            Failure::NotInstalled(_) => 6,
        }
    }
}

/// A connected client and the namespace the flags select.
pub struct Target {
    /// The client.
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
    /// The API server's URL, for messages.
    pub server: String,
    /// The configuration the client was built from (a follow builds one without read timeout).
    pub config: Config,
}

/// Build a client the way kubectl would from these flags.
pub async fn connect(global: &Global) -> Result<Target> {
    let options = KubeConfigOptions {
        context: global.context.clone(),
        ..KubeConfigOptions::default()
    };
    let kubeconfig = match &global.kubeconfig {
        Some(path) => Some(
            Kubeconfig::read_from(path)
                .map_err(|e| Failure::NoCluster(format!("cannot read kubeconfig {}: {e}", path.display())))?,
        ),
        // An explicit $KUBECONFIG that cannot be read is an error, not a reason to look elsewhere.
        None => match Kubeconfig::read() {
            Ok(kubeconfig) => Some(kubeconfig),
            Err(e) if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty()) => {
                return Err(Failure::NoCluster(format!("cannot read $KUBECONFIG: {e}")).into());
            }
            Err(_) => None,
        },
    };
    let mut config = match kubeconfig {
        Some(kubeconfig) => Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| Failure::NoCluster(format!("cannot use the kubeconfig: {e}")))?,
        None if global.context.is_some() => {
            return Err(Failure::NoCluster("--context given, but no kubeconfig found".into()).into());
        }
        None => Config::incluster().map_err(|_| {
            Failure::NoCluster(
                "no cluster: no kubeconfig found (set KUBECONFIG or pass --kubeconfig) and not running in a pod"
                    .into(),
            )
        })?,
    };
    config.connect_timeout = Some(std::time::Duration::from_secs(10));
    let server = config.cluster_url.to_string();
    let namespace = global
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config.clone())
        .map_err(|e| Failure::NoCluster(format!("cannot build a client for {server}: {e}")))?;
    Ok(Target {
        client,
        namespace,
        server,
        config,
    })
}

impl Target {
    /// Turn an API error about `what` into a failure a user can act on. `crd` says that `what`
    /// is a sluice.dev resource, so a 404 on a listing means sluice is not installed.
    pub fn explain_error(&self, error: kube::Error, what: &str, crd: bool) -> anyhow::Error {
        match error {
            kube::Error::Api(status) => match status.code {
                401 => Failure::Forbidden(format!(
                    "the API server at {} rejected your credentials ({}) while reading {what}",
                    self.server, status.message
                ))
                .into(),
                403 => Failure::Forbidden(format!("you may not read {what}: {}", status.message)).into(),
                404 if crd => Failure::NotInstalled(format!(
                    "sluice is not installed on {}: the API server does not serve {what} \
                     (the sluice.dev CRDs are absent; install the sluice chart)",
                    self.server
                ))
                .into(),
                404 => Failure::NotFound(format!("{what} not found")).into(),
                _ => anyhow::anyhow!("reading {what}: {} ({})", status.message, status.code),
            },
            e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => Failure::NoCluster(format!(
                "cannot reach the API server at {}: {}",
                self.server,
                chain(&e)
            ))
            .into(),
            e => anyhow::anyhow!("reading {what}: {}", chain(&e)),
        }
    }
}

/// An error and its causes on one line.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
