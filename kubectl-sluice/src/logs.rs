//! `kubectl sluice logs`: lines of many pods at once, merged by time, through sluice's logs API
//! (`logs.sluice.dev/v1alpha1`, an APIService the operator serves). The request carries only the
//! caller's own credentials to the API server; the operator serves a namespace only if the API
//! server says the caller may `get pods/log` there.
//!
//! Pods are chosen here, with the caller's own rights: a pod name, a workload (`deploy/`, `sts/`,
//! `job/`, resolved through its selector as `kubectl logs` does), a label selector, or every pod
//! of the namespace. With `--recent`, pods that no longer exist count too: a named pod; for a
//! label selector or a workload (by its selector) every pod the selector matches, by the labels
//! the collectors keep with each container's lines (so also of a deleted pod); and for a
//! workload that is itself gone (no selector to use) the pods its controller would have named
//! (`NAME-<hash>-<id>`, `NAME-<ordinal>`, `NAME-<id>`). Without `--recent`, only pods that exist
//! now, as `kubectl logs`.

use std::{
    collections::BTreeSet,
    hash::{Hash, Hasher},
    io::{IsTerminal, Write},
    time::Duration,
};

use anyhow::{Context as _, Result};
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        batch::v1::Job,
        core::v1::Pod,
    },
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{Api, api::ListParams};
use sluice_api::query::{RecentLine, encode_component};

use crate::{
    cli::LogsArgs,
    connect::{Failure, Target},
};

/// The logs API's path prefix.
const API: &str = "/apis/logs.sluice.dev/v1alpha1";

/// Which pods' lines to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// Every pod (of the namespace, or of all with `-A`).
    All,
    /// Exactly these `(namespace, pod)`.
    Pods(BTreeSet<(String, String)>),
    /// The pods a label selector selects: those that exist now (`pods`), and with `--recent`
    /// every pod whose labels the collectors kept it selects (the logs API filters).
    Selected {
        /// The selector (canonical text).
        selector: String,
        /// The pods it selects now.
        pods: BTreeSet<(String, String)>,
    },
    /// A workload that is gone: with `--recent`, pods whose name fits its controller's pattern.
    Workload {
        /// Pods that exist now (none: the workload is gone).
        pods: BTreeSet<(String, String)>,
        /// The namespace.
        namespace: String,
        /// The workload's name.
        name: String,
        /// How its controller names pods.
        kind: Naming,
    },
}

/// How a controller names its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Naming {
    /// `NAME-<template hash>-<id>` (Deployment).
    Deployment,
    /// `NAME-<id>` (ReplicaSet, DaemonSet, Job; an indexed Job: `NAME-<index>-<id>`).
    Suffix,
    /// `NAME-<ordinal>` (StatefulSet).
    Ordinal,
}

impl Naming {
    /// Whether `pod` is a name this controller gives a pod of workload `name`.
    pub fn fits(self, name: &str, pod: &str) -> bool {
        let Some(rest) = pod.strip_prefix(name).and_then(|r| r.strip_prefix('-')) else {
            return false;
        };
        let id = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let parts: Vec<&str> = rest.split('-').collect();
        match self {
            Naming::Deployment => parts.len() == 2 && parts.iter().all(|p| id(p)),
            Naming::Suffix => (1..=2).contains(&parts.len()) && parts.iter().all(|p| id(p)),
            Naming::Ordinal => {
                parts.len() == 1 && rest.bytes().all(|b| b.is_ascii_digit()) && !rest.is_empty()
            }
        }
    }
}

impl Pick {
    /// Whether the lines of `namespace/pod` are wanted (`recent`: gone pods count too).
    pub fn wants(&self, namespace: &str, pod: &str, recent: bool) -> bool {
        let key = (namespace.to_owned(), pod.to_owned());
        match self {
            Pick::All => true,
            Pick::Pods(pods) => pods.contains(&key),
            Pick::Selected { pods, .. } => recent || pods.contains(&key),
            Pick::Workload {
                pods,
                namespace: ns,
                name,
                kind,
            } => pods.contains(&key) || (recent && ns == namespace && kind.fits(name, pod)),
        }
    }

