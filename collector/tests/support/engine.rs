//! Shared pieces of the engine tests (included with `#[path]`; under `support/` so Cargo does not build it as a test of its own):
//! Docker json-file writers, a trivial encoder, a mock drain, a recording emitter.
#![allow(dead_code)]
// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::new_without_default)]

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use sluice_api::node_config::{ContainerConfig, Sources, Stream};
use sluice_collector::{
    engine::{self, EngineHandle, EngineSettings, Routes, Waker},
    pipeline::{Batch, DrainEndpoint, Encoder, LogLine},
};

/// Docker's split size.
pub const SPLIT: usize = 16 * 1024;

/// Poll `cond` every 10 ms until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(poll(timeout, cond), "timed out waiting for {what}");
}

/// Poll `cond` every 10 ms until it holds (`true`) or `timeout` passes (`false`).
pub fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = tokio::time::Instant::now();
    while !cond() {
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// The JSON records Docker writes for one line (split at 16 KiB), each stamped with a time one
/// nanosecond after the last (Docker stamps every record with the time it read it).
pub fn docker_records(stream: Stream, message: &str) -> String {
    static NANOS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut out = String::new();
    let mut text = format!("{message}\n");
    // Split at char boundaries near 16 KiB, like Docker's 16 KiB buffer.
    while !text.is_empty() {
        let mut cut = text.len().min(SPLIT);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let rest = text.split_off(cut);
        let n = NANOS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let time = format!(
            "2026-11-21T15:{:02}:{:02}.{:09}Z",
            n / 60_000_000_000 % 60,
            n / 1_000_000_000 % 60,
            n % 1_000_000_000
        );
        let record = serde_json::json!({"log": text, "stream": stream.as_str(), "time": time});
        out.push_str(&record.to_string());
        out.push('\n');
        text = rest;
    }
    out
}

/// A Docker container directory that the test writes like Docker's json-file driver.
pub struct DockerContainer {
    pub id: String,
    pub dir: PathBuf,
}

impl DockerContainer {
    pub fn new(docker_root: &Path, number: usize) -> Self {
        let id = format!("{:064x}", number + 0xabc);
        let dir = docker_root.join("containers").join(&id);
        fs::create_dir_all(&dir).unwrap();
        let c = Self { id, dir };
        c.set_running(true);
        c
    }

    pub fn set_running(&self, running: bool) {
        let config = serde_json::json!({"Name": format!("/c-{}", &self.id[..8]), "Config": {"Labels": {"app": "t"}}, "State": {"Running": running}});
        fs::write(self.dir.join("config.v2.json"), config.to_string()).unwrap();
    }

    /// Docker's state after `docker create`: not running, never finished (about to start).
    pub fn set_created(&self) {
        let config = serde_json::json!({"Name": format!("/c-{}", &self.id[..8]), "Config": {"Labels": {"app": "t"}}, "State": {"Running": false, "FinishedAt": "0001-01-01T00:00:00Z"}});
        fs::write(self.dir.join("config.v2.json"), config.to_string()).unwrap();
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("{}-json.log", self.id))
    }

    pub fn rotated(&self, number: usize) -> PathBuf {
        self.dir.join(format!("{}-json.log.{number}", self.id))
    }

    /// Append raw bytes to the current file.
    pub fn append_raw(&self, bytes: &[u8]) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    pub fn write(&self, stream: Stream, message: &str) {
        self.append_raw(docker_records(stream, message).as_bytes());
    }

    /// logrotate's copy-truncate: the current file is copied to `.1` (which must be free), then
    /// truncated in place.
    pub fn copy_truncate(&self) {
        fs::copy(self.log(), self.rotated(1)).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.log())
            .unwrap();
    }

    /// Docker's rotation: `.N-1` → `.N` … current → `.1`, keeping `max_file` files in all.
    pub fn rotate(&self, max_file: usize) {
        let _ = fs::remove_file(self.rotated(max_file - 1));
        for n in (1..max_file - 1).rev() {
            let _ = fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        if max_file > 1 {
            let _ = fs::rename(self.log(), self.rotated(1));
        } else {
            let _ = fs::remove_file(self.log());
        }
        fs::File::create(self.log()).unwrap();
    }

    pub fn config(&self, drains: &[&str]) -> ContainerConfig {
        ContainerConfig {
            id: format!("docker://{}", self.id),
            namespace: "ns".into(),
            pod: format!("pod-{}", &self.id[..8]),
            pod_uid: "uid".into(),
            container: "app".into(),
            labels: BTreeMap::new(),
            streams: Stream::all(),
            drains: drains.iter().map(|d| d.to_string()).collect(),
        }
    }
}

