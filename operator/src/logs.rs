//! The operator's side of `kubectl sluice logs`: who may read which namespace's lines, and the
//! collectors' recent lines merged by time.
//!
//! Invariants:
//! * the decision is the API server's: a SubjectAccessReview asks whether the caller may `get`
//!   `pods/log` in the namespace, the very check `kubectl logs` passes; nothing is cached;
//! * a collector is asked only about a namespace the caller was allowed, with the token the
//!   operator and the collectors share; the caller's own credentials never leave the operator;
//! * with TLS configured ([`QueryClient::tls`]) the token goes only over mutual TLS, to a
//!   collector whose certificate chains to the collectors' CA and is for the configured name;
//! * each collector answers within [`COLLECTOR_TIMEOUT`], and every answer is bounded by the
//!   collector (its dump limit), so a merge is bounded too.

use std::{collections::BTreeMap, time::Duration};

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client as HttpClient, ResponseFuture, connect::HttpConnector},
    rt::TokioExecutor,
};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::{Api, Client, api::PostParams};
use rustls_pki_types::ServerName;
use sluice_api::query::{FOLLOW_PATH, RECENT_PATH, RecentLine};
use tokio_util::sync::CancellationToken;

/// How long one collector may take to answer (a follow: to start answering).
pub const COLLECTOR_TIMEOUT: Duration = Duration::from_secs(10);
/// The line a follow sends once every collector's follow has started (or failed to).
pub const FOLLOWING_LINE: &str = "{\"following\":true}\n";
/// How a collector's follow that reached its time limit starts its last line.
const RESUME_PREFIX: &[u8] = b"{\"resume\":";
/// The longest JSON line a follow passes on (a collector's longest line, escaped, fits).
pub const MAX_FOLLOW_LINE_BYTES: usize = 64 << 20;

/// Who is asking, as the API server authenticated them.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// User name.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// UID, when known.
    pub uid: Option<String>,
    /// Extra attributes (scopes and the like).
    pub extra: BTreeMap<String, Vec<String>>,
}

/// Why lines could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SubjectAccessReview failed (not: it said no).
    #[error("cannot ask the API server whether {user} may read pod logs in {namespace}: {source}")]
    Review {
        /// The caller.
        user: String,
        /// The namespace.
        namespace: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A collector did not answer as it should.
    #[error("collector {endpoint}: {message}")]
    Collector {
        /// Its address.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
}

/// Whether `caller` may read pod logs in `namespace` (`get pods/log`), as the API server decides.
pub async fn may_read_logs(client: &Client, caller: &Caller, namespace: &str) -> Result<bool, Error> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(caller.user.clone()),
            groups: Some(caller.groups.clone()),
            uid: caller.uid.clone(),
            extra: Some(caller.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
                verb: Some("get".into()),
                resource: Some("pods".into()),
                subresource: Some("log".into()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let created = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|source| Error::Review {
            user: caller.user.clone(),
            namespace: namespace.to_owned(),
            source,
        })?;
    Ok(created
        .status
        .is_some_and(|s| s.allowed && !s.denied.unwrap_or(false)))
}

/// The namespaces among `namespaces` whose pod logs `caller` may read (for `-A`).
pub async fn readable_namespaces(
    client: &Client,
    caller: &Caller,
    namespaces: impl IntoIterator<Item = String>,
) -> Result<Vec<String>, Error> {
    let mut allowed = Vec::new();
    for ns in namespaces {
        if may_read_logs(client, caller, &ns).await? {
            allowed.push(ns);
        }
    }
    Ok(allowed)
}

/// What to ask the collectors for (one namespace).
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// The namespace (already authorized).
    pub namespace: String,
    /// Only these pods (empty: all).
    pub pods: Vec<String>,
    /// Only this container.
    pub container: Option<String>,
    /// Only lines at or after this RFC3339 time.
    pub since: Option<String>,
    /// Only the lines of pods this label selector (already checked) selects, by the labels the
    /// collectors keep with their lines (of deleted pods too).
    pub selector: Option<String>,
    /// Only the last this many lines.
    pub tail: Option<usize>,
}

impl Query {
    /// The query string of the collectors' API.
    fn query_string(&self) -> String {
        let mut pairs = vec![("namespace", self.namespace.clone())];
        pairs.extend(self.pods.iter().map(|p| ("pod", p.clone())));
        pairs.extend(self.container.iter().map(|c| ("container", c.clone())));
        pairs.extend(self.since.iter().map(|s| ("since", s.clone())));
        pairs.extend(self.selector.iter().map(|s| ("selector", s.clone())));
        pairs.extend(self.tail.iter().map(|t| ("tail", t.to_string())));
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", sluice_api::query::encode_component(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// How the operator connects to the collectors' query APIs: plain HTTP, or mutual TLS. Built
/// once (cheap to clone: its connections are pooled).
#[derive(Clone)]
pub enum QueryClient {
    /// Plain HTTP (`http://` endpoints only).
    Plain(HttpClient<HttpConnector, Empty<Bytes>>),
    /// Mutual TLS (`https://` endpoints only): see [`QueryClient::tls`].
    Tls(HttpClient<HttpsConnector<HttpConnector>, Empty<Bytes>>),
}

impl std::fmt::Debug for QueryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_tls() {
            "QueryClient::Tls"
        } else {
            "QueryClient::Plain"
        })
    }
}

