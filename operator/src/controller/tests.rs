//! The leader's pass without a cluster: watch events in, API writes out, against the recording
//! [`FakeCluster`]. Time is tokio's, paused where a test moves it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{events::EventType, watcher};
use sluice_api::{
    NodeConfig,
    crd::{
        DrainCredentials, HttpSettings, LogBinding, LogBindingStatus, LogDrain, LogDrainStatus,
        condition::{DELIVERING, READY, delivering, reason},
    },
};

use super::{
    watch::{ResourceEvent, WatchEvent},
    *,
};
use crate::{
    Settings,
    fixtures::*,
    reconcile::cluster::Notice,
    world::{ObjKey, SlimPod},
};

const NS: &str = "shop";

fn key(name: &str) -> ObjKey {
    ObjKey::new(NS, name)
}

/// A leader over a [`FakeCluster`], its fence open for a day unless a test closes it.
struct Fixture {
    leader: Leader,
    fake: Arc<FakeCluster>,
}

impl Fixture {
    fn new(settings: Settings, fake: Arc<FakeCluster>) -> Self {
        let ctx = offline_context(settings);
        ctx.fence.extend(Instant::now() + Duration::from_secs(24 * 3600));
        let hashes = fake.stored_hashes();
        // Drains, bindings, pods and collector Leases: one watch each.
        let leader = Leader::new(ctx, fake.cluster(), hashes, 4);
        Self { leader, fake }
    }

    fn open() -> Self {
        Self::new(Settings::new("sluice-system", "operator-0"), Arc::default())
    }

    fn send(&mut self, event: ResourceEvent) {
        self.leader.apply(Ok(WatchEvent { scope: None, event }));
    }

    /// Every watch lists once (all namespaces), showing these objects.
    fn list(
        &mut self,
        drains: Vec<LogDrain>,
        bindings: Vec<LogBinding>,
        pods: Vec<SlimPod>,
        leases: Vec<Lease>,
    ) {
        fn listing<K>(objects: Vec<K>) -> Vec<watcher::Event<K>> {
            let shown = objects.into_iter().map(watcher::Event::InitApply);
            std::iter::once(watcher::Event::Init)
                .chain(shown)
                .chain([watcher::Event::InitDone])
                .collect()
        }
        for event in listing(drains) {
            self.send(ResourceEvent::Drain(Box::new(event)));
        }
        for event in listing(bindings) {
            self.send(ResourceEvent::Binding(Box::new(event)));
        }
        for event in listing(pods) {
            self.send(ResourceEvent::Pod(Box::new(event)));
        }
        for event in listing(leases) {
            self.send(ResourceEvent::Lease(Box::new(event)));
        }
        assert!(self.leader.relist.complete(), "every watch has listed");
    }

    /// Every watch lists once: `drains`, binding `web` (app=web → `uses`), pod `web-1` on node-a.
    fn list_web_1(&mut self, drains: Vec<LogDrain>, uses: &[&str]) {
        let pod = slim_pod(NS, "web-1", "web", "node-a", &[("app", "containerd://a1")]);
        self.list(
            drains,
            vec![binding(NS, "web", "web", uses)],
            vec![pod],
            Vec::new(),
        );
    }

    /// Run passes and complete their writes until nothing is left to write; the calls made.
    async fn settle(&mut self) -> Vec<Call> {
        loop {
            self.leader.pass().await;
            if self.leader.inflight.is_empty() {
                return self.fake.take();
            }
            let done = self.leader.inflight.next().await;
            self.leader.finish(done);
        }
    }
}

/// The shop: drain `logs`, binding `web` (app=web → logs), web pods on node-a and node-b, a db pod
/// on node-c.
fn shop(fixture: &mut Fixture) {
    fixture.list(
        vec![drain(NS, "logs", "syslog://logs.example:514")],
        vec![binding(NS, "web", "web", &["logs"])],
        vec![
            slim_pod(NS, "web-1", "web", "node-a", &[("app", "containerd://a1")]),
            slim_pod(NS, "web-2", "web", "node-b", &[("app", "containerd://b1")]),
            slim_pod(NS, "db-1", "db", "node-c", &[("db", "containerd://c1")]),
        ],
        Vec::new(),
    );
}

