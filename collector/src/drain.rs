//! Drains: encoders and transports, one task and one tower stack per drain.
//!
//! The tail engine encodes lines with the drain's encoder ([`syslog`] RFC5424 for syslog drains,
//! [`json`] lines for HTTP drains) into batches and sends them on the drain's bounded channel
//! ([`crate::pipeline::DrainEndpoint`]). The drain's task ([`task`]) sends each batch through the
//! stack ([`stack`]: rate limit → concurrency limit → retry → timeout → transport) and acknowledges
//! batches in order once delivered, which moves the engine's cursors.
//!
//! Delivery semantics per transport:
//! * `syslog://`, `syslog-tls://` ([`stream`]): acknowledged when the peer's TCP stack acknowledged
//!   the bytes (at least once; a repeat is possible only for batches not yet acknowledged when a
//!   connection broke, and carries the same MSGID).
//! * `http(s)://` ([`http`]): acknowledged on a 2xx response (at least once).
//! * `syslog-udp://` ([`udp`]): acknowledged when handed to the kernel (at most once on the wire).
//!
//! Invariants: [`spawn`] validates everything (URL, templates, TLS material, headers) and fails
//! with an error naming the drain, but never connects; connecting happens in the drain's task, with
//! backoff, so a destination that is down does not stop the collector from starting.

pub mod backoff;
pub mod destinations;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod http;
pub mod json;
pub mod retry;
pub mod stack;
pub mod stream;
pub mod syslog;
pub mod task;
pub mod template;
pub mod text;
pub mod tls;
pub mod udp;

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use sluice_api::node_config::{DrainConfig, DrainKind};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tokio_rustls::TlsConnector;
use tower::util::BoxCloneService;

use self::{
    backoff::Backoff,
    retry::Health,
    stack::Transport,
    syslog::{Framing, SyslogEncoder, SyslogSpec},
};
use crate::{
    metrics::Metrics,
    pipeline::{DrainEndpoint, Encoder, EncoderFactory, Wake},
};

/// Where a drain was found unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipStage {
    /// Reading the config: the drain's entry does not parse or validate.
    Config,
    /// Starting the drain: its settings cannot be used (an unreadable CA file, a bad template…).
    Build,
}

/// The drains of the current config that are not running, and why: one bad drain is that drain's
/// problem only, so it is left out, logged, counted (a gauge) and listed on `/readyz`, while every
/// other drain runs.
#[derive(Clone, Debug)]
pub struct SkippedDrains {
    by_stage: Arc<std::sync::Mutex<BTreeMap<(SkipStage, String), String>>>,
    gauge: prometheus::IntGauge,
}

impl SkippedDrains {
    /// An empty list reported through `gauge`.
    pub fn new(gauge: prometheus::IntGauge) -> Self {
        Self {
            by_stage: Arc::default(),
            gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(SkipStage, String), String>> {
        // Plain data replaced in one step: a panic elsewhere cannot leave it torn.
        self.by_stage.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Replace what `stage` found with `skipped` (drain name → why).
    pub fn set(&self, stage: SkipStage, skipped: impl IntoIterator<Item = (String, String)>) {
        let mut map = self.lock();
        map.retain(|(s, _), _| *s != stage);
        map.extend(skipped.into_iter().map(|(drain, why)| ((stage, drain), why)));
        self.gauge.set(i64::try_from(map.len()).unwrap_or(i64::MAX));
    }

    /// What `stage` found (drain name, why).
    pub fn list_stage(&self, stage: SkipStage) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .filter(|((s, _), _)| *s == stage)
            .map(|((_, drain), why)| (drain.clone(), why.clone()))
            .collect()
    }

    /// Every skipped drain and why, by name.
    pub fn list(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|((_, drain), why)| (drain.clone(), why.clone()))
            .collect()
    }
}

/// How many batches the channel from the engine holds.
pub const CHANNEL_BATCHES: usize = 4;

/// A drain cannot be started with its config.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL does not parse.
    #[error("drain {drain:?}: url: {source}")]
    Url {
        /// The drain.
        drain: String,
        /// What is wrong.
        source: sluice_api::node_config::UrlError,
    },
    /// A syslog template does not parse.
    #[error("drain {drain:?}: invalid syslog format")]
    Template {
        /// The drain.
        drain: String,
        /// What is wrong.
        #[source]
        source: Box<template::Error>,
    },
    /// The TLS settings cannot be used.
    #[error("drain {drain:?}: invalid TLS settings")]
    Tls {
        /// The drain.
        drain: String,
        /// What is wrong.
        #[source]
        source: Box<tls::Error>,
    },
    /// The HTTP URL cannot be used as a request URI.
    #[error("drain {drain:?}: url: {source}")]
    HttpUri {
        /// The drain.
        drain: String,
        /// What is wrong.
        source: ::http::uri::InvalidUri,
    },
    /// The HTTP headers or credentials cannot be used.
    #[error("drain {drain:?}: {source}")]
    Http {
        /// The drain.
        drain: String,
        /// What is wrong.
        source: http::HeaderError,
    },
}

