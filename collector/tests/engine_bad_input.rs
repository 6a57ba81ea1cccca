//! Bad input never stops the engine: each kind is counted, skipped (or repaired), and the other
//! lines and containers keep flowing.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "support/engine.rs"]
mod support;

use std::{fs, os::unix::fs::symlink, time::Duration};

use sluice_api::node_config::{ContainerConfig, Stream};
use support::*;

const T: Duration = Duration::from_secs(30);
const TIME: &str = "2026-11-21T15:15:34.165439785Z";

fn good(container: &DockerContainer, tag: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let m = format!("{tag}-{i}");
            container.write(Stream::Stdout, &m);
            format!("stdout:{m}")
        })
        .collect()
}

#[test]
fn malformed_json_and_invalid_utf8_are_counted_and_the_rest_flows() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 40);
    let engine = node.start(node.settings(), routes(&[&a], vec![c.config(&["a"])]));
    let mut expected = good(&c, "before", 5);
    c.append_raw(
        b"this is not json\n{\"log\":\"unterminated\n\x00\x01\x02\n{\"log\":42,\"stream\":\"stdout\"}\n",
    );
    let mut bytes = b"{\"log\":\"bad ".to_vec();
    bytes.push(0xff);
    bytes.extend_from_slice(format!(" byte\\n\",\"stream\":\"stdout\",\"time\":\"{TIME}\"}}\n").as_bytes());
    c.append_raw(&bytes);
    expected.push("stdout:bad \u{fffd} byte".into());
    expected.extend(good(&c, "after", 5));
    wait_for("all lines", T, || a.count() >= expected.len());
    assert_same_lines("drain a", a.messages(), expected);
    assert_eq!(node.recorder.get("input:malformed_json"), 4);
    assert_eq!(node.recorder.get("input:invalid_utf8"), 1);
    engine.join();
}

#[test]
fn a_line_of_megabytes_is_cut_to_the_limit_and_flagged() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 41);
    let mut settings = node.settings();
    settings.max_line_bytes = 1024 * 1024;
    let engine = node.start(settings, routes(&[&a], vec![c.config(&["a"])]));
    let mut expected = good(&c, "before", 3);
    c.write(Stream::Stdout, &"z".repeat(3 * 1024 * 1024 + 17));
    expected.push(format!("stdout:{}", "z".repeat(1024 * 1024)));
    expected.extend(good(&c, "after", 3));
    wait_for("all lines", T, || a.count() >= expected.len());
    assert_same_lines("drain a", a.messages(), expected);
    let received = a.received.lock().unwrap().clone();
    let flagged: Vec<_> = received
        .iter()
        .filter(|r| r.truncated)
        .map(|r| r.message.len())
        .collect();
    assert_eq!(
        flagged,
        [1024 * 1024],
        "exactly the long line is flagged, at the limit"
    );
    assert_eq!(node.recorder.get("input:truncated"), 1);
    engine.join();
}

#[test]
fn a_line_without_its_newline_waits_until_it_is_complete() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 42);
    let other = DockerContainer::new(&node.docker_root(), 48);
    let engine = node.start(
        node.settings(),
        routes(&[&a], vec![c.config(&["a"]), other.config(&["a"])]),
    );
    let mut expected = good(&c, "first", 3);
    let record = docker_records(Stream::Stdout, "the last line");
    let (head, tail) = record.split_at(record.len() / 2);
    c.append_raw(head.as_bytes());
    // Lines of another container written after the half line arrive; the half line does not.
    expected.extend(good(&other, "other", 3));
    wait_for("the complete lines", T, || a.count() >= 6);
    assert_same_lines(
        "drain a before the line completes",
        a.messages(),
        expected.clone(),
    );
    c.append_raw(tail.as_bytes());
    expected.push("stdout:the last line".into());
    wait_for("the completed line", T, || a.count() >= expected.len());
    assert_same_lines("drain a", a.messages(), expected);
    engine.join();
}

/// Two running containers routed to `a`, with complete lines delivered and both files open; the
/// first has `message` half written at its end, the second half is returned. The engine runs
/// with `unterminated_quiet` set to `quiet`; `settings` and `routes` serve to start it again.
struct HalfLine {
    node: Node,
    a: MockDrain,
    c: DockerContainer,
    settings: sluice_collector::engine::EngineSettings,
    routes: sluice_collector::engine::Routes,
    engine: sluice_collector::engine::EngineHandle,
    expected: Vec<String>,
    rest: String,
}

