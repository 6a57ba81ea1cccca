//! `bench-run`: run one shipper on one workload against an in-process counting receiver and
//! append one result row.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use anyhow::{Context as _, bail};
use clap::Parser;
use sluice_bench::{
    procstat::{self, Usage},
    receiver::{self, Tally},
    results::{self, Row},
};
use tokio::{net::TcpListener, time::Instant};

/// Run a log shipper until every workload line reached the counting receiver (or it stalls),
/// measure its CPU seconds and peak RSS from /proc while it is still running, stop it, and append
/// a row to the results file.
///
/// Before the shipper starts, every --render TEMPLATE=OUT is copied with `@PORT@` replaced by the
/// receiver's port, `@DOWN_PORT@` by a port nothing listens on (for a drain that is down), and
/// `@FREE_PORT@` by another free port (e.g. for a metrics listener), and `@NAME@` by VALUE for
/// every --var NAME=VALUE. The same placeholders are replaced in the command line.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Shipper name for the results (`sluice`, `rsyslog`, `syslog-ng`, ...).
    #[arg(long)]
    shipper: String,
    /// Workload name for the results.
    #[arg(long)]
    workload: String,
    /// Number of distinct lines the workload has.
    #[arg(long)]
    expect: u64,
    /// Results file (tab-separated) to append to.
    #[arg(long)]
    results: PathBuf,
    /// TEMPLATE=OUT: render a config template before starting the shipper (repeatable).
    #[arg(long, value_parser = parse_render)]
    render: Vec<(PathBuf, PathBuf)>,
    /// NAME=VALUE: replace `@NAME@` in the templates (repeatable).
    #[arg(long = "var", value_parser = parse_var)]
    vars: Vec<(String, String)>,
    /// File for the shipper's stdout and stderr.
    #[arg(long)]
    log: PathBuf,
    /// Give up when no line arrived for this many seconds (after the first one).
    #[arg(long, default_value_t = 20)]
    idle_timeout: u64,
    /// Give up when no line arrived this many seconds after the start.
    #[arg(long, default_value_t = 120)]
    start_timeout: u64,
    /// After every line arrived, keep the shipper running this many seconds more before taking
    /// its peak memory (shows whether memory grows while a drain is down).
    #[arg(long, default_value_t = 0)]
    linger: u64,
    /// Seconds the shipper may take to exit after SIGTERM before it is killed.
    #[arg(long, default_value_t = 30)]
    stop_timeout: u64,
    /// The shipper's command line.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn parse_render(arg: &str) -> Result<(PathBuf, PathBuf), String> {
    arg.split_once('=')
        .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
        .ok_or_else(|| format!("{arg:?} is not A=B"))
}

fn parse_var(arg: &str) -> Result<(String, String), String> {
    arg.split_once('=')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .ok_or_else(|| format!("{arg:?} is not NAME=VALUE"))
}

/// Replace every `@NAME@` of `vars`; fail on a placeholder left over (a forgotten --var).
fn render(text: &str, vars: &[(String, String)]) -> anyhow::Result<String> {
    let mut text = text.to_owned();
    for (name, value) in vars {
        text = text.replace(&format!("@{name}@"), value);
    }
    // A leftover is `@` + upper-case letters/underscores + `@`.
    for (i, _) in text.match_indices('@') {
        let rest = &text[i + 1..];
        let len = rest
            .bytes()
            .take_while(|b| b.is_ascii_uppercase() || *b == b'_')
            .count();
        if len > 0 && rest.as_bytes().get(len) == Some(&b'@') {
            bail!(
                "placeholder @{}@ has no value (pass --var {}=...)",
                &rest[..len],
                &rest[..len]
            );
        }
    }
    Ok(text)
}

/// Stops the shipper (SIGTERM, then SIGKILL after the stop timeout) however `main` ends.
struct Shipper(Child, Duration);