    /// The pod names the API may filter on (None: the filter is applied here).
    fn server_pods(&self, recent: bool) -> Option<Vec<String>> {
        match self {
            Pick::All => None,
            Pick::Pods(pods) => Some(pods.iter().map(|(_, p)| p.clone()).collect()),
            Pick::Selected { .. } if recent => None,
            Pick::Selected { pods, .. } => Some(pods.iter().map(|(_, p)| p.clone()).collect()),
            Pick::Workload { pods, .. } if !recent => Some(pods.iter().map(|(_, p)| p.clone()).collect()),
            Pick::Workload { .. } => None,
        }
    }

    /// The label selector the API filters on (with `--recent`: it matches deleted pods too).
    fn server_selector(&self, recent: bool) -> Option<&str> {
        match self {
            Pick::Selected { selector, .. } if recent && !selector.is_empty() => Some(selector),
            _ => None,
        }
    }
}

/// A `-l` value: a label selector as Kubernetes reads it, in its canonical text.
pub fn parse_selector(text: &str) -> Result<String, String> {
    text.parse::<sluice_api::selector::Selector>()
        .map(|s| s.to_string())
        .map_err(|e| e.to_string())
}

/// Print the lines `args` asks for.
pub async fn run(target: &Target, args: &LogsArgs) -> Result<()> {
    let pick = resolve(target, args).await?;
    if let Pick::Pods(pods) | Pick::Selected { pods, .. } | Pick::Workload { pods, .. } = &pick
        && pods.is_empty()
        && !args.recent
    {
        return Err(Failure::NotFound(format!(
            "no pods match{}: nothing to print (for the lines of deleted pods, add --recent)",
            if args.all_namespaces {
                String::new()
            } else {
                format!(" in namespace {}", target.namespace)
            }
        ))
        .into());
    }
    let mut out = Printer::new(args);
    let mut printed = 0usize;
    if !args.follow || args.recent || args.tail.is_some() {
        let lines = recent(target, args, &pick).await?;
        for line in &lines {
            out.line(line)?;
        }
        printed += lines.len();
    }
    if args.follow {
        follow(target, args, &pick, &mut out).await?;
    } else if printed == 0 && !args.recent && args.since.is_none() {
        eprintln!(
            "No recent lines (the collectors keep the last lines of each container; add -f to follow)."
        );
    }
    Ok(())
}

/// The path and query of a request for `pick`'s lines.
fn request_path(target: &Target, args: &LogsArgs, pick: &Pick, watch: bool) -> String {
    let mut pairs: Vec<(&str, String)> = Vec::new();
    let server_pods = pick.server_pods(args.recent);
    for pod in server_pods.iter().flatten() {
        pairs.push(("pod", pod.clone()));
    }
    if let Some(c) = &args.container {
        pairs.push(("container", c.clone()));
    }
    let server_selector = pick.server_selector(args.recent);
    if let Some(selector) = server_selector {
        pairs.push(("labelSelector", selector.to_owned()));
    }
    if let Some(since) = args.since {
        let from = jiff::Timestamp::now() - jiff::SignedDuration::try_from(since).unwrap_or_default();
        pairs.push(("since", from.to_string()));
    }
    // The tail is the API's only when it filters exactly what is printed.
    if let (Some(tail), true, false) = (
        args.tail,
        server_pods.is_some() || server_selector.is_some(),
        watch,
    ) {
        pairs.push(("tail", tail.to_string()));
    }
    if watch {
        pairs.push(("watch", "true".into()));
    }
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", encode_component(v)))
        .collect::<Vec<_>>()
        .join("&");
    let base = if args.all_namespaces {
        format!("{API}/podlogs")
    } else {
        format!("{API}/namespaces/{}/podlogs", encode_component(&target.namespace))
    };
    if query.is_empty() {
        base
    } else {
        format!("{base}?{query}")
    }
}

