//! A Kubernetes control plane for cluster-mode tests: the real kube-apiserver harness (restartable,
//! so a test can take the API server away), sluice's CRDs, the RBAC of `deploy/rbac/` bound to
//! restricted identities, the operator in-process under its identity, and pods created the way a
//! kubelet reports them.
//!
//! Invariants: the harness is the test's own (stopped by pid when [`KubeRig`] drops, also on
//! panic); the operator runs on the rig's runtime under exactly the operator's RBAC; every kube
//! call runs on that runtime, so a test body stays synchronous like the other end-to-end tests.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Namespace, Pod, Secret},
        rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams},
};
use sluice_api::crd::{LogDrain, LogDrainStatus};
use sluice_kube_harness::{KubeHarness, StartOptions, pods};
use tokio_util::sync::CancellationToken;

use crate::{
    LineSpec,
    docker::{Docker, RunSpec},
    fixture::loggen_args,
    support::wait_until,
};

/// The field manager of the tests' writes.
const MANAGER: &str = "sluice-tests";

/// The identity the collectors run as (one service account, as a DaemonSet has).
pub const COLLECTOR_USER: &str = "system:serviceaccount:sluice-system:sluice-collector";
/// The identity the operator runs as.
pub const OPERATOR_USER: &str = "system:serviceaccount:sluice-system:sluice-operator";

/// Where a test workload runs.
#[derive(Clone, Copy, Debug)]
pub struct Placement<'a> {
    /// Its namespace (its tenant).
    pub ns: &'a str,
    /// The node its pod is bound to.
    pub node: &'a str,
    /// Its pod's `app` label (what bindings select).
    pub app: &'a str,
}

/// The control plane of one test.
pub struct KubeRig {
    /// The API server (restartable: [`KubeRig::pause`], [`KubeRig::resume`]).
    pub harness: KubeHarness,
    /// The runtime every kube call and the operator run on.
    pub rt: tokio::runtime::Runtime,
    /// The sluice namespace (node configs, Leases).
    pub system: String,
    /// The tenant namespace (drains, bindings, pods).
    pub tenant: String,
    operator: Option<CancellationToken>,
}

