//! A drain's plan: everything a collector needs to build the drain, checked and parsed once,
//! here, so that building a drain from a [`DrainPlan`] cannot fail, and so that the operator
//! refuses a drain the collector could not build (naming the field) instead of shipping it:
//! * the URL names its transport and address; an HTTP URL is a valid request URI;
//! * syslog templates are parsed ([`super::template`]);
//! * a TLS drain's server name (`tls.serverName`, else the URL's host for `syslog-tls://`) is a
//!   DNS name or an IP address;
//! * PEM material is parsed into what rustls takes: a CA bundle into trust anchors (at least one
//!   certificate, each usable as an anchor); a client certificate chain and its key into a
//!   certified key that rustls' `ring` provider can sign with and whose key belongs to the first
//!   certificate;
//! * an HTTP drain's request headers are built: names and values are valid, there is at most one
//!   kind of credentials, and the credentials fit in a header.
//!
//! [`DrainConfig::plan`] also reads the files named by `caFile`, `certFile` and `keyFile`, which
//! only the node they are on can do; [`DrainConfig::validate`] makes every other check (what the
//! operator can check) and leaves the files unread.
//!
//! Messages never include credential or key material.

use std::{fmt, path::Path, sync::Arc};

use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use rustls::{RootCertStore, sign::CertifiedKey};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

use super::{
    DeliveryOptions, DrainConfig, DrainKind, HttpOptions, TlsConfig, UdpOversize,
    template::{self, Segment},
};

/// A failed check: the field (relative to the drain, e.g. `syslog.appName`) and what is wrong.
pub(super) type Failure = (String, String);

/// A drain, checked: what a collector builds it from, with nothing left that can fail.
#[derive(Clone, Debug)]
pub struct DrainPlan {
    /// The drain's name.
    pub name: String,
    /// How batches travel, and how lines are encoded for it.
    pub transport: TransportPlan,
    /// Batching, timeouts, retries and rate limit (checked: non-zero where it matters).
    pub delivery: DeliveryOptions,
}

/// A drain's transport.
#[derive(Clone, Debug)]
pub enum TransportPlan {
    /// `syslog://` and `syslog-tls://`: RFC5424 with octet counting over TCP, maybe over TLS.
    Tcp(TcpPlan),
    /// `syslog-udp://`: RFC5424 in datagrams (RFC5426).
    Udp(UdpPlan),
    /// `http://` and `https://`: batched JSON lines.
    Http(HttpPlan),
}

/// A `syslog://` or `syslog-tls://` drain.
#[derive(Clone, Debug)]
pub struct TcpPlan {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The TLS settings of `syslog-tls://`; `None` for plain TCP.
    pub tls: Option<TlsPlan>,
    /// The message format.
    pub syslog: SyslogPlan,
}

/// A `syslog-udp://` drain.
#[derive(Clone, Debug)]
pub struct UdpPlan {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// The message format.
    pub syslog: SyslogPlan,
    /// The largest datagram sent (at least 480).
    pub max_datagram_bytes: usize,
    /// What happens to a longer message.
    pub oversize: UdpOversize,
}

/// An `http://` or `https://` drain. `Debug` shows the URL without its query and header names
/// without their values (either may carry a credential).
#[derive(Clone)]
pub struct HttpPlan {
    /// The URL as shown in errors and logs: without its query or fragment (an API key may be
    /// there).
    pub shown_url: String,
    /// The request URI.
    pub uri: Uri,
    /// Whether it is `https://`.
    pub https: bool,
    /// The headers of every request: content type, extra headers, credentials (marked
    /// sensitive) and, with gzip, the content encoding.
    pub headers: HeaderMap,
    /// Whether request bodies are gzip-compressed.
    pub gzip: bool,
    /// The answers that give a batch up (`delivery.dropOnStatus`, each a 4xx or 5xx status).
    pub drop_on_status: Vec<StatusCode>,
    /// The TLS client settings (used for `https://`).
    pub tls: ClientTls,
    /// The name to verify the server certificate against instead of the URL's host
    /// (`tls.serverName` of an `https://` drain).
    pub server_name: Option<ServerName<'static>>,
}

impl fmt::Debug for HttpPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpPlan")
            .field("shown_url", &self.shown_url)
            .field("https", &self.https)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("gzip", &self.gzip)
            .field("drop_on_status", &self.drop_on_status)
            .field("tls", &self.tls)
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// A syslog drain's message format, its templates parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogPlan {
    /// The APP-NAME template.
    pub app_name: Vec<Segment>,
    /// The HOSTNAME template.
    pub hostname: Vec<Segment>,
    /// The PROCID template.
    pub procid: Vec<Segment>,
    /// Whether Kubernetes metadata goes into STRUCTURED-DATA.
    pub structured_data: bool,
}

