//! The aggregated API `logs.sluice.dev/v1alpha1` that `kubectl sluice logs` calls: the
//! kube-apiserver authenticates the caller and proxies the request here over TLS; the operator
//! decides with a SubjectAccessReview and reads the collectors (see [`crate::logs`]).
//!
//! * `GET /apis/logs.sluice.dev/v1alpha1/namespaces/NS/podlogs?[pod=P]…[&container=C][&since=RFC3339][&labelSelector=SEL][&tail=N]`:
//!   the recent lines of NS (of the pods `labelSelector` selects, by the labels the collectors
//!   keep, so deleted pods' too; a bad selector is a 400 before any collector is asked) as JSON lines ([`sluice_api::query::RecentLine`]), merged by time,
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
//!   anything of the caller's;
//! * with TLS to the collectors configured ([`ApiSettings::query_client`]), a collector whose
//!   Lease does not say `https` ([`sluice_api::query_tls::SCHEME_ANNOTATION`]) is not asked: the
//!   token never travels in clear. Without it, one that says `https` is not asked either (the
//!   operator could not verify it).

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
    core::v1::{ConfigMap, Namespace, Pod},
};
use kube::{Api, Client, api::ListParams};
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde_json::json;
use sluice_api::{
    health::{LEASE_LABEL, LEASE_LABEL_VALUE},
    query::ADDRESS_ANNOTATION,
    query_tls::{HTTPS, SCHEME_ANNOTATION},
};
use tokio_util::sync::CancellationToken;

use crate::logs::{Caller, Collectors, Query, QueryClient, json_line, may_read_logs};

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
    /// How the collectors' query APIs are reached (mutual TLS, or plain HTTP).
    pub query_client: QueryClient,
    /// How often the front proxy's trust (`extension-apiserver-authentication`) is read again,
    /// so a rotated requestheader CA or changed allowed names apply without a restart.
    pub front_proxy_refresh: Duration,
    /// Send the token only to a collector whose advertised address is its pod's: the Lease
    /// holder is a collector pod of the sluice namespace (label
    /// `app.kubernetes.io/component=collector`, owned by a DaemonSet) on the Lease's node with
    /// that pod IP (see [`verified_endpoint`]). Off only where collectors are not pods (tests
    /// with host-process collectors).
    pub collectors_are_pods: bool,
}

/// How often the operator reads `extension-apiserver-authentication` again by default.
pub const FRONT_PROXY_REFRESH: Duration = Duration::from_secs(60);
/// The label (and its value) that marks a collector pod.
pub const COLLECTOR_COMPONENT: (&str, &str) = ("app.kubernetes.io/component", "collector");

impl std::fmt::Debug for ApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("listen", &self.listen)
            .field("namespace", &self.namespace)
            .field("front_proxy_refresh", &self.front_proxy_refresh)
            .field("collectors_are_pods", &self.collectors_are_pods)
            .field("query_client", &self.query_client)
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
#[derive(Clone, Debug, Default, PartialEq)]
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

/// The front proxy's trust as last read, and the TLS that requires it.
struct Trust {
    front: FrontProxy,
    tls: tokio_rustls::TlsAcceptor,
}

#[derive(Clone)]
struct Shared {
    client: Client,
    trust: Arc<std::sync::RwLock<Arc<Trust>>>,
    namespace: String,
    token: String,
    query_client: QueryClient,
    collectors_are_pods: bool,
    shutdown: CancellationToken,
}