/// node → config written (`None`: deleted), of the node config calls.
fn node_configs(calls: &[Call]) -> BTreeMap<String, Option<NodeConfig>> {
    calls
        .iter()
        .filter_map(|call| match call {
            Call::NodeConfig { node, config } => Some((node.clone(), config.clone())),
            _ => None,
        })
        .collect()
}

/// `(pod, drains)` of each container entry of a config.
fn entries(config: &NodeConfig) -> Vec<(&str, Vec<String>)> {
    config
        .containers
        .iter()
        .map(|c| (c.pod.as_str(), c.drains.clone()))
        .collect()
}

fn drain_statuses<'a>(calls: &'a [Call], name: &str) -> Vec<&'a LogDrainStatus> {
    calls
        .iter()
        .filter_map(|call| match call {
            Call::DrainStatus { drain, status } if *drain == key(name) => Some(status),
            _ => None,
        })
        .collect()
}

fn binding_statuses<'a>(calls: &'a [Call], name: &str) -> Vec<&'a LogBindingStatus> {
    calls
        .iter()
        .filter_map(|call| match call {
            Call::BindingStatus { binding, status } if *binding == key(name) => Some(status),
            _ => None,
        })
        .collect()
}

fn events(calls: &[Call]) -> Vec<(&str, &Notice)> {
    calls
        .iter()
        .filter_map(|call| match call {
            Call::Event { object, notice } => Some((object.name.as_str(), notice)),
            _ => None,
        })
        .collect()
}

/// `(status, reason)` of a condition type.
fn condition<'a>(
    conditions: &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> (&'a str, &'a str) {
    let found = conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("condition present");
    (found.status.as_str(), found.reason.as_str())
}

#[tokio::test]
async fn a_drain_and_a_binding_render_configs_for_exactly_the_bound_nodes() {
    let mut fixture = Fixture::open();
    shop(&mut fixture);
    let calls = fixture.settle().await;

    let configs = node_configs(&calls);
    assert_eq!(configs.keys().collect::<Vec<_>>(), ["node-a", "node-b"]);
    let a = configs["node-a"].as_ref().expect("node-a has a config");
    assert_eq!(entries(a), [("web-1", vec!["shop-logs".to_owned()])]);
    assert_eq!(a.node.as_deref(), Some("node-a"));
    let b = configs["node-b"].as_ref().expect("node-b has a config");
    assert_eq!(entries(b), [("web-2", vec!["shop-logs".to_owned()])]);
    let drain = drain_statuses(&calls, "logs");
    assert_eq!(drain.len(), 1);
    assert_eq!(condition(&drain[0].conditions, READY), ("True", reason::RESOLVED));
    assert_eq!(
        (drain[0].bindings, drain[0].pods, drain[0].nodes),
        (Some(1), Some(2), Some(2))
    );
    let binding = binding_statuses(&calls, "web");
    assert_eq!(binding.len(), 1);
    assert_eq!(binding[0].matched_pods, 2);
    assert!(events(&calls).is_empty(), "nothing failed: {calls:?}");
    assert!(fixture.leader.ctx.health.is_ready(), "the first pass is done");

    // A new leader over the same Secrets, seeing the same objects: no node config is written.
    let mut next = Fixture::new(
        Settings::new("sluice-system", "operator-1"),
        FakeCluster::with_stored(fixture.fake.stored_hashes()),
    );
    shop(&mut next);
    assert_eq!(node_configs(&next.settle().await), BTreeMap::new());
}

