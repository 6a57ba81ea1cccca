//! `syslog-udp://` and `http://` drains against real loopback receivers.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "support/drain.rs"]
mod support;

use std::{
    collections::BTreeMap,
    convert::Infallible,
    io::Read as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use sluice_api::node_config::{HttpOptions, Redacted, UdpOversize};
use support::*;
use tokio::{
    net::{TcpListener, UdpSocket},
    task::JoinHandle,
};

const WAIT: Duration = Duration::from_secs(30);

struct UdpReceiver {
    port: u16,
    datagrams: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for UdpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn udp_receiver() -> UdpReceiver {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let datagrams = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&datagrams);
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = socket.recv(&mut buf).await {
            sink.lock()
                .unwrap()
                .push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
    });
    UdpReceiver {
        port,
        datagrams,
        task,
    }
}

/// `(i, n, text)` of a datagram carrying `part="i/n"`.
fn part_of(datagram: &str) -> Option<(usize, usize, String)> {
    let start = datagram.find(" part=\"")? + 7;
    let (i, rest) = datagram[start..].split_once('/')?;
    let (n, _) = rest.split_once('"')?;
    let text = datagram.split_once("\"] ")?.1.to_owned();
    Some((i.parse().ok()?, n.parse().ok()?, text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sends_one_datagram_per_line_and_splits_long_lines() {
    let receiver = udp_receiver().await;
    let (drain, metrics) = start(&config(
        "udp",
        &format!("syslog-udp://127.0.0.1:{}", receiver.port),
    ));
    let feeder = Feeder::new();
    let long = "L".repeat(4000);
    // Few enough datagrams that the loopback receive buffer holds them all.
    let text = |i: u64| {
        if i == 50 {
            long.clone()
        } else {
            format!("line-{i}")
        }
    };
    feeder.send(&drain, 0..100, 20, text).await;
    wait_for("every line acknowledged", WAIT, || feeder.acked() == 100).await;
    wait_for("every datagram received", WAIT, || {
        receiver.datagrams.lock().unwrap().len() >= 99 + 3
    })
    .await;
    let datagrams = receiver.datagrams.lock().unwrap().clone();
    assert!(
        datagrams.iter().all(|d| d.len() <= 1472),
        "no datagram over maxDatagramBytes"
    );
    let (parts, whole): (Vec<&String>, Vec<&String>) = datagrams.iter().partition(|d| d.contains(" part=\""));
    let want: Vec<String> = (0..100)
        .filter(|&i| i != 50)
        .map(|i| format!("line-{i}"))
        .collect();
    assert_lines_in_order(&whole.iter().map(|d| msg_of(d)).collect::<Vec<_>>(), &want);
    let mut pieces: Vec<(usize, usize, String)> = parts.iter().filter_map(|d| part_of(d)).collect();
    pieces.sort();
    let n = pieces.len();
    assert!(
        n >= 3 && pieces.iter().all(|p| p.1 == n),
        "{n} parts, each saying it is one of {n}"
    );
    assert_eq!(pieces.into_iter().map(|p| p.2).collect::<String>(), long);
    assert_eq!(metrics.udp_oversize.with_label_values(&["udp", "split"]).get(), 1);
    drain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_truncates_when_told_and_counts_it() {
    let receiver = udp_receiver().await;
    let mut cfg = config("udp-cut", &format!("syslog-udp://127.0.0.1:{}", receiver.port));
    cfg.syslog.udp_oversize = UdpOversize::Truncate;
    cfg.syslog.max_datagram_bytes = 600;
    let (drain, metrics) = start(&cfg);
    let feeder = Feeder::new();
    feeder.send(&drain, 0..1, 1, |_| "T".repeat(2000)).await;
    wait_for("the datagram", WAIT, || {
        !receiver.datagrams.lock().unwrap().is_empty()
    })
    .await;
    let datagram = receiver.datagrams.lock().unwrap()[0].clone();
    assert_eq!(datagram.len(), 600);
    assert!(datagram.contains(" truncated=\"true\"] TTT"), "{datagram}");
    assert_eq!(
        metrics
            .udp_oversize
            .with_label_values(&["udp-cut", "truncate"])
            .get(),
        1
    );
    drain.abort();
}

/// What the HTTP receiver saw.
#[derive(Default)]
struct Seen {
    lines: Vec<serde_json::Value>,
    headers: Vec<BTreeMap<String, String>>,
    /// The path of every request.
    paths: Vec<String>,
}

struct HttpReceiver {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    requests: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP server that answers each request with `status(request number, body)`, and records the
/// lines of requests it answers 2xx.
async fn http_receiver(status: impl Fn(usize, &str) -> StatusCode + Send + Sync + 'static) -> HttpReceiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let requests = Arc::new(AtomicUsize::new(0));
    let status = Arc::new(status);
    let (seen2, requests2) = (Arc::clone(&seen), Arc::clone(&requests));
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (seen, requests, status) = (Arc::clone(&seen2), Arc::clone(&requests2), Arc::clone(&status));
            let service = service_fn(move |req: Request<Incoming>| {
                let (seen, requests, status) =
                    (Arc::clone(&seen), Arc::clone(&requests), Arc::clone(&status));
                async move {
                    let headers: BTreeMap<String, String> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
                        .collect();
                    seen.lock().unwrap().paths.push(req.uri().path().to_owned());
                    let raw = req.into_body().collect().await.unwrap().to_bytes();
                    let body = if headers.get("content-encoding").map(String::as_str) == Some("gzip") {
                        let mut text = String::new();
                        flate2::read::GzDecoder::new(&raw[..])
                            .read_to_string(&mut text)
                            .unwrap();
                        text
                    } else {
                        String::from_utf8(raw.to_vec()).unwrap()
                    };
                    let code = status(requests.fetch_add(1, Ordering::SeqCst), &body);
                    if code.is_success() {
                        let mut seen = seen.lock().unwrap();
                        seen.lines.extend(
                            body.lines()
                                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
                        );
                        seen.headers.push(headers);
                    }
                    let mut response = Response::new(Full::new(Bytes::from(format!("answer {code}"))));
                    *response.status_mut() = code;
                    if code.is_redirection() {
                        response.headers_mut().insert(
                            hyper::header::LOCATION,
                            hyper::header::HeaderValue::from_static("/elsewhere?sig=s3cret"),
                        );
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    HttpReceiver {
        port,
        seen,
        requests,
        task,
    }
}

fn messages(receiver: &HttpReceiver) -> Vec<String> {
    receiver
        .seen
        .lock()
        .unwrap()
        .lines
        .iter()
        .map(|v| v["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_gzip_with_a_bearer_token_delivers_every_line_once() {
    let receiver = http_receiver(|_, _| StatusCode::OK).await;
    let mut cfg = config("http", &format!("http://127.0.0.1:{}/ingest", receiver.port));
    cfg.http = Some(HttpOptions {
        gzip: true,
        bearer_token: Some(Redacted("s3cret".into())),
        headers: BTreeMap::from([("X-Tenant".into(), "shop".into())]),
        // The receiver is plain HTTP on loopback; a drain is planned only with this said.
        allow_credentials_over_http: true,
        ..HttpOptions::default()
    });
    let (drain, metrics) = start(&cfg);
    let feeder = Feeder::new();
    let text = |i: u64| format!("line-{i} \"quoted\" ü\t{}", char::from(1));
    feeder.send(&drain, 0..5_000, 500, text).await;
    wait_for("every line acknowledged", WAIT, || feeder.acked() == 5_000).await;
    assert_same_lines(messages(&receiver), (0..5_000).map(text).collect());
    let seen = receiver.seen.lock().unwrap();
    let first = seen
        .lines
        .iter()
        .find(|l| l["message"].as_str().is_some_and(|m| m.starts_with("line-0 ")))
        .unwrap();
    assert_eq!(
        (
            first["namespace"].as_str(),
            first["stream"].as_str(),
            first["id"].as_str()
        ),
        (Some("shop"), Some("stderr"), Some("00000000000000070"))
    );
    for headers in &seen.headers {
        assert_eq!(
            headers.get("authorization").map(String::as_str),
            Some("Bearer s3cret")
        );
        assert_eq!(
            headers.get("content-type").map(String::as_str),
            Some("application/x-ndjson")
        );
        assert_eq!(headers.get("x-tenant").map(String::as_str), Some("shop"));
    }
    assert_eq!(metrics.lines_delivered.with_label_values(&["http"]).get(), 5_000);
    drain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_503_for_a_while_then_everything_arrives_once() {
    let receiver = http_receiver(|n, _| {
        if n < 4 {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::NO_CONTENT
        }
    })
    .await;
    let (drain, metrics) = start(&config("flaky", &format!("http://127.0.0.1:{}/", receiver.port)));
    let feeder = Feeder::new();
    feeder.send(&drain, 0..3_000, 300, |i| format!("line-{i}")).await;
    wait_for("every line acknowledged", WAIT, || feeder.acked() == 3_000).await;
    assert_same_lines(
        messages(&receiver),
        (0..3_000).map(|i| format!("line-{i}")).collect(),
    );
    assert_eq!(
        metrics
            .delivery_failures
            .with_label_values(&["flaky", "http_5xx"])
            .get(),
        4
    );
    assert!(receiver.requests.load(Ordering::SeqCst) >= 14);
    drain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_400_drops_that_batch_counts_it_and_goes_on() {
    refused_batch_is_dropped_counted_and_not_retried(StatusCode::BAD_REQUEST).await;
}

/// 3xx, 401, 403 and 404 are nobody's choice to lose lines over: they are retried with backoff
/// (counted by status class) until the receiver takes the batch. Redirects are never followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_redirects_401_403_404_are_retried_until_accepted() {
    let answers = [
        StatusCode::UNAUTHORIZED,
        StatusCode::FORBIDDEN,
        StatusCode::NOT_FOUND,
        StatusCode::PERMANENT_REDIRECT,
        StatusCode::FOUND,
    ];
    let receiver = http_receiver(move |n, _| answers.get(n).copied().unwrap_or(StatusCode::OK)).await;
    let (drain, metrics) = start(&config(
        "patient",
        &format!("http://127.0.0.1:{}/", receiver.port),
    ));
    let feeder = Feeder::new();
    feeder.send(&drain, 0..2_000, 250, |i| format!("line-{i}")).await;
    wait_for("every line acknowledged", WAIT, || feeder.acked() == 2_000).await;
    assert_same_lines(
        messages(&receiver),
        (0..2_000).map(|i| format!("line-{i}")).collect(),
    );
    let failures = |cause: &str| {
        metrics
            .delivery_failures
            .with_label_values(&["patient", cause])
            .get()
    };
    assert_eq!((failures("http_4xx"), failures("http_3xx")), (3, 2));
    assert_eq!(
        metrics
            .lines_dropped
            .with_label_values(&["patient", "rejected"])
            .get(),
        0
    );
    assert!(
        receiver.seen.lock().unwrap().paths.iter().all(|p| p == "/"),
        "a redirect is never followed"
    );
    let error = drain.health().last_error.unwrap_or_default();
    assert!(error.contains("a redirect to /elsewhere;"), "{error}");
    assert!(
        !error.contains("s3cret") && !error.contains("answer 3"),
        "neither the Location's query nor the response body is shown: {error}"
    );
    drain.abort();
}

/// A `413` splits the batch in halves, down to single lines; only the line the receiver refuses
/// on its own is dropped (and counted); every other line arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_413_splits_the_batch_until_single_lines_are_refused() {
    let receiver = http_receiver(|_, body| {
        if body.lines().count() > 50 || body.contains("\"line-777\"") {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::OK
        }
    })
    .await;
    let (drain, metrics) = start(&config("split", &format!("http://127.0.0.1:{}/", receiver.port)));
    let feeder = Feeder::new();
    feeder.send(&drain, 0..2_000, 500, |i| format!("line-{i}")).await;
    wait_for("every line acknowledged", WAIT, || feeder.acked() == 2_000).await;
    assert_same_lines(
        messages(&receiver),
        (0..2_000)
            .filter(|&i| i != 777)
            .map(|i| format!("line-{i}"))
            .collect(),
    );
    assert_eq!(
        metrics
            .lines_dropped
            .with_label_values(&["split", "rejected"])
            .get(),
        1
    );
    assert_eq!(metrics.lines_delivered.with_label_values(&["split"]).get(), 1_999);
    let error = drain.health().last_error.unwrap_or_default();
    assert!(
        error.ends_with("refused a line with 413 Payload Too Large"),
        "{error}"
    );
    drain.abort();
}

/// The policy is the drain's: with `dropOnStatus: [404]`, a 404 gives the batch up and a 400 is
/// retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_drop_on_status_is_set_per_drain() {
    let tries = AtomicUsize::new(0);
    let receiver = http_receiver(move |_, body| {
        if body.contains("\"line-1000\"") {
            if tries.fetch_add(1, Ordering::SeqCst) < 2 {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::NOT_FOUND
            }
        } else {
            StatusCode::OK
        }
    })
    .await;
    let mut cfg = config("strict", &format!("http://127.0.0.1:{}/", receiver.port));
    cfg.delivery.drop_on_status = vec![404];
    let (drain, metrics) = start(&cfg);
    let feeder = Feeder::new();
    feeder.send(&drain, 0..1_250, 250, |i| format!("line-{i}")).await;
    wait_for("every line acknowledged", WAIT, || feeder.acked() == 1_250).await;
    assert_same_lines(
        messages(&receiver),
        (0..1_000).map(|i| format!("line-{i}")).collect(),
    );
    assert_eq!(
        metrics
            .lines_dropped
            .with_label_values(&["strict", "rejected"])
            .get(),
        250
    );
    assert_eq!(
        metrics
            .delivery_failures
            .with_label_values(&["strict", "http_4xx"])
            .get(),
        2
    );
    drain.abort();
}

async fn refused_batch_is_dropped_counted_and_not_retried(refusal: StatusCode) {
    let receiver = http_receiver(move |_, body| {
        if body.contains("\"line-1000\"") {
            refusal
        } else {
            StatusCode::OK
        }
    })
    .await;
    let (drain, metrics) = start(&config("strict", &format!("http://127.0.0.1:{}/", receiver.port)));
    let feeder = Feeder::new();
    feeder.send(&drain, 0..2_000, 250, |i| format!("line-{i}")).await;
    wait_for("every line acknowledged", WAIT, || feeder.acked() == 2_000).await;
    let want: Vec<String> = (0..2_000)
        .filter(|i| !(1_000..1_250).contains(i))
        .map(|i| format!("line-{i}"))
        .collect();
    assert_same_lines(messages(&receiver), want);
    assert_eq!(
        metrics
            .lines_dropped
            .with_label_values(&["strict", "rejected"])
            .get(),
        250
    );
    assert_eq!(
        metrics.lines_delivered.with_label_values(&["strict"]).get(),
        1_750
    );
    // One request per batch of 250: the refused one was not sent again.
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 8, "{refusal}");
    drain.abort();
}

/// By default a drain may not reach this host (nor link-local addresses such as the cloud
/// metadata service): refused after name resolution, counted with cause `destination` and shown
/// as the drain's last error, for every transport; nothing reaches the receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_destinations_policy_refuses_this_host() {
    use sluice_collector::drain::destinations::Destinations;
    let http = http_receiver(|_, _| StatusCode::OK).await;
    let tcp = TcpReceiver::start(0).await;
    let udp = udp_receiver().await;
    let urls = [
        format!("http://127.0.0.1:{}/", http.port),
        format!("http://localhost:{}/", http.port),
        format!("syslog://127.0.0.1:{}", tcp.port),
        format!("syslog://localhost:{}", tcp.port),
        format!("syslog-udp://127.0.0.1:{}", udp.port),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
    ];
    for url in urls {
        let (drain, metrics) = start_with(&config("guarded", &url), Arc::new(Destinations::default()));
        let feeder = Feeder::new();
        feeder.send(&drain, 0..10, 10, |i| format!("line-{i}")).await;
        wait_for("a refusal counted", WAIT, || {
            metrics
                .delivery_failures
                .with_label_values(&["guarded", "destination"])
                .get()
                >= 2
        })
        .await;
        let error = drain.health().last_error.unwrap_or_default();
        assert!(
            error.contains("is refused by the collector's destinations policy (")
                && (error.contains("(loopback ") || error.contains("(link-local 169.254.0.0/16)")),
            "{url}: {error}"
        );
        assert_eq!(feeder.acked(), 0, "{url}");
        drain.abort();
    }
    assert_eq!(http.requests.load(Ordering::SeqCst), 0);
    assert_eq!(tcp.connections.load(Ordering::SeqCst), 0);
    assert!(udp.datagrams.lock().unwrap().is_empty());
}

/// `timeoutMs` limits each request: an answer that does not come in time is a timeout, retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_a_request_that_takes_too_long_times_out_and_is_retried() {
    let receiver = http_receiver(|n, _| {
        if n == 0 {
            // Blocks one of the receiver's workers: the answer comes long after the timeout.
            std::thread::sleep(Duration::from_millis(1_000));
        }
        StatusCode::OK
    })
    .await;
    let mut cfg = config("slow-http", &format!("http://127.0.0.1:{}/", receiver.port));
    cfg.delivery.timeout_ms = 200;
    let (drain, metrics) = start(&cfg);
    let feeder = Feeder::new();
    feeder.send(&drain, 0..500, 500, |i| format!("line-{i}")).await;
    wait_for("every line acknowledged", WAIT, || feeder.acked() == 500).await;
    assert!(
        metrics
            .delivery_failures
            .with_label_values(&["slow-http", "timeout"])
            .get()
            >= 1
    );
    // The first request's lines were recorded although its answer came too late: one repeat of
    // the batch, never a loss.
    let counts = multiset(messages(&receiver));
    assert!((0..500).all(|i| {
        counts
            .get(&format!("line-{i}"))
            .is_some_and(|n| (1..=2).contains(n))
    }));
    drain.abort();
}
