//! Rendering tables: which nodes get which containers and drains, and what never leaks.

use std::collections::BTreeMap;

use sluice_api::{
    NodeConfig,
    crd::{BindingStream, DrainCredentials, DrainTls, SecretKeyRef, condition::reason},
    node_config::Stream,
};

use super::*;
use crate::{
    fixtures::*,
    resolve::{SecretData, resolve_drain},
    world::World,
};

fn world_with(pods: Vec<crate::world::PodInfo>) -> World {
    let mut world = World::default();
    for p in pods {
        let key = p.key();
        world.upsert_pod(Some(p), key);
    }
    world
}

fn ids(config: &NodeConfig) -> Vec<(&str, &str, Vec<String>)> {
    config
        .containers
        .iter()
        .map(|c| (c.pod.as_str(), c.id.as_str(), c.drains.clone()))
        .collect()
}

#[test]
fn bindings_over_two_nodes_render_exactly_those_nodes() {
    let mut world = world_with(vec![
        pod(
            "shop",
            "web-1",
            "web",
            "node-a",
            &[("app", "containerd://aaa"), ("sidecar", "containerd://sss")],
        ),
        pod("shop", "web-2", "web", "node-b", &[("app", "docker://bbb")]),
        pod("shop", "db-1", "db", "node-b", &[("db", "containerd://ddd")]),
        pod(
            "shop",
            "cache-1",
            "cache",
            "node-c",
            &[("cache", "containerd://ccc")],
        ),
    ]);
    world.set_drain(
        ObjKey::new("shop", "logs"),
        Some(drain("shop", "logs", "syslog://logs.example:514")),
    );
    world.set_drain(
        ObjKey::new("shop", "audit"),
        Some(drain("shop", "audit", "https://audit.example/in")),
    );
    world.set_binding(
        ObjKey::new("shop", "web"),
        Some(binding("shop", "web", "web", &["logs"])),
    );
    world.set_binding(
        ObjKey::new("shop", "db"),
        Some(binding("shop", "db", "db", &["logs", "audit"])),
    );

    let a = render_node(&world, "node-a").expect("node-a has bound containers");
    assert_eq!(
        ids(&a),
        vec![
            ("web-1", "containerd://aaa", vec!["shop-logs".to_owned()]),
            ("web-1", "containerd://sss", vec!["shop-logs".to_owned()]),
        ]
    );
    assert_eq!(
        a.drains.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["shop-logs"]
    );
    assert_eq!(a.node.as_deref(), Some("node-a"));

    let b = render_node(&world, "node-b").expect("node-b has bound containers");
    assert_eq!(
        ids(&b),
        vec![
            (
                "db-1",
                "containerd://ddd",
                vec!["shop-audit".to_owned(), "shop-logs".to_owned()]
            ),
            ("web-2", "docker://bbb", vec!["shop-logs".to_owned()]),
        ]
    );
    assert_eq!(
        b.drains.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["shop-audit", "shop-logs"]
    );
    assert!(
        render_node(&world, "node-c").is_none(),
        "nothing on node-c is bound"
    );
    assert!(render_node(&world, "node-z").is_none(), "node-z has no pods");
    // What the collector will read back is valid and identical.
    let yaml = b.to_yaml().expect("renders");
    assert_eq!(NodeConfig::from_yaml(&yaml).expect("the collector accepts it"), b);
}

#[test]
fn a_binding_reaches_only_its_own_namespace() {
    let mut world = world_with(vec![
        pod("team-a", "web", "web", "node-a", &[("app", "containerd://a1")]),
        pod("team-b", "web", "web", "node-a", &[("app", "containerd://b1")]),
    ]);
    // team-b has the drain; team-a's binding names it, and selects `app=web` (which team-b's pod
    // also carries).
    world.set_drain(
        ObjKey::new("team-b", "logs"),
        Some(drain("team-b", "logs", "syslog://b.example:514")),
    );
    world.set_binding(
        ObjKey::new("team-a", "web"),
        Some(binding("team-a", "web", "web", &["logs"])),
    );
    assert!(
        render_node(&world, "node-a").is_none(),
        "team-a's binding must not use team-b's drain"
    );
    world.set_drain(
        ObjKey::new("team-a", "logs"),
        Some(drain("team-a", "logs", "syslog://a.example:514")),
    );
    let config = render_node(&world, "node-a").expect("now team-a has its own drain");
    assert_eq!(
        ids(&config),
        vec![("web", "containerd://a1", vec!["team-a-logs".to_owned()])]
    );
    assert_eq!(config.drains[0].url, "syslog://a.example:514");
}

