//! What the bench reads besides the API: the apiserver's and the operator's metrics, and the CPU
//! time and peak RSS of processes from `/proc`.

use anyhow::{Context as _, Result};
use kube::Client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The sum of `apiserver_request_total` over all label sets.
pub async fn apiserver_requests(client: &Client) -> Result<f64> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// `apiserver_request_total` summed by `(verb, resource)`.
pub async fn apiserver_requests_by(
    client: &Client,
) -> Result<std::collections::BTreeMap<(String, String), f64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let label = |name: &str| {
            let start = line.find(&format!("{name}=\""))? + name.len() + 2;
            let end = line[start..].find('"')? + start;
            Some(line[start..end].to_owned())
        };
        let (Some(verb), Some(resource)) = (label("verb"), label("resource")) else {
            continue;
        };
        let value: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry((verb, resource)).or_insert(0.0) += value;
    }
    Ok(out)
}

/// The operator's `/metrics` text.
pub async fn operator_metrics(port: u16) -> Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

/// The sum of the samples whose line starts with `prefix` (a metric name, or name + labels).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The cumulative buckets `(le, count)` of histogram `name` (no other labels), in `le` order.
pub fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The bucket bound under which fraction `q` of the observations fall, counting only what was
/// observed after `before` (an earlier reading of the same buckets).
pub fn quantile_bound(before: &[(f64, f64)], after: &[(f64, f64)], quantile: f64) -> f64 {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let old = before.iter().find(|(b, _)| b == le).map_or(0.0, |(_, n)| *n);
            (*le, n - old)
        })
        .collect();
    let total = delta.last().map_or(0.0, |(_, n)| *n);
    delta
        .iter()
        .find(|(_, n)| *n >= total * quantile)
        .map_or(f64::INFINITY, |(le, _)| *le)
}

/// User + system CPU seconds a process has used so far (`/proc/<pid>/stat`, 100 ticks/s).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`, which may hold spaces: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').context("malformed /proc/<pid>/stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks =
        |i: usize| -> Result<f64> { Ok(fields.get(i).context("short /proc/<pid>/stat")?.parse::<f64>()?) };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Total CPU seconds of the whole machine (all cores, busy time) from `/proc/stat`.
pub fn machine_busy_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let busy: f64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, x)| x)
        .sum();
    Ok(busy / 100.0)
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .context("VmHWM in /proc/<pid>/status")
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