impl KubeRig {
    /// Start the API server with the CRDs, the two namespaces and the RBAC of `deploy/rbac/`
    /// bound to [`COLLECTOR_USER`] and [`OPERATOR_USER`]; `None` after a loud skip where the
    /// harness cannot be built (a failure under `SLUICE_REQUIRE_ALL=1`).
    pub fn start(test: &str) -> Result<Option<Self>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let options = StartOptions {
            restartable: true,
            ..StartOptions::default()
        };
        let Some(harness) = rt.block_on(KubeHarness::start_with_or_skip(test, &options))? else {
            return Ok(None);
        };
        let rig = Self {
            harness,
            rt,
            system: "sluice-system".into(),
            tenant: "shop".into(),
            operator: None,
        };
        rig.rt.block_on(rig.setup())?;
        Ok(Some(rig))
    }

    async fn setup(&self) -> Result<()> {
        let client = self.harness.client().await?;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for (_, crd) in sluice_api::crd::all() {
            let name = crd.metadata.name.clone().context("a CRD has a name")?;
            crds.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd))
                .await?;
        }
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for ns in [&self.system, &self.tenant] {
            namespaces.create(&PostParams::default(), &namespace(ns)).await?;
        }
        // logs-api.yaml grants in kube-system, which the API server creates just after it starts.
        for _ in 0..300 {
            if namespaces.get_opt("kube-system").await?.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (file, placeholder, user) in [
            ("collector.yaml", "SLUICE_COLLECTOR_SUBJECT", COLLECTOR_USER),
            ("operator.yaml", "SLUICE_OPERATOR_SUBJECT", OPERATOR_USER),
            ("logs-api.yaml", "SLUICE_OPERATOR_SUBJECT", OPERATOR_USER),
        ] {
            grant(&client, file, placeholder, user, &self.system).await?;
        }
        // The CRDs serve once established; the first drain applied waits on it otherwise.
        for (_, crd) in sluice_api::crd::all() {
            let name = crd.metadata.name.clone().unwrap_or_default();
            for _ in 0..600 {
                let got = crds.get(&name).await?;
                let established = got.status.and_then(|s| s.conditions).unwrap_or_default();
                if established
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// A kubeconfig file for `user` (a restricted identity: only what RBAC grants it).
    pub fn kubeconfig_for(&self, user: &str) -> Result<PathBuf> {
        Ok(self
            .rt
            .block_on(self.harness.kubeconfig_for(user, &["system:serviceaccounts"]))?)
    }

    /// An admin client (on the rig's runtime).
    pub fn admin(&self) -> Result<Client> {
        Ok(self.rt.block_on(self.harness.client())?)
    }

    /// Start the operator in-process as [`OPERATOR_USER`], watching the tenant namespace, with
    /// short intervals (status figures at most every 2 s).
    pub fn start_operator(&mut self) -> Result<()> {
        self.start_operator_with(&[], |_| {})
    }

    /// As [`KubeRig::start_operator`], also watching `more_tenants` (made with
    /// [`KubeRig::create_namespace`]), with `tweak` applied to the settings last.
    pub fn start_operator_with(
        &mut self,
        more_tenants: &[&str],
        tweak: impl FnOnce(&mut sluice_operator::Settings),
    ) -> Result<()> {
        let client = self
            .rt
            .block_on(self.harness.client_as(OPERATOR_USER, &["system:serviceaccounts"]))?;
        let mut settings = sluice_operator::Settings::new(self.system.clone(), "operator-0");
        settings.lease_duration = Duration::from_secs(3);
        settings.renew_interval = Duration::from_millis(500);
        settings.missing_secret_retry = Duration::from_millis(500);
        settings.status_count_interval = Duration::from_secs(2);
        settings.watch_namespaces = std::iter::once(self.tenant.as_str())
            .chain(more_tenants.iter().copied())
            .map(str::to_owned)
            .collect();
        tweak(&mut settings);
        let token = CancellationToken::new();
        let ctx = sluice_operator::Context::new(client, settings);
        let stop = token.clone();
        self.rt.spawn(async move {
            if let Err(e) = sluice_operator::run(ctx, stop).await {
                eprintln!("the operator stopped: {e}");
            }
        });
        self.operator = Some(token);
        Ok(())
    }

    /// Create namespace `ns` (a further tenant's).
    pub fn create_namespace(&self, ns: &str) -> Result<()> {
        self.rt.block_on(async {
            let namespaces: Api<Namespace> = Api::all(self.harness.client().await?);
            namespaces
                .create(&PostParams::default(), &namespace(ns))
                .await
                .with_context(|| format!("creating namespace {ns}"))?;
            Ok(())
        })
    }

    /// Create Secret `name` in `ns` holding `data` (as `stringData`), with `labels`.
    pub fn create_secret_in(
        &self,
        ns: &str,
        name: &str,
        data: &[(&str, &str)],
        labels: &[(&str, &str)],
    ) -> Result<()> {
        let owned = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(owned(labels)),
                ..ObjectMeta::default()
            },
            string_data: Some(owned(data)),
            ..Secret::default()
        };
        self.rt.block_on(async {
            Api::<Secret>::namespaced(self.harness.client().await?, ns)
                .create(&PostParams::default(), &secret)
                .await
                .with_context(|| format!("creating Secret {ns}/{name}"))?;
            Ok(())
        })
    }

    /// Server-side apply `object` (JSON with apiVersion, kind, metadata.name) in the tenant
    /// namespace.
    pub fn apply<K>(&self, object: serde_json::Value) -> Result<()>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.apply_in::<K>(&self.tenant, object)
    }

    /// Server-side apply `object` in namespace `ns`.
    pub fn apply_in<K>(&self, ns: &str, object: serde_json::Value) -> Result<()>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        self.rt.block_on(async {
            let api: Api<K> = Api::namespaced(self.harness.client().await?, ns);
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
            .with_context(|| format!("applying {name}"))?;
            Ok(())
        })
    }

    /// Delete a tenant object.
    pub fn delete<K>(&self, name: &str) -> Result<()>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.rt.block_on(async {
            let api: Api<K> = Api::namespaced(self.harness.client().await?, &self.tenant);
            api.delete(name, &DeleteParams::default()).await?;
            Ok(())
        })
    }

    /// Create pod `name` on `node` with `labels`, one container per `(name, docker id)`, and
    /// report them running as the kubelet would (`containerID: docker://<id>`).
    pub fn create_pod(
        &self,
        name: &str,
        node: &str,
        labels: &[(&str, &str)],
        containers: &[(&str, &str)],
    ) -> Result<()> {
        self.create_pod_in(&self.tenant, name, node, labels, containers)
    }

    /// As [`KubeRig::create_pod`], in namespace `ns`.
    pub fn create_pod_in(
        &self,
        ns: &str,
        name: &str,
        node: &str,
        labels: &[(&str, &str)],
        containers: &[(&str, &str)],
    ) -> Result<()> {
        let labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>();
        let pod = pods::bound_pod(name, node, labels, containers, "loggen");
        let ids: Vec<(&str, String)> = containers
            .iter()
            .map(|(c, id)| (*c, format!("docker://{id}")))
            .collect();
        let ids: Vec<(&str, &str)> = ids.iter().map(|(c, id)| (*c, id.as_str())).collect();
        let status = pods::running_status(&ids, "loggen");
        self.rt.block_on(async {
            let api: Api<Pod> = Api::namespaced(self.harness.client().await?, ns);
            api.create(&PostParams::default(), &pod)
                .await
                .with_context(|| format!("creating pod {name}"))?;
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .with_context(|| format!("reporting pod {name} running"))?;
            Ok(())
        })
    }

    /// A loggen container writing `count` lines of `spec` at `rate`/s, and its pod (named after
    /// the spec's tag) placed `at`; the container's id.
    pub fn workload(
        &self,
        docker: &Docker,
        at: &Placement<'_>,
        spec: &LineSpec,
        count: u64,
        rate: u64,
    ) -> Result<String> {
        let id = docker.run(&RunSpec {
            name: spec.tag.clone(),
            args: loggen_args(spec, count, rate),
            ..RunSpec::default()
        })?;
        self.create_pod_in(at.ns, &spec.tag, at.node, &[("app", at.app)], &[("main", &id)])?;
        Ok(id)
    }

    /// A drain's status, if it has one.
    pub fn drain_status(&self, name: &str) -> Result<Option<LogDrainStatus>> {
        self.drain_status_in(&self.tenant, name)
    }

    /// The status of drain `ns/name`, if it has one.
    pub fn drain_status_in(&self, ns: &str, name: &str) -> Result<Option<LogDrainStatus>> {
        self.rt.block_on(async {
            let api: Api<LogDrain> = Api::namespaced(self.harness.client().await?, ns);
            Ok(api.get(name).await?.status)
        })
    }

    /// A drain's `Delivering` condition as `(status, reason, message)`.
    pub fn delivering(&self, name: &str) -> Option<(String, String, String)> {
        self.condition_in(&self.tenant, name, "Delivering")
    }

    /// Condition `type_` of drain `ns/name` as `(status, reason, message)`.
    pub fn condition_in(&self, ns: &str, name: &str, type_: &str) -> Option<(String, String, String)> {
        let status = self.drain_status_in(ns, name).ok()??;
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    }

    /// Wait (up to `timeout`) until drain `name` is `Delivering` with `status` and `reason`.
    pub fn wait_delivering(&self, name: &str, status: &str, reason: &str, timeout: Duration) -> Result<()> {
        self.wait_condition_in(&self.tenant, name, "Delivering", (status, reason), timeout)
            .map(|_| ())
    }

    /// Wait (up to `timeout`) until drain `ns/name` has condition `type_` with `(status, reason)`;
    /// its message.
    pub fn wait_condition_in(
        &self,
        ns: &str,
        name: &str,
        type_: &str,
        (status, reason): (&str, &str),
        timeout: Duration,
    ) -> Result<String> {
        wait_until(
            &format!("LogDrain {ns}/{name} {type_}={status} ({reason})"),
            timeout,
            || {
                self.condition_in(ns, name, type_)
                    .filter(|(s, r, _)| s == status && r == reason)
                    .map(|(_, _, message)| message)
            },
            || format!("{:?}", self.condition_in(ns, name, type_)),
        )
    }

    /// Whether an Event with `reason` exists about tenant object `name`.
    pub fn has_event(&self, name: &str, reason: &str) -> Result<bool> {
        self.has_event_in(&self.tenant, name, reason)
    }

    /// Whether an Event with `reason` exists about object `ns/name`.
    pub fn has_event_in(&self, ns: &str, name: &str, reason: &str) -> Result<bool> {
        self.rt.block_on(async {
            let api: Api<k8s_openapi::api::events::v1::Event> =
                Api::namespaced(self.harness.client().await?, ns);
            let events = api.list(&Default::default()).await?;
            Ok(events.items.iter().any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
            }))
        })
    }

    /// The collector Lease of `node`, if it exists (read as admin).
    pub fn lease(&self, node: &str) -> Result<Option<Lease>> {
        self.rt.block_on(async {
            let api: Api<Lease> = Api::namespaced(self.harness.client().await?, &self.system);
            Ok(api.get_opt(&sluice_api::health::lease_name(node)).await?)
        })
    }

    /// Stop the API server (it keeps its data and port). A server that does not stop within the
    /// harness's grace period is killed, which etcd's write-ahead log survives.
    pub fn pause(&mut self) -> Result<()> {
        let status = self.harness.pause()?;
        eprintln!("the API server stopped ({status})");
        Ok(())
    }

    /// Start the API server again.
    pub fn resume(&mut self) -> Result<()> {
        self.rt.block_on(self.harness.resume())?;
        Ok(())
    }
}

