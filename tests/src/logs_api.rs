//! sluice's logs API in a test: the operator's aggregated API served in-process on this host's
//! non-loopback address, registered with the harness's API server as the APIService
//! `v1alpha1.logs.sluice.dev` behind a Service and an EndpointSlice (the harness proxies to an
//! endpoint's address itself), and the collectors' query addresses on their Leases.
//!
//! Invariants: the API stops when the [`LogsApi`] drops; the serving certificate is for the
//! Service's name, signed by a CA of the test's own.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Result;
use base64::Engine as _;
use k8s_openapi::{
    api::{core::v1::Service, discovery::v1::EndpointSlice},
    kube_aggregator::pkg::apis::apiregistration::v1::APIService,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use serde_json::json;
use sluice_api::query::ADDRESS_ANNOTATION;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{
    kube::{KubeRig, OPERATOR_USER},
    support::{Missing, wait_until},
};

const MANAGER: &str = "sluice-tests";

/// The operator's logs API, running and registered.
pub struct LogsApi {
    /// Where it listens (this host's address).
    pub address: SocketAddr,
    /// The CA of its serving certificate (PEM).
    pub ca_pem: String,
    /// The name its certificate is for (`sluice-logs-api.<ns>.svc`).
    pub server_name: String,
    _stop: DropGuard,
}

impl LogsApi {
    /// Serve the logs API as the operator's identity with the query `token`, the collectors
    /// asked through `query_client` (see [`QueryPki::query_client`]), register it, and wait
    /// until the API server reports it Available.
    pub fn start(
        kube: &KubeRig,
        host: IpAddr,
        token: &str,
        query_client: sluice_operator::logs::QueryClient,
    ) -> Result<Self> {
        let server_name = format!("sluice-logs-api.{}.svc", kube.system);
        let (ca_pem, cert, key) = serving_cert(&server_name)?;
        let settings = sluice_operator::logs_api::ApiSettings {
            listen: (host, 0).into(),
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
            namespace: kube.system.clone(),
            token: token.into(),
            query_client,
            // Often, so a test sees a changed requestheader CA soon.
            front_proxy_refresh: Duration::from_secs(1),
            // The collectors of these tests are host processes, not pods.
            collectors_are_pods: false,
        };
        let stop = CancellationToken::new();
        let serving = stop.clone();
        let (address, _) = kube.rt.block_on(async {
            let client = kube
                .harness
                .client_as(OPERATOR_USER, &["system:serviceaccounts"])
                .await?;
            anyhow::Ok(sluice_operator::logs_api::serve(client, settings, serving).await?)
        })?;
        let admin = kube.admin()?;
        kube.rt
            .block_on(register(&admin, &kube.system, host, address.port(), &ca_pem))?;
        wait_until(
            "the APIService v1alpha1.logs.sluice.dev to be Available",
            Duration::from_secs(120),
            || available(kube).filter(|(s, _)| s == "True"),
            || format!("{:?}", available(kube)),
        )?;
        Ok(Self {
            address,
            ca_pem,
            server_name,
            _stop: stop.drop_guard(),
        })
    }
}

/// This host's address on its default route: Endpoints may not be loopback, and the API server
/// must reach the operator at it.
pub fn host_address() -> Result<IpAddr, Missing> {
    let probe = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("198.51.100.1:9").map(|()| s))
        .and_then(|s| s.local_addr())
        .map_err(|e| Missing::new("a non-loopback host address", format!("no default route: {e}")))?;
    let ip = probe.ip();
    if ip.is_loopback() || ip.is_unspecified() {
        return Err(Missing::new("a non-loopback host address", format!("only {ip}")));
    }
    Ok(ip)
}

/// A new CA named `name`: (certificate PEM, key PEM).
pub fn certificate_authority(name: &str) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let key_pem = key.serialize_pem();
    let ca = ca_issuer(name, key)?;
    Ok((ca.pem(), key_pem))
}

fn ca_issuer(name: &str, key: KeyPair) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    Ok(CertifiedIssuer::self_signed(params, key)?)
}