/// What a drain needs from the collector around it.
#[derive(Clone)]
pub struct DrainContext {
    /// This node's name (the default syslog HOSTNAME comes from the container metadata's `node`).
    pub node_name: String,
    /// The collector's metrics.
    pub metrics: Metrics,
    /// Called when the drain took a batch off its channel.
    pub wake: Wake,
    /// The drain's generation (see [`DrainEndpoint::generation`]).
    pub generation: u64,
    /// Which addresses the drain may connect to.
    pub destinations: Arc<destinations::Destinations>,
    /// Told when the drain's task dies (a panic: a bug), so the collector can start it again
    /// from what it acknowledged; `None`: nobody restarts it.
    pub died: Option<mpsc::UnboundedSender<Death>>,
}

/// A drain task that died.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Death {
    /// The drain.
    pub drain: String,
    /// The generation of the instance that died.
    pub generation: u64,
}

/// Run `task`; if it panics, log it and report the death on `died`. The batches it had taken
/// but not acknowledged are then neither delivered nor acknowledged: the collector must start
/// the drain anew (a new generation), so the engine reads them again from the cursors.
async fn supervised(
    death: Death,
    died: Option<mpsc::UnboundedSender<Death>>,
    task: impl Future<Output = ()>,
) {
    use futures_util::FutureExt as _;
    let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await else {
        return;
    };
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    tracing::error!(drain = %death.drain, panic = %what, "the drain's task died; it is started again from what it acknowledged");
    if let Some(died) = died {
        let _ = died.send(death);
    }
}

/// A running drain: its endpoint for the engine, and the handle of its task.
pub struct RunningDrain {
    /// What the engine feeds.
    pub endpoint: DrainEndpoint,
    health: Arc<Health>,
    task: JoinHandle<()>,
    finish: watch::Sender<Option<Instant>>,
}

impl RunningDrain {
    /// The drain's delivery health (failing or not, last error, last success), for status reports.
    pub fn health(&self) -> retry::HealthSnapshot {
        self.health.snapshot()
    }

