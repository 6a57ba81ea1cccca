//! What each change marks dirty: a pod change touches only its node.

use super::*;
use crate::fixtures::*;

fn key(ns: &str, name: &str) -> ObjKey {
    ObjKey::new(ns, name)
}

#[test]
fn a_pod_change_dirties_only_its_node_and_the_counts_of_its_namespace() {
    let mut world = World::default();
    world.set_binding(key("ns", "web"), Some(binding("ns", "web", "web", &["d"])));
    world.set_binding(key("ns", "db"), Some(binding("ns", "db", "db", &["d2"])));
    world.upsert_pod(
        Some(pod("ns", "other", "web", "node-b", &[("c", "docker://9")])),
        key("ns", "other"),
    );

    let dirty = world.upsert_pod(
        Some(pod("ns", "p", "web", "node-a", &[("c", "docker://1")])),
        key("ns", "p"),
    );
    assert_eq!(dirty.nodes, BTreeSet::from(["node-a".to_owned()]));
    assert_eq!(dirty.namespaces, BTreeSet::from(["ns".to_owned()]));
    assert!(
        dirty.bindings.is_empty() && dirty.drains.is_empty(),
        "pods never change conditions"
    );

    // Same pod again: nothing changed, nothing dirty.
    let again = world.upsert_pod(
        Some(pod("ns", "p", "web", "node-a", &[("c", "docker://1")])),
        key("ns", "p"),
    );
    assert!(again.is_empty());

    // Restarted with a new container id: still only its node.
    let restarted = world.upsert_pod(
        Some(pod("ns", "p", "web", "node-a", &[("c", "docker://2")])),
        key("ns", "p"),
    );
    assert_eq!(restarted.nodes, BTreeSet::from(["node-a".to_owned()]));

    // Deleted: its node; the index forgets it.
    let deleted = world.delete_pod(&key("ns", "p"));
    assert_eq!(deleted.nodes, BTreeSet::from(["node-a".to_owned()]));
    assert_eq!(world.pods_on("node-a").count(), 0);
    assert_eq!(world.nodes().collect::<Vec<_>>(), vec!["node-b"]);
}

#[test]
fn a_binding_change_dirties_its_namespace_only_and_status_echoes_do_not() {
    let mut world = World::default();
    world.upsert_pod(
        Some(pod("a", "p", "web", "node-a", &[("c", "docker://1")])),
        key("a", "p"),
    );
    world.upsert_pod(
        Some(pod("b", "p", "web", "node-b", &[("c", "docker://2")])),
        key("b", "p"),
    );
    let dirty = world.set_binding(key("a", "web"), Some(binding("a", "web", "web", &["d"])));
    assert_eq!(dirty.nodes, BTreeSet::from(["node-a".to_owned()]));
    let mut with_status = binding("a", "web", "web", &["d"]);
    with_status.status = Some(Default::default());
    assert!(
        world.set_binding(key("a", "web"), Some(with_status)).is_empty(),
        "a status change is not a change"
    );
}

#[test]
fn a_relist_removes_pods_that_vanished_within_its_scope_only() {
    let mut world = World::default();
    world.upsert_pod(Some(pod("a", "p1", "web", "n1", &[])), key("a", "p1"));
    world.upsert_pod(Some(pod("b", "p2", "web", "n2", &[])), key("b", "p2"));
    let dirty = world.replace_pods(Some("a"), vec![]);
    assert_eq!(dirty.nodes, BTreeSet::from(["n1".to_owned()]));
    assert!(
        world.pods.contains_key(&key("b", "p2")),
        "another scope's pod stays"
    );
}

#[test]
fn drains_are_resolved_once_per_change_of_the_drain_or_its_secret() {
    let mut world = World::default();
    world.upsert_pod(
        Some(pod("a", "p", "web", "n1", &[("c", "docker://1")])),
        key("a", "p"),
    );
    let mut d = drain("a", "d", "https://ingest.example/v1");
    d.spec.credentials = Some(sluice_api::crd::DrainCredentials {
        secret_name: "creds".into(),
        bearer_token_key: Some("token".into()),
        username_key: None,
        password_key: None,
    });
    world.set_drain(key("a", "d"), Some(d));
    let reason = |w: &World| {
        w.resolved(&key("a", "d"))
            .map(|r| r.as_ref().err().map(|p| p.reason))
    };
    assert_eq!(reason(&world), Some(Some("SecretNotFound")));

    let dirty = world.set_secret(
        key("a", "creds"),
        SecretData::Permitted(BTreeMap::from([("token".to_owned(), b"t".to_vec())])),
    );
    assert_eq!(
        reason(&world),
        Some(None),
        "the Secret's arrival resolves the drain"
    );
    assert_eq!(dirty.nodes, BTreeSet::from(["n1".to_owned()]));
    assert!(
        world.refresh_resolved().is_empty() && world.refresh_resolved().nodes.is_empty(),
        "resolving again with nothing changed dirties nothing"
    );
    world.set_drain(key("a", "d"), None);
    assert_eq!(reason(&world), None, "a deleted drain is forgotten");
}

#[test]
fn a_relist_of_drains_or_bindings_removes_what_vanished_within_its_scope_only() {
    let mut world = World::default();
    world.upsert_pod(Some(pod("a", "p", "web", "n1", &[])), key("a", "p"));
    world.set_drain(key("a", "old"), Some(drain("a", "old", "syslog://h:1")));
    world.set_drain(key("b", "other"), Some(drain("b", "other", "syslog://h:1")));
    let listed = vec![drain("a", "new", "syslog://h:2")];
    let dirty = world.replace_all(Some("a"), listed);
    assert_eq!(
        world.drains.keys().cloned().collect::<Vec<_>>(),
        vec![key("a", "new"), key("b", "other")],
        "a's listing replaces a's drains; b's stay"
    );
    assert_eq!(dirty.nodes, BTreeSet::from(["n1".to_owned()]));
    assert_eq!(
        dirty.drains,
        BTreeSet::from([key("a", "new"), key("a", "old")]),
        "a's statuses (a gone drain's is dropped when it is reconciled)"
    );

    world.set_binding(key("a", "web"), Some(binding("a", "web", "web", &["new"])));
    let dirty = world.replace_all::<LogBinding>(None, Vec::new());
    assert!(
        world.bindings.is_empty(),
        "an all-namespaces listing of none removes all"
    );
    assert_eq!(
        dirty.bindings,
        BTreeSet::new(),
        "a removed binding has no status to write"
    );
    assert_eq!(dirty.nodes, BTreeSet::from(["n1".to_owned()]));
}
