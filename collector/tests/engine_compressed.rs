//! Compressed rotated logs: a checkpoint that points into a file compressed while the engine was
//! down resumes inside the compressed file, and the compressed files after it are read too;
//! nothing is lost, nothing repeated. Docker (`--log-opt compress=true`: `<id>-json.log.N.gz`) and
//! CRI (the kubelet's `<n>.log.<timestamp>.gz`).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "support/engine.rs"]
mod support;
#[path = "../../tests/src/tmpfs.rs"]
mod tmpfs;

use std::{
    fs,
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use flate2::{Compression, write::GzEncoder};
use sluice_api::node_config::{ContainerConfig, Stream};
use sluice_collector::engine::EngineHandle;
use support::*;

const T: Duration = Duration::from_secs(30);

/// Compress `path` into `gz` and remove it, as the runtimes do after a rotation.
fn compress(path: &Path, gz: &Path) {
    gzip(&fs::read(path).unwrap(), gz);
    fs::remove_file(path).unwrap();
}

/// Write `data`, gzipped, to `gz` (in place, as the runtimes do).
fn gzip(data: &[u8], gz: &Path) {
    let mut encoder = GzEncoder::new(fs::File::create(gz).unwrap(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap();
}

/// Start the engine, deliver the lines `write` writes, and stop gracefully: the checkpoint ends
/// after them. Returns them.
fn deliver_then_stop(
    node: &Node,
    drain: &MockDrain,
    config: &ContainerConfig,
    write: impl FnOnce() -> Vec<String>,
) -> Vec<String> {
    let engine = node.start(node.settings(), routes(&[drain], vec![config.clone()]));
    let lines = write();
    wait_for("the first lines", T, || drain.count() == lines.len());
    graceful_stop(engine, &[drain]);
    lines
}

/// Start the engine again and require that `drain` received exactly `expected` in all.
fn restart_and_expect(node: &Node, drain: &MockDrain, config: ContainerConfig, expected: Vec<String>) {
    let engine = node.start(node.settings(), routes(&[drain], vec![config]));
    wait_for("every line", T, || drain.count() >= expected.len());
    assert_same_lines("drain a", drain.messages(), expected);
    engine.join();
}

/// Write lines `from..from + n` to the Docker container; what a drain must receive.
fn docker_lines(container: &DockerContainer, from: usize, count: usize) -> Vec<String> {
    let (text, out) = docker_text(from, count);
    container.append_raw(text.as_bytes());
    out
}

#[test]
fn docker_checkpoint_into_a_file_compressed_while_down() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 70);
    let config = c.config(&["a"]);
    let mut expected = deliver_then_stop(&node, &a, &config, || docker_lines(&c, 0, 300));
    // Down: the file the checkpoint points into grows, is rotated and compressed; so is the next.
    expected.extend(docker_lines(&c, 300, 200));
    rotate_compressed(&c);
    expected.extend(docker_lines(&c, 500, 100));
    rotate_compressed(&c);
    expected.extend(docker_lines(&c, 600, 50));
    restart_and_expect(&node, &a, config, expected);
    assert_eq!(node.recorder.get("dropped"), 0, "nothing was lost");
}

/// A compressed file that has the inode and the size of one deleted since the last look is a new
/// file, and its lines are read: ext4 hands a freed inode number out again at once, and small
/// files of like lines compress to the same size; both may be written within one tick of the file
/// system's clock. Rewriting the first compressed file in place, and setting its modification
/// time back, stands for that here.
#[test]
fn a_compressed_file_with_the_inode_and_size_of_one_gone_is_read() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 72);
    let engine = node.start(node.settings(), routes(&[&a], vec![c.config(&["a"])]));
    let mut expected = docker_lines(&c, 0, 10);
    wait_for("the first lines", T, || a.count() == 10);
    rotate_compressed(&c);
    let first = gz(&c.rotated(1));
    // The looks that recognise the compressed file as the one read.
    for _ in 0..3 {
        engine.rescan().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = fs::metadata(&first).unwrap();
    // Lines rotated and compressed before any look saw them, padded to the size of the first
    // file by a comment in the gzip header.
    let (text, lines) = docker_text(100, 5);
    let unpadded = gzipped(text.as_bytes(), 0).len() as u64;
    let pad = before
        .len()
        .checked_sub(unpadded + 1)
        .expect("the new file compresses smaller");
    let data = gzipped(text.as_bytes(), pad as usize);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&first)
        .unwrap();
    file.write_all(&data).unwrap();
    // Written within the same tick of the file system's clock as the file it replaces.
    file.set_modified(before.modified().unwrap()).unwrap();
    drop(file);
    let after = fs::metadata(&first).unwrap();
    assert_eq!(
        (after.ino(), after.len(), after.modified().unwrap()),
        (before.ino(), before.len(), before.modified().unwrap())
    );
    expected.extend(lines);
    expected.extend(docker_lines(&c, 5000, 10));
    for _ in 0..3 {
        engine.rescan().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for("every line", T, || a.count() >= expected.len());
    assert_same_lines("drain a", a.messages(), expected);
    assert_eq!(node.recorder.get("dropped"), 0);
    engine.join();
}

