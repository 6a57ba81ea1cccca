//! Mutual TLS between the operator and the collectors' query API (see [`crate::query`]).
//!
//! A collector given a serving certificate, its key and a client CA serves its query API over
//! TLS and completes a handshake only with a client certificate that chains to that CA (the
//! operator's); it then says so on its node Lease ([`SCHEME_ANNOTATION`] `https`). The operator,
//! given that CA and a client certificate and key, verifies each collector's certificate against
//! the CA for one fixed name ([`DEFAULT_SERVER_NAME`] unless told otherwise: pod IPs change, so
//! the name is not the address) and never sends its token to a collector that advertises plain
//! HTTP.
//!
//! Both ends load their files here, so a missing file, a PEM file without the expected block, or
//! a key that does not belong to its certificate is refused at start with the file's name.
//! Messages never include key material.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig, crypto::CryptoProvider, server::WebPkiClientVerifier,
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

/// The annotation of a collector's node Lease saying how its query API is reached: `https`
/// (mutual TLS) or, when absent, plain HTTP.
pub const SCHEME_ANNOTATION: &str = "sluice.dev/query-scheme";
/// The value of [`SCHEME_ANNOTATION`] of a collector serving TLS.
pub const HTTPS: &str = "https";
/// The name the operator verifies collectors' certificates for unless told otherwise; the chart
/// puts it in the collectors' certificate.
pub const DEFAULT_SERVER_NAME: &str = "sluice-collector-query";

