//! X.509 checks of the certificates and keys a `LogDrain` names, so a bad one is reported as
//! `InvalidCertificate` on the drain instead of as TLS failures on every node.
//!
//! What is refused: a PEM value with no certificate, a block that is not valid X.509 DER, a CA
//! bundle in which every certificate is outside its validity period (a bundle that merely
//! contains some expired certificates is normal), a client certificate outside its validity
//! period, a private key that is not PEM or of a type TLS cannot use, and a private key that does
//! not belong to the client certificate.
//!
//! Invariant: a [`Problem`] message names the field, the Secret, the key, and a certificate's
//! position, subject and validity dates (all public); never key material or certificate bytes.

use rustls::crypto::ring::sign::any_supported_type;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use sluice_api::crd::condition::reason;
use x509_parser::{certificate::X509Certificate, time::ASN1Time};

use super::Problem;

/// Where a PEM value came from, for messages: the spec field, the Secret and the key in it.
#[derive(Clone, Copy)]
pub struct Origin<'a> {
    /// The spec field, e.g. `spec.tls.ca`.
    pub field: &'a str,
    /// The Secret's name.
    pub secret: &'a str,
    /// The key in the Secret.
    pub key: &'a str,
}

impl Origin<'_> {
    fn problem(&self, what: impl std::fmt::Display) -> Problem {
        Problem {
            reason: reason::INVALID_CERTIFICATE,
            message: format!(
                "{}: key {:?} of Secret {:?}: {what}",
                self.field, self.key, self.secret
            ),
        }
    }
}

/// The DER certificates of a PEM value: at least one, each a valid PEM block.
fn pem_certificates(origin: Origin<'_>, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Problem> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| origin.problem(format_args!("not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(origin.problem("holds no PEM certificate (a -----BEGIN CERTIFICATE----- block)"));
    }
    Ok(certs)
}

/// Parse certificate `index` (1-based, for messages) as X.509.
fn parse<'a>(origin: Origin<'_>, index: usize, der: &'a [u8]) -> Result<X509Certificate<'a>, Problem> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(origin.problem(format_args!(
            "certificate {index} is not valid X.509 (trailing data after the certificate)"
        ))),
        Err(e) => Err(origin.problem(format_args!("certificate {index} is not valid X.509 ({e})"))),
    }
}

/// A certificate time as RFC 3339 (`2026-01-01T00:00:00Z`).
fn rfc3339(time: ASN1Time) -> String {
    jiff::Timestamp::from_second(time.timestamp()).map_or_else(|_| time.to_string(), |t| t.to_string())
}

/// Why `cert` is not valid now, if it is not.
fn outside_validity(cert: &X509Certificate<'_>, now: ASN1Time) -> Option<String> {
    let validity = cert.validity();
    let subject = cert.subject().to_string();
    if now < validity.not_before {
        return Some(format!(
            "certificate {subject:?} is not valid before {}",
            rfc3339(validity.not_before)
        ));
    }
    (now > validity.not_after).then(|| {
        format!(
            "certificate {subject:?} expired on {}",
            rfc3339(validity.not_after)
        )
    })
}

/// Check a CA bundle: at least one certificate, each valid X.509, at least one valid now.
pub fn check_ca_bundle(origin: Origin<'_>, pem: &[u8]) -> Result<(), Problem> {
    let certs = pem_certificates(origin, pem)?;
    let now = ASN1Time::now();
    let mut outside = Vec::new();
    for (i, der) in certs.iter().enumerate() {
        let cert = parse(origin, i + 1, der)?;
        outside.extend(outside_validity(&cert, now));
    }
    if outside.len() == certs.len() {
        let why = if certs.len() == 1 {
            outside.remove(0)
        } else {
            format!(
                "no certificate of the {} is valid now ({})",
                certs.len(),
                outside.join("; ")
            )
        };
        return Err(origin.problem(why));
    }
    Ok(())
}