/// A line the runtime split, whose first fragment the reader holds when the rest of its file is
/// lost (truncated in place, its copy compressed before the engine looked for it), is lost with
/// that rest: it is not joined to the first line of the file read next.
#[test]
fn a_held_fragment_whose_rest_was_lost_is_not_joined_to_the_next_line() {
    let node = Node::new();
    let a = MockDrain::start("a", 2, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 77);
    a.paused.store(true, std::sync::atomic::Ordering::Release);
    let engine = node.start(node.settings(), routes(&[&a], vec![c.config(&["a"])]));
    // The first fragment of a split stderr line, then more stdout lines than the drain's channel
    // and a batch being built hold (the reader stops among them), then the line's last fragment.
    let records = docker_records(Stream::Stderr, &format!("held-{}", "h".repeat(20_000)));
    let (first, rest) = records.split_at(records.find('\n').unwrap() + 1);
    c.append_raw(first.as_bytes());
    let mut stdout = Vec::new();
    let mut text = String::new();
    for i in 0..3000 {
        let m = format!("out-{i}-{}", "o".repeat(100 + i % 80));
        text.push_str(&docker_records(Stream::Stdout, &m));
        stdout.push(format!("stdout:{m}"));
    }
    c.append_raw(text.as_bytes());
    c.append_raw(rest.as_bytes());
    wait_for("the reader to hold the fragment", T, || {
        node.recorder.get("read:stdout") > 0
    });
    // logrotate's copy-truncate with `compress` (no `delaycompress`), while the engine is held.
    let hold = engine.pause().unwrap();
    c.copy_truncate();
    compress(&c.rotated(1), &gz(&c.rotated(1)));
    c.write(Stream::Stderr, "next");
    drop(hold);
    a.paused.store(false, std::sync::atomic::Ordering::Release);
    wait_for("the line after the loss", T, || {
        a.messages().contains(&"stderr:next".to_string())
    });
    let got = a.messages();
    let unknown: Vec<&String> = got
        .iter()
        .filter(|l| *l != "stderr:next" && !stdout.contains(l))
        .collect();
    assert!(
        unknown.is_empty(),
        "lines never written arrived: {:.80?}",
        unknown
    );
    let mut once = got.clone();
    once.sort();
    once.dedup();
    assert_eq!(once.len(), got.len(), "no line arrives twice");
    assert_eq!(got.iter().filter(|l| *l == "stderr:next").count(), 1);
    assert!(got.len() < stdout.len() + 1, "the truncated file's rest is lost");
    // Found by a look (truncated, no copy) and again by the reader passing over it: one loss.
    assert_eq!(node.recorder.get("dropped"), 1, "the loss is counted once");
    engine.join();
}

