//! Helpers: the shared API server harness with sluice's CRDs, one pair of namespaces per test
//! (`<test>` for tenant objects, `<test>-sys` for collector Leases), objects and statuses written
//! the way the operator, the kubelet and the collectors would, restricted identities, and the
//! plugin binary run as a user runs it.

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::{Context as _, Result};
use k8s_openapi::{
    api::{
        coordination::v1::Lease,
        core::v1::{Namespace, Pod},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, Patch, PatchParams, PostParams},
};
use serde_json::json;
use sluice_kube_harness::KubeHarness;
use sluice_tests::plugin::Plugin;
pub use sluice_tests::plugin::Run;
use tokio::sync::OnceCell;

const MANAGER: &str = "sluice-plugin-tests";

/// Run `kubectl-sluice` with `args` (no inherited KUBECONFIG, HOME in a place without a kubeconfig).
pub async fn plugin(args: Vec<String>) -> Result<Run> {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Plugin::new(env!("CARGO_BIN_EXE_kubectl-sluice")).run(&args)
    })
    .await?
}

/// One test's namespaces on the shared harness.
pub struct Env {
    pub harness: &'static KubeHarness,
    pub admin: Client,
    /// Tenant namespace.
    pub ns: String,
    /// sluice namespace (collector Leases).
    pub sys: String,
}

impl Env {
    /// The shared harness with the CRDs and this test's namespaces, or `None` after a loud skip.
    pub async fn new(name: &str) -> Result<Option<Self>> {
        static CRDS: OnceCell<()> = OnceCell::const_new();
        let Some(harness) = KubeHarness::shared_or_skip(name).await? else {
            return Ok(None);
        };
        let admin = harness.client().await?;
        CRDS.get_or_try_init(|| install_crds(harness)).await?;
        let env = Self {
            harness,
            admin,
            ns: name.to_owned(),
            sys: format!("{name}-sys"),
        };
        for ns in [&env.ns, &env.sys] {
            namespace(&env.admin, ns).await?;
        }
        Ok(Some(env))
    }

    /// Flags selecting this test's namespaces, with `kubeconfig`.
    pub fn flags(&self, kubeconfig: &std::path::Path) -> Vec<String> {
        vec![
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "-n".into(),
            self.ns.clone(),
            "--sluice-namespace".into(),
            self.sys.clone(),
        ]
    }

