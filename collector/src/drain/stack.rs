//! The per-drain tower stack, built in one function, outermost first:
//! rate limit (lines per second; waits, never drops) → concurrency limit (batches in flight) →
//! retry (typed decisions, jittered exponential backoff, forever) → per-attempt timeout (UDP; TCP
//! drains time out on progress inside their connection, HTTP drains per request) → transport.
//!
//! Invariants: the request is an `Arc<Batch>` (so retries re-send the same bytes without copying);
//! the stack is `Send + 'static` and owned by the drain's task.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use sluice_api::node_config::DeliveryOptions;
use tokio::time::{Instant, Sleep};
use tower::{
    BoxError, Service, ServiceBuilder,
    limit::ConcurrencyLimit,
    retry::Retry,
    timeout::Timeout,
    util::{BoxCloneService, Either},
};

use super::{
    backoff::Backoff,
    retry::{Health, RetryPolicy},
};
use crate::pipeline::Batch;

/// Any transport, boxed.
pub type Transport = BoxCloneService<Arc<Batch>, Delivered, BoxError>;

/// The future of a transport's `call`: every transport is a `Service<Arc<Batch>>` answering
/// with [`Delivered`], always ready (each keeps its own queue or connection pool).
pub type Delivery =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Delivered, tower::BoxError>> + Send>>;

/// What a transport did with a batch it is done with: delivered, except for lines the destination
/// refused one by one as invalid (an HTTP batch split on `413`), which are given up and counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Lines refused (dropped).
    pub refused_lines: u32,
    /// Their encoded bytes.
    pub refused_bytes: usize,
    /// Why, in words (a status, never a response body).
    pub refusal: Option<String>,
}

/// A drain's whole stack.
pub type DrainService = LineRate<ConcurrencyLimit<Retry<RetryPolicy, Either<Timeout<Transport>, Transport>>>>;

/// Build the stack over `transport` from the drain's delivery options; `attempt_timeout` limits
/// each attempt (`None`: the transport times out by itself).
pub fn build(
    transport: Transport,
    delivery: &DeliveryOptions,
    attempt_timeout: Option<Duration>,
    in_flight: usize,
    health: Arc<Health>,
) -> DrainService {
    let backoff = Backoff::from_millis(delivery.retry_initial_ms, delivery.retry_max_ms);
    ServiceBuilder::new()
        .layer_fn(|inner| LineRate::new(inner, delivery.max_lines_per_second))
        .concurrency_limit(in_flight.max(1))
        .retry(RetryPolicy::new(backoff, health))
        .option_layer(attempt_timeout.map(tower::timeout::TimeoutLayer::new))
        .service(transport)
}

/// Paces batches to at most `per_second` lines per second on average. A batch waits (in
/// `poll_ready`) until the lines sent before it have "paid" for their time; nothing is dropped.
pub struct LineRate<S> {
    inner: S,
    per_second: Option<u32>,
    next: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S> LineRate<S> {
    /// A limiter over `inner` (`None`: no limit).
    pub fn new(inner: S, per_second: Option<u32>) -> Self {
        Self {
            inner,
            per_second: per_second.filter(|&r| r > 0),
            next: Instant::now(),
            sleep: None,
        }
    }
}

impl<S: Service<Arc<Batch>>> Service<Arc<Batch>> for LineRate<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.per_second.is_some() && self.next > Instant::now() {
            let next = self.next;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
            if sleep.deadline() != next {
                sleep.as_mut().reset(next);
            }
            ready!(sleep.as_mut().poll(cx));
            self.sleep = None;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, batch: Arc<Batch>) -> Self::Future {
        if let Some(rate) = self.per_second {
            let cost = Duration::from_secs_f64(f64::from(batch.lines) / f64::from(rate));
            self.next = self.next.max(Instant::now()) + cost;
        }
        self.inner.call(batch)
    }
}

#[cfg(test)]
mod tests;
