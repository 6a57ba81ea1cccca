//! TLS client settings for `syslog-tls://` and `https://` drains (rustls with the `ring` provider).
//!
//! Invariants:
//! * Verification is on unless `insecureSkipVerify` is set. The trust anchors are the configured CA
//!   bundle (`caPem` or `caFile`) when there is one, otherwise the Mozilla web roots.
//! * A server certificate that is itself in the configured bundle is trusted as such, even when it
//!   is marked CA:TRUE (a self-signed certificate given as `caFile`, which curl and OpenSSL accept
//!   and webpki refuses as `CaUsedAsEndEntity`); its name and validity period are still checked,
//!   and the handshake must still be signed with its key.
//! * The material was checked and parsed by the drain's plan ([`sluice_api::node_config::DrainPlan`]),
//!   before any connection: an unreadable file, a PEM without certificates, a key that is not a key
//!   or does not match the certificate never reach this module, so building the config cannot fail.

use std::sync::Arc;

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    server::ParsedCertificate,
    sign::SingleCertAndKey,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sluice_api::node_config::{ClientTls, Trust};

/// The ring crypto provider, shared.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls client config for `tls`: its material was parsed and checked by the drain's plan.
pub fn client_config(tls: &ClientTls) -> ClientConfig {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("invariant: the ring provider supports the default TLS versions");
    let verifier: Arc<dyn ServerCertVerifier> = match &tls.trust {
        Trust::Anything => Arc::new(NoVerification(provider)),
        Trust::WebRoots => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            Arc::new(TrustedSelfSigned::new(Arc::new(roots), Vec::new(), provider))
        }
        Trust::Bundle {
            anchors,
            certificates,
        } => Arc::new(TrustedSelfSigned::new(
            Arc::clone(anchors),
            certificates.clone(),
            provider,
        )),
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    match &tls.identity {
        Some(identity) => {
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(identity))))
        }
        None => builder.with_no_client_auth(),
    }
}

/// webpki verification against the trust anchors, which also accepts a server certificate that is
/// itself one of the configured certificates when webpki's only objection is that it is a CA.
#[derive(Debug)]
struct TrustedSelfSigned {
    webpki: Arc<WebPkiServerVerifier>,
    bundle: Vec<CertificateDer<'static>>,
}

impl TrustedSelfSigned {
    fn new(
        roots: Arc<RootCertStore>,
        bundle: Vec<CertificateDer<'static>>,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .expect("invariant: the web roots and a planned CA bundle hold at least one trust anchor");
        Self { webpki, bundle }
    }
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
