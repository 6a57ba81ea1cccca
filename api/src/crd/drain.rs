//! `LogDrain`: a destination for the lines of a namespace's pods.
//!
//! Invariants (schema + CEL, see the [module above](super)): the URL is a supported, well-formed
//! drain URL without credentials; `tls` only with a TLS scheme; `credentials` and `http` only with
//! an HTTP scheme; basic-auth keys come together and exclude a bearer token; a CA is never combined
//! with `insecureSkipVerify`. Secrets are always named, never embedded, and always live in the
//! drain's own namespace.

// kube's `printcolumn(type_ = …)` repeats attribute keys, which clippy mistakes for duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::rules;

/// A destination for container log lines, in the short URL form known from Cloud Foundry drains.
/// Pods feed it through `LogBinding`s of the same namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "LogDrain",
    namespaced,
    status = "LogDrainStatus",
    derive = "PartialEq",
    shortname = "drain",
    category = "sluice",
    doc = "A destination for container log lines (syslog over TCP, TLS or UDP, or batched JSON over HTTP(S)). \
           Pods feed it through LogBindings in the same namespace.",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Delivering", type_ = "string", json_path = ".status.conditions[?(@.type==\"Delivering\")].status"),
    printcolumn(name = "Delivered", type_ = "integer", json_path = ".status.delivery.linesDelivered"),
    printcolumn(name = "Dropped", type_ = "integer", json_path = ".status.delivery.linesDropped"),
    printcolumn(name = "Lag", type_ = "integer", json_path = ".status.delivery.lagBytes"),
    printcolumn(name = "Last Error", type_ = "string", json_path = ".status.delivery.lastError"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "URL", type_ = "string", priority = 1, json_path = ".spec.url"),
    printcolumn(name = "Reason", type_ = "string", priority = 1, json_path = ".status.conditions[?(@.type==\"Delivering\")].reason"),
    printcolumn(name = "Bindings", type_ = "integer", priority = 1, json_path = ".status.bindings"),
    printcolumn(name = "Pods", type_ = "integer", priority = 1, json_path = ".status.pods"),
    printcolumn(name = "Message", type_ = "string", priority = 1, json_path = ".status.conditions[?(@.type==\"Delivering\")].message"),
    validation = rules::resource_name_is_dns_label("LogDrain"),
)]
#[x_kube(
    validation = Rule::new("!has(self.tls) || self.url.startsWith('syslog-tls://') || self.url.startsWith('https://')")
        .message("tls settings need a syslog-tls:// or https:// url").field_path(".tls"),
    validation = Rule::new("!has(self.credentials) || self.url.matches('^https?://')")
        .message("credentials are for http:// and https:// drains; a syslog drain authenticates with tls.clientCertificate")
        .field_path(".credentials"),
    validation = Rule::new("!has(self.http) || self.url.matches('^https?://')")
        .message("http settings need an http:// or https:// url").field_path(".http"),
)]
#[serde(rename_all = "camelCase")]
pub struct LogDrainSpec {
    /// Where to send lines: `syslog://host:port` (RFC5424 over TCP, octet counting),
    /// `syslog-tls://host:port` (RFC5425), `syslog-udp://host:port` (RFC5426), or
    /// `https://host[:port]/path` / `http://…` (batched JSON lines). Credentials never go in the
    /// URL; name a Secret in `credentials` instead.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new("self.matches('^(syslog|syslog-tls|syslog-udp|http|https)://')")
            .message("url must start with syslog://, syslog-tls://, syslog-udp://, http:// or https://"),
        validation = Rule::new("!self.matches('^[a-z-]+://[^/?#]*@')")
            .message("credentials do not belong in the url; put them in a Secret and name it in spec.credentials"),
        validation = rules::syslog_url(),
        validation = rules::http_url(),
    )]
    pub url: String,

    /// TLS settings for `syslog-tls://` and `https://` drains. Certificates are verified against
    /// the system roots unless a CA is given; verification is never off unless
    /// `insecureSkipVerify` says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<DrainTls>,

    /// Credentials for `http(s)://` drains, read from a Secret in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<DrainCredentials>,

    /// An upper bound on the lines per second each collector sends to this drain. Excess lines
    /// wait in the log files (they are not dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,

    /// How syslog messages are rendered (APP-NAME, HOSTNAME, PROCID, STRUCTURED-DATA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<MessageFormat>,

    /// Options for `http(s)://` drains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSettings>,
}

/// A key in a Secret of the drain's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret (in the LogDrain's namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = "^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A client certificate and its private key, both in one Secret of the drain's namespace
/// (a `kubernetes.io/tls` Secret by default).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertificateRef {
    /// Name of the Secret (in the LogDrain's namespace).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key of the PEM certificate chain.
    #[serde(default = "default_cert_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = "^[-._a-zA-Z0-9]+$"))]
    pub cert_key: String,
    /// Key of the PEM private key.
    #[serde(default = "default_key_key")]
    #[schemars(length(min = 1, max = 253), regex(pattern = "^[-._a-zA-Z0-9]+$"))]
    pub key_key: String,
}

