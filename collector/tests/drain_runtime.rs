//! Drains inside the running collector (real files, real loopback receivers): a drain that cannot
//! be built is skipped while the others deliver, a drain whose task died is started again from
//! what it acknowledged, and a drain that leaves the config leaves no metric series behind. A real
//! panic (injected with the `fault-injection` hooks this crate's tests turn on) follows the whole
//! path: reported, restarted as a new generation, rewound.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "support/drain.rs"]
mod support;

#[path = "support/engine.rs"]
mod engine;

use std::{sync::Arc, time::Duration};

use sluice_api::{
    NodeConfig,
    node_config::{ContainerConfig, DrainConfig, Sources, Stream, TlsConfig},
};
use sluice_collector::{
    drain::{Death, fault},
    metrics::Metrics,
    runtime::{Collector, Settings},
};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

fn series_of(metrics: &Metrics, drain: &str) -> usize {
    let mut text = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &metrics.registry().gather(),
        &mut text,
    )
    .unwrap();
    String::from_utf8(text)
        .unwrap()
        .matches(&format!("drain=\"{drain}\""))
        .count()
}

/// A node config of `drains` and `containers`, its sources under `root`.
fn node_config(
    root: &std::path::Path,
    drains: Vec<DrainConfig>,
    containers: Vec<ContainerConfig>,
) -> NodeConfig {
    NodeConfig {
        version: 1,
        sources: Sources {
            docker_root: root.to_owned(),
            pods_root: root.join("pods"),
        },
        drains,
        containers,
        ..NodeConfig::default()
    }
}

/// Start a collector on `config` with its state in `state` and the tests' destinations policy.
fn start(state: &std::path::Path, config: &NodeConfig) -> (Collector, Metrics) {
    let metrics = Metrics::new().unwrap();
    let settings = Settings {
        state_dir: state.to_owned(),
        node_name: "node-a".into(),
        destinations: local_receivers(),
        recent: None,
    };
    let collector = Collector::start(settings, Arc::new(config.clone()), metrics.clone()).unwrap();
    (collector, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_drains_are_skipped_dead_ones_restarted_and_gone_ones_forgotten() {
    let receiver = TcpReceiver::start(0).await;
    let (root, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let container = engine::DockerContainer::new(root.path(), 1);
    let good = config("good", &format!("syslog://127.0.0.1:{}", receiver.port));
    let mut bad = config("no-ca", "syslog-tls://127.0.0.1:9");
    bad.tls = Some(TlsConfig {
        ca_file: Some(root.path().join("missing-ca.pem")),
        ..TlsConfig::default()
    });
    let node_config = node_config(
        root.path(),
        vec![good.clone(), bad],
        vec![container.config(&["good", "no-ca"])],
    );
    let (mut collector, metrics) = start(state.path(), &node_config);

    // The bad drain is skipped and said so; the good one runs.
    let skipped = metrics.skipped_drains.list();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, "no-ca");
    assert!(skipped[0].1.contains("missing-ca.pem"), "{}", skipped[0].1);
    assert_eq!(metrics.skipped_drains.list().len(), 1);
    let generation = match collector.drains().as_slice() {
        [(name, generation)] if name == "good" => *generation,
        other => panic!("running drains: {other:?}"),
    };

    let line = |i: u64| format!("line-{i}");
    for i in 0..2_000 {
        container.write(Stream::Stdout, &line(i));
    }
    wait_for("the first lines", WAIT, || receiver.count() >= 1_000).await;
    // As if the good drain's task had died now: it starts again from what it acknowledged.
    collector.restart_drain(&Death {
        drain: "good".into(),
        generation,
    });
    for i in 2_000..4_000 {
        container.write(Stream::Stdout, &line(i));
    }
    wait_for("every line at least once", WAIT, || {
        multiset(receiver.msgs()).len() == 4_000
    })
    .await;
    let counts = multiset(receiver.msgs());
    assert!((0..4_000).all(|i| counts.contains_key(&line(i))));
    assert_eq!(metrics.drain_restarts.with_label_values(&["good"]).get(), 1);

    // The good drain leaves the config: its series go with it.
    assert!(series_of(&metrics, "good") > 0);
    let mut without = node_config;
    without.drains.retain(|d| d.name != "good");
    without.containers[0].drains = vec!["no-ca".into()];
    collector.apply(Arc::new(without)).unwrap();
    assert_eq!(series_of(&metrics, "good"), 0);
    collector.shutdown(Duration::from_secs(5)).await;
}

/// A drain task that panics with batches taken and in flight is reported, started again as a new
/// generation and counted; the engine rewinds it to what it acknowledged, so no line is lost and
/// the only repeats are what was in flight when it died (at most 4 batches, README "How delivery
/// works").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_task_that_panics_is_restarted_and_loses_nothing() {
    let receiver = TcpReceiver::start(0).await;
    let (root, state) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let container = engine::DockerContainer::new(root.path(), 2);
    let batch_lines = 100;
    let mut drain = config("panicky", &format!("syslog://127.0.0.1:{}", receiver.port));
    drain.delivery.batch_max_lines = batch_lines;
    let config = node_config(root.path(), vec![drain], vec![container.config(&["panicky"])]);
    let (mut collector, metrics) = start(state.path(), &config);
    let generation = collector.drains()[0].1;

    let line = |i: u64| format!("line-{i}");
    let count = 6_000;
    for i in 0..count / 2 {
        container.write(Stream::Stdout, &line(i));
    }
    wait_for("the first lines", WAIT, || receiver.count() >= 1_000).await;
    fault::panic_once("panicky");
    for i in count / 2..count {
        container.write(Stream::Stdout, &line(i));
    }
    let death = tokio::time::timeout(WAIT, collector.next_death())
        .await
        .expect("the drain's task died and was reported");
    assert_eq!(
        death,
        Death {
            drain: "panicky".into(),
            generation,
        }
    );
    collector.restart_drain(&death);
    let restarted = collector.drains();
    assert!(
        matches!(restarted.as_slice(), [(name, g)] if name == "panicky" && *g > generation),
        "running drains after the restart: {restarted:?}"
    );
    assert_eq!(metrics.drain_restarts.with_label_values(&["panicky"]).get(), 1);

    wait_for("every line at least once", WAIT, || {
        multiset(receiver.msgs()).len() == count as usize
    })
    .await;
    let counts = multiset(receiver.msgs());
    assert!(
        (0..count).all(|i| counts.contains_key(&line(i))),
        "a line was lost"
    );
    let repeats = receiver.msgs().len() - count as usize;
    eprintln!("drain task panic: {repeats} repeats of {count} lines");
    assert!(
        repeats <= 4 * batch_lines as usize,
        "{repeats} repeats: more than the 4 batches in flight"
    );
    assert_eq!(
        metrics
            .lines_dropped
            .with_label_values(&["panicky", "rotated_away"])
            .get(),
        0
    );
    collector.shutdown(Duration::from_secs(5)).await;
}
