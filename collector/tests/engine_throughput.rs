//! Throughput of the tail engine alone: one Docker json-file of `ENGINE_LINES` lines (default
//! 100,000; 100-200 bytes each) read by one engine into one drain whose encoder copies the
//! message. Asserts that every line arrives exactly once (each message carries its index); prints
//! lines per second and the process's peak RSS, which are measurements, never assertions. For real
//! figures run it in release: `ENGINE_LINES=2000000 cargo test --release -p sluice-collector
//! --test engine_throughput -- --nocapture`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "support/engine.rs"]
mod support;

use std::{
    io::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sluice_collector::{
    engine::Routes,
    pipeline::{Batch, DrainEndpoint, Encoder, LogLine},
};
use support::*;

/// Copies the message, as a real encoder would at least do.
struct CopyEncoder;

impl Encoder for CopyEncoder {
    fn encode(&mut self, line: &LogLine<'_>, batch: &mut Batch) {
        batch.push_frame(|b| b.extend_from_slice(line.message.as_bytes()));
    }
}

#[test]
fn one_large_file_arrives_exactly_once() {
    let lines: usize = std::env::var("ENGINE_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let node = Node::new();
    let c = DockerContainer::new(&node.docker_root(), 70);
    // Write the file first (as the benchmark does), in large chunks.
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(c.log()).unwrap());
    let pad = "p".repeat(120);
    for i in 0..lines {
        let m = format!("{i:09} {}", &pad[..(i * 7) % 100]);
        writeln!(
            f,
            "{{\"log\":\"{m}\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-21T15:15:34.165439785Z\"}}"
        )
        .unwrap();
    }
    f.flush().unwrap();
    drop(f);

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(8);
    let seen = Arc::new(Mutex::new(vec![0u8; lines]));
    let count = Arc::new(AtomicU64::new(0));
    let wake = node.waker.wake_fn();
    let (seen2, count2) = (Arc::clone(&seen), Arc::clone(&count));
    let drain = std::thread::spawn(move || {
        while let Some(batch) = rx.blocking_recv() {
            wake();
            let mut seen = seen2.lock().unwrap();
            for frame in batch.frames() {
                let i: usize = std::str::from_utf8(&frame[..9]).unwrap().parse().unwrap();
                seen[i] = seen[i].saturating_add(1);
            }
            count2.fetch_add(u64::from(batch.lines), Ordering::Relaxed);
            batch.ack();
        }
    });
    let endpoint = DrainEndpoint {
        name: "a".into(),
        generation: 1,
        batches: tx,
        new_encoder: Arc::new(|| Box::new(CopyEncoder) as Box<dyn Encoder>),
        batch_max_lines: 2048,
        batch_max_bytes: 1024 * 1024,
    };
    let routes = Routes {
        drains: [("a".to_owned(), endpoint)].into_iter().collect(),
        containers: vec![c.config(&["a"])],
        selectors: Vec::new(),
    };
    let start = tokio::time::Instant::now();
    let engine = node.start(node.settings(), routes);
    wait_for("every line", Duration::from_secs(600), || {
        count.load(Ordering::Relaxed) >= lines as u64
    });
    let elapsed = start.elapsed();
    engine.join();
    drain.join().unwrap();
    let seen = seen.lock().unwrap();
    let wrong = seen.iter().filter(|&&n| n != 1).count();
    assert_eq!(wrong, 0, "{wrong} lines did not arrive exactly once");
    let rss = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .map(|l| l.to_owned())
        .unwrap_or_default();
    println!(
        "engine: {lines} lines in {:.3} s = {:.0} lines/s; process {rss} (includes the test's own bitmap)",
        elapsed.as_secs_f64(),
        lines as f64 / elapsed.as_secs_f64()
    );
}
