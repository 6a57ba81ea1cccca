//! TLS client settings for `syslog-tls://` and `https://` drains (rustls with the `ring` provider).
//!
//! Invariants:
//! * Verification is on unless `insecureSkipVerify` is set. The trust anchors are the configured CA
//!   bundle (`caPem` or `caFile`) when there is one, otherwise the Mozilla web roots.
//! * A server certificate that is itself in the configured bundle is trusted as such, even when it
//!   is marked CA:TRUE (a self-signed certificate given as `caFile`, which curl and OpenSSL accept
//!   and webpki refuses as `CaUsedAsEndEntity`); its name and validity period are still checked,
//!   and the handshake must still be signed with its key.
//! * Everything is checked when the drain is created, before any connection: an unreadable file, a
//!   PEM without certificates, a key that is not a key or does not match the certificate. Errors say
//!   which setting is wrong; they never include key material.

use std::{path::PathBuf, sync::Arc};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    server::ParsedCertificate,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use sluice_api::node_config::TlsConfig;

/// TLS settings that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file named in the settings could not be read.
    #[error("cannot read {setting} file {path}")]
    ReadFile {
        /// `tls.caFile`, `tls.certFile` or `tls.keyFile`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// PEM text that holds no usable certificate or key.
    #[error("{setting}: {problem}")]
    Pem {
        /// The setting.
        setting: &'static str,
        /// What is wrong, in words.
        problem: String,
    },
    /// rustls refused the combination (for example a key that does not match the certificate).
    #[error("{setting}: {source}")]
    Rustls {
        /// The setting.
        setting: &'static str,
        /// rustls' reason.
        #[source]
        source: rustls::Error,
    },
    /// The name to verify the server against is not a DNS name or IP address.
    #[error("tls.serverName {name:?} is not a valid DNS name or IP address")]
    ServerName {
        /// The name.
        name: String,
    },
}

/// The ring crypto provider, shared.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client config for `tls` (default settings when `None`).
pub fn client_config(tls: Option<&TlsConfig>) -> Result<ClientConfig, Error> {
    let default = TlsConfig::default();
    let tls = tls.unwrap_or(&default);
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Rustls {
            setting: "tls",
            source,
        })?;
    let builder = if tls.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let (roots, bundle) = roots(tls)?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| Error::Pem {
                setting: "tls",
                problem: e.to_string(),
            })?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TrustedSelfSigned { webpki, bundle }))
    };
    match client_identity(tls)? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|source| Error::Rustls {
                setting: "tls.certPem/keyPem",
                source,
            }),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The name the server certificate must carry: `serverName` or the URL's host.
pub fn server_name(tls: Option<&TlsConfig>, host: &str) -> Result<ServerName<'static>, Error> {
    let name = tls.and_then(|t| t.server_name.as_deref()).unwrap_or(host);
    ServerName::try_from(name.to_owned()).map_err(|_| Error::ServerName {
        name: name.to_owned(),
    })
}

fn read(setting: &'static str, path: &PathBuf) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::ReadFile {
        setting,
        path: path.clone(),
        source,
    })
}

fn certificates(setting: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            setting,
            problem: format!("not valid PEM ({e})"),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            setting,
            problem: "contains no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The trust anchors, and the configured bundle's certificates (none for the web roots).
fn roots(tls: &TlsConfig) -> Result<(RootCertStore, Vec<CertificateDer<'static>>), Error> {
    let (setting, pem) = match (&tls.ca_pem, &tls.ca_file) {
        (Some(pem), _) => ("tls.caPem", pem.as_bytes().to_vec()),
        (None, Some(path)) => ("tls.caFile", read("tls.caFile", path)?),
        (None, None) => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            return Ok((roots, Vec::new()));
        }
    };
    let mut store = RootCertStore::empty();
    let bundle = certificates(setting, &pem)?;
    for cert in &bundle {
        store
            .add(cert.clone())
            .map_err(|source| Error::Rustls { setting, source })?;
    }
    Ok((store, bundle))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_identity(tls: &TlsConfig) -> Result<Option<Identity>, Error> {
    let (cert, key, settings) = match (&tls.cert_pem, &tls.key_pem, &tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key), _, _) => (
            cert.as_bytes().to_vec(),
            key.expose().as_bytes().to_vec(),
            ("tls.certPem", "tls.keyPem"),
        ),
        (_, _, Some(cert), Some(key)) => (
            read("tls.certFile", cert)?,
            read("tls.keyFile", key)?,
            ("tls.certFile", "tls.keyFile"),
        ),
        _ => return Ok(None),
    };
    let chain = certificates(settings.0, &cert)?;
    // Never echo the parser's view of key material: say only that it is not a usable key.
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|_| Error::Pem {
        setting: settings.1,
        problem: "contains no usable PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1)".into(),
    })?;
    Ok(Some((chain, key)))
}

/// webpki verification against the trust anchors, which also accepts a server certificate that is
/// itself one of the configured certificates when webpki's only objection is that it is a CA.
#[derive(Debug)]
struct TrustedSelfSigned {
    webpki: Arc<WebPkiServerVerifier>,
    bundle: Vec<CertificateDer<'static>>,
}

/// Whether `err` is webpki's `CaUsedAsEndEntity` (rustls passes it on as an "other" error).
fn is_ca_used_as_end_entity(err: &OtherError) -> bool {
    matches!(
        err.0.downcast_ref::<webpki::Error>(),
        Some(webpki::Error::CaUsedAsEndEntity)
    )
}

impl ServerCertVerifier for TrustedSelfSigned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(other)))
                if is_ca_used_as_end_entity(&other)
                    && self.bundle.iter().any(|c| c.as_ref() == end_entity.as_ref()) =>
            {
                // Trusted as itself. webpki checks the validity period before the basic
                // constraints, so reaching this error means the period holds; the name is checked
                // here as webpki would have next.
                rustls::client::verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
                Ok(ServerCertVerified::assertion())
            }
            result => result,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.webpki.root_hint_subjects()
    }
}

/// Accepts any server certificate (`insecureSkipVerify`), but still checks handshake signatures so
/// the session keys are at least bound to the certificate presented.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