fn half_line(quiet: Duration, message: &str) -> HalfLine {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 52);
    let other = DockerContainer::new(&node.docker_root(), 53);
    let mut settings = node.settings();
    settings.unterminated_quiet = quiet;
    let routes = routes(&[&a], vec![c.config(&["a"]), other.config(&["a"])]);
    let mut expected = good(&c, "first", 3);
    expected.extend(good(&other, "other", 2));
    let record = docker_records(Stream::Stdout, message);
    let (head, rest) = record.split_at(record.len() / 2);
    c.append_raw(head.as_bytes());
    let engine = node.start(settings.clone(), routes.clone());
    wait_for("the complete lines", T, || a.count() >= expected.len());
    wait_for("both files to be open", T, || {
        node.recorder.get("open_files") == 2
    });
    let rest = rest.to_owned();
    HalfLine {
        node,
        a,
        c,
        settings,
        routes,
        engine,
        expected,
        rest,
    }
}

/// A finished container whose last line never got its newline: once the file stays unchanged
/// for `unterminated_quiet`, the line is counted once as `unterminated_line`, the container is
/// forgotten (its descriptor closed), a restart does not count it again, and if the file is
/// completed after all the line arrives whole.
#[test]
fn a_finished_containers_unterminated_last_line_is_counted_once_and_lets_it_be_forgotten() {
    let HalfLine {
        node,
        a,
        c,
        settings,
        routes,
        engine,
        mut expected,
        rest,
    } = half_line(Duration::from_millis(200), "completed late");
    c.set_running(false);
    wait_for("the finished container to be forgotten", T, || {
        node.recorder.get("open_files") == 1
    });
    assert_eq!(node.recorder.get("input:unterminated_line"), 1);
    assert_same_lines("drain a", a.messages(), expected.clone());
    // A restart finds the container again, finished, with the same last line: its cursor says
    // the line was counted. (The count of open files is taken afresh: 2, then 1 once forgotten.)
    graceful_stop(engine, &[&a]);
    node.recorder.counts.lock().unwrap().remove("open_files");
    let engine = node.start(settings, routes);
    wait_for("the finished container to be forgotten again", T, || {
        node.recorder.get("open_files") == 1
    });
    assert_eq!(node.recorder.get("input:unterminated_line"), 1);
    // The line is completed after all: the container is read again, from the line's start.
    c.append_raw(rest.as_bytes());
    expected.push("stdout:completed late".into());
    wait_for("the completed line", T, || a.count() >= expected.len());
    assert_same_lines("drain a", a.messages(), expected);
    assert_eq!(node.recorder.get("input:unterminated_line"), 1);
    assert_eq!(node.recorder.get("dropped"), 0);
    engine.join();
}

/// A finished container's last line without its newline is waited for: the newline arriving
/// before the container is forgotten delivers the line, and nothing is counted.
#[test]
fn a_newline_arriving_before_a_finished_container_is_forgotten_delivers_the_line() {
    // Far longer than the test takes: the container is not forgotten before the newline comes.
    let HalfLine {
        node,
        a,
        c,
        engine,
        mut expected,
        rest,
        ..
    } = half_line(Duration::from_secs(3600), "the last line");
    c.set_running(false);
    // The engine has seen the container finished, with only the half line left to read.
    engine.rescan().unwrap();
    c.append_raw(rest.as_bytes());
    expected.push("stdout:the last line".into());
    wait_for("the completed line", T, || a.count() >= expected.len());
    wait_for("the container, read to its end, to be forgotten", T, || {
        node.recorder.get("open_files") == 1
    });
    assert_same_lines("drain a", a.messages(), expected);
    assert_eq!(node.recorder.get("input:unterminated_line"), 0);
    assert_eq!(node.recorder.get("dropped"), 0);
    engine.join();
}

