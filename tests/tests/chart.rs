//! The Helm chart `charts/sluice`, with the pinned helm that `scripts/setup.sh` builds: `helm lint`
//! and `helm template` with the defaults and every `ci/*-values.yaml`; every rendered object
//! accepted by a server-side dry run against the real kube-apiserver of `tests/kube-harness`; the
//! RBAC rules identical to `deploy/rbac/*.yaml`; typos and an unsafe grace period refused; the
//! generated query TLS certificates completing mutual TLS as the collector and operator build it,
//! and every generated Secret (token, certificates) kept as it is by `helm upgrade`.
//!
//! helm runs with its own empty HOME-like directories (no repositories, no cache of the machine's
//! user) and never talks to a cluster here: `helm template` renders client-side.

use std::{collections::BTreeSet, path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::{
    api::apps::v1::DaemonSet, apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Discovery,
    api::{DynamicObject, GroupVersionKind, PostParams, TypeMeta},
    discovery::Scope,
};
use serde_json::{Value, json};
use sluice_kube_harness::KubeHarness;
use sluice_tests::{
    helm::{Helm, chart_dir, parse_documents, repo_root},
    support::need,
};

const RELEASE: &str = "sluice";
/// The tests that write cluster-scoped objects to the shared API server take turns.
static SHARED_SERVER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const NAMESPACE: &str = "sluice-system";

/// `[]` (the defaults) and `["--values", FILE]` for every `ci/*-values.yaml`.
fn values_files() -> Result<Vec<Vec<String>>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.to_string_lossy().ends_with("-values.yaml"));
    files.sort();
    ensure!(!files.is_empty(), "charts/sluice/ci/ holds no *-values.yaml");
    let mut sets = vec![Vec::new()];
    sets.extend(
        files
            .iter()
            .map(|f| vec!["--values".to_owned(), f.display().to_string()]),
    );
    Ok(sets)
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn kind_and_name(object: &Value) -> String {
    let field = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    format!(
        "{}/{}",
        field(&object["kind"]),
        field(&object["metadata"]["name"])
    )
}

#[test]
fn helm_lint_and_template_pass_with_every_values_file() -> Result<()> {
    let Some(helm) = Helm::new("helm_lint_and_template_pass_with_every_values_file") else {
        return Ok(());
    };
    let chart = chart_dir().display().to_string();
    for values in values_files()? {
        let values = strs(&values);
        helm.ok(&[
            &["lint", "--strict", &chart, "--namespace", NAMESPACE],
            &values[..],
        ]
        .concat())?;
        let objects = helm.template_in(RELEASE, NAMESPACE, &values)?;
        ensure!(!objects.is_empty(), "helm template {values:?} rendered nothing");
    }
    // The defaults render exactly these objects.
    let mut kinds: Vec<String> = helm
        .template_in(RELEASE, NAMESPACE, &[])?
        .iter()
        .map(kind_and_name)
        .collect();
    kinds.sort();
    let expected = [
        "APIService/v1alpha1.logs.sluice.dev",
        "ClusterRole/sluice-logs-reader",
        "ClusterRole/sluice-operator",
        "ClusterRoleBinding/sluice-logs-reader",
        "ClusterRoleBinding/sluice-operator",
        "DaemonSet/sluice-collector",
        "Deployment/sluice-operator",
        "Job/sluice-cleanup",
        "PodDisruptionBudget/sluice-operator",
        "Role/sluice-cleanup",
        "Role/sluice-collector",
        "Role/sluice-logs-api",
        "Role/sluice-operator",
        "RoleBinding/sluice-cleanup",
        "RoleBinding/sluice-collector",
        "RoleBinding/sluice-logs-api",
        "RoleBinding/sluice-operator",
        "Secret/sluice-logs-api-tls",
        "Secret/sluice-query-collector-tls",
        "Secret/sluice-query-operator-tls",
        "Secret/sluice-query-token",
        "Service/sluice-collector-metrics",
        "Service/sluice-logs-api",
        "Service/sluice-operator-metrics",
        "ServiceAccount/sluice-cleanup",
        "ServiceAccount/sluice-collector",
        "ServiceAccount/sluice-operator",
    ];
    assert_eq!(kinds, expected, "objects rendered with the default values");
    Ok(())
}

