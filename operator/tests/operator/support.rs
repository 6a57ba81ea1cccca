//! Helpers: the shared harness with the CRDs installed, per-test namespaces, nodes and pods the
//! way a kubelet would report them, in-process operators stopped on drop, and polling.

use std::{collections::BTreeMap, future::Future, time::Duration};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::{
    api::core::v1::{Namespace, Node, Pod, Secret},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use sluice_api::NodeConfig;
use sluice_kube_harness::KubeHarness;
use sluice_operator::{Context, Settings};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

/// The shared harness with sluice's CRDs installed, or `None` (a loud skip) where it cannot be
/// built.
pub async fn harness(test: &str) -> Result<Option<&'static KubeHarness>> {
    static CRDS: OnceCell<()> = OnceCell::const_new();
    let Some(harness) = KubeHarness::shared_or_skip(test).await? else {
        return Ok(None);
    };
    let client = harness.client().await?;
    CRDS.get_or_try_init(|| install_crds(client)).await?;
    Ok(Some(harness))
}

/// Starts the harness, or returns from the test after a loud skip message.
#[macro_export]
macro_rules! env_or_skip {
    ($name:expr) => {
        match $crate::support::TestEnv::new($name).await? {
            Some(env) => env,
            None => return Ok(()),
        }
    };
}

async fn install_crds(client: Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for (_, crd) in sluice_api::crd::all() {
        let name = crd.metadata.name.clone().context("CRD has a name")?;
        api.patch(
            &name,
            &PatchParams::apply("sluice-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying CRD {name}"))?;
        wait_for(&format!("CRD {name} established"), || async {
            let crd = api.get(&name).await?;
            Ok(crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"))
        })
        .await?;
    }
    Ok(())
}

/// Poll `check` every 100 ms until it says true; fail after 60 s naming `what`.
pub async fn wait_for<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last_error = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what} (last error: {last_error:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One test's namespaces: `tenant` (drains, bindings, pods) and `system` (the operator's).
pub struct TestEnv {
    pub harness: &'static KubeHarness,
    pub client: Client,
    pub tenant: String,
    pub system: String,
    pub prefix: String,
}

impl TestEnv {
    /// Namespaces `<name>` and `<name>-sys`; nodes this test creates are prefixed `<name>-`.
    pub async fn new(name: &str) -> Result<Option<Self>> {
        let Some(harness) = harness(name).await? else {
            return Ok(None);
        };
        let client = harness.client().await?;
        let env = Self {
            harness,
            client,
            tenant: name.to_owned(),
            system: format!("{name}-sys"),
            prefix: name.to_owned(),
        };
        env.namespace(&env.tenant).await?;
        env.namespace(&env.system).await?;
        Ok(Some(env))
    }

    /// Create a namespace.
    pub async fn namespace(&self, name: &str) -> Result<()> {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(())
    }

    /// A node name of this test.
    pub fn node(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// Create a Node object.
    pub async fn create_node(&self, short: &str) -> Result<String> {
        let name = self.node(short);
        let node = Node {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await?;
        Ok(name)
    }

    /// Operator settings for this test: scoped to `namespaces`, fast lease and retries.
    pub fn settings(&self, identity: &str, namespaces: &[&str]) -> Settings {
        let mut s = Settings::new(self.system.clone(), identity);
        s.lease_duration = Duration::from_secs(3);
        s.renew_interval = Duration::from_millis(300);
        s.missing_secret_retry = Duration::from_millis(300);
        s.status_count_interval = Duration::from_secs(1);
        s.watch_namespaces = namespaces.iter().map(|n| (*n).to_owned()).collect();
        s
    }

    /// Start an operator replica watching the tenant namespace (and `extra`).
    pub async fn operator(&self, identity: &str, extra: &[&str]) -> Result<Operator> {
        self.operator_with(identity, extra, |_| {}).await
    }

    /// [`TestEnv::operator`] with settings changed by `tune`.
    pub async fn operator_with(
        &self,
        identity: &str,
        extra: &[&str],
        tune: impl FnOnce(&mut Settings),
    ) -> Result<Operator> {
        let mut namespaces = vec![self.tenant.as_str()];
        namespaces.extend_from_slice(extra);
        let mut settings = self.settings(identity, &namespaces);
        tune(&mut settings);
        let ctx = Context::new(self.harness.client().await?, settings);
        Ok(Operator::start(ctx))
    }

    /// Create a pod on `node` with `app=<app>` and containers, then report them running as the
    /// kubelet would (status.containerStatuses with the given runtime ids).
    pub async fn create_pod(
        &self,
        name: &str,
        app: &str,
        node: &str,
        containers: &[(&str, &str)],
    ) -> Result<()> {
        let labels = BTreeMap::from([("app".to_owned(), app.to_owned())]);
        self.create_pod_in(&self.tenant, name, labels, node, containers)
            .await
    }

    /// Create a pod in namespace `ns` on `node` with `labels` and containers, reported running.
    pub async fn create_pod_in(
        &self,
        ns: &str,
        name: &str,
        labels: BTreeMap<String, String>,
        node: &str,
        containers: &[(&str, &str)],
    ) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let pod = sluice_kube_harness::pods::bound_pod(name, node, labels, containers, "busybox");
        api.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("creating pod {ns}/{name}"))?;
        self.set_container_ids_in(ns, name, containers).await
    }

    /// Patch a pod's containerStatuses to these runtime ids (a restart gives a new id).
    pub async fn set_container_ids(&self, pod: &str, containers: &[(&str, &str)]) -> Result<()> {
        self.set_container_ids_in(&self.tenant, pod, containers).await
    }

    async fn set_container_ids_in(&self, ns: &str, pod: &str, containers: &[(&str, &str)]) -> Result<()> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let patch = sluice_kube_harness::pods::running_status(containers, "busybox");
        api.patch_status(pod, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("patching the status of pod {ns}/{pod}"))?;
        Ok(())
    }

    /// Apply a YAML/JSON object (server-side apply as the test user).
    pub async fn apply<K>(&self, ns: &str, value: serde_json::Value) -> Result<K, kube::Error>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let name = value["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        api.patch(
            &name,
            &PatchParams::apply("sluice-tests").force(),
            &Patch::Apply(&value),
        )
        .await
    }

    /// The node config Secret of a node, if any.
    pub async fn node_secret(&self, node: &str) -> Result<Option<Secret>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.system);
        Ok(api.get_opt(&format!("sluice-node-{node}")).await?)
    }

    /// The node config of a node, if any, parsed as the collector would.
    pub async fn node_config(&self, node: &str) -> Result<Option<NodeConfig>> {
        let Some(secret) = self.node_secret(node).await? else {
            return Ok(None);
        };
        let data = secret.data.unwrap_or_default();
        let yaml = data.get("config.yaml").context("config.yaml key")?;
        Ok(Some(NodeConfig::from_yaml(std::str::from_utf8(&yaml.0)?)?))
    }

    /// `(pod, container id, drains)` of a node's config, sorted; empty when it has none.
    pub async fn containers(&self, node: &str) -> Result<Vec<(String, String, Vec<String>)>> {
        let Some(config) = self.node_config(node).await? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<_> = config
            .containers
            .into_iter()
            .map(|c| (c.pod, c.id, c.drains))
            .collect();
        out.sort();
        Ok(out)
    }
}

