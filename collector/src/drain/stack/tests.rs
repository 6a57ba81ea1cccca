//! The stack and the drain task with in-memory transports, on paused time.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use sluice_api::node_config::DeliveryOptions;
use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tower::{BoxError, ServiceExt, service_fn, util::BoxCloneService};

use super::*;
use crate::{
    drain::{
        http,
        retry::{self, Health},
        task::DrainTask,
        tcp,
    },
    metrics::Metrics,
    pipeline::{Cursor, test_position as position},
};

fn batch(lines: u32, cursor: &Arc<Cursor>, offset: u64) -> Batch {
    let mut batch = Batch::default();
    batch.push_frame(|b| b.extend_from_slice(format!("batch at {offset}").as_bytes()));
    batch.lines = lines;
    batch.mark(cursor, position(offset));
    batch
}

fn delivery() -> DeliveryOptions {
    DeliveryOptions {
        retry_initial_ms: 100,
        retry_max_ms: 400,
        timeout_ms: 1000,
        ..DeliveryOptions::default()
    }
}

fn failures(metrics: &Metrics, cause: &str) -> u64 {
    metrics.delivery_failures.with_label_values(&["d", cause]).get()
}

fn connect_error() -> BoxError {
    tcp::Error::Connect {
        address: "h:1".into(),
        source: io::Error::from(io::ErrorKind::ConnectionRefused),
    }
    .into()
}

#[tokio::test(start_paused = true)]
async fn retries_with_jittered_exponential_backoff_until_success() {
    let metrics = Metrics::new().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let transport: Transport = BoxCloneService::new(service_fn(move |_b: Arc<Batch>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 4 {
                Err(connect_error())
            } else {
                Ok(Delivered::default())
            }
        }
    }));
    let health = Arc::new(Health::new("d", metrics.clone()));
    let service = build(
        transport,
        &delivery(),
        Some(Duration::from_millis(1000)),
        1,
        health,
    );
    let start = Instant::now();
    let cursor = Arc::new(Cursor::new(None));
    service.oneshot(Arc::new(batch(1, &cursor, 10))).await.unwrap();
    let waited = start.elapsed();
    // Ceilings 100, 200, 400, 400 ms (capped), each jittered within [ceiling/2, ceiling].
    assert!(
        waited >= Duration::from_millis(550) && waited <= Duration::from_millis(1100),
        "{waited:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    assert_eq!(failures(&metrics, "connect"), 4);
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_rejected_without_retry_but_429_is_retried() {
    let metrics = Metrics::new().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let transport: Transport = BoxCloneService::new(service_fn(move |_b: Arc<Batch>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let status = if n == 0 {
                ::http::StatusCode::TOO_MANY_REQUESTS
            } else {
                ::http::StatusCode::BAD_REQUEST
            };
            let url = "http://h/".to_owned();
            Err::<Delivered, BoxError>(if n == 0 {
                http::Error::Status { url, status }.into()
            } else {
                http::Error::Rejected { url, status }.into()
            })
        }
    }));
    let health = Arc::new(Health::new("d", metrics.clone()));
    let cursor = Arc::new(Cursor::new(None));
    let err = build(
        transport,
        &delivery(),
        Some(Duration::from_millis(1000)),
        1,
        health,
    )
    .oneshot(Arc::new(batch(1, &cursor, 1)))
    .await
    .unwrap_err();
    assert_eq!(retry::classify(&*err), retry::Decision::Reject);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "429 retried once, 400 not retried"
    );
    assert_eq!(failures(&metrics, "http_4xx"), 1);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_that_hangs_times_out_and_is_retried() {
    let metrics = Metrics::new().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let transport: Transport = BoxCloneService::new(service_fn(move |_b: Arc<Batch>| {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                std::future::pending::<()>().await;
            }
            Ok::<Delivered, BoxError>(Delivered::default())
        }
    }));
    let health = Arc::new(Health::new("d", metrics.clone()));
    let cursor = Arc::new(Cursor::new(None));
    build(
        transport,
        &delivery(),
        Some(Duration::from_millis(1000)),
        1,
        health,
    )
    .oneshot(Arc::new(batch(1, &cursor, 1)))
    .await
    .unwrap();
    assert_eq!(failures(&metrics, "timeout"), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_paces_lines_without_dropping() {
    let metrics = Metrics::new().unwrap();
    let transport: Transport = BoxCloneService::new(service_fn(|_b: Arc<Batch>| async {
        Ok::<Delivered, BoxError>(Delivered::default())
    }));
    let options = DeliveryOptions {
        max_lines_per_second: Some(1000),
        ..delivery()
    };
    let mut service = build(
        transport,
        &options,
        Some(Duration::from_millis(1000)),
        1,
        Arc::new(Health::new("d", metrics)),
    );
    let cursor = Arc::new(Cursor::new(None));
    let start = Instant::now();
    for i in 0..5 {
        service
            .ready()
            .await
            .unwrap()
            .call(Arc::new(batch(500, &cursor, i)))
            .await
            .unwrap();
    }
    // 2,500 lines at 1,000/s: the first batch goes at once, each later one waits 0.5 s.
    assert_eq!(start.elapsed().as_millis(), 2000);
}

/// Runs a drain task over `transport`; returns the sender, the finish handle and the task.
fn run_task(
    transport: Transport,
    metrics: &Metrics,
) -> (
    mpsc::Sender<Batch>,
    watch::Sender<Option<Instant>>,
    tokio::task::JoinHandle<()>,
    Arc<AtomicUsize>,
) {
    let (tx, rx) = mpsc::channel(4);
    let (finish, finish_rx) = watch::channel(None);
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&wakes);
    let health = Arc::new(Health::new("d", metrics.clone()));
    let task = DrainTask {
        rx,
        service: build(
            transport,
            &delivery(),
            Some(Duration::from_millis(1000)),
            4,
            Arc::clone(&health),
        ),
        health,
        wake: Arc::new(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        }),
        finish: finish_rx,
    };
    (tx, finish, tokio::spawn(task.run()), wakes)
}

