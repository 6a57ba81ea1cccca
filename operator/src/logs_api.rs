//! The aggregated API `logs.sluice.dev/v1alpha1` that `kubectl sluice logs` calls: the
//! kube-apiserver authenticates the caller and proxies the request here over TLS; the operator
//! decides with a SubjectAccessReview and reads the collectors (see [`crate::logs`]).
//!
//! * `GET /apis/logs.sluice.dev/v1alpha1/namespaces/NS/podlogs?[pod=P]…[&container=C][&since=RFC3339][&tail=N]`:
//!   the recent lines of NS as JSON lines ([`sluice_api::query::RecentLine`]), merged by time,
//!   after a `{"warning":"…"}` line for each collector that did not answer (all failing: 502);
//!   with `watch=true`, a follow instead (JSON lines as they are read, `{"lagged":N}` and
//!   `{"warning":"…"}` among them). A watch is a long-running request for the API server, so it
//!   is not cut at its request timeout.
//! * `GET /apis/logs.sluice.dev/v1alpha1/podlogs?…`: the same over every namespace whose pod logs
//!   the caller may read.
//! * Discovery (`/apis`, `/apis/logs.sluice.dev`, `/apis/logs.sluice.dev/v1alpha1`) and `/healthz`.
//!
//! Invariants:
//! * only the front proxy is served: a TLS client certificate that chains to the requestheader CA
//!   of the `extension-apiserver-authentication` ConfigMap, whose common name is one of its
//!   `requestheader-allowed-names` (any, when that list is empty), is required by the handshake;
//!   the caller's identity is then taken from the requestheader headers it names, and from
//!   nowhere else;
//! * a namespace is read only after the API server said the caller may `get pods/log` there;
//! * the collectors are those whose node Lease in the sluice namespace is unexpired and carries
//!   [`sluice_api::query::ADDRESS_ANNOTATION`]; they are asked with the shared token, never with
//!   anything of the caller's.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use futures::StreamExt as _;
use hyper::body::Bytes;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{ConfigMap, Namespace},
};
use kube::{Api, Client, api::ListParams};
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::json;
use sluice_api::{
    health::{LEASE_LABEL, LEASE_LABEL_VALUE},
    query::ADDRESS_ANNOTATION,
};
use tokio_util::sync::CancellationToken;

use crate::logs::{Caller, Collectors, Query, may_read_logs};

/// The API group.
pub const GROUP: &str = "logs.sluice.dev";
/// The version.
pub const VERSION: &str = "v1alpha1";
/// The one resource.
pub const RESOURCE: &str = "podlogs";
/// The ConfigMap (in kube-system) where the API server publishes how to trust its front proxy.
pub const AUTHENTICATION_CONFIGMAP: &str = "extension-apiserver-authentication";
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many SubjectAccessReviews one `-A` request has in flight.
const REVIEWS_AT_ONCE: usize = 8;
/// Lines a follow buffers between the collectors and a slow caller.
const FOLLOW_BUFFER: usize = 1024;

/// How the API is served.
#[derive(Clone)]
pub struct ApiSettings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The serving certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// Its key (PEM).
    pub key_pem: Vec<u8>,
    /// The sluice namespace (the collectors' node Leases).
    pub namespace: String,
    /// The token the collectors' query APIs accept.
    pub token: String,
}

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("listen", &self.listen)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Why the API cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The requestheader configuration could not be read.
    #[error(
        "cannot read ConfigMap kube-system/{AUTHENTICATION_CONFIGMAP} (the operator needs get on it: \
         deploy/rbac/logs-api.yaml): {0}"
    )]
    FrontProxyConfig(#[source] kube::Error),
    /// The API server has no front proxy configured.
    #[error(
        "the API server publishes no requestheader CA in kube-system/{AUTHENTICATION_CONFIGMAP}: the \
         aggregation layer is off (kube-apiserver --requestheader-client-ca-file and --proxy-client-cert-file)"
    )]
    NoFrontProxy,
    /// A certificate or key does not parse, or TLS cannot be set up with it.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How the API server's front proxy is recognised, from `extension-apiserver-authentication`.
