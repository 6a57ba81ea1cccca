//! Drains inside the running collector (real files, real loopback receivers): a drain that cannot
//! be built is skipped while the others deliver, a drain whose task died is started again from
//! what it acknowledged, and a drain that leaves the config leaves no metric series behind.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "support/drain.rs"]
mod support;

#[path = "support/engine.rs"]
mod engine;

use std::{sync::Arc, time::Duration};

use sluice_api::{
    NodeConfig,
    node_config::{Sources, Stream, TlsConfig},
};
use sluice_collector::{
    drain::Death,
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
    let node_config = NodeConfig {
        version: 1,
        sources: Sources {
            docker_root: root.path().to_owned(),
            pods_root: root.path().join("pods"),
        },
        drains: vec![good.clone(), bad],
        containers: vec![container.config(&["good", "no-ca"])],
        ..NodeConfig::default()
    };
    let metrics = Metrics::new().unwrap();
    let settings = Settings {
        state_dir: state.path().to_owned(),
        node_name: "node-a".into(),
        destinations: local_receivers(),
        recent: None,
    };
    let mut collector = Collector::start(settings, Arc::new(node_config.clone()), metrics.clone()).unwrap();

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
