//! An in-process HTTP receiver for `http://` drains.
//!
//! It accepts `POST` requests on 127.0.0.1 (any path), decodes `Content-Encoding: gzip` bodies,
//! splits them into lines and records every non-empty line parsed as JSON. It can be switched to
//! answer `503 Service Unavailable` (recording nothing) to play a failing drain.
//!
//! Invariant: a request is recorded only when it is answered 2xx, so what [`HttpReceiver::lines`]
//! returns is exactly what the collector was told was delivered.

use std::{
    convert::Infallible,
    io::Read,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

#[derive(Debug, Default)]
struct State {
    lines: Mutex<Vec<serde_json::Value>>,
    failing: AtomicBool,
    requests: AtomicU64,
    rejected: AtomicU64,
}

/// A running HTTP receiver; stopped when dropped.
#[derive(Debug)]
pub struct HttpReceiver {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl HttpReceiver {
    /// Start on a free port.
    pub fn start() -> Result<Self> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the HTTP receiver")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let state = Arc::new(State::default());
        let (stop, stopped) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let served = state.clone();
        let thread = thread::spawn(move || runtime.block_on(serve(std_listener, served, stopped)));
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/ingest`, for the drain's URL.
    pub fn url(&self) -> String {
        format!("http://{}/ingest", self.addr)
    }

    /// Answer 503 to every request while `failing` is set.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Every JSON line received (in arrival order).
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.state.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The `message` field of every line received.
    pub fn messages(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter_map(|v| v.get("message")?.as_str().map(str::to_owned))
            .collect()
    }

    /// Requests seen, and how many were answered 503.
    pub fn requests(&self) -> (u64, u64) {
        (
            self.state.requests.load(Ordering::SeqCst),
            self.state.rejected.load(Ordering::SeqCst),
        )
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: std::net::TcpListener, state: Arc<State>, mut stopped: oneshot::Receiver<()>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    // Accept until told to stop; each connection is served on its own task.
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, state.clone()));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        }
    }
}

async fn handle(req: Request<Incoming>, state: Arc<State>) -> Result<Response<Full<Bytes>>, Infallible> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let gzip = req
        .headers()
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let body = match req.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST, "unreadable body")),
    };
    if state.failing.load(Ordering::SeqCst) {
        state.rejected.fetch_add(1, Ordering::SeqCst);
        return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, "failing on purpose"));
    }
    let mut text = Vec::new();
    let decoded = if gzip {
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut text)
            .is_ok()
    } else {
        text.extend_from_slice(&body);
        true
    };
    if !decoded {
        return Ok(reply(StatusCode::BAD_REQUEST, "bad gzip"));
    }
    let mut parsed = Vec::new();
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice(line) {
            Ok(v) => parsed.push(v),
            Err(e) => return Ok(reply(StatusCode::BAD_REQUEST, &format!("line is not JSON: {e}"))),
        }
    }
    if let Ok(mut lines) = state.lines.lock() {
        lines.extend(parsed);
    }
    Ok(reply(StatusCode::OK, "ok"))
}

fn reply(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}
