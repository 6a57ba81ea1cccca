//! Shared helpers for the drain integration tests (included with `#[path]` by each `drain_*.rs`).
#![allow(dead_code, clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use sluice_api::node_config::{DeliveryOptions, DrainConfig, Stream, SyslogFormat};
use sluice_collector::{
    drain::{self, DrainContext, RunningDrain},
    metrics::Metrics,
    pipeline::{Batch, ContainerMeta, Cursor, LogLine, MsgId, test_position},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

/// The container every test line comes from.
pub fn meta() -> ContainerMeta {
    ContainerMeta {
        container_id: "c0ffee".into(),
        namespace: "shop".into(),
        pod: "web-1".into(),
        pod_uid: "u-1".into(),
        container: "app".into(),
        labels: BTreeMap::from([("app".into(), "web".into())]),
        node: "node-a".into(),
        revision: 0,
    }
}

/// A drain config with test-friendly delivery settings.
pub fn config(name: &str, url: &str) -> DrainConfig {
    DrainConfig {
        name: name.into(),
        url: url.into(),
        tls: None,
        syslog: SyslogFormat::default(),
        http: None,
        delivery: DeliveryOptions {
            timeout_ms: 2000,
            retry_initial_ms: 20,
            retry_max_ms: 200,
            ..DeliveryOptions::default()
        },
        owner: None,
    }
}

/// The destinations policy of the tests: the built-in refusals, with this host's loopback
/// receivers allowed.
pub fn local_receivers() -> Arc<sluice_collector::drain::destinations::Destinations> {
    Arc::new(sluice_collector::drain::destinations::Destinations::new(
        Vec::new(),
        vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
    ))
}

/// Start a drain with fresh metrics (loopback receivers allowed).
pub fn start(config: &DrainConfig) -> (RunningDrain, Metrics) {
    start_with(config, local_receivers())
}

/// Start a drain with fresh metrics under the destinations policy `destinations`.
pub fn start_with(
    config: &DrainConfig,
    destinations: Arc<sluice_collector::drain::destinations::Destinations>,
) -> (RunningDrain, Metrics) {
    let metrics = Metrics::new().expect("metrics");
    let ctx = DrainContext {
        node_name: "node-a".into(),
        metrics: metrics.clone(),
        wake: Arc::new(|| {}),
        generation: 1,
        destinations,
        died: None,
    };
    let plan = config.plan().expect("the drain plans");
    (drain::spawn(&plan, ctx), metrics)
}

/// Plays the tail engine: encodes `line-{i}` lines into batches and sends them; the cursor's offset
/// is the number of lines acknowledged.
pub struct Feeder {
    pub cursor: Arc<Cursor>,
    meta: ContainerMeta,
}

impl Default for Feeder {
    fn default() -> Self {
        Self {
            cursor: Arc::new(Cursor::new(None)),
            meta: meta(),
        }
    }
}

impl Feeder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lines acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.cursor.get().map_or(0, |p| p.acked_end.offset)
    }

    /// Send lines `from..to` with `text(i)` as their message, `per_batch` lines per batch.
    pub async fn send(
        &self,
        drain: &drain::RunningDrain,
        range: std::ops::Range<u64>,
        per_batch: u64,
        text: impl Fn(u64) -> String,
    ) {
        self.send_to(&drain.endpoint, range, per_batch, text).await;
    }

    /// As [`Feeder::send`], given only the endpoint (so it can run in its own task).
    pub async fn send_to(
        &self,
        endpoint: &sluice_collector::pipeline::DrainEndpoint,
        range: std::ops::Range<u64>,
        per_batch: u64,
        text: impl Fn(u64) -> String,
    ) {
        let mut encoder = (endpoint.new_encoder)();
        let mut batch = Batch::default();
        for i in range.clone() {
            let message = text(i);
            let line = LogLine {
                meta: &self.meta,
                stream: if i % 3 == 0 {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                },
                timestamp: "2026-11-21T15:15:34.165439785Z",
                message: &message,
                id: MsgId { file: 7, offset: i },
                truncated: false,
            };
            encoder.encode(&line, &mut batch);
            batch.lines += 1; // as the engine does
            batch.mark(&self.cursor, test_position(i + 1));
            if (i + 1 - range.start).is_multiple_of(per_batch) || i + 1 == range.end {
                endpoint
                    .batches
                    .send(std::mem::take(&mut batch))
                    .await
                    .expect("drain task alive");
            }
        }
    }
}

/// Poll `condition` every 10 ms until it holds; panic with `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The MSG part of a received RFC5424 message whose MSG has no spaces.
pub fn msg_of(message: &str) -> String {
    message.rsplit(' ').next().unwrap_or_default().to_owned()
}

