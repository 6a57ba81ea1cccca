//! The query API over [`crate::recent`]: what `kubectl sluice logs` reads, through the operator.
//!
//! It serves nobody but the operator: with TLS ([`QuerySettings::tls`], as the chart runs it) a
//! connection gets through the handshake only with a client certificate of the operator's CA
//! (see [`crate::query_tls`]); and every request must carry `Authorization: Bearer <token>`,
//! the token the operator and the collectors share through a Secret of the sluice namespace
//! (mounted as a file; see the README's threat model). Callers' own credentials never come here:
//! the operator decides who may read which namespace (a SubjectAccessReview on `pods/log`) and
//! asks for exactly that namespace.
//!
//! * `GET /v1/recent?namespace=NS[&pod=P]…[&container=C][&since=RFC3339][&selector=SEL][&tail=N]`:
//!   the recent lines as JSON lines, in time order, at most `max_dump_lines` (and `tail`) of
//!   them. `selector` is a Kubernetes label selector matched against the pods' labels as the
//!   collector last had them (so it matches a deleted pod's lines too).
//! * `GET /v1/follow?…[&after=CURSOR]` (same filters but `tail`): lines as they are read, as a
//!   JSON-lines stream. A follower that falls behind gets `{"lagged":N}` for the N lines it lost;
//!   at most `max_followers` at once (429 beyond), each for at most `follow_timeout`, at which
//!   the stream ends with `{"resume":"CURSOR"}`: a follow again with `after=CURSOR` first gets
//!   the kept lines read since (those the bounds have not given up yet; at most
//!   `max_dump_lines`), then the live ones, each exactly once. A cursor of an earlier collector
//!   process is refused with 410.
//!
//! Invariants: no request reaches the store without the token (compared in constant time);
//! every response is bounded in lines or in time; nothing here can block the tail thread (see
//! [`crate::recent`]).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::sync::{Semaphore, broadcast::error::RecvError};
use tokio_util::sync::CancellationToken;

use crate::{
    query_tls::QueryTls,
    recent::{Cursor, Filter, Followed, Recent, RecentLine},
};

/// A shared secret; `Debug` never shows it.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The shortest token accepted.
pub const MIN_TOKEN_CHARS: usize = 32;

