//! Drains that fail: one down for 30 s while another keeps its full rate (then catching up with
//! nothing lost), one that refuses connections, one that accepts and never reads. A failing
//! drain lags on its own cursor; the others never wait for it.

use std::{
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::Result;
use sluice_tests::{
    LineSpec,
    collector::Collector,
    docker::RunSpec,
    fixture::{DockerRig, Drain, config_yaml, docker_rig, expect_exact, lines, loggen_args, select},
    http::HttpReceiver,
    multiset::Multiset,
    support::{free_port, temp_dir, wait_until},
    syslog::Rsyslog,
};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(180);

fn rs_msgs(receiver: &Rsyslog) -> Multiset {
    receiver.received().iter().map(|m| m.msg.clone()).collect()
}

/// The HTTP drain answers 503 for the 30 s a container writes; rsyslog gets every line of it
/// while the HTTP drain is still down; then the HTTP drain comes back and catches up exactly.
#[test]
fn one_drain_down_for_30s_does_not_hold_back_the_other() -> Result<()> {
    let test = "one_drain_down_for_30s_does_not_hold_back_the_other";
    let Some(DockerRig {
        bins,
        rsyslog_bin: rs_bin,
        docker,
    }) = docker_rig(test)?
    else {
        return Ok(());
    };
    let (rsyslog, http) = (Rsyslog::start(&rs_bin)?, HttpReceiver::start()?);
    http.set_failing(true);
    let pods = temp_dir("sluice-pods-")?;
    let drains = [
        Drain::new("rs-tcp", format!("syslog://127.0.0.1:{}", rsyslog.ports.tcp)),
        Drain::new("http", http.url()),
    ];
    let collector = Collector::start(
        &bins,
        &config_yaml(
            docker.root(),
            pods.path(),
            &drains,
            &[select("out-*", &["rs-tcp", "http"])],
        ),
    )?;

    let spec = LineSpec::new("out-a", 100, 200);
    let (rate, seconds) = (500, 30);
    let count = rate * seconds;
    let id = docker.run(&RunSpec {
        name: "out-a".into(),
        args: loggen_args(&spec, count, rate),
        ..RunSpec::default()
    })?;
    assert_eq!(docker.wait(&id)?, 0); // 30 s of writing, with the HTTP drain down throughout
    let want = lines(&spec, 0, count);
    expect_exact(
        "the healthy drain during the outage",
        &want,
        DELIVERY_TIMEOUT,
        || rs_msgs(&rsyslog),
        || collector.log_tail(10),
    )?;
    assert!(
        http.messages().is_empty(),
        "the failing drain recorded lines while answering 503"
    );
    let (requests, rejected) = http.requests();
    assert!(
        rejected > 0 && requests == rejected,
        "the collector should have kept retrying the HTTP drain"
    );
    assert!(collector.metric_sum("sluice_collector_delivery_failures_total", &[("drain", "http")]) > 0.0);
    let lag = collector.metric_sum("sluice_collector_lag_bytes", &[("drain", "http")]);
    assert!(
        lag > 0.0,
        "sluice_collector_lag_bytes{{drain=\"http\"}} should show the down drain's backlog; metrics: {:?}",
        collector.metrics().map(|m| m
            .into_iter()
            .filter(|(k, _)| k.contains("lag") || k.contains("http"))
            .collect::<Vec<_>>())
    );

    http.set_failing(false);
    expect_exact(
        "the drain that was down, after catching up",
        &want,
        DELIVERY_TIMEOUT,
        || http.messages().into_iter().collect(),
        || collector.log_tail(10),
    )?;
    Ok(())
}

/// A drain whose port refuses connections, and one that accepts but never reads: the healthy
/// drain gets every line, the failures are counted, the collector stays healthy.
#[test]
fn refusing_and_hanging_drains_do_not_stall_the_others() -> Result<()> {
    let test = "refusing_and_hanging_drains_do_not_stall_the_others";
    let Some(DockerRig {
        bins,
        rsyslog_bin: rs_bin,
        docker,
    }) = docker_rig(test)?
    else {
        return Ok(());
    };
    let rsyslog = Rsyslog::start(&rs_bin)?;
    // The hanging drain: accepts connections and holds them without reading a byte.
    let hang = TcpListener::bind("127.0.0.1:0")?;
    let hang_port = hang.local_addr()?.port();
    let stop = Arc::new(AtomicBool::new(false));
    let holder = {
        let stop = stop.clone();
        hang.set_nonblocking(true)?;
        thread::spawn(move || {
            let mut held = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Ok((s, _)) = hang.accept() {
                    held.push(s);
                }
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let refused_port = free_port(); // nothing listens there
    let pods = temp_dir("sluice-pods-")?;
    let drains = [
        Drain::new("good", format!("syslog://127.0.0.1:{}", rsyslog.ports.tcp)),
        Drain::new("refused", format!("syslog://127.0.0.1:{refused_port}")),
        Drain::new("hanging", format!("syslog://127.0.0.1:{hang_port}")).timeout(2000),
    ];
    let collector = Collector::start(
        &bins,
        &config_yaml(
            docker.root(),
            pods.path(),
            &drains,
            &[select("bad-*", &["good", "refused", "hanging"])],
        ),
    )?;
    // 20,000 lines of ~1 KB: far more than the hanging drain's socket buffers hold.
    let spec = LineSpec::new("bad-drains", 900, 1100);
    let count = 20_000;
    let id = docker.run(&RunSpec {
        name: "bad-drains".into(),
        args: loggen_args(&spec, count, 0),
        ..RunSpec::default()
    })?;
    assert_eq!(docker.wait(&id)?, 0);
    expect_exact(
        "the good drain beside a refusing and a hanging one",
        &lines(&spec, 0, count),
        DELIVERY_TIMEOUT,
        || rs_msgs(&rsyslog),
        || collector.log_tail(10),
    )?;
    wait_until(
        "failures of the refusing drain to be counted",
        Duration::from_secs(30),
        || {
            (collector.metric_sum(
                "sluice_collector_delivery_failures_total",
                &[("drain", "refused")],
            ) > 0.0)
                .then_some(())
        },
        || collector.log_tail(10),
    )?;
    assert!(
        collector.metric_sum("sluice_collector_lag_bytes", &[("drain", "hanging")]) > 0.0,
        "the hanging drain lags"
    );
    let (status, _) = sluice_tests::collector::get(port_of(&collector), "/healthz")?;
    assert_eq!(status, 200, "the collector stays healthy");
    stop.store(true, Ordering::SeqCst);
    let _ = holder.join();
    Ok(())
}

fn port_of(collector: &Collector) -> u16 {
    collector.port()
}
