//! This node's config from its Secret, and the saved copy it falls back on.
//!
//! Invariants:
//! * Exactly one object is watched: a field selector on `metadata.name=sluice-node-<node>` in the
//!   sluice namespace (never a list of every node's config).
//! * Only a config that parses and validates is handed on; a bad one is logged, counted
//!   (`config_reloads_total{result="rejected"}`), shown on `/readyz`, and the running config
//!   stays. The same content is never handed on twice (compared on the parsed value).
//! * No Secret means nothing on this node is bound: an empty config (no drains) is handed on.
//! * The watch reconnects with jittered exponential backoff for as long as the process runs.
//! * [`save`] keeps the last config that was applied under the state dir (temp file, fsync,
//!   rename, directory fsync; mode 0600, since drains carry credentials); [`load_saved`] reads it
//!   back when the collector starts.

use std::{path::Path, sync::Arc};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    runtime::{WatchStreamExt as _, watcher},
};
use sluice_api::NodeConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::Identity;
use crate::{metrics::Metrics, server::ConfigState};

/// The key of the node config in its Secret.
pub const KEY: &str = "config.yaml";
const SAVED: &str = "node-config.yaml";

/// The name of `node`'s config Secret (what the operator writes).
pub fn secret_name(node: &str) -> String {
    format!("sluice-node-{node}")
}

/// The config saved by an earlier run, if there is a valid one.
pub fn load_saved(state_dir: &Path) -> Option<NodeConfig> {
    let path = state_dir.join(SAVED);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the saved node config");
            return None;
        }
    };
    match NodeConfig::from_yaml(&text) {
        Ok(config) => Some(config),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "the saved node config is not valid; ignoring it");
            None
        }
    }
}

/// Save `config` as the last good one.
pub fn save(state_dir: &Path, config: &NodeConfig) -> std::io::Result<()> {
    let text = serde_yaml::to_string(config).map_err(std::io::Error::other)?;
    crate::health::write_atomically(&state_dir.join(SAVED), text.as_bytes())
}

/// The config of a node with nothing bound: no drains.
pub fn empty(node: &str) -> NodeConfig {
    NodeConfig {
        version: sluice_api::node_config::CURRENT_VERSION,
        node: Some(node.to_owned()),
        ..NodeConfig::default()
    }
}

/// What to make of one state of the Secret. A drain that does not parse or validate (rendered
/// by an older operator, say) is left out and listed; the rest of the node's drains run.
fn parse(secret: Option<&Secret>, node: &str) -> Result<crate::config::Loaded, String> {
    let Some(secret) = secret else {
        return Ok(crate::config::Loaded {
            config: empty(node),
            skipped: Vec::new(),
        });
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY))
        .map(|b| b.0.as_slice())
        .ok_or_else(|| format!("the Secret has no {KEY:?} key"))?;
    let text = std::str::from_utf8(bytes).map_err(|_| format!("{KEY} is not UTF-8"))?;
    let origin = format!(
        "Secret {}/{}",
        secret.metadata.namespace.as_deref().unwrap_or_default(),
        secret.metadata.name.as_deref().unwrap_or_default()
    );
    crate::config::parse(Path::new(&origin), text).map_err(|e| e.to_string())
}