#[derive(Clone, Debug, Default)]
struct FrontProxy {
    ca_pem: String,
    allowed_names: Vec<String>,
    user_headers: Vec<String>,
    group_headers: Vec<String>,
    uid_headers: Vec<String>,
    extra_prefixes: Vec<String>,
}

impl FrontProxy {
    async fn read(client: &Client) -> Result<Self, ApiError> {
        let map = Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
            .get(AUTHENTICATION_CONFIGMAP)
            .await
            .map_err(ApiError::FrontProxyConfig)?;
        let data = map.data.unwrap_or_default();
        let list = |key: &str| -> Vec<String> {
            data.get(key)
                .and_then(|v| serde_json::from_str::<Vec<String>>(v).ok())
                .unwrap_or_default()
        };
        let ca_pem = data
            .get("requestheader-client-ca-file")
            .filter(|v| !v.trim().is_empty())
            .ok_or(ApiError::NoFrontProxy)?
            .clone();
        Ok(Self {
            ca_pem,
            allowed_names: list("requestheader-allowed-names"),
            user_headers: list("requestheader-username-headers"),
            group_headers: list("requestheader-group-headers"),
            uid_headers: list("requestheader-uid-headers"),
            extra_prefixes: list("requestheader-extra-headers-prefix"),
        })
    }

    /// The caller named by the request headers; `None` without a user name.
    fn caller(&self, headers: &HeaderMap) -> Option<Caller> {
        let values = |names: &[String]| -> Vec<String> {
            names
                .iter()
                .flat_map(|n| headers.get_all(n.as_str()))
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect()
        };
        let user = values(&self.user_headers).into_iter().find(|u| !u.is_empty())?;
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in headers {
            let name = name.as_str();
            let Some(key) = self.extra_prefixes.iter().find_map(|p| {
                let p = p.to_ascii_lowercase();
                name.strip_prefix(p.as_str())
            }) else {
                continue;
            };
            let (Some(key), Ok(value)) = (sluice_api::query::decode_component(key), value.to_str()) else {
                continue;
            };
            extra
                .entry(key.to_ascii_lowercase())
                .or_default()
                .push(value.to_owned());
        }
        Some(Caller {
            user,
            groups: values(&self.group_headers),
            uid: values(&self.uid_headers).into_iter().find(|u| !u.is_empty()),
            extra,
        })
    }