/// Why the query TLS files cannot be used. Messages name the file, never key material.
#[derive(Debug, thiserror::Error)]
pub enum QueryTlsError {
    /// A file cannot be read.
    #[error("cannot read the {what} {}: {source}", .path.display())]
    Read {
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file is not valid PEM.
    #[error("the {what} {} is not valid PEM ({detail})", .path.display())]
    Pem {
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
        /// The parser's reason.
        detail: String,
    },
    /// A certificate file holds no certificate.
    #[error("the {what} {} contains no CERTIFICATE block", .path.display())]
    NoCertificate {
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
    },
    /// A CA certificate cannot be a trust anchor.
    #[error("certificate {number} of the {what} {} cannot be a trust anchor ({detail})", .path.display())]
    Anchor {
        /// Its place in the file, from 1.
        number: usize,
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A key file holds no usable private key.
    #[error("the {what} key {} contains no usable PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1)", .path.display())]
    NoKey {
        /// What the key is for.
        what: String,
        /// The file.
        path: PathBuf,
    },
    /// A key does not belong to its certificate.
    #[error("the {what} key {} is not the key of the certificate {} ({detail})", .key.display(), .cert.display())]
    KeyMismatch {
        /// What the pair is for.
        what: String,
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// Why.
        detail: String,
    },
    /// The client CA cannot verify clients.
    #[error("the query client CA {} cannot verify clients ({detail})", .path.display())]
    ClientVerifier {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// rustls refused the certificate or the protocol versions.
    #[error("the {what} {} ({source})", .path.display())]
    Config {
        /// What the file is for.
        what: &'static str,
        /// The certificate file.
        path: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// A name no certificate can be for.
    #[error("{name:?} is not a DNS name or IP address a certificate can be for")]
    ServerName {
        /// The name given.
        name: String,
    },
}

/// The `ring` provider, as everywhere in sluice.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, QueryTlsError> {
    std::fs::read(path).map_err(|source| QueryTlsError::Read {
        what: what.to_owned(),
        path: path.to_owned(),
        source,
    })
}

/// The certificates of the PEM file `path` (at least one).
fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, QueryTlsError> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| QueryTlsError::Pem {
            what: what.to_owned(),
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(QueryTlsError::NoCertificate {
            what: what.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The CA certificates of `path` as trust anchors.
fn anchors(path: &Path, what: &str) -> Result<Arc<RootCertStore>, QueryTlsError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in certificates(path, what)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| QueryTlsError::Anchor {
            number: index + 1,
            what: what.to_owned(),
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

/// The certificate chain of `cert` and the key of `key`, checked to belong together.
fn identity(
    cert: &Path,
    key: &Path,
    what: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), QueryTlsError> {
    let chain = certificates(cert, &format!("{what} certificate"))?;
    let pem = read(key, &format!("{what} key"))?;
    // Never echo the parser's view of key material: say only that it is not a usable key.
    let parsed = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| QueryTlsError::NoKey {
        what: what.to_owned(),
        path: key.to_owned(),
    })?;
    CertifiedKey::from_der(chain.clone(), parsed.clone_key(), &provider()).map_err(|e| {
        QueryTlsError::KeyMismatch {
            what: what.to_owned(),
            key: key.to_owned(),
            cert: cert.to_owned(),
            detail: e.to_string(),
        }
    })?;
    Ok((chain, parsed))
}

/// The collector's side: serve with `cert`/`key` (PEM files) and require a client certificate
/// that chains to the CA(s) in `client_ca`.
pub fn server_config(cert: &Path, key: &Path, client_ca: &Path) -> Result<ServerConfig, QueryTlsError> {
    let (chain, key) = identity(cert, key, "query TLS")?;
    let roots = anchors(client_ca, "query client CA")?;
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .build()
        .map_err(|e| QueryTlsError::ClientVerifier {
            path: client_ca.to_owned(),
            detail: e.to_string(),
        })?;
    let refused = |source| QueryTlsError::Config {
        what: "query TLS certificate",
        path: cert.to_owned(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(refused)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The operator's side: trust the collectors' CA(s) in `ca` and present `cert`/`key` (PEM files).
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<ClientConfig, QueryTlsError> {
    let roots = anchors(ca, "collector query CA")?;
    let (chain, key) = identity(cert, key, "collector query client")?;
    let refused = |source| QueryTlsError::Config {
        what: "collector query client certificate",
        path: cert.to_owned(),
        source,
    };
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(refused)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(refused)
}

/// `name` as the server name collectors' certificates are verified for.
pub fn server_name(name: &str) -> Result<ServerName<'static>, QueryTlsError> {
    ServerName::try_from(name.to_owned()).map_err(|_| QueryTlsError::ServerName {
        name: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `name` and its key, as PEM.
    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn files_that_do_not_fit_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n);
        let (cert, key) = self_signed("a");
        let (_, other_key) = self_signed("b");
        std::fs::write(path("a.crt"), &cert).unwrap();
        std::fs::write(path("a.key"), &key).unwrap();
        std::fs::write(path("b.key"), &other_key).unwrap();
        std::fs::write(path("empty.pem"), "nothing here\n").unwrap();

        server_config(&path("a.crt"), &path("a.key"), &path("a.crt")).unwrap();
        client_config(&path("a.crt"), &path("a.crt"), &path("a.key")).unwrap();

        let mismatch = server_config(&path("a.crt"), &path("b.key"), &path("a.crt"))
            .unwrap_err()
            .to_string();
        assert!(
            mismatch.starts_with(&format!(
                "the query TLS key {} is not the key of the certificate {}",
                path("b.key").display(),
                path("a.crt").display()
            )),
            "{mismatch}"
        );
        let missing = client_config(&path("none.crt"), &path("a.crt"), &path("a.key"))
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with(&format!(
                "cannot read the collector query CA {}:",
                path("none.crt").display()
            )),
            "{missing}"
        );
        let missing_key = client_config(&path("a.crt"), &path("a.crt"), &path("none.key"))
            .unwrap_err()
            .to_string();
        assert!(
            missing_key.starts_with(&format!(
                "cannot read the collector query client key {}:",
                path("none.key").display()
            )),
            "{missing_key}"
        );
        assert_eq!(
            server_config(&path("empty.pem"), &path("a.key"), &path("a.crt"))
                .unwrap_err()
                .to_string(),
            format!(
                "the query TLS certificate {} contains no CERTIFICATE block",
                path("empty.pem").display()
            )
        );
        assert_eq!(
            server_config(&path("a.crt"), &path("empty.pem"), &path("a.crt"))
                .unwrap_err()
                .to_string(),
            format!(
                "the query TLS key {} contains no usable PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1)",
                path("empty.pem").display()
            )
        );
        assert!(!mismatch.contains("PRIVATE KEY-----"));
        assert!(server_name("sluice-collector-query").is_ok());
        assert!(server_name("not a name").is_err());
    }
}
