//! The engine's side of one drain: its encoder, the batch being built, and a reserved slot in
//! the drain's channel.
//!
//! Invariants: a non-empty batch always holds a reserved slot, so handing it over never blocks;
//! reading for a drain only starts when a slot is reserved ([`Outlet::ready`]), so a full
//! channel stops reading for that drain only; the batch is flushed when it reaches the drain's
//! line or byte limit, and at the end of every round.

use tokio::sync::mpsc::{OwnedPermit, error::TrySendError};

use crate::pipeline::{Batch, DrainEndpoint, Encoder};

/// One drain, as the tail loop feeds it.
pub struct Outlet {
    /// The drain as the glue started it.
    pub endpoint: DrainEndpoint,
    /// Its encoder.
    pub encoder: Box<dyn Encoder>,
    /// The batch being built.
    pub batch: Batch,
    permit: Option<OwnedPermit<Batch>>,
}

impl Outlet {
    /// Feed `endpoint`.
    pub fn new(endpoint: DrainEndpoint) -> Self {
        let encoder = (endpoint.new_encoder)();
        Self {
            endpoint,
            encoder,
            batch: Batch::default(),
            permit: None,
        }
    }

    /// Whether a channel slot is reserved (reserving one if the channel has room).
    pub fn ready(&mut self) -> bool {
        if self.permit.is_none() {
            match self.endpoint.batches.clone().try_reserve_owned() {
                Ok(permit) => self.permit = Some(permit),
                Err(TrySendError::Full(_) | TrySendError::Closed(_)) => return false,
            }
        }
        true
    }

    /// Whether the batch reached the drain's limits.
    pub fn full(&self) -> bool {
        self.batch.lines >= self.endpoint.batch_max_lines
            || self.batch.bytes.len() >= self.endpoint.batch_max_bytes as usize
    }

    /// Hand the batch to the drain if it holds anything; `true` if another slot is reserved
    /// (reading for this drain may go on).
    pub fn flush(&mut self) -> bool {
        if !self.batch.is_empty() {
            let permit = self
                .permit
                .take()
                .expect("invariant: a non-empty batch holds a reserved slot");
            let batch = std::mem::take(&mut self.batch);
            permit.send(batch);
        }
        self.ready()
    }
}
