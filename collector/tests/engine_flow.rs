//! The engine on real temp dirs with mock drains: steady flow, rotation, copy-truncate, deletion,
//! split lines across a rotation, restarts (graceful and killed), a drain that never takes
//! anything, fairness. Every test compares the multiset of lines written with what was received.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "support/engine.rs"]
mod support;

use std::{fs, time::Duration};

use sluice_api::node_config::Stream;
use support::*;

const T: Duration = Duration::from_secs(30);

fn msg(container: &DockerContainer, stream: Stream, index: usize) -> String {
    format!(
        "{}-{}-{index}-{}",
        &container.id[..6],
        stream.as_str(),
        "x".repeat(100 + index % 80)
    )
}

/// Write `count` lines alternating stdout/stderr; return what a drain must receive.
fn write_lines(container: &DockerContainer, from: usize, count: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut text = String::new();
    for i in from..from + count {
        let stream = if i % 3 == 0 {
            Stream::Stderr
        } else {
            Stream::Stdout
        };
        let m = msg(container, stream, i);
        text.push_str(&docker_records(stream, &m));
        out.push(format!("{}:{m}", stream.as_str()));
    }
    container.append_raw(text.as_bytes());
    out
}

/// Append `text` to the file at `path`, creating it.
fn append_to(path: &std::path::Path, text: &str) {
    use std::io::Write as _;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn assert_exact(drain: &MockDrain, expected: &[String]) {
    // On a timeout the comparison below says what is missing.
    poll(T, || drain.count() >= expected.len());
    assert_same_lines(
        &format!("drain {}", drain.name),
        drain.messages(),
        expected.to_vec(),
    );
}

#[test]
fn steady_flow_to_two_drains() {
    let node = Node::new();
    let (a, b) = (
        MockDrain::start("a", 4, &node.waker),
        MockDrain::start("b", 4, &node.waker),
    );
    let cs: Vec<_> = (0..3)
        .map(|i| DockerContainer::new(&node.docker_root(), i))
        .collect();
    let engine = node.start(
        node.settings(),
        routes(&[&a, &b], cs.iter().map(|c| c.config(&["a", "b"])).collect()),
    );
    let mut expected = Vec::new();
    for round in 0..10 {
        for c in &cs {
            expected.extend(write_lines(c, round * 300, 300));
        }
    }
    assert_exact(&a, &expected);
    assert_exact(&b, &expected);
    assert_eq!(
        node.recorder.get("read:stdout") + node.recorder.get("read:stderr"),
        expected.len() as u64
    );
    // The engine says it is alive about once a second (what the collector's /healthz checks).
    let beats = node.recorder.get("alive");
    wait_for("the engine to report it is alive again", T, || {
        node.recorder.get("alive") > beats
    });
    engine.join();
}

#[test]
fn docker_rotation_at_a_high_rate() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 1);
    let engine = node.start(node.settings(), routes(&[&a], vec![c.config(&["a"])]));
    let mut expected = Vec::new();
    for r in 0..60 {
        expected.extend(write_lines(&c, r * 50, 50));
        // Docker keeps 3 files; the writer stays at most one file ahead of the reader (a file
        // deleted before the collector ever saw it is a loss no tailer can avoid).
        let floor = expected.len().saturating_sub(50);
        wait_for("the reader to keep up", T, || a.count() >= floor);
        c.rotate(3);
    }
    expected.extend(write_lines(&c, 60 * 50, 10));
    assert_exact(&a, &expected);
    assert_eq!(node.recorder.get("dropped"), 0);
    engine.join();
}

#[test]
fn split_line_across_a_rotation_and_long_lines() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 2);
    let engine = node.start(node.settings(), routes(&[&a], vec![c.config(&["a"])]));
    let big = "é".repeat(20_000) + "end"; // 40 KiB: three fragments
    let records = docker_records(Stream::Stdout, &big);
    let lines: Vec<&str> = records.lines().collect();
    assert_eq!(lines.len(), 3);
    let mut expected = write_lines(&c, 0, 5);
    c.append_raw(format!("{}\n", lines[0]).as_bytes());
    // stderr goes on while stdout's long line is being split (the streams interleave).
    for i in 0..3 {
        let m = format!("err-{i}");
        c.write(Stream::Stderr, &m);
        expected.push(format!("stderr:{m}"));
    }
    c.rotate(5);
    c.append_raw(format!("{}\n{}\n", lines[1], lines[2]).as_bytes());
    expected.push(format!("stdout:{big}"));
    expected.extend(write_lines(&c, 5, 5));
    assert_exact(&a, &expected);
    engine.join();
}