/// The dotted paths of the schema's values (anything but an object closed by
/// `additionalProperties: false`), and those of its properties without a description.
fn schema_values(schema: &Value, prefix: &str, values: &mut Vec<String>, undescribed: &mut Vec<String>) {
    for (key, property) in schema["properties"].as_object().into_iter().flatten() {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if property["description"].as_str().is_none_or(str::is_empty) {
            undescribed.push(path.clone());
        }
        if property["additionalProperties"] == false && property["properties"].is_object() {
            schema_values(property, &path, values, undescribed);
        } else {
            values.push(path);
        }
    }
}

/// The dotted paths of the keys in `yaml` that have a comment on the line right above them.
fn commented_keys(yaml: &str) -> BTreeSet<String> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut commented = BTreeSet::new();
    let mut previous_is_comment = false;
    for line in yaml.lines().filter(|l| !l.trim().is_empty()) {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let key = trimmed
            .split_once(':')
            .map(|(k, _)| k)
            .filter(|k| k.chars().all(|c| c.is_ascii_alphanumeric()) && !trimmed.starts_with('#'));
        if let Some(key) = key {
            stack.retain(|(i, _)| *i < indent);
            let mut path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
            path.push(key);
            if previous_is_comment {
                commented.insert(path.join("."));
            }
            stack.push((indent, key.to_owned()));
        }
        previous_is_comment = trimmed.starts_with('#');
    }
    commented
}

#[test]
fn every_value_is_documented_in_values_yaml_and_the_schema() -> Result<()> {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart_dir().join("values.schema.json"))?)?;
    let (mut values, mut undescribed) = (Vec::new(), Vec::new());
    schema_values(&schema, "", &mut values, &mut undescribed);
    assert!(
        undescribed.is_empty(),
        "values.schema.json: no description for {undescribed:?}"
    );
    let commented = commented_keys(&std::fs::read_to_string(chart_dir().join("values.yaml"))?);
    let undocumented: Vec<&String> = values.iter().filter(|v| !commented.contains(*v)).collect();
    assert!(
        undocumented.is_empty(),
        "values.yaml: no comment above {undocumented:?}"
    );
    assert!(values.len() > 50, "the schema lists only {} values", values.len());
    Ok(())
}

/// The Role and ClusterRole rules of a component, and its bindings' roleRef kinds, by kind.
fn rbac_of(objects: &[Value], component: Option<&str>) -> Vec<(String, Value)> {
    let mut rbac: Vec<(String, Value)> = objects
        .iter()
        .filter(|o| component.is_none_or(|c| o["metadata"]["labels"]["app.kubernetes.io/component"] == c))
        .filter_map(|o| match o["kind"].as_str()? {
            kind @ ("Role" | "ClusterRole") => Some((kind.to_owned(), o["rules"].clone())),
            kind @ ("RoleBinding" | "ClusterRoleBinding") => {
                Some((kind.to_owned(), o["roleRef"]["kind"].clone()))
            }
            _ => None,
        })
        .collect();
    rbac.sort_by(|a, b| a.0.cmp(&b.0));
    rbac
}

/// The logs API's bindings: the operator's ServiceAccount reads the requestheader ConfigMap in
/// kube-system; every authenticated user (the default `logsApi.readers`) may call the API.
fn logs_api_bindings(rendered: &[Value]) {
    let binding = |kind: &str| {
        rendered
            .iter()
            .find(|o| {
                o["kind"] == kind && o["metadata"]["labels"]["app.kubernetes.io/component"] == "logs-api"
            })
            .unwrap_or_else(|| panic!("no logs-api {kind}"))
    };
    let role_binding = binding("RoleBinding");
    assert_eq!(role_binding["metadata"]["namespace"], "kube-system");
    assert_eq!(role_binding["roleRef"]["name"], format!("{RELEASE}-logs-api"));
    assert_eq!(
        role_binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": format!("{RELEASE}-operator"), "namespace": NAMESPACE}])
    );
    let readers = binding("ClusterRoleBinding");
    assert_eq!(readers["roleRef"]["name"], format!("{RELEASE}-logs-reader"));
    assert_eq!(
        readers["subjects"],
        json!([{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "system:authenticated"}])
    );
}

