//! The collector against Docker's own json-file logs (issue 2, "How it is shown"): steady flow to
//! every drain kind, rotation at a high rate, a container that exits, and lines over 16 KiB.
//! Every test compares the multiset of lines written with the multiset received: zero loss, zero
//! duplicates.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;
use sluice_tests::{
    LineSpec,
    collector::{Collector, NODE},
    docker::{Docker, RunSpec},
    fixture::{DockerRig, Drain, config_yaml, docker_rig, expect_exact, lines, loggen_args, select},
    http::HttpReceiver,
    multiset::Multiset,
    support::{bin_dir, need, temp_dir},
    syslog::{Received, Rsyslog, SyslogNg},
};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(180);

fn msgs(received: &[Received]) -> Multiset {
    received.iter().map(|r| r.msg.clone()).collect()
}

fn run_loggen(
    docker: &Docker,
    name: &str,
    spec: &LineSpec,
    count: u64,
    rate: u64,
    rotate: Option<(&str, u32)>,
) -> Result<String> {
    docker.run(&RunSpec {
        name: name.into(),
        labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
        args: loggen_args(spec, count, rate),
        max_size: rotate.map(|(s, _)| s.to_owned()),
        max_file: rotate.map(|(_, n)| n),
        compress: false,
    })
}

/// Several containers, both streams, to rsyslog over TCP, syslog-ng over TLS, rsyslog over UDP
/// (a few lines) and HTTP; checks the metadata each receiver parsed.
#[test]
fn steady_flow_reaches_every_drain_kind_exactly_once() -> Result<()> {
    let test = "steady_flow_reaches_every_drain_kind_exactly_once";
    let Some(bins) = need(test, bin_dir()) else {
        return Ok(());
    };
    let Some(rs_bin) = need(test, Rsyslog::available()) else {
        return Ok(());
    };
    let Some(ng_root) = need(test, SyslogNg::available()) else {
        return Ok(());
    };
    let Some(docker) = need(test, Docker::start_if_available()) else {
        return Ok(());
    };
    let docker = docker?;
    docker.build_loggen_image(&bins)?;
    let (rsyslog, ng, http) = (
        Rsyslog::start(&rs_bin)?,
        SyslogNg::start(&ng_root)?,
        HttpReceiver::start()?,
    );
    let pods = temp_dir("sluice-pods-")?;
    let drains = [
        Drain::new("rs-tcp", format!("syslog://127.0.0.1:{}", rsyslog.ports.tcp)),
        Drain::new("ng-tls", format!("syslog-tls://127.0.0.1:{}", ng.ports.tls)).ca(&ng.certs.ca),
        Drain::new("rs-udp", format!("syslog-udp://127.0.0.1:{}", rsyslog.ports.udp)),
        Drain::new("http", http.url()),
    ];
    let selectors = [
        select("flow-*", &["rs-tcp", "ng-tls", "http"]),
        select("udp-*", &["rs-udp"]),
    ];
    let collector = Collector::start(
        &bins,
        &config_yaml(docker.root(), pods.path(), &drains, &selectors),
    )?;

    let mut written = Multiset::new();
    let mut ids = BTreeMap::new();
    for name in ["flow-a", "flow-b", "flow-c"] {
        let mut spec = LineSpec::new(name, 60, 300);
        spec.stderr_every = 7;
        ids.insert(run_loggen(&docker, name, &spec, 3000, 600, None)?, name);
        written.merge(&lines(&spec, 0, 3000));
    }
    let udp_spec = LineSpec::new("udp-a", 40, 120);
    let udp_id = run_loggen(&docker, "udp-a", &udp_spec, 20, 20, None)?;
    for id in ids.keys().chain([&udp_id]) {
        assert_eq!(docker.wait(id)?, 0, "loggen in {id} failed");
    }

    let ctx = || collector.log_tail(15);
    let mut rs_want = written.clone();
    rs_want.merge(&lines(&udp_spec, 0, 20));
    let rs_got = || msgs(&rsyslog.received());
    expect_exact("rsyslog TCP + UDP", &rs_want, DELIVERY_TIMEOUT, rs_got, ctx)?;
    let ng_got = || msgs(&ng.received());
    expect_exact("syslog-ng TLS", &written, DELIVERY_TIMEOUT, ng_got, ctx)?;
    let http_got = || http.messages().into_iter().collect();
    expect_exact("HTTP", &written, DELIVERY_TIMEOUT, http_got, ctx)?;

    // What the receivers parsed: on a plain Docker host APP-NAME is the container name, HOSTNAME
    // the node, and STRUCTURED-DATA names the container and its id.
    for r in rsyslog.received().iter().chain(ng.received().iter()) {
        let (id, name) = ids
            .iter()
            .find(|(_, n)| r.msg.starts_with(&format!("{n} ")))
            .map(|(i, n)| (i.as_str(), *n))
            .unwrap_or((udp_id.as_str(), "udp-a"));
        assert_eq!(r.app, name, "APP-NAME of {r:?}");
        assert_eq!(r.host, NODE, "HOSTNAME of {r:?}");
        assert_eq!(r.sd_param("container"), Some(name), "SD container of {r:?}");
        assert_eq!(r.sd_param("containerId"), Some(id), "SD containerId of {r:?}");
        assert!(!r.msgid.is_empty(), "MSGID (the stable message id) of {r:?}");
    }
    for line in http.lines() {
        let message = line["message"].as_str().unwrap_or_default();
        let name = message.split(' ').next().unwrap_or_default();
        assert_eq!(line["container"].as_str(), Some(name), "{line}");
        assert!(
            line["stream"]
                .as_str()
                .is_some_and(|s| s == "stdout" || s == "stderr"),
            "{line}"
        );
    }
    Ok(())
}