impl Shared {
    /// The front proxy's trust as last read.
    fn trust(&self) -> Arc<Trust> {
        match self.trust.read() {
            Ok(t) => Arc::clone(&t),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Read `extension-apiserver-authentication` again; a change takes effect for the next
    /// connections (those open keep theirs). A failed read or a CA that does not parse keeps
    /// what was trusted, and says why.
    async fn refresh_trust(&self, settings: &ApiSettings) {
        let front = match FrontProxy::read(&self.client).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "logs API: cannot read the front proxy's trust again; keeping the last one");
                return;
            }
        };
        if self.trust().front == front {
            return;
        }
        match front.tls(settings) {
            Ok(config) => {
                let trust = Arc::new(Trust {
                    front,
                    tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
                });
                match self.trust.write() {
                    Ok(mut t) => *t = trust,
                    Err(poisoned) => *poisoned.into_inner() = trust,
                }
                tracing::info!(
                    "logs API: the front proxy's trust ({AUTHENTICATION_CONFIGMAP}) changed; new connections use it"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "logs API: the changed {AUTHENTICATION_CONFIGMAP} cannot be used; keeping the last trust");
            }
        }
    }
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
    let trust = Arc::new(std::sync::RwLock::new(Arc::new(Trust { front, tls })));
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
        trust,
        namespace: settings.namespace.clone(),
        token: settings.token.clone(),
        query_client: settings.query_client.clone(),
        collectors_are_pods: settings.collectors_are_pods,
        shutdown: shutdown.clone(),
    };
    let refreshing = shared.clone();
    let stop_refreshing = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(settings.front_proxy_refresh.max(Duration::from_secs(1)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            tokio::select! {
                () = stop_refreshing.cancelled() => break,
                _ = every.tick() => refreshing.refresh_trust(&settings).await,
            }
        }
    });
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
            let (trust, app) = (shared.trust(), app.clone());
            tokio::spawn(async move {
                let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, trust.tls.accept(stream)).await
                else {
                    tracing::debug!(%peer, "logs API: TLS handshake failed (not the front proxy?)");
                    return;
                };
                let allowed = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .is_some_and(|c| trust.front.allows(c));
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
    selector: Option<String>,
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
                "labelSelector" => {
                    let selector: sluice_api::selector::Selector =
                        value.parse().map_err(|e| format!("labelSelector: {e}"))?;
                    // The canonical text: what the collectors parse is what was checked here.
                    params.selector = (!selector.is_everything()).then(|| selector.to_string());
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
    let Some(caller) = shared.trust().front.caller(&headers) else {
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
    let (collectors, refused) = match collectors(&shared, params.watch).await {
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
            selector: params.selector.clone(),
            tail: params.tail,
        })
        .collect();
    if params.watch {
        return follow(shared, collectors, refused, queries);
    }
    let asks = collectors.endpoints.len() * queries.len();
    let (lines, failures) = collectors.recent_lenient(&queries, params.tail).await;
    if !failures.is_empty() && failures.len() == asks {
        let all: Vec<String> = failures.iter().map(ToString::to_string).collect();
        return status(StatusCode::BAD_GATEWAY, "InternalError", &all.join("; "));
    }
    // The refused collectors and those that failed come first, as warnings; then the lines of
    // the others.
    let mut body = Vec::new();
    for reason in refused {
        if serde_json::to_writer(&mut body, &json!({ "warning": reason })).is_ok() {
            body.push(b'\n');
        }
    }
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

/// The collectors to ask: those whose node Lease is unexpired and advertises a query address
/// that [`verified_endpoint`] accepts (with `collectors_are_pods`); and a warning for each Lease
/// whose address was refused. No collector at all is an answer to send, unless `none_is_ok` (a
/// follow waits for collectors to start).
async fn collectors(shared: &Shared, none_is_ok: bool) -> Result<(Collectors, Vec<String>), Box<Response>> {
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
    let mut endpoints = Vec::new();
    let mut refused = Vec::new();
    for lease in &leases.items {
        match checked_endpoint(shared, lease).await {
            Ok(Some(endpoint)) => endpoints.push(endpoint),
            Ok(None) => {}
            Err(reason) => refused.push(reason),
        }
    }
    if endpoints.is_empty() && !none_is_ok {
        let mut message = format!(
            "no collector serves queries: no unexpired collector Lease in {} has {ADDRESS_ANNOTATION} \
             (are the collectors running, with --query-listen?)",
            shared.namespace
        );
        for r in &refused {
            message.push_str("; ");
            message.push_str(r);
        }
        return Err(Box::new(status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            &message,
        )));
    }
    Ok((
        Collectors::with_client(endpoints, shared.token.clone(), &shared.query_client),
        refused,
    ))
}

/// The query endpoint `lease` advertises, checked against its holder pod when collectors are
/// pods: `Ok(None)` for a Lease that advertises nothing (or has expired), `Err` (logged as a
/// warning) for one whose address is refused.
async fn checked_endpoint(shared: &Shared, lease: &Lease) -> Result<Option<String>, String> {
    let now = jiff::Timestamp::now();
    let Some(address) = advertised(lease, now)? else {
        return Ok(None);
    };
    let scheme = scheme(lease, address, shared.query_client.is_tls())
        .inspect_err(|reason| tracing::warn!("logs API: {reason}"))?;
    let url = |address: SocketAddr| format!("{scheme}://{address}");
    if !shared.collectors_are_pods {
        return Ok(Some(url(address)));
    }
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    let pod = if holder.is_empty() {
        None
    } else {
        Api::<Pod>::namespaced(shared.client.clone(), &shared.namespace)
            .get_opt(&holder)
            .await
            .map_err(|e| {
                format!(
                    "cannot check collector Lease {}'s holder pod {holder}: {e}; its lines are not asked for",
                    lease.metadata.name.as_deref().unwrap_or_default()
                )
            })?
    };
    Ok(verified_endpoint(lease, pod.as_ref(), now)
        .inspect_err(|reason| tracing::warn!("logs API: {reason}"))?
        .map(url))
}

/// How the collector of `lease` (advertising `address`) is asked: `https` when its Lease says it
/// serves mutual TLS ([`SCHEME_ANNOTATION`]), `http` when it says nothing; an error when that
/// does not match what the operator speaks (`tls`): it sends no token in clear, and cannot verify
/// a collector without the collectors' CA.
fn scheme(lease: &Lease, address: SocketAddr, tls: bool) -> Result<&'static str, String> {
    let name = lease.metadata.name.as_deref().unwrap_or_default();
    let said = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SCHEME_ANNOTATION))
        .map(String::as_str);
    match (said, tls) {
        (Some(HTTPS), true) => Ok("https"),
        (None, false) => Ok("http"),
        (None, true) => Err(format!(
            "collector Lease {name} advertises plain HTTP at {address} (no {SCHEME_ANNOTATION}: {HTTPS}), and \
             the operator does not send its token in clear: run that collector with --query-tls-cert, \
             --query-tls-key and --query-client-ca"
        )),
        (Some(HTTPS), false) => Err(format!(
            "collector Lease {name} advertises TLS at {address}, but the operator has no \
             --collector-query-ca to verify it with: its lines are not asked for"
        )),
        (Some(other), _) => Err(format!(
            "collector Lease {name} advertises {SCHEME_ANNOTATION} {other:?}, not {HTTPS:?}: the operator \
             does not send its token there"
        )),
    }
}

