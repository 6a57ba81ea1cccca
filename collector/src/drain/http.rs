//! The `http://` and `https://` transport: each batch is one POST of newline-delimited JSON.
//!
//! Invariants:
//! * A batch is delivered when the server answers 2xx. The drain's `delivery.dropOnStatus` (by
//!   default 400, 413 and 422: answers that mean the data itself is refused) gives a batch up; every
//!   other answer (3xx, 401, 403, 404, 408, 429, 5xx, …) is retried with backoff, forever, as the
//!   log file is the buffer. A refused batch of more than one line is split in halves and each half
//!   sent again when the answer is `413`, until single lines are refused; each refused line is
//!   counted dropped (see [`super::retry`]).
//! * Each request has the drain's `timeoutMs` (a batch split on `413` makes several requests).
//! * Redirects are never followed (credentials would go to an address nobody configured); they are
//!   retried, and the error names the `Location` (without its query).
//! * Response bodies are read (so the connection can be reused) and thrown away: they never reach
//!   errors, logs or status. Credentials (bearer token, basic auth) go into headers marked
//!   sensitive and never into errors or logs.
//! * `Content-Type: application/x-ndjson`; with `gzip`, the body is compressed and sent with
//!   `Content-Encoding: gzip`.

use std::{
    collections::VecDeque,
    future::Future,
    io::Write as _,
    net::{IpAddr, SocketAddr},
    ops::Range,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{
    Client,
    connect::{
        HttpConnector,
        dns::{GaiResolver, Name},
    },
};
use tower::{BoxError, Service};

use super::{
    destinations::{Destinations, is_refused},
    stack::{Delivered, Delivery},
};
use crate::pipeline::Batch;

/// An HTTP delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be sent or no response came (connect, TLS, I/O).
    #[error("POST to {url} failed")]
    Request {
        /// The drain URL.
        url: String,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The server answered with a status that is retried.
    #[error("{url} answered {status}")]
    Status {
        /// The drain URL.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// The server redirected the request; it is retried, never followed.
    #[error(
        "{url} answered {status}, a redirect to {location}; drains do not follow redirects: set the drain's URL to the final address"
    )]
    Redirect {
        /// The drain URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// Where it points, without its query.
        location: String,
    },
    /// The server refused the batch with a status in the drain's `dropOnStatus`.
    #[error("{url} refused the batch with {status}")]
    Rejected {
        /// The drain URL.
        url: String,
        /// The status.
        status: StatusCode,
    },
}

impl Error {
    /// The `cause` metric label.
    pub fn cause(&self) -> &'static str {
        match self {
            Error::Request { source, .. } if is_refused(source) => "destination",
            Error::Request { source, .. } if is_tls(source) => "tls",
            Error::Request { source, .. } if source.is_connect() => "connect",
            Error::Request { .. } => "http",
            Error::Status { status, .. } if status.is_server_error() => "http_5xx",
            Error::Status { status, .. } if status.is_client_error() => "http_4xx",
            Error::Status { .. } => "http",
            Error::Redirect { .. } => "http_3xx",
            Error::Rejected { .. } => "rejected",
        }
    }

    /// Whether the batch must be given up rather than retried.
    pub fn is_rejected(&self) -> bool {
        matches!(self, Error::Rejected { .. })
    }
}