/// Docker rotates a small json-file (max-size 100k, max-file 3) many times a second; the
/// collector follows every rotation without losing or repeating a line.
#[test]
fn docker_rotation_at_a_high_rate() -> Result<()> {
    let test = "docker_rotation_at_a_high_rate";
    let Some(DockerRig {
        bins,
        rsyslog_bin: rs_bin,
        docker,
    }) = docker_rig(test)?
    else {
        return Ok(());
    };
    let rsyslog = Rsyslog::start(&rs_bin)?;
    let pods = temp_dir("sluice-pods-")?;
    let drains = [Drain::new(
        "rs-tcp",
        format!("syslog://127.0.0.1:{}", rsyslog.ports.tcp),
    )];
    let collector = Collector::start(
        &bins,
        &config_yaml(
            docker.root(),
            pods.path(),
            &drains,
            &[select("rot-*", &["rs-tcp"])],
        ),
    )?;

    let mut spec = LineSpec::new("rot-a", 100, 200);
    spec.stderr_every = 5;
    let count = 20_000;
    let id = run_loggen(&docker, "rot-a", &spec, count, 2000, Some(("100k", 3)))?;
    assert_eq!(docker.wait(&id)?, 0);
    let want = lines(&spec, 0, count);
    expect_exact(
        "rotation at 2000 lines/s through 100 KiB files",
        &want,
        DELIVERY_TIMEOUT,
        || msgs(&rsyslog.received()),
        || collector.log_tail(15),
    )?;
    let dropped = collector.metric_sum("sluice_collector_lines_dropped_total", &[]);
    assert_eq!(dropped, 0.0, "the collector reports dropped lines");
    Ok(())
}

/// A container that exits is read to its end (its last lines arrive), even when it is removed
/// right after; lines over 16 KiB (split by Docker into partial entries) arrive whole, including
/// ones split across a rotation.
#[test]
fn exited_container_and_long_lines_arrive_whole() -> Result<()> {
    let test = "exited_container_and_long_lines_arrive_whole";
    let Some(DockerRig {
        bins,
        rsyslog_bin: rs_bin,
        docker,
    }) = docker_rig(test)?
    else {
        return Ok(());
    };
    let (rsyslog, http) = (Rsyslog::start(&rs_bin)?, HttpReceiver::start()?);
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
            &[select("*", &["rs-tcp", "http"])],
        ),
    )?;

    // Long lines every 7th (40,000 bytes: three Docker entries each) through 120 KB files, so
    // some are split across a rotation.
    let mut long = LineSpec::new("long-a", 100, 2000);
    (long.long_every, long.long_bytes) = (7, 40_000);
    let long_id = run_loggen(&docker, "long-a", &long, 700, 200, Some(("120k", 5)))?;
    let short = LineSpec::new("short-a", 50, 80);
    let short_id = run_loggen(&docker, "short-a", &short, 500, 0, None)?;
    assert_eq!(docker.wait(&short_id)?, 0);
    assert_eq!(docker.wait(&long_id)?, 0);

    let mut want = lines(&long, 0, 700);
    want.merge(&lines(&short, 0, 500));
    let ctx = || collector.log_tail(15);
    expect_exact(
        "long lines and an exited container via rsyslog",
        &want,
        DELIVERY_TIMEOUT,
        || msgs(&rsyslog.received()),
        ctx,
    )?;
    expect_exact(
        "long lines and an exited container via HTTP",
        &want,
        DELIVERY_TIMEOUT,
        || http.messages().into_iter().collect(),
        ctx,
    )?;
    docker.rm(&short_id)?;
    Ok(())
}