    /// TLS that requires a client certificate of the requestheader CA.
    fn tls(&self, settings: &ApiSettings) -> Result<ServerConfig, ApiError> {
        let tls = |e: &dyn std::fmt::Display| ApiError::Tls(e.to_string());
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots
                .add(cert.map_err(|e| ApiError::Tls(format!("the requestheader CA: {e}")))?)
                .map_err(|e| ApiError::Tls(format!("the requestheader CA: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
            .build()
            .map_err(|e| tls(&e))?;
        let chain = CertificateDer::pem_slice_iter(&settings.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::Tls(format!("the serving certificate: {e}")))?;
        if chain.is_empty() {
            return Err(ApiError::Tls(
                "the serving certificate file holds no certificate".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&settings.key_pem)
            .map_err(|e| ApiError::Tls(format!("the serving key: {e}")))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| tls(&e))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Whether the verified client certificate `cert` is an allowed front proxy (by common name).
    fn allows(&self, cert: &CertificateDer<'_>) -> bool {
        if self.allowed_names.is_empty() {
            return true;
        }
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
            return false;
        };
        parsed
            .subject()
            .iter_common_name()
            .filter_map(|cn| cn.as_str().ok())
            .any(|cn| self.allowed_names.iter().any(|n| n == cn))
    }
}

#[derive(Clone)]
struct Shared {
    client: Client,
    front: Arc<FrontProxy>,
    namespace: String,
    token: String,
    shutdown: CancellationToken,
}

/// Read the front proxy's configuration, bind `settings.listen` and serve until `shutdown`.
/// Returns the bound address and the serving task.
pub async fn serve(
    client: Client,
    settings: ApiSettings,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), ApiError> {
    let front = FrontProxy::read(&client).await?;
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(front.tls(&settings)?));
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| ApiError::Listen {
            addr: settings.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ApiError::Listen {
        addr: settings.listen,
        source,
    })?;
    let shared = Shared {
        client,
        front: Arc::new(front),
        namespace: settings.namespace.clone(),
        token: settings.token.clone(),
        shutdown: shutdown.clone(),
    };
    let app = router(shared.clone());
    tracing::info!(address = %bound, "serving the logs API ({GROUP}/{VERSION}) to the API server's front proxy");
    let task = tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "logs API: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (tls, app, front) = (tls.clone(), app.clone(), Arc::clone(&shared.front));
            tokio::spawn(async move {
                let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await else {
                    tracing::debug!(%peer, "logs API: TLS handshake failed (not the front proxy?)");
                    return;
                };
                let allowed = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .is_some_and(|c| front.allows(c));
                if !allowed {
                    tracing::warn!(%peer, "logs API: a client certificate of the requestheader CA whose name is not in requestheader-allowed-names; refused");
                    return;
                }
                let service = hyper_util::service::TowerToHyperService::new(app);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "logs API: connection ended with an error");
                }
            });
        }
    });
    Ok((bound, task))
}

fn router(shared: Shared) -> Router {
    let base = format!("/apis/{GROUP}/{VERSION}");
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/apis",
            get(|| async {
                json_response(&json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group()]}))
            }),
        )
        .route(&format!("/apis/{GROUP}"), get(|| async { json_response(&group()) }))
        .route(
            &base,
            get(|| async {
                json_response(&json!({
                    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
                    "resources": [{"name": RESOURCE, "singularName": "podlogs", "namespaced": true,
                                   "kind": "PodLogs", "verbs": ["get", "list", "watch"]}],
                }))
            }),
        )
        .route(
            &format!("{base}/namespaces/{{namespace}}/{RESOURCE}"),
            get(
                |State(shared): State<Shared>, Path(namespace): Path<String>, headers: HeaderMap, RawQuery(query): RawQuery| async move {
                    lines(shared, Some(namespace), headers, query.unwrap_or_default()).await
                },
            ),
        )
        .route(
            &format!("{base}/{RESOURCE}"),
            get(
                |State(shared): State<Shared>, headers: HeaderMap, RawQuery(query): RawQuery| async move {
                    lines(shared, None, headers, query.unwrap_or_default()).await
                },
            ),
        )
        .fallback(|| async { status(StatusCode::NOT_FOUND, "NotFound", "no such path in logs.sluice.dev") })
        .with_state(shared)
}

fn json_response(value: &serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

fn group() -> serde_json::Value {
    let version = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": GROUP, "versions": [version], "preferredVersion": version})
}

/// A Kubernetes `Status` answer, which kubectl and kube clients show as the error.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code.as_u16()});
    (code, json_response(&body)).into_response()
}

/// What a `podlogs` request asks for.
#[derive(Debug, Default, PartialEq)]
struct Params {
    pods: Vec<String>,
    container: Option<String>,
    since: Option<String>,
    tail: Option<usize>,
    watch: bool,
}