/// The unexpired query address `lease` advertises ([`ADDRESS_ANNOTATION`]); `Ok(None)` when it
/// advertises none or has expired.
fn advertised(lease: &Lease, now: jiff::Timestamp) -> Result<Option<SocketAddr>, String> {
    let spec = lease.spec.as_ref();
    let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
    let seconds = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0);
    if renewed.is_none_or(|r| r + jiff::SignedDuration::from_secs(i64::from(seconds)) <= now) {
        return Ok(None);
    }
    let Some(address) = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ADDRESS_ANNOTATION))
    else {
        return Ok(None);
    };
    address.parse().map(Some).map_err(|_| {
        format!(
            "collector Lease {} advertises {address:?}, not an IP:port: the operator does not send its token there",
            lease.metadata.name.as_deref().unwrap_or_default()
        )
    })
}

/// The query address (`IP:PORT`) of the collector Lease `lease` whose holder pod (of the
/// sluice namespace, by the holder's name) is `pod`: only if that pod is a collector (label
/// [`COLLECTOR_COMPONENT`], controlled by a DaemonSet), runs on the Lease's node (the Lease is
/// [`sluice_api::health::lease_name`] of it) and has the advertised address's host as its pod IP.
/// Whoever may write Leases in the sluice namespace could otherwise advertise an address of
/// their own and receive the operator's token. `Ok(None)`: the Lease advertises nothing or has
/// expired; `Err`: why its address is refused.
pub fn verified_endpoint(
    lease: &Lease,
    pod: Option<&Pod>,
    now: jiff::Timestamp,
) -> Result<Option<SocketAddr>, String> {
    let Some(address) = advertised(lease, now)? else {
        return Ok(None);
    };
    let name = lease.metadata.name.as_deref().unwrap_or_default();
    let refuse = |why: String| {
        format!(
            "collector Lease {name} advertises {address}, but {why}: the operator does not send its token there"
        )
    };
    let node = name
        .strip_prefix(&sluice_api::health::lease_name(""))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| refuse("its name is not that of a node's collector Lease".into()))?;
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or_default();
    let pod =
        pod.ok_or_else(|| refuse(format!("its holder {holder:?} is no pod of the sluice namespace")))?;
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    if pod_name != holder {
        return Err(refuse(format!("its holder {holder:?} is not the pod {pod_name}")));
    }
    let (key, value) = COLLECTOR_COMPONENT;
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .is_some_and(|v| v == value);
    let by_daemonset = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == "DaemonSet");
    if !labelled || !by_daemonset {
        return Err(refuse(format!(
            "its holder pod {pod_name} is not a collector (label {key}={value}, controlled by a DaemonSet)"
        )));
    }
    let on = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default();
    if on != node {
        return Err(refuse(format!(
            "its holder pod {pod_name} runs on node {on:?}, not {node:?}"
        )));
    }
    let status = pod.status.as_ref();
    let ips: Vec<&str> = status
        .and_then(|s| s.pod_ips.as_ref())
        .map(|ips| ips.iter().map(|i| i.ip.as_str()).collect())
        .unwrap_or_default();
    let ips = if ips.is_empty() {
        status.and_then(|s| s.pod_ip.as_deref()).into_iter().collect()
    } else {
        ips
    };
    if !ips
        .iter()
        .any(|ip| ip.parse::<std::net::IpAddr>().is_ok_and(|ip| ip == address.ip()))
    {
        return Err(refuse(format!(
            "its holder pod {pod_name}'s IPs are {ips:?}, not {}",
            address.ip()
        )));
    }
    Ok(Some(address))
}

