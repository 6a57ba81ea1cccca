//! `syslog-tls://` drains against a real rustls server on loopback, with certificates made by rcgen.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "support/drain.rs"]
mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use sluice_api::node_config::{ConfigError, Redacted, TlsConfig};
use support::*;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

const WAIT: Duration = Duration::from_secs(30);

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `name` signed by `ca`: (certificate PEM, key PEM).
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

struct TlsReceiver {
    port: u16,
    messages: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Drop for TlsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS syslog receiver with `cert`; it requires client certificates signed by `client_ca` if given.
async fn tls_receiver(cert: &(String, String), client_ca: Option<&str>) -> TlsReceiver {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.0.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).unwrap();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
                .unwrap();
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let acceptor = TlsAcceptor::from(Arc::new(builder.with_single_cert(chain, key).unwrap()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&messages);
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, sink) = (acceptor.clone(), Arc::clone(&sink));
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(socket).await {
                    read_octet_frames(tls, sink).await;
                }
            });
        }
    });
    TlsReceiver { port, messages, task }
}

fn tls_config(port: u16, tls: TlsConfig) -> sluice_api::node_config::DrainConfig {
    let mut config = config("tls", &format!("syslog-tls://127.0.0.1:{port}"));
    config.tls = Some(tls);
    config
}

async fn expect_delivered(config: &sluice_api::node_config::DrainConfig, receiver: &TlsReceiver) {
    let (drain, _) = start(config);
    let feeder = Feeder::new();
    feeder.send(&drain, 0..3_000, 400, |i| format!("line-{i}")).await;
    wait_for("every line acknowledged", WAIT, || feeder.acked() == 3_000).await;
    wait_for("every line received", WAIT, || {
        receiver.messages.lock().unwrap().len() >= 3_000
    })
    .await;
    let got: Vec<String> = receiver
        .messages
        .lock()
        .unwrap()
        .iter()
        .map(|m| msg_of(m))
        .collect();
    assert_lines_in_order(&got, &(0..3_000).map(|i| format!("line-{i}")).collect::<Vec<_>>());
    drain.abort();
}