/// Watch this node's Secret until `cancel`, publishing each new valid config (after `fit`, which
/// sets what the node decides rather than the operator, such as where logs live) on `tx`.
pub async fn watch(
    client: kube::Client,
    identity: Identity,
    fit: impl Fn(NodeConfig) -> NodeConfig,
    tx: watch::Sender<Option<Arc<NodeConfig>>>,
    state: ConfigState,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    let name = secret_name(&identity.node);
    let api: Api<Secret> = Api::namespaced(client, &identity.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    info!(secret = %format!("{}/{name}", identity.namespace), "watching this node's config Secret");
    // The object seen during a (re)list, settled at InitDone.
    let mut listed: Option<Secret> = None;
    let mut last_problem: Option<String> = None;
    loop {
        let event = tokio::select! {
            () = cancel.cancelled() => return,
            event = events.next() => event,
        };
        let seen: Option<Option<Secret>> = match event {
            None => return,
            Some(Err(e)) => {
                // The stream backs off by itself before it tries again.
                let message = e.to_string();
                if state.api_error(Some(message.clone())) {
                    warn!(error = %message, "cannot watch the node config; the running config stays in force");
                }
                metrics.api_errors.with_label_values(&["watch"]).inc();
                continue;
            }
            Some(Ok(watcher::Event::Init)) => {
                listed = None;
                None
            }
            Some(Ok(watcher::Event::InitApply(s))) => {
                listed = Some(s);
                None
            }
            Some(Ok(watcher::Event::InitDone)) => Some(listed.take()),
            Some(Ok(watcher::Event::Apply(s))) => Some(Some(s)),
            Some(Ok(watcher::Event::Delete(_))) => Some(None),
        };
        if state.api_error(None) {
            info!("watching the node config again");
        }
        let Some(secret) = seen else { continue };
        match parse(secret.as_ref(), &identity.node) {
            Ok(loaded) => {
                last_problem = None;
                state.set_rejected(None);
                loaded.log_skipped();
                metrics
                    .skipped_drains
                    .set(crate::drain::SkipStage::Config, loaded.skipped);
                let config = fit(loaded.config);
                if tx.borrow().as_deref() != Some(&config) {
                    info!(
                        drains = config.drains.len(),
                        containers = config.containers.len(),
                        "node config changed; applying"
                    );
                    tx.send_replace(Some(Arc::new(config)));
                }
            }
            Err(problem) => {
                let message = format!("Secret {}/{name}: {problem}", identity.namespace);
                if last_problem.as_deref() != Some(message.as_str()) {
                    error!(error = %message, "node config rejected; the last good config keeps running");
                    metrics.config_reloads.with_label_values(&["rejected"]).inc();
                    state.set_rejected(Some(message.clone()));
                    last_problem = Some(message);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_secret_means_no_drains_and_a_bad_drain_is_left_out_naming_the_field() {
        let empty = parse(None, "n1").expect("empty config").config;
        assert!(empty.drains.is_empty() && empty.containers.is_empty());
        let secret = |text: &str| Secret {
            data: Some(
                [(KEY.to_owned(), k8s_openapi::ByteString(text.as_bytes().to_vec()))]
                    .into_iter()
                    .collect(),
            ),
            ..Secret::default()
        };
        // One bad drain (an older operator's rendering, say) is left out; the good one runs.
        let loaded = parse(
            Some(&secret(
                "version: 1\ndrains:\n  - name: a\n    url: gopher://x:1\n  - name: b\n    url: syslog://x:514\n",
            )),
            "n1",
        )
        .expect("the good drain runs");
        assert_eq!(loaded.config.drains.len(), 1);
        assert_eq!(loaded.skipped.len(), 1);
        assert!(
            loaded.skipped[0].1.contains("drains[0].url"),
            "{:?}",
            loaded.skipped
        );
        // A config that is wrong as a whole is rejected.
        let bad = parse(Some(&secret("version: 9\n")), "n1").expect_err("bad version");
        assert!(bad.contains("version"), "{bad}");
        assert!(parse(Some(&Secret::default()), "n1").is_err());
    }

    #[test]
    fn the_saved_config_round_trips_privately() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load_saved(dir.path()).is_none());
        let config =
            NodeConfig::from_yaml("version: 1\ndrains:\n  - name: a\n    url: syslog://127.0.0.1:514\n")
                .expect("valid");
        save(dir.path(), &config).expect("save");
        assert_eq!(load_saved(dir.path()), Some(config));
        let meta = std::fs::metadata(dir.path().join(SAVED)).expect("saved");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
    }
}
