//! Resolution of a `LogDrain` with the Secrets it names into the [`DrainConfig`] a collector
//! reads, and the names a drain gets in node configs. A leaf: it knows nothing of the operator's
//! picture of the cluster ([`crate::world`]) or of rendering, which both build on it.
//!
//! Invariants:
//! * a [`Problem`] message names the field and the Secret (namespace, name, key) but never a
//!   Secret's value, so it is safe for statuses, Events and logs;
//! * a Secret's data is kept only when it opted in with [`DRAIN_CREDENTIALS_LABEL`];
//! * a drain's node-config name depends only on its namespace and name ([`names`]).

use std::collections::{BTreeMap, HashMap};

use sluice_api::{
    crd::{DRAIN_CREDENTIALS_LABEL, LogDrain, LogDrainSpec, condition::reason},
    node_config::{
        BasicAuth, ConfigError, DeliveryOptions, DrainConfig, HttpOptions, Redacted, SyslogFormat, TlsConfig,
    },
};

pub mod cert;
pub mod names;

pub use names::{content_hash, node_drain_name, node_drain_names};

/// A namespaced object's key. Ordered by namespace, then name, so that one namespace's objects
/// are a contiguous range; shown as `namespace/name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    /// The object's namespace.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl ObjKey {
    /// The key of `name` in `namespace`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}/{}", self.namespace, self.name)
    }
}

/// The most bytes of YAML one drain's settings may take (its CA bundle included).
pub const DRAIN_BUDGET: usize = 64 * 1024;

/// A Secret a drain names, as the operator keeps it.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretData {
    /// It does not exist.
    Missing,
    /// It exists but has not opted in to serve drains (no [`DRAIN_CREDENTIALS_LABEL`]); its data
    /// is not kept.
    NotPermitted,
    /// It opted in: its data by key.
    Permitted(BTreeMap<String, Vec<u8>>),
}

impl SecretData {
    /// What the operator keeps of a Secret a drain names (`None`: it does not exist): its data
    /// only when it opted in with the [`DRAIN_CREDENTIALS_LABEL`] label.
    pub fn of(secret: Option<&k8s_openapi::api::core::v1::Secret>) -> Self {
        match secret {
            None => SecretData::Missing,
            Some(found) if opted_in(found) => SecretData::Permitted(secret_values(found)),
            Some(_) => SecretData::NotPermitted,
        }
    }
}

impl std::fmt::Debug for SecretData {
    // Keys only: the values are credentials.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => formatter.write_str("Missing"),
            Self::NotPermitted => formatter.write_str("NotPermitted"),
            Self::Permitted(data) => formatter.debug_tuple("Permitted").field(&data.keys()).finish(),
        }
    }
}

/// Why a drain cannot be used: a PascalCase reason (condition reason and Event reason) and a
/// message a person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// One of [`sluice_api::crd::condition::reason`].
    pub reason: &'static str,
    /// What is wrong and where.
    pub message: String,
}

impl Problem {
    /// A problem with `reason` (one of [`sluice_api::crd::condition::reason`]).
    pub fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The names of the Secrets (in the drain's namespace) a drain reads.
pub fn secret_names(spec: &LogDrainSpec) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(tls) = &spec.tls {
        names.extend(tls.ca.iter().map(|r| r.name.clone()));
        names.extend(tls.client_certificate.iter().map(|r| r.secret_name.clone()));
    }
    names.extend(spec.credentials.iter().map(|c| c.secret_name.clone()));
    names.sort();
    names.dedup();
    names
}

/// Looks keys up in the drain's namespace's Secrets.
struct SecretLookup<'a> {
    namespace: &'a str,
    secrets: &'a HashMap<ObjKey, SecretData>,
}

