//! Recent lines and follow through the real tail engine (temp dirs written like Docker's
//! json-file driver) and the query API over loopback: exactly the lines written, merged by time
//! across pods of two namespaces, a removed container's lines kept, only the token's holder
//! served, and a follower that never reads does not slow shipping.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "support/engine.rs"]
mod support;

use std::{sync::Arc, time::Duration};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use sluice_api::node_config::Stream;
use sluice_collector::{
    query::{self, QuerySettings, Token},
    recent::{Recent, RecentSettings},
};
use support::*;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "0123456789abcdef0123456789abcdef-test";

struct Api {
    addr: std::net::SocketAddr,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    _stop: tokio_util::sync::DropGuard,
}

impl Api {
    async fn start(recent: Arc<Recent>, max_followers: usize) -> Self {
        let cancel = CancellationToken::new();
        let mut settings = QuerySettings::new(Token::parse(TOKEN).unwrap());
        settings.max_followers = max_followers;
        let (addr, server) = query::serve("127.0.0.1:0".parse().unwrap(), settings, recent, cancel.clone())
            .await
            .unwrap();
        tokio::spawn(server);
        Self {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
            _stop: cancel.drop_guard(),
        }
    }

    async fn get(&self, path: &str, token: Option<&str>) -> hyper::Response<hyper::body::Incoming> {
        let mut request = hyper::Request::get(format!("http://{}{path}", self.addr));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        self.client
            .request(request.body(Empty::new()).unwrap())
            .await
            .unwrap()
    }

    /// `pod/container stream message` of each line a dump returns.
    async fn recent(&self, query: &str) -> Vec<String> {
        let response = self.get(&format!("/v1/recent?{query}"), Some(TOKEN)).await;
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        std::str::from_utf8(&body).unwrap().lines().map(show).collect()
    }
}

fn show(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    if let Some(n) = v.get("lagged") {
        return format!("lagged {n}");
    }
    format!(
        "{}/{} {} {}",
        v["namespace"].as_str().unwrap(),
        v["pod"].as_str().unwrap(),
        v["stream"].as_str().unwrap(),
        v["line"].as_str().unwrap()
    )
}

fn recent_store() -> Arc<Recent> {
    Arc::new(Recent::new(RecentSettings {
        lines_per_container: 10_000,
        ..RecentSettings::default()
    }))
}

/// A container of `namespace`, and what writing `number` lines to it (alternately with `other`, so
/// their times interleave) is expected to show.
fn container(
    node: &Node,
    number: usize,
    namespace: &str,
) -> (DockerContainer, sluice_api::node_config::ContainerConfig) {
    let c = DockerContainer::new(&node.docker_root(), number);
    let mut config = c.config(&["d"]);
    config.namespace = namespace.into();
    (c, config)
}