#[test]
fn copy_truncate_while_a_drain_lags() {
    let node = Node::new();
    let a = MockDrain::start("a", 2, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 3);
    a.paused.store(true, std::sync::atomic::Ordering::Release);
    let engine = node.start(node.settings(), routes(&[&a], vec![c.config(&["a"])]));
    let mut expected = write_lines(&c, 0, 3000);
    wait_for("the engine to read some", T, || {
        node.recorder.get("read:stdout") > 0
    });
    // The writer pauses while logrotate copies and truncates.
    c.copy_truncate();
    expected.extend(write_lines(&c, 3000, 100));
    a.paused.store(false, std::sync::atomic::Ordering::Release);
    assert_exact(&a, &expected);
    // And once more with the reader caught up (logrotate shifts `.1` to `.2` first).
    fs::rename(c.rotated(1), c.rotated(2)).unwrap();
    c.copy_truncate();
    expected.extend(write_lines(&c, 3100, 100));
    assert_exact(&a, &expected);
    assert_eq!(node.recorder.get("dropped"), 0);
    engine.join();
}

#[test]
fn deleted_files_are_read_to_the_end_and_finished_containers_forgotten() {
    let node = Node::new();
    let a = MockDrain::start("a", 2, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 4);
    a.paused.store(true, std::sync::atomic::Ordering::Release);
    let engine = node.start(node.settings(), routes(&[&a], vec![c.config(&["a"])]));
    let mut expected = write_lines(&c, 0, 2000);
    wait_for("the file to be opened", T, || {
        node.recorder.get("open_files") == 1
    });
    c.rotate(5);
    expected.extend(write_lines(&c, 2000, 500));
    wait_for("both files to be opened", T, || {
        node.recorder.get("open_files") == 2
    });
    // The container exits and is removed: its directory goes away while the drain lags.
    c.set_running(false);
    fs::remove_dir_all(&c.dir).unwrap();
    a.paused.store(false, std::sync::atomic::Ordering::Release);
    assert_exact(&a, &expected);
    wait_for("the container to be forgotten", T, || {
        node.recorder.get("open_files") == 0
    });
    assert_eq!(node.recorder.get("dropped"), 0);
    engine.join();
}

/// A forgotten container is looked at again on a backoff, or when the watcher sees its directory
/// change: with a rescan interval (and so a first backoff) of an hour, only the watcher's hint
/// can bring it back, and lines written to its file after it was forgotten arrive, once.
#[test]
fn a_forgotten_container_whose_file_changes_is_read_again_on_the_watchers_hint() {
    let node = Node::new();
    let a = MockDrain::start("a", 2, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 6);
    let mut settings = node.settings();
    settings.rescan_interval = Duration::from_secs(3600);
    let engine = node.start(settings, routes(&[&a], vec![c.config(&["a"])]));
    let mut expected = write_lines(&c, 0, 100);
    // With no periodic look, the first lines depend on the watcher's first event, which a loaded
    // machine can deliver before the watch is in place: look once they are written.
    wait_for("the first lines", T, || {
        engine.rescan().unwrap();
        a.count() >= expected.len()
    });
    assert_exact(&a, &expected);
    wait_for("the drain to acknowledge everything", T, || a.idle());
    c.set_running(false);
    engine.rescan().unwrap();
    assert_eq!(node.recorder.get("open_files"), 0, "forgotten");
    // Looks without a change in its directory leave it forgotten.
    engine.rescan().unwrap();
    assert_eq!(node.recorder.get("open_files"), 0, "still forgotten");
    // Written while Docker still says it is not running (it ran again between two looks).
    expected.extend(write_lines(&c, 100, 50));
    wait_for("the new lines", T, || {
        engine.rescan().unwrap();
        a.count() >= expected.len()
    });
    assert_exact(&a, &expected);
    assert_eq!(node.recorder.get("dropped"), 0);
    engine.join();
}

