//! `count-receiver`: a TCP syslog receiver that counts (see `sluice_bench::receiver`).

use std::{path::PathBuf, sync::Arc, sync::atomic::Ordering::Relaxed, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use sluice_bench::receiver::{self, Tally};
use tokio::{net::TcpListener, signal::unix, time::Instant};

/// Accept syslog over TCP (octet-counted per RFC6587 or newline-framed, decided per message),
/// count messages, bytes and distinct workload lines (by their `[sb N]` marker), and print the
/// counts as `key=value` pairs when the expected number of distinct lines arrived, when no
/// message came for --idle-timeout seconds after the first one, or on SIGTERM/SIGINT.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port; see --port-file).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Number of distinct workload lines expected (sequence numbers 0..N).
    #[arg(long)]
    expect: u64,
    /// Write the bound port here once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
    /// Also write the final counts here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stop after this many seconds without a message (once the first one came).
    #[arg(long, default_value_t = 30)]
    idle_timeout: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let listener = TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let port = listener.local_addr()?.port();
    if let Some(f) = &a.port_file {
        std::fs::write(f, format!("{port}\n")).with_context(|| format!("writing {}", f.display()))?;
    }
    eprintln!(
        "count-receiver: listening on port {port}, expecting {} lines",
        a.expect
    );
    let tally = Arc::new(Tally::new(a.expect));
    let server = tokio::spawn(receiver::serve(listener, Arc::clone(&tally)));
    let mut term = unix::signal(unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let idle = Duration::from_secs(a.idle_timeout);
    let why = loop {
        tokio::select! {
            _ = term.recv() => break "sigterm",
            _ = tokio::signal::ctrl_c() => break "sigint",
            _ = tick.tick() => {}
        }
        if server.is_finished() {
            break "listener failed";
        }
        if tally.unique.load(Relaxed) >= a.expect {
            break "complete";
        }
        if tally.span().is_some_and(|(_, last)| Instant::now() - last > idle) {
            break "idle";
        }
    };
    let line = format!("{} end={why}", tally.summary());
    println!("{line}");
    if let Some(f) = &a.out {
        std::fs::write(f, format!("{line}\n")).with_context(|| format!("writing {}", f.display()))?;
    }
    Ok(())
}
