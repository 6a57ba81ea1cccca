//! The node config's types: the YAML schema a collector reads (drains, containers, selectors,
//! sources, limits) with their defaults, and the redacting `Debug` of secret-bearing ones.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use super::{ConfigError, DrainKind, UrlError, template};

/// Everything one collector needs: its drains, and which containers feed which drain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeConfig {
    /// Schema version; must be [`CURRENT_VERSION`](super::CURRENT_VERSION).
    pub version: u32,
    /// The node this config is for (informational; used as the default syslog HOSTNAME).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Where the container runtimes keep their logs.
    #[serde(default)]
    pub sources: Sources,
    /// Limits that protect the collector from bad input.
    #[serde(default)]
    pub limits: Limits,
    /// CA bundles (PEM) by name, for the drains whose `tls.caBundle` names them: a bundle that
    /// several drains trust is carried once.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ca_bundles: BTreeMap<String, String>,
    /// The destinations, by name.
    #[serde(default)]
    pub drains: Vec<DrainConfig>,
    /// Containers bound to drains, by runtime id (what the operator renders). A container may
    /// appear more than once; its routes are the union of its entries.
    #[serde(default)]
    pub containers: Vec<ContainerConfig>,
    /// Containers bound to drains by name glob and labels (for plain Docker hosts, written by
    /// hand). Resolved against Docker's own `config.v2.json` next to each container's log.
    #[serde(default)]
    pub selectors: Vec<SelectorConfig>,
}

/// Where container logs live on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Sources {
    /// Docker's data root; json-file logs are under `<dockerRoot>/containers/<id>/<id>-json.log`.
    #[serde(default = "Sources::default_docker_root")]
    pub docker_root: PathBuf,
    /// The kubelet's pod log directory: `<podsRoot>/<ns>_<pod>_<uid>/<container>/<n>.log`.
    #[serde(default = "Sources::default_pods_root")]
    pub pods_root: PathBuf,
}

impl Sources {
    fn default_docker_root() -> PathBuf {
        PathBuf::from("/var/lib/docker")
    }
    fn default_pods_root() -> PathBuf {
        PathBuf::from("/var/log/pods")
    }
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            docker_root: Self::default_docker_root(),
            pods_root: Self::default_pods_root(),
        }
    }
}

/// Limits applied to every source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// The longest line (after re-joining runtime splits) delivered whole; longer lines are cut to
    /// this many bytes and counted as `truncated`. Default 1 MiB.
    #[serde(default = "Limits::default_max_line_bytes")]
    pub max_line_bytes: u32,
}

impl Limits {
    /// The default [`Limits::max_line_bytes`]: 1 MiB.
    pub const DEFAULT_MAX_LINE_BYTES: u32 = 1024 * 1024;
    /// The largest `maxLineBytes` accepted.
    pub const MAX_LINE_BYTES_CAP: u32 = 16 * 1024 * 1024;
    fn default_max_line_bytes() -> u32 {
        Self::DEFAULT_MAX_LINE_BYTES
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line_bytes: Self::DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// A destination for lines. `Debug` leaves out the URL's query (it may carry an API key).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrainConfig {
    /// Unique name (a DNS label); containers and selectors refer to drains by it.
    pub name: String,
    /// `syslog://host:port` (RFC5424 over TCP, octet counting), `syslog-tls://host:port`
    /// (RFC5425), `syslog-udp://host:port` (RFC5426), or `http(s)://host[:port]/path` (batched
    /// JSON lines).
    pub url: String,
    /// TLS settings for `syslog-tls://` and `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Message format for syslog drains.
    #[serde(default)]
    pub syslog: SyslogFormat,
    /// Options for HTTP drains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpOptions>,
    /// Delivery tuning: batching, timeouts, retries, rate limit.
    #[serde(default)]
    pub delivery: DeliveryOptions,
    /// The `LogDrain` this drain was rendered from (set by the operator; absent in hand-written
    /// configs). The collector copies it into its health report, so the operator can sum the
    /// figures of every node per `LogDrain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<DrainOwner>,
}

/// The `LogDrain` a node-config drain stands for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DrainOwner {
    /// The LogDrain's namespace.
    pub namespace: String,
    /// The LogDrain's name.
    pub name: String,
}

