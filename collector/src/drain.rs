//! Drains: encoders and transports, one task and one tower stack per drain.
//!
//! The tail engine encodes lines with the drain's encoder ([`syslog`] RFC5424 for syslog drains,
//! [`json`] lines for HTTP drains) into batches and sends them on the drain's bounded channel
//! ([`crate::pipeline::DrainEndpoint`]). The drain's task ([`task`]) sends each batch through the
//! stack ([`stack`]: rate limit → concurrency limit → retry → timeout → transport) and acknowledges
//! batches in order once delivered, which moves the engine's cursors.
//!
//! Delivery semantics per transport:
//! * `syslog://`, `syslog-tls://` ([`tcp`]): acknowledged when the peer's TCP stack acknowledged
//!   the bytes (at least once; a repeat is possible only for batches not yet acknowledged when a
//!   connection broke, and carries the same MSGID).
//! * `http(s)://` ([`http`]): acknowledged on a 2xx response (at least once).
//! * `syslog-udp://` ([`udp`]): acknowledged when handed to the kernel (at most once on the wire).
//!
//! Invariants: a drain is started from its [`DrainPlan`], in which `sluice-api` checked and parsed
//! everything (URL, templates, TLS material, headers; see [`DrainConfig::plan`]), so [`spawn`]
//! cannot fail. It never connects: connecting happens in the drain's task, with backoff, so a
//! destination that is down does not stop the collector from starting.
//!
//! [`DrainConfig::plan`]: sluice_api::node_config::DrainConfig::plan

pub mod backoff;
pub mod destinations;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod http;
pub mod json;
pub mod retry;
pub mod stack;
pub mod syslog;
pub mod task;
pub mod tcp;
pub mod template;
pub mod text;
pub mod tls;
pub mod udp;

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use sluice_api::node_config::{
    ClientTls, DeliveryOptions, DrainPlan, HttpPlan, SyslogPlan, TransportPlan, Trust,
};
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
    /// Starting the drain: its plan cannot be made because a file its TLS settings name cannot be
    /// read or used (everything else was checked at [`SkipStage::Config`]).
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

/// Start the drain of `plan` (its settings were checked into it: nothing here can fail). Must
/// be called inside a tokio runtime; connecting happens later, in the drain's task.
pub fn spawn(plan: &DrainPlan, ctx: DrainContext) -> RunningDrain {
    let drain = plan.name.clone();
    let delivery = &plan.delivery;
    let health = Arc::new(Health::new(&drain, ctx.metrics.clone()));
    let (new_encoder, transport, in_flight) = parts(plan, &ctx);
    // TCP drains time out on progress inside the connection, HTTP drains per request (see
    // [`tcp`], [`http`]); only UDP sends are limited per attempt.
    let attempt_timeout = match plan.transport {
        TransportPlan::Udp(_) => Some(Duration::from_millis(delivery.timeout_ms)),
        _ => None,
    };
    let service = stack::build(
        transport,
        delivery,
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
        batch_max_lines: delivery.batch_max_lines,
        batch_max_bytes: delivery.batch_max_bytes,
    };
    RunningDrain {
        endpoint,
        health,
        task,
        finish,
    }
}

/// The encoder factory, the transport and how many batches may be in flight, for `plan`.
fn parts(plan: &DrainPlan, ctx: &DrainContext) -> (EncoderFactory, Transport, usize) {
    let delivery = &plan.delivery;
    let timeout = Duration::from_millis(delivery.timeout_ms);
    match &plan.transport {
        TransportPlan::Tcp(tcp) => {
            let tls = tcp.tls.as_ref().map(|tls| {
                warn_if_insecure(&plan.name, &tls.client);
                let config = Arc::new(tls::client_config(&tls.client));
                (TlsConnector::from(config), tls.server_name.clone())
            });
            let target = tcp::Target {
                host: tcp.host.clone(),
                port: tcp.port,
                tls,
                connect_timeout: timeout,
                idle_timeout: timeout,
                destinations: Arc::clone(&ctx.destinations),
            };
            let backoff = Backoff::from_millis(delivery.retry_initial_ms, delivery.retry_max_ms);
            let transport: Transport = BoxCloneService::new(tcp::TcpService::spawn(target, backoff));
            (syslog_encoder(&tcp.syslog, Framing::OctetCounting), transport, 4)
        }
        TransportPlan::Udp(udp) => {
            let oversize = &ctx.metrics.udp_oversize;
            let framing = Framing::Datagram {
                max: udp.max_datagram_bytes,
                oversize: udp.oversize,
                split: oversize.with_label_values(&[plan.name.as_str(), "split"]),
                truncated: oversize.with_label_values(&[plan.name.as_str(), "truncate"]),
            };
            let transport: Transport = BoxCloneService::new(udp::UdpService::new(
                udp.host.clone(),
                udp.port,
                Arc::clone(&ctx.destinations),
            ));
            (syslog_encoder(&udp.syslog, framing), transport, 1)
        }
        TransportPlan::Http(http) => {
            let factory: EncoderFactory = Arc::new(|| Box::new(json::JsonEncoder::new()) as Box<dyn Encoder>);
            let transport = http_transport(&plan.name, http, delivery, Arc::clone(&ctx.destinations));
            (factory, transport, 4)
        }
    }
}

fn syslog_encoder(syslog: &SyslogPlan, framing: Framing) -> EncoderFactory {
    let spec = SyslogSpec::new(syslog, framing);
    Arc::new(move || Box::new(SyslogEncoder::new(spec.clone())) as Box<dyn Encoder>)
}

fn warn_if_insecure(drain: &str, tls: &ClientTls) {
    if matches!(tls.trust, Trust::Anything) {
        tracing::warn!(drain = %drain, "TLS certificate verification is OFF for this drain (insecureSkipVerify)");
    }
}

fn http_transport(
    drain: &str,
    plan: &HttpPlan,
    delivery: &DeliveryOptions,
    destinations: Arc<destinations::Destinations>,
) -> Transport {
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls::client_config(&plan.tls))
        .https_or_http();
    let builder = match &plan.server_name {
        Some(name) => {
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name.clone()))
        }
        None => builder,
    };
    if plan.https {
        warn_if_insecure(drain, &plan.tls);
    }
    let connector = builder
        .enable_http1()
        .wrap_connector(http::GuardedConnector::new(destinations));
    BoxCloneService::new(http::HttpService::new(
        plan.shown_url.clone(),
        plan.uri.clone(),
        plan.headers.clone(),
        plan.gzip,
        plan.drop_on_status.clone(),
        Duration::from_millis(delivery.timeout_ms),
        connector,
    ))
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
