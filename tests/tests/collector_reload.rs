//! Config changes while lines flow: a drain added, one removed, selectors changed, a bad drain
//! skipped (naming the field) while the others run, and an invalid config rejected while the last
//! good one keeps running. The drain that never changes loses and repeats nothing.

use std::time::Duration;

use anyhow::Result;
use sluice_tests::{
    LineSpec,
    collector::Collector,
    docker::{Docker, RunSpec},
    fixture::{Drain, Selector, config_yaml, expect_exact, lines, loggen_args, select, wait_for_lines},
    http::HttpReceiver,
    multiset::{Multiset, compare},
    support::{bin_dir, need, temp_dir, wait_until},
    syslog::{Rsyslog, SyslogNg},
};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(180);

fn rs_msgs(receiver: &Rsyslog) -> Multiset {
    receiver.received().iter().map(|m| m.msg.clone()).collect()
}

fn ng_msgs(receiver: &SyslogNg) -> Multiset {
    receiver.received().iter().map(|m| m.msg.clone()).collect()
}

/// Panic on repeats or invented lines (a changed drain may legitimately see only part of the stream).
fn assert_subset(what: &str, written: &Multiset, received: &Multiset) {
    let diff = compare(written, received);
    assert!(
        diff.duplicated == 0 && diff.unexpected == 0,
        "{what}: repeats or invented lines\n{diff}"
    );
    eprintln!("{what}: {} of {} lines, no repeats", diff.received, diff.written);
}

#[test]
fn config_changes_while_lines_flow() -> Result<()> {
    let test = "config_changes_while_lines_flow";
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
    let keep = Drain::new("keep", format!("syslog://127.0.0.1:{}", rsyslog.ports.tcp));
    let gone = Drain::new("gone", http.url());
    let added = Drain::new("added", format!("syslog://127.0.0.1:{}", ng.ports.tcp));
    let yaml = |drains: &[Drain], sel: &[Selector]| -> String {
        config_yaml(docker.root(), pods.path(), drains, sel)
    };
    let config1 = yaml(
        &[keep.clone(), gone.clone()],
        &[select("rl-*", &["keep", "gone"])],
    );
    let mut collector = Collector::start(&bins, &config1)?;

    let (a, b) = (LineSpec::new("rl-a", 80, 160), LineSpec::new("rl-b", 80, 160));
    let count = 15_000;
    let mut ids = Vec::new();
    for spec in [&a, &b] {
        ids.push(docker.run(&RunSpec {
            name: spec.tag.clone(),
            args: loggen_args(spec, count, 500),
            ..RunSpec::default()
        })?);
    }
    let reloads = |c: &Collector, result: &str| {
        c.metric_sum("sluice_collector_config_reloads_total", &[("result", result)])
    };
    let step = |c: &mut Collector, yaml: String, n: f64, what: &str| -> Result<()> {
        let before = rs_msgs(&rsyslog).len();
        c.write_config(&yaml)?;
        wait_until(
            what,
            Duration::from_secs(30),
            || (reloads(c, "applied") >= n).then_some(()),
            || c.log_tail(10),
        )?;
        // Let lines flow under the new config before the next change.
        wait_for_lines(
            "keep after the change",
            before + 1000,
            DELIVERY_TIMEOUT,
            || rs_msgs(&rsyslog),
            || c.log_tail(10),
        )?;
        Ok(())
    };
    wait_for_lines(
        "keep",
        1000,
        DELIVERY_TIMEOUT,
        || rs_msgs(&rsyslog),
        || collector.log_tail(10),
    )?;
    // 1: add a drain. 2: remove one. 3: change selectors (the added drain now gets only rl-b).
    step(
        &mut collector,
        yaml(
            &[keep.clone(), gone.clone(), added.clone()],
            &[select("rl-*", &["keep", "gone", "added"])],
        ),
        1.0,
        "drain added",
    )?;
    step(
        &mut collector,
        yaml(
            &[keep.clone(), added.clone()],
            &[select("rl-*", &["keep", "added"])],
        ),
        2.0,
        "drain removed",
    )?;
    let http_after_removal = http.messages().len();
    step(
        &mut collector,
        yaml(
            &[keep.clone(), added.clone()],
            &[select("rl-*", &["keep"]), select("rl-b", &["added"])],
        ),
        3.0,
        "selectors changed",
    )?;

    // 4: a drain with an unknown scheme (drains[2].url) is skipped, naming the field, while the
    // other drains of the same edit run; 5: an invalid file (an unknown version) is rejected as a
    // whole and the last good config keeps running.
    let with_bad = yaml(
        &[
            keep.clone(),
            added.clone(),
            Drain::new("bad", "smtp://127.0.0.1:25"),
        ],
        &[select("rl-*", &["keep", "bad"]), select("rl-b", &["added"])],
    );
    collector.write_config(&with_bad)?;
    wait_until(
        "the bad drain to be skipped",
        Duration::from_secs(30),
        || (collector.metric("sluice_collector_drains_skipped") >= 1.0).then_some(()),
        || collector.log_tail(10),
    )?;
    let (_, ready) = sluice_tests::collector::get(collector.port(), "/readyz")?;
    assert!(
        ready.contains("drain \"bad\" skipped: drains[2].url: "),
        "/readyz should name the skipped drain and its field:\n{ready}"
    );
    collector.write_config(&with_bad.replace("version: 1", "version: 2"))?;
    wait_until(
        "the invalid config to be rejected",
        Duration::from_secs(30),
        || (reloads(&collector, "rejected") >= 1.0).then_some(()),
        || collector.log_tail(10),
    )?;
    assert!(
        collector.log().contains("version 2 is not supported"),
        "the rejection should say why:\n{}",
        collector.log_tail(20)
    );
    assert!(
        collector.is_running(),
        "an invalid config must not stop the collector"
    );

    for id in &ids {
        assert_eq!(docker.wait(id)?, 0);
    }
    let mut want = lines(&a, 0, count);
    want.merge(&lines(&b, 0, count));
    expect_exact(
        "the unchanged drain across four config changes",
        &want,
        DELIVERY_TIMEOUT,
        || rs_msgs(&rsyslog),
        || collector.log_tail(15),
    )?;
    assert_subset("the removed drain", &want, &http.messages().into_iter().collect());
    assert!(
        http.messages().len() <= http_after_removal + 2048,
        "the removed drain kept receiving"
    );
    let added_got = ng_msgs(&ng);
    assert_subset("the added drain", &want, &added_got);
    assert!(!added_got.is_empty(), "the added drain received nothing");
    Ok(())
}