/// A Lease's holder and advertised address as last checked, and the verdict.
type Checked = (Option<String>, Option<String>, Result<Option<String>, String>);

/// Watch the collectors' Leases and send the endpoint of each that advertises a (checked)
/// address to `added`, and a warning line to `lines` for each newly refused one; until `added`
/// is closed or `stop` fires. A Lease's check is kept while its holder and address stay the same.
async fn watch_collectors(
    shared: Shared,
    added: tokio::sync::mpsc::Sender<String>,
    lines: tokio::sync::mpsc::Sender<Bytes>,
    stop: CancellationToken,
) {
    use kube::runtime::{WatchStreamExt as _, watcher};
    let api = Api::<Lease>::namespaced(shared.client.clone(), &shared.namespace);
    let config = watcher::Config::default().labels(&format!("{LEASE_LABEL}={LEASE_LABEL_VALUE}"));
    let events = watcher(api, config).default_backoff();
    futures::pin_mut!(events);
    let mut checked: BTreeMap<String, Checked> = BTreeMap::new();
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            () = added.closed() => return,
            event = events.next() => event,
        };
        let lease = match event {
            Some(Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease))) => lease,
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "logs API: the collectors' Lease watch failed; it resumes");
                continue;
            }
            None => return,
        };
        let name = lease.metadata.name.clone().unwrap_or_default();
        let holder = lease.spec.as_ref().and_then(|s| s.holder_identity.clone());
        let address = lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ADDRESS_ANNOTATION))
            .cloned();
        let verdict = match checked.get(&name) {
            Some((h, a, verdict)) if *h == holder && *a == address && verdict.is_ok() => verdict.clone(),
            _ => {
                let verdict = checked_endpoint(&shared, &lease).await;
                if let Err(reason) = &verdict {
                    let _ = lines.send(json_line(&json!({ "warning": reason }))).await;
                }
                checked.insert(name, (holder, address, verdict.clone()));
                verdict
            }
        };
        if let Ok(Some(endpoint)) = verdict
            && added.send(endpoint).await.is_err()
        {
            return;
        }
    }
}