#[tokio::test]
async fn a_binding_change_moves_the_config_to_the_nodes_it_now_selects() {
    let mut fixture = Fixture::open();
    shop(&mut fixture);
    fixture.settle().await;

    let mut to_db = binding(NS, "web", "db", &["logs"]);
    to_db.metadata.generation = Some(2);
    fixture.send(ResourceEvent::Binding(Box::new(watcher::Event::Apply(
        to_db.clone(),
    ))));
    let calls = fixture.settle().await;
    let configs = node_configs(&calls);
    assert_eq!(configs.keys().collect::<Vec<_>>(), ["node-a", "node-b", "node-c"]);
    assert_eq!(
        configs["node-a"], None,
        "node-a is no longer bound: its Secret goes"
    );
    assert_eq!(configs["node-b"], None);
    let c = configs["node-c"].as_ref().expect("node-c is bound now");
    assert_eq!(entries(c), [("db-1", vec!["shop-logs".to_owned()])]);

    // Only stderr: node-c's config changes, and nothing else is written for it.
    to_db.spec.streams = vec![sluice_api::crd::BindingStream::Stderr];
    fixture.send(ResourceEvent::Binding(Box::new(watcher::Event::Apply(to_db))));
    let configs = node_configs(&fixture.settle().await);
    assert_eq!(configs.keys().collect::<Vec<_>>(), ["node-c"]);
    let c = configs["node-c"].as_ref().expect("still bound");
    assert_eq!(c.containers[0].streams, [sluice_api::node_config::Stream::Stderr]);
}

#[tokio::test]
async fn an_invalid_spec_is_reported_and_never_rendered() {
    let mut fixture = Fixture::open();
    fixture.list_web_1(vec![drain(NS, "logs", "ftp://logs.example:21")], &["logs"]);
    let calls = fixture.settle().await;
    assert_eq!(node_configs(&calls), BTreeMap::new(), "{calls:?}");
    let drain = drain_statuses(&calls, "logs");
    assert_eq!(
        condition(&drain[0].conditions, READY),
        ("False", reason::INVALID_SPEC)
    );
    let binding = binding_statuses(&calls, "web");
    assert_eq!(
        condition(&binding[0].conditions, READY),
        ("False", reason::DRAIN_NOT_READY)
    );
    let warnings: Vec<(&str, &str)> = events(&calls)
        .into_iter()
        .map(|(object, notice)| (object, notice.reason.as_str()))
        .collect();
    assert_eq!(
        warnings,
        [("logs", reason::INVALID_SPEC), ("web", reason::DRAIN_NOT_READY)]
    );
}

#[tokio::test]
async fn a_secret_that_has_not_opted_in_is_not_used_until_it_does() {
    let mut fixture = Fixture::open();
    let mut http = drain(NS, "logs", "https://ingest.example/v1");
    http.spec.credentials = Some(DrainCredentials {
        secret_name: "creds".into(),
        bearer_token_key: Some("token".into()),
        username_key: None,
        password_key: None,
    });
    fixture
        .fake
        .put_secret(secret(NS, "creds", false, &[("token", "s3cret")]));
    fixture.list_web_1(vec![http], &["logs"]);
    let calls = fixture.settle().await;
    assert_eq!(node_configs(&calls), BTreeMap::new());
    let drain = drain_statuses(&calls, "logs");
    assert_eq!(
        condition(&drain[0].conditions, READY),
        ("False", reason::SECRET_NOT_PERMITTED)
    );
    let (object, notice) = events(&calls)[0];
    assert_eq!(
        (object, notice.severity, notice.reason.as_str()),
        ("logs", EventType::Warning, reason::SECRET_NOT_PERMITTED)
    );
    assert!(!format!("{calls:?}").contains("s3cret"), "no Secret value leaves");

    // Labelled: the retry of failing drains' Secrets finds it.
    fixture
        .fake
        .put_secret(secret(NS, "creds", true, &[("token", "s3cret")]));
    fixture.leader.resync(true).await;
    let calls = fixture.settle().await;
    let configs = node_configs(&calls);
    let a = configs["node-a"].as_ref().expect("node-a has a config now");
    let token = a.drains[0].http.as_ref().and_then(|h| h.bearer_token.as_ref());
    assert_eq!(token.map(|t| t.expose()), Some("s3cret"));
    let drain = drain_statuses(&calls, "logs");
    assert_eq!(condition(&drain[0].conditions, READY), ("True", reason::RESOLVED));
}