/// A CA and a serving certificate for the logs API's Service name: (CA PEM, cert PEM, key PEM).
pub fn serving_cert(service_name: &str) -> Result<(String, String, String)> {
    let ca = ca_issuer("sluice-logs-api-ca", KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(vec![service_name.to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, service_name);
    let cert = params.signed_by(&key, &ca)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

/// A certificate for `name` (its common name, and its DNS name unless `client`) signed by the CA
/// `ca_cert`/`ca_key` (PEM), for a TLS client or a server: (certificate PEM, key PEM).
pub fn leaf_cert(ca_cert: &str, ca_key: &str, name: &str, client: bool) -> Result<(String, String)> {
    let ca = rcgen::Issuer::from_ca_cert_pem(ca_cert, KeyPair::from_pem(ca_key)?)?;
    let key = KeyPair::generate()?;
    let sans = if client { Vec::new() } else { vec![name.to_owned()] };
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![if client {
        rcgen::ExtendedKeyUsagePurpose::ClientAuth
    } else {
        rcgen::ExtendedKeyUsagePurpose::ServerAuth
    }];
    let cert = params.signed_by(&key, &ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The mutual TLS of the collectors' query API, as the chart sets it up: one CA signing the
/// collectors' serving certificate (for [`sluice_api::query_tls::DEFAULT_SERVER_NAME`]) and the
/// operator's client certificate, written as PEM files into a directory of the test's.
pub struct QueryPki {
    /// The CA certificate (PEM).
    pub ca_pem: String,
    /// The CA's file.
    pub ca: PathBuf,
    /// The collectors' serving certificate and key files.
    pub collector: (PathBuf, PathBuf),
    /// The operator's client certificate and key (PEM).
    pub operator_pem: (String, String),
    /// Their files.
    pub operator: (PathBuf, PathBuf),
}

impl QueryPki {
    /// A new CA and both certificates, in `dir`.
    pub fn create(dir: &Path) -> Result<Self> {
        let (ca_pem, ca_key) = certificate_authority("sluice-query-ca")?;
        let write = |name: &str, pem: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            std::fs::write(&path, pem)?;
            Ok(path)
        };
        let serving = leaf_cert(
            &ca_pem,
            &ca_key,
            sluice_api::query_tls::DEFAULT_SERVER_NAME,
            false,
        )?;
        let client = leaf_cert(&ca_pem, &ca_key, "sluice-operator", true)?;
        Ok(Self {
            ca: write("query-ca.crt", &ca_pem)?,
            collector: (
                write("query-collector.crt", &serving.0)?,
                write("query-collector.key", &serving.1)?,
            ),
            operator: (
                write("query-operator.crt", &client.0)?,
                write("query-operator.key", &client.1)?,
            ),
            operator_pem: client,
            ca_pem,
        })
    }

    /// The collector's flags that serve its query API over mutual TLS.
    pub fn collector_args(&self) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--query-tls-cert".into(),
            path(&self.collector.0),
            "--query-tls-key".into(),
            path(&self.collector.1),
            "--query-client-ca".into(),
            path(&self.ca),
        ]
    }

    /// The operator's client of the collectors' query APIs over mutual TLS.
    pub fn query_client(&self) -> Result<sluice_operator::logs::QueryClient> {
        let config = sluice_api::query_tls::client_config(&self.ca, &self.operator.0, &self.operator.1)
            .map_err(anyhow::Error::msg)?;
        let name = sluice_api::query_tls::server_name(sluice_api::query_tls::DEFAULT_SERVER_NAME)
            .map_err(anyhow::Error::msg)?;
        Ok(sluice_operator::logs::QueryClient::tls(config, name))
    }
}

/// Register the operator at `address:port` as the APIService `v1alpha1.logs.sluice.dev`, behind
/// a Service and an EndpointSlice in `namespace`, trusted through `ca_pem`.
pub async fn register(
    client: &Client,
    namespace: &str,
    address: IpAddr,
    port: u16,
    ca_pem: &str,
) -> Result<()> {
    let params = PatchParams::apply(MANAGER).force();
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "sluice-logs-api", "namespace": namespace},
        "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port, "protocol": "TCP"}]}});
    Api::<Service>::namespaced(client.clone(), namespace)
        .patch("sluice-logs-api", &params, &Patch::Apply(&service))
        .await?;
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "sluice-logs-api-host", "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": "sluice-logs-api"}},
        "addressType": if address.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [address.to_string()], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
    Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .patch("sluice-logs-api-host", &params, &Patch::Apply(&slice))
        .await?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let api_service = json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1alpha1.logs.sluice.dev"},
        "spec": {"group": "logs.sluice.dev", "version": "v1alpha1", "caBundle": b64,
                 "groupPriorityMinimum": 1000, "versionPriority": 15,
                 "service": {"namespace": namespace, "name": "sluice-logs-api", "port": 443}}});
    Api::<APIService>::all(client.clone())
        .patch("v1alpha1.logs.sluice.dev", &params, &Patch::Apply(&api_service))
        .await?;
    Ok(())
}

/// The APIService's `Available` condition as `(status, message)`.
pub fn available(kube: &KubeRig) -> Option<(String, String)> {
    let client = kube.admin().ok()?;
    let got = kube
        .rt
        .block_on(Api::<APIService>::all(client).get("v1alpha1.logs.sluice.dev"))
        .ok()?;
    got.status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Available")
        .map(|c| (c.status, c.message.unwrap_or_default()))
}

/// The query address a collector publishes on its node Lease.
pub fn query_address(kube: &KubeRig, node: &str) -> Option<String> {
    let lease = kube.lease(node).ok()??;
    lease.metadata.annotations?.get(ADDRESS_ANNOTATION).cloned()
}