fn write(
    container: &DockerContainer,
    config: &sluice_api::node_config::ContainerConfig,
    index: usize,
) -> String {
    let stream = if index.is_multiple_of(4) {
        Stream::Stderr
    } else {
        Stream::Stdout
    };
    let message = format!("{}-line-{index}", config.pod);
    container.write(stream, &message);
    format!(
        "{}/{} {} {message}",
        config.namespace,
        config.pod,
        stream.as_str()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn recent_lines_are_exactly_those_written_in_time_order_per_namespace() {
    let node = Node::new();
    let recent = recent_store();
    let mut settings = node.settings();
    settings.recent = Some(Arc::clone(&recent));
    let d = MockDrain::start("d", 64, &node.waker);
    let (a, ca) = container(&node, 1, "shop");
    let (b, cb) = container(&node, 2, "shop");
    let (c, cc) = container(&node, 3, "bank");
    let engine = node.start(settings, routes(&[&d], vec![ca.clone(), cb.clone(), cc.clone()]));
    let (mut shop, mut bank) = (Vec::new(), Vec::new());
    for i in 0..300 {
        shop.push(write(&a, &ca, i));
        shop.push(write(&b, &cb, i));
        bank.push(write(&c, &cc, i));
    }
    wait_for("the drain to get every line", T, || d.count() == 900);
    let api = Api::start(Arc::clone(&recent), 4).await;
    // Written in time order (each record is stamped later than the one before), so the merged
    // dump is exactly the order written.
    assert_eq!(api.recent("namespace=shop").await, shop);
    assert_eq!(api.recent("namespace=bank").await, bank);
    assert_eq!(api.recent("namespace=shop&tail=2").await, shop[shop.len() - 2..]);
    let one_pod = format!("namespace=shop&pod={}", cb.pod);
    let only_b: Vec<String> = shop
        .iter()
        .filter(|l| l.contains(&format!("/{} ", cb.pod)))
        .cloned()
        .collect();
    assert_eq!(api.recent(&one_pod).await, only_b);

    // The container leaves the config (its pod was deleted): its lines are still there.
    recent.retain_bound(&[ca.runtime_id_bare(), cc.runtime_id_bare()].into());
    engine.apply(routes(&[&d], vec![ca.clone(), cc.clone()]));
    assert_eq!(api.recent("namespace=shop").await, shop);

    // Only the token's holder is served.
    for token in [None, Some("wrong"), Some(&TOKEN[..TOKEN.len() - 1])] {
        let response = api.get("/v1/recent?namespace=shop", token).await;
        assert_eq!(response.status(), 401, "{token:?}");
    }
    assert_eq!(api.get("/v1/recent?pod=x", Some(TOKEN)).await.status(), 400);
    graceful_stop(engine, &[&d]);
}

trait BareId {
    fn runtime_id_bare(&self) -> String;
}

impl BareId for sluice_api::node_config::ContainerConfig {
    fn runtime_id_bare(&self) -> String {
        self.id.split_once("://").unwrap().1.to_owned()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_streams_new_lines_and_a_stalled_follower_does_not_slow_shipping() {
    let node = Node::new();
    let recent = Arc::new(Recent::new(RecentSettings {
        follow_buffer: 64,
        ..RecentSettings::default()
    }));
    let mut settings = node.settings();
    settings.recent = Some(Arc::clone(&recent));
    let d = MockDrain::start("d", 64, &node.waker);
    let (a, ca) = container(&node, 1, "shop");
    let (b, cb) = container(&node, 2, "bank");
    let engine = node.start(settings, routes(&[&d], vec![ca.clone(), cb.clone()]));
    let api = Api::start(Arc::clone(&recent), 2).await;

    // A follower that reads: every line of its namespace written after it started, in order.
    let mut follower = api
        .get("/v1/follow?namespace=shop", Some(TOKEN))
        .await
        .into_body();
    // A follower that never reads a byte.
    let stalled = api.get("/v1/follow?namespace=bank", Some(TOKEN)).await;
    assert_eq!(stalled.status(), 200);
    // Both follower slots are taken.
    assert_eq!(
        api.get("/v1/follow?namespace=shop", Some(TOKEN)).await.status(),
        429
    );

    let mut expected = Vec::new();
    for i in 0..40 {
        expected.push(write(&a, &ca, i));
    }
    let mut got = Vec::new();
    let mut pending = String::new();
    while got.len() < expected.len() {
        let frame = tokio::time::timeout(T, follower.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Ok(data) = frame.into_data() {
            pending.push_str(std::str::from_utf8(&data).unwrap());
            while let Some((line, rest)) = pending.split_once('\n') {
                got.push(show(line));
                pending = rest.to_owned();
            }
        }
    }
    assert_eq!(got, expected);

    // 20 000 lines into the stalled follower's namespace: the drain gets every one of them.
    for i in 0..20_000 {
        write(&b, &cb, i);
    }
    wait_for("the drain to get every line past the stalled follower", T, || {
        d.count() == 20_040
    });
    drop(stalled);
    graceful_stop(engine, &[&d]);
}