    /// The engine stopped sending: deliver what is queued or in flight until `deadline`, then give
    /// up (batches not acknowledged by then stay unacknowledged; their lines are read again later).
    pub async fn finish(self, deadline: Instant) {
        let Self {
            endpoint,
            mut task,
            finish,
            ..
        } = self;
        drop(endpoint);
        let _ = finish.send(Some(deadline));
        // The task returns by the deadline by itself; the margin only covers scheduling.
        if tokio::time::timeout_at(deadline + Duration::from_millis(100), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }

    /// Stop now (the drain's config changed or it was removed); acknowledge nothing more.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// Validate `config` and start the drain's task. Must be called inside a tokio runtime.
pub fn spawn(config: &DrainConfig, ctx: DrainContext) -> Result<RunningDrain, Error> {
    let drain = config.name.clone();
    let kind = config.kind().map_err(|source| Error::Url {
        drain: drain.clone(),
        source,
    })?;
    let health = Arc::new(Health::new(&drain, ctx.metrics.clone()));
    let (new_encoder, transport, in_flight) = parts(config, &kind, &ctx)?;
    // Stream drains time out on progress inside the connection, HTTP drains per request (see
    // [`stream`], [`http`]); only UDP sends are limited per attempt.
    let attempt_timeout = match kind {
        DrainKind::SyslogUdp { .. } => Some(Duration::from_millis(config.delivery.timeout_ms)),
        _ => None,
    };
    let service = stack::build(
        transport,
        &config.delivery,
        attempt_timeout,
        in_flight,
        Arc::clone(&health),
    );
    ctx.metrics.drain_started(&drain);
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    let (finish, finish_rx) = watch::channel(None);
    let death = Death {
        drain: drain.clone(),
        generation: ctx.generation,
    };
    let run = task::DrainTask {
        rx,
        service,
        health: Arc::clone(&health),
        wake: ctx.wake,
        finish: finish_rx,
    }
    .run();
    let task = tokio::spawn(supervised(death, ctx.died, run));
    let endpoint = DrainEndpoint {
        name: drain,
        generation: ctx.generation,
        batches: tx,
        new_encoder,
        batch_max_lines: config.delivery.batch_max_lines,
        batch_max_bytes: config.delivery.batch_max_bytes,
    };
    Ok(RunningDrain {
        endpoint,
        health,
        task,
        finish,
    })
}

/// The encoder factory, the transport and how many batches may be in flight, for `kind`.
fn parts(
    config: &DrainConfig,
    kind: &DrainKind,
    ctx: &DrainContext,
) -> Result<(EncoderFactory, Transport, usize), Error> {
    let metrics = &ctx.metrics;
    Ok(match kind {
        DrainKind::SyslogTcp { host, port } | DrainKind::SyslogTls { host, port } => {
            let encoder = syslog_encoder(config, Framing::OctetCounting)?;
            let tls = match kind {
                DrainKind::SyslogTls { .. } => Some(tls_connector(config, host)?),
                _ => None,
            };
            let target = stream::Target {
                host: host.clone(),
                port: *port,
                tls,
                connect_timeout: Duration::from_millis(config.delivery.timeout_ms),
                idle_timeout: Duration::from_millis(config.delivery.timeout_ms),
                destinations: Arc::clone(&ctx.destinations),
            };
            let backoff =
                Backoff::from_millis(config.delivery.retry_initial_ms, config.delivery.retry_max_ms);
            let transport: Transport = BoxCloneService::new(stream::StreamService::spawn(target, backoff));
            (encoder, transport, 4)
        }
        DrainKind::SyslogUdp { host, port } => {
            let oversize = &metrics.udp_oversize;
            let framing = Framing::Datagram {
                max: config.syslog.max_datagram_bytes as usize,
                oversize: config.syslog.udp_oversize,
                split: oversize.with_label_values(&[config.name.as_str(), "split"]),
                truncated: oversize.with_label_values(&[config.name.as_str(), "truncate"]),
            };
            let transport: Transport = BoxCloneService::new(udp::UdpService::new(
                host.clone(),
                *port,
                Arc::clone(&ctx.destinations),
            ));
            (syslog_encoder(config, framing)?, transport, 1)
        }
        DrainKind::Http { url, tls } => {
            let factory: EncoderFactory = Arc::new(|| Box::new(json::JsonEncoder::new()) as Box<dyn Encoder>);
            let destinations = Arc::clone(&ctx.destinations);
            (factory, http_transport(config, url, *tls, destinations)?, 4)
        }
    })
}

fn syslog_encoder(config: &DrainConfig, framing: Framing) -> Result<EncoderFactory, Error> {
    let spec = SyslogSpec::new(&config.syslog, framing).map_err(|source| Error::Template {
        drain: config.name.clone(),
        source: Box::new(source),
    })?;
    Ok(Arc::new(move || {
        Box::new(SyslogEncoder::new(spec.clone())) as Box<dyn Encoder>
    }))
}

fn warn_if_insecure(config: &DrainConfig) {
    if config.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
        tracing::warn!(drain = %config.name, "TLS certificate verification is OFF for this drain (insecureSkipVerify)");
    }
}

fn tls_connector(
    config: &DrainConfig,
    host: &str,
) -> Result<(TlsConnector, rustls_pki_types::ServerName<'static>), Error> {
    let err = |source| Error::Tls {
        drain: config.name.clone(),
        source: Box::new(source),
    };
    let client = tls::client_config(config.tls.as_ref()).map_err(err)?;
    let name = tls::server_name(config.tls.as_ref(), host).map_err(err)?;
    warn_if_insecure(config);
    Ok((TlsConnector::from(Arc::new(client)), name))
}

fn http_transport(
    config: &DrainConfig,
    url: &str,
    https: bool,
    destinations: Arc<destinations::Destinations>,
) -> Result<Transport, Error> {
    let uri: ::http::Uri = url.parse().map_err(|source| Error::HttpUri {
        drain: config.name.clone(),
        source,
    })?;
    let headers = http::headers(config.http.as_ref()).map_err(|source| Error::Http {
        drain: config.name.clone(),
        source,
    })?;
    let client = tls::client_config(config.tls.as_ref()).map_err(|source| Error::Tls {
        drain: config.name.clone(),
        source: Box::new(source),
    })?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client)
        .https_or_http();
    let builder = match config.tls.as_ref().and_then(|t| t.server_name.as_deref()) {
        Some(name) if https => {
            let name = tls::server_name(config.tls.as_ref(), name).map_err(|source| Error::Tls {
                drain: config.name.clone(),
                source: Box::new(source),
            })?;
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        }
        _ => builder,
    };
    if https {
        warn_if_insecure(config);
    }
    let connector = builder
        .enable_http1()
        .wrap_connector(http::GuardedConnector::new(destinations));
    let gzip = config.http.as_ref().is_some_and(|h| h.gzip);
    Ok(BoxCloneService::new(http::HttpService::new(
        url.split(['?', '#']).next().unwrap_or(url).to_owned(), // a query may carry an API key: never shown
        uri,
        headers,
        gzip,
        &config.delivery.drop_on_status,
        Duration::from_millis(config.delivery.timeout_ms),
        connector,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_is_reported_with_its_generation() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let death = Death {
            drain: "d".into(),
            generation: 7,
        };
        supervised(death.clone(), Some(tx.clone()), async { panic!("a bug") }).await;
        assert_eq!(rx.try_recv(), Ok(death.clone()));
        supervised(death, Some(tx), async {}).await;
        assert!(rx.try_recv().is_err(), "a task that ends normally did not die");
    }
}