impl Token {
    /// The token in `text` (surrounding whitespace removed); an error when it is too short to
    /// be a secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        let token = text.trim();
        if token.chars().count() < MIN_TOKEN_CHARS {
            return Err(format!(
                "the query token must have at least {MIN_TOKEN_CHARS} characters"
            ));
        }
        Ok(Self(token.into()))
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    fn accepts(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        let mut diff = expected.len() ^ presented.len();
        for (i, e) in expected.iter().enumerate() {
            diff |= usize::from(e ^ presented.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

/// How the query API runs.
#[derive(Clone, Debug)]
pub struct QuerySettings {
    /// The shared token.
    pub token: Token,
    /// Most lines one dump returns.
    pub max_dump_lines: usize,
    /// Most followers at once.
    pub max_followers: usize,
    /// Longest follow.
    pub follow_timeout: Duration,
    /// Serve over mutual TLS; plain HTTP without.
    pub tls: Option<QueryTls>,
}

impl QuerySettings {
    /// Defaults around `token`: 10 000 lines per dump, 32 followers, 1 h per follow.
    pub fn new(token: Token) -> Self {
        Self {
            token,
            max_dump_lines: 10_000,
            max_followers: 32,
            follow_timeout: Duration::from_secs(3600),
            tls: None,
        }
    }
}

#[derive(Clone)]
struct Shared {
    settings: QuerySettings,
    recent: Arc<Recent>,
    followers: Arc<Semaphore>,
    cancel: CancellationToken,
}

/// Where the query API takes its connections from.
enum Listening {
    Plain(tokio::net::TcpListener),
    /// Those that completed mutual TLS.
    Tls(crate::query_tls::TlsListener),
}

/// Bind `addr` and return the server's address and its future (which ends on `cancel`).
pub async fn serve(
    addr: SocketAddr,
    settings: QuerySettings,
    recent: Arc<Recent>,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, impl Future<Output = std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let tls = settings.tls.clone();
    if tls.is_some() {
        tracing::info!(address = %local, "serving the query API (operator only: mutual TLS and bearer token)");
    } else {
        tracing::info!(address = %local, "serving the query API (operator only, bearer token)");
    }
    let shared = Shared {
        followers: Arc::new(Semaphore::new(settings.max_followers)),
        settings,
        recent,
        cancel: cancel.clone(),
    };
    let app = Router::new()
        .route("/v1/recent", get(recent_lines))
        .route("/v1/follow", get(follow))
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .with_state(shared);
    let listening = match tls {
        Some(tls) => Listening::Tls(tls.listen(listener, cancel.child_token())?),
        None => Listening::Plain(listener),
    };
    Ok((local, async move {
        match listening {
            Listening::Plain(plain) => {
                axum::serve(plain, app)
                    .with_graceful_shutdown(cancel.cancelled_owned())
                    .await
            }
            Listening::Tls(tls) => {
                axum::serve(tls, app)
                    .with_graceful_shutdown(cancel.cancelled_owned())
                    .await
            }
        }
    }))
}

async fn authenticate(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match presented {
        Some(token) if shared.settings.token.accepts(token) => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "this API serves only the sluice operator\n",
        )
            .into_response(),
    }
}

/// What a query string asks for.
#[derive(Debug, Default)]
struct Query {
    filter: Filter,
    tail: Option<usize>,
    /// A follow: where an earlier one left off.
    after: Option<Cursor>,
}

/// The query a query string asks for; an error names the bad parameter.
fn parse_query(query: &str) -> Result<Query, String> {
    let mut q = Query::default();
    for (key, value) in sluice_api::query::query_pairs(query)? {
        match key.as_str() {
            "namespace" => q.filter.namespace = value,
            "pod" => q.filter.pods.push(value),
            "container" => q.filter.container = Some(value),
            "since" => {
                q.filter.since = Some(value.parse().map_err(|e| format!("since: {e}"))?);
            }
            "selector" => q.filter.selector = Some(value.parse().map_err(|e| format!("selector: {e}"))?),
            "tail" => q.tail = Some(value.parse().map_err(|e| format!("tail: {e}"))?),
            "after" => q.after = Some(value.parse().map_err(|e| format!("after: {e}"))?),
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    if q.filter.namespace.is_empty() {
        return Err("namespace is required".into());
    }
    Ok(q)
}

fn json_line<T: serde::Serialize + ?Sized>(value: &T) -> Bytes {
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response()
}

async fn recent_lines(State(shared): State<Shared>, request: Request) -> Response {
    let query = match parse_query(request.uri().query().unwrap_or_default()) {
        Ok(q) => q,
        Err(e) => return bad_request(e),
    };
    let limit = query
        .tail
        .unwrap_or(usize::MAX)
        .min(shared.settings.max_dump_lines);
    let mut body = Vec::new();
    for line in shared.recent.dump(&query.filter, limit) {
        body.extend_from_slice(&json_line(&*line));
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

async fn follow(State(shared): State<Shared>, request: Request) -> Response {
    let Query { filter, after, .. } = match parse_query(request.uri().query().unwrap_or_default()) {
        Ok(q) => q,
        Err(e) => return bad_request(e),
    };
    let Ok(permit) = Arc::clone(&shared.followers).try_acquire_owned() else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many followers; try again later\n",
        )
            .into_response();
    };
    let start = match shared
        .recent
        .follow(&filter, after, shared.settings.max_dump_lines)
    {
        Ok(start) => start,
        Err(stale) => return (StatusCode::GONE, format!("{stale}\n")).into_response(),
    };
    let epoch = shared.recent.epoch();
    let deadline = tokio::time::Instant::now() + shared.settings.follow_timeout;
    let cancel = shared.cancel.clone();
    let mut first: std::collections::VecDeque<Bytes> = std::collections::VecDeque::new();
    if start.skipped > 0 {
        first.push_back(json_line(&serde_json::json!({ "lagged": start.skipped })));
    }
    first.extend(start.replay.iter().map(|f| json_line::<RecentLine>(&f.line)));
    let state = Follow {
        first,
        receiver: start.receiver,
        filter,
        cursor: start.arrival,
        ended: false,
        _permit: permit,
    };
    // Each step sends a replayed line, or waits for the next matching line (or a lag notice);
    // the stream ends at the deadline (saying where to resume), at shutdown, or when the client
    // goes away (hyper drops it, and the permit).
    let stream = futures_util::stream::unfold(state, move |mut state| {
        let cancel = cancel.clone();
        async move {
            if let Some(chunk) = state.first.pop_front() {
                return Some((Ok::<_, std::convert::Infallible>(chunk), state));
            }
            if state.ended {
                return None;
            }
            loop {
                let next = tokio::select! {
                    () = cancel.cancelled() => return None,
                    () = tokio::time::sleep_until(deadline) => {
                        state.ended = true;
                        let cursor = Cursor { epoch, arrival: state.cursor };
                        let resume = json_line(&serde_json::json!({ "resume": cursor.to_string() }));
                        return Some((Ok(resume), state));
                    }
                    next = state.receiver.recv() => next,
                };
                let chunk = match next {
                    Ok(Followed {
                        arrival,
                        labels,
                        line,
                    }) => {
                        state.cursor = arrival;
                        if !state.filter.matches(&labels, &line) {
                            continue;
                        }
                        json_line::<RecentLine>(&line)
                    }
                    Err(RecvError::Lagged(n)) => json_line(&serde_json::json!({ "lagged": n })),
                    Err(RecvError::Closed) => return None,
                };
                return Some((Ok(chunk), state));
            }
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A follow's state: the lines to send first, the channel, and the arrival number of the last
/// line looked at (where a follow again resumes).
struct Follow {
    first: std::collections::VecDeque<Bytes>,
    receiver: tokio::sync::broadcast::Receiver<Followed>,
    filter: Filter,
    cursor: u64,
    ended: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        let token = Token::parse(&"s".repeat(40)).unwrap();
        assert!(token.accepts("s".repeat(40).as_bytes()));
        assert!(!token.accepts("s".repeat(39).as_bytes()));
        assert!(!token.accepts(format!("{}x", "s".repeat(40)).as_bytes()));
        assert!(!token.accepts(b""));
        assert!(Token::parse("short").is_err());
        assert_eq!(format!("{token:?}"), "***");
    }

    #[test]
    fn queries() {
        let q = parse_query(
            "namespace=shop&pod=web-0&pod=web-1&since=2026-01-01T00%3A00%3A00Z&tail=5&selector=app%3Dweb&after=7-42",
        )
        .unwrap();
        let f = &q.filter;
        assert_eq!((f.namespace.as_str(), f.pods.len(), q.tail), ("shop", 2, Some(5)));
        assert!(f.since.is_some());
        assert_eq!(
            f.selector.as_ref().map(ToString::to_string).as_deref(),
            Some("app=web")
        );
        assert_eq!(
            q.after,
            Some(Cursor {
                epoch: 7,
                arrival: 42
            })
        );
        assert_eq!(parse_query("pod=x").unwrap_err(), "namespace is required");
        assert!(
            parse_query("namespace=a&selector=a%20in%20")
                .unwrap_err()
                .starts_with("selector: label selector")
        );
        assert!(parse_query("namespace=a&after=x").is_err());
        assert!(parse_query("namespace=a&evil=1").is_err());
        assert!(parse_query("namespace=%zz").is_err());
    }
}