async fn expect_refused(config: &sluice_api::node_config::DrainConfig, receiver: &TlsReceiver) {
    let (drain, metrics) = start(config);
    let feeder = Feeder::new();
    feeder.send(&drain, 0..10, 10, |i| format!("line-{i}")).await;
    wait_for("TLS failures counted", WAIT, || {
        metrics.delivery_failures.with_label_values(&["tls", "tls"]).get() >= 2
    })
    .await;
    assert_eq!(
        feeder.acked(),
        0,
        "nothing is acknowledged over an unverified connection"
    );
    assert!(receiver.messages.lock().unwrap().is_empty());
    let health = drain.health();
    assert_eq!(health.failing, Some("tls"));
    let error = health.last_error.unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "TLS handshake with 127.0.0.1:{} failed: ",
            receiver.port
        )),
        "{error}"
    );
    assert_eq!(health.last_success_at, None);
    drain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_server_gets_everything_and_bad_trust_gets_nothing() {
    let authority = ca("sluice test CA");
    let receiver = tls_receiver(
        &leaf(&authority, "localhost", ExtendedKeyUsagePurpose::ServerAuth),
        None,
    )
    .await;
    let good = TlsConfig {
        ca_pem: Some(authority.pem()),
        server_name: Some("localhost".into()),
        ..TlsConfig::default()
    };
    expect_delivered(&tls_config(receiver.port, good.clone()), &receiver).await;
    receiver.messages.lock().unwrap().clear();

    let other = ca("some other CA");
    let wrong_ca = TlsConfig {
        ca_pem: Some(other.pem()),
        ..good.clone()
    };
    expect_refused(&tls_config(receiver.port, wrong_ca), &receiver).await;
    let wrong_name = TlsConfig {
        server_name: Some("logs.example.com".into()),
        ..good.clone()
    };
    expect_refused(&tls_config(receiver.port, wrong_name), &receiver).await;
    // By default the web roots are trusted, which do not include the test CA.
    let web_roots = TlsConfig {
        server_name: Some("localhost".into()),
        ..TlsConfig::default()
    };
    expect_refused(&tls_config(receiver.port, web_roots), &receiver).await;
    // Verification off (explicitly): delivered.
    let insecure = TlsConfig {
        insecure_skip_verify: true,
        ..TlsConfig::default()
    };
    expect_delivered(&tls_config(receiver.port, insecure), &receiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_presented_when_required() {
    let authority = ca("sluice test CA");
    let server = leaf(&authority, "localhost", ExtendedKeyUsagePurpose::ServerAuth);
    let receiver = tls_receiver(&server, Some(&authority.pem())).await;
    let (cert, key) = leaf(&authority, "collector", ExtendedKeyUsagePurpose::ClientAuth);
    let base = TlsConfig {
        ca_pem: Some(authority.pem()),
        server_name: Some("localhost".into()),
        ..TlsConfig::default()
    };
    let mutual = TlsConfig {
        cert_pem: Some(cert),
        key_pem: Some(Redacted(key)),
        ..base.clone()
    };
    expect_delivered(&tls_config(receiver.port, mutual), &receiver).await;
    receiver.messages.lock().unwrap().clear();
    expect_refused(&tls_config(receiver.port, base), &receiver).await;
}

/// The field and message of the error that planning the drain with `tls` fails with.
fn plan_error(tls: TlsConfig) -> (String, String) {
    match tls_config(6514, tls).plan() {
        Ok(plan) => panic!("bad TLS settings were planned: {plan:?}"),
        Err(ConfigError::Invalid { field, message }) => (field, message),
        Err(other) => panic!("not a field's error: {other}"),
    }
}

#[test]
fn bad_tls_material_is_refused_when_planned_with_a_clear_error() {
    let authority = ca("sluice test CA");
    let (cert, _) = leaf(&authority, "collector", ExtendedKeyUsagePurpose::ClientAuth);
    let (_, other_key) = leaf(&authority, "other", ExtendedKeyUsagePurpose::ClientAuth);

    let (field, message) = plan_error(TlsConfig {
        ca_pem: Some("not a certificate".into()),
        ..TlsConfig::default()
    });
    assert_eq!(
        (field.as_str(), message.as_str()),
        ("tls.caPem", "contains no CERTIFICATE block")
    );
    let (field, message) = plan_error(TlsConfig {
        ca_file: Some("/nonexistent/ca.pem".into()),
        ..TlsConfig::default()
    });
    assert_eq!(field, "tls.caFile");
    assert!(
        message.starts_with("cannot read /nonexistent/ca.pem: "),
        "{message}"
    );
    let garbage_key = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    for key in [garbage_key.to_owned(), other_key] {
        let (field, message) = plan_error(TlsConfig {
            cert_pem: Some(cert.clone()),
            key_pem: Some(Redacted(key)),
            ..TlsConfig::default()
        });
        assert_eq!(field, "tls.keyPem");
        assert!(
            message.starts_with("is not a key that signs for the first certificate of tls.certPem"),
            "{message}"
        );
        assert!(
            !message.contains("PRIVATE KEY") && !message.contains("AAAA"),
            "key material never appears in errors: {message}"
        );
    }
}

/// An HTTPS server (hyper over rustls) answering 200 and recording the JSON lines it got.
async fn https_receiver(cert: &(String, String)) -> TlsReceiver {
    use http_body_util::BodyExt;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.0.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&messages);
    let task = tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (acceptor, sink) = (acceptor.clone(), Arc::clone(&sink));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(socket).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let sink = Arc::clone(&sink);
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            for line in String::from_utf8(body.to_vec()).unwrap().lines() {
                                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                                sink.lock()
                                    .unwrap()
                                    .push(value["message"].as_str().unwrap_or_default().to_owned());
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                            ))
                        }
                    });
                let io = hyper_util::rt::TokioIo::new(tls);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    TlsReceiver { port, messages, task }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_drains_verify_the_server_too() {
    let authority = ca("sluice test CA");
    let receiver = https_receiver(&leaf(
        &authority,
        "localhost",
        ExtendedKeyUsagePurpose::ServerAuth,
    ))
    .await;
    let https = |tls: TlsConfig| {
        let mut cfg = config(
            "tls",
            &format!("https://127.0.0.1:{}/ingest?key=secret", receiver.port),
        );
        cfg.tls = Some(tls);
        cfg
    };
    let good = TlsConfig {
        ca_pem: Some(authority.pem()),
        server_name: Some("localhost".into()),
        ..TlsConfig::default()
    };
    let (drain, _) = start(&https(good.clone()));
    let feeder = Feeder::new();
    feeder.send(&drain, 0..2_000, 500, |i| format!("line-{i}")).await;
    wait_for("every line acknowledged", WAIT, || feeder.acked() == 2_000).await;
    assert_same_lines(
        receiver.messages.lock().unwrap().clone(),
        (0..2_000).map(|i| format!("line-{i}")).collect(),
    );
    drain.abort();

    let other = ca("some other CA");
    let (drain, metrics) = start(&https(TlsConfig {
        ca_pem: Some(other.pem()),
        ..good
    }));
    let feeder = Feeder::new();
    feeder.send(&drain, 0..10, 10, |i| format!("line-{i}")).await;
    wait_for("TLS failures counted", WAIT, || {
        metrics.delivery_failures.with_label_values(&["tls", "tls"]).get() >= 2
    })
    .await;
    assert_eq!(feeder.acked(), 0);
    let error = drain.health().last_error.unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "POST to https://127.0.0.1:{}/ingest failed",
            receiver.port
        )),
        "{error}"
    );
    assert!(
        !error.contains("secret"),
        "the URL's query is never shown: {error}"
    );
    drain.abort();
}

/// A self-signed certificate for `name` marked CA:TRUE, as `openssl req -x509` makes by default:
/// (certificate PEM, key PEM).
fn self_signed_ca(name: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_ca_certificate_given_as_the_ca_is_trusted_as_the_server() {
    let server = self_signed_ca("localhost");
    let receiver = tls_receiver(&server, None).await;
    let trusted = TlsConfig {
        ca_pem: Some(server.0.clone()),
        server_name: Some("localhost".into()),
        ..TlsConfig::default()
    };
    expect_delivered(&tls_config(receiver.port, trusted.clone()), &receiver).await;
    receiver.messages.lock().unwrap().clear();
    // The name is still checked.
    let wrong_name = TlsConfig {
        server_name: Some("logs.example.com".into()),
        ..trusted.clone()
    };
    expect_refused(&tls_config(receiver.port, wrong_name), &receiver).await;
    // Another self-signed CA certificate for the same name is not trusted.
    let impostor = self_signed_ca("localhost");
    let other = TlsConfig {
        ca_pem: Some(impostor.0),
        ..trusted
    };
    expect_refused(&tls_config(receiver.port, other), &receiver).await;
}
