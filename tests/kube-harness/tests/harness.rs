//! The harness against itself: it starts, reports the pinned version, stores
//! objects, enforces RBAC for minted identities, and leaves nothing behind.
//!
//! Each test starts its own harness (a few seconds each) so that stopping
//! one is observable; other crates should prefer `KubeHarness::shared()`.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Namespace, Pod, PodSpec, Secret};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use sluice_kube_harness::{
    GC_AND_NAMESPACE_CONTROLLERS, KubeHarness, StartOptions, pinned_kubernetes_version,
};

/// Starts a harness, or returns from the test after a loud skip message.
macro_rules! harness_or_skip {
    ($name:expr) => {
        match KubeHarness::start_or_skip($name).await? {
            Some(h) => h,
            None => return Ok(()),
        }
    };
}

async fn create_namespace(client: &kube::Client, name: &str) -> Result<()> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

fn api_status(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[tokio::test]
async fn reports_the_pinned_version() -> Result<()> {
    let harness = harness_or_skip!("reports_the_pinned_version");
    let info = harness.client().await?.apiserver_version().await?;
    assert_eq!(info.git_version, pinned_kubernetes_version());
    assert_eq!(harness.version(), pinned_kubernetes_version());
    let minor = pinned_kubernetes_version()
        .split('.')
        .nth(1)
        .context("version has a minor")?;
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", minor));
    Ok(())
}

#[tokio::test]
async fn config_map_round_trip() -> Result<()> {
    let harness = harness_or_skip!("config_map_round_trip");
    let client = harness.client().await?;
    create_namespace(&client, "round-trip").await?;
    let api = Api::<ConfigMap>::namespaced(client, "round-trip");
    let data = BTreeMap::from([
        ("a".to_owned(), "1".to_owned()),
        ("b".to_owned(), "two\nlines".to_owned()),
    ]);
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("cm".into()),
            ..Default::default()
        },
        data: Some(data.clone()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &cm).await?;
    assert_eq!(api.get("cm").await?.data, Some(data));
    api.delete("cm", &DeleteParams::default()).await?;
    let gone = api.get("cm").await.expect_err("the ConfigMap was deleted");
    assert_eq!(api_status(&gone), Some(404), "{gone}");
    Ok(())
}

#[tokio::test]
async fn restricted_identity_needs_rbac() -> Result<()> {
    let harness = harness_or_skip!("restricted_identity_needs_rbac");
    let admin = harness.client().await?;
    create_namespace(&admin, "granted").await?;
    create_namespace(&admin, "other").await?;
    let alice = harness.client_as("alice", &["sluice-testers"]).await?;
    let secrets = Api::<Secret>::namespaced(alice.clone(), "granted");

    let denied = secrets
        .list(&ListParams::default())
        .await
        .expect_err("alice has no grant yet");
    assert_eq!(api_status(&denied), Some(403), "{denied}");

    grant_secret_reading(&admin, "granted", "sluice-testers").await?;
    // RBAC reads its rules from an informer: poll until the grant is seen.
    let deadline = Instant::now() + Duration::from_secs(30);
    let listed = loop {
        match secrets.list(&ListParams::default()).await {
            Ok(list) => break list,
            Err(e) if api_status(&e) == Some(403) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("alice still cannot list Secrets in `granted`: {e}"),
        }
    };
    assert!(
        listed.items.is_empty(),
        "no Secrets were created: {:?}",
        listed.items
    );

    // The grant is per namespace and per group: nothing else opens up.
    let elsewhere = Api::<Secret>::namespaced(alice, "other")
        .list(&ListParams::default())
        .await;
    assert_eq!(
        elsewhere.as_ref().err().and_then(api_status),
        Some(403),
        "{elsewhere:?}"
    );
    let bob = harness.client_as("bob", &[]).await?;
    let bob_list = Api::<Secret>::namespaced(bob, "granted")
        .list(&ListParams::default())
        .await;
    assert_eq!(
        bob_list.as_ref().err().and_then(api_status),
        Some(403),
        "{bob_list:?}"
    );
    Ok(())
}