impl QueryClient {
    /// Plain HTTP: the token travels in clear (collectors outside a cluster, tests).
    pub fn plain() -> Self {
        Self::Plain(HttpClient::builder(TokioExecutor::new()).build_http())
    }

    /// Mutual TLS with `config` (the collectors' CA, the operator's client certificate; see
    /// [`sluice_api::query_tls::client_config`]), every collector's certificate verified for
    /// `server_name` whatever its address; `https://` endpoints only (the connector refuses any
    /// other, so the token never goes in clear).
    pub fn tls(config: rustls::ClientConfig, server_name: ServerName<'static>) -> Self {
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(server_name))
            .enable_http1()
            .build();
        Self::Tls(HttpClient::builder(TokioExecutor::new()).build(connector))
    }

    /// Whether it speaks TLS (the scheme of the endpoints it can reach: `https`, else `http`).
    pub fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }

    fn request(&self, request: hyper::Request<Empty<Bytes>>) -> ResponseFuture {
        match self {
            Self::Plain(http) => http.request(request),
            Self::Tls(https) => https.request(request),
        }
    }
}

/// The collectors to ask, and the token they accept.
pub struct Collectors {
    /// `http://host:port` (or `https://`) of each collector's query API.
    pub endpoints: Vec<String>,
    token: String,
    http: QueryClient,
}

impl std::fmt::Debug for Collectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collectors")
            .field("endpoints", &self.endpoints)
            .field("token", &"***")
            .finish()
    }
}

impl Collectors {
    /// Collectors at `endpoints` (`http://`), asked with `token` over plain HTTP.
    pub fn new(endpoints: Vec<String>, token: String) -> Self {
        Self::with_client(endpoints, token, &QueryClient::plain())
    }

    /// Collectors at `endpoints`, asked with `token` through `client`.
    pub fn with_client(endpoints: Vec<String>, token: String, client: &QueryClient) -> Self {
        Self {
            endpoints,
            token,
            http: client.clone(),
        }
    }

    /// The recent lines of every collector for `query`, merged by time (a collector's own order
    /// among equal stamps), at most `query.tail` of them.
    pub async fn recent(&self, query: &Query) -> Result<Vec<RecentLine>, Error> {
        self.recent_of(std::slice::from_ref(query), query.tail).await
    }

    /// The recent lines of every collector for each of `queries` (one per namespace), merged by
    /// time (among equal stamps: by collector, then by query, then in the collector's order), at
    /// most `tail` of them.
    pub async fn recent_of(&self, queries: &[Query], tail: Option<usize>) -> Result<Vec<RecentLine>, Error> {
        let (lines, mut failures) = self.recent_lenient(queries, tail).await;
        match failures.drain(..).next() {
            Some(failure) => Err(failure),
            None => Ok(lines),
        }
    }

    /// As [`Collectors::recent_of`], but a collector that fails is left out and its failure
    /// returned beside the lines of the others (one down collector does not hide the rest).
    pub async fn recent_lenient(
        &self,
        queries: &[Query],
        tail: Option<usize>,
    ) -> (Vec<RecentLine>, Vec<Error>) {
        let asks = self.endpoints.iter().flat_map(|e| {
            queries
                .iter()
                .map(move |q| (e, format!("{RECENT_PATH}?{}", q.query_string())))
        });
        let answers =
            futures::future::join_all(asks.map(|(e, path)| async move { self.fetch(e, &path).await })).await;
        let mut lines: Vec<(Option<jiff::Timestamp>, usize, usize, RecentLine)> = Vec::new();
        let mut failures = Vec::new();
        for (ask, answer) in answers.into_iter().enumerate() {
            match answer {
                Ok(answer) => {
                    for (i, line) in answer.into_iter().enumerate() {
                        lines.push((line.time.parse().ok(), ask, i, line));
                    }
                }
                Err(e) => failures.push(e),
            }
        }
        lines.sort_by_key(|(time, ask, i, _)| (*time, *ask, *i));
        let mut merged: Vec<RecentLine> = lines.into_iter().map(|(_, _, _, l)| l).collect();
        if let Some(tail) = tail
            && merged.len() > tail
        {
            merged.drain(..merged.len() - tail);
        }
        (merged, failures)
    }