impl Params {
    fn parse(query: &str) -> Result<Self, String> {
        let mut params = Self::default();
        for (key, value) in sluice_api::query::query_pairs(query)? {
            match key.as_str() {
                "pod" => params.pods.push(value),
                "container" => params.container = Some(value),
                "since" => {
                    value
                        .parse::<jiff::Timestamp>()
                        .map_err(|e| format!("since: not an RFC 3339 time: {e}"))?;
                    params.since = Some(value);
                }
                "tail" => params.tail = Some(value.parse().map_err(|e| format!("tail: {e}"))?),
                "watch" => params.watch = matches!(value.as_str(), "true" | "1"),
                // Sent by some clients on every list; nothing to do with lines.
                "timeoutSeconds" | "resourceVersion" | "allowWatchBookmarks" => {}
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        Ok(params)
    }
}

async fn lines(shared: Shared, namespace: Option<String>, headers: HeaderMap, query: String) -> Response {
    let Some(caller) = shared.front.caller(&headers) else {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "no user in the front proxy's headers",
        );
    };
    let params = match Params::parse(&query) {
        Ok(p) => p,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    let namespaces = match readable(&shared.client, &caller, namespace).await {
        Ok(n) => n,
        Err(response) => return *response,
    };
    let collectors = match collectors(&shared).await {
        Ok(c) => c,
        Err(response) => return *response,
    };
    let queries: Vec<Query> = namespaces
        .into_iter()
        .map(|namespace| Query {
            namespace,
            pods: params.pods.clone(),
            container: params.container.clone(),
            since: params.since.clone(),
            tail: params.tail,
        })
        .collect();
    if params.watch {
        return follow(collectors, queries, shared.shutdown.child_token());
    }
    let asks = collectors.endpoints.len() * queries.len();
    let (lines, failures) = collectors.recent_lenient(&queries, params.tail).await;
    if !failures.is_empty() && failures.len() == asks {
        let all: Vec<String> = failures.iter().map(ToString::to_string).collect();
        return status(StatusCode::BAD_GATEWAY, "InternalError", &all.join("; "));
    }
    // The collectors that failed come first, as warnings; then the lines of the others.
    let mut body = Vec::new();
    for failure in failures {
        if serde_json::to_writer(&mut body, &json!({ "warning": failure.to_string() })).is_ok() {
            body.push(b'\n');
        }
    }
    for line in lines {
        if serde_json::to_writer(&mut body, &line).is_ok() {
            body.push(b'\n');
        }
    }
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// The namespaces to read: `namespace` if the caller may read its pod logs, else (no namespace)
/// every namespace the caller may read; an answer to send otherwise.
async fn readable(
    client: &Client,
    caller: &Caller,
    namespace: Option<String>,
) -> Result<Vec<String>, Box<Response>> {
    let review_failed = |e: crate::logs::Error| {
        Box::new(status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            &e.to_string(),
        ))
    };
    if let Some(ns) = namespace {
        return match may_read_logs(client, caller, &ns).await {
            Ok(true) => Ok(vec![ns]),
            Ok(false) => Err(Box::new(status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "user {:?} may not read pod logs in namespace {ns:?}: reading lines through sluice \
                     needs get on pods/log there, as kubectl logs does",
                    caller.user
                ),
            ))),
            Err(e) => Err(review_failed(e)),
        };
    }
    let everywhere = may_read_logs(client, caller, "").await.map_err(review_failed)?;
    let names: Vec<String> = Api::<Namespace>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map_err(|e| {
            Box::new(status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!("the operator cannot list namespaces: {e}"),
            ))
        })?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    if everywhere {
        return Ok(names);
    }
    let verdicts: Vec<(String, Result<bool, crate::logs::Error>)> = futures::stream::iter(names)
        .map(|ns| async move {
            let verdict = may_read_logs(client, caller, &ns).await;
            (ns, verdict)
        })
        .buffered(REVIEWS_AT_ONCE)
        .collect()
        .await;
    let mut allowed = Vec::new();
    for (ns, verdict) in verdicts {
        if verdict.map_err(review_failed)? {
            allowed.push(ns);
        }
    }
    if allowed.is_empty() {
        return Err(Box::new(status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "user {:?} may not read pod logs in any namespace (get on pods/log, as kubectl logs needs)",
                caller.user
            ),
        )));
    }
    Ok(allowed)
}