async fn grant_secret_reading(admin: &kube::Client, ns: &str, group: &str) -> Result<()> {
    let role = Role {
        metadata: ObjectMeta {
            name: Some("read-secrets".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["secrets".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("read-secrets".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "read-secrets".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Group".into(),
            name: group.into(),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await?;
    Ok(())
}

#[tokio::test]
async fn stop_is_clean_and_leaves_nothing_behind() -> Result<()> {
    let harness = harness_or_skip!("stop_is_clean_and_leaves_nothing_behind");
    let pid = harness.pid();
    let dir = harness.dir().to_owned();
    let server = harness.server_url().trim_start_matches("https://").to_owned();
    assert!(is_running(pid));

    let status = harness.stop()?;
    assert!(status.success(), "SIGTERM should give a clean exit, got {status}");
    // Reaped: no live process has that pid any more.
    assert!(!is_running(pid), "pid {pid} is still running");
    assert!(
        !dir.exists(),
        "the harness directory {} was removed",
        dir.display()
    );
    // The port is closed: nothing listens there any more.
    assert!(
        std::net::TcpStream::connect(&server).is_err(),
        "{server} still accepts connections"
    );
    Ok(())
}

#[tokio::test]
async fn shared_harness_serves_many_tests() -> Result<()> {
    let Some(shared) = KubeHarness::shared_or_skip("shared_harness_serves_many_tests").await? else {
        return Ok(());
    };
    let again = KubeHarness::shared().await?;
    assert_eq!(shared.pid(), again.pid(), "one shared harness per test binary");
    let names: Vec<String> = Api::<Namespace>::all(shared.client().await?)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_owned()), "{names:?}");
    Ok(())
}

#[tokio::test]
async fn dropping_stops_the_harness() -> Result<()> {
    let harness = harness_or_skip!("dropping_stops_the_harness");
    let (pid, dir) = (harness.pid(), harness.dir().to_owned());
    drop(harness);
    assert!(!is_running(pid), "pid {pid} survived the drop");
    assert!(!dir.exists(), "{} survived the drop", dir.display());
    Ok(())
}

/// The shared harness relies on this: a harness whose parent dies stops by itself.
#[tokio::test]
async fn harness_stops_when_its_parent_dies() -> Result<()> {
    // Skip (loudly) exactly when the other tests do.
    if KubeHarness::start_or_skip("harness_stops_when_its_parent_dies")
        .await?
        .is_none()
    {
        return Ok(());
    }
    let bin = sluice_kube_harness::harness_binary().await?;
    let dir = tempfile::tempdir()?;
    // A shell parent that starts the harness and waits; killing the shell
    // orphans the harness.
    let mut parent = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#""$0" up --dir "$1" --parent-pid $$ >"$1/harness.log" 2>&1 & wait"#)
        .arg(&bin)
        .arg(dir.path())
        .spawn()?;
    let ready = dir.path().join("ready");
    let pid = poll(Duration::from_secs(180), || {
        let info: serde_json::Value = serde_json::from_slice(&std::fs::read(&ready).ok()?).ok()?;
        info["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
    })
    .context("the orphan-to-be harness never became ready")?;
    parent.kill()?;
    parent.wait()?;
    let stopped = poll(Duration::from_secs(30), || (!is_running(pid)).then_some(()));
    assert!(stopped.is_some(), "the harness (pid {pid}) outlived its parent");
    Ok(())
}

/// True while `pid` is a live (not zombie) process.
fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// Polls `check` every 100 ms until it yields a value or `timeout` passes.
fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The operator's RBAC is tested as its ServiceAccount: a client certificate
/// with CN=system:serviceaccount:<ns>:<name> matches ServiceAccount subjects.
#[tokio::test]
async fn minted_service_account_identity_matches_service_account_subjects() -> Result<()> {
    let Some(harness) = KubeHarness::shared_or_skip("minted_service_account_identity").await? else {
        return Ok(());
    };
    let admin = harness.client().await?;
    create_namespace(&admin, "sa-subject").await?;
    let role = Role {
        metadata: ObjectMeta {
            name: Some("read-config-maps".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            verbs: vec!["list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), "sa-subject")
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("operator".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "read-config-maps".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "operator".into(),
            namespace: Some("sa-subject".into()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin, "sa-subject")
        .create(&PostParams::default(), &binding)
        .await?;

    let sa = harness
        .client_as(
            "system:serviceaccount:sa-subject:operator",
            &["system:serviceaccounts"],
        )
        .await?;
    let config_maps = Api::<ConfigMap>::namespaced(sa.clone(), "sa-subject");
    // RBAC reads its rules from an informer: poll until the binding is seen.
    let deadline = Instant::now() + Duration::from_secs(30);
    let names: Vec<String> = loop {
        match config_maps.list(&ListParams::default()).await {
            Ok(list) => break list.items.into_iter().filter_map(|cm| cm.metadata.name).collect(),
            Err(e) if api_status(&e) == Some(403) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("the ServiceAccount identity cannot list ConfigMaps: {e}"),
        }
    };
    // Every namespace gets the root CA ConfigMap only from kube-controller-manager: none here.
    assert_eq!(names, Vec::<String>::new());
    let secrets = Api::<Secret>::namespaced(sa, "sa-subject")
        .list(&ListParams::default())
        .await;
    assert_eq!(
        secrets.as_ref().err().and_then(api_status),
        Some(403),
        "{secrets:?}"
    );
    Ok(())
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-a".into()),
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.example/app:1.0".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pull_policy(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()?
        .containers
        .first()?
        .image_pull_policy
        .as_deref()
}

/// Pods can be created as tests need them (bound to a node, no
/// ServiceAccount), and extra apiserver flags take effect.
#[tokio::test]
async fn pods_and_extra_apiserver_flags() -> Result<()> {
    let Some(shared) = KubeHarness::shared_or_skip("pods_and_extra_apiserver_flags").await? else {
        return Ok(());
    };
    let created = Api::<Pod>::namespaced(shared.client().await?, "default")
        .create(&PostParams::default(), &pod("plain"))
        .await?;
    assert_eq!(pull_policy(&created), Some("IfNotPresent"));

    // Available: the shared harness above runs (or we returned).
    let custom =
        KubeHarness::start_with_apiserver_flags(&["--enable-admission-plugins=AlwaysPullImages"]).await?;
    let created = Api::<Pod>::namespaced(custom.client().await?, "default")
        .create(&PostParams::default(), &pod("pulled"))
        .await?;
    assert_eq!(
        pull_policy(&created),
        Some("Always"),
        "the AlwaysPullImages admission plugin is on"
    );
    Ok(())
}

/// With the garbage collector and namespace controllers, owned objects go
/// away with their owner and deleted namespaces disappear.
#[tokio::test]
async fn controllers_collect_garbage_and_delete_namespaces() -> Result<()> {
    if KubeHarness::start_or_skip("controllers_collect_garbage_and_delete_namespaces")
        .await?
        .is_none()
    {
        return Ok(());
    }
    let harness =
        KubeHarness::start_with(&StartOptions::with_controllers(GC_AND_NAMESPACE_CONTROLLERS)).await?;
    let client = harness.client().await?;
    create_namespace(&client, "gc").await?;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), "gc");
    let owner = ConfigMap {
        metadata: ObjectMeta {
            name: Some("owner".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let owner = config_maps.create(&PostParams::default(), &owner).await?;
    let owned = ConfigMap {
        metadata: ObjectMeta {
            name: Some("owned".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: "owner".into(),
                uid: owner.metadata.uid.context("the server sets a uid")?,
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    config_maps.create(&PostParams::default(), &owned).await?;
    config_maps.delete("owner", &DeleteParams::default()).await?;
    wait_gone(&config_maps, "owned")
        .await
        .context("the garbage collector deletes the owned ConfigMap")?;

    let namespaces = Api::<Namespace>::all(client);
    namespaces.delete("gc", &DeleteParams::default()).await?;
    wait_gone(&namespaces, "gc")
        .await
        .context("the namespace controller finishes deleting the namespace")?;
    Ok(())
}

/// Polls until `name` is not found (404), for at most a minute.
async fn wait_gone<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match api.get_opt(name).await? {
            None => return Ok(()),
            Some(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Some(obj) => bail!("{name} still exists after a minute: {obj:?}"),
        }
    }
}