impl Drop for Shipper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let pid = self.0.id() as libc::pid_t;
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let polls = self.1.as_millis() / 100;
            for _ in 0..polls {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            eprintln!(
                "bench-run: the shipper did not stop within {:?} of SIGTERM; killing it",
                self.1
            );
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Render the templates and the command line with the placeholders of this run.
fn prepare(args: &Args, port: u16) -> anyhow::Result<Vec<String>> {
    let free_port =
        || -> anyhow::Result<u16> { Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
    let mut vars = args.vars.clone();
    vars.push(("PORT".into(), port.to_string()));
    vars.push(("DOWN_PORT".into(), free_port()?.to_string()));
    vars.push(("FREE_PORT".into(), free_port()?.to_string()));
    for (template, out) in &args.render {
        let text =
            std::fs::read_to_string(template).with_context(|| format!("reading {}", template.display()))?;
        let text = render(&text, &vars).with_context(|| format!("rendering {}", template.display()))?;
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    }
    args.command
        .iter()
        .map(|arg| render(arg, &vars))
        .collect::<anyhow::Result<Vec<_>>>()
}

/// Append the run's row to the results file and print it.
fn record(args: &Args, tally: &Tally, end: &str, usage: Usage) -> anyhow::Result<()> {
    let row = Row {
        workload: args.workload.clone(),
        shipper: args.shipper.clone(),
        expected: args.expect,
        unique: tally.unique.load(Relaxed),
        duplicates: tally.duplicates.load(Relaxed),
        seconds: tally
            .span()
            .map_or(0.0, |(first, last)| (last - first).as_secs_f64()),
        cpu_seconds: usage.cpu_seconds,
        peak_rss_kib: usage.peak_rss_kib,
        end: end.to_owned(),
    };
    results::append(&args.results, &row)?;
    let mark = if row.pass() { "PASS" } else { "FAIL" };
    // The receiver shares this process; its CPU shows whether it could have been the bottleneck.
    let own_cpu = procstat::process_cpu_seconds(std::process::id()).unwrap_or(f64::NAN);
    eprintln!(
        "bench-run: {mark} {} {}: {}/{} lines ({} dup, {} foreign) in {:.2}s, {:.2} CPU s, peak {:.1} MiB, end={end} (receiver: {own_cpu:.2} CPU s)",
        args.shipper,
        args.workload,
        row.unique,
        row.expected,
        row.duplicates,
        tally.foreign.load(Relaxed),
        row.seconds,
        row.cpu_seconds,
        row.peak_rss_mib()
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the receiver")?;
    let port = listener.local_addr()?.port();
    let command = prepare(&a, port)?;
    let tally = Arc::new(Tally::new(a.expect));
    tokio::spawn(receiver::serve(listener, Arc::clone(&tally)));

    let log = std::fs::File::create(&a.log).with_context(|| format!("creating {}", a.log.display()))?;
    let child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let mut shipper = Shipper(child, Duration::from_secs(a.stop_timeout));
    let pid = shipper.0.id();
    eprintln!(
        "bench-run: {} on {} (pid {pid}), receiver on port {port}",
        a.shipper, a.workload
    );

    let (end, mut usage) = watch(&a, &mut shipper, &tally).await?;
    if a.linger > 0 && end == "complete" {
        // Keep the shipper running (e.g. retrying a dead drain) and take the peak memory again;
        // the CPU figure stays the one taken when the last line arrived.
        tokio::time::sleep(Duration::from_secs(a.linger)).await;
        if let (Some(u), Ok(later)) = (usage.as_mut(), procstat::usage(shipper.0.id())) {
            u.peak_rss_kib = u.peak_rss_kib.max(later.peak_rss_kib);
        }
    }
    drop(shipper);
    if usage.is_none() {
        eprintln!(
            "bench-run: {} exited before it could be measured; see {}",
            a.shipper,
            a.log.display()
        );
    }
    record(&a, &tally, end, usage.unwrap_or_default())
}

/// Poll until the run ends; returns why, and the measurement taken as it ended (or, if the
/// shipper exited by itself, the last one taken while it ran).
async fn watch(
    args: &Args,
    shipper: &mut Shipper,
    tally: &Tally,
) -> anyhow::Result<(&'static str, Option<Usage>)> {
    let started = Instant::now();
    let pid = shipper.0.id();
    let mut last_usage = None;
    // Check the receiver often (the CPU figure is read the moment the last line arrived), but
    // scan /proc only about once a second while waiting, to leave the CPU to the shipper.
    let mut tick = 0u64;
    loop {
        tick += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        if shipper.0.try_wait()?.is_some() {
            return Ok(("exited", last_usage));
        }
        let now = Instant::now();
        let end = if tally.unique.load(Relaxed) >= args.expect {
            Some("complete")
        } else {
            match tally.span() {
                Some((_, last)) if now - last > Duration::from_secs(args.idle_timeout) => Some("idle"),
                None if now - started > Duration::from_secs(args.start_timeout) => Some("timeout"),
                _ => None,
            }
        };
        if (end.is_some() || tick.is_multiple_of(20))
            && let Ok(u) = procstat::usage(pid)
        {
            last_usage = Some(u);
        }
        if let Some(end) = end {
            return Ok((end, last_usage));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_replaces_every_placeholder_and_names_a_missing_one() {
        let vars = [
            ("PORT".to_owned(), "514".to_owned()),
            ("DOCKER_ROOT".to_owned(), "/d".to_owned()),
        ];
        assert_eq!(
            render("@version: 3.38 @DOCKER_ROOT@:@PORT@ a@b", &vars).unwrap(),
            "@version: 3.38 /d:514 a@b"
        );
        let err = render("port(@DOWN_PORT@)", &vars).unwrap_err().to_string();
        assert!(err.contains("@DOWN_PORT@"), "{err}");
    }
}