impl fmt::Debug for DrainConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            name,
            url,
            tls,
            syslog,
            http,
            delivery,
            owner,
        } = self;
        let url = match url.split_once(['?', '#']) {
            Some((base, _)) => format!("{base}?***"),
            None => url.clone(),
        };
        f.debug_struct("DrainConfig")
            .field("name", name)
            .field("url", &url)
            .field("tls", tls)
            .field("syslog", syslog)
            .field("http", http)
            .field("delivery", delivery)
            .field("owner", owner)
            .finish()
    }
}

impl DrainConfig {
    /// The drain's kind and address, parsed from [`DrainConfig::url`].
    pub fn kind(&self) -> Result<DrainKind, UrlError> {
        DrainKind::parse(&self.url)
    }

    /// The pod labels this drain's messages carry: `None` for all of them (the JSON lines of an
    /// HTTP drain have a `labels` object), else the keys its syslog templates read (`{label:KEY}`;
    /// syslog STRUCTURED-DATA carries no labels).
    pub fn labels_used(&self) -> Option<BTreeSet<String>> {
        if matches!(self.kind(), Ok(DrainKind::Http { .. })) {
            return None;
        }
        let f = &self.syslog;
        Some(
            [&f.app_name, &f.hostname, &f.procid]
                .into_iter()
                .flat_map(|t| template::labels(t))
                .collect(),
        )
    }
}

/// A string that must not be printed: credentials and private keys. `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Redacted {
    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// TLS settings. Verification is on unless `insecureSkipVerify` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM bundle of CAs to trust instead of the built-in web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// A file with such a bundle (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The name of such a bundle in the node config's `caBundles` (what the operator renders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// PEM client certificate chain for mutual TLS (needs a key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    /// PEM private key of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<Redacted>,
    /// Client certificate chain file (standalone mode; needs `keyFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// Client key file (standalone mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Name to verify the server certificate against (default: the URL's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Turn certificate verification off. Never the default; counted and logged at start.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// How syslog messages are rendered. Templates may use `{namespace}`, `{pod}`, `{podUid}`,
/// `{container}`, `{containerId}`, `{node}`, `{stream}` and `{label:KEY}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyslogFormat {
    /// APP-NAME template (at most 48 printable ASCII characters after rendering).
    #[serde(default = "SyslogFormat::default_app_name")]
    pub app_name: String,
    /// HOSTNAME template (at most 255 characters after rendering).
    #[serde(default = "SyslogFormat::default_hostname")]
    pub hostname: String,
    /// PROCID template (at most 128 characters after rendering).
    #[serde(default = "SyslogFormat::default_procid")]
    pub procid: String,
    /// Put Kubernetes metadata into STRUCTURED-DATA (`[kubernetes@32473 namespace=… pod=… …]`;
    /// 32473 is the enterprise number RFC 5612 reserves for documentation).
    #[serde(default = "yes")]
    pub structured_data: bool,
    /// Largest datagram a `syslog-udp://` drain sends (RFC5426 advises ≤ 1472 on Ethernet IPv4).
    #[serde(default = "SyslogFormat::default_max_datagram")]
    pub max_datagram_bytes: u32,
    /// What a `syslog-udp://` drain does with a longer message: split it into several datagrams
    /// or truncate it. Either way it is counted.
    #[serde(default)]
    pub udp_oversize: UdpOversize,
}

fn yes() -> bool {
    true
}

impl SyslogFormat {
    fn default_app_name() -> String {
        "{namespace}/{pod}".into()
    }
    fn default_hostname() -> String {
        "{node}".into()
    }
    fn default_procid() -> String {
        "{container}".into()
    }
    fn default_max_datagram() -> u32 {
        1472
    }
}

impl Default for SyslogFormat {
    fn default() -> Self {
        Self {
            app_name: Self::default_app_name(),
            hostname: Self::default_hostname(),
            procid: Self::default_procid(),
            structured_data: true,
            max_datagram_bytes: Self::default_max_datagram(),
            udp_oversize: UdpOversize::default(),
        }
    }
}

/// What to do with a syslog message too long for one UDP datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UdpOversize {
    /// Send the message as several datagrams, each a full RFC5424 message.
    #[default]
    Split,
    /// Send the first part only.
    Truncate,
}

/// Options for `http://` and `https://` drains. `Debug` shows header names, never their values
/// (an `X-Api-Key` is as secret as a token), nor credentials.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpOptions {
    /// Compress request bodies with gzip.
    #[serde(default)]
    pub gzip: bool,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `Authorization: Bearer …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<Redacted>,
    /// HTTP basic authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    /// Send credentials (`bearerToken`, `basicAuth`, an `Authorization` header) over plain
    /// `http://`, where anyone on the path can read them. Refused unless set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials_over_http: bool,
}