/// The collectors that publish a query address on an unexpired node Lease.
async fn collectors(shared: &Shared) -> Result<Collectors, Box<Response>> {
    let leases = Api::<Lease>::namespaced(shared.client.clone(), &shared.namespace)
        .list(&ListParams::default().labels(&format!("{LEASE_LABEL}={LEASE_LABEL_VALUE}")))
        .await
        .map_err(|e| {
            Box::new(status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                &format!(
                    "the operator cannot list the collectors' Leases in {}: {e}",
                    shared.namespace
                ),
            ))
        })?;
    let now = jiff::Timestamp::now();
    let endpoints: Vec<String> = leases
        .items
        .iter()
        .filter(|lease| {
            let spec = lease.spec.as_ref();
            let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
            let seconds = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0);
            renewed.is_some_and(|r| r + jiff::SignedDuration::from_secs(i64::from(seconds)) > now)
        })
        .filter_map(|lease| lease.metadata.annotations.as_ref()?.get(ADDRESS_ANNOTATION))
        .filter(|address| address.parse::<SocketAddr>().is_ok())
        .map(|address| format!("http://{address}"))
        .collect();
    if endpoints.is_empty() {
        return Err(Box::new(status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            &format!(
                "no collector serves queries: no unexpired collector Lease in {} has {ADDRESS_ANNOTATION} \
                 (are the collectors running, with --query-listen?)",
                shared.namespace
            ),
        )));
    }
    Ok(Collectors::new(endpoints, shared.token.clone()))
}

/// A streaming answer fed by [`Collectors::follow`]; the follows stop when the caller goes away
/// (the body, and with it the guard, is dropped) or at shutdown.
fn follow(collectors: Collectors, queries: Vec<Query>, cancel: CancellationToken) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(FOLLOW_BUFFER);
    let stop = cancel.clone();
    tokio::spawn(async move { collectors.follow(&queries, tx, stop).await });
    let guard = cancel.drop_guard();
    let stream = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        let line = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(line), (rx, guard)))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        let p = Params::parse("pod=a&pod=b&container=c&since=2026-01-01T00%3A00%3A00Z&tail=3&watch=true")
            .unwrap();
        assert_eq!(
            p,
            Params {
                pods: vec!["a".into(), "b".into()],
                container: Some("c".into()),
                since: Some("2026-01-01T00:00:00Z".into()),
                tail: Some(3),
                watch: true,
            }
        );
        assert!(Params::parse("since=yesterday").is_err());
        assert!(Params::parse("namespace=other").is_err());
        assert_eq!(Params::parse("").unwrap(), Params::default());
    }

    #[test]
    fn the_caller_comes_from_the_configured_headers_only() {
        let front = FrontProxy {
            user_headers: vec!["X-Remote-User".into()],
            group_headers: vec!["X-Remote-Group".into()],
            extra_prefixes: vec!["X-Remote-Extra-".into()],
            ..FrontProxy::default()
        };
        let mut headers = HeaderMap::new();
        assert!(front.caller(&headers).is_none());
        headers.insert("x-remote-user", "alice".parse().unwrap());
        headers.append("x-remote-group", "dev".parse().unwrap());
        headers.append("x-remote-group", "system:authenticated".parse().unwrap());
        headers.append("x-remote-extra-scopes%2Fa", "x".parse().unwrap());
        headers.insert("x-other-user", "mallory".parse().unwrap());
        let caller = front.caller(&headers).unwrap();
        assert_eq!(caller.user, "alice");
        assert_eq!(caller.groups, ["dev", "system:authenticated"]);
        assert_eq!(
            caller.extra,
            BTreeMap::from([("scopes/a".to_owned(), vec!["x".to_owned()])])
        );
    }
}
