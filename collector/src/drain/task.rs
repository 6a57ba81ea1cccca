//! The drain task: takes batches off the drain's channel, sends them through the stack, and
//! acknowledges them in order.
//!
//! Invariants:
//! * `Batch::ack` is called for a batch only after it was delivered (or rejected by the destination
//!   and counted dropped) **and** every earlier batch was acknowledged: responses are collected in a
//!   `FuturesOrdered`, which yields them in the order the batches were sent.
//! * The engine's [`Wake`] is called each time a batch is taken off the channel, since that made room.
//! * On finish, the channel is closed, what is queued or in flight is delivered until the deadline,
//!   then the task ends; whatever is not acknowledged by then stays unacknowledged (its lines are read
//!   again after a restart).

use std::{future::Future, pin::Pin, sync::Arc};

use futures_util::{FutureExt, StreamExt, stream::FuturesOrdered};
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tower::{BoxError, Service, ServiceExt};

use super::{
    retry::{Chain, Decision, Health, classify},
    stack::{Delivered, DrainService},
};
use crate::pipeline::{Batch, Wake};

type InFlight = Pin<Box<dyn Future<Output = (Arc<Batch>, Result<Delivered, BoxError>)> + Send>>;

/// Everything the drain task owns.
pub struct DrainTask {
    /// Batches from the engine.
    pub rx: mpsc::Receiver<Batch>,
    /// The tower stack.
    pub service: DrainService,
    /// Counters and state-change logging.
    pub health: Arc<Health>,
    /// Called when a batch was taken off the channel.
    pub wake: Wake,
    /// Set to the deadline when the drain is asked to finish.
    pub finish: watch::Receiver<Option<Instant>>,
}

impl DrainTask {
    /// Run until the channel is closed and drained, or the finish deadline passes.
    pub async fn run(self) {
        let Self {
            mut rx,
            mut service,
            health,
            wake,
            mut finish,
        } = self;
        let mut in_flight: FuturesOrdered<InFlight> = FuturesOrdered::new();
        let mut pending: Option<Arc<Batch>> = None;
        let mut deadline: Option<Instant> = None;
        let mut closed = false;
        // One event per round: a response (acked in order), room to send the pending batch, a new
        // batch, the finish signal, or the finish deadline.
        loop {
            if closed && pending.is_none() && in_flight.is_empty() {
                return;
            }
            tokio::select! {
                biased;
                _ = sleep_until_opt(deadline) => return,
                Some((batch, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    if !complete(&health, &batch, result) {
                        return;
                    }
                }
                ready = service.ready(), if pending.is_some() => {
                    let Some(batch) = pending.take() else { continue };
                    match ready {
                        Ok(ready) => {
                            let response = ready.call(Arc::clone(&batch));
                            in_flight.push_back(Box::pin(response.map(move |result| (batch, result))));
                        }
                        Err(err) => {
                            tracing::error!(drain = %health.drain(), error = %Chain(&*err), "drain stopped: its delivery stack failed");
                            return;
                        }
                    }
                }
                batch = rx.recv(), if pending.is_none() && !closed => match batch {
                    Some(batch) => {
                        pending = Some(Arc::new(batch));
                        wake();
                        #[cfg(feature = "fault-injection")]
                        super::fault::took_batch(health.drain());
                    }
                    None => closed = true,
                },
                changed = finish.changed(), if deadline.is_none() => {
                    if changed.is_err() {
                        // The handle was dropped without finish or abort: treat it as finish now.
                        deadline = Some(Instant::now());
                    } else {
                        deadline = *finish.borrow();
                    }
                    rx.close();
                }
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Settle one response, in order. Returns false when the drain must stop (an error the stack should
/// have retried: acknowledging later batches would skip this one's lines).
fn complete(health: &Health, batch: &Batch, result: Result<Delivered, BoxError>) -> bool {
    match result {
        Ok(delivered) => {
            batch.ack();
            let refused = delivered.refused_lines.min(batch.lines);
            health.success(
                batch.lines - refused,
                batch.bytes.len().saturating_sub(delivered.refused_bytes),
            );
            if refused > 0 {
                let why = delivered
                    .refusal
                    .as_deref()
                    .unwrap_or("refused by the destination");
                health.refused_lines(refused, why);
            }
            true
        }
        Err(err) => match classify(&*err) {
            Decision::Reject => {
                health.rejected(batch.lines, &*err);
                batch.ack();
                true
            }
            Decision::Retry { cause } => {
                tracing::error!(drain = %health.drain(), cause, error = %Chain(&*err), "drain stopped: a batch failed for good");
                false
            }
        },
    }
}