#[test]
fn garbage_and_unreadable_files_do_not_stall_anything() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let healthy = DockerContainer::new(&node.docker_root(), 43);
    let garbage = DockerContainer::new(&node.docker_root(), 44);
    let dir_log = DockerContainer::new(&node.docker_root(), 45);
    let dangling = DockerContainer::new(&node.docker_root(), 46);
    // Megabytes of binary without a newline, then a newline and good lines.
    let mut x: u32 = 12345;
    let junk: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            match (x >> 16) as u8 {
                b'\n' => b'.',
                b => b,
            }
        })
        .collect();
    garbage.append_raw(&junk);
    garbage.append_raw(b"\n");
    fs::create_dir(dir_log.log()).unwrap();
    symlink(node.tmp.path().join("nowhere"), dangling.log()).unwrap();
    let configs: Vec<ContainerConfig> = [&healthy, &garbage, &dir_log, &dangling]
        .iter()
        .map(|c| c.config(&["a"]))
        .collect();
    let engine = node.start(node.settings(), routes(&[&a], configs));
    let mut expected = good(&healthy, "healthy", 50);
    expected.extend(good(&garbage, "after-garbage", 5));
    wait_for("all good lines", T, || a.count() >= expected.len());
    assert_same_lines("drain a", a.messages(), expected);
    assert!(
        node.recorder.get("input:garbage") >= 1,
        "the over-long garbage line is counted"
    );
    wait_for("both unreadable logs to be counted", T, || {
        node.recorder.get("input:unreadable_file") == 2
    });
    engine.join();
}

#[test]
fn cri_logs_with_partial_lines() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let (config, dir) = cri_container(&node, &["a"]);
    fs::write(
        dir.join("0.log"),
        format!("{TIME} stdout F one\n{TIME} stdout P two-a \n{TIME} stderr F err\n{TIME} stdout F two-b\n"),
    )
    .unwrap();
    // A compressed rotated file is history: not tailed (the exact comparison below shows it),
    // read only when a checkpoint points into it.
    let history = dir.join("0.log.20261120-000000.gz");
    fs::write(&history, b"compressed").unwrap();
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let history = fs::File::options().write(true).open(history).unwrap();
    history.set_modified(an_hour_ago).unwrap();
    let engine = node.start(node.settings(), routes(&[&a], vec![config]));
    // The container restarts: a new file with the next number.
    fs::write(
        dir.join("1.log"),
        format!("{TIME} stdout F three\nbroken line\n{TIME} stdout F four\n"),
    )
    .unwrap();
    let expected = [
        "stdout:one",
        "stdout:two-a two-b",
        "stderr:err",
        "stdout:three",
        "stdout:four",
    ];
    wait_for("all CRI lines", T, || a.count() >= expected.len());
    assert_same_lines(
        "drain a",
        a.messages(),
        expected.iter().map(|s| s.to_string()).collect(),
    );
    assert_eq!(node.recorder.get("input:malformed_cri"), 1);
    assert!(a.received.lock().unwrap().iter().all(|r| r.pod == "web-1"));
    // The count of open files is taken at each look: the one that found 1.log still saw a
    // stream at the end of 0.log; a later one closes 0.log, and the newest file stays open.
    wait_for("the older file to be closed", T, || {
        node.recorder.get("open_files") == 1
    });
    // The pod is deleted and the kubelet removes its directory: the container, read to its end,
    // is forgotten even while the routes still name it (the operator's update comes later).
    fs::remove_dir_all(node.pods_root().join("shop_web-1_uid-1")).unwrap();
    wait_for("the removed pod's container to be forgotten", T, || {
        node.recorder.get("open_files") == 0
    });
    assert_eq!(a.count(), expected.len(), "nothing more arrived");
    engine.join();
}

#[test]
fn a_corrupt_checkpoint_falls_back_to_the_previous_one() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 47);
    let configs = vec![c.config(&["a"])];
    let mut expected = good(&c, "one", 10);
    let engine = node.start(node.settings(), routes(&[&a], configs.clone()));
    wait_for("the first lines", T, || a.count() >= 10);
    graceful_stop(engine, &[&a]);
    expected.extend(good(&c, "two", 10));
    let engine = node.start(node.settings(), routes(&[&a], configs.clone()));
    wait_for("the second lines", T, || a.count() >= 20);
    graceful_stop(engine, &[&a]);
    // Tear the current checkpoint: the previous one (after the first ten lines) is used.
    let path = node.tmp.path().join("state/checkpoints.json");
    let text = fs::read(&path).unwrap();
    fs::write(&path, &text[..text.len() / 3]).unwrap();
    let engine = node.start(node.settings(), routes(&[&a], configs));
    let again: Vec<String> = expected[10..].to_vec();
    wait_for("the repeats", T, || a.count() >= 30);
    assert_eq!(node.recorder.get("input:checkpoint_corrupt"), 1);
    let mut with_repeats = expected.clone();
    with_repeats.extend(again);
    assert_same_lines("drain a", a.messages(), with_repeats);
    assert!(node.tmp.path().join("state/checkpoints.json.corrupt").exists());
    engine.join();
}