/// An in-process operator replica; dropping it aborts it (as a kill would).
pub struct Operator {
    pub ctx: Context,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<sluice_operator::Result<()>>>,
}

impl Operator {
    fn start(ctx: Context) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(sluice_operator::run(ctx.clone(), shutdown.clone()));
        Self {
            ctx,
            shutdown,
            task: Some(task),
        }
    }

    /// Wait until this replica leads and its first pass is done.
    pub async fn wait_ready_leader(&self) -> Result<()> {
        wait_for("operator leading and ready", || async {
            Ok(self.ctx.health.is_leader() && self.ctx.health.is_ready())
        })
        .await
    }

    /// Graceful stop: finish, release the Lease.
    pub async fn stop(mut self) -> Result<()> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }

    /// Kill: abort without releasing anything.
    pub fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// API writes this replica made.
    pub fn writes(&self) -> u64 {
        self.ctx.metrics.total_writes()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The Ready condition `(status, reason, message)` of a LogDrain or LogBinding.
pub fn ready(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) -> Option<(String, String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// The labels of a Secret that may serve LogDrains (`sluice.dev/drain-credentials: "true"`).
pub fn credential_labels() -> Option<BTreeMap<String, String>> {
    Some(BTreeMap::from([(
        sluice_api::crd::DRAIN_CREDENTIALS_LABEL.to_owned(),
        "true".to_owned(),
    )]))
}

/// The Ready condition of LogDrain `ns/name`, if it has one.
pub async fn drain_ready(client: &Client, ns: &str, name: &str) -> Result<Option<(String, String, String)>> {
    let api: Api<sluice_api::crd::LogDrain> = Api::namespaced(client.clone(), ns);
    Ok(api.get(name).await?.status.and_then(|s| ready(&s.conditions)))
}

/// Whether an Event with `reason` exists about object `name` in `ns`.
pub async fn has_event(client: &Client, ns: &str, name: &str, reason: &str) -> Result<bool> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let events = api.list(&Default::default()).await?;
    Ok(events.items.iter().any(|e| {
        e.reason.as_deref() == Some(reason)
            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
    }))
}
