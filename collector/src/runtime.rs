//! The running collector: one tail engine, one task per drain, and the config that wires them.
//!
//! Invariants:
//! * A reload swaps the routing table in place. A drain whose config did not change keeps its
//!   task, its connection and its cursors; a changed drain is started anew (with a new
//!   generation, so the engine rewinds its streams to what the old instance acknowledged) and the
//!   old instance is stopped only after the engine no longer sends to it.
//! * Drains are planned and started one by one: a drain whose plan cannot be made (an unreadable
//!   CA file, say; starting from a plan cannot fail) is left out, logged, and listed in [`Metrics::skipped_drains`] (the `drains_skipped` gauge and
//!   `/readyz`), while every other drain of the config runs. A bad drain never stops the collector
//!   from starting or a config from applying.
//! * A drain whose task dies (a panic: a bug) is started again as a new generation, so the engine
//!   rewinds it to what it acknowledged: nothing it had taken is skipped. Counted per drain.
//! * A drain that leaves the config leaves no metric series behind.
//! * Shutdown order (SIGTERM): stop reading → drains deliver what is queued and in flight until the
//!   grace deadline → final checkpoint of the acknowledged cursors. Nothing acknowledged is lost,
//!   nothing unacknowledged is counted as delivered.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use sluice_api::{
    NodeConfig,
    node_config::{ConfigError, DrainConfig},
};
use tokio::{sync::mpsc, time::Instant};
use tracing::{error, info, warn};

use crate::{
    drain::{self, Death, DrainContext, RunningDrain, SkipStage, destinations::Destinations},
    engine::{self, EngineHandle, EngineSettings, Routes, Waker},
    metrics::Metrics,
};

/// The collector could not start or apply a config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    /// Which addresses drains may connect to.
    pub destinations: Arc<Destinations>,
    /// Where the engine keeps recent lines for queries (none: not kept).
    pub recent: Option<Arc<crate::recent::Recent>>,
}

struct ActiveDrain {
    config: DrainConfig,
    running: RunningDrain,
}

/// What every drain is started with.
struct Spawner {
    node_name: String,
    metrics: Metrics,
    wake: crate::pipeline::Wake,
    died: mpsc::UnboundedSender<Death>,
    destinations: Arc<Destinations>,
    /// The last generation handed out.
    generation: u64,
}

impl Spawner {
    /// Start `config` as a new generation; a drain whose plan fails (a file its TLS settings name
    /// cannot be read or used) is logged and returned as (name, why).
    fn spawn(&mut self, config: &DrainConfig) -> Result<ActiveDrain, (String, String)> {
        self.generation += 1;
        let plan = config.plan().map_err(|e| {
            let why = match e {
                ConfigError::Invalid { field, message } => format!("drain {:?}: {field}: {message}", config.name),
                other => format!("drain {:?}: {other}", config.name),
            };
            error!(drain = %config.name, error = %why, "drain skipped: its settings cannot be used; the other drains run");
            (config.name.clone(), why)
        })?;
        let ctx = DrainContext {
            node_name: self.node_name.clone(),
            metrics: self.metrics.clone(),
            wake: Arc::clone(&self.wake),
            generation: self.generation,
            destinations: Arc::clone(&self.destinations),
            died: Some(self.died.clone()),
        };
        Ok(ActiveDrain {
            config: config.clone(),
            running: drain::spawn(&plan, ctx),
        })
    }
}

/// The collector while it runs.
pub struct Collector {
    engine: EngineHandle,
    drains: BTreeMap<String, ActiveDrain>,
    config: Arc<NodeConfig>,
    spawner: Spawner,
    deaths: mpsc::UnboundedReceiver<Death>,
    recent: Option<Arc<crate::recent::Recent>>,
}

impl Collector {
    /// Start the drains (skipping those that cannot be built) and the tail engine for `config`.
    /// Must run inside a tokio runtime.
    pub fn start(settings: Settings, config: Arc<NodeConfig>, metrics: Metrics) -> Result<Self, Error> {
        let waker = Waker::new();
        let node_name = config.node.clone().unwrap_or(settings.node_name);
        let (died, deaths) = mpsc::unbounded_channel();
        let mut spawner = Spawner {
            node_name: node_name.clone(),
            metrics: metrics.clone(),
            wake: waker.wake_fn(),
            died,
            destinations: settings.destinations,
            generation: 0,
        };
        let mut drains = BTreeMap::new();
        let mut skipped = Vec::new();
        for drain_config in &config.drains {
            match spawner.spawn(drain_config) {
                Ok(active) => {
                    drains.insert(drain_config.name.clone(), active);
                }
                Err(skip) => skipped.push(skip),
            }
        }
        metrics.skipped_drains.set(SkipStage::Build, skipped);
        let engine_settings = EngineSettings {
            state_dir: settings.state_dir,
            sources: config.sources.clone(),
            max_line_bytes: config.limits.max_line_bytes,
            node_name: node_name.clone(),
            rescan_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_millis(250),
            read_budget_bytes: 256 * 1024,
            unterminated_quiet: Duration::from_secs(5),
            rotate_wait: Duration::from_secs(5),
            recent: settings.recent.clone(),
        };
        let recent = settings.recent;
        if let Some(recent) = &recent {
            recent.retain_bound(&bound_ids(&config));
        }
        let routes = routes(&config, &drains);
        let engine = engine::start(engine_settings, routes, waker, Arc::new(metrics))?;
        info!(drains = drains.len(), node = %node_name, "collector started");
        Ok(Self {
            engine,
            drains,
            config,
            spawner,
            deaths,
            recent,
        })
    }