#[test]
fn rbac_rules_are_exactly_deploy_rbac() -> Result<()> {
    let Some(helm) = Helm::new("rbac_rules_are_exactly_deploy_rbac") else {
        return Ok(());
    };
    let rendered = helm.template_in(RELEASE, NAMESPACE, &[])?;
    for component in ["operator", "collector", "logs-api", "cleanup"] {
        let path = repo_root().join(format!("deploy/rbac/{component}.yaml"));
        let file = parse_documents(&std::fs::read_to_string(&path)?)?;
        let (want, got) = (rbac_of(&file, None), rbac_of(&rendered, Some(component)));
        assert_eq!(
            got,
            want,
            "the chart's {component} RBAC differs from {}",
            path.display()
        );
        if component == "logs-api" {
            logs_api_bindings(&rendered);
            continue;
        }
        // Every binding's subject is the component's own ServiceAccount in the release namespace.
        let subject = json!([{"kind": "ServiceAccount", "name": format!("{RELEASE}-{component}"),
                              "namespace": NAMESPACE}]);
        for binding in rendered.iter().filter(|o| {
            o["kind"].as_str().is_some_and(|k| k.ends_with("Binding"))
                && o["metadata"]["labels"]["app.kubernetes.io/component"] == component
        }) {
            assert_eq!(binding["subjects"], subject, "{}", kind_and_name(binding));
            assert_eq!(binding["roleRef"]["name"], format!("{RELEASE}-{component}"));
        }
    }
    // Belt and braces: no cluster-wide Secret list or watch, no wildcard, whatever the files say.
    for role in rendered.iter().filter(|o| o["kind"] == "ClusterRole") {
        for rule in role["rules"].as_array().into_iter().flatten() {
            let has = |field: &str, v: &str| rule[field].as_array().is_some_and(|a| a.iter().any(|x| x == v));
            assert!(!has("verbs", "*") && !has("resources", "*"), "wildcard in {rule}");
            if has("resources", "secrets") {
                assert!(
                    !has("verbs", "list") && !has("verbs", "watch"),
                    "cluster-wide Secret listing: {rule}"
                );
            }
        }
    }
    Ok(())
}

/// The stand-in ServiceMonitor CRD of the dry run accepts any spec, so check here what
/// Prometheus needs: each ServiceMonitor selects exactly one metrics Service, by a port it has.
#[test]
fn service_monitors_select_the_metrics_services() -> Result<()> {
    let Some(helm) = Helm::new("service_monitors_select_the_metrics_services") else {
        return Ok(());
    };
    let rendered = helm.template_in(
        RELEASE,
        NAMESPACE,
        &["--set", "metrics.serviceMonitor.enabled=true"],
    )?;
    let services: Vec<&Value> = rendered.iter().filter(|o| o["kind"] == "Service").collect();
    let monitors: Vec<&Value> = rendered
        .iter()
        .filter(|o| o["kind"] == "ServiceMonitor")
        .collect();
    assert_eq!(monitors.len(), 2, "one ServiceMonitor per component");
    for monitor in monitors {
        let wanted = monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .context("no matchLabels")?;
        let port = &monitor["spec"]["endpoints"][0]["port"];
        let selected: Vec<&&Value> = services
            .iter()
            .filter(|s| wanted.iter().all(|(k, v)| &s["metadata"]["labels"][k] == v))
            .collect();
        assert_eq!(
            selected.len(),
            1,
            "{} selects {} Services",
            kind_and_name(monitor),
            selected.len()
        );
        let ports = selected[0]["spec"]["ports"]
            .as_array()
            .context("a Service without ports")?;
        assert!(
            ports.iter().any(|p| &p["name"] == port),
            "{}: no port {port}",
            kind_and_name(selected[0])
        );
        assert_eq!(
            monitor["spec"]["namespaceSelector"]["matchNames"],
            json!([NAMESPACE])
        );
    }
    Ok(())
}

/// helm's stderr for values it must refuse.
fn refused(helm: &Helm, set: &str) -> Result<String> {
    let chart = chart_dir().display().to_string();
    let out = helm.run(&["template", RELEASE, &chart, "--set", set])?;
    if out.status.success() {
        bail!("helm template --set {set} rendered instead of refusing");
    }
    Ok(String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn typos_and_unsafe_values_are_refused() -> Result<()> {
    let Some(helm) = Helm::new("typos_and_unsafe_values_are_refused") else {
        return Ok(());
    };
    for (set, expect) in [
        ("operator.replicsa=3", "replicsa"),
        ("colector.port=9000", "colector"),
        ("collector.destinations.alow={10.0.0.0/8}", "alow"),
        ("collector.logFormat=xml", "logFormat"),
        ("collector.maxUnavailable=0", "maxUnavailable"),
        ("collector.destinations.deny={not-a-cidr}", "deny"),
        (
            "collector.terminationGracePeriodSeconds=20",
            "must exceed collector.gracePeriodSeconds",
        ),
    ] {
        let stderr = refused(&helm, set)?;
        assert!(
            stderr.contains(expect),
            "--set {set}: helm said {stderr:?}, expected it to name {expect:?}"
        );
    }
    Ok(())
}

/// A stand-in for the Prometheus Operator's ServiceMonitor CRD (not part of this harness): it
/// accepts any spec, so the dry run checks the object's envelope and namespace, not its fields.
fn service_monitor_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
        "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
            "names": {"kind": "ServiceMonitor", "plural": "servicemonitors", "singular": "servicemonitor"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    })
}