/// A lagging drain does not pin deleted files without bound (Vector's DiskPressure complaint):
/// at most 8 deleted files per container stay open for it; closing an older one counts exactly
/// the lines that drain had not read, and it gets every other line once, while a healthy drain
/// gets everything.
#[test]
fn a_lagging_drain_holds_a_bounded_number_of_deleted_files_and_counts_what_it_loses() {
    let node = Node::new();
    let (a, b) = (
        MockDrain::start("a", 2, &node.waker),
        MockDrain::start("b", 4, &node.waker),
    );
    a.paused.store(true, std::sync::atomic::Ordering::Release);
    let c = DockerContainer::new(&node.docker_root(), 60);
    let engine = node.start(node.settings(), routes(&[&a, &b], vec![c.config(&["a", "b"])]));
    // 20 files of 100 lines, rotated with `max-file=2`: each rotation deletes the file before.
    // The healthy drain gets each file's lines before the next rotation, so the engine saw every
    // file before it was deleted.
    let (files, per_file) = (20, 100);
    let mut expected = Vec::new();
    let mut by_file = Vec::new();
    for f in 0..files {
        let lines = write_lines(&c, f * per_file, per_file);
        expected.extend(lines.iter().cloned());
        by_file.push(lines);
        assert_exact(&b, &expected);
        if f + 1 < files {
            c.rotate(2);
        }
    }
    // The 8 newest deleted files stay open for `a`, plus the two on disk.
    wait_for("the open files to settle at the cap", T, || {
        node.recorder.get("open_files") == 8 + 2
    });
    let dropped = node.recorder.get("dropped:a:rotated_away");
    assert!(dropped > 0, "closing unread deleted files is counted");
    assert_eq!(node.recorder.get("dropped"), dropped, "only a lost lines");
    a.paused.store(false, std::sync::atomic::Ordering::Release);
    poll(T, || a.count() as u64 + dropped >= expected.len() as u64);
    let got = a.messages();
    assert_eq!(
        got.len() as u64 + dropped,
        expected.len() as u64,
        "every line either arrived at a or was counted lost for it"
    );
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "a got no line twice");
    assert!(
        got.iter().all(|l| expected.contains(l)),
        "a got only lines written"
    );
    let kept: Vec<String> = by_file[files - 10..].concat();
    assert!(
        kept.iter().all(|l| got.contains(l)),
        "a got every line of the files kept open"
    );
    assert_same_lines("drain b", b.messages(), expected);
    engine.join();
}

/// Labels that churn (Alloy re-exported logs whenever a target's labels changed): routes
/// re-applied with new labels keep every cursor, so nothing is repeated or lost.
#[test]
fn routes_reapplied_with_churning_labels_repeat_nothing() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 61);
    let engine = node.start(node.settings(), routes(&[&a], vec![c.config(&["a"])]));
    let mut expected = Vec::new();
    for round in 0..20 {
        expected.extend(write_lines(&c, round * 200, 200));
        let mut config = c.config(&["a"]);
        config.labels.insert("revision".into(), round.to_string());
        engine.apply(routes(&[&a], vec![config]));
    }
    assert_exact(&a, &expected);
    assert_eq!(node.recorder.get("dropped"), 0);
    engine.join();
}

#[test]
fn a_drain_that_never_takes_anything_does_not_hold_back_the_other() {
    let node = Node::new();
    let (a, b) = (
        MockDrain::start("a", 2, &node.waker),
        MockDrain::start("b", 2, &node.waker),
    );
    b.paused.store(true, std::sync::atomic::Ordering::Release);
    let cs: Vec<_> = (0..3)
        .map(|i| DockerContainer::new(&node.docker_root(), 10 + i))
        .collect();
    let engine = node.start(
        node.settings(),
        routes(&[&a, &b], cs.iter().map(|c| c.config(&["a", "b"])).collect()),
    );
    let mut expected = Vec::new();
    for round in 0..5 {
        for c in &cs {
            expected.extend(write_lines(c, round * 1000, 1000));
        }
    }
    assert_exact(&a, &expected);
    assert!(
        b.count() < expected.len(),
        "b never took a batch, so it cannot have everything"
    );
    // b acknowledged nothing: its lag is every byte written, whatever it read meanwhile.
    let written: u64 = cs.iter().map(|c| fs::metadata(c.log()).unwrap().len()).sum();
    wait_for("b's lag to be every byte written", T, || {
        node.recorder.get("lag:b") == written
    });
    b.paused.store(false, std::sync::atomic::Ordering::Release);
    assert_exact(&b, &expected);
    wait_for("b's lag to be back to 0", T, || node.recorder.get("lag:b") == 0);
    assert_same_lines("drain a after b caught up", a.messages(), expected);
    engine.join();
}

