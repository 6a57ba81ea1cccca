//! `bench-report`: print the comparison table of a results file.

use std::path::PathBuf;

use clap::Parser;
use sluice_bench::results;

/// Print, per workload, each shipper's lines/s, CPU seconds per million lines, lines per CPU
/// second, peak RSS and lines received, then the subject against the best peer that passed.
/// Exits 1 when any row FAILed (a line missing or received twice).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Results file written by bench-run.
    #[arg(long)]
    results: PathBuf,
    /// The shipper compared against the others.
    #[arg(long, default_value = "sluice")]
    subject: String,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let rows = results::load(&a.results)?;
    print!("{}", results::table(&rows, &a.subject));
    if rows.iter().any(|r| !r.pass()) {
        println!("\nFAIL: at least one shipper did not deliver every line exactly once");
        std::process::exit(1);
    }
    Ok(())
}
