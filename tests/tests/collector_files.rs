//! The collector on json-file logs the test writes itself (no Docker needed): copy-truncate
//! rotation, long lines split across a rotation, and each kind of bad input (malformed JSON,
//! invalid UTF-8, a line of many MiB, truncated and garbage files, an unreadable file, an
//! invalid config). Bad input is counted and skipped; every good line arrives exactly once.

use std::{collections::BTreeMap, fs, process::Command, thread, time::Duration};

use anyhow::Result;
use sluice_loggen::json_file::{JsonFileWriter, Rotation};
use sluice_tests::{
    LineSpec, Stream,
    collector::Collector,
    fixture::{
        Drain, FakeContainer, FileRig, config_yaml, expect_exact, file_rig, lines, select, wait_for_lines,
    },
    multiset::{Multiset, assert_exact, compare},
    support::{bin_dir, need, temp_dir, wait_until},
    syslog::Rsyslog,
};

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

/// A collector reading a fake Docker root, shipping every container to rsyslog over TCP.
struct Setup {
    rsyslog: Rsyslog,
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
        let rsyslog = Rsyslog::start(&rsyslog_bin)?;
        let drains = [Drain::new(
            "rs-tcp",
            format!("syslog://127.0.0.1:{}", rsyslog.ports.tcp),
        )];
        let yaml = config_yaml(root.path(), pods.path(), &drains, &[select("*", &["rs-tcp"])]);
        let collector = Collector::start(&bins, &yaml)?;
        Ok(Some(Self {
            rsyslog,
            collector,
            root,
            _pods: pods,
        }))
    }

    fn container(&self, name: &str) -> Result<FakeContainer> {
        FakeContainer::create(self.root.path(), name, &BTreeMap::new())
    }

    fn received(&self) -> Multiset {
        self.rsyslog.received().iter().map(|m| m.msg.clone()).collect()
    }

    fn wait(&self, what: &str, count: u64) -> Result<Multiset> {
        wait_for_lines(
            what,
            count,
            DELIVERY_TIMEOUT,
            || self.received(),
            || self.collector.log_tail(15),
        )
    }

    fn expect(&self, label: &str, want: &Multiset) -> Result<()> {
        expect_exact(
            label,
            want,
            DELIVERY_TIMEOUT,
            || self.received(),
            || self.collector.log_tail(15),
        )
    }

    fn wait_metric(&self, name: &str, labels: &[(&str, &str)]) -> Result<()> {
        wait_until(
            &format!("{name}{labels:?} > 0"),
            Duration::from_secs(30),
            || (self.collector.metric_sum(name, labels) > 0.0).then_some(()),
            || {
                format!(
                    "metrics: {:?}\n{}",
                    self.collector.metrics().ok(),
                    self.collector.log_tail(10)
                )
            },
        )
    }
}

fn write_lines(writer: &mut JsonFileWriter, spec: &LineSpec, range: std::ops::Range<u64>) -> Result<()> {
    for seq in range {
        writer.write_line(spec.stream(seq), &spec.line(seq))?;
    }
    Ok(())
}

/// logrotate's copytruncate, five times while lines flow: copy the file to `.1` (older copies
/// shifted to `.2`, …), truncate the original, write on. The writer pauses during copy+truncate.
#[test]
fn copy_truncate_rotation() -> Result<()> {
    let Some(s) = Setup::start("copy_truncate_rotation")? else {
        return Ok(());
    };
    let c = s.container("ct-a")?;
    let mut spec = LineSpec::new("ct-a", 80, 200);
    spec.stderr_every = 4;
    let mut w = JsonFileWriter::open(c.log_path(), None)?;
    let per_phase = 3000;
    for phase in 0..5u64 {
        write_lines(&mut w, &spec, phase * per_phase..(phase + 1) * per_phase)?;
        thread::sleep(Duration::from_millis(200)); // let the collector be mid-file or caught up
        for k in (1..=phase).rev() {
            fs::rename(
                format!("{}.{k}", c.log_path().display()),
                format!("{}.{}", c.log_path().display(), k + 1),
            )?;
        }
        fs::copy(c.log_path(), format!("{}.1", c.log_path().display()))?;
        fs::OpenOptions::new()
            .write(true)
            .open(c.log_path())?
            .set_len(0)?;
    }
    write_lines(&mut w, &spec, 5 * per_phase..6 * per_phase)?;
    s.expect("copy-truncate x5", &lines(&spec, 0, 6 * per_phase))
}