#[test]
fn one_container_writing_flat_out_does_not_starve_another() {
    let node = Node::new();
    let a = MockDrain::start("a", 2, &node.waker);
    let (busy, quiet) = (
        DockerContainer::new(&node.docker_root(), 20),
        DockerContainer::new(&node.docker_root(), 21),
    );
    let mut expected = write_lines(&busy, 0, 40_000);
    let quiet_lines = write_lines(&quiet, 0, 10);
    expected.extend(quiet_lines.iter().cloned());
    let engine = node.start(
        node.settings(),
        routes(&[&a], vec![busy.config(&["a"]), quiet.config(&["a"])]),
    );
    assert_exact(&a, &expected);
    let got = a.messages();
    let last_quiet = got.iter().rposition(|l| quiet_lines.contains(l)).unwrap();
    assert!(
        last_quiet < 10_000,
        "the quiet container's lines came after {last_quiet} of the busy one's 40000"
    );
    engine.join();
}

#[test]
fn graceful_restarts_lose_nothing_and_repeat_nothing() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let cs: Vec<_> = (0..2)
        .map(|i| DockerContainer::new(&node.docker_root(), 30 + i))
        .collect();
    let configs: Vec<_> = cs.iter().map(|c| c.config(&["a"])).collect();
    let mut expected = Vec::new();
    let big = "y".repeat(40_000);
    for round in 0..5 {
        let engine = node.start(node.settings(), routes(&[&a], configs.clone()));
        let before = a.count();
        for c in &cs {
            expected.extend(write_lines(c, round * 2000, 2000));
        }
        // A split line whose first fragment may be read before the restart and the rest after.
        let records = docker_records(Stream::Stdout, &format!("{round}{big}"));
        let (first, rest) = records.split_at(records.find('\n').unwrap() + 1);
        cs[0].append_raw(first.as_bytes());
        expected.push(format!("stdout:{round}{big}"));
        wait_for("lines to flow", T, || a.count() > before);
        graceful_stop(engine, &[&a]);
        cs[0].append_raw(rest.as_bytes());
    }
    let engine = node.start(node.settings(), routes(&[&a], configs));
    assert_exact(&a, &expected);
    engine.join();
}

#[test]
fn ten_kills_under_load_lose_nothing_and_repeat_only_what_was_in_flight() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 50);
    let configs = vec![c.config(&["a"])];
    let mut expected = Vec::new();
    let mut delivered_before_kills = 0;
    for round in 0..10 {
        // Counted before the write: a fast engine can deliver the whole round before a count
        // taken after it.
        let before = a.count();
        let engine = node.start(node.settings(), routes(&[&a], configs.clone()));
        expected.extend(write_lines(&c, round * 500, 500));
        wait_for("lines to flow", T, || a.count() > before);
        // A crash: no final checkpoint, and batches the drain had not taken are gone too.
        drop(engine);
        a.discard_queued();
        delivered_before_kills += a.count();
    }
    let engine = node.start(node.settings(), routes(&[&a], configs));
    poll(T, || {
        let got = a.messages();
        expected.iter().all(|l| got.contains(l))
    });
    let got = a.messages();
    let missing = expected.iter().filter(|l| !got.contains(l)).count();
    assert_eq!(missing, 0, "lines lost across kills");
    assert!(
        got.iter().all(|l| expected.contains(l)),
        "a line that was never written arrived"
    );
    let repeats = got.len() - expected.len();
    println!("10 kills: {repeats} lines repeated (of {} delivered)", got.len());
    assert!(
        repeats <= delivered_before_kills,
        "repeats beyond what was delivered before the kills"
    );
    assert_eq!(node.recorder.get("dropped"), 0);
    engine.join();
}