/// The API of `object`'s kind, in its namespace (default [`NAMESPACE`]), found by discovery.
fn api_for(client: &Client, discovery: &Discovery, object: &Value) -> Result<Api<DynamicObject>> {
    let types: TypeMeta = serde_json::from_value(object.clone())?;
    let gvk = GroupVersionKind::try_from(&types)?;
    let (resource, caps) = discovery
        .resolve_gvk(&gvk)
        .with_context(|| format!("the API server does not serve {gvk:?}"))?;
    Ok(match caps.scope {
        Scope::Namespaced => {
            let ns = object["metadata"]["namespace"].as_str().unwrap_or(NAMESPACE);
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    })
}

/// Creates `object` (for real, or as a server-side dry run); an object that already exists is
/// left alone when `exists_ok`.
async fn create(
    client: &Client,
    discovery: &Discovery,
    object: &Value,
    dry_run: bool,
    exists_ok: bool,
) -> Result<()> {
    let params = PostParams {
        dry_run,
        field_manager: Some("sluice-chart-test".into()),
    };
    let dynamic: DynamicObject = serde_json::from_value(object.clone())?;
    match api_for(client, discovery, object)?
        .create(&params, &dynamic)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if exists_ok && e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("the API server refused {}", kind_and_name(object))),
    }
}