async fn recent(target: &Target, args: &LogsArgs, pick: &Pick) -> Result<Vec<RecentLine>> {
    let mut lines = fetch(target, args, pick).await?;
    // The collectors match a selector against the labels their node config carries, which is
    // only as many as the pod's drains emit (all for an HTTP drain, those its templates read
    // for a syslog drain): the pods that exist now are also asked for by name, and each pod's
    // lines taken from one of the two answers.
    if let Pick::Selected { pods, .. } = pick
        && args.recent
        && !pods.is_empty()
    {
        let live = Pick::Pods(pods.clone());
        lines.retain(|l| !live.wants(&l.namespace, &l.pod, false));
        lines.extend(fetch(target, args, &live).await?);
        lines.sort_by_cached_key(|l| l.time.parse::<jiff::Timestamp>().ok());
    }
    if let Some(tail) = args.tail
        && lines.len() > tail
    {
        lines.drain(..lines.len() - tail);
    }
    Ok(lines)
}

/// The recent lines the logs API gives for `pick`, those `pick` wants.
async fn fetch(target: &Target, args: &LogsArgs, pick: &Pick) -> Result<Vec<RecentLine>> {
    let path = request_path(target, args, pick, false);
    let request = http::Request::get(&path)
        .body(Vec::new())
        .context("building the request")?;
    let text = target
        .client
        .request_text(request)
        .await
        .map_err(|e| api_error(target, e))?;
    let mut lines = Vec::new();
    for raw in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(raw)
            .with_context(|| format!("the logs API sent a line that is not one: {raw}"))?;
        if let Some(w) = value.get("warning").and_then(serde_json::Value::as_str) {
            eprintln!("warning: {w} (its lines are missing)");
            continue;
        }
        let line: RecentLine = serde_json::from_value(value).with_context(|| format!("not a line: {raw}"))?;
        if pick.wants(&line.namespace, &line.pod, args.recent) {
            lines.push(line);
        }
    }
    Ok(lines)
}

async fn follow(target: &Target, args: &LogsArgs, pick: &Pick, out: &mut Printer) -> Result<()> {
    // The pods of a selector that exist now are followed by name (their collectors may not have
    // every label: see `recent`); only when none exists yet does the collectors' matching of
    // the selector pick the pods that come.
    let live;
    let pick = match pick {
        Pick::Selected { pods, .. } if !pods.is_empty() => {
            live = Pick::Pods(pods.clone());
            &live
        }
        other => other,
    };
    let path = request_path(target, args, pick, true);
    let request = http::Request::get(&path)
        .body(Vec::new())
        .context("building the request")?;
    // A follow may stay quiet for long: no read timeout on this client.
    let mut config = target.config.clone();
    config.read_timeout = None;
    let client = kube::Client::try_from(config)
        .map_err(|e| Failure::NoCluster(format!("cannot build a client: {e}")))?;
    let stream = client
        .request_stream(request)
        .await
        .map_err(|e| api_error(target, e))?;
    let mut lines = stream.lines();
    while let Some(raw) = lines.next().await {
        let raw = raw.map_err(|e| Failure::NoCluster(format!("the follow broke: {e}")))?;
        if raw.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(&raw)
            .with_context(|| format!("the logs API sent a line that is not one: {raw}"))?;
        if let Some(n) = value.get("lagged").and_then(serde_json::Value::as_u64) {
            eprintln!("warning: {n} lines were not sent to this follow (it fell behind a collector)");
            continue;
        }
        if value.get("following").is_some() {
            eprintln!("Following: every line read from now on is printed (Ctrl-C to stop).");
            continue;
        }
        if let Some(c) = value.get("collector").and_then(serde_json::Value::as_str) {
            eprintln!("Following a collector that started: {c}");
            continue;
        }
        if let Some(w) = value.get("warning").and_then(serde_json::Value::as_str) {
            eprintln!("warning: {w}");
            continue;
        }
        let line: RecentLine = serde_json::from_value(value).with_context(|| format!("not a line: {raw}"))?;
        if pick.wants(&line.namespace, &line.pod, true) {
            out.line(&line)?;
        }
    }
    Ok(())
}