#[tokio::test]
async fn a_node_config_over_its_limit_leaves_out_the_largest_drain() {
    let mut settings = Settings::new("sluice-system", "operator-0");
    settings.node_config_limit = 4096;
    let mut fixture = Fixture::new(settings, Arc::default());
    let mut big = drain(NS, "big", "https://in.example/v1");
    big.spec.http = Some(HttpSettings {
        headers: (0..8).map(|i| (format!("X-{i}"), "p".repeat(1000))).collect(),
        ..HttpSettings::default()
    });
    fixture.list_web_1(
        vec![drain(NS, "logs", "syslog://logs.example:514"), big],
        &["logs", "big"],
    );
    let calls = fixture.settle().await;
    let configs = node_configs(&calls);
    let a = configs["node-a"].as_ref().expect("the rest still renders");
    let names: Vec<&str> = a.drains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["shop-logs"]);
    let big = drain_statuses(&calls, "big");
    assert_eq!(
        condition(&big.last().expect("written").conditions, READY),
        ("False", reason::CONFIG_TOO_LARGE)
    );
    let logs = drain_statuses(&calls, "logs");
    assert_eq!(
        condition(&logs.last().expect("written").conditions, READY),
        ("True", reason::RESOLVED)
    );
}

#[tokio::test]
async fn node_coverage_follows_the_collector_leases() {
    let mut fixture = Fixture::open();
    fixture.list_web_1(vec![drain(NS, "logs", "syslog://logs.example:514")], &["logs"]);
    let delivering = |calls: &[Call]| -> Vec<(String, String)> {
        drain_statuses(calls, "logs")
            .iter()
            .map(|s| {
                let (status, reason) = condition(&s.conditions, DELIVERING);
                (status.to_owned(), reason.to_owned())
            })
            .collect()
    };
    let calls = fixture.settle().await;
    assert_eq!(
        delivering(&calls),
        [("False".to_owned(), delivering::NODE_NOT_COVERED.to_owned())]
    );

    let lease = collector_lease("node-a");
    fixture.send(ResourceEvent::Lease(Box::new(watcher::Event::Apply(
        lease.clone(),
    ))));
    let calls = fixture.settle().await;
    assert_eq!(
        delivering(&calls),
        [("True".to_owned(), delivering::DELIVERING.to_owned())]
    );
    assert_eq!(node_configs(&calls), BTreeMap::new(), "coverage is status only");

    fixture.send(ResourceEvent::Lease(Box::new(watcher::Event::Delete(lease))));
    assert_eq!(
        delivering(&fixture.settle().await),
        [("False".to_owned(), delivering::NODE_NOT_COVERED.to_owned())]
    );
}

#[tokio::test(start_paused = true)]
async fn figures_only_status_writes_are_spaced_by_the_count_interval() {
    let mut fixture = Fixture::open();
    fixture.list_web_1(vec![drain(NS, "logs", "syslog://logs.example:514")], &["logs"]);
    fixture.settle().await;
    let interval = fixture.leader.ctx.settings.status_count_interval;
    assert_eq!(interval, Duration::from_secs(15));

    // A pod more at 1 s and at 10 s: node-a's config is written at once each time; the counts in
    // the statuses wait for the interval since the last status write.
    let mut pods = 1;
    let mut add_pod = async |fixture: &mut Fixture, at: u64| -> Vec<Call> {
        tokio::time::advance(Duration::from_secs(at)).await;
        pods += 1;
        let name = format!("web-{pods}");
        let pod = slim_pod(
            NS,
            &name,
            "web",
            "node-a",
            &[("app", &format!("containerd://{pods}"))],
        );
        fixture.send(ResourceEvent::Pod(Box::new(watcher::Event::Apply(pod))));
        let mut calls = fixture.settle().await;
        fixture.leader.refresh_counts();
        calls.extend(fixture.settle().await);
        calls
    };
    let calls = add_pod(&mut fixture, 1).await;
    assert_eq!(node_configs(&calls).keys().collect::<Vec<_>>(), ["node-a"]);
    assert_eq!(calls.len(), 1, "only the node config: {calls:?}");
    let calls = add_pod(&mut fixture, 9).await;
    assert_eq!(calls.len(), 1, "only the node config: {calls:?}");

    // At 15 s the deferred writes are due: one per status, with the latest figures.
    tokio::time::advance(Duration::from_secs(4)).await;
    fixture.leader.retry_due();
    assert!(fixture.settle().await.is_empty(), "not due before 15 s");
    tokio::time::advance(Duration::from_secs(1)).await;
    fixture.leader.retry_due();
    let calls = fixture.settle().await;
    let drain = drain_statuses(&calls, "logs");
    assert_eq!(drain.iter().map(|s| s.pods).collect::<Vec<_>>(), [Some(3)]);
    let binding = binding_statuses(&calls, "web");
    assert_eq!(binding.iter().map(|s| s.matched_pods).collect::<Vec<_>>(), [3]);
    assert_eq!(calls.len(), 2, "{calls:?}");

    // Another pod right after: its counts wait for 30 s.
    let calls = add_pod(&mut fixture, 0).await;
    assert_eq!(calls.len(), 1, "only the node config: {calls:?}");
    tokio::time::advance(interval - Duration::from_millis(1)).await;
    fixture.leader.retry_due();
    assert!(fixture.settle().await.is_empty());
    tokio::time::advance(Duration::from_millis(1)).await;
    fixture.leader.retry_due();
    let calls = fixture.settle().await;
    assert_eq!(
        drain_statuses(&calls, "logs")
            .iter()
            .map(|s| s.pods)
            .collect::<Vec<_>>(),
        [Some(4)]
    );

    // A verdict change is written at once, whatever the interval.
    fixture.send(ResourceEvent::Lease(Box::new(watcher::Event::Apply(
        collector_lease("node-a"),
    ))));
    let calls = fixture.settle().await;
    assert_eq!(drain_statuses(&calls, "logs").len(), 1);
}

