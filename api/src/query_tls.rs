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

use std::{path::Path, sync::Arc};

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

/// The `ring` provider, as everywhere in sluice.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

/// The certificates of the PEM file `path` (at least one).
fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the {what} {} is not valid PEM ({e})", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the {what} {} contains no CERTIFICATE block",
            path.display()
        ));
    }
    Ok(certs)
}

/// The CA certificates of `path` as trust anchors.
fn anchors(path: &Path, what: &str) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certificates(path, what)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            format!(
                "certificate {} of the {what} {} cannot be a trust anchor ({e})",
                i + 1,
                path.display()
            )
        })?;
    }
    Ok(Arc::new(roots))
}

/// The certificate chain of `cert` and the key of `key`, checked to belong together.
fn identity(
    cert: &Path,
    key: &Path,
    what: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = certificates(cert, &format!("{what} certificate"))?;
    let pem = read(key, &format!("{what} key"))?;
    // Never echo the parser's view of key material: say only that it is not a usable key.
    let parsed = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| {
        format!(
            "the {what} key {} contains no usable PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1)",
            key.display()
        )
    })?;
    CertifiedKey::from_der(chain.clone(), parsed.clone_key(), &provider()).map_err(|e| {
        format!(
            "the {what} key {} is not the key of the certificate {} ({e})",
            key.display(),
            cert.display()
        )
    })?;
    Ok((chain, parsed))
}

/// The collector's side: serve with `cert`/`key` (PEM files) and require a client certificate
/// that chains to the CA(s) in `client_ca`.
pub fn server_config(cert: &Path, key: &Path, client_ca: &Path) -> Result<ServerConfig, String> {
    let (chain, key) = identity(cert, key, "query TLS")?;
    let roots = anchors(client_ca, "query client CA")?;
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .build()
        .map_err(|e| {
            format!(
                "the query client CA {} cannot verify clients ({e})",
                client_ca.display()
            )
        })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("the query TLS certificate {} ({e})", cert.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The operator's side: trust the collectors' CA(s) in `ca` and present `cert`/`key` (PEM files).
pub fn client_config(ca: &Path, cert: &Path, key: &Path) -> Result<ClientConfig, String> {
    let roots = anchors(ca, "collector query CA")?;
    let (chain, key) = identity(cert, key, "collector query client")?;
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("the collector query client certificate {} ({e})", cert.display()))
}

/// `name` as the server name collectors' certificates are verified for.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_owned())
        .map_err(|_| format!("{name:?} is not a DNS name or IP address a certificate can be for"))
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

        let mismatch = server_config(&path("a.crt"), &path("b.key"), &path("a.crt")).unwrap_err();
        assert!(
            mismatch.starts_with(&format!(
                "the query TLS key {} is not the key of the certificate {}",
                path("b.key").display(),
                path("a.crt").display()
            )),
            "{mismatch}"
        );
        let missing = client_config(&path("none.crt"), &path("a.crt"), &path("a.key")).unwrap_err();
        assert!(
            missing.starts_with(&format!(
                "cannot read the collector query CA {}:",
                path("none.crt").display()
            )),
            "{missing}"
        );
        let missing_key = client_config(&path("a.crt"), &path("a.crt"), &path("none.key")).unwrap_err();
        assert!(
            missing_key.starts_with(&format!(
                "cannot read the collector query client key {}:",
                path("none.key").display()
            )),
            "{missing_key}"
        );
        assert_eq!(
            server_config(&path("empty.pem"), &path("a.key"), &path("a.crt")).unwrap_err(),
            format!(
                "the query TLS certificate {} contains no CERTIFICATE block",
                path("empty.pem").display()
            )
        );
        assert_eq!(
            server_config(&path("a.crt"), &path("empty.pem"), &path("a.crt")).unwrap_err(),
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