#[tokio::test(start_paused = true)]
async fn acks_in_order_even_when_responses_come_out_of_order() {
    let metrics = Metrics::new().unwrap();
    // The first batch (3 lines) takes 100 ms, the second (1 line) 10 ms.
    let transport: Transport = BoxCloneService::new(service_fn(|b: Arc<Batch>| async move {
        tokio::time::sleep(Duration::from_millis(if b.lines == 3 { 100 } else { 10 })).await;
        Ok::<Delivered, BoxError>(Delivered::default())
    }));
    let (tx, finish, task, wakes) = run_task(transport, &metrics);
    let (first, second) = (Arc::new(Cursor::new(None)), Arc::new(Cursor::new(None)));
    tx.send(batch(3, &first, 30)).await.unwrap();
    tx.send(batch(1, &second, 40)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        second.get(),
        None,
        "the second batch is done but waits for the first"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        (first.get(), second.get()),
        (Some(position(30)), Some(position(40)))
    );
    assert_eq!(metrics.lines_delivered.with_label_values(&["d"]).get(), 4);
    assert_eq!(wakes.load(Ordering::SeqCst), 2);
    finish
        .send(Some(Instant::now() + Duration::from_secs(1)))
        .unwrap();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn rejected_batches_are_counted_dropped_and_acked_so_the_drain_goes_on() {
    let metrics = Metrics::new().unwrap();
    let transport: Transport = BoxCloneService::new(service_fn(|b: Arc<Batch>| async move {
        if b.lines == 7 {
            let status = ::http::StatusCode::BAD_REQUEST;
            return Err::<Delivered, BoxError>(
                http::Error::Rejected {
                    url: "u".into(),
                    status,
                }
                .into(),
            );
        }
        Ok(Delivered::default())
    }));
    let (tx, finish, task, _) = run_task(transport, &metrics);
    let cursor = Arc::new(Cursor::new(None));
    tx.send(batch(7, &cursor, 1)).await.unwrap();
    tx.send(batch(2, &cursor, 2)).await.unwrap();
    drop(tx);
    task.await.unwrap();
    assert_eq!(cursor.get(), Some(position(2)));
    assert_eq!(
        metrics.lines_dropped.with_label_values(&["d", "rejected"]).get(),
        7
    );
    assert_eq!(metrics.lines_delivered.with_label_values(&["d"]).get(), 2);
    drop(finish);
}

#[tokio::test(start_paused = true)]
async fn finish_gives_up_at_the_deadline_and_acks_nothing_undelivered() {
    let metrics = Metrics::new().unwrap();
    let transport: Transport = BoxCloneService::new(service_fn(|_b: Arc<Batch>| async {
        Err::<Delivered, _>(connect_error())
    }));
    let (tx, finish, task, _) = run_task(transport, &metrics);
    let cursor = Arc::new(Cursor::new(None));
    tx.send(batch(1, &cursor, 1)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    finish.send(Some(deadline)).unwrap();
    task.await.unwrap();
    assert_eq!(Instant::now(), deadline);
    assert_eq!(cursor.get(), None);
    assert!(failures(&metrics, "connect") >= 2);
}