#[tokio::test]
async fn a_config_changed_behind_the_leader_is_written_again_on_the_recheck() {
    let mut fixture = Fixture::open();
    shop(&mut fixture);
    let written = node_configs(&fixture.settle().await);
    fixture.fake.overwrite_stored("node-a", "hash-of-a-stale-config");
    fixture.leader.recheck_stored().await;
    let rewritten = node_configs(&fixture.settle().await);
    assert_eq!(rewritten.keys().collect::<Vec<_>>(), ["node-a"]);
    assert_eq!(
        rewritten["node-a"], written["node-a"],
        "the same config as before"
    );
    assert_eq!(fixture.fake.stored_hashes(), fixture.leader.hashes);
}

#[tokio::test(start_paused = true)]
async fn a_refused_node_config_write_is_retried_after_its_backoff() {
    let mut fixture = Fixture::open();
    fixture.fake.refuse_writes("node-a", 1);
    shop(&mut fixture);
    let calls = fixture.settle().await;
    assert_eq!(node_configs(&calls).keys().collect::<Vec<_>>(), ["node-b"]);
    let errors = &fixture.leader.ctx.metrics.errors;
    assert_eq!(errors.with_label_values(&["node_config", "ApiError"]).get(), 1);

    // The first backoff is 0.5 s, jittered by a quarter either way.
    tokio::time::advance(Duration::from_millis(370)).await;
    fixture.leader.retry_due();
    assert_eq!(fixture.settle().await, [], "not due yet");
    tokio::time::advance(Duration::from_millis(260)).await;
    fixture.leader.retry_due();
    let calls = fixture.settle().await;
    assert_eq!(node_configs(&calls).keys().collect::<Vec<_>>(), ["node-a"]);
    assert_eq!(fixture.fake.stored_hashes(), fixture.leader.hashes);
}

#[tokio::test]
async fn a_deposed_leader_writes_nothing() {
    let mut fixture = Fixture::open();
    fixture.leader.ctx.fence.close();
    shop(&mut fixture);
    assert_eq!(fixture.settle().await, [], "no write without the Lease");

    // Leading, then deposed: what changes after is not written.
    let mut fixture = Fixture::open();
    shop(&mut fixture);
    assert!(!fixture.settle().await.is_empty());
    fixture.leader.ctx.fence.close();
    let to_db = binding(NS, "web", "db", &["logs"]);
    fixture.send(ResourceEvent::Binding(Box::new(watcher::Event::Apply(to_db))));
    fixture.leader.resync(false).await;
    assert_eq!(fixture.settle().await, []);
    let refused = fixture
        .leader
        .ctx
        .metrics
        .errors
        .with_label_values(&["node_config", "NotLeader"])
        .get();
    assert_eq!(refused, 3, "node-a, node-b and node-c were each refused once");
}