/// After `stop_reading` the engine lets go of every drain channel (senders and reserved slots),
/// so a drain that finishes its queue sees the channel close instead of waiting for its deadline.
#[test]
fn stop_reading_releases_the_drain_channels() {
    let node = Node::new();
    let c = DockerContainer::new(&node.docker_root(), 1);
    let expected = write_lines(&c, 0, 50);
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let endpoint = sluice_collector::pipeline::DrainEndpoint {
        name: "d".into(),
        generation: 1,
        batches: tx,
        new_encoder: std::sync::Arc::new(|| {
            Box::new(TestEncoder) as Box<dyn sluice_collector::pipeline::Encoder>
        }),
        batch_max_lines: 1000,
        batch_max_bytes: 1 << 20,
    };
    let routes = sluice_collector::engine::Routes {
        drains: [("d".to_string(), endpoint)].into(),
        containers: vec![c.config(&["d"])],
        selectors: vec![],
    };
    let engine = node.start(node.settings(), routes);
    let mut frames = 0;
    // Take batches (acking them) until the engine has read everything, then stop it.
    while frames < expected.len() {
        let batch = rx.blocking_recv().expect("the engine sends before it stops");
        frames += batch.frame_ends.len();
        batch.ack();
        node.waker.wake_fn()();
    }
    engine.stop_reading(tokio::time::Instant::now() + Duration::from_secs(5));
    // Whatever was still handed over arrives, then the channel closes: nothing holds it open.
    while let Some(batch) = rx.blocking_recv() {
        frames += batch.frame_ends.len();
    }
    assert_eq!(frames, expected.len());
    engine.join();
}

/// A drain removed and added again between two looks (two config changes in quick succession)
/// loses the batches its old channel held, as the runtime drops a removed drain's queue: its
/// streams go back to what it acknowledged, so it still gets every line, once.
#[test]
fn a_drain_removed_and_added_again_before_a_rescan_loses_nothing() {
    let node = Node::new();
    let (a, b) = (
        MockDrain::start("a", 4, &node.waker),
        MockDrain::start("b", 4, &node.waker),
    );
    let c = DockerContainer::new(&node.docker_root(), 7);
    let both = routes(&[&a, &b], vec![c.config(&["a", "b"])]);
    let engine = node.start(node.settings(), both.clone());
    let first = write_lines(&c, 0, 200);
    assert_exact(&b, &first);
    b.paused.store(true, std::sync::atomic::Ordering::Release);
    let mut expected = first;
    expected.extend(write_lines(&c, 200, 2_000));
    assert_exact(&a, &expected);
    {
        let _held = engine.pause().unwrap();
        engine.apply(routes(&[&a], vec![c.config(&["a"])]));
        engine.apply(both);
        b.discard_queued();
    }
    b.paused.store(false, std::sync::atomic::Ordering::Release);
    assert_exact(&b, &expected);
    assert_eq!(node.recorder.get("dropped"), 0);
    engine.join();
}

/// CRI `P` fragments whose `F` comes after the kubelet rotated the file, or after a graceful
/// restart of the engine, are delivered as one whole line, once.
#[test]
fn cri_partial_lines_across_a_rotation_and_a_restart_arrive_whole() {
    const TIME: &str = "2026-12-03T08:00:00.000000001Z";
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let (config, dir) = cri_container(&node, &["a"]);
    let append = |text: String| {
        use std::io::Write as _;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("0.log"))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    let routes = || routes(&[&a], vec![config.clone()]);
    let engine = node.start(node.settings(), routes());
    append(format!("{TIME} stdout F before\n{TIME} stdout P across-the-"));
    append("rotation-a \n".into());
    wait_for("the first line", T, || a.count() == 1);
    fs::rename(dir.join("0.log"), dir.join("0.log.20261203-080000")).unwrap();
    append(format!("{TIME} stdout P b \n{TIME} stdout F c\n"));
    wait_for("the line split across the rotation", T, || a.count() == 2);
    append(format!("{TIME} stderr P across-the-restart \n"));
    // The fragment is read (and held) before the stop: the checkpoint must bring it back.
    std::thread::sleep(Duration::from_millis(300));
    graceful_stop(engine, &[&a]);
    append(format!("{TIME} stderr F done\n{TIME} stdout F after\n"));
    let engine = node.start(node.settings(), routes());
    assert_exact(
        &a,
        &[
            "stdout:before".to_owned(),
            "stdout:across-the-rotation-a b c".to_owned(),
            "stderr:across-the-restart done".to_owned(),
            "stdout:after".to_owned(),
        ],
    );
    engine.join();
}

/// A CRI container routed to one drain, through a kubelet rotation that containerd's old
/// writer races: the rotated file is written to after the new one was found.
struct CriRotation {
    node: Node,
    drain: MockDrain,
    dir: std::path::PathBuf,
    engine: sluice_collector::engine::EngineHandle,
}

impl CriRotation {
    const TIME: &str = "2026-12-03T08:00:00.000000001Z";
    const ROTATED: &str = "0.log.20261203-080000";