fn default_cert_key() -> String {
    "tls.crt".into()
}
fn default_key_key() -> String {
    "tls.key".into()
}

/// TLS settings of a drain.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.insecureSkipVerify) && self.insecureSkipVerify && has(self.ca))")
        .message("a CA is pointless when insecureSkipVerify turns verification off; remove one of them"),
)]
pub struct DrainTls {
    /// A PEM bundle of CA certificates to trust instead of the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretKeyRef>,
    /// A client certificate for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<ClientCertificateRef>,
    /// The name to verify the server's certificate against (default: the URL's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub server_name: Option<String>,
    /// Turn certificate verification off. Never the default; collectors log it at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_verify: Option<bool>,
}

/// Where an HTTP drain's credentials are: one Secret of the drain's namespace, and the keys in it.
/// Give either `bearerTokenKey`, or `usernameKey` and `passwordKey`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.usernameKey) == has(self.passwordKey)")
        .message("usernameKey and passwordKey go together (HTTP basic authentication)"),
    validation = Rule::new("has(self.bearerTokenKey) != has(self.usernameKey)")
        .message("give either bearerTokenKey, or usernameKey and passwordKey"),
)]
pub struct DrainCredentials {
    /// Name of the Secret (in the LogDrain's namespace).
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Key holding a bearer token (`Authorization: Bearer …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = "^[-._a-zA-Z0-9]+$"))]
    pub bearer_token_key: Option<String>,
    /// Key holding the user name for HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = "^[-._a-zA-Z0-9]+$"))]
    pub username_key: Option<String>,
    /// Key holding the password for HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = "^[-._a-zA-Z0-9]+$"))]
    pub password_key: Option<String>,
}

/// A rate limit per collector.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// At most this many lines per second from each node.
    #[schemars(range(min = 1))]
    pub lines_per_second: u32,
}

/// Syslog message rendering. Templates may use `{namespace}`, `{pod}`, `{podUid}`, `{container}`,
/// `{containerId}`, `{node}`, `{stream}` and `{label:KEY}`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MessageFormat {
    /// APP-NAME template (default `{namespace}/{pod}`; at most 48 characters once rendered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub app_name: Option<String>,
    /// HOSTNAME template (default `{node}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub hostname: Option<String>,
    /// PROCID template (default `{container}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub procid: Option<String>,
    /// Put Kubernetes metadata into RFC5424 STRUCTURED-DATA (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structured_data: Option<bool>,
}

/// Options for HTTP drains.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HttpSettings {
    /// Compress request bodies with gzip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gzip: Option<bool>,
    /// Extra request headers (not for credentials: use `credentials`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub headers: std::collections::BTreeMap<String, String>,
    /// HTTP answers (400-599) that mean the data itself is refused: the batch is given up and its
    /// lines counted dropped (on 413 it is first split, down to single lines). Every other error
    /// answer is retried with backoff. Default: 400, 413, 422.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), inner(range(min = 400, max = 599)))]
    pub drop_on_status: Option<Vec<u16>>,
    /// Send the credentials over plain `http://`, where anyone on the path can read them
    /// (refused unless true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials_over_http: Option<bool>,
}

/// What the operator and the collectors know about a drain.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LogDrainStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: whether the drain's settings resolve (URL, Secrets, certificates); the reason says
    /// what is wrong when it is `False`. `Delivering`: whether the collectors deliver its lines
    /// (`False` with `NodeNotCovered`, `DrainFailing`, `LinesDropped` or `Lagging`, naming the
    /// nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// How many LogBindings name this drain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bindings: Option<i32>,
    /// How many pods feed this drain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<i32>,
    /// How many nodes run pods that feed this drain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<i32>,
    /// Delivery health reported by the collectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryHealth>,
}

/// Delivery counters summed over the collectors that report this drain (see
/// [`crate::health`]: totals per node that survive collector restarts, carried on the collectors'
/// node Leases).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryHealth {
    /// Lines acknowledged by the destination.
    #[serde(default)]
    pub lines_delivered: i64,
    /// Lines given up, for a named cause (rotated away before delivery, rate limit, oversize).
    #[serde(default)]
    pub lines_dropped: i64,
    /// Delivery attempts that failed (and were retried).
    #[serde(default)]
    pub attempts_failed: i64,
    /// Bytes the drain is behind the logs, summed over the covered nodes.
    #[serde(default)]
    pub lag_bytes: i64,
    /// The last delivery error (`kind: message`, short, without credentials or bodies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the last error happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_time: Option<Time>,
    /// When a batch was last acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_time: Option<Time>,
    /// How many collectors reported.
    #[serde(default)]
    pub nodes_reporting: i32,
    /// How many nodes run pods that feed this drain.
    #[serde(default)]
    pub nodes_expected: i32,
}