/// A streaming answer fed by [`Collectors::follow`], which also follows the collectors that
/// start meanwhile ([`watch_collectors`]); the follows stop when the caller goes away (the body,
/// and with it the guard, is dropped) or at shutdown.
fn follow(shared: Shared, collectors: Collectors, refused: Vec<String>, queries: Vec<Query>) -> Response {
    let cancel = shared.shutdown.child_token();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(FOLLOW_BUFFER);
    let (added_tx, added_rx) = tokio::sync::mpsc::channel::<String>(16);
    let stop = cancel.clone();
    tokio::spawn(async move {
        for reason in refused {
            let _ = tx.send(json_line(&json!({ "warning": reason }))).await;
        }
        if collectors.endpoints.is_empty() {
            let warning = "no collector serves queries yet; lines come once collectors start";
            let _ = tx.send(json_line(&json!({ "warning": warning }))).await;
        }
        tokio::spawn(watch_collectors(shared, added_tx, tx.clone(), stop.clone()));
        collectors.follow(&queries, added_rx, tx, stop).await;
    });
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
        let p = Params::parse(
            "pod=a&pod=b&container=c&since=2026-01-01T00%3A00%3A00Z&labelSelector=app+in+(web%2Cdb)%2C!x&tail=3&watch=true",
        )
        .unwrap();
        assert_eq!(
            p,
            Params {
                pods: vec!["a".into(), "b".into()],
                container: Some("c".into()),
                since: Some("2026-01-01T00:00:00Z".into()),
                selector: Some("app in (db,web),!x".into()),
                tail: Some(3),
                watch: true,
            }
        );
        assert_eq!(
            Params::parse("labelSelector=app%3D%3Dweb")
                .unwrap()
                .selector
                .as_deref(),
            Some("app=web")
        );
        assert_eq!(Params::parse("labelSelector=").unwrap().selector, None);
        let bad = Params::parse("labelSelector=app+in+web").unwrap_err();
        assert!(
            bad.starts_with("labelSelector: label selector \"app in web\": expected ( after in"),
            "{bad}"
        );
        assert!(Params::parse("since=yesterday").is_err());
        assert!(Params::parse("namespace=other").is_err());
        assert_eq!(Params::parse("").unwrap(), Params::default());
    }

    /// A collector Lease of `node` held by `holder`, renewed now for an hour, advertising `address`.
    fn lease(node: &str, holder: &str, address: &str) -> Lease {
        serde_json::from_value(json!({
            "metadata": {"name": sluice_api::health::lease_name(node), "namespace": "sluice",
                         "annotations": {ADDRESS_ANNOTATION: address}},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3600,
                     "renewTime": jiff::Timestamp::now().to_string()},
        }))
        .unwrap()
    }

    /// A collector pod of a DaemonSet on `node` with `ip`.
    fn collector_pod(name: &str, node: &str, ip: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "sluice",
                         "labels": {"app.kubernetes.io/component": "collector"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "sluice-collector",
                                              "uid": "u", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "collector"}]},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_collector_address_is_used_only_when_it_is_its_pods() {
        let now = jiff::Timestamp::now();
        let pod = collector_pod("sluice-collector-x1", "n1", "10.88.0.5");
        let good = lease("n1", "sluice-collector-x1", "10.88.0.5:9881");
        assert_eq!(
            verified_endpoint(&good, Some(&pod), now),
            Ok(Some("10.88.0.5:9881".parse().unwrap()))
        );
        let refused = |lease: &Lease, pod: Option<&Pod>, why: &str| {
            let reason = verified_endpoint(lease, pod, now).unwrap_err();
            assert!(
                reason.contains(why) && reason.contains("does not send its token"),
                "{reason}"
            );
        };
        // Another host than the pod's IP.
        refused(
            &lease("n1", "sluice-collector-x1", "10.9.9.9:9881"),
            Some(&pod),
            "IPs are",
        );
        // No such pod.
        refused(&good, None, "is no pod");
        // The pod runs on another node than the Lease's.
        refused(
            &lease("n2", "sluice-collector-x1", "10.88.0.5:9881"),
            Some(&pod),
            "runs on node",
        );
        // Not a collector: no label, or not controlled by a DaemonSet.
        let mut unlabelled = pod.clone();
        unlabelled.metadata.labels = None;
        refused(&good, Some(&unlabelled), "is not a collector");
        let mut bare = pod.clone();
        bare.metadata.owner_references = None;
        refused(&good, Some(&bare), "is not a collector");
        // The holder is not the pod given.
        refused(
            &lease("n1", "someone-else", "10.88.0.5:9881"),
            Some(&pod),
            "is not the pod",
        );
        // Not a node Lease's name.
        let mut renamed = good.clone();
        renamed.metadata.name = Some("other".into());
        refused(&renamed, Some(&pod), "not that of a node");
        // Nothing advertised, or expired: nothing to ask, nothing refused.
        let mut silent = good.clone();
        silent.metadata.annotations = None;
        assert_eq!(verified_endpoint(&silent, Some(&pod), now), Ok(None));
        let later = now + jiff::SignedDuration::from_hours(2);
        assert_eq!(verified_endpoint(&good, Some(&pod), later), Ok(None));
        // An address that is not IP:port.
        refused(
            &lease("n1", "sluice-collector-x1", "collector:9881"),
            Some(&pod),
            "not an IP:port",
        );
    }

    #[test]
    fn the_token_goes_in_clear_to_nobody_when_tls_is_configured() {
        let address: SocketAddr = "10.88.0.5:9881".parse().unwrap();
        let plain = lease("n1", "sluice-collector-x1", "10.88.0.5:9881");
        let mut tls = plain.clone();
        tls.metadata
            .annotations
            .get_or_insert_default()
            .insert(SCHEME_ANNOTATION.into(), HTTPS.into());
        let mut odd = plain.clone();
        odd.metadata
            .annotations
            .get_or_insert_default()
            .insert(SCHEME_ANNOTATION.into(), "HTTP".into());
        assert_eq!(scheme(&tls, address, true), Ok("https"));
        assert_eq!(scheme(&plain, address, false), Ok("http"));
        let in_clear = scheme(&plain, address, true).unwrap_err();
        assert!(
            in_clear.contains("advertises plain HTTP at 10.88.0.5:9881")
                && in_clear.contains("does not send its token in clear"),
            "{in_clear}"
        );
        let unverifiable = scheme(&tls, address, false).unwrap_err();
        assert!(unverifiable.contains("no --collector-query-ca"), "{unverifiable}");
        for tls_configured in [true, false] {
            let reason = scheme(&odd, address, tls_configured).unwrap_err();
            assert!(reason.contains("\"HTTP\", not \"https\""), "{reason}");
        }
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
