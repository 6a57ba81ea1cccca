//! The running collector: one tail engine, one task per drain, and the config that wires them.
//!
//! Invariants:
//! * A reload swaps the routing table in place. A drain whose config did not change keeps its
//!   task, its connection and its cursors; a changed drain is started anew (with a new
//!   generation, so the engine rewinds its streams to what the old instance acknowledged) and the
//!   old instance is stopped only after the engine no longer sends to it.
//! * A config whose drains cannot be built (a bad certificate, say) is rejected as a whole; the
//!   running config stays.
//! * Shutdown order (SIGTERM): stop reading → drains deliver what is queued and in flight until the
//!   grace deadline → final checkpoint of the acknowledged cursors. Nothing acknowledged is lost,
//!   nothing unacknowledged is counted as delivered.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use sluice_api::{NodeConfig, node_config::DrainConfig};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::{
    drain::{self, DrainContext, RunningDrain},
    engine::{self, EngineHandle, EngineSettings, Routes, Waker},
    metrics::Metrics,
};

/// The collector could not start or apply a config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A drain could not be built from its config.
    #[error("drain {name:?}: {source}")]
    Drain {
        /// The drain.
        name: String,
        /// Why.
        #[source]
        source: drain::Error,
    },
    /// The tail engine could not start.
    #[error("tail engine: {0}")]
    Engine(#[from] engine::Error),
}

/// Settings that do not come from the node config.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the checkpoints live.
    pub state_dir: std::path::PathBuf,
    /// This node's name (syslog HOSTNAME default).
    pub node_name: String,
    /// Where the engine keeps recent lines for queries (none: not kept).
    pub recent: Option<Arc<crate::recent::Recent>>,
}

struct ActiveDrain {
    config: DrainConfig,
    running: RunningDrain,
}

/// The collector while it runs.
pub struct Collector {
    engine: EngineHandle,
    drains: BTreeMap<String, ActiveDrain>,
    config: Arc<NodeConfig>,
    wake: crate::pipeline::Wake,
    metrics: Metrics,
    node_name: String,
    generation: u64,
    recent: Option<Arc<crate::recent::Recent>>,
}

impl Collector {
    /// Start the drains and the tail engine for `config`. Must run inside a tokio runtime.
    pub fn start(settings: Settings, config: Arc<NodeConfig>, metrics: Metrics) -> Result<Self, Error> {
        let waker = Waker::new();
        let node_name = config.node.clone().unwrap_or(settings.node_name);
        let mut collector_drains = BTreeMap::new();
        let mut generation = 0;
        for drain_config in &config.drains {
            generation += 1;
            let running = spawn_drain(drain_config, &node_name, &metrics, waker.wake_fn(), generation)?;
            collector_drains.insert(
                drain_config.name.clone(),
                ActiveDrain {
                    config: drain_config.clone(),
                    running,
                },
            );
        }
        let engine_settings = EngineSettings {
            state_dir: settings.state_dir,
            sources: config.sources.clone(),
            max_line_bytes: config.limits.max_line_bytes,
            node_name: node_name.clone(),
            rescan_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_millis(250),
            read_budget_bytes: 256 * 1024,
            recent: settings.recent.clone(),
        };
        let settings_recent = settings.recent;
        if let Some(recent) = &settings_recent {
            recent.retain_bound(&bound_ids(&config));
        }
        let wake = waker.wake_fn();
        let routes = routes(&config, &collector_drains);
        let engine = engine::start(engine_settings, routes, waker, Arc::new(metrics.clone()))?;
        info!(drains = collector_drains.len(), node = %node_name, "collector started");
        Ok(Self {
            engine,
            drains: collector_drains,
            config,
            wake,
            metrics,
            node_name,
            generation,
            recent: settings_recent,
        })
    }