/// Lines of 40,000 bytes (three 16 KiB entries) through 64 KiB files, so that many are split
/// across a rotation; each arrives whole.
#[test]
fn long_lines_split_across_rotation() -> Result<()> {
    let Some(s) = Setup::start("long_lines_split_across_rotation")? else {
        return Ok(());
    };
    let c = s.container("split-a")?;
    let mut spec = LineSpec::new("split-a", 100, 3000);
    (spec.long_every, spec.long_bytes) = (3, 40_000);
    let mut w = JsonFileWriter::open(
        c.log_path(),
        Some(Rotation {
            max_bytes: 64 * 1024,
            max_files: 10,
        }),
    )?;
    let (chunk, chunks) = (15, 20);
    // Write in chunks and wait for each. A chunk (about 220 KB, five files) fits in the 10 files kept, so
    // rotation never deletes a file before the collector has seen it, even on a machine so
    // busy that it sees none until the chunk is written (a file deleted unseen is a loss no
    // tailer can know of; not what this test is about).
    for i in 0..chunks {
        write_lines(&mut w, &spec, i * chunk..(i + 1) * chunk)?;
        s.wait("rsyslog", (i + 1) * chunk)?;
    }
    assert_exact(
        "long lines across rotations",
        &lines(&spec, 0, chunk * chunks),
        &s.received(),
    );
    Ok(())
}

fn good_bad_good(test: &str, bad: &[u8], cause: &str) -> Result<()> {
    let Some(s) = Setup::start(test)? else {
        return Ok(());
    };
    let c = s.container(&format!("in-{}", cause.replace('_', "-")))?;
    let spec = LineSpec::new(&c.name, 60, 120);
    let mut w = JsonFileWriter::open(c.log_path(), None)?;
    write_lines(&mut w, &spec, 0..200)?;
    w.write_raw(bad)?;
    write_lines(&mut w, &spec, 200..400)?;
    let got = s.wait("rsyslog", 400)?;
    let want = lines(&spec, 0, 400);
    let diff = compare(&want, &got);
    assert!(
        diff.missing == 0 && diff.duplicated == 0,
        "{test}: good lines lost or repeated\n{diff}"
    );
    // Nothing but the good lines, except a repaired form of the bad one (marked "BAD").
    for (line, _) in got.iter().filter(|(l, _)| want.count(l) == 0) {
        assert!(line.contains("BAD"), "{test}: unexpected line {line:?}");
    }
    s.wait_metric("sluice_collector_input_errors_total", &[("cause", cause)])?;
    Ok(())
}

#[test]
fn malformed_json_lines_are_counted_and_skipped() -> Result<()> {
    let bad = b"{\"log\":\"BAD broken\nnot json at all BAD\n{\"log\":5,\"stream\":\"stdout\"}\n";
    good_bad_good(
        "malformed_json_lines_are_counted_and_skipped",
        bad,
        "malformed_json",
    )
}

#[test]
fn invalid_utf8_is_counted() -> Result<()> {
    let bad = b"{\"log\":\"BAD \xff\xfe bytes\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-21T10:00:00.000000000Z\"}\n";
    good_bad_good("invalid_utf8_is_counted", bad, "invalid_utf8")
}

/// A 6 MiB line (384 Docker entries) is cut to `limits.maxLineBytes` (1 MiB by default) and
/// delivered marked truncated; the lines around it arrive untouched.
#[test]
fn a_line_of_many_mib_is_cut_and_counted() -> Result<()> {
    let Some(s) = Setup::start("a_line_of_many_mib_is_cut_and_counted")? else {
        return Ok(());
    };
    let c = s.container("huge-a")?;
    let spec = LineSpec::new("huge-a", 60, 120);
    let huge = format!("huge-line {}", "h".repeat(6 * 1024 * 1024));
    let mut w = JsonFileWriter::open(c.log_path(), None)?;
    write_lines(&mut w, &spec, 0..100)?;
    w.write_line(Stream::Stdout, &huge)?;
    write_lines(&mut w, &spec, 100..200)?;
    let got = s.wait("rsyslog", 201)?;
    let mut want = lines(&spec, 0, 200);
    let cut: Vec<_> = s
        .rsyslog
        .received()
        .into_iter()
        .filter(|m| m.msg.starts_with("huge-line "))
        .collect();
    assert_eq!(cut.len(), 1, "the huge line should arrive once (cut)");
    assert!(
        huge.starts_with(&cut[0].msg) && cut[0].msg.len() <= 1024 * 1024,
        "cut to at most 1 MiB: {} bytes",
        cut[0].msg.len()
    );
    assert_eq!(
        cut[0].sd_param("truncated"),
        Some("true"),
        "the cut line is marked truncated: {:?}",
        cut[0].sd
    );
    want.add(cut[0].msg.clone());
    assert_exact("lines around a 6 MiB line", &want, &got);
    Ok(())
}