/// An API error as a failure a user can act on.
fn api_error(target: &Target, error: kube::Error) -> anyhow::Error {
    match &error {
        kube::Error::Api(status) if status.code == 404 => Failure::NotInstalled(format!(
            "the API server at {} does not serve sluice's logs API (APIService v1alpha1.logs.sluice.dev): \
             install or upgrade the sluice chart",
            target.server
        ))
        .into(),
        kube::Error::Api(status) if status.code == 503 => anyhow::anyhow!(
            "sluice's logs API is unavailable: {} (is the sluice operator running? \
             kubectl get apiservice v1alpha1.logs.sluice.dev)",
            status.message
        ),
        _ => target.explain_error(error, "pod logs through sluice", false),
    }
}

/// Resolve the command line to the pods whose lines to print.
async fn resolve(target: &Target, args: &LogsArgs) -> Result<Pick> {
    let ns = target.namespace.clone();
    if let Some(selector) = &args.selector {
        let pods: Api<Pod> = if args.all_namespaces {
            Api::all(target.client.clone())
        } else {
            Api::namespaced(target.client.clone(), &ns)
        };
        let found = match pods.list_metadata(&ListParams::default().labels(selector)).await {
            Ok(found) => found.items,
            // With --recent the logs API matches the selector itself (deleted pods too): the
            // pods of now are only asked for by name as well when the caller may list them
            // (with -A: in every namespace).
            Err(_) if args.recent => Vec::new(),
            Err(e) => return Err(target.explain_error(e, &format!("pods matching {selector}"), false)),
        };
        return Ok(Pick::Selected {
            selector: selector.clone(),
            pods: found
                .into_iter()
                .filter_map(|p| Some((p.metadata.namespace?, p.metadata.name?)))
                .collect(),
        });
    }
    let Some(what) = &args.target else {
        return Ok(Pick::All);
    };
    let (kind, name) = what.split_once('/').unwrap_or(("pod", what));
    let c = target.client.clone();
    let (selector, naming) = match kind {
        "pod" | "pods" | "po" => {
            let exists = Api::<Pod>::namespaced(c, &ns)
                .get_metadata_opt(name)
                .await
                .map_err(|e| target.explain_error(e, &format!("pod {name}"), false))?
                .is_some();
            if !exists && !args.recent {
                return Err(Failure::NotFound(format!(
                    "pod {name} not found in namespace {ns} (the lines of a deleted pod: add --recent)"
                ))
                .into());
            }
            return Ok(Pick::Pods(BTreeSet::from([(ns, name.to_owned())])));
        }
        "deploy" | "deployment" | "deployments" => (
            workload::<Deployment>(target, &ns, name, "deployment", args.recent, |d| {
                d.spec.map(|s| s.selector)
            })
            .await?,
            Naming::Deployment,
        ),
        "sts" | "statefulset" | "statefulsets" => (
            workload::<StatefulSet>(target, &ns, name, "statefulset", args.recent, |s| {
                s.spec.map(|s| s.selector)
            })
            .await?,
            Naming::Ordinal,
        ),
        "job" | "jobs" => (
            workload::<Job>(target, &ns, name, "job", args.recent, |j| {
                j.spec.and_then(|s| s.selector)
            })
            .await?,
            Naming::Suffix,
        ),
        "rs" | "replicaset" | "replicasets" => (
            workload::<ReplicaSet>(target, &ns, name, "replicaset", args.recent, |r| {
                r.spec.map(|s| s.selector)
            })
            .await?,
            Naming::Suffix,
        ),
        "ds" | "daemonset" | "daemonsets" => (
            workload::<DaemonSet>(target, &ns, name, "daemonset", args.recent, |d| {
                d.spec.map(|s| s.selector)
            })
            .await?,
            Naming::Suffix,
        ),
        other => {
            return Err(anyhow::anyhow!(
                "cannot read logs of {other:?}: name a pod, or one of deploy/, sts/, job/, rs/, ds/ NAME, or use -l SELECTOR"
            ));
        }
    };
    let Some(selector) = selector else {
        // The workload is gone: its former pods only by the names its controller gives.
        return Ok(Pick::Workload {
            pods: BTreeSet::new(),
            namespace: ns,
            name: name.to_owned(),
            kind: naming,
        });
    };
    let pods = Api::<Pod>::namespaced(target.client.clone(), &ns)
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| target.explain_error(e, &format!("the pods of {kind}/{name}"), false))?
        .items
        .into_iter()
        .filter_map(|p| Some((ns.clone(), p.metadata.name?)))
        .collect();
    Ok(Pick::Selected { selector, pods })
}