/// Read octet-counted frames (`LEN SP MSG`) from `reader` until EOF, recording every MSG.
pub async fn read_octet_frames(mut reader: impl AsyncRead + Unpin, out: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        // Take every complete frame off the front of the buffer.
        while let Some(space) = buf.iter().position(|&b| b == b' ') {
            let len: usize = std::str::from_utf8(&buf[..space])
                .expect("ascii length")
                .parse()
                .expect("a length");
            if buf.len() < space + 1 + len {
                break;
            }
            let frame = String::from_utf8(buf[space + 1..space + 1 + len].to_vec()).expect("utf-8 message");
            out.lock().unwrap().push(frame);
            buf.drain(..space + 1 + len);
        }
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A TCP syslog receiver that records every message, and can stop gracefully and start again on
/// the same port.
pub struct TcpReceiver {
    pub port: u16,
    pub messages: Arc<Mutex<Vec<String>>>,
    /// Connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    tasks: JoinSet<()>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl TcpReceiver {
    pub async fn start(port: u16) -> Self {
        let messages = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::default();
        let mut receiver = Self {
            port,
            messages,
            connections,
            tasks: JoinSet::new(),
            stop: None,
        };
        receiver.listen().await;
        receiver
    }

    async fn listen(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.expect("bind");
        self.port = listener.local_addr().expect("addr").port();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        self.stop = Some(stop);
        let messages = Arc::clone(&self.messages);
        let connections_seen = Arc::clone(&self.connections);
        self.tasks.spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((socket, _)) = accepted else { return };
                        connections_seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        connections.spawn(serve(socket, Arc::clone(&messages), stopped.clone()));
                    }
                    _ = stopped.changed() => break,
                }
            }
            drop(listener);
            while connections.join_next().await.is_some() {}
        });
    }

    /// Stop accepting, half-close every connection and read what the sender still sends until it
    /// closes (so nothing its kernel acknowledged is lost), then return.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        while self.tasks.join_next().await.is_some() {}
    }

    /// Listen again on the same port.
    pub async fn restart(&mut self) {
        self.listen().await;
    }

    pub fn msgs(&self) -> Vec<String> {
        self.messages.lock().unwrap().iter().map(|m| msg_of(m)).collect()
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }
}

impl Drop for TcpReceiver {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn serve(
    socket: TcpStream,
    messages: Arc<Mutex<Vec<String>>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let (reader, mut writer) = socket.into_split();
    let read = read_octet_frames(reader, messages);
    tokio::pin!(read);
    tokio::select! {
        _ = &mut read => return,
        _ = stopped.changed() => {}
    }
    // Graceful stop: tell the sender we are done, then read until it closes.
    let _ = writer.shutdown().await;
    read.await;
}

/// Counts of each element.
pub fn multiset(items: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_insert(0) += 1;
    }
    counts
}

/// Assert that `got` and `want` hold the same lines (in any order), printing only the first
/// difference rather than thousands of lines.
pub fn assert_same_lines(mut got: Vec<String>, mut want: Vec<String>) {
    got.sort();
    want.sort();
    if got != want {
        let first = got
            .iter()
            .zip(&want)
            .position(|(g, w)| g != w)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "received {} lines, expected {}; first difference at sorted index {first}: got {:?}, want {:?}",
            got.len(),
            want.len(),
            got.get(first),
            want.get(first)
        );
    }
}

/// Assert that `got` equals `want` in order, printing only the first difference.
pub fn assert_lines_in_order(got: &[String], want: &[String]) {
    if got != want {
        let first = got
            .iter()
            .zip(want)
            .position(|(g, w)| g != w)
            .unwrap_or(got.len().min(want.len()));
        panic!(
            "received {} lines, expected {}; first difference at index {first}: got {:?}, want {:?}",
            got.len(),
            want.len(),
            got.get(first),
            want.get(first)
        );
    }
}

/// A TCP syslog receiver with a small receive window whose connections read nothing until
/// [`PausedReceiver::resume`], then read everything (optionally `chunk` bytes every `pace`).
pub struct PausedReceiver {
    pub port: u16,
    pub messages: Arc<Mutex<Vec<String>>>,
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    resume: tokio::sync::watch::Sender<bool>,
    readers: Arc<tokio::sync::Mutex<JoinSet<()>>>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl PausedReceiver {
    /// `paused`: whether connections wait for [`PausedReceiver::resume`]; `pace`: read at most
    /// `chunk` bytes per `pace` (a slow reader), or everything as it comes.
    pub async fn start(paused: bool, pace: Option<(usize, Duration)>) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(8192).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages: Arc<Mutex<Vec<String>>> = Arc::default();
        let connections: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let (resume, resumed) = tokio::sync::watch::channel(!paused);
        let readers: Arc<tokio::sync::Mutex<JoinSet<()>>> = Arc::default();
        let acceptor = {
            let (messages, connections, readers) = (
                Arc::clone(&messages),
                Arc::clone(&connections),
                Arc::clone(&readers),
            );
            tokio::spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let (messages, mut resumed) = (Arc::clone(&messages), resumed.clone());
                    readers.lock().await.spawn(async move {
                        let _ = resumed.wait_for(|go| *go).await;
                        match pace {
                            None => read_octet_frames(socket, messages).await,
                            Some((chunk, pace)) => {
                                let (mut pipe, frames) = tokio::io::duplex(chunk);
                                let parse = read_octet_frames(frames, messages);
                                let relay = async move {
                                    let (mut socket, mut buf) = (socket, vec![0u8; chunk]);
                                    loop {
                                        tokio::time::sleep(pace).await;
                                        match socket.read(&mut buf).await {
                                            Ok(0) | Err(_) => return,
                                            Ok(n) if pipe.write_all(&buf[..n]).await.is_err() => return,
                                            Ok(_) => {}
                                        }
                                    }
                                };
                                tokio::join!(relay, parse);
                            }
                        }
                    });
                }
            })
        };
        Self {
            port,
            messages,
            connections,
            resume,
            readers,
            acceptor,
        }
    }

    /// Start reading every connection, past and future.
    pub fn resume(&self) {
        let _ = self.resume.send(true);
    }

    /// Stop accepting and wait until every connection accepted so far was read to its end (EOF,
    /// or a reset).
    pub async fn join(&self) {
        self.acceptor.abort();
        let mut readers = self.readers.lock().await;
        while readers.join_next().await.is_some() {}
    }

    pub fn msgs(&self) -> Vec<String> {
        self.messages.lock().unwrap().iter().map(|m| msg_of(m)).collect()
    }
}

impl Drop for PausedReceiver {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}
