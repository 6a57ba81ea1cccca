//! The `kubectl-sluice` binary run as a user runs it, and the checks of what `kubectl sluice
//! logs` printed: each pod's lines exactly as written and in order, the whole in time order.
//! Shared by the plugin's tests with host-process collectors and on the real node (the binary's
//! path comes from the test, `env!("CARGO_BIN_EXE_kubectl-sluice")`).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use sluice_api::query::RecentLine;

use serde_json::json;

use crate::LineSpec;

/// What a run of the plugin returned.
pub struct Run {
    /// The exit code (-1: killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines = self.stdout.lines().count();
        let head: String = self.stdout.lines().take(5).collect::<Vec<_>>().join("\n");
        write!(
            f,
            "exit code {}; stderr: {:?}; stdout ({lines} lines) begins:\n{head}",
            self.code, self.stderr
        )
    }
}

/// The plugin binary.
#[derive(Clone, Debug)]
pub struct Plugin {
    bin: PathBuf,
}

impl Plugin {
    /// The binary at `bin`.
    pub fn new(bin: impl Into<PathBuf>) -> Self {
        Self { bin: bin.into() }
    }

    /// The plugin with `args`, with no inherited KUBECONFIG and HOME where no kubeconfig is.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env_remove("KUBECONFIG")
            .env_remove("SLUICE_NAMESPACE")
            .env("HOME", "/nonexistent");
        cmd
    }

    /// Run it with `args` to its end.
    pub fn run(&self, args: &[&str]) -> Result<Run> {
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("running {}", self.bin.display()))?;
        Ok(Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8(out.stdout)?,
            stderr: String::from_utf8(out.stderr)?,
        })
    }

    /// Run it with `--kubeconfig kubeconfig` and `args`.
    pub fn run_as(&self, kubeconfig: &Path, args: &[&str]) -> Result<Run> {
        let kubeconfig = kubeconfig.display().to_string();
        self.run(&[&["--kubeconfig", kubeconfig.as_str()][..], args].concat())
    }

    /// Start it with `--kubeconfig kubeconfig` and `args` in the background (a follow), its
    /// output going to files in `dir`.
    pub fn follow(&self, dir: &Path, kubeconfig: &Path, args: &[&str]) -> Result<Follow> {
        let (stdout, stderr) = (dir.join("follow.out"), dir.join("follow.err"));
        let kubeconfig = kubeconfig.display().to_string();
        let child = self
            .command(&[&["--kubeconfig", kubeconfig.as_str()][..], args].concat())
            .stdout(Stdio::from(std::fs::File::create(&stdout)?))
            .stderr(Stdio::from(std::fs::File::create(&stderr)?))
            .spawn()
            .context("starting kubectl sluice logs -f")?;
        Ok(Follow {
            child,
            stdout,
            stderr,
        })
    }
}