/// The TLS settings of a `syslog-tls://` drain.
#[derive(Clone, Debug)]
pub struct TlsPlan {
    /// The client settings.
    pub client: ClientTls,
    /// The name the server certificate must carry: `tls.serverName`, else the URL's host.
    pub server_name: ServerName<'static>,
}

/// A TLS client's trust and identity. `Debug` does not show the key.
#[derive(Clone)]
pub struct ClientTls {
    /// Which server certificates are trusted.
    pub trust: Trust,
    /// The client certificate chain and its key, for mutual TLS.
    pub identity: Option<Arc<CertifiedKey>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("trust", &self.trust)
            .field("identity", &self.identity.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Which server certificates a TLS client trusts.
#[derive(Clone)]
pub enum Trust {
    /// The Mozilla web roots (no CA configured).
    WebRoots,
    /// The configured CA bundle.
    Bundle {
        /// Its certificates as trust anchors (at least one).
        anchors: Arc<RootCertStore>,
        /// Its certificates as given (a server certificate among them is trusted as itself).
        certificates: Vec<CertificateDer<'static>>,
    },
    /// Any certificate: `insecureSkipVerify`.
    Anything,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trust::WebRoots => f.write_str("WebRoots"),
            Trust::Bundle { certificates, .. } => write!(f, "Bundle({} certificates)", certificates.len()),
            Trust::Anything => f.write_str("Anything"),
        }
    }
}

/// Whether planning reads the files TLS settings name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Files {
    /// Read and check them (the collector, on the node that has them).
    Read,
    /// Leave them unread and unchecked (the operator, which validates what it cannot plan).
    Unread,
}

impl Files {
    /// The file's content; `None` when files are left unread.
    fn read(self, field: &str, path: &Path) -> Result<Option<Vec<u8>>, Failure> {
        match self {
            Files::Unread => Ok(None),
            Files::Read => std::fs::read(path)
                .map(Some)
                .map_err(|e| fail(field, format!("cannot read {}: {e}", path.display()))),
        }
    }
}

/// The plan of `drain`, whose URL names `kind` (the settings [`DrainKind::parse`] and the
/// option checks of `validate` accepted).
pub(super) fn plan(drain: &DrainConfig, kind: DrainKind, files: Files) -> Result<DrainPlan, Failure> {
    let transport = match kind {
        DrainKind::SyslogTcp { host, port } => TransportPlan::Tcp(TcpPlan {
            syslog: syslog(drain)?,
            tls: None,
            host,
            port,
        }),
        DrainKind::SyslogTls { host, port } => {
            let syslog = syslog(drain)?;
            let server_name = match drain.tls.as_ref().and_then(|t| t.server_name.as_deref()) {
                Some(name) => server_name("tls.serverName", name)?,
                None => server_name("url", &host)?,
            };
            let client = client_tls(drain.tls.as_ref(), files)?;
            TransportPlan::Tcp(TcpPlan {
                host,
                port,
                tls: Some(TlsPlan { client, server_name }),
                syslog,
            })
        }
        DrainKind::SyslogUdp { host, port } => TransportPlan::Udp(UdpPlan {
            syslog: syslog(drain)?,
            max_datagram_bytes: drain.syslog.max_datagram_bytes as usize,
            oversize: drain.syslog.udp_oversize,
            host,
            port,
        }),
        DrainKind::Http { url, tls } => TransportPlan::Http(http(drain, &url, tls, files)?),
    };
    Ok(DrainPlan {
        name: drain.name.clone(),
        transport,
        delivery: drain.delivery.clone(),
    })
}

fn fail(field: impl Into<String>, message: impl Into<String>) -> Failure {
    (field.into(), message.into())
}

fn syslog(drain: &DrainConfig) -> Result<SyslogPlan, Failure> {
    let format = &drain.syslog;
    let parse = |field: &str, text: &str| template::parse(text).map_err(|e| fail(field, e.to_string()));
    Ok(SyslogPlan {
        app_name: parse("syslog.appName", &format.app_name)?,
        hostname: parse("syslog.hostname", &format.hostname)?,
        procid: parse("syslog.procid", &format.procid)?,
        structured_data: format.structured_data,
    })
}