/// Whether a rustls error is anywhere in `err`'s chain, including inside (nested) `io::Error`s,
/// whose `source()` skips the error they wrap.
pub fn is_tls(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        next = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

/// The client of HTTP drains.
type HttpClient = Client<HttpsConnector<GuardedConnector>, Full<Bytes>>;

/// The TCP connector of HTTP drains: names are resolved by the system resolver and only the
/// addresses the destinations policy allows are tried; an IP-literal host (which is not resolved)
/// is judged before connecting.
#[derive(Clone, Debug)]
pub struct GuardedConnector {
    inner: HttpConnector<PolicyResolver>,
    destinations: Arc<Destinations>,
}

impl GuardedConnector {
    /// A connector for plain TCP under `https_or_http` (TLS is added around it).
    pub fn new(destinations: Arc<Destinations>) -> Self {
        let mut inner = HttpConnector::new_with_resolver(PolicyResolver {
            gai: GaiResolver::new(),
            destinations: Arc::clone(&destinations),
        });
        inner.enforce_http(false);
        Self { inner, destinations }
    }
}

impl Service<Uri> for GuardedConnector {
    type Response = <HttpConnector<PolicyResolver> as Service<Uri>>::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let literal = uri.host().and_then(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
        });
        if let Some(Err(refused)) = literal.map(|ip| self.destinations.check(ip)) {
            return Box::pin(async move { Err(refused.into()) });
        }
        let connecting = self.inner.call(uri);
        Box::pin(async move { connecting.await.map_err(Into::into) })
    }
}

/// The system resolver, keeping only the addresses the destinations policy allows.
#[derive(Clone, Debug)]
pub struct PolicyResolver {
    gai: GaiResolver,
    destinations: Arc<Destinations>,
}

impl Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.gai.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolving = self.gai.call(name);
        let destinations = Arc::clone(&self.destinations);
        Box::pin(async move { Ok(destinations.filter(resolving.await?)?.into_iter()) })
    }
}

/// The HTTP transport [`Service`].
#[derive(Clone, Debug)]
pub struct HttpService {
    client: HttpClient,
    inner: Arc<Inner>,
}

struct Inner {
    /// The URL without its query, for messages.
    url: String,
    uri: Uri,
    headers: HeaderMap,
    gzip: bool,
    /// Answers that give the batch up.
    drop_on: Vec<StatusCode>,
    /// Limit of one request (a split batch makes several).
    timeout: std::time::Duration,
}

impl std::fmt::Debug for Inner {
    // The full URI (its query may hold a key) and the headers (credentials) are left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpDrain")
            .field("url", &self.url)
            .field("gzip", &self.gzip)
            .field("drop_on", &self.drop_on)
            .finish_non_exhaustive()
    }
}

impl HttpService {
    /// A transport posting to `uri` (already validated) through `connector`.
    pub fn new(
        url: String,
        uri: Uri,
        headers: HeaderMap,
        gzip: bool,
        drop_on: Vec<StatusCode>,
        timeout: std::time::Duration,
        connector: HttpsConnector<GuardedConnector>,
    ) -> Self {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Self {
            client,
            inner: Arc::new(Inner {
                url,
                uri,
                headers,
                gzip,
                drop_on,
                timeout,
            }),
        }
    }
}

/// The batch's bytes as a body without copying them.
struct BatchBytes(Arc<Batch>);

impl AsRef<[u8]> for BatchBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0.bytes
    }
}

/// The body for `part` of the batch: its bytes (not copied), or gzipped.
fn body(batch: &Arc<Batch>, part: Range<usize>, gzip: bool) -> Bytes {
    if !gzip {
        return Bytes::from_owner(BatchBytes(Arc::clone(batch))).slice(part);
    }
    let bytes = &batch.bytes[part];
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 4), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// Read (up to 64 KiB of) a response body and throw it away, so the connection can be reused.
/// Bodies are the receiver's text: they never reach errors, logs or status.
async fn discard(body: hyper::body::Incoming) {
    let _ = Limited::new(body, 64 * 1024).collect().await;
}

/// Lines in a part of a batch (every JSON line ends with `\n`).
fn lines_in(bytes: &[u8]) -> u32 {
    u32::try_from(memchr::memchr_iter(b'\n', bytes).count()).unwrap_or(u32::MAX)
}

