//! `syslog://` drains against real loopback sockets: exact delivery, a receiver that restarts, a
//! receiver that never reads.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "support/drain.rs"]
mod support;

use std::{sync::Arc, time::Duration};

use support::*;
use tokio::{net::TcpSocket, time::Instant};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_every_line_once_and_in_order() {
    let receiver = TcpReceiver::start(0).await;
    let (drain, metrics) = start(&config("tcp", &format!("syslog://127.0.0.1:{}", receiver.port)));
    let feeder = Feeder::new();
    let total = 20_000u64;
    feeder.send(&drain, 0..total, 700, |i| format!("line-{i}")).await;
    wait_for("every line acknowledged", WAIT, || feeder.acked() == total).await;
    wait_for("every line received", WAIT, || receiver.count() as u64 >= total).await;
    let want: Vec<String> = (0..total).map(|i| format!("line-{i}")).collect();
    assert_lines_in_order(&receiver.msgs(), &want);
    assert_eq!(metrics.lines_delivered.with_label_values(&["tcp"]).get(), total);
    let first = receiver.messages.lock().unwrap()[0].clone();
    assert!(first.starts_with(
        "<11>1 2026-11-21T15:15:34.165439Z node-a shop/web-1 app 00000000000000070 [kubernetes@32473 "
    ));
    drain.finish(Instant::now() + Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_restart_loses_nothing_and_repeats_only_unacked_batches() {
    let mut receiver = TcpReceiver::start(0).await;
    let (drain, metrics) = start(&config(
        "restart",
        &format!("syslog://127.0.0.1:{}", receiver.port),
    ));
    let feeder = Arc::new(Feeder::new());
    let total = 60_000u64;
    let endpoint = drain.endpoint.clone();
    let sender = {
        let feeder = Arc::clone(&feeder);
        tokio::spawn(async move {
            feeder
                .send_to(&endpoint, 0..total, 500, |i| format!("line-{i}"))
                .await
        })
    };
    wait_for("some lines received", WAIT, || receiver.count() >= 5_000).await;
    receiver.stop().await;
    let acked_at_break = feeder.acked();
    receiver.restart().await;
    sender.await.unwrap();
    wait_for("every line acknowledged", WAIT, || feeder.acked() == total).await;
    wait_for("every line received", WAIT, || {
        multiset(receiver.msgs()).len() as u64 == total
    })
    .await;
    let counts = multiset(receiver.msgs());
    for i in 0..total {
        let n = counts.get(&format!("line-{i}")).copied().unwrap_or(0);
        assert!(n >= 1, "line-{i} lost");
        assert!(
            n == 1 || i >= acked_at_break,
            "line-{i} was acknowledged before the break but arrived {n} times"
        );
    }
    let repeats: usize = counts.values().map(|n| n - 1).sum();
    println!("restart: {repeats} repeated lines (all from batches unacknowledged at the break)");
    assert!(
        receiver.connections.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the drain reconnected"
    );
    assert_eq!(
        metrics.lines_delivered.with_label_values(&["restart"]).get(),
        total
    );
    drain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_reads_holds_back_only_its_own_drain() {
    // A listener with a tiny receive window that accepts and never reads.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let mut stuck_config = config("stuck", &format!("syslog://127.0.0.1:{port}"));
    stuck_config.delivery.timeout_ms = 300;
    let (stuck, stuck_metrics) = start(&stuck_config);
    let stuck_feeder = Arc::new(Feeder::new());
    let total = 8_000u64;
    let endpoint = stuck.endpoint.clone();
    let stuck_sender = {
        let feeder = Arc::clone(&stuck_feeder);
        tokio::spawn(async move {
            feeder
                .send_to(&endpoint, 0..total, 200, |i| format!("{i}-{}", "x".repeat(1000)))
                .await
        })
    };

    // A healthy drain next to it delivers everything meanwhile.
    let receiver = TcpReceiver::start(0).await;
    let (healthy, _) = start(&config(
        "healthy",
        &format!("syslog://127.0.0.1:{}", receiver.port),
    ));
    let feeder = Feeder::new();
    feeder
        .send(&healthy, 0..5_000, 250, |i| format!("line-{i}"))
        .await;
    wait_for("the healthy drain delivered everything", WAIT, || {
        feeder.acked() == 5_000
    })
    .await;

    wait_for("the stuck drain timed out twice", WAIT, || {
        stuck_metrics
            .delivery_failures
            .with_label_values(&["stuck", "timeout"])
            .get()
            >= 2
    })
    .await;
    let acked = stuck_feeder.acked();
    assert!(
        acked < total,
        "nothing beyond what the peer's window took may be acknowledged ({acked} of {total})"
    );
    assert!(
        !stuck_sender.is_finished(),
        "the engine side is held back by the full channel"
    );
    stuck.abort();
    stuck_sender.abort();
    held.abort();
    healthy.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_delivers_what_is_queued_before_returning() {
    let receiver = TcpReceiver::start(0).await;
    let (drain, _) = start(&config(
        "finish",
        &format!("syslog://127.0.0.1:{}", receiver.port),
    ));
    let feeder = Feeder::new();
    // Exactly as many batches as the channel, the pending slot and the in-flight window hold, so
    // the sends complete without waiting for deliveries.
    feeder.send(&drain, 0..4_000, 500, |i| format!("line-{i}")).await;
    drain.finish(Instant::now() + Duration::from_secs(20)).await;
    assert_eq!(
        feeder.acked(),
        4_000,
        "finish returned only after everything queued was acknowledged"
    );
    wait_for("every line received", WAIT, || receiver.count() >= 4_000).await;
    let want: Vec<String> = (0..4_000).map(|i| format!("line-{i}")).collect();
    assert_lines_in_order(&receiver.msgs(), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_stops_at_once_and_acknowledges_nothing_more() {
    // Nothing listens on this port: batches can only wait.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (drain, metrics) = start(&config("aborted", &format!("syslog://127.0.0.1:{port}")));
    let feeder = Feeder::new();
    feeder.send(&drain, 0..100, 50, |i| format!("line-{i}")).await;
    wait_for("a connect failure", WAIT, || {
        metrics
            .delivery_failures
            .with_label_values(&["aborted", "connect"])
            .get()
            >= 1
    })
    .await;
    let endpoint = drain.endpoint.clone();
    drain.abort();
    wait_for("the drain task is gone", WAIT, || endpoint.batches.is_closed()).await;
    assert_eq!(feeder.acked(), 0);
}

/// Line `number`, of about 1 KB.
fn kilobyte_line(number: u64) -> String {
    format!("{number}-{}", "x".repeat(1000))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_is_not_declared_dead() {
    // Reads 2 KB every 5 ms (about 400 KB/s): one 400 KB batch takes about a second to be
    // acknowledged, far longer than the 300 ms timeout, yet the receiver is always making progress.
    let receiver = PausedReceiver::start(false, Some((2048, Duration::from_millis(5)))).await;
    let mut slow = config("slow", &format!("syslog://127.0.0.1:{}", receiver.port));
    slow.delivery.timeout_ms = 300;
    let (drain, metrics) = start(&slow);
    let feeder = Feeder::new();
    let total = 2_400u64;
    feeder.send(&drain, 0..total, 400, kilobyte_line).await;
    wait_for("every line acknowledged", WAIT, || feeder.acked() == total).await;
    drain.finish(Instant::now() + Duration::from_secs(5)).await;
    receiver.join().await;
    let want: Vec<String> = (0..total).map(kilobyte_line).collect();
    assert_lines_in_order(&receiver.msgs(), &want);
    assert_eq!(
        receiver.connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one connection carried everything"
    );
    assert_eq!(
        metrics
            .delivery_failures
            .with_label_values(&["slow", "timeout"])
            .get(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_receiver_gets_no_copies_from_abandoned_connections() {
    // Every connection accepts and reads nothing until resumed: the drain gives each up after the
    // timeout and reconnects. What the abandoned connections still had queued must not arrive when
    // the receiver reads again, next to the copies sent on the new connections. One line per batch,
    // so a line the receiver's kernel acknowledged is an acknowledged batch: nothing may repeat.
    let receiver = PausedReceiver::start(true, None).await;
    let mut stalled = config("stalled", &format!("syslog://127.0.0.1:{}", receiver.port));
    stalled.delivery.timeout_ms = 300;
    let (drain, metrics) = start(&stalled);
    let feeder = Arc::new(Feeder::new());
    let total = 600u64;
    let endpoint = drain.endpoint.clone();
    let sender = {
        let feeder = Arc::clone(&feeder);
        tokio::spawn(async move { feeder.send_to(&endpoint, 0..total, 1, kilobyte_line).await })
    };
    wait_for("two connections given up", WAIT, || {
        receiver.connections.load(std::sync::atomic::Ordering::SeqCst) >= 3
    })
    .await;
    assert!(
        metrics
            .delivery_failures
            .with_label_values(&["stalled", "timeout"])
            .get()
            >= 2
    );
    receiver.resume();
    sender.await.unwrap();
    wait_for("every line acknowledged", WAIT, || feeder.acked() == total).await;
    drain.finish(Instant::now() + Duration::from_secs(5)).await;
    receiver.join().await;
    let want: Vec<String> = (0..total).map(kilobyte_line).collect();
    assert_same_lines(receiver.msgs(), want);
}