/// `data`, gzipped, with a comment of `comment` bytes in the header (none when 0).
fn gzipped(data: &[u8], comment: usize) -> Vec<u8> {
    let mut builder = flate2::GzBuilder::new();
    if comment > 0 {
        builder = builder.comment(vec![b'c'; comment]);
    }
    let mut encoder = builder.write(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Docker's rotation with `compress=true`: `.N.gz` → `.N+1.gz`, the current file → `.1.gz`.
fn rotate_compressed(container: &DockerContainer) {
    let rotated = (1..).take_while(|&n| gz(&container.rotated(n)).exists()).count();
    for n in (1..=rotated).rev() {
        fs::rename(gz(&container.rotated(n)), gz(&container.rotated(n + 1))).unwrap();
    }
    fs::rename(container.log(), container.rotated(1)).unwrap();
    compress(&container.rotated(1), &gz(&container.rotated(1)));
}

fn gz(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.gz", path.display()))
}

/// Write CRI lines `from..from + n` to `file`; what a drain must receive.
fn cri_lines(file: &Path, from: usize, count: usize) -> Vec<String> {
    let mut text = String::new();
    let mut out = Vec::new();
    for i in from..from + count {
        let m = format!("line-{i}-{}", "c".repeat(30 + i % 40));
        text.push_str(&format!("2026-11-21T15:15:34.{i:09}Z stdout F {m}\n"));
        out.push(format!("stdout:{m}"));
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    out
}

#[test]
fn cri_checkpoint_into_a_file_the_kubelet_compressed_while_down() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let (config, dir) = cri_container(&node, &["a"]);
    let log = dir.join("0.log");
    let mut expected = deliver_then_stop(&node, &a, &config, || cri_lines(&log, 0, 200));
    // Down: the kubelet rotates twice; the older rotated file is compressed, the newer is not.
    expected.extend(cri_lines(&log, 200, 150));
    let first = dir.join("0.log.20261121-151600");
    fs::rename(&log, &first).unwrap();
    expected.extend(cri_lines(&log, 350, 80));
    fs::rename(&log, dir.join("0.log.20261121-151700")).unwrap();
    compress(&first, &gz(&first));
    expected.extend(cri_lines(&log, 430, 40));
    restart_and_expect(&node, &a, config, expected);
    assert_eq!(node.recorder.get("dropped"), 0, "nothing was lost");
}

#[test]
fn checkpointed_file_deleted_while_down_reads_every_compressed_file_after_it() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 71);
    let config = c.config(&["a"]);
    let mut expected = deliver_then_stop(&node, &a, &config, || docker_lines(&c, 0, 300));
    // Down: the checkpointed file is rotated, compressed, and then deleted (`max-file`); the
    // compressed file after it stays.
    let lost = docker_lines(&c, 300, 200);
    rotate_compressed(&c);
    expected.extend(docker_lines(&c, 500, 100));
    rotate_compressed(&c);
    fs::remove_file(gz(&c.rotated(2))).unwrap();
    expected.extend(docker_lines(&c, 600, 50));
    restart_and_expect(&node, &a, config, expected);
    assert_eq!(
        node.recorder.get("dropped:a:rotated_away"),
        1,
        "the loss of the deleted file ({} lines) is counted, once",
        lost.len()
    );
}

/// Compress `data` into `gz` elsewhere first and rename it into place, so the file is never seen
/// uncompressed or half written: what a look sees when the runtime rotated and compressed a file
/// between two looks of the engine.
fn place_compressed(node: &Node, data: &[u8], gz: &Path) {
    let staged = node.tmp.path().join("staged.gz");
    gzip(data, &staged);
    fs::rename(&staged, gz).unwrap();
}

/// Docker lines `from..from + n` as file content, and what a drain must receive of them.
fn docker_text(from: usize, count: usize) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut out = Vec::new();
    for i in from..from + count {
        let m = format!("line-{i}-{}", "z".repeat(40 + i % 50));
        text.push_str(&docker_records(Stream::Stdout, &m));
        out.push(format!("stdout:{m}"));
    }
    (text, out)
}