/// `part` split after its middle line (`None` for a single line).
fn halves(bytes: &[u8], part: Range<usize>) -> Option<(Range<usize>, Range<usize>)> {
    let lines = lines_in(&bytes[part.clone()]);
    if lines < 2 {
        return None;
    }
    let cut = memchr::memchr_iter(b'\n', &bytes[part.clone()]).nth((lines / 2 - 1) as usize)?;
    let mid = part.start + cut + 1;
    Some((part.start..mid, mid..part.end))
}

/// What one POST came to.
enum Answer {
    Delivered,
    /// The status is in the drain's `dropOnStatus`.
    Refused(StatusCode),
}

impl Inner {
    /// POST `part` of `batch` within the drain's timeout. Retryable failures are errors.
    async fn post(
        &self,
        client: &HttpClient,
        batch: &Arc<Batch>,
        part: Range<usize>,
    ) -> Result<Answer, BoxError> {
        tokio::time::timeout(self.timeout, self.post_once(client, batch, part))
            .await
            .map_err(|_| tower::timeout::error::Elapsed::new())?
    }

    async fn post_once(
        &self,
        client: &HttpClient,
        batch: &Arc<Batch>,
        part: Range<usize>,
    ) -> Result<Answer, BoxError> {
        let payload = if self.gzip {
            // Compressing a large batch takes milliseconds: keep it off the async workers.
            let batch = Arc::clone(batch);
            tokio::task::spawn_blocking(move || body(&batch, part, true)).await?
        } else {
            body(batch, part, false)
        };
        let mut request = Request::post(self.uri.clone()).body(Full::new(payload))?;
        request.headers_mut().extend(self.headers.clone());
        let response = client.request(request).await.map_err(|source| Error::Request {
            url: self.url.clone(),
            source,
        })?;
        let status = response.status();
        let url = self.url.clone();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map_or("(no Location header)", |l| {
                    l.split(['?', '#']).next().unwrap_or(l)
                })
                .to_owned();
            discard(response.into_body()).await;
            return Err(Error::Redirect {
                url,
                status,
                location,
            }
            .into());
        }
        discard(response.into_body()).await;
        if status.is_success() {
            Ok(Answer::Delivered)
        } else if self.drop_on.contains(&status) {
            Ok(Answer::Refused(status))
        } else {
            Err(Error::Status { url, status }.into())
        }
    }

    /// Deliver `batch`, splitting it on `413` down to single lines. A refusal of the whole batch
    /// is an [`Error::Rejected`]; refusals of parts are counted in the [`Delivered`] answer. A
    /// retryable failure of any part fails the batch (parts already delivered are sent again with
    /// it: a repeat, never a loss).
    async fn deliver(&self, client: &HttpClient, batch: Arc<Batch>) -> Result<Delivered, BoxError> {
        let whole = 0..batch.bytes.len();
        let mut parts = VecDeque::from([whole.clone()]);
        let mut delivered = Delivered::default();
        // Parts are sent in order: a split puts both halves at the front.
        while let Some(part) = parts.pop_front() {
            let status = match self.post(client, &batch, part.clone()).await? {
                Answer::Delivered => continue,
                Answer::Refused(status) => status,
            };
            if status == StatusCode::PAYLOAD_TOO_LARGE
                && let Some((first, second)) = halves(&batch.bytes, part.clone())
            {
                parts.push_front(second);
                parts.push_front(first);
                continue;
            }
            if part == whole {
                return Err(Error::Rejected {
                    url: self.url.clone(),
                    status,
                }
                .into());
            }
            delivered.refused_lines += lines_in(&batch.bytes[part.clone()]);
            delivered.refused_bytes += part.len();
            delivered.refusal = Some(format!("{} refused a line with {status}", self.url));
        }
        Ok(delivered)
    }
}

impl Service<Arc<Batch>> for HttpService {
    type Response = Delivered;
    type Error = BoxError;
    type Future = Delivery;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Arc<Batch>) -> Self::Future {
        let client = self.client.clone();
        let inner = Arc::clone(&self.inner);
        Box::pin(async move { inner.deliver(&client, batch).await })
    }
}