#[test]
fn containers_and_streams_filters_apply() {
    let mut world = world_with(vec![pod(
        "ns",
        "p",
        "web",
        "n",
        &[("app", "docker://1"), ("proxy", "docker://2")],
    )]);
    world.set_drain(
        ObjKey::new("ns", "d"),
        Some(drain("ns", "d", "syslog-udp://h:514")),
    );
    let mut b = binding("ns", "b", "web", &["d"]);
    b.spec.containers = vec!["proxy".into()];
    b.spec.streams = vec![BindingStream::Stderr];
    world.set_binding(ObjKey::new("ns", "b"), Some(b));
    let config = render_node(&world, "n").expect("bound");
    assert_eq!(config.containers.len(), 1);
    assert_eq!(config.containers[0].container, "proxy");
    assert_eq!(config.containers[0].streams, vec![Stream::Stderr]);
}

fn drain_with_credentials(world: &mut World) {
    let mut d = drain("ns", "http", "https://ingest.example/v1");
    d.spec.credentials = Some(DrainCredentials {
        secret_name: "creds".into(),
        bearer_token_key: Some("token".into()),
        username_key: None,
        password_key: None,
    });
    d.spec.tls = Some(DrainTls {
        ca: Some(SecretKeyRef {
            name: "ca".into(),
            key: "ca.crt".into(),
        }),
        ..DrainTls::default()
    });
    world.set_drain(ObjKey::new("ns", "http"), Some(d));
    world.set_binding(ObjKey::new("ns", "b"), Some(binding("ns", "b", "web", &["http"])));
}

/// A real self-signed CA certificate (PEM): the operator parses it as X.509.
fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["ca".to_owned()]).expect("params");
    params.self_signed(&key).expect("self-signed").pem()
}

#[test]
fn drains_resolve_their_secrets_or_say_why_not() {
    let mut world = world_with(vec![pod("ns", "p", "web", "n", &[("app", "docker://1")])]);
    drain_with_credentials(&mut world);
    let d = world.drains[&ObjKey::new("ns", "http")].clone();
    let resolve = |w: &World| resolve_drain(&d, &w.secrets, "x".into());

    assert_eq!(resolve(&world).unwrap_err().reason, reason::SECRET_NOT_FOUND);
    assert!(
        render_node(&world, "n").is_none(),
        "an unresolved drain is left out"
    );

    world.set_secret(ObjKey::new("ns", "creds"), SecretData::NotPermitted);
    world.set_secret(ObjKey::new("ns", "ca"), SecretData::NotPermitted);
    let problem = resolve(&world).unwrap_err();
    assert_eq!(problem.reason, reason::SECRET_NOT_PERMITTED);
    assert!(
        problem
            .message
            .ends_with("kubectl label secret ca -n ns sluice.dev/drain-credentials=true"),
        "{}",
        problem.message
    );
    assert!(render_node(&world, "n").is_none(), "a refused Secret is not used");

    world.set_secret(
        ObjKey::new("ns", "creds"),
        SecretData::Permitted(BTreeMap::from([("token".into(), b"s3cret\n".to_vec())])),
    );
    let ca = ca_pem();
    world.set_secret(
        ObjKey::new("ns", "ca"),
        SecretData::Permitted(BTreeMap::from([("other".into(), ca.as_bytes().to_vec())])),
    );
    let problem = resolve(&world).unwrap_err();
    assert_eq!(problem.reason, reason::SECRET_KEY_NOT_FOUND);
    assert!(problem.message.contains("\"ca.crt\""), "{}", problem.message);

    world.set_secret(
        ObjKey::new("ns", "ca"),
        SecretData::Permitted(BTreeMap::from([("ca.crt".into(), b"not pem".to_vec())])),
    );
    assert_eq!(resolve(&world).unwrap_err().reason, reason::INVALID_CERTIFICATE);

    world.set_secret(
        ObjKey::new("ns", "ca"),
        SecretData::Permitted(BTreeMap::from([("ca.crt".into(), ca.as_bytes().to_vec())])),
    );
    let config = render_node(&world, "n").expect("resolves now");
    let http = config.drains[0].http.as_ref().expect("http options");
    assert_eq!(http.bearer_token.as_ref().map(|t| t.expose()), Some("s3cret"));
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "credentials must not show in Debug output"
    );
}

/// The HTTP delivery policy and the plain-http credentials consent reach the node config; without
/// the consent, credentials over `http://` are refused (the collector would refuse them).
#[test]
fn http_policy_settings_reach_the_node_config() {
    let mut world = world_with(vec![pod("ns", "p", "web", "n", &[("app", "docker://1")])]);
    let mut d = drain("ns", "http", "http://ingest.example/v1");
    d.spec.http = Some(sluice_api::crd::HttpSettings {
        drop_on_status: Some(vec![400, 404]),
        ..Default::default()
    });
    d.spec.credentials = Some(DrainCredentials {
        secret_name: "creds".into(),
        bearer_token_key: Some("token".into()),
        username_key: None,
        password_key: None,
    });
    world.set_secret(
        ObjKey::new("ns", "creds"),
        SecretData::Permitted(BTreeMap::from([("token".into(), b"t".to_vec())])),
    );
    let problem = resolve_drain(&d, &world.secrets, "x".into()).unwrap_err();
    assert!(
        problem.message.contains("allowCredentialsOverHttp"),
        "{}",
        problem.message
    );
    if let Some(http) = d.spec.http.as_mut() {
        http.allow_credentials_over_http = Some(true);
    }
    let config = resolve_drain(&d, &world.secrets, "x".into()).expect("resolves");
    assert_eq!(config.delivery.drop_on_status, [400, 404]);
    assert!(config.http.is_some_and(|h| h.allow_credentials_over_http));
}