    /// The engine reading with `rotate_wait`, after `first` (CRI records) was written to `0.log`
    /// and its first `lines` lines arrived.
    fn start(rotate_wait: Option<Duration>, first: &str, lines: usize) -> Self {
        let node = Node::new();
        let mut settings = node.settings();
        settings.rotate_wait = rotate_wait.unwrap_or(settings.rotate_wait);
        let drain = MockDrain::start("a", 4, &node.waker);
        let (config, dir) = cri_container(&node, &["a"]);
        let engine = node.start(settings, routes(&[&drain], vec![config]));
        let rotation = Self {
            node,
            drain,
            dir,
            engine,
        };
        rotation.write_new(first);
        wait_for("the first lines", T, || rotation.drain.count() == lines);
        rotation
    }

    /// The records `text` (`{TIME}` stands for a record time) appended to the newest file.
    fn write_new(&self, text: &str) {
        append_to(&self.dir.join("0.log"), &text.replace("{TIME}", Self::TIME));
    }

    /// `text` appended to the rotated file, as the old writer does.
    fn write_rotated(&self, text: &str) {
        append_to(&self.dir.join(Self::ROTATED), &text.replace("{TIME}", Self::TIME));
    }

    /// The kubelet's rotation: `0.log` renamed, a new `0.log` holding `new` (empty: the moment
    /// before containerd's writer moves over), then the looks that find it and the rounds of the
    /// loop at the end of the rotated file.
    fn rotate(&self, new: &str) {
        fs::rename(self.dir.join("0.log"), self.dir.join(Self::ROTATED)).unwrap();
        fs::File::create(self.dir.join("0.log")).unwrap();
        self.write_new(new);
        for _ in 0..3 {
            self.engine.rescan().unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Exactly `expected` arrived, nothing was counted as lost.
    fn finish(self, expected: &[&str]) {
        let expected: Vec<String> = expected.iter().map(|line| line.to_string()).collect();
        assert_exact(&self.drain, &expected);
        assert_eq!(self.node.recorder.get("dropped"), 0);
        self.engine.join();
    }
}

/// containerd's old writer goroutine still holds up to 4 KiB of a stream's output when the
/// kubelet's rotation swaps writers, and writes it to the rotated file after lines have gone to
/// the new one. Those late lines arrive like any other: a rotated CRI file is read for
/// `rotate_wait` after the newer one was found, and only then do cursors move on.
#[test]
fn lines_written_to_a_rotated_cri_file_after_the_new_file_has_lines_arrive() {
    let rotation = CriRotation::start(Some(Duration::from_secs(2)), "{TIME} stdout F one\n", 1);
    rotation.rotate("{TIME} stdout F two\n");
    rotation.write_rotated("{TIME} stderr F late\n");
    rotation.write_new("{TIME} stdout F three\n");
    rotation.finish(&["stdout:one", "stdout:two", "stderr:late", "stdout:three"]);
}

/// A rotated CRI file whose last line is only half written when the newer file has lines: the
/// late write that ends it comes within the wait, so the line arrives whole and nothing is
/// counted as an unterminated line.
#[test]
fn a_half_written_line_of_a_rotated_cri_file_completed_late_arrives_whole() {
    let rotation = CriRotation::start(
        Some(Duration::from_secs(2)),
        "{TIME} stdout F one\n{TIME} stderr F hal",
        1,
    );
    rotation.rotate("{TIME} stdout F two\n");
    rotation.write_rotated("f\n");
    rotation.write_new("{TIME} stdout F three\n");
    assert_eq!(rotation.node.recorder.get("input:unterminated_line"), 0);
    rotation.finish(&["stdout:one", "stderr:half", "stdout:two", "stdout:three"]);
}

/// containerd opens the new `0.log` before it swaps its writer over, so for a moment after the
/// kubelet's rotation the new file exists, empty, while lines still go to the rotated one. An
/// empty file is not taken in, so the rotated one is not sealed yet and those late lines arrive.
#[test]
fn lines_written_to_a_rotated_cri_file_after_the_new_file_appeared_arrive() {
    let rotation = CriRotation::start(None, "{TIME} stdout F one\n", 1);
    rotation.rotate("");
    rotation.write_rotated("{TIME} stdout F late\n");
    rotation.write_new("{TIME} stdout F two\n");
    rotation.finish(&["stdout:one", "stdout:late", "stdout:two"]);
}
