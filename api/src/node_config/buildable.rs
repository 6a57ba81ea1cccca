//! The checks a collector makes when it builds a drain, made here so that the operator refuses a
//! drain the collector could not build (and names the field) instead of shipping it to nodes:
//! * syslog templates parse ([`super::template`]);
//! * a TLS drain's server name (`tls.serverName`, else the URL's host for `syslog-tls://`) is a
//!   DNS name or an IP address;
//! * PEM material holds what it should: `caPem` and `certPem` at least one certificate, each a
//!   well-formed X.509 trust anchor for `caPem`, the first a well-formed X.509 certificate for
//!   `certPem`; `keyPem` a private key;
//! * an HTTP drain's URL is a valid HTTP URI, its header names and values are valid, it has at
//!   most one kind of credentials, and the credentials fit in a header.
//!
//! What only the host can check stays with the collector: files named by `caFile`, `certFile` and
//! `keyFile`. Whether a private key belongs to its certificate is checked by the operator on the
//! Secrets (and by the collector when it builds the TLS settings).
//!
//! Messages never include credential or key material.

use http::{HeaderName, HeaderValue};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

use super::{DrainConfig, DrainKind, template};

/// A failed check: the field (relative to the drain, e.g. `syslog.appName`) and what is wrong.
pub type Failure = (String, String);

/// Everything [`DrainConfig::kind`] accepted and the collector still needs to build the drain.
pub fn check(drain: &DrainConfig, kind: &DrainKind) -> Result<(), Failure> {
    match kind {
        DrainKind::SyslogTcp { .. } | DrainKind::SyslogTls { .. } | DrainKind::SyslogUdp { .. } => {
            templates(drain)?;
        }
        DrainKind::Http { url, .. } => http(drain, url)?,
    }
    if let DrainKind::SyslogTls { host, .. } = kind {
        let given = drain.tls.as_ref().and_then(|t| t.server_name.as_deref());
        if given.is_none() {
            server_name("url", host)?;
        }
    }
    tls(drain)
}

fn fail(field: impl Into<String>, message: impl Into<String>) -> Failure {
    (field.into(), message.into())
}

fn templates(drain: &DrainConfig) -> Result<(), Failure> {
    let format = &drain.syslog;
    for (field, text) in [
        ("syslog.appName", &format.app_name),
        ("syslog.hostname", &format.hostname),
        ("syslog.procid", &format.procid),
    ] {
        template::parse(text).map_err(|e| fail(field, e.to_string()))?;
    }
    Ok(())
}

fn server_name(field: &str, name: &str) -> Result<(), Failure> {
    ServerName::try_from(name).map(|_| ()).map_err(|_| {
        fail(
            field,
            format!(
                "{name:?} is not a valid DNS name or IP address to verify the server certificate against"
            ),
        )
    })
}

fn certificates(field: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, Failure> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(field, format!("not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(fail(field, "contains no CERTIFICATE block"));
    }
    Ok(certs)
}

/// A CA bundle: at least one certificate, each usable as a trust anchor.
pub fn ca_pem(pem: &str) -> Result<(), String> {
    let certs = certificates("", pem).map_err(|(_, m)| m)?;
    for (i, cert) in certs.iter().enumerate() {
        webpki::anchor_from_trusted_cert(cert)
            .map_err(|e| format!("certificate {} cannot be a trust anchor ({e})", i + 1))?;
    }
    Ok(())
}

fn tls(drain: &DrainConfig) -> Result<(), Failure> {
    let Some(tls) = &drain.tls else { return Ok(()) };
    if let Some(name) = &tls.server_name {
        server_name("tls.serverName", name)?;
    }
    if let Some(pem) = &tls.ca_pem {
        ca_pem(pem).map_err(|m| fail("tls.caPem", m))?;
    }
    if let Some(pem) = &tls.cert_pem {
        let chain = certificates("tls.certPem", pem)?;
        // The collector reads the first certificate's public key to pair it with `keyPem`.
        if let Some(first) = chain.first() {
            webpki::EndEntityCert::try_from(first).map_err(|e| {
                fail(
                    "tls.certPem",
                    format!("the first certificate is not a well-formed X.509 certificate ({e})"),
                )
            })?;
        }
    }
    if let Some(key) = &tls.key_pem {
        // Never echo the parser's view of key material: say only that it is not a usable key.
        PrivateKeyDer::from_pem_slice(key.expose().as_bytes()).map_err(|_| {
            fail(
                "tls.keyPem",
                "contains no usable PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1)",
            )
        })?;
    }
    Ok(())
}

fn http(drain: &DrainConfig, url: &str) -> Result<(), Failure> {
    url.parse::<http::Uri>()
        .map_err(|e| fail("url", format!("not a valid HTTP URL ({e})")))?;
    let Some(options) = &drain.http else { return Ok(()) };
    for (name, value) in &options.headers {
        HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| fail("http.headers", format!("{name:?} is not a valid header name")))?;
        HeaderValue::from_str(value).map_err(|_| {
            fail(
                format!("http.headers.{name}"),
                "the value is not a valid header value (visible ASCII, spaces and tabs only)",
            )
        })?;
    }
    let not_a_header =
        "contains characters not allowed in an HTTP header (visible ASCII, spaces and tabs only)";
    match (&options.bearer_token, &options.basic_auth) {
        (Some(_), Some(_)) => Err(fail("http", "give bearerToken or basicAuth, not both")),
        (Some(token), None) => HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map(|_| ())
            .map_err(|_| fail("http.bearerToken", not_a_header)),
        // Basic credentials travel base64-encoded, which always fits in a header.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::node_config::{BasicAuth, HttpOptions, NodeConfig, Redacted, TlsConfig};

    use super::*;

    fn drain(url: &str) -> DrainConfig {
        let yaml = format!("name: d\nurl: {url}\n");
        serde_yaml::from_str(&yaml).expect("drain yaml")
    }

    fn field(d: &DrainConfig) -> String {
        let config = NodeConfig {
            version: crate::node_config::CURRENT_VERSION,
            drains: vec![d.clone()],
            ..NodeConfig::default()
        };
        match (config.validate(), d.validate()) {
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
    fn template_labels_are_listed() {
        let keys: Vec<String> =
            template::labels("{label:team}-{pod}.{label:app.kubernetes.io/name}").collect();
        assert_eq!(keys, ["team", "app.kubernetes.io/name"]);
        assert_eq!(template::labels("{bogus}").count(), 0);
    }
}