fn server_name(field: &str, name: &str) -> Result<ServerName<'static>, Failure> {
    ServerName::try_from(name.to_owned()).map_err(|_| {
        fail(
            field,
            format!(
                "{name:?} is not a valid DNS name or IP address to verify the server certificate against"
            ),
        )
    })
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM ({e})"))?;
    if certs.is_empty() {
        return Err("contains no CERTIFICATE block".into());
    }
    Ok(certs)
}

/// A CA bundle (PEM) as trust anchors: at least one certificate, each usable as an anchor.
pub(super) fn ca_bundle(pem: &[u8]) -> Result<Trust, String> {
    let certificates = certificates(pem)?;
    let mut anchors = RootCertStore::empty();
    for (i, cert) in certificates.iter().enumerate() {
        let anchor = webpki::anchor_from_trusted_cert(cert)
            .map_err(|e| format!("certificate {} cannot be a trust anchor ({e})", i + 1))?;
        anchors.roots.push(anchor.to_owned());
    }
    Ok(Trust::Bundle {
        anchors: Arc::new(anchors),
        certificates,
    })
}

/// The client settings of `tls` (the defaults when `None`). A `caBundle` reference must have
/// been inlined by [`super::NodeConfig::inline_ca_bundles`] before the files are read.
fn client_tls(tls: Option<&TlsConfig>, files: Files) -> Result<ClientTls, Failure> {
    let Some(tls) = tls else {
        return Ok(ClientTls {
            trust: Trust::WebRoots,
            identity: None,
        });
    };
    let trust = if tls.insecure_skip_verify {
        Trust::Anything
    } else {
        let pem = match (&tls.ca_pem, &tls.ca_file, &tls.ca_bundle) {
            (Some(pem), _, _) => Some(("tls.caPem", pem.as_bytes().to_vec())),
            (None, Some(path), _) => files.read("tls.caFile", path)?.map(|pem| ("tls.caFile", pem)),
            (None, None, Some(name)) if files == Files::Read => {
                return Err(fail(
                    "tls.caBundle",
                    format!(
                        "names {name:?}, which was not put into caPem (read the node config with NodeConfig::from_yaml)"
                    ),
                ));
            }
            _ => None,
        };
        match pem {
            Some((field, pem)) => ca_bundle(&pem).map_err(|m| fail(field, m))?,
            None => Trust::WebRoots,
        }
    };
    Ok(ClientTls {
        trust,
        identity: identity(tls, files)?,
    })
}

/// The client certificate chain and key, from PEM or files; `None` without one (or with files
/// left unread).
fn identity(tls: &TlsConfig, files: Files) -> Result<Option<Arc<CertifiedKey>>, Failure> {
    let (chain, key, fields) = match (&tls.cert_pem, &tls.key_pem, &tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key), _, _) => (
            cert.as_bytes().to_vec(),
            key.expose().as_bytes().to_vec(),
            ("tls.certPem", "tls.keyPem"),
        ),
        (_, _, Some(cert), Some(key)) => {
            match (files.read("tls.certFile", cert)?, files.read("tls.keyFile", key)?) {
                (Some(cert), Some(key)) => (cert, key, ("tls.certFile", "tls.keyFile")),
                _ => return Ok(None),
            }
        }
        _ => return Ok(None),
    };
    let chain = certificates(&chain).map_err(|m| fail(fields.0, m))?;
    if let Some(first) = chain.first() {
        webpki::EndEntityCert::try_from(first).map_err(|e| {
            fail(
                fields.0,
                format!("the first certificate is not a well-formed X.509 certificate ({e})"),
            )
        })?;
    }
    // Never echo the parser's view of key material: say only that it is not a usable key.
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|_| {
        fail(
            fields.1,
            "contains no usable PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1)",
        )
    })?;
    // What rustls checks when a client config takes a certificate and key: the key can sign with
    // the collector's provider (ring), and it is the first certificate's key.
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
        fail(
            fields.1,
            format!(
                "is not a key that signs for the first certificate of {} ({e})",
                fields.0
            ),
        )
    })?;
    Ok(Some(Arc::new(certified)))
}