/// Frames `stream|truncated|container|message` (the id is kept apart, for duplicate checks).
pub struct TestEncoder;

impl Encoder for TestEncoder {
    fn encode(&mut self, line: &LogLine<'_>, batch: &mut Batch) {
        batch.push_frame(|b| {
            let t = if line.truncated { "T" } else { "-" };
            b.extend_from_slice(
                format!(
                    "{}|{t}|{}|{}|{}",
                    line.stream.as_str(),
                    line.meta.pod,
                    line.id,
                    line.message
                )
                .as_bytes(),
            );
        });
    }
}

/// One received line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Received {
    pub stream: String,
    pub truncated: bool,
    pub pod: String,
    pub id: String,
    pub message: String,
}

fn decode(frame: &[u8]) -> Received {
    let text = std::str::from_utf8(frame).unwrap();
    let mut parts = text.splitn(5, '|');
    let mut next = || parts.next().unwrap().to_owned();
    let (stream, t, pod, id, message) = (next(), next(), next(), next(), next());
    Received {
        stream,
        truncated: t == "T",
        pod,
        id,
        message,
    }
}

/// A drain that records every line it takes and acknowledges it (unless paused).
pub struct MockDrain {
    pub name: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub paused: Arc<AtomicBool>,
    sender: tokio::sync::mpsc::Sender<Batch>,
    rx: Arc<Mutex<tokio::sync::mpsc::Receiver<Batch>>>,
    thread: Option<JoinHandle<()>>,
    pub generation: u64,
    pub batch_max_lines: u32,
}

impl MockDrain {
    /// A drain with a channel of `capacity` batches.
    pub fn start(name: &str, capacity: usize, waker: &Waker) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel::<Batch>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        let received = Arc::new(Mutex::new(Vec::new()));
        let paused = Arc::new(AtomicBool::new(false));
        let wake = waker.wake_fn();
        let (r, p, rx2) = (Arc::clone(&received), Arc::clone(&paused), Arc::clone(&rx));
        // Take, record and acknowledge under the receiver's lock, so `idle()` is exact.
        let thread = std::thread::spawn(move || {
            loop {
                if !p.load(Ordering::Acquire) {
                    let mut rx = rx2.lock().unwrap();
                    match rx.try_recv() {
                        Ok(batch) => {
                            let lines: Vec<Received> = batch.frames().map(decode).collect();
                            assert_eq!(lines.len(), batch.lines as usize, "one frame per line");
                            r.lock().unwrap().extend(lines);
                            batch.ack();
                            drop(rx);
                            wake();
                            continue;
                        }
                        Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => return,
                        Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {}
                    }
                }
                std::thread::park_timeout(Duration::from_millis(1));
            }
        });
        Self {
            name: name.into(),
            received,
            paused,
            rx,
            sender: tx,
            thread: Some(thread),
            generation: 1,
            batch_max_lines: 64,
        }
    }

    pub fn endpoint(&self) -> DrainEndpoint {
        DrainEndpoint {
            name: self.name.clone(),
            generation: self.generation,
            batches: self.sender.clone(),
            new_encoder: Arc::new(|| Box::new(TestEncoder) as Box<dyn Encoder>),
            batch_max_lines: self.batch_max_lines,
            batch_max_bytes: 256 * 1024,
        }
    }

    pub fn messages(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|r| format!("{}:{}", r.stream, r.message))
            .collect()
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Whether every batch sent so far was taken and acknowledged.
    pub fn idle(&self) -> bool {
        let rx = self.rx.lock().unwrap();
        rx.is_empty()
    }

    /// A crash of the drain with the collector: batches not yet taken are lost.
    pub fn discard_queued(&self) {
        let mut rx = self.rx.lock().unwrap();
        while rx.try_recv().is_ok() {}
    }
}

/// Counts every emitter call.
#[derive(Default)]
pub struct Recorder {
    pub counts: Mutex<HashMap<String, u64>>,
}

impl Recorder {
    pub fn get(&self, key: &str) -> u64 {
        self.counts.lock().unwrap().get(key).copied().unwrap_or(0)
    }
    fn add(&self, key: String, count: u64) {
        *self.counts.lock().unwrap().entry(key).or_default() += count;
    }
}