impl HttpOptions {
    /// Whether requests carry credentials.
    pub fn has_credentials(&self) -> bool {
        self.bearer_token.is_some()
            || self.basic_auth.is_some()
            || self.headers.keys().any(|h| {
                h.eq_ignore_ascii_case("authorization") || h.eq_ignore_ascii_case("proxy-authorization")
            })
    }
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            gzip,
            headers,
            bearer_token,
            basic_auth,
            allow_credentials_over_http,
        } = self;
        f.debug_struct("HttpOptions")
            .field("gzip", gzip)
            .field(
                "headers",
                &headers.keys().map(|k| (k, "***")).collect::<BTreeMap<_, _>>(),
            )
            .field("bearer_token", bearer_token)
            .field("basic_auth", basic_auth)
            .field("allow_credentials_over_http", allow_credentials_over_http)
            .finish()
    }
}

/// HTTP basic authentication credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Redacted,
}

/// How a drain batches, retries and paces its deliveries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliveryOptions {
    /// Most lines in one batch.
    #[serde(default = "DeliveryOptions::default_batch_lines")]
    pub batch_max_lines: u32,
    /// Most encoded bytes in one batch.
    #[serde(default = "DeliveryOptions::default_batch_bytes")]
    pub batch_max_bytes: u32,
    /// Timeout of one delivery attempt, in milliseconds.
    #[serde(default = "DeliveryOptions::default_timeout_ms")]
    pub timeout_ms: u64,
    /// First retry delay, in milliseconds (doubled per attempt, jittered).
    #[serde(default = "DeliveryOptions::default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// Longest retry delay, in milliseconds.
    #[serde(default = "DeliveryOptions::default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Optional rate limit: at most this many lines per second (excess waits; nothing is dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lines_per_second: Option<u32>,
    /// HTTP drains: the answers (4xx or 5xx) that mean the data itself is refused, so the batch is
    /// given up and its lines counted dropped (on `413` a batch is split first, down to single
    /// lines). Every other non-2xx answer is retried with backoff.
    #[serde(default = "DeliveryOptions::default_drop_on_status")]
    pub drop_on_status: Vec<u16>,
}

impl DeliveryOptions {
    fn default_batch_lines() -> u32 {
        2048
    }
    fn default_batch_bytes() -> u32 {
        1024 * 1024
    }
    fn default_timeout_ms() -> u64 {
        10_000
    }
    fn default_retry_initial_ms() -> u64 {
        100
    }
    fn default_retry_max_ms() -> u64 {
        30_000
    }
    /// `400 Bad Request`, `413 Content Too Large`, `422 Unprocessable Content`.
    pub fn default_drop_on_status() -> Vec<u16> {
        vec![400, 413, 422]
    }
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            batch_max_lines: Self::default_batch_lines(),
            batch_max_bytes: Self::default_batch_bytes(),
            timeout_ms: Self::default_timeout_ms(),
            retry_initial_ms: Self::default_retry_initial_ms(),
            retry_max_ms: Self::default_retry_max_ms(),
            max_lines_per_second: None,
            drop_on_status: Self::default_drop_on_status(),
        }
    }
}

/// The output streams of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Stream {
    /// Standard output (syslog severity info).
    Stdout,
    /// Standard error (syslog severity error).
    Stderr,
}

impl Stream {
    /// Both streams, the default.
    pub fn all() -> Vec<Stream> {
        vec![Stream::Stdout, Stream::Stderr]
    }
    /// The name used in logs and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One bound container, as the operator renders it from a pod's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerConfig {
    /// Runtime id as in pod status: `docker://<id>` (json-file log under the Docker root) or
    /// `containerd://<id>` / `cri-o://<id>` (CRI log under the pods root). A bare id means Docker.
    pub id: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod UID (part of the CRI log directory name).
    pub pod_uid: String,
    /// Container name within the pod.
    pub container: String,
    /// Pod labels, available to templates and structured data.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Which streams to ship (default both).
    #[serde(default = "Stream::all")]
    pub streams: Vec<Stream>,
    /// Names of the drains this container's lines go to.
    pub drains: Vec<String>,
}