/// A follow running in the background, its output in files; killed (by its pid) on drop.
pub struct Follow {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Follow {
    /// What it wrote to standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The complete lines printed so far.
    pub fn lines(&self) -> Vec<RecentLine> {
        let text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait until it has written `text` to standard error (`Following` once it is in place).
    pub fn wait_for_stderr(&self, what: &str, text: &str, timeout: Duration) -> Result<()> {
        crate::support::wait_until(
            what,
            timeout,
            || self.stderr().contains(text).then_some(()),
            || self.stderr(),
        )
    }

    /// Wait until it has printed at least `count` lines; they are returned.
    pub fn wait_for_lines(&self, what: &str, count: usize, timeout: Duration) -> Result<Vec<RecentLine>> {
        crate::support::wait_until(
            what,
            timeout,
            || {
                let lines = self.lines();
                (lines.len() >= count).then_some(lines)
            },
            || format!("{} lines; stderr: {}", self.lines().len(), self.stderr()),
        )
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lines of a `-o json` run, failing on anything else.
pub fn json_lines(run: &Run) -> Result<Vec<RecentLine>> {
    ensure!(run.code == 0, "kubectl sluice logs failed: {run:?}");
    run.stdout
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not a JSON line: {l}")))
        .collect()
}

/// Each pod's (`namespace/pod`) messages, in the order printed.
pub fn by_pod(lines: &[RecentLine]) -> BTreeMap<String, Vec<String>> {
    let mut pods: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in lines {
        pods.entry(format!("{}/{}", l.namespace, l.pod))
            .or_default()
            .push(l.line.clone());
    }
    pods
}

/// The first `count` lines `spec` writes, in order.
pub fn written(spec: &LineSpec, count: u64) -> Vec<String> {
    (0..count).map(|seq| spec.line(seq)).collect()
}

/// Exactly these pods' (`namespace/pod`) lines, each pod's the first `count` of its spec in the
/// order written.
pub fn expect_pods(what: &str, lines: &[RecentLine], want: &[(&str, &LineSpec)], count: u64) -> Result<()> {
    let got = by_pod(lines);
    let want: BTreeMap<String, Vec<String>> = want
        .iter()
        .map(|(pod, spec)| ((*pod).to_owned(), written(spec, count)))
        .collect();
    if got != want {
        let summary = |m: &BTreeMap<String, Vec<String>>| {
            m.iter()
                .map(|(k, v)| format!("{k}: {}", v.len()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let first_difference = want
            .iter()
            .find_map(|(pod, lines)| {
                let got = got.get(pod).map(Vec::as_slice).unwrap_or_default();
                let i = lines.iter().zip(got).position(|(w, g)| w != g)?;
                Some(format!("; {pod}'s line {i} is {:?}, want {:?}", got[i], lines[i]))
            })
            .unwrap_or_default();
        bail!(
            "{what}: got {{{}}}, want {{{}}}{first_difference}",
            summary(&got),
            summary(&want)
        );
    }
    Ok(())
}

/// A run of `kubectl sluice logs` by a caller without `get pods/log` in `namespace` (`None`:
/// in any namespace, for `-A`): refused with exit code 4 and the reason.
pub fn expect_refused(run: &Run, namespace: Option<&str>) -> Result<()> {
    let reason = match namespace {
        Some(ns) => format!("may not read pod logs in namespace {ns:?}"),
        None => "may not read pod logs in any namespace".to_owned(),
    };
    ensure!(
        run.code == 4 && run.stderr.contains(&reason),
        "want exit code 4 and {reason:?}: {run:?}"
    );
    Ok(())
}

/// The times of `lines` never go back.
pub fn expect_time_order(what: &str, lines: &[RecentLine]) -> Result<()> {
    let times: Vec<jiff::Timestamp> = lines
        .iter()
        .map(|l| {
            l.time
                .parse()
                .with_context(|| format!("{what}: bad time {:?}", l.time))
        })
        .collect::<Result<_>>()?;
    if let Some(i) = times.windows(2).position(|w| w[0] > w[1]) {
        bail!(
            "{what}: line {} ({}) comes after a later one ({})",
            i + 1,
            times[i + 1],
            times[i]
        );
    }
    Ok(())
}

/// Grant `user` these rules in `namespace` (a Role and its RoleBinding, both named `name`).
pub async fn grant(
    client: &Client,
    namespace: &str,
    name: &str,
    user: &str,
    rules: serde_json::Value,
) -> Result<()> {
    let params = PatchParams::apply("sluice-plugin-tests").force();
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                      "metadata": {"name": name, "namespace": namespace}, "rules": rules});
    Api::<Role>::namespaced(client.clone(), namespace)
        .patch(name, &params, &Patch::Apply(&role))
        .await?;
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("{name}-{user}"), "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]});
    Api::<RoleBinding>::namespaced(client.clone(), namespace)
        .patch(&format!("{name}-{user}"), &params, &Patch::Apply(&binding))
        .await?;
    Ok(())
}

/// A plain HTTP GET of a collector's recent lines at `address` with an optional bearer token:
/// the status code.
pub fn collector_status(address: &str, token: Option<&str>) -> Result<u16> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET /v1/recent?namespace=default HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let code = answer.split_whitespace().nth(1).context("no status line")?;
    Ok(code.parse()?)
}

/// A client certificate chain and key (PEM).
pub type ClientIdentity<'a> = (&'a str, &'a str);

/// `request` sent over TLS to `address`, the server verified against `ca_pem` for
/// `server_name`, presenting `client` if given: the raw answer, empty when the server ended the
/// connection without one (a refused handshake: the client sees its write or its read fail with
/// an alert, or the connection close).
pub fn tls_exchange(
    address: std::net::SocketAddr,
    server_name: &str,
    ca_pem: &str,
    client: Option<ClientIdentity<'_>>,
    request: &str,
) -> Result<String> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match client {
        Some((cert, key)) => builder.with_client_auth_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_slice(key.as_bytes())?,
        )?,
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(server_name.to_owned())?;
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name)?;
    let socket = std::net::TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::StreamOwned::new(connection, socket);
    let mut answer = Vec::new();
    if tls.write_all(request.as_bytes()).is_ok() {
        let _ = tls.read_to_end(&mut answer);
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// A GET of a collector's recent lines at `address` over TLS (see [`tls_exchange`]) with an
/// optional bearer token: the status code, `None` when the server gave no answer (it refused the
/// handshake).
pub fn collector_status_tls(
    address: std::net::SocketAddr,
    server_name: &str,
    ca_pem: &str,
    client: Option<ClientIdentity<'_>>,
    token: Option<&str>,
) -> Result<Option<u16>> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /v1/recent?namespace=default HTTP/1.1\r\nHost: {server_name}\r\n{auth}Connection: close\r\n\r\n"
    );
    let answer = tls_exchange(address, server_name, ca_pem, client, &request)?;
    if answer.is_empty() {
        return Ok(None);
    }
    let code = answer
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("no status line in {answer:?}"))?;
    Ok(Some(code.parse()?))
}

/// Whether a plain HTTP request to `address` gets no HTTP answer at all (a TLS server drops it):
/// `Ok(true)` when the connection ends or fails without a status line.
pub fn plain_http_unanswered(address: &str, token: &str) -> Result<bool> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect(address).with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut answer = Vec::new();
    let sent = write!(
        stream,
        "GET /v1/recent?namespace=default HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    if sent.is_ok() {
        let _ = stream.read_to_end(&mut answer);
    }
    Ok(!String::from_utf8_lossy(&answer).starts_with("HTTP/"))
}
