//! Turning the [`crate::world::World`] into API writes: node config Secrets ([`node_config`]) and
//! the statuses of drains ([`drain`]) and bindings ([`binding`]), through the traits of
//! [`cluster`], so the leader's pass runs against fixtures in unit tests.
//!
//! Invariant shared by all three: compare first, write only a difference. A restart with nothing
//! changed therefore writes nothing.

pub mod binding;
pub mod cluster;
pub mod delivery;
pub mod drain;
pub mod node_config;
pub mod status;

/// What a status reconciliation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusOutcome {
    /// The status already said this.
    Unchanged,
    /// The status was written.
    Written,
    /// Only counts changed and they were written recently: try again later.
    Deferred,
}

/// What reconciling one status of a `K` takes: nothing more, or a write to run.
pub enum Step<K> {
    /// Decided without a write.
    Done(StatusOutcome),
    /// A write that owns everything it needs (so it runs off the leader's loop); it resolves to
    /// the object as the API server returned it after the write, or the error.
    Write(futures::future::BoxFuture<'static, crate::Result<K>>),
}