/// A file of garbage, a file cut in the middle of an entry, and a log "file" that cannot be read
/// (a directory) beside a healthy container: the healthy one is delivered exactly.
#[test]
fn garbage_truncated_and_unreadable_files() -> Result<()> {
    let Some(s) = Setup::start("garbage_truncated_and_unreadable_files")? else {
        return Ok(());
    };
    // Garbage: deterministic pseudo-random bytes, newlines included.
    let garbage = s.container("garbage-a")?;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let bytes: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    fs::write(garbage.log_path(), &bytes)?;
    // Truncated: an entry cut in half, then the writer goes on (the cut entry swallows the next).
    let cut = s.container("cut-a")?;
    let cut_spec = LineSpec::new("cut-a", 60, 120);
    let mut w = JsonFileWriter::open(cut.log_path(), None)?;
    write_lines(&mut w, &cut_spec, 0..100)?;
    w.write_raw(b"{\"log\":\"cut-a half of an ent")?;
    write_lines(&mut w, &cut_spec, 100..200)?;
    // Unreadable: the log path is a directory.
    let unreadable = s.container("unreadable-a")?;
    fs::create_dir_all(unreadable.log_path())?;
    let good = s.container("good-a")?;
    let good_spec = LineSpec::new("good-a", 60, 120);
    write_lines(
        &mut JsonFileWriter::open(good.log_path(), None)?,
        &good_spec,
        0..500,
    )?;

    let got = s.wait("rsyslog", 500 + 199)?;
    let mut want = lines(&good_spec, 0, 500);
    want.merge(&lines(&cut_spec, 0, 100));
    want.merge(&lines(&cut_spec, 101, 99));
    let mut got_without_swallowed = Multiset::new();
    for (line, n) in got.iter() {
        if line != cut_spec.line(100) {
            for _ in 0..n {
                got_without_swallowed.add(line);
            }
        }
    }
    assert_exact(
        "healthy and cut files beside garbage and an unreadable file",
        &want,
        &got_without_swallowed,
    );
    assert!(
        s.collector.metric_sum("sluice_collector_input_errors_total", &[]) > 0.0,
        "bad input is counted"
    );
    let (status, _) = sluice_tests::collector::get(s.collector.port(), "/healthz")?;
    assert_eq!(status, 200);
    Ok(())
}

/// `sluice-collector --config` with an invalid file exits non-zero and names the field.
#[test]
fn invalid_config_at_start_names_the_field() -> Result<()> {
    let Some(bins) = need("invalid_config_at_start_names_the_field", bin_dir()) else {
        return Ok(());
    };
    let dir = temp_dir("sluice-badconfig-")?;
    let path = dir.path().join("bad.yaml");
    fs::write(
        &path,
        "version: 1\ndrains:\n  - name: a\n    url: syslog://127.0.0.1:514\n  - name: b\n    url: ftp://x:1\nselectors: []\n",
    )?;
    let out = Command::new(bins.join("sluice-collector"))
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .output()?;
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "an invalid config must be refused: {text}");
    assert!(
        text.contains("drains[1].url"),
        "the message should name drains[1].url: {text}"
    );
    Ok(())
}

/// A drain that cannot be built (its CA file is missing) and one whose entry does not parse (a
/// field from a newer schema, as an older collector meets it) are skipped, counted and listed on
/// `/readyz`; the collector starts anyway and the good drain beside them delivers every line
/// exactly once.
#[test]
fn a_bad_drain_is_skipped_and_the_good_one_delivers_exactly() -> Result<()> {
    let test = "a_bad_drain_is_skipped_and_the_good_one_delivers_exactly";
    let Some(bins) = need(test, bin_dir()) else {
        return Ok(());
    };
    let Some(rs_bin) = need(test, Rsyslog::available()) else {
        return Ok(());
    };
    let rsyslog = Rsyslog::start(&rs_bin)?;
    let (root, pods) = (temp_dir("sluice-docker-root-")?, temp_dir("sluice-pods-")?);
    fs::create_dir_all(root.path().join("containers"))?;
    let drains = [
        Drain::new("good", format!("syslog://127.0.0.1:{}", rsyslog.ports.tcp)),
        Drain::new("no-ca", "syslog-tls://127.0.0.1:9").ca(&root.path().join("missing-ca.pem")),
        Drain::new("newer", "syslog://127.0.0.1:9"),
    ];
    let yaml = config_yaml(
        root.path(),
        pods.path(),
        &drains,
        &[select("*", &["good", "no-ca", "newer"])],
    )
    .replace(
        "url: \"syslog://127.0.0.1:9\"",
        "url: \"syslog://127.0.0.1:9\"\n    compression: zstd",
    );
    let collector = Collector::start(&bins, &yaml)?;
    let c = FakeContainer::create(root.path(), "skip-a", &BTreeMap::new())?;
    let spec = LineSpec::new("skip-a", 80, 200);
    let mut w = JsonFileWriter::open(c.log_path(), None)?;
    write_lines(&mut w, &spec, 0..5_000)?;
    expect_exact(
        "the good drain",
        &lines(&spec, 0, 5_000),
        DELIVERY_TIMEOUT,
        || rsyslog.received().iter().map(|m| m.msg.clone()).collect(),
        || collector.log_tail(15),
    )?;
    assert_eq!(collector.metric("sluice_collector_drains_skipped"), 2.0);
    let (status, body) = sluice_tests::collector::get(collector.port(), "/readyz")?;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("drain \"no-ca\" skipped: ") && body.contains("missing-ca.pem"),
        "{body}"
    );
    assert!(
        body.contains("drain \"newer\" skipped: drains[2]: unknown field `compression`"),
        "{body}"
    );
    Ok(())
}