impl SecretLookup<'_> {
    fn get(&self, field: &str, secret: &str, key: &str) -> Result<&[u8], Problem> {
        let data = match self.secrets.get(&ObjKey::new(self.namespace, secret)) {
            Some(SecretData::Permitted(data)) => data,
            Some(SecretData::Missing) => {
                return Err(Problem::new(
                    reason::SECRET_NOT_FOUND,
                    format!(
                        "{field} names Secret {secret:?}, which does not exist in namespace {:?}",
                        self.namespace
                    ),
                ));
            }
            Some(SecretData::NotPermitted) => {
                return Err(Problem::new(
                    reason::SECRET_NOT_PERMITTED,
                    format!(
                        "{field} names Secret {secret:?}, which has not opted in to serve LogDrains; if it \
                         is meant to, someone allowed to edit Secrets in namespace {ns:?} can run: \
                         kubectl label secret {secret} -n {ns} {DRAIN_CREDENTIALS_LABEL}=true",
                        ns = self.namespace
                    ),
                ));
            }
            None => {
                return Err(Problem::new(
                    reason::SECRET_NOT_FOUND,
                    format!(
                        "{field} names Secret {secret:?} in namespace {:?}, which the operator could not \
                         read yet (see its log; it tries again every few seconds)",
                        self.namespace
                    ),
                ));
            }
        };
        data.get(key).map(Vec::as_slice).ok_or_else(|| {
            Problem::new(
                reason::SECRET_KEY_NOT_FOUND,
                format!("{field}: Secret {secret:?} has no key {key:?}"),
            )
        })
    }

    fn text(&self, field: &str, secret: &str, key: &str) -> Result<String, Problem> {
        let bytes = self.get(field, secret, key)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            Problem::new(
                reason::INVALID_SPEC,
                format!("{field}: key {key:?} of Secret {secret:?} is not UTF-8 text"),
            )
        })
    }
}

fn tls_config(spec: &LogDrainSpec, lookup: &SecretLookup<'_>) -> Result<Option<TlsConfig>, Problem> {
    let Some(tls) = &spec.tls else { return Ok(None) };
    let mut out = TlsConfig {
        server_name: tls.server_name.clone(),
        insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
        ..TlsConfig::default()
    };
    if let Some(ca) = &tls.ca {
        let pem = lookup.get("spec.tls.ca", &ca.name, &ca.key)?;
        let origin = cert::Origin {
            field: "spec.tls.ca",
            secret: &ca.name,
            key: &ca.key,
        };
        cert::check_ca_bundle(origin, pem)?;
        out.ca_pem = Some(lookup.text("spec.tls.ca", &ca.name, &ca.key)?);
    }
    if let Some(client) = &tls.client_certificate {
        let field = "spec.tls.clientCertificate";
        let cert = lookup.get(field, &client.secret_name, &client.cert_key)?;
        let key = lookup.get(field, &client.secret_name, &client.key_key)?;
        let origin = |key| cert::Origin {
            field,
            secret: &client.secret_name,
            key,
        };
        cert::check_client(origin(&client.cert_key), cert, origin(&client.key_key), key)?;
        out.cert_pem = Some(lookup.text(field, &client.secret_name, &client.cert_key)?);
        out.key_pem = Some(Redacted(lookup.text(
            field,
            &client.secret_name,
            &client.key_key,
        )?));
    }
    Ok(Some(out))
}

fn http_options(spec: &LogDrainSpec, lookup: &SecretLookup<'_>) -> Result<Option<HttpOptions>, Problem> {
    if spec.http.is_none() && spec.credentials.is_none() {
        return Ok(None);
    }
    let mut out = HttpOptions {
        gzip: spec.http.as_ref().and_then(|h| h.gzip).unwrap_or(false),
        headers: spec.http.as_ref().map(|h| h.headers.clone()).unwrap_or_default(),
        allow_credentials_over_http: spec
            .http
            .as_ref()
            .and_then(|h| h.allow_credentials_over_http)
            .unwrap_or(false),
        ..HttpOptions::default()
    };
    if let Some(c) = &spec.credentials {
        let field = "spec.credentials";
        if let Some(key) = &c.bearer_token_key {
            out.bearer_token = Some(Redacted(
                lookup.text(field, &c.secret_name, key)?.trim_end().to_owned(),
            ));
        }
        if let (Some(user), Some(pass)) = (&c.username_key, &c.password_key) {
            out.basic_auth = Some(BasicAuth {
                username: lookup.text(field, &c.secret_name, user)?.trim_end().to_owned(),
                password: Redacted(lookup.text(field, &c.secret_name, pass)?.trim_end().to_owned()),
            });
        }
    }
    Ok(Some(out))
}

