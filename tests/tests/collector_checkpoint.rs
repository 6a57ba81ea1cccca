//! A state directory that fills up: checkpoint writes fail loudly (counted, logged once, and
//! `/readyz` fails) while lines keep shipping exactly; once there is room again the checkpoint is
//! written, the recovery is logged and the collector is ready again.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;
use sluice_loggen::json_file::JsonFileWriter;
use sluice_tests::{
    Stream,
    collector::{Collector, get},
    fixture::{Drain, FakeContainer, FileRig, config_yaml, expect_exact, file_rig, select},
    multiset::Multiset,
    support::{Tmpfs, wait_until},
    syslog::Rsyslog,
};

const T: Duration = Duration::from_secs(120);

fn write(container: &FakeContainer, tag: &str, count: usize) -> Result<Multiset> {
    let mut w = JsonFileWriter::open(container.log_path(), None)?;
    let mut want = Multiset::new();
    for i in 0..count {
        let line = format!("{tag} {i:05}");
        w.write_line(Stream::Stdout, &line)?;
        want.add(line);
    }
    w.sync()?;
    Ok(want)
}

#[test]
fn a_full_state_directory_is_loud_and_shipping_goes_on() -> Result<()> {
    let Some(FileRig {
        bins,
        rsyslog_bin,
        root,
        pods,
    }) = file_rig("a_full_state_directory_is_loud_and_shipping_goes_on")?
    else {
        return Ok(());
    };
    let rsyslog = Rsyslog::start(&rsyslog_bin)?;
    let state = Tmpfs::mount(1024 * 1024)?;
    let drains = [Drain::new(
        "rs",
        format!("syslog://127.0.0.1:{}", rsyslog.ports.tcp),
    )];
    let yaml = config_yaml(root.path(), pods.path(), &drains, &[select("*", &["rs"])]);
    let collector = Collector::start_with_state(&bins, &yaml, Some(state.path()))?;
    let received = || -> Multiset { rsyslog.received().iter().map(|m| m.msg.clone()).collect() };
    let c = FakeContainer::create(root.path(), "writer", &BTreeMap::new())?;

    let mut want = write(&c, "before", 500)?;
    expect_exact("before the disk fills", &want, T, received, || {
        collector.log_tail(20)
    })?;
    state.fill("filler")?;
    want.merge(&write(&c, "full", 500)?);
    expect_exact("while the disk is full", &want, T, received, || {
        collector.log_tail(20)
    })?;
    let port = collector.port();
    let (status, body) = wait_until(
        "/readyz to fail while the checkpoint cannot be written",
        T,
        || get(port, "/readyz").ok().filter(|(status, _)| *status == 503),
        || collector.log_tail(20),
    )?;
    assert_eq!(status, 503);
    assert!(body.contains("checkpoint"), "/readyz says why: {body}");
    assert!(collector.metric("sluice_collector_checkpoint_errors_total") > 0.0);
    let log = collector.log();
    assert_eq!(
        log.matches("cannot write the checkpoint").count(),
        1,
        "the first failure is logged, once:\n{}",
        collector.log_tail(20)
    );

    std::fs::remove_file(state.path().join("filler"))?;
    wait_until(
        "/readyz to pass again once the checkpoint is written",
        T,
        || get(port, "/readyz").ok().filter(|(status, _)| *status == 200),
        || collector.log_tail(20),
    )?;
    assert!(collector.log().contains("the checkpoint is written again"));
    want.merge(&write(&c, "after", 500)?);
    expect_exact("after the disk has room", &want, T, received, || {
        collector.log_tail(20)
    })?;
    Ok(())
}
