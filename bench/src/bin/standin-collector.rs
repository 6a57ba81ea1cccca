//! `standin-collector`: a deliberately naive shipper with sluice-collector's command line, used
//! to validate the benchmark harness while the real collector is not runnable. It is never
//! reported as sluice.

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, BufWriter, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use clap::Parser;
use sluice_api::node_config::{DrainKind, NodeConfig};

/// Read the node config like sluice-collector does, select Docker containers by the config's
/// selectors (name glob and labels from config.v2.json), read each selected json-file log once
/// from the start, decode every line with serde_json, and send it as RFC5424 with octet counting
/// to every `syslog://` drain that accepts a connection. Then wait to be stopped.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Node config (sluice's YAML).
    #[arg(long)]
    config: PathBuf,
    /// Accepted for command-line compatibility; unused.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Accepted for command-line compatibility; unused.
    #[arg(long)]
    listen: Option<String>,
}

#[derive(serde::Deserialize)]
struct DockerLine {
    log: String,
    stream: String,
    time: String,
}

fn selected_logs(config: &NodeConfig) -> anyhow::Result<Vec<PathBuf>> {
    let dir = config.sources.docker_root.join("containers");
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let dir = entry?.path();
        let Ok(text) = std::fs::read_to_string(dir.join("config.v2.json")) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text)?;
        let id = v["ID"].as_str().unwrap_or_default();
        let name = v["Name"].as_str().unwrap_or_default();
        let labels: BTreeMap<String, String> = v["Config"]["Labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        if config.selectors.iter().any(|s| s.matches(name, &labels)) {
            logs.push(dir.join(format!("{id}-json.log")));
        }
    }
    logs.sort();
    Ok(logs)
}

fn ship(path: &Path, drains: &mut [BufWriter<TcpStream>]) -> anyhow::Result<u64> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut n = 0;
    let mut frame = String::new();
    for line in BufReader::with_capacity(1 << 20, file).lines() {
        let line: DockerLine = serde_json::from_str(&line?)?;
        let pri = if line.stream == "stderr" { 11 } else { 14 };
        let msg = format!(
            "<{pri}>1 {} bench standin - - - {}",
            line.time,
            line.log.trim_end_matches('\n')
        );
        frame.clear();
        frame.push_str(&format!("{} {msg}", msg.len()));
        for d in drains.iter_mut() {
            d.write_all(frame.as_bytes())?;
        }
        n += 1;
    }
    Ok(n)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let text =
        std::fs::read_to_string(&a.config).with_context(|| format!("reading {}", a.config.display()))?;
    let config = NodeConfig::from_yaml(&text)?;
    let mut drains = Vec::new();
    for d in &config.drains {
        if let Ok(DrainKind::SyslogTcp { host, port }) = d.kind() {
            match TcpStream::connect((host.as_str(), port)) {
                Ok(s) => drains.push(BufWriter::with_capacity(1 << 16, s)),
                Err(e) => eprintln!(
                    "standin-collector: drain {} ({}) is down: {e}; skipping it",
                    d.name, d.url
                ),
            }
        }
    }
    let mut total = 0;
    for log in selected_logs(&config)? {
        total += ship(&log, &mut drains)?;
    }
    for d in &mut drains {
        d.flush()?;
    }
    eprintln!("standin-collector: shipped {total} lines; waiting to be stopped");
    loop {
        std::thread::park();
    }
}