/// Which runtime wrote a container's log, and so where and in which format it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuntimeId {
    /// Docker json-file: `<dockerRoot>/containers/<id>/<id>-json.log`.
    Docker(String),
    /// A CRI runtime (containerd, CRI-O): `<podsRoot>/<ns>_<pod>_<uid>/<container>/<n>.log`.
    Cri(String),
}

/// Why a container id names no runtime container.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeIdError {
    /// Empty, or not alphanumeric after the scheme.
    #[error("container id {id:?} is not a runtime id")]
    NotAnId {
        /// The id as written.
        id: String,
    },
    /// A scheme other than `docker://`, `containerd://`, `cri-o://` or `cri://`.
    #[error("unknown container runtime {runtime:?} (expected docker, containerd or cri-o)")]
    UnknownRuntime {
        /// The scheme as written.
        runtime: String,
    },
}

impl ContainerConfig {
    /// The runtime and bare id of [`ContainerConfig::id`].
    pub fn runtime_id(&self) -> Result<RuntimeId, RuntimeIdError> {
        let (scheme, id) = match self.id.split_once("://") {
            Some((scheme, id)) => (scheme, id),
            None => ("docker", self.id.as_str()),
        };
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(RuntimeIdError::NotAnId { id: self.id.clone() });
        }
        match scheme {
            "docker" => Ok(RuntimeId::Docker(id.to_owned())),
            "containerd" | "cri-o" | "cri" => Ok(RuntimeId::Cri(id.to_owned())),
            other => Err(RuntimeIdError::UnknownRuntime {
                runtime: other.to_owned(),
            }),
        }
    }
}

/// A container name that cannot be a single component of its log directory's path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a single path component (it names the container's log directory)")]
pub struct PathNameError {
    /// The field: `namespace`, `pod`, `podUid` or `container`.
    pub field: &'static str,
    /// The name as written.
    pub name: String,
}

impl ContainerConfig {
    /// The names that become parts of a CRI log path (`<ns>_<pod>_<uid>/<container>/`) are
    /// single path components: not empty, not `.` or `..`, without `/` or NUL, at most 253
    /// bytes. Anything else could point the collector at another directory.
    pub fn check_path_names(&self) -> Result<(), PathNameError> {
        for (field, name) in [
            ("namespace", &self.namespace),
            ("pod", &self.pod),
            ("podUid", &self.pod_uid),
            ("container", &self.container),
        ] {
            let bad = name.is_empty()
                || name == "."
                || name == ".."
                || name.len() > 253
                || name.bytes().any(|b| b == b'/' || b == 0);
            if bad {
                return Err(PathNameError {
                    field,
                    name: name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// Containers picked by name and labels on a plain Docker host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelectorConfig {
    /// Glob over the Docker container name (without the leading `/`): `*` and `?`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels the container must all carry, with these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Which streams to ship (default both).
    #[serde(default = "Stream::all")]
    pub streams: Vec<Stream>,
    /// Names of the drains the selected containers' lines go to.
    pub drains: Vec<String>,
}

impl SelectorConfig {
    /// Whether a Docker container with this name and these labels is selected.
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        let name = name.trim_start_matches('/');
        self.name
            .as_deref()
            .is_none_or(|pattern| super::glob::glob_match(pattern.as_bytes(), name.as_bytes()))
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl NodeConfig {
    /// Parse and validate a node config.
    /// The drains come out self-contained (see [`NodeConfig::inline_ca_bundles`]).
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let mut config: NodeConfig = serde_yaml::from_str(text)?;
        config.validate()?;
        config.inline_ca_bundles();
        Ok(config)
    }

    /// Make every drain self-contained: a `tls.caBundle` reference becomes that bundle's PEM in
    /// `tls.caPem`, and `caBundles` is emptied, so a collector builds and compares drains without
    /// the shared table (a drain whose bundle changed is a changed drain).
    pub fn inline_ca_bundles(&mut self) {
        for tls in self.drains.iter_mut().filter_map(|d| d.tls.as_mut()) {
            if let Some(pem) = tls.ca_bundle.take().and_then(|name| self.ca_bundles.get(&name)) {
                tls.ca_pem = Some(pem.clone());
            }
        }
        self.ca_bundles.clear();
    }

    /// Render as YAML (the operator's output; stable field order).
    pub fn to_yaml(&self) -> Result<String, ConfigError> {
        Ok(serde_yaml::to_string(self)?)
    }
}