fn syslog_format(spec: &LogDrainSpec) -> SyslogFormat {
    let mut format = SyslogFormat::default();
    if let Some(f) = &spec.format {
        format.app_name = f.app_name.clone().unwrap_or(format.app_name);
        format.hostname = f.hostname.clone().unwrap_or(format.hostname);
        format.procid = f.procid.clone().unwrap_or(format.procid);
        format.structured_data = f.structured_data.unwrap_or(format.structured_data);
    }
    format
}

/// Resolve a drain into the settings a collector needs, under the node-config name `name`.
pub fn resolve_drain(
    drain: &LogDrain,
    secrets: &HashMap<ObjKey, SecretData>,
    name: String,
) -> Result<DrainConfig, Problem> {
    let namespace = drain.metadata.namespace.as_deref().unwrap_or_default();
    let lookup = SecretLookup { namespace, secrets };
    let spec = &drain.spec;
    let config = DrainConfig {
        name,
        url: spec.url.clone(),
        tls: tls_config(spec, &lookup)?,
        syslog: syslog_format(spec),
        http: http_options(spec, &lookup)?,
        delivery: DeliveryOptions {
            max_lines_per_second: spec.rate_limit.as_ref().map(|r| r.lines_per_second),
            drop_on_status: spec
                .http
                .as_ref()
                .and_then(|h| h.drop_on_status.clone())
                .unwrap_or_else(DeliveryOptions::default_drop_on_status),
            ..DeliveryOptions::default()
        },
        owner: None,
    };
    // The collector's own checks (the shared validation) are the final word: a drain it would
    // refuse never ships.
    config.validate().map_err(|e| {
        let message = match e {
            ConfigError::Invalid { field, message } => format!("{}: {message}", spec_field(&field)),
            other => other.to_string(),
        };
        Problem::new(reason::INVALID_SPEC, message)
    })?;
    let size = serde_yaml::to_string(&config).map_or(0, |yaml| yaml.len());
    if size > DRAIN_BUDGET {
        return Err(Problem::new(
            reason::CONFIG_TOO_LARGE,
            format!(
                "the drain's settings take {} KiB once rendered (CA bundle and HTTP headers included); \
                 a drain may take at most {} KiB",
                size.div_ceil(1024),
                DRAIN_BUDGET / 1024
            ),
        ));
    }
    Ok(config)
}

/// The `LogDrain` field a node-config drain field comes from, so a person is pointed at what they
/// wrote (`syslog.appName` → `spec.format.appName`).
fn spec_field(field: &str) -> String {
    let (head, rest) = field.split_once('.').unwrap_or((field, ""));
    match (head, rest) {
        ("syslog", _) => format!("spec.format.{rest}"),
        ("tls", "caPem") => "spec.tls.ca".into(),
        ("tls", "certPem" | "keyPem") => "spec.tls.clientCertificate".into(),
        ("http", r) if r.starts_with("bearerToken") || r.starts_with("basicAuth") => {
            "spec.credentials".into()
        }
        ("http", "") => "spec.credentials".into(),
        ("delivery", "maxLinesPerSecond") => "spec.rateLimit.linesPerSecond".into(),
        ("", _) => "spec".into(),
        _ => format!("spec.{field}"),
    }
}

/// Whether a Secret carries `sluice.dev/drain-credentials: "true"`.
pub fn opted_in(secret: &k8s_openapi::api::core::v1::Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(DRAIN_CREDENTIALS_LABEL))
        .is_some_and(|v| v == "true")
}

/// A Secret's values from the API object (`data` wins over `stringData`, as the API server merges).
fn secret_values(secret: &k8s_openapi::api::core::v1::Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    for (k, v) in secret.data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    out
}