fn http(drain: &DrainConfig, url: &str, https: bool, files: Files) -> Result<HttpPlan, Failure> {
    let uri = url
        .parse::<Uri>()
        .map_err(|e| fail("url", format!("not a valid HTTP URL ({e})")))?;
    let headers = headers(drain.http.as_ref())?;
    let given = drain.tls.as_ref().and_then(|t| t.server_name.as_deref());
    let server_name = given
        .map(|name| server_name("tls.serverName", name))
        .transpose()?;
    let drop_on_status = drain
        .delivery
        .drop_on_status
        .iter()
        .map(|&code| {
            StatusCode::from_u16(code)
                .map_err(|_| fail("delivery.dropOnStatus", format!("{code} is not an HTTP status")))
        })
        .collect::<Result<_, _>>()?;
    Ok(HttpPlan {
        shown_url: url.split(['?', '#']).next().unwrap_or(url).to_owned(),
        uri,
        https,
        headers,
        gzip: drain.http.as_ref().is_some_and(|h| h.gzip),
        drop_on_status,
        tls: client_tls(drain.tls.as_ref(), files)?,
        server_name: server_name.filter(|_| https),
    })
}

/// The headers of every request: content type, extra headers, credentials, content encoding.
fn headers(options: Option<&HttpOptions>) -> Result<HeaderMap, Failure> {
    let mut map = HeaderMap::new();
    map.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    let Some(options) = options else { return Ok(map) };
    for (name, value) in &options.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| fail("http.headers", format!("{name:?} is not a valid header name")))?;
        let header_value = HeaderValue::from_str(value).map_err(|_| {
            fail(
                format!("http.headers.{name}"),
                "the value is not a valid header value (visible ASCII, spaces and tabs only)",
            )
        })?;
        map.insert(header_name, header_value);
    }
    let not_a_header =
        "contains characters not allowed in an HTTP header (visible ASCII, spaces and tabs only)";
    let credentials = match (&options.bearer_token, &options.basic_auth) {
        (Some(_), Some(_)) => return Err(fail("http", "give bearerToken or basicAuth, not both")),
        (Some(token), None) => Some(("http.bearerToken", format!("Bearer {}", token.expose()))),
        (None, Some(basic)) => {
            let pair = format!("{}:{}", basic.username, basic.password.expose());
            let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
            Some(("http.basicAuth", format!("Basic {encoded}")))
        }
        (None, None) => None,
    };
    if let Some((field, credentials)) = credentials {
        let mut value = HeaderValue::from_str(&credentials).map_err(|_| fail(field, not_a_header))?;
        value.set_sensitive(true);
        map.insert(header::AUTHORIZATION, value);
    }
    if options.gzip {
        map.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use crate::node_config::{BasicAuth, HttpOptions, NodeConfig, Redacted, TlsConfig};

    use super::*;

    fn drain(url: &str) -> DrainConfig {
        let yaml = format!("name: d\nurl: {url}\n");
        serde_yaml::from_str(&yaml).expect("drain yaml")
    }

    fn field(drain: &DrainConfig) -> String {
        let config = NodeConfig {
            version: crate::node_config::CURRENT_VERSION,
            drains: vec![drain.clone()],
            ..NodeConfig::default()
        };
        match (config.validate(), drain.validate()) {
            (Err(crate::node_config::ConfigError::Invalid { field, .. }), Err(alone)) => {
                assert!(alone.to_string().contains(field.trim_start_matches("drains[0].")));
                field
            }
            (Ok(()), Ok(())) => "accepted".into(),
            other => panic!("the node and the drain disagree: {other:?}"),
        }
    }

    #[test]
    fn what_a_collector_cannot_build_is_refused_with_its_field() {
        let syslog = || drain("syslog-tls://logs.example.com:6514");
        let https = || drain("https://in.example.com/v1");
        let with_tls = |tls: TlsConfig| DrainConfig {
            tls: Some(tls),
            ..syslog()
        };
        let with_http = |http: HttpOptions| DrainConfig {
            http: Some(http),
            ..https()
        };
        let mut bad_app = syslog();
        bad_app.syslog.app_name = "{namespace}/{bogus}".into();
        let mut bad_procid = drain("syslog-udp://h:514");
        bad_procid.syslog.procid = "{pod".into();
        let headers = |k: &str, v: &str| HttpOptions {
            headers: [(k.to_owned(), v.to_owned())].into(),
            ..HttpOptions::default()
        };
        let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
        let cases = [
            (syslog(), "accepted"),
            (https(), "accepted"),
            (bad_app, "drains[0].syslog.appName"),
            (bad_procid, "drains[0].syslog.procid"),
            (drain("syslog-tls://a..b:6514"), "drains[0].url"),
            (
                with_tls(TlsConfig {
                    server_name: Some("not a name".into()),
                    ..TlsConfig::default()
                }),
                "drains[0].tls.serverName",
            ),
            (
                with_tls(TlsConfig {
                    ca_pem: Some("no pem here".into()),
                    ..TlsConfig::default()
                }),
                "drains[0].tls.caPem",
            ),
            (
                with_tls(TlsConfig {
                    ca_pem: Some(garbage.into()),
                    ..TlsConfig::default()
                }),
                "drains[0].tls.caPem",
            ),
            (
                with_tls(TlsConfig {
                    cert_pem: Some("x".into()),
                    key_pem: Some(Redacted("y".into())),
                    ..TlsConfig::default()
                }),
                "drains[0].tls.certPem",
            ),
            (
                with_tls(TlsConfig {
                    cert_pem: Some(garbage.into()),
                    key_pem: Some(Redacted(
                        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into(),
                    )),
                    ..TlsConfig::default()
                }),
                "drains[0].tls.certPem",
            ),
            (drain("https://in.example.com/a b"), "drains[0].url"),
            (with_http(headers("Bad Name", "v")), "drains[0].http.headers"),
            (with_http(headers("X-Ok", "a\nb")), "drains[0].http.headers.X-Ok"),
            (with_http(headers("X-Ok", "fine value")), "accepted"),
            (
                with_http(HttpOptions {
                    bearer_token: Some(Redacted("tok\nen".into())),
                    ..HttpOptions::default()
                }),
                "drains[0].http.bearerToken",
            ),
            (
                with_http(HttpOptions {
                    bearer_token: Some(Redacted("t".into())),
                    basic_auth: Some(BasicAuth {
                        username: "u".into(),
                        password: Redacted("p".into()),
                    }),
                    ..HttpOptions::default()
                }),
                "drains[0].http",
            ),
        ];
        for (i, (d, want)) in cases.into_iter().enumerate() {
            assert_eq!(field(&d), want, "case {i}: {d:?}");
        }
    }

    #[test]
    fn messages_never_carry_credentials() {
        let mut d = drain("https://in.example.com/v1");
        d.http = Some(HttpOptions {
            bearer_token: Some(Redacted("s3cret\u{7f}".into())),
            ..HttpOptions::default()
        });
        let message = d.validate().expect_err("refused").to_string();
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn a_plan_holds_what_the_collector_builds_from() {
        let mut https = drain("https://in.example.com/v1?api_key=s3cret");
        https.http = Some(HttpOptions {
            gzip: true,
            basic_auth: Some(BasicAuth {
                username: "u".into(),
                password: Redacted("p".into()),
            }),
            ..HttpOptions::default()
        });
        let Ok(DrainPlan {
            transport: TransportPlan::Http(http),
            ..
        }) = https.plan()
        else {
            panic!("an https drain plans as HTTP");
        };
        assert_eq!(http.shown_url, "https://in.example.com/v1");
        assert!(http.https && http.gzip && http.server_name.is_none());
        let authorization = &http.headers[http::header::AUTHORIZATION];
        assert_eq!(authorization, "Basic dTpw");
        assert!(authorization.is_sensitive());
        assert_eq!(http.headers[http::header::CONTENT_ENCODING], "gzip");
        assert!(matches!(http.tls.trust, Trust::WebRoots));
        assert!(!format!("{http:?}").contains("s3cret"));

        let Ok(DrainPlan {
            transport: TransportPlan::Tcp(tcp),
            ..
        }) = drain("syslog-tls://logs.example.com:6514").plan()
        else {
            panic!("a syslog-tls drain plans as TCP");
        };
        let tls = tcp.tls.expect("syslog-tls has TLS");
        assert_eq!(tls.server_name.to_str(), "logs.example.com");
        assert_eq!(tcp.syslog.procid, template::parse("{container}").expect("parses"));
    }

    #[test]
    fn files_are_read_by_plan_and_left_to_it_by_validate() {
        let mut d = drain("syslog-tls://logs.example.com:6514");
        d.tls = Some(TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsConfig::default()
        });
        assert!(d.validate().is_ok());
        match d.plan() {
            Err(crate::node_config::ConfigError::Invalid { field, message }) => {
                assert_eq!(field, "tls.caFile");
                assert!(
                    message.starts_with("cannot read /nonexistent/ca.pem: "),
                    "{message}"
                );
            }
            other => panic!("a missing CA file was planned: {other:?}"),
        }
    }

    #[test]
    fn template_labels_are_listed() {
        let keys: Vec<String> =
            template::labels("{label:team}-{pod}.{label:app.kubernetes.io/name}").collect();
        assert_eq!(keys, ["team", "app.kubernetes.io/name"]);
        assert_eq!(template::labels("{bogus}").count(), 0);
    }
}