/// The label selector of workload `name` (`None`: it is gone, allowed with `--recent`).
async fn workload<K>(
    target: &Target,
    ns: &str,
    name: &str,
    kind: &str,
    recent: bool,
    selector: impl FnOnce(K) -> Option<LabelSelector>,
) -> Result<Option<String>>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let found = Api::<K>::namespaced(target.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| target.explain_error(e, &format!("{kind} {name}"), false))?;
    match found {
        Some(object) => Ok(Some(
            selector(object).map(|s| selector_text(&s)).unwrap_or_default(),
        )),
        None if recent => Ok(None),
        None => Err(Failure::NotFound(format!(
            "{kind} {name} not found in namespace {ns} (the lines of a deleted workload's pods: add --recent)"
        ))
        .into()),
    }
}

/// A label selector as a `labelSelector` query value.
pub fn selector_text(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for r in selector.match_expressions.iter().flatten() {
        let values = r.values.clone().unwrap_or_default().join(",");
        parts.push(match r.operator.as_str() {
            "In" => format!("{} in ({values})", r.key),
            "NotIn" => format!("{} notin ({values})", r.key),
            "Exists" => r.key.clone(),
            _ => format!("!{}", r.key),
        });
    }
    parts.join(",")
}

/// How lines are printed.
struct Printer {
    json: bool,
    timestamps: bool,
    namespaces: bool,
    colour: bool,
    out: std::io::BufWriter<std::io::Stdout>,
    flush_each: bool,
}

impl Printer {
    fn new(args: &LogsArgs) -> Self {
        let stdout = std::io::stdout();
        let terminal = stdout.is_terminal();
        Self {
            json: args.output == Some(crate::cli::LogsOutput::Json),
            timestamps: args.timestamps,
            namespaces: args.all_namespaces,
            colour: terminal && std::env::var_os("NO_COLOR").is_none(),
            out: std::io::BufWriter::new(stdout),
            flush_each: args.follow,
        }
    }

    fn line(&mut self, line: &RecentLine) -> Result<()> {
        let text = if self.json {
            serde_json::to_string(line)?
        } else {
            format_line(line, self.timestamps, self.namespaces, self.colour)
        };
        let written = writeln!(self.out, "{text}")
            .and_then(|()| if self.flush_each { self.out.flush() } else { Ok(()) });
        match written {
            // A closed pipe (`| head`) ends the command quietly.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
            other => other.context("writing to stdout"),
        }
    }
}

impl Drop for Printer {
    fn drop(&mut self) {
        let _ = self.out.flush();
    }
}

/// `[TIME ][ns/]pod/container line`, the prefix coloured by pod and container on a terminal.
pub fn format_line(line: &RecentLine, timestamps: bool, namespaces: bool, colour: bool) -> String {
    let source = if namespaces {
        format!("{}/{}/{}", line.namespace, line.pod, line.container)
    } else {
        format!("{}/{}", line.pod, line.container)
    };
    let prefix = if colour {
        const COLOURS: [u8; 6] = [31, 32, 33, 34, 35, 36];
        let mut h = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut h);
        let c = COLOURS[usize::try_from(h.finish() % 6).unwrap_or(0)];
        format!("\x1b[{c}m[{source}]\x1b[0m")
    } else {
        format!("[{source}]")
    };
    if timestamps {
        format!("{} {prefix} {}", line.time, line.line)
    } else {
        format!("{prefix} {}", line.line)
    }
}