    /// Follow every collector for each of `queries`, and each collector whose endpoint comes on
    /// `added` while the follow runs (one that started after the follow began; an endpoint
    /// already followed is ignored): each JSON line a collector sends (a line, or `{"lagged":N}`)
    /// goes to `lines` as it comes, whole; a follow that cannot be had or breaks sends
    /// `{"warning":"…"}` instead; [`FOLLOWING_LINE`] comes once every first collector has started
    /// its follow (every line read after it is sent), and `{"collector":"ENDPOINT"}` once an
    /// added collector has (its lines from then on are sent). A collector's follow that ends at
    /// its time limit (with `{"resume":"CURSOR"}`) is followed again at once from that cursor,
    /// so no line of it is missed or sent twice (see [`Collectors::follow_collector`]). Returns when `lines` is closed,
    /// `cancel` fires, or every follow has ended and `added` is closed. A slow receiver of `lines`
    /// slows only the reading of the collectors' streams (the collectors then drop lines for this
    /// follower and say how many).
    pub async fn follow(
        &self,
        queries: &[Query],
        mut added: tokio::sync::mpsc::Receiver<String>,
        lines: tokio::sync::mpsc::Sender<Bytes>,
        cancel: CancellationToken,
    ) {
        use futures::StreamExt as _;
        use std::sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        };
        // Follows still running per endpoint: an endpoint whose follows all ended may be
        // followed again when its Lease shows it (again).
        let mut running: BTreeMap<String, usize> = BTreeMap::new();
        let mut follows = futures::stream::FuturesUnordered::new();
        // Every follow of a group (the first collectors; one added collector) has started: say so.
        let start_group = |endpoints: Vec<String>, notice: Bytes| {
            let waiting = Arc::new(AtomicUsize::new(endpoints.len() * queries.len()));
            let lines = lines.clone();
            endpoints
                .into_iter()
                .flat_map(|e| queries.iter().map(move |q| (e.clone(), q)))
                .map(|(endpoint, query)| {
                    let (waiting, lines, notice) = (Arc::clone(&waiting), lines.clone(), notice.clone());
                    async move {
                        let started = || async {
                            if waiting.fetch_sub(1, Ordering::AcqRel) == 1 {
                                let _ = lines.send(notice.clone()).await;
                            }
                        };
                        if let Err(e) = self.follow_collector(&endpoint, query, &lines, started).await {
                            let _ = lines
                                .send(json_line(&serde_json::json!({ "warning": e.to_string() })))
                                .await;
                        }
                        endpoint
                    }
                })
                .collect::<Vec<_>>()
        };
        let first: Vec<String> = self.endpoints.clone();
        for e in &first {
            *running.entry(e.clone()).or_default() += queries.len();
        }
        if first.is_empty() || queries.is_empty() {
            let _ = lines.send(Bytes::from_static(FOLLOWING_LINE.as_bytes())).await;
        } else {
            follows.extend(start_group(first, Bytes::from_static(FOLLOWING_LINE.as_bytes())));
        }
        let mut watching = true;
        loop {
            if follows.is_empty() && !watching {
                break;
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = lines.closed() => break,
                Some(endpoint) = follows.next(), if !follows.is_empty() => {
                    if let Some(n) = running.get_mut(&endpoint) {
                        *n -= 1;
                        if *n == 0 {
                            running.remove(&endpoint);
                        }
                    }
                }
                endpoint = added.recv(), if watching => match endpoint {
                    Some(endpoint) if !running.contains_key(&endpoint) && !queries.is_empty() => {
                        running.insert(endpoint.clone(), queries.len());
                        let notice = json_line(&serde_json::json!({ "collector": endpoint }));
                        follows.extend(start_group(vec![endpoint], notice));
                    }
                    Some(_) => {}
                    None => watching = false,
                },
                else => break,
            }
        }
    }

    /// A GET of `path` from the collector at `endpoint` with the operator's token: its answer
    /// once its head came within [`COLLECTOR_TIMEOUT`] with a success status; an error naming
    /// the collector otherwise (with the start of its answer's text).
    async fn request(&self, endpoint: &str, path: &str) -> Result<hyper::Response<Incoming>, Error> {
        let fail = |message: String| Error::Collector {
            endpoint: endpoint.to_owned(),
            message,
        };
        let request = hyper::Request::get(format!("{endpoint}{path}"))
            .header("authorization", format!("Bearer {}", self.token))
            .body(Empty::new())
            .map_err(|e| fail(e.to_string()))?;
        let response = tokio::time::timeout(COLLECTOR_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| fail(format!("no answer within {} s", COLLECTOR_TIMEOUT.as_secs())))?
            .map_err(|e| fail(with_causes(&e)))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let text = tokio::time::timeout(COLLECTOR_TIMEOUT, response.into_body().collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&text[..text.len().min(200)])
            .trim()
            .to_owned();
        Err(fail(format!("{status}: {text}")))
    }

    /// Follow `query` on the collector at `endpoint`, calling `started` once the first follow
    /// is in place. A collector ends each follow after its `--query-follow-max-seconds` with
    /// `{"resume":"CURSOR"}` (not passed on): it is followed again at once with `after=CURSOR`,
    /// and sends first the lines it read since that cursor, then the live ones; so every line it
    /// reads is passed on exactly once across its follows (but those its recent bounds gave up
    /// in between, which it would count as lagged). Returns when a follow ends without a cursor
    /// (the collector stopped), `lines` is closed, or on an error.
    async fn follow_collector<F: Future<Output = ()>>(
        &self,
        endpoint: &str,
        query: &Query,
        lines: &tokio::sync::mpsc::Sender<Bytes>,
        started: impl FnOnce() -> F,
    ) -> Result<(), Error> {
        let path = format!("{FOLLOW_PATH}?{}", query.query_string());
        let mut resume = self.follow_one(endpoint, &path, lines, started).await?;
        while let Some(cursor) = resume {
            tracing::debug!(%endpoint, %cursor, "a collector's follow reached its time limit; following again from its cursor");
            let again = format!("{path}&after={}", sluice_api::query::encode_component(&cursor));
            resume = self.follow_one(endpoint, &again, lines, || async {}).await?;
        }
        Ok(())
    }

    /// One follow of `path` on the collector at `endpoint`: every line it sends is passed on to
    /// `lines`, but a `{"resume":"CURSOR"}`, whose cursor is returned.
    async fn follow_one<F: Future<Output = ()>>(
        &self,
        endpoint: &str,
        path: &str,
        lines: &tokio::sync::mpsc::Sender<Bytes>,
        started: impl FnOnce() -> F,
    ) -> Result<Option<String>, Error> {
        let fail = |message: String| Error::Collector {
            endpoint: endpoint.to_owned(),
            message,
        };
        let response = self.request(endpoint, path).await;
        // A collector subscribes before it answers: from here on its lines come.
        started().await;
        let mut body = response?.into_body();
        let mut pending: Vec<u8> = Vec::new();
        let mut resume = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| fail(format!("the follow broke: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if line.starts_with(RESUME_PREFIX) {
                    let cursor = serde_json::from_slice::<serde_json::Value>(&line)
                        .ok()
                        .and_then(|v| v.get("resume")?.as_str().map(str::to_owned))
                        .ok_or_else(|| {
                            fail(format!("a bad resume line: {}", String::from_utf8_lossy(&line)))
                        })?;
                    resume = Some(cursor);
                    continue;
                }
                if lines.send(Bytes::from(line)).await.is_err() {
                    return Ok(None);
                }
            }
            if pending.len() > MAX_FOLLOW_LINE_BYTES {
                return Err(fail(format!("a line longer than {MAX_FOLLOW_LINE_BYTES} bytes")));
            }
        }
        Ok(resume)
    }

    async fn fetch(&self, endpoint: &str, path: &str) -> Result<Vec<RecentLine>, Error> {
        let fail = |message: String| Error::Collector {
            endpoint: endpoint.to_owned(),
            message,
        };
        let answer = async {
            let body = self
                .request(endpoint, path)
                .await?
                .into_body()
                .collect()
                .await
                .map_err(|e| fail(e.to_string()))?
                .to_bytes();
            body.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .map(|l| serde_json::from_slice(l).map_err(|e| fail(format!("bad line: {e}"))))
                .collect()
        };
        tokio::time::timeout(COLLECTOR_TIMEOUT, answer)
            .await
            .map_err(|_| fail(format!("no answer within {} s", COLLECTOR_TIMEOUT.as_secs())))?
    }
}

/// `error` and its causes (a failed TLS handshake says why only in them), `: `-separated.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// `value` as one JSON line.
pub fn json_line(value: &serde_json::Value) -> Bytes {
    let mut text = value.to_string().into_bytes();
    text.push(b'\n');
    Bytes::from(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_encoded() {
        let q = Query {
            namespace: "shop".into(),
            pods: vec!["web-0".into(), "web-1".into()],
            container: Some("app".into()),
            since: Some("2026-01-01T00:00:00+01:00".into()),
            selector: Some("app in (a,b)".into()),
            tail: Some(5),
        };
        assert_eq!(
            q.query_string(),
            "namespace=shop&pod=web-0&pod=web-1&container=app&since=2026-01-01T00%3A00%3A00%2B01%3A00\
             &selector=app%20in%20%28a%2Cb%29&tail=5"
        );
    }
}