impl engine::Emitter for Recorder {
    fn lines_read(&self, stream: Stream, lines: u64, bytes: u64) {
        self.add(format!("read:{}", stream.as_str()), lines);
        self.add("bytes".into(), bytes);
    }
    fn input_error(&self, cause: &'static str) {
        self.add(format!("input:{cause}"), 1);
    }
    fn lines_dropped(&self, drain: &str, cause: &'static str, lines: u64) {
        self.add(format!("dropped:{drain}:{cause}"), lines);
        self.add("dropped".into(), lines);
    }
    fn lag_bytes(&self, drain: &str, bytes: u64) {
        self.counts.lock().unwrap().insert(format!("lag:{drain}"), bytes);
    }
    fn open_files(&self, files: u64) {
        self.counts.lock().unwrap().insert("open_files".into(), files);
    }
    fn checkpoint_written(&self) {
        self.add("checkpoints".into(), 1);
    }
    fn checkpoint_failed(&self) {
        self.add("checkpoint_errors".into(), 1);
    }
    fn engine_alive(&self) {
        self.add("alive".into(), 1);
    }
}

/// A test node: temp roots, a state dir, one waker.
pub struct Node {
    pub tmp: tempfile::TempDir,
    pub waker: Waker,
    pub recorder: Arc<Recorder>,
}

impl Node {
    pub fn new() -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(std::env::var("ENGINE_LOG").unwrap_or("sluice_collector=info".into()))
            .try_init();
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("docker/containers")).unwrap();
        fs::create_dir_all(tmp.path().join("pods")).unwrap();
        Self {
            tmp,
            waker: Waker::new(),
            recorder: Arc::new(Recorder::default()),
        }
    }

    pub fn docker_root(&self) -> PathBuf {
        self.tmp.path().join("docker")
    }

    pub fn pods_root(&self) -> PathBuf {
        self.tmp.path().join("pods")
    }

    pub fn settings(&self) -> EngineSettings {
        let sources = Sources {
            docker_root: self.docker_root(),
            pods_root: self.pods_root(),
        };
        let mut s = EngineSettings::new(self.tmp.path().join("state"), sources, "node-1".into());
        s.rescan_interval = Duration::from_millis(50);
        s.checkpoint_interval = Duration::from_millis(50);
        // Nothing in these tests writes a rotated file late but the tests that say so.
        s.rotate_wait = Duration::from_millis(100);
        s
    }

    pub fn start(&self, settings: EngineSettings, routes: Routes) -> EngineHandle {
        engine::start(settings, routes, self.waker.clone(), self.recorder.clone()).unwrap()
    }
}

/// A CRI container (`shop/web-1`, container `app`) routed to `drains`, with its log directory
/// (created) under the node's pods root.
pub fn cri_container(node: &Node, drains: &[&str]) -> (ContainerConfig, PathBuf) {
    let dir = node.pods_root().join("shop_web-1_uid-1/app");
    fs::create_dir_all(&dir).unwrap();
    let config = ContainerConfig {
        id: "containerd://abcdef".into(),
        namespace: "shop".into(),
        pod: "web-1".into(),
        pod_uid: "uid-1".into(),
        container: "app".into(),
        labels: Default::default(),
        streams: Stream::all(),
        drains: drains.iter().map(|d| d.to_string()).collect(),
    };
    (config, dir)
}

pub fn routes(drains: &[&MockDrain], containers: Vec<ContainerConfig>) -> Routes {
    Routes {
        drains: drains.iter().map(|d| (d.name.clone(), d.endpoint())).collect(),
        containers,
        selectors: Vec::new(),
    }
}

/// Assert multiset equality, printing a short summary of the difference.
pub fn assert_same_lines(what: &str, got: Vec<String>, expected: Vec<String>) {
    let mut counts: BTreeMap<String, i64> = BTreeMap::new();
    for l in &expected {
        *counts.entry(l.clone()).or_default() += 1;
    }
    for l in &got {
        *counts.entry(l.clone()).or_default() -= 1;
    }
    let missing: Vec<_> = counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(l, _)| short(l))
        .collect();
    let extra: Vec<_> = counts
        .iter()
        .filter(|(_, n)| **n < 0)
        .map(|(l, n)| format!("{}×{}", -n, short(l)))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: got {} lines, expected {}; {} missing (first: {:?}); {} extra or duplicated (first: {:?})",
        got.len(),
        expected.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)],
    );
}

fn short(line: &str) -> String {
    line.chars().take(40).collect()
}

/// Sorted, for multiset comparison.
pub fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

/// Graceful stop: stop reading, let the drains take and acknowledge everything, checkpoint.
pub fn graceful_stop(engine: EngineHandle, drains: &[&MockDrain]) {
    engine.stop_reading(tokio::time::Instant::now() + Duration::from_secs(5));
    for d in drains {
        wait_for("the drain to take every batch", Duration::from_secs(10), || {
            d.idle()
        });
    }
    engine.write_checkpoint().unwrap();
    engine.join();
}
