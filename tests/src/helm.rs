//! The pinned helm that `scripts/setup.sh` builds, run with its own empty config, cache and data
//! directories (no repositories or cache of the machine's user), and the chart `charts/sluice`.
//! helm talks to a cluster only when a caller passes `--kubeconfig`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, Result, ensure};
use serde::Deserialize;
use serde_json::Value;

use crate::support::{Missing, need, temp_dir};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/sluice")
}

/// The pinned helm: `$SLUICE_HELM`, else `$SLUICE_CACHE/bin/helm-<HELM_VERSION of scripts/lib.sh>`.
pub fn helm_binary() -> Result<PathBuf, Missing> {
    if let Some(path) = std::env::var_os("SLUICE_HELM") {
        return Ok(PathBuf::from(path));
    }
    let lib = std::fs::read_to_string(repo_root().join("scripts/lib.sh"))
        .map_err(|e| Missing::new("scripts/lib.sh", e.to_string()))?;
    let version = lib
        .lines()
        .find_map(|l| l.strip_prefix("HELM_VERSION="))
        .ok_or_else(|| Missing::new("HELM_VERSION", "scripts/lib.sh does not set it"))?;
    let cache = std::env::var("SLUICE_CACHE").unwrap_or_else(|_| "/var/cache/sluice".into());
    let path = PathBuf::from(cache).join(format!("bin/helm-{version}"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(Missing::new(
            "helm",
            format!("{} does not exist; scripts/setup.sh builds it", path.display()),
        ))
    }
}

/// helm with private config, cache and data directories.
pub struct Helm {
    bin: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    /// The pinned helm, or `None` after the loud skip of [`need`] (a panic under
    /// `SLUICE_REQUIRE_ALL=1`).
    pub fn new(test: &str) -> Option<Self> {
        let bin = need(test, helm_binary())?;
        let home = temp_dir("sluice-helm-").expect("invariant: a temp dir can be created");
        Some(Self { bin, home })
    }

    /// Runs helm with `args`.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let mut command = Command::new(&self.bin);
        for (var, dir) in [
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_DATA_HOME", "data"),
        ] {
            command.env(var, self.home.path().join(dir));
        }
        command
            .env("KUBECONFIG", self.home.path().join("no-kubeconfig"))
            .args(args);
        command.output().with_context(|| format!("running {command:?}"))
    }

    /// Runs helm and fails with its output unless it succeeds.
    pub fn ok(&self, args: &[&str]) -> Result<String> {
        let out = self.run(args)?;
        ensure!(
            out.status.success(),
            "helm {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `helm template` of the chart as `release` in `namespace` into one JSON value per rendered
    /// object (empty documents dropped).
    pub fn template_in(&self, release: &str, namespace: &str, extra: &[&str]) -> Result<Vec<Value>> {
        let chart = chart_dir();
        let chart = chart.to_str().expect("invariant: the repository path is UTF-8");
        let args = [&["template", release, chart, "--namespace", namespace], extra].concat();
        parse_documents(&self.ok(&args)?)
    }
}

/// Every non-empty document of a YAML stream, as JSON.
pub fn parse_documents(yaml: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document).context("helm rendered invalid YAML")?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}