/// Wait for `expected` (lines up to `next`), write a few more (later looks see the same
/// compressed files again: nothing may be read twice), stop, and require exactly those lines
/// and no loss.
fn expect_exactly(
    node: &Node,
    engine: EngineHandle,
    drain: &MockDrain,
    container: &DockerContainer,
    mut expected: Vec<String>,
    next: usize,
) {
    wait_for("every line", T, || drain.count() >= expected.len());
    expected.extend(docker_lines(container, next, 10));
    wait_for("the last lines", T, || drain.count() >= expected.len());
    graceful_stop(engine, &[drain]);
    assert_same_lines("drain a", drain.messages(), expected);
    assert_eq!(node.recorder.get("dropped"), 0, "nothing was lost");
}

/// The runtime wrote a whole file, rotated and compressed it between two looks of the engine (a
/// busy node, a fast writer: Docker compresses `.1` at once): it is only ever seen compressed.
/// It is read, in its place between the files around it.
#[test]
fn a_file_rotated_and_compressed_between_two_looks_is_read() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 72);
    let engine = node.start(node.settings(), routes(&[&a], vec![c.config(&["a"])]));
    let mut expected = docker_lines(&c, 0, 200);
    wait_for("the first file's lines", T, || a.count() == expected.len());
    rotate_compressed(&c);
    // The next file never shows uncompressed: `.1.gz` → `.2.gz`, then the new `.1.gz` appears.
    let (text, missed) = docker_text(200, 150);
    fs::rename(gz(&c.rotated(1)), gz(&c.rotated(2))).unwrap();
    place_compressed(&node, text.as_bytes(), &gz(&c.rotated(1)));
    expected.extend(missed);
    expected.extend(docker_lines(&c, 350, 100));
    expect_exactly(&node, engine, &a, &c, expected, 450);
}

/// A file first seen compressed cannot be inflated while the state directory is full: it is
/// reported once and retried at every look, and the newer file of its container waits (a reader
/// must not pass the place the missed file goes). Once there is room it is read, in its place,
/// and nothing is lost.
#[test]
fn a_compressed_file_is_inflated_once_the_full_state_dir_has_room() {
    let node = Node::new();
    let state = tmpfs::Tmpfs::mount(1024 * 1024).unwrap();
    let mut settings = node.settings();
    settings.state_dir = state.path().to_owned();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 76);
    let engine = node.start(settings, routes(&[&a], vec![c.config(&["a"])]));
    let mut expected = docker_lines(&c, 0, 200);
    wait_for("the first file's lines", T, || a.count() == expected.len());

    // Between two looks: the known file is compressed, a file never seen appears compressed, a
    // newer file is written, and the state directory fills up.
    let paused = engine.pause().unwrap();
    rotate_compressed(&c);
    let (text, missed) = docker_text(200, 150);
    fs::rename(gz(&c.rotated(1)), gz(&c.rotated(2))).unwrap();
    place_compressed(&node, text.as_bytes(), &gz(&c.rotated(1)));
    let newer = docker_lines(&c, 350, 100);
    state.fill("filler").unwrap();
    drop(paused);
    for _ in 0..5 {
        engine.rescan().unwrap();
    }
    wait_for("the drain to take what it was sent", T, || a.idle());
    assert_same_lines("while the state dir is full", a.messages(), expected.clone());
    assert_eq!(
        node.recorder.get("input:unreadable_file"),
        1,
        "the full state directory is reported once"
    );

    fs::remove_file(state.path().join("filler")).unwrap();
    engine.rescan().unwrap();
    expected.extend(missed.iter().cloned());
    expected.extend(newer.iter().cloned());
    wait_for("every line", T, || a.count() >= expected.len());
    let got = a.messages();
    let position = |line: &String| got.iter().position(|g| g == line);
    assert!(
        position(missed.last().unwrap()) < position(&newer[0]),
        "the missed file is read before the newer one"
    );
    expect_exactly(&node, engine, &a, &c, expected, 450);
}