/// A `--since` value: a number with a unit, as `kubectl logs --since` takes it (`30s`, `5m`,
/// `2h`, `1h30m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut number = String::new();
    let bad = || format!("{text:?} is not a duration like 30s, 5m, 2h or 1h30m");
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total += match c {
            's' => Duration::from_secs(n),
            'm' => Duration::from_secs(n * 60),
            'h' => Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
    }
    if !number.is_empty() || total.is_zero() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ns: &str, pod: &str) -> RecentLine {
        RecentLine {
            time: "2026-12-03T10:00:00.000000001Z".into(),
            namespace: ns.into(),
            pod: pod.into(),
            container: "app".into(),
            stream: "stdout".into(),
            line: "hello".into(),
        }
    }

    #[test]
    fn controllers_name_pods_so() {
        assert!(Naming::Deployment.fits("web", "web-7d9f8b6c5-x2x9z"));
        assert!(!Naming::Deployment.fits("web", "web-x2x9z"));
        assert!(!Naming::Deployment.fits("web", "webby-7d9f8b6c5-x2x9z"));
        assert!(Naming::Ordinal.fits("db", "db-0"));
        assert!(!Naming::Ordinal.fits("db", "db-a"));
        assert!(!Naming::Ordinal.fits("db", "db-"));
        assert!(Naming::Suffix.fits("batch", "batch-x2x9z"));
        assert!(Naming::Suffix.fits("batch", "batch-3-x2x9z"));
        assert!(!Naming::Suffix.fits("batch", "batch"));
    }

    #[test]
    fn picks() {
        let pods = BTreeSet::from([("shop".to_owned(), "web-1-a".to_owned())]);
        let w = Pick::Workload {
            pods: pods.clone(),
            namespace: "shop".into(),
            name: "web".into(),
            kind: Naming::Deployment,
        };
        assert!(w.wants("shop", "web-1-a", false));
        assert!(!w.wants("shop", "web-2-b", false));
        assert!(w.wants("shop", "web-2-b", true));
        assert!(!w.wants("other", "web-2-b", true));
        assert_eq!(w.server_pods(false), Some(vec!["web-1-a".to_owned()]));
        assert_eq!(w.server_pods(true), None);
        assert_eq!(w.server_selector(true), None);
        let s = Pick::Selected {
            selector: "app=web".into(),
            pods: pods.clone(),
        };
        assert!(s.wants("shop", "web-1-a", false));
        assert!(!s.wants("shop", "web-gone", false));
        assert!(s.wants("shop", "web-gone", true));
        assert_eq!(s.server_pods(false), Some(vec!["web-1-a".to_owned()]));
        assert_eq!(
            (s.server_pods(true), s.server_selector(true)),
            (None, Some("app=web"))
        );
        assert_eq!(s.server_selector(false), None);
        assert_eq!(parse_selector("app == web,tier").as_deref(), Ok("app=web,tier"));
        assert!(parse_selector("app in web").is_err());
        assert!(Pick::Pods(pods).wants("shop", "web-1-a", true));
        assert!(Pick::All.wants("x", "y", false));
    }

    #[test]
    fn lines_are_prefixed() {
        let l = line("shop", "web-0");
        assert_eq!(format_line(&l, false, false, false), "[web-0/app] hello");
        assert_eq!(
            format_line(&l, true, true, false),
            "2026-12-03T10:00:00.000000001Z [shop/web-0/app] hello"
        );
        let coloured = format_line(&l, false, false, true);
        assert!(coloured.starts_with("\x1b[3") && coloured.ends_with("[web-0/app]\x1b[0m hello"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn selectors_as_text() {
        let s: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                 {"key": "x", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        assert_eq!(selector_text(&s), "app=web,tier in (a,b),!x");
    }
}
