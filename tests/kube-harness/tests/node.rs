//! A real node: the upstream kubelet on Debian's containerd and runc runs a
//! Pod of the project's log generator image, and the CRI log file the
//! kubelet and containerd wrote holds exactly the lines loggen wrote (per
//! stream, long lines reassembled from containerd's 16 KiB partials).
//! `kubectl` (built from the same Kubernetes module) sees the node Ready and
//! explains API fields. Stopping the node with a pod still running leaves no
//! cgroup, bridge, NAT rule, mount or directory behind.
//!
//! Needs root, the Debian packages of scripts/setup.sh and the image
//! archives of `scripts/images.sh loggen pause` in `SLUICE_IMAGE_DIR`
//! (scripts/test.sh exports it); without them it skips loudly, or fails
//! under `SLUICE_REQUIRE_ALL=1`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::{Container, Namespace, Pod, PodSpec};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use sluice_kube_harness::KubeNode;
use sluice_tests::LineSpec;
use sluice_tests::multiset::{Multiset, assert_exact};

const IMAGE_DIR_ENV: &str = "SLUICE_IMAGE_DIR";
const PAUSE_IMAGE: &str = "sluice.local/pause:dev";
const LOGGEN_IMAGE: &str = "sluice.local/loggen:dev";
const LINES: u64 = 3000;
const POD_TIMEOUT: Duration = Duration::from_secs(180);

/// The image archives, or `None` after a loud skip message (an error under
/// `SLUICE_REQUIRE_ALL=1`).
fn image_dir(test: &str) -> Result<Option<PathBuf>> {
    let dir = std::env::var_os(IMAGE_DIR_ENV).map(PathBuf::from);
    match dir {
        Some(d) if d.join("pause.tar").is_file() && d.join("loggen.tar").is_file() => Ok(Some(d)),
        other => {
            let why = format!(
                "{IMAGE_DIR_ENV} ({other:?}) holds no pause.tar and loggen.tar: run `eval \"$(scripts/images.sh loggen pause | tail -n1)\"; export {IMAGE_DIR_ENV}`"
            );
            if std::env::var("SLUICE_REQUIRE_ALL").as_deref() == Ok("1") {
                bail!("{test}: {why}");
            }
            eprintln!("\n!!!!!!!! SKIPPED {test}: {why}\n");
            Ok(None)
        }
    }
}

/// What `loggen` writes with the pod's arguments below.
fn spec() -> LineSpec {
    let mut spec = LineSpec::new("node-e2e", 20, 200);
    spec.stderr_every = 5;
    spec.long_every = 1000;
    spec.long_bytes = 40_000; // > containerd's 16 KiB: written as partial (P) entries
    spec
}