#[test]
fn rendering_is_deterministic_whatever_the_insertion_order() {
    let pods = vec![
        pod("ns", "p1", "web", "n", &[("a", "docker://1")]),
        pod("ns", "p2", "web", "n", &[("a", "docker://2")]),
        pod("ns", "p3", "web", "n", &[("a", "docker://3")]),
    ];
    let mut reversed = pods.clone();
    reversed.reverse();
    let render = |pods: Vec<_>| {
        let mut world = world_with(pods);
        world.set_drain(ObjKey::new("ns", "d"), Some(drain("ns", "d", "syslog://h:1")));
        world.set_binding(ObjKey::new("ns", "b1"), Some(binding("ns", "b1", "web", &["d"])));
        world.set_binding(ObjKey::new("ns", "b2"), Some(binding("ns", "b2", "web", &["d"])));
        render_node(&world, "n")
            .expect("bound")
            .to_yaml()
            .expect("renders")
    };
    let (one, two) = (render(pods), render(reversed));
    assert_eq!(one, two);
    assert_eq!(content_hash(&one), content_hash(&two));
    // Two bindings to the same drain give one entry per container, not two.
    assert_eq!(NodeConfig::from_yaml(&one).expect("valid").containers.len(), 3);
}

#[test]
fn node_configs_stay_within_their_limit() {
    let mut world = world_with(vec![
        pod("a", "web", "web", "n", &[("app", "docker://1")]),
        pod("b", "web", "web", "n", &[("app", "docker://2")]),
    ]);
    let ca = ca_pem();
    for ns in ["a", "b"] {
        world.set_secret(
            ObjKey::new(ns, "ca"),
            SecretData::Permitted(BTreeMap::from([("ca.crt".into(), ca.as_bytes().to_vec())])),
        );
        let mut d = drain(ns, "tls", "syslog-tls://logs.example:6514");
        d.spec.tls = Some(DrainTls {
            ca: Some(SecretKeyRef {
                name: "ca".into(),
                key: "ca.crt".into(),
            }),
            ..DrainTls::default()
        });
        world.set_drain(ObjKey::new(ns, "tls"), Some(d));
    }
    let mut big = drain("b", "big", "https://in.example/v1");
    big.spec.http = Some(sluice_api::crd::HttpSettings {
        headers: (0..8).map(|i| (format!("X-{i}"), "p".repeat(1000))).collect(),
        ..Default::default()
    });
    world.set_drain(ObjKey::new("b", "big"), Some(big));
    world.set_binding(
        ObjKey::new("a", "web"),
        Some(binding("a", "web", "web", &["tls"])),
    );
    world.set_binding(
        ObjKey::new("b", "web"),
        Some(binding("b", "web", "web", &["tls", "big"])),
    );

    let whole = render_within(&world, "n", usize::MAX);
    assert!(whole.left_out.is_empty());
    let config = whole.config.expect("bound");
    assert_eq!(config.drains.len(), 3);
    assert_eq!(config.ca_bundles.len(), 1, "one bundle for both tenants");
    let size = config.to_yaml().expect("yaml").len();
    let labels: Vec<_> = config.containers.iter().map(|c| c.labels.len()).collect();
    assert_eq!(labels, [0, 1], "labels only where an HTTP drain emits them");

    let bounded = render_within(&world, "n", size - 1);
    assert_eq!(
        bounded.left_out.keys().collect::<Vec<_>>(),
        [&ObjKey::new("b", "big")],
        "the largest drain goes first, and alone"
    );
    let config = bounded.config.expect("the rest still renders");
    let names: Vec<&str> = config.drains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["a-tls", "b-tls"]);
    assert!(config.containers.iter().all(|c| c.labels.is_empty()));
    let read = NodeConfig::from_yaml(&config.to_yaml().expect("yaml")).expect("the collector accepts it");
    assert!(
        read.drains
            .iter()
            .all(|d| d.tls.as_ref().and_then(|t| t.ca_pem.as_deref()) == Some(ca.as_str()))
    );

    let none = render_within(&world, "n", 10);
    assert!(none.config.is_none() && none.left_out.len() == 3, "{none:?}");
}