    /// Apply a new config in place; drains that cannot be built are skipped (see the module docs).
    pub fn apply(&mut self, config: Arc<NodeConfig>) -> Result<(), Error> {
        crate::config::warn_about_restart_only_changes(&self.config, &config);
        // Start every new or changed drain; one whose plan cannot be made is left out (and an older
        // instance of it retired), the others go on.
        let mut started = BTreeMap::new();
        let mut skipped = Vec::new();
        for drain_config in &config.drains {
            if self
                .drains
                .get(&drain_config.name)
                .is_some_and(|d| d.config == *drain_config)
            {
                continue;
            }
            match self.spawner.spawn(drain_config) {
                Ok(active) => {
                    started.insert(drain_config.name.clone(), active);
                }
                Err(skip) => skipped.push(skip),
            }
        }
        let wanted: BTreeSet<&str> = config
            .drains
            .iter()
            .map(|d| d.name.as_str())
            .filter(|name| !skipped.iter().any(|(s, _)| s == name))
            .collect();
        self.spawner
            .metrics
            .skipped_drains
            .set(SkipStage::Build, skipped.clone());
        let mut retired = Vec::new();
        for (name, drain) in started {
            info!(drain = %name, "drain started");
            retired.extend(self.drains.insert(name, drain));
        }
        let removed: Vec<String> = self
            .drains
            .keys()
            .filter(|n| !wanted.contains(n.as_str()))
            .cloned()
            .collect();
        for name in &removed {
            info!(drain = %name, "drain removed");
            retired.extend(self.drains.remove(name));
        }
        // The engine stops sending to retired instances once it has the new table; only then stop them.
        self.engine.apply(routes(&config, &self.drains));
        if let Some(recent) = &self.recent {
            recent.retain_bound(&bound_ids(&config));
        }
        for old in retired {
            old.running.abort();
        }
        for name in &removed {
            self.spawner.metrics.forget_drain(name);
        }
        self.config = config;
        Ok(())
    }

    /// The running drains and their generations.
    pub fn drains(&self) -> Vec<(String, u64)> {
        self.drains
            .iter()
            .map(|(name, d)| (name.clone(), d.running.endpoint.generation))
            .collect()
    }

    /// The next drain task that died (for [`Collector::restart_drain`]); pending while none did.
    pub async fn next_death(&mut self) -> Death {
        match self.deaths.recv().await {
            Some(death) => death,
            // The collector holds a sender itself: the channel never closes.
            None => std::future::pending().await,
        }
    }

    /// Start a drain whose task died anew, as a new generation: the engine rewinds the drain's
    /// streams to what it acknowledged, so what the dead task had taken is read and sent again
    /// (at least once; nothing is skipped). Counted in `drain_restarts_total`.
    pub fn restart_drain(&mut self, death: &Death) {
        let Some(active) = self.drains.get(&death.drain) else {
            return; // removed meanwhile
        };
        if active.running.endpoint.generation != death.generation {
            return; // replaced meanwhile
        }
        let config = active.config.clone();
        self.spawner
            .metrics
            .drain_restarts
            .with_label_values(&[death.drain.as_str()])
            .inc();
        let retired = match self.spawner.spawn(&config) {
            Ok(active) => self.drains.insert(death.drain.clone(), active),
            Err(skip) => {
                let mut skipped = self.spawner.metrics.skipped_drains.list_stage(SkipStage::Build);
                skipped.push(skip);
                self.spawner.metrics.skipped_drains.set(SkipStage::Build, skipped);
                self.drains.remove(&death.drain)
            }
        };
        info!(drain = %death.drain, "drain restarted after its task died");
        self.engine.apply(routes(&self.config, &self.drains));
        if let Some(old) = retired {
            old.running.abort();
        }
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