/// However many drains read a line, its problems are counted once, and every byte read is
/// counted once, runtime split pieces (CRI `P`) and unparsable lines included.
#[test]
fn bad_input_and_bytes_are_counted_once_whatever_the_number_of_drains() {
    let node = Node::new();
    let (a, b) = (
        MockDrain::start("a", 4, &node.waker),
        MockDrain::start("b", 4, &node.waker),
    );
    let c = DockerContainer::new(&node.docker_root(), 43);
    let (cri, dir) = cri_container(&node, &["a", "b"]);
    let mut settings = node.settings();
    settings.max_line_bytes = 1024;
    let engine = node.start(settings, routes(&[&a, &b], vec![c.config(&["a", "b"]), cri]));
    let mut expected = good(&c, "before", 3);
    c.append_raw(b"this is not json\n");
    let mut bytes = b"{\"log\":\"bad ".to_vec();
    bytes.push(0xff);
    bytes.extend_from_slice(format!(" byte\\n\",\"stream\":\"stdout\",\"time\":\"{TIME}\"}}\n").as_bytes());
    c.append_raw(&bytes);
    expected.push("stdout:bad \u{fffd} byte".into());
    c.write(Stream::Stdout, &"z".repeat(5000));
    expected.push(format!("stdout:{}", "z".repeat(1024)));
    expected.extend(good(&c, "after", 3));
    let cri_log =
        format!("{TIME} stdout P first half, \n{TIME} stdout F second half\n{TIME} stderr F whole\n");
    fs::write(dir.join("0.log"), &cri_log).unwrap();
    expected.extend([
        "stdout:first half, second half".to_owned(),
        "stderr:whole".to_owned(),
    ]);
    for d in [&a, &b] {
        wait_for("all lines", T, || d.count() >= expected.len());
        assert_same_lines(&d.name, d.messages(), expected.clone());
    }
    assert_eq!(node.recorder.get("input:malformed_json"), 1);
    assert_eq!(node.recorder.get("input:invalid_utf8"), 1);
    assert_eq!(node.recorder.get("input:truncated"), 1);
    let on_disk = fs::metadata(c.log()).unwrap().len() + cri_log.len() as u64;
    assert!(
        poll(T, || node.recorder.get("bytes") == on_disk),
        "bytes read: {} of {on_disk}",
        node.recorder.get("bytes")
    );
    engine.join();
}

/// A symbolic link in a log directory is not followed (it could lead to any file on the node),
/// and a FIFO where a log should be neither blocks the engine nor is read: both are counted as
/// unreadable, and the other containers flow.
#[test]
fn a_symlink_or_a_fifo_in_a_log_directory_is_neither_followed_nor_blocking() {
    let node = Node::new();
    let a = MockDrain::start("a", 4, &node.waker);
    let healthy = DockerContainer::new(&node.docker_root(), 50);
    let linked = DockerContainer::new(&node.docker_root(), 51);
    let fifo = DockerContainer::new(&node.docker_root(), 52);
    let secret = node.tmp.path().join("secret");
    fs::write(&secret, docker_records(Stream::Stdout, "a secret of the node")).unwrap();
    symlink(&secret, linked.log()).unwrap();
    let path = std::ffi::CString::new(fifo.log().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let configs: Vec<ContainerConfig> = [&healthy, &linked, &fifo]
        .iter()
        .map(|c| c.config(&["a"]))
        .collect();
    let engine = node.start(node.settings(), routes(&[&a], configs));
    let expected = good(&healthy, "healthy", 20);
    wait_for("the healthy lines", T, || a.count() >= expected.len());
    wait_for("both bad logs to be counted", T, || {
        node.recorder.get("input:unreadable_file") == 2
    });
    let more = good(&healthy, "more", 5);
    let expected: Vec<String> = expected.into_iter().chain(more).collect();
    wait_for("the lines after", T, || a.count() >= expected.len());
    assert_same_lines("drain a", a.messages(), expected);
    engine.join();
}
