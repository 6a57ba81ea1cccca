//! The `http://` and `https://` transport: each batch is one POST of newline-delimited JSON.
//!
//! Invariants:
//! * A batch is delivered when the server answers 2xx. 408, 429, 5xx and any other non-2xx answer
//!   that is not a client error are retried; any other 4xx means the request itself is wrong, so the
//!   batch is rejected (see [`super::retry`]) with the status and the start of the response body in
//!   the error.
//! * Credentials (bearer token, basic auth) go into headers marked sensitive and never into errors
//!   or logs.
//! * `Content-Type: application/x-ndjson`; with `gzip`, the body is compressed and sent with
//!   `Content-Encoding: gzip`.

use std::{
    future::Future,
    io::Write as _,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use sluice_api::node_config::HttpOptions;
use tower::{BoxError, Service};

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
    /// The server answered with a status worth retrying (408, 429, 5xx, …).
    #[error("{url} answered {status}: {body}")]
    Status {
        /// The drain URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The start of the response body.
        body: String,
    },
    /// The server refused the request as invalid (4xx other than 408 and 429), or redirected it.
    #[error("{url} rejected the batch with {status}: {body}")]
    Rejected {
        /// The drain URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The start of the response body.
        body: String,
    },
}

impl Error {
    /// The `cause` metric label.
    pub fn cause(&self) -> &'static str {
        match self {
            Error::Request { source, .. } if is_tls(source) => "tls",
            Error::Request { source, .. } if source.is_connect() => "connect",
            Error::Request { .. } => "http",
            Error::Status { status, .. } if status.is_server_error() => "http_5xx",
            Error::Status { status, .. } if status.is_client_error() => "http_4xx",
            Error::Status { .. } => "http",
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

/// Headers of every request: extra headers, credentials, content type and encoding.
pub fn headers(options: Option<&HttpOptions>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    map.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    let Some(options) = options else { return Ok(map) };
    for (name, value) in &options.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("http.headers: {name:?} is not a valid header name"))?;
        let header_value = HeaderValue::from_str(value)
            .map_err(|_| format!("http.headers.{name}: the value is not a valid header value"))?;
        map.insert(header_name, header_value);
    }
    let credentials = match (&options.bearer_token, &options.basic_auth) {
        (Some(_), Some(_)) => return Err("http: give bearerToken or basicAuth, not both".into()),
        (Some(token), None) => Some(format!("Bearer {}", token.expose())),
        (None, Some(basic)) => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                basic.username,
                basic.password.expose()
            ))
        )),
        (None, None) => None,
    };
    if let Some(credentials) = credentials {
        let mut value = HeaderValue::from_str(&credentials)
            .map_err(|_| "http: the credentials contain characters not allowed in a header".to_owned())?;
        value.set_sensitive(true);
        map.insert(header::AUTHORIZATION, value);
    }
    if options.gzip {
        map.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(map)
}

/// The HTTP transport [`Service`].
#[derive(Clone, Debug)]
pub struct HttpService {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    inner: Arc<Inner>,
}

struct Inner {
    /// The URL without its query, for messages.
    url: String,
    uri: Uri,
    headers: HeaderMap,
    gzip: bool,
}

impl std::fmt::Debug for Inner {
    // The full URI (its query may hold a key) and the headers (credentials) are left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpDrain")
            .field("url", &self.url)
            .field("gzip", &self.gzip)
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
        connector: HttpsConnector<HttpConnector>,
    ) -> Self {
        let client = Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        Self {
            client,
            inner: Arc::new(Inner {
                url,
                uri,
                headers,
                gzip,
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

fn body(batch: &Arc<Batch>, gzip: bool) -> Bytes {
    if !gzip {
        return Bytes::from_owner(BatchBytes(Arc::clone(batch)));
    }
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(batch.bytes.len() / 4),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(&batch.bytes);
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// Up to 512 bytes of a response body, as text.
async fn body_head(body: hyper::body::Incoming) -> String {
    let collected = Limited::new(body, 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let head = &collected[..collected.len().min(512)];
    String::from_utf8_lossy(head).into_owned()
}

impl Service<Arc<Batch>> for HttpService {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Arc<Batch>) -> Self::Future {
        let client = self.client.clone();
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let payload = if inner.gzip {
                // Compressing a large batch takes milliseconds: keep it off the async workers.
                let batch = Arc::clone(&batch);
                tokio::task::spawn_blocking(move || body(&batch, true)).await?
            } else {
                body(&batch, false)
            };
            let mut request = Request::post(inner.uri.clone()).body(Full::new(payload))?;
            request.headers_mut().extend(inner.headers.clone());
            let response = client.request(request).await.map_err(|source| Error::Request {
                url: inner.url.clone(),
                source,
            })?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let url = inner.url.clone();
            // A redirect does not go away by retrying, and following it would send credentials
            // to an address nobody configured: the batch is rejected, saying where it points.
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("(no Location header)")
                    .to_owned();
                let body = format!(
                    "redirect to {location}; drains do not follow redirects: set the drain's URL to the final address"
                );
                return Err(Error::Rejected { url, status, body }.into());
            }
            let body = body_head(response.into_body()).await;
            let retryable = !status.is_client_error()
                || status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS;
            Err(if retryable {
                Error::Status { url, status, body }
            } else {
                Error::Rejected { url, status, body }
            }
            .into())
        })
    }
}
