//! `gen-workload`: write a deterministic Docker json-file workload (see `sluice_bench::workload`).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use sluice_bench::workload::{self, Workload};

/// Write a Docker-shaped log workload: `<root>/containers/<id>/<id>-json.log` plus a
/// `config.v2.json` (name `bench-NNNN`, label `sluice.bench=1`) for each container. Every
/// application line carries a marker `[sb NNNNNNNNNN]` with its global sequence number, which
/// `count-receiver` uses to count distinct lines. Skips the work when `<root>` already holds
/// the same workload.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Docker data root to create.
    #[arg(long)]
    root: PathBuf,
    /// Number of containers (one log file each).
    #[arg(long, default_value_t = 1)]
    containers: u32,
    /// Lines per container.
    #[arg(long)]
    lines_per_container: u64,
    /// Shortest application line in bytes (marker included, JSON envelope excluded).
    #[arg(long, default_value_t = 100)]
    min_bytes: usize,
    /// Longest application line in bytes.
    #[arg(long, default_value_t = 200)]
    max_bytes: usize,
    /// PRNG seed (same seed, same bytes).
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let w = Workload {
        root: a.root,
        containers: a.containers,
        lines_per_container: a.lines_per_container,
        min_bytes: a.min_bytes,
        max_bytes: a.max_bytes,
        seed: a.seed,
    };
    if workload::is_current(&w) {
        println!(
            "gen-workload: {} already holds this workload ({} lines)",
            w.root.display(),
            w.total_lines()
        );
        return Ok(());
    }
    if w.root.exists() {
        std::fs::remove_dir_all(&w.root)
            .with_context(|| format!("removing the old workload {}", w.root.display()))?;
    }
    w.generate()?;
    workload::write_stamp(&w)?;
    println!(
        "gen-workload: wrote {} containers, {} lines under {}",
        w.containers,
        w.total_lines(),
        w.root.display()
    );
    Ok(())
}