/// Creates the CRDs for real and waits until they are served.
async fn install_crds(client: &Client, crds: &[Value]) -> Result<()> {
    let discovery = Discovery::new(client.clone()).run().await?;
    for crd in crds {
        create(client, &discovery, crd, false, true).await?;
    }
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for crd in crds {
        let name = crd["metadata"]["name"].as_str().context("a CRD without a name")?;
        loop {
            let established = api.get(name).await?.status.is_some_and(|s| {
                s.conditions
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            });
            if established {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "CRD {name} not Established after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// helm and the API server shared by this test binary, or `None` after a loud skip.
async fn helm_and_harness(test: &str) -> Result<Option<(Helm, &'static KubeHarness)>> {
    let Some(helm) = Helm::new(test) else {
        return Ok(None);
    };
    Ok(KubeHarness::shared_or_skip(test)
        .await?
        .map(|harness| (helm, harness)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_object_passes_a_server_side_dry_run() -> Result<()> {
    // A dry-run create of a cluster-scoped object the install test has really created meanwhile
    // is refused (AlreadyExists): the two take turns on the shared API server.
    let _turn = SHARED_SERVER.lock().await;
    let Some((helm, harness)) =
        helm_and_harness("every_rendered_object_passes_a_server_side_dry_run").await?
    else {
        return Ok(());
    };
    let client = harness.client().await?;
    // CRDs first, as helm installs them (the chart's crds/ directory), then the namespace.
    let mut crds: Vec<Value> = Vec::new();
    for entry in std::fs::read_dir(chart_dir().join("crds"))? {
        crds.extend(parse_documents(&std::fs::read_to_string(entry?.path())?)?);
    }
    crds.push(service_monitor_crd());
    install_crds(&client, &crds).await?;
    // A CRD just established may not be in discovery yet: look until the ServiceMonitor is.
    let monitor = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let discovery = loop {
        let discovery = Discovery::new(client.clone()).run().await?;
        if discovery.resolve_gvk(&monitor).is_some() || tokio::time::Instant::now() > deadline {
            break discovery;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}});
    create(&client, &discovery, &namespace, false, true).await?;

    let mut checked = 0;
    for values in values_files()? {
        for object in helm.template_in(RELEASE, NAMESPACE, &strs(&values))? {
            create(&client, &discovery, &object, true, false)
                .await
                .with_context(|| format!("values {values:?}"))?;
            checked += 1;
        }
    }
    eprintln!("{checked} rendered objects accepted by the API server's dry run");
    Ok(())
}

/// The collector DaemonSet's RUST_LOG, as stored by the API server.
async fn collector_log_level(client: &Client, namespace: &str) -> Result<Option<String>> {
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let daemonset = daemonsets.get(&format!("{RELEASE}-collector")).await?;
    let env = daemonset
        .spec
        .and_then(|s| s.template.spec)
        .and_then(|s| s.containers.into_iter().next())
        .and_then(|c| c.env)
        .unwrap_or_default();
    Ok(env
        .into_iter()
        .find(|e| e.name == "RUST_LOG")
        .and_then(|e| e.value))
}

/// Polls until none of `objects` exists any more; returns those still there after 60 s.
async fn wait_gone(client: &Client, discovery: &Discovery, objects: &[Value]) -> Result<Vec<String>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut left = Vec::new();
        for object in objects {
            let name = object["metadata"]["name"]
                .as_str()
                .context("an object without a name")?;
            if api_for(client, discovery, object)?.get_opt(name).await?.is_some() {
                left.push(kind_and_name(object));
            }
        }
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(left);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_and_uninstall_against_the_api_server() -> Result<()> {
    let _turn = SHARED_SERVER.lock().await;
    let Some((helm, harness)) =
        helm_and_harness("helm_install_upgrade_and_uninstall_against_the_api_server").await?
    else {
        return Ok(());
    };
    let (chart, kubeconfig) = (
        chart_dir().display().to_string(),
        harness.kubeconfig_path().display().to_string(),
    );
    let namespace = "sluice-helm";
    let on_cluster = ["--namespace", namespace, "--kubeconfig", &kubeconfig];
    let install = helm.ok(&[
        &["install", RELEASE, &chart, "--create-namespace"],
        &on_cluster[..],
    ]
    .concat())?;
    assert!(
        install.contains("rollout status daemonset/sluice-collector"),
        "no NOTES in:\n{install}"
    );
    let client = harness.client().await?;
    assert_eq!(
        collector_log_level(&client, namespace).await?.as_deref(),
        Some("info")
    );

    // The generated secrets (token, certificates) are kept across upgrades.
    let generated =
        async || -> Result<Vec<Option<std::collections::BTreeMap<String, k8s_openapi::ByteString>>>> {
            let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace);
            let mut data = Vec::new();
            for name in [
                "sluice-query-token",
                "sluice-logs-api-tls",
                "sluice-query-collector-tls",
                "sluice-query-operator-tls",
            ] {
                data.push(secrets.get(name).await?.data);
            }
            Ok(data)
        };
    let before = generated().await?;
    assert!(before.iter().all(|d| d.as_ref().is_some_and(|d| !d.is_empty())));
    let upgrade = [
        &["upgrade", RELEASE, &chart, "--set", "collector.logLevel=debug"],
        &on_cluster[..],
    ]
    .concat();
    helm.ok(&upgrade)?;
    assert_eq!(
        collector_log_level(&client, namespace).await?.as_deref(),
        Some("debug")
    );
    assert!(
        generated().await? == before,
        "an upgrade changed a generated Secret"
    );

    // This API server has no kubelet to run the post-delete cleanup Job; `node_chart` runs it on
    // the real node.
    helm.ok(&[&["uninstall", RELEASE, "--no-hooks"], &on_cluster[..]].concat())?;
    let discovery = Discovery::new(client.clone()).run().await?;
    let rendered = helm.template_in(RELEASE, namespace, &[])?;
    let left = wait_gone(&client, &discovery, &rendered).await?;
    assert!(left.is_empty(), "left after helm uninstall: {left:?}");
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for crd in ["logdrains.sluice.dev", "logbindings.sluice.dev"] {
        assert!(
            crds.get_opt(crd).await?.is_some(),
            "helm uninstall removed the CRD {crd}"
        );
    }
    Ok(())
}

/// Every flag the chart gives the collector, with the defaults and every `ci/*-values.yaml`, is
/// one the collector binary knows (`--help`), so a renamed flag cannot leave the DaemonSet
/// crash-looping on an argument error.
#[test]
fn the_collector_knows_every_flag_the_chart_renders() -> Result<()> {
    let test = "the_collector_knows_every_flag_the_chart_renders";
    let Some(helm) = Helm::new(test) else {
        return Ok(());
    };
    let Some(bins) = need(test, sluice_tests::support::bin_dir()) else {
        return Ok(());
    };
    let help = Command::new(bins.join("sluice-collector"))
        .arg("--help")
        .output()
        .context("running sluice-collector --help")?;
    ensure!(help.status.success(), "sluice-collector --help failed");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let mut checked = BTreeSet::new();
    let mut sets = values_files()?;
    // The flags only some values render.
    sets.push(
        [
            "--set",
            "collector.destinations.deny={10.0.0.0/8}",
            "--set",
            "collector.destinations.allow={10.1.0.0/16}",
        ]
        .map(str::to_owned)
        .to_vec(),
    );
    for values in sets {
        for object in helm.template_in(RELEASE, NAMESPACE, &strs(&values))? {
            if kind_and_name(&object) != "DaemonSet/sluice-collector" {
                continue;
            }
            let containers = object["spec"]["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for arg in containers
                .iter()
                .flat_map(|c| c["args"].as_array().cloned().unwrap_or_default())
            {
                let Some(flag) = arg.as_str().and_then(|a| a.split('=').next()) else {
                    continue;
                };
                let listed = [" ", "=", "\n"]
                    .iter()
                    .any(|end| help.contains(&format!("{flag}{end}")));
                ensure!(
                    flag.starts_with("--") && listed,
                    "the chart ({values:?}) gives the collector {flag}, which its --help does not list"
                );
                checked.insert(flag.to_owned());
            }
        }
    }
    ensure!(
        checked.contains("--deny-destinations") && checked.contains("--pods-root"),
        "the values files exercise the collector's flags: {checked:?}"
    );
    Ok(())
}

/// The `data` of the rendered Secret `name`, decoded.
fn secret_data(objects: &[Value], name: &str) -> Result<std::collections::BTreeMap<String, String>> {
    use base64::Engine as _;
    let secret = objects
        .iter()
        .find(|o| kind_and_name(o) == format!("Secret/{name}"))
        .with_context(|| format!("no Secret {name} rendered"))?;
    let mut data = std::collections::BTreeMap::new();
    for (key, value) in secret["data"].as_object().cloned().unwrap_or_default() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(value.as_str().unwrap_or_default())?;
        data.insert(key, String::from_utf8(bytes)?);
    }
    Ok(data)
}

/// A TLS handshake between `client` and `server` in memory, for `name`.
fn handshake(client: rustls::ClientConfig, server: rustls::ServerConfig, name: &str) -> Result<()> {
    let name = rustls_pki_types::ServerName::try_from(name.to_owned())?;
    let mut client = rustls::ClientConnection::new(std::sync::Arc::new(client), name)?;
    let mut server = rustls::ServerConnection::new(std::sync::Arc::new(server))?;
    // Each round moves what one side wrote to the other; a TLS 1.3 handshake with a client
    // certificate takes two.
    for _ in 0..4 {
        let mut wire = Vec::new();
        client.write_tls(&mut wire)?;
        server.read_tls(&mut wire.as_slice())?;
        server.process_new_packets()?;
        wire.clear();
        server.write_tls(&mut wire)?;
        client.read_tls(&mut wire.as_slice())?;
        client.process_new_packets()?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    bail!("the handshake did not finish")
}

/// The query TLS Secrets the chart generates: the same CA in both, the collectors' Secret without
/// the operator's key and the other way round; the collector's server config and the operator's
/// client config built from them (by the code the binaries run) complete a handshake for the
/// chart's serverName, and a client without a certificate does not. The collector and the
/// operator get the flags and mounts; with `logsApi.queryTls.enabled=false` none of it renders.
#[test]
fn the_generated_query_certificates_make_mutual_tls() -> Result<()> {
    let Some(helm) = Helm::new("the_generated_query_certificates_make_mutual_tls") else {
        return Ok(());
    };
    let objects = helm.template_in(RELEASE, NAMESPACE, &[])?;
    let collector = secret_data(&objects, "sluice-query-collector-tls")?;
    let operator = secret_data(&objects, "sluice-query-operator-tls")?;
    let keys: Vec<&str> = collector.keys().map(String::as_str).collect();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    assert_eq!(
        collector.keys().collect::<Vec<_>>(),
        operator.keys().collect::<Vec<_>>()
    );
    assert_eq!(collector["ca.crt"], operator["ca.crt"], "one CA signs both");
    assert_ne!(collector["tls.key"], operator["tls.key"]);
    assert_ne!(collector["tls.crt"], operator["tls.crt"]);

    let dir = tempfile::tempdir()?;
    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    };
    let server = || -> Result<rustls::ServerConfig> {
        sluice_api::query_tls::server_config(
            &write("collector.crt", &collector["tls.crt"])?,
            &write("collector.key", &collector["tls.key"])?,
            &write("collector-ca.crt", &collector["ca.crt"])?,
        )
        .map_err(anyhow::Error::msg)
    };
    let client = sluice_api::query_tls::client_config(
        &write("operator-ca.crt", &operator["ca.crt"])?,
        &write("operator.crt", &operator["tls.crt"])?,
        &write("operator.key", &operator["tls.key"])?,
    )
    .map_err(anyhow::Error::msg)?;
    handshake(client, server()?, sluice_api::query_tls::DEFAULT_SERVER_NAME)?;
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(operator["ca.crt"].as_bytes()) {
        roots.add(cert?)?;
    }
    let anonymous = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let anonymous = handshake(anonymous, server()?, sluice_api::query_tls::DEFAULT_SERVER_NAME)
        .expect_err("a client without a certificate completed the handshake");
    assert!(anonymous.to_string().contains("certificate"), "{anonymous}");

    // The flags and the mounts, each workload with its own Secret.
    let args_and_secrets = |objects: &[Value], workload: &str| -> (Vec<String>, Vec<String>) {
        let object = objects.iter().find(|o| kind_and_name(o) == workload);
        let spec = object.map(|o| &o["spec"]["template"]["spec"]);
        let args = spec
            .and_then(|s| s["containers"][0]["args"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .filter(|a| {
                a.contains("query-tls") || a.contains("collector-query") || a.contains("query-client")
            })
            .collect();
        let secrets = spec
            .and_then(|s| s["volumes"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|v| v["name"].as_str().is_some_and(|n| n.ends_with("query-tls")))
            .filter_map(|v| v["secret"]["secretName"].as_str().map(str::to_owned))
            .collect();
        (args, secrets)
    };
    assert_eq!(
        args_and_secrets(&objects, "DaemonSet/sluice-collector"),
        (
            vec![
                "--query-tls-cert=/etc/sluice/query-tls/tls.crt".to_owned(),
                "--query-tls-key=/etc/sluice/query-tls/tls.key".to_owned(),
                "--query-client-ca=/etc/sluice/query-tls/ca.crt".to_owned(),
            ],
            vec!["sluice-query-collector-tls".to_owned()]
        )
    );
    assert_eq!(
        args_and_secrets(&objects, "Deployment/sluice-operator"),
        (
            vec![
                "--collector-query-ca=/etc/sluice/collector-query-tls/ca.crt".to_owned(),
                "--collector-query-cert=/etc/sluice/collector-query-tls/tls.crt".to_owned(),
                "--collector-query-key=/etc/sluice/collector-query-tls/tls.key".to_owned(),
                "--collector-query-server-name=sluice-collector-query".to_owned(),
            ],
            vec!["sluice-query-operator-tls".to_owned()]
        )
    );
    let off = helm.template_in(RELEASE, NAMESPACE, &["--set", "logsApi.queryTls.enabled=false"])?;
    assert!(secret_data(&off, "sluice-query-collector-tls").is_err());
    for workload in ["DaemonSet/sluice-collector", "Deployment/sluice-operator"] {
        assert_eq!(args_and_secrets(&off, workload), (vec![], vec![]), "{workload}");
    }
    // Your own Secrets: mounted, nothing generated; one without the other is refused.
    let own = helm.template_in(
        RELEASE,
        NAMESPACE,
        &[
            "--set",
            "logsApi.queryTls.collectorSecretName=mine-collector",
            "--set",
            "logsApi.queryTls.operatorSecretName=mine-operator",
        ],
    )?;
    assert!(secret_data(&own, "sluice-query-collector-tls").is_err());
    assert_eq!(
        args_and_secrets(&own, "DaemonSet/sluice-collector").1,
        ["mine-collector"]
    );
    assert_eq!(
        args_and_secrets(&own, "Deployment/sluice-operator").1,
        ["mine-operator"]
    );
    let stderr = refused(&helm, "logsApi.queryTls.operatorSecretName=mine-operator")?;
    assert!(
        stderr.contains("give both collectorSecretName and operatorSecretName"),
        "{stderr}"
    );
    Ok(())
}