/// A container first seen after the engine started: files it rotated and compressed before the
/// engine looked at it were written since the engine started, and are read, oldest first.
#[test]
fn a_new_container_compressed_before_it_was_seen_is_read_whole() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let engine = node.start(node.settings(), routes(&[&a], Vec::new()));
    let c = DockerContainer::new(&node.docker_root(), 73);
    let (first, mut expected) = docker_text(0, 120);
    let (second, lines) = docker_text(120, 80);
    expected.extend(lines);
    place_compressed(&node, first.as_bytes(), &gz(&c.rotated(2)));
    place_compressed(&node, second.as_bytes(), &gz(&c.rotated(1)));
    expected.extend(docker_lines(&c, 200, 50));
    engine.apply(routes(&[&a], vec![c.config(&["a"])]));
    expect_exactly(&node, engine, &a, &c, expected, 250);
}

/// Compressed history (written before the engine started, with no checkpoint) is not read:
/// shipping starts at the oldest uncompressed file, as other shippers do (inflating all of a
/// node's history at first start could take gigabytes of disk).
#[test]
fn compressed_history_before_the_first_start_is_not_read() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 74);
    let (history, _) = docker_text(0, 100);
    place_compressed(&node, history.as_bytes(), &gz(&c.rotated(1)));
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let gz_file = fs::File::options().write(true).open(gz(&c.rotated(1))).unwrap();
    gz_file.set_modified(an_hour_ago).unwrap();
    let expected = docker_lines(&c, 100, 60);
    let engine = node.start(node.settings(), routes(&[&a], vec![c.config(&["a"])]));
    expect_exactly(&node, engine, &a, &c, expected, 160);
}

/// A compressed file that is not gzip appears beside a running container: it is reported once
/// (`unreadable_file`), and the container's lines go on flowing.
#[test]
fn a_corrupt_compressed_file_is_reported_and_stalls_nothing() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 75);
    let engine = node.start(node.settings(), routes(&[&a], vec![c.config(&["a"])]));
    let mut expected = docker_lines(&c, 0, 50);
    wait_for("the first lines", T, || a.count() == expected.len());
    fs::write(gz(&c.rotated(1)), b"not gzip at all").unwrap();
    fs::rename(c.log(), c.rotated(2)).unwrap();
    expected.extend(docker_lines(&c, 50, 50));
    wait_for("the report", T, || {
        node.recorder.get("input:unreadable_file") == 1
    });
    expect_exactly(&node, engine, &a, &c, expected, 100);
}

/// Copy-truncate and a graceful restart; the copy is compressed while the engine is down, or
/// once it runs again. The copy's lines were delivered before the restart and are not read
/// again.
fn copy_compressed_around_a_restart(compress_while_down: bool) {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 76);
    let config = c.config(&["a"]);
    let mut expected = deliver_then_stop(&node, &a, &config, || {
        let mut lines = docker_lines(&c, 0, 40);
        wait_for("the first lines", T, || a.count() == lines.len());
        c.copy_truncate();
        lines.extend(docker_lines(&c, 40, 30));
        lines
    });
    if compress_while_down {
        compress(&c.rotated(1), &gz(&c.rotated(1)));
    }
    let engine = node.start(node.settings(), routes(&[&a], vec![config]));
    expected.extend(docker_lines(&c, 70, 5));
    wait_for("the lines after the restart", T, || a.count() >= expected.len());
    if !compress_while_down {
        compress(&c.rotated(1), &gz(&c.rotated(1)));
    }
    expect_exactly(&node, engine, &a, &c, expected, 75);
}

#[test]
fn a_copy_compressed_after_a_restart_is_not_read_again() {
    copy_compressed_around_a_restart(false);
}

#[test]
fn a_copy_compressed_during_a_restart_is_not_read_again() {
    copy_compressed_around_a_restart(true);
}