impl Drop for KubeRig {
    fn drop(&mut self) {
        if let Some(token) = self.operator.take() {
            token.cancel();
        }
    }
}

/// A Namespace object named `name`.
fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// Apply `deploy/rbac/<file>` in `namespace` (or an object's own namespace, e.g. kube-system),
/// its subjects being `user`.
async fn grant(client: &Client, file: &str, placeholder: &str, user: &str, namespace: &str) -> Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/rbac")
        .join(file);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let subject = format!("{{kind: User, apiGroup: rbac.authorization.k8s.io, name: {user:?}}}");
    let text = text
        .replace("SLUICE_NAMESPACE", namespace)
        .replace(placeholder, &subject);
    let params = PatchParams::apply(MANAGER).force();
    for doc in text.split("\n---\n") {
        let value: serde_json::Value =
            serde_yaml::from_str(doc).with_context(|| format!("parsing {file}"))?;
        let name = value["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let namespace = value["metadata"]["namespace"].as_str().unwrap_or(namespace);
        let patch = Patch::Apply(&value);
        match value["kind"].as_str() {
            Some("Role") => {
                Api::<Role>::namespaced(client.clone(), namespace)
                    .patch(&name, &params, &patch)
                    .await?;
            }
            Some("RoleBinding") => {
                Api::<RoleBinding>::namespaced(client.clone(), namespace)
                    .patch(&name, &params, &patch)
                    .await?;
            }
            Some("ClusterRole") => {
                Api::<ClusterRole>::all(client.clone())
                    .patch(&name, &params, &patch)
                    .await?;
            }
            Some("ClusterRoleBinding") => {
                Api::<ClusterRoleBinding>::all(client.clone())
                    .patch(&name, &params, &patch)
                    .await?;
            }
            other => bail!("{file}: unexpected kind {other:?}"),
        }
    }
    Ok(())
}