/// Check a client certificate chain and its private key: the chain parses, its first certificate
/// is valid now, and the key is a usable private key that belongs to that certificate.
pub fn check_client(
    cert_origin: Origin<'_>,
    cert_pem: &[u8],
    key_origin: Origin<'_>,
    key_pem: &[u8],
) -> Result<(), Problem> {
    let certs = pem_certificates(cert_origin, cert_pem)?;
    let mut leaf_spki = Vec::new();
    for (i, der) in certs.iter().enumerate() {
        let cert = parse(cert_origin, i + 1, der)?;
        if i == 0 {
            if let Some(why) = outside_validity(&cert, ASN1Time::now()) {
                return Err(cert_origin.problem(why));
            }
            leaf_spki = cert.tbs_certificate.subject_pki.raw.to_vec();
        }
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| key_origin.problem("holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)"))?;
    let signer = any_supported_type(&key).map_err(|_| {
        key_origin.problem("holds a private key TLS cannot use (RSA, ECDSA P-256/P-384 and Ed25519 can be)")
    })?;
    // A key type whose public half rustls cannot tell is given the benefit of the doubt.
    let matches = signer
        .public_key()
        .is_none_or(|spki| spki.as_ref() == leaf_spki.as_slice());
    if !matches {
        return Err(key_origin.problem(format_args!(
            "the private key does not belong to the certificate in key {:?}",
            cert_origin.key
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, date_time_ymd};

    use super::*;

    /// A self-signed certificate and its key (PEM), valid from/to the given years (or around now).
    fn cert(name: &str, years: Option<(i32, i32)>) -> (String, String) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        if let Some((from, to)) = years {
            params.not_before = date_time_ymd(from, 1, 1);
            params.not_after = date_time_ymd(to, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed");
        (cert.pem(), key.serialize_pem())
    }

    const CA: Origin<'static> = Origin {
        field: "spec.tls.ca",
        secret: "s",
        key: "ca.crt",
    };
    const CRT: Origin<'static> = Origin {
        field: "spec.tls.clientCertificate",
        secret: "c",
        key: "tls.crt",
    };
    const KEY: Origin<'static> = Origin {
        field: "spec.tls.clientCertificate",
        secret: "c",
        key: "tls.key",
    };

    #[test]
    fn ca_bundles() {
        let (good, _) = cert("good", None);
        let (old, _) = cert("old", Some((2000, 2001)));
        let (future, _) = cert("future", Some((2999, 3000)));
        let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n";
        let cases: [(&str, String, Option<&str>); 7] = [
            ("one valid certificate", good.clone(), None),
            ("a bundle with one expired", format!("{old}{good}"), None),
            (
                "no certificate",
                "just text".into(),
                Some("holds no PEM certificate"),
            ),
            (
                "not X.509",
                garbage.into(),
                Some("certificate 1 is not valid X.509"),
            ),
            (
                "not X.509 after a good one",
                format!("{good}{garbage}"),
                Some("certificate 2 is not valid X.509"),
            ),
            ("expired", old.clone(), Some("certificate \"CN=old\" expired on")),
            (
                "not yet valid",
                format!("{future}{old}"),
                Some("no certificate of the 2 is valid now"),
            ),
        ];
        for (what, pem, wanted) in cases {
            let got = check_ca_bundle(CA, pem.as_bytes());
            match (wanted, got) {
                (None, Ok(())) => {}
                (Some(needle), Err(p)) => {
                    assert_eq!(p.reason, reason::INVALID_CERTIFICATE, "{what}");
                    assert!(p.message.contains(needle), "{what}: {}", p.message);
                    assert!(
                        p.message
                            .starts_with("spec.tls.ca: key \"ca.crt\" of Secret \"s\""),
                        "{what}: {}",
                        p.message
                    );
                }
                (wanted, got) => panic!("{what}: wanted {wanted:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn client_certificates_and_keys() {
        let (crt, key) = cert("client", None);
        let (_, other_key) = cert("other", None);
        let (old, old_key) = cert("old", Some((2000, 2001)));
        assert_eq!(check_client(CRT, crt.as_bytes(), KEY, key.as_bytes()), Ok(()));
        let cases = [
            (
                &crt,
                &other_key,
                "the private key does not belong to the certificate in key \"tls.crt\"",
            ),
            (&old, &old_key, "certificate \"CN=old\" expired on"),
            (&crt, &"no key".to_owned(), "holds no PEM private key"),
        ];
        for (c, k, needle) in cases {
            let p = check_client(CRT, c.as_bytes(), KEY, k.as_bytes()).expect_err(needle);
            assert_eq!(p.reason, reason::INVALID_CERTIFICATE);
            assert!(p.message.contains(needle), "{}", p.message);
            let body: String = k.lines().filter(|l| !l.starts_with("-----")).collect();
            assert!(
                body.len() < 20 || !p.message.contains(&body[..20]),
                "key material in {}",
                p.message
            );
        }
    }
}