    /// Apply a new config in place. On error nothing changed.
    pub fn apply(&mut self, config: Arc<NodeConfig>) -> Result<(), Error> {
        crate::config::warn_about_restart_only_changes(&self.config, &config);
        // Build every new or changed drain first, so a bad one leaves everything as it was.
        let mut started = BTreeMap::new();
        for drain_config in &config.drains {
            if self
                .drains
                .get(&drain_config.name)
                .is_some_and(|d| d.config == *drain_config)
            {
                continue;
            }
            self.generation += 1;
            match spawn_drain(
                drain_config,
                &self.node_name,
                &self.metrics,
                Arc::clone(&self.wake),
                self.generation,
            ) {
                Ok(running) => {
                    started.insert(
                        drain_config.name.clone(),
                        ActiveDrain {
                            config: drain_config.clone(),
                            running,
                        },
                    );
                }
                Err(e) => {
                    started.into_values().for_each(|d: ActiveDrain| d.running.abort());
                    return Err(e);
                }
            }
        }
        let mut retired = Vec::new();
        for (name, drain) in started {
            info!(drain = %name, "drain started");
            retired.extend(self.drains.insert(name, drain));
        }
        let wanted: std::collections::BTreeSet<&str> =
            config.drains.iter().map(|d| d.name.as_str()).collect();
        let removed: Vec<String> = self
            .drains
            .keys()
            .filter(|n| !wanted.contains(n.as_str()))
            .cloned()
            .collect();
        for name in removed {
            info!(drain = %name, "drain removed");
            retired.extend(self.drains.remove(&name));
        }
        // The engine stops sending to retired instances once it has the new table; only then stop them.
        self.engine.apply(routes(&config, &self.drains));
        if let Some(recent) = &self.recent {
            recent.retain_bound(&bound_ids(&config));
        }
        for old in retired {
            old.running.abort();
        }
        self.config = config;
        Ok(())
    }

    /// Each drain's owner and delivery state, for health reports.
    pub fn drain_states(&self) -> BTreeMap<String, crate::health::DrainState> {
        self.drains
            .iter()
            .map(|(name, d)| {
                let state = crate::health::DrainState {
                    owner: d.config.owner.clone(),
                    snapshot: d.running.health(),
                };
                (name.clone(), state)
            })
            .collect()
    }

    /// Stop reading, let the drains deliver until `grace` is up, persist the cursors.
    pub async fn shutdown(self, grace: Duration) {
        let deadline = Instant::now() + grace;
        let engine = self.engine;
        let engine = match tokio::task::spawn_blocking(move || {
            engine.stop_reading(deadline);
            engine
        })
        .await
        {
            Ok(engine) => engine,
            Err(e) => {
                warn!(error = %e, "the tail engine did not stop cleanly; cursors as last checkpointed");
                return;
            }
        };
        info!("stopped reading; drains are delivering what is in flight");
        let finishing = self.drains.into_values().map(|d| d.running.finish(deadline));
        futures_util::future::join_all(finishing).await;
        info!("drains finished; saving cursors");
        let result = tokio::task::spawn_blocking(move || {
            let result = engine.write_checkpoint();
            engine.join();
            result
        })
        .await;
        match result {
            Ok(Ok(())) => info!("cursors saved; bye"),
            Ok(Err(e)) => {
                warn!(error = %e, "could not write the final checkpoint; lines since the last one will be sent again")
            }
            Err(e) => warn!(error = %e, "the tail engine panicked while stopping"),
        }
    }
}

fn spawn_drain(
    config: &DrainConfig,
    node_name: &str,
    metrics: &Metrics,
    wake: crate::pipeline::Wake,
    generation: u64,
) -> Result<RunningDrain, Error> {
    let ctx = DrainContext {
        node_name: node_name.to_owned(),
        metrics: metrics.clone(),
        wake,
        generation,
    };
    drain::spawn(config, ctx).map_err(|source| Error::Drain {
        name: config.name.clone(),
        source,
    })
}

/// The runtime ids (without scheme) of the containers a config binds by id.
fn bound_ids(config: &NodeConfig) -> std::collections::HashSet<String> {
    config
        .containers
        .iter()
        .filter_map(|c| match c.runtime_id().ok()? {
            sluice_api::node_config::RuntimeId::Docker(id) | sluice_api::node_config::RuntimeId::Cri(id) => {
                Some(id)
            }
        })
        .collect()
}

fn routes(config: &NodeConfig, drains: &BTreeMap<String, ActiveDrain>) -> Routes {
    Routes {
        drains: drains
            .iter()
            .map(|(name, d)| (name.clone(), d.running.endpoint.clone()))
            .collect(),
        containers: config.containers.clone(),
        selectors: config.selectors.clone(),
    }
}