    /// A kubeconfig for `user`, who may get and list LogDrains, LogBindings and pods in the
    /// tenant namespace and, with `leases`, get Leases in the sluice namespace.
    pub async fn viewer(&self, user: &str, leases: bool) -> Result<PathBuf> {
        let rules = json!([
            {"apiGroups": ["sluice.dev"], "resources": ["logdrains", "logbindings"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        ]);
        grant(&self.admin, &self.ns, user, rules).await?;
        if leases {
            let rules =
                json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"]}]);
            grant(&self.admin, &self.sys, user, rules).await?;
        }
        // RBAC reaches the authorizer through an informer: wait until it does, so the plugin's
        // first request is judged by the grant.
        let client = self.harness.client_as(user, &[]).await?;
        wait_for(&format!("RBAC of {user}"), || async {
            let drains = Api::<sluice_api::crd::LogDrain>::namespaced(client.clone(), &self.ns);
            drains.list(&Default::default()).await?;
            if leases {
                Api::<Lease>::namespaced(client.clone(), &self.sys)
                    .get_opt("probe")
                    .await?;
            }
            Ok(true)
        })
        .await?;
        Ok(self.harness.kubeconfig_for(user, &[]).await?)
    }

    /// Server-side apply a tenant object.
    pub async fn apply<K>(&self, value: serde_json::Value) -> Result<()>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let name = value["metadata"]["name"].as_str().context("a name")?.to_owned();
        Api::<K>::namespaced(self.admin.clone(), &self.ns)
            .patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&value))
            .await
            .with_context(|| format!("applying {name}"))?;
        Ok(())
    }

    /// Write a LogDrain's status as the operator would: `conditions` as `(type, status, reason,
    /// message)`, and `delivery` as given.
    pub async fn drain_status(
        &self,
        name: &str,
        conditions: &[(&str, &str, &str, &str)],
        delivery: Option<serde_json::Value>,
    ) -> Result<()> {
        let conditions: Vec<_> = conditions
            .iter()
            .map(|(t, s, r, m)| {
                json!({"type": t, "status": s, "reason": r, "message": m,
                       "lastTransitionTime": "2026-01-01T00:00:00Z"})
            })
            .collect();
        let mut status = json!({"conditions": conditions});
        if let Some(d) = delivery {
            status["delivery"] = d;
        }
        Api::<sluice_api::crd::LogDrain>::namespaced(self.admin.clone(), &self.ns)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .with_context(|| format!("status of drain {name}"))?;
        Ok(())
    }

    /// A pod with label `app`, on `node` (`None`: not scheduled), whose containers `(name,
    /// runtime id)` are reported running when they have an id.
    pub async fn pod(
        &self,
        name: &str,
        app: &str,
        node: Option<&str>,
        containers: &[(&str, &str)],
    ) -> Result<()> {
        let labels = BTreeMap::from([("app".to_owned(), app.to_owned())]);
        let mut pod =
            sluice_kube_harness::pods::bound_pod(name, node.unwrap_or(""), labels, containers, "busybox");
        if node.is_none()
            && let Some(spec) = pod.spec.as_mut()
        {
            spec.node_name = None;
        }
        let api: Api<Pod> = Api::namespaced(self.admin.clone(), &self.ns);
        api.create(&PostParams::default(), &pod).await?;
        let started: Vec<(&str, &str)> = containers
            .iter()
            .copied()
            .filter(|(_, id)| !id.is_empty())
            .collect();
        if !started.is_empty() {
            let patch = sluice_kube_harness::pods::running_status(&started, "busybox");
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Ok(())
    }

    /// A collector Lease for `node`, renewed at `renewed` for `seconds`.
    pub async fn lease(&self, node: &str, renewed: jiff::Timestamp, seconds: i32) -> Result<()> {
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": sluice_api::health::lease_name(node), "namespace": self.sys},
            "spec": {"holderIdentity": format!("collector-{node}"), "leaseDurationSeconds": seconds,
                     "renewTime": renewed.to_string()},
        }))?;
        Api::<Lease>::namespaced(self.admin.clone(), &self.sys)
            .create(&PostParams::default(), &lease)
            .await?;
        Ok(())
    }
}

async fn install_crds(harness: &KubeHarness) -> Result<()> {
    let client = harness.client().await?;
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for (_, crd) in sluice_api::crd::all() {
        let name = crd.metadata.name.clone().context("a CRD has a name")?;
        api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&crd))
            .await?;
        wait_for(&format!("CRD {name} established"), || async {
            let crd = api.get(&name).await?;
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            Ok(conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"))
        })
        .await?;
    }
    Ok(())
}

/// Create a namespace.
pub async fn namespace(client: &Client, name: &str) -> Result<()> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

/// A Role with `rules` in `ns`, bound to `user`.
async fn grant(admin: &Client, ns: &str, user: &str, rules: serde_json::Value) -> Result<()> {
    let name = format!("plugin-test-{}", user.replace(':', "-"));
    sluice_tests::plugin::grant(admin, ns, &name, user, rules).await
}

/// Poll `check` every 100 ms until it says true; fail after 60 s naming `what`.
pub async fn wait_for<F, Fut>(what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if check().await.unwrap_or(false) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Start the harness for this test, or return from it after a loud skip.
#[macro_export]
macro_rules! env_or_skip {
    ($name:expr) => {
        match $crate::support::Env::new($name).await? {
            Some(env) => env,
            None => return Ok(()),
        }
    };
}