fn loggen_pod(name: &str) -> Pod {
    let s = spec();
    let args = [
        "--tag".to_owned(),
        s.tag.clone(),
        "--count".into(),
        LINES.to_string(),
        "--rate".into(),
        "0".into(),
        "--size".into(),
        format!("{}..{}", s.min, s.max),
        "--stderr-every".into(),
        s.stderr_every.to_string(),
        "--long-every".into(),
        s.long_every.to_string(),
        "--long-bytes".into(),
        s.long_bytes.to_string(),
    ];
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            containers: vec![Container {
                name: "loggen".into(),
                image: Some(LOGGEN_IMAGE.into()),
                image_pull_policy: Some("Never".into()),
                args: Some(args.to_vec()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The lines written, as `<stream> <line>`.
fn written() -> Multiset {
    let s = spec();
    let mut m = Multiset::new();
    for seq in 0..LINES {
        m.add(format!("{} {}", s.stream(seq).as_str(), s.line(seq)));
    }
    m
}

/// Parses a CRI log (`<time> <stream> <P|F> <content>` per entry) into
/// `<stream> <line>`, joining partial entries per stream. Returns the lines
/// and whether an entry was partial (left open at the end).
fn parse_cri(text: &str) -> Result<(Multiset, usize, bool)> {
    let mut lines = Multiset::new();
    let (mut open_out, mut open_err) = (String::new(), String::new());
    let mut partials = 0;
    for entry in text.lines() {
        let mut parts = entry.splitn(4, ' ');
        let (Some(_time), Some(stream), Some(tag), content) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("not a CRI log entry: {entry:?}");
        };
        let open = match stream {
            "stdout" => &mut open_out,
            "stderr" => &mut open_err,
            _ => bail!("unknown stream in CRI log entry: {entry:?}"),
        };
        open.push_str(content.unwrap_or(""));
        match tag {
            "P" => partials += 1,
            "F" => lines.add(format!("{stream} {}", std::mem::take(open))),
            _ => bail!("unknown CRI tag in entry: {entry:?}"),
        }
    }
    Ok((lines, partials, !open_out.is_empty() || !open_err.is_empty()))
}

fn output(cmd: &mut std::process::Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn a_pod_on_the_real_node_writes_exactly_its_lines_to_the_cri_log() -> Result<()> {
    let test = "a_pod_on_the_real_node_writes_exactly_its_lines_to_the_cri_log";
    let Some(images) = image_dir(test)? else {
        return Ok(());
    };
    let Some(node) = KubeNode::start_or_skip(test, &images.join("pause.tar"), PAUSE_IMAGE).await? else {
        return Ok(());
    };
    // build.sh caches the binary per source hash: after the first run on a
    // machine this is the warm (cached) time.
    println!(
        "harness binary (kubelet, kubectl, control plane) ready in {:.1?}",
        node.binary_after()
    );
    println!(
        "node {} Ready {:.1?} after the start",
        node.name(),
        node.ready_after()
    );
    node.import_image(&images.join("loggen.tar"), LOGGEN_IMAGE)?;

    // The real client: the node as kubectl shows it, and the API's documentation.
    let nodes = output(node.kubectl().args(["get", "nodes", "--no-headers"]))?;
    ensure!(
        nodes
            .lines()
            .any(|l| l.split_whitespace().take(2).eq([node.name(), "Ready"])),
        "kubectl get nodes does not show {} Ready:\n{nodes}",
        node.name()
    );
    // The project's CRDs, applied and explained by the real client.
    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds");
    output(node.kubectl().arg("apply").arg("-f").arg(&crds))?;
    output(node.kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/logdrains.sluice.dev",
        "crd/logbindings.sluice.dev",
    ]))?;
    // The apiserver publishes a new CRD's OpenAPI schema shortly after it
    // is Established: wait for it.
    let deadline = Instant::now() + POD_TIMEOUT;
    let explain = loop {
        match output(node.kubectl().args(["explain", "logdrain.spec"])) {
            Ok(text) => break text,
            Err(e) if Instant::now() < deadline && e.to_string().contains("couldn't find resource") => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e),
        }
    };
    ensure!(
        explain.contains("KIND:       LogDrain") && explain.contains("FIELD: spec"),
        "kubectl explain logdrain.spec printed no documentation:\n{explain}"
    );
    let drains = output(node.kubectl().args(["get", "logdrains", "--all-namespaces"]))?;
    ensure!(
        drains.is_empty(),
        "kubectl get logdrains: unexpected output {drains:?}"
    );
    let explain = output(node.kubectl().args(["explain", "pod.spec.restartPolicy"]))?;
    ensure!(
        explain.contains("FIELD: restartPolicy") && explain.contains("Never"),
        "kubectl explain printed no documentation:\n{explain}"
    );

    let client = node.harness().client().await?;
    let ns = "node-e2e";
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    // The ServiceAccount admission plugin needs the namespace's `default` account.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let deadline = Instant::now() + POD_TIMEOUT;
    let created = loop {
        match pods.create(&PostParams::default(), &loggen_pod("loggen")).await {
            Ok(p) => break p,
            Err(e) if Instant::now() < deadline && e.to_string().contains("serviceaccount") => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("creating the loggen pod"),
        }
    };
    let uid = created.metadata.uid.context("the created pod has no uid")?;
    let phase = loop {
        let pod = pods.get("loggen").await?;
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            break phase;
        }
        if Instant::now() > deadline {
            bail!(
                "the loggen pod is still {phase:?} after {POD_TIMEOUT:?}: {:?}\nkubelet log:\n{}",
                pod.status,
                node.kubelet_log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    ensure!(
        phase == "Succeeded",
        "the loggen pod {phase}: {:?}",
        pods.get("loggen").await?.status
    );

    let dir = node
        .pod_logs_dir()
        .join(format!("{ns}_loggen_{uid}"))
        .join("loggen");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    ensure!(
        files == ["0.log"],
        "expected only 0.log in {}: {files:?}",
        dir.display()
    );
    let (received, partials, open) = parse_cri(&std::fs::read_to_string(dir.join("0.log"))?)?;
    ensure!(!open, "{}: ends inside a partial line", dir.display());
    ensure!(
        partials >= 3,
        "the {} long lines should have been split by containerd, saw {partials} partial entries",
        LINES / spec().long_every
    );
    assert_exact(
        &format!("CRI log {}", Path::new(&dir).join("0.log").display()),
        &written(),
        &received,
    );

    // Teardown with a pod still running leaves nothing behind.
    let mut lingering = loggen_pod("lingering");
    if let Some(c) = lingering.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        c.args = Some(vec!["--count".into(), "1".into(), "--linger".into()]);
    }
    pods.create(&PostParams::default(), &lingering).await?;
    let deadline = Instant::now() + POD_TIMEOUT;
    loop {
        let pod = pods.get("lingering").await?;
        if pod.status.and_then(|s| s.phase).as_deref() == Some("Running") {
            break;
        }
        ensure!(Instant::now() < deadline, "the lingering pod never ran");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    drop(node);
    let left: Vec<String> = [
        "/sys/fs/cgroup/pids/sluice-e2e",
        "/sys/fs/cgroup/memory/sluice-e2e",
        "/sys/class/net/sluice-e2e0",
        "/var/lib/sluice-e2e",
        "/run/sluice-e2e",
    ]
    .into_iter()
    .filter(|p| Path::new(p).exists())
    .map(str::to_owned)
    .collect();
    ensure!(left.is_empty(), "the node left {left:?} behind");
    let nat = output(std::process::Command::new("iptables").args(["-w", "-t", "nat", "-S"]))?;
    ensure!(
        !nat.contains("sluice-e2e"),
        "the node left NAT rules behind:\n{nat}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
    ensure!(!mounts.contains("/sluice-e2e"), "the node left mounts behind");
    Ok(())
}

#[test]
fn cri_entries_are_joined_per_stream() -> Result<()> {
    let text = "t stdout P ab\nt stderr F e1\nt stdout P cd\nt stdout F ef\nt stdout F \n";
    let (lines, partials, open) = parse_cri(text)?;
    let mut want = Multiset::new();
    for l in ["stdout abcdef", "stderr e1", "stdout "] {
        want.add(l);
    }
    assert_exact("parsed", &want, &lines);
    assert_eq!(partials, 2);
    assert!(!open);
    assert!(
        parse_cri("t stdout P x\n")?.2,
        "an unterminated partial is reported"
    );
    assert!(parse_cri("garbage\n").is_err());
    Ok(())
}
