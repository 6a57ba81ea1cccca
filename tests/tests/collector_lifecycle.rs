//! Short-lived containers against a collector that is paused, starved or backed up: the real
//! collector on json-file logs the test writes itself, two rsyslog receivers. A container is
//! forgotten only once every drain has read it to its end and acknowledged it, so every line of
//! every container reaches every drain, and `lines_dropped_total` stays 0.

use std::{collections::BTreeMap, thread, time::Duration};

use anyhow::Result;
use sluice_loggen::json_file::JsonFileWriter;
use sluice_tests::{
    Stream,
    collector::Collector,
    fixture::{DockerState, Drain, FakeContainer, FileRig, config_yaml, expect_exact, file_rig, select},
    multiset::Multiset,
    syslog::Rsyslog,
};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(180);
/// A few of the collector's rescan intervals (1 s): long enough for it to have looked.
const LOOKS: Duration = Duration::from_secs(3);

/// A collector shipping every fake container to two rsyslog receivers, `a` and `b`.
struct Setup {
    a: Rsyslog,
    b: Rsyslog,
    collector: Collector,
    root: tempfile::TempDir,
    _pods: tempfile::TempDir,
}

impl Setup {
    fn start(test: &str) -> Result<Option<Self>> {
        let Some(FileRig {
            bins,
            rsyslog_bin,
            root,
            pods,
        }) = file_rig(test)?
        else {
            return Ok(None);
        };
        let (a, b) = (Rsyslog::start(&rsyslog_bin)?, Rsyslog::start(&rsyslog_bin)?);
        // A receiver held still for a while is not a dead one: no reconnect (and resend) while
        // the test holds it.
        let drains = [
            Drain::new("a", format!("syslog://127.0.0.1:{}", a.ports.tcp)).timeout(120_000),
            Drain::new("b", format!("syslog://127.0.0.1:{}", b.ports.tcp)).timeout(120_000),
        ];
        let yaml = config_yaml(root.path(), pods.path(), &drains, &[select("*", &["a", "b"])]);
        let collector = Collector::start(&bins, &yaml)?;
        Ok(Some(Self {
            a,
            b,
            collector,
            root,
            _pods: pods,
        }))
    }

    /// A container in `state`, with no log file yet.
    fn container(&self, name: &str, state: DockerState) -> Result<FakeContainer> {
        let c = FakeContainer::create(self.root.path(), name, &BTreeMap::new())?;
        c.set_state(state, &BTreeMap::new())?;
        Ok(c)
    }

    fn received(receiver: &Rsyslog) -> Multiset {
        receiver.received().iter().map(|m| m.msg.clone()).collect()
    }

    /// Every line of `want` at both receivers, exactly, and nothing counted as dropped.
    fn expect_everywhere(&self, want: &Multiset) -> Result<()> {
        for (label, r) in [("drain a", &self.a), ("drain b", &self.b)] {
            expect_exact(
                label,
                want,
                DELIVERY_TIMEOUT,
                || Self::received(r),
                || self.collector.log_tail(20),
            )?;
        }
        let dropped = self
            .collector
            .metric_sum("sluice_collector_lines_dropped_total", &[]);
        assert_eq!(dropped, 0.0, "no line may be counted as lost here");
        Ok(())
    }
}

/// Write `count` lines named after `name` into `c`'s log; returns them.
fn write_lines(container: &FakeContainer, name: &str, count: usize) -> Result<Multiset> {
    let mut w = JsonFileWriter::open(container.log_path(), None)?;
    let mut want = Multiset::new();
    for i in 0..count {
        let line = format!("{name} {i:06} {}", "x".repeat(40 + i % 60));
        w.write_line(Stream::Stdout, &line)?;
        want.add(line);
    }
    w.sync()?;
    Ok(want)
}

/// `docker create` (seen with no log file), then the collector is stopped (SIGSTOP) while the
/// container starts, writes 1,000 lines and exits; continued, it delivers all of them.
#[test]
fn container_run_entirely_while_the_collector_is_stopped() -> Result<()> {
    let Some(s) = Setup::start("container_run_entirely_while_the_collector_is_stopped")? else {
        return Ok(());
    };
    let c = s.container("created-then-run", DockerState::Created)?;
    thread::sleep(LOOKS);
    s.collector.pause(true);
    c.set_state(DockerState::Running, &BTreeMap::new())?;
    let want = write_lines(&c, "paused", 1_000)?;
    c.set_state(DockerState::Exited, &BTreeMap::new())?;
    s.collector.pause(false);
    s.expect_everywhere(&want)
}

/// A container seen with an empty log writes 1,000 lines and exits while drain `b`'s receiver
/// is stopped and its backlog is full of another container's lines; `b` gets all of both once
/// its receiver reads again.
#[test]
fn container_written_and_exited_while_a_drain_is_backed_up() -> Result<()> {
    let Some(s) = Setup::start("container_written_and_exited_while_a_drain_is_backed_up")? else {
        return Ok(());
    };
    let quiet = s.container("seen-empty", DockerState::Running)?;
    JsonFileWriter::open(quiet.log_path(), None)?.sync()?;
    thread::sleep(LOOKS);
    s.b.pause(true);
    let flood = s.container("flood", DockerState::Running)?;
    let mut want = write_lines(&flood, "flood", 100_000)?;
    flood.set_state(DockerState::Exited, &BTreeMap::new())?;
    want.merge(&write_lines(&quiet, "quiet", 1_000)?);
    quiet.set_state(DockerState::Exited, &BTreeMap::new())?;
    // Drain a takes everything, while b's backlog stays full across several looks.
    expect_exact(
        "drain a while b is backed up",
        &want,
        DELIVERY_TIMEOUT,
        || Setup::received(&s.a),
        || s.collector.log_tail(20),
    )?;
    thread::sleep(LOOKS);
    s.b.pause(false);
    s.expect_everywhere(&want)
}

/// Two containers flood while drain `b`'s receiver stops reading for 10 s; a third container
/// writes 30,000 lines and exits during the stall. Every drain gets every line.
#[test]
fn a_third_container_during_a_stalled_drain() -> Result<()> {
    let Some(s) = Setup::start("a_third_container_during_a_stalled_drain")? else {
        return Ok(());
    };
    let floods = [
        s.container("flood-1", DockerState::Running)?,
        s.container("flood-2", DockerState::Running)?,
    ];
    let mut want = Multiset::new();
    for (n, c) in floods.iter().enumerate() {
        want.merge(&write_lines(c, &format!("flood-{n}"), 20_000)?);
    }
    s.b.pause(true);
    for (n, c) in floods.iter().enumerate() {
        want.merge(&write_lines(c, &format!("more-{n}"), 40_000)?);
    }
    let third = s.container("third", DockerState::Running)?;
    want.merge(&write_lines(&third, "third", 30_000)?);
    third.set_state(DockerState::Exited, &BTreeMap::new())?;
    thread::sleep(Duration::from_secs(10));
    s.b.pause(false);
    s.expect_everywhere(&want)
}
