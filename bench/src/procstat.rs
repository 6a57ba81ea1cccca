//! CPU time and peak memory of a process tree, read from `/proc`.
//!
//! Invariants: a [`Usage`] is read while the processes are alive (a reaped process has no
//! `/proc` entry, a zombie no memory figures); it covers the given pid and every live descendant,
//! so a shipper that forks workers is measured whole. CPU is user + system time, peak memory is
//! the sum of each process's `VmHWM` (its resident high-water mark).

use std::{fs, io, path::PathBuf};

/// `/proc` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a `/proc` file failed (the process may have exited).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A `/proc` file did not have the expected shape.
    #[error("unexpected contents in {path}")]
    Format {
        /// The file.
        path: PathBuf,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Resource use of a process tree.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Sum of the peak resident set sizes, in KiB.
    pub peak_rss_kib: u64,
    /// How many processes were measured.
    pub processes: u32,
}

fn read(path: PathBuf) -> Result<String> {
    fs::read_to_string(&path).map_err(|source| Error::Io { path, source })
}

/// `(ppid, utime + stime in ticks)` from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Result<(u32, u64)> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let text = read(path.clone())?;
    // The command name (field 2) may contain spaces and parentheses: fields resume after the
    // last `)`. From there: state(3) ppid(4) ... utime(14) stime(15).
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| Error::Format { path: path.clone() })?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    match (num(1), num(11), num(12)) {
        (Some(ppid), Some(utime), Some(stime)) => Ok((ppid as u32, utime + stime)),
        _ => Err(Error::Format { path }),
    }
}

/// `VmHWM` of a process in KiB (0 for kernel threads and zombies, which have none).
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let text = read(path.clone())?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0))
}

/// The pid and all its live descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Ok((ppid, _)) = stat(p)
            {
                parents.push((p, ppid));
            }
        }
    }
    // Breadth-first over the parent links, starting from the root pid.
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    found
}

/// The clock ticks per second used by `/proc/<pid>/stat`.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU seconds (user + system, all threads) of one process, without its descendants.
pub fn process_cpu_seconds(pid: u32) -> Result<f64> {
    Ok(stat(pid)?.1 as f64 / ticks_per_second())
}

/// Measure `pid` and its descendants now.
pub fn usage(pid: u32) -> Result<Usage> {
    let mut ticks = 0;
    let mut peak = 0;
    let mut processes = 0;
    for (i, p) in tree(pid).into_iter().enumerate() {
        // The root must be readable; a descendant may exit between listing and reading.
        match (stat(p), peak_rss_kib(p)) {
            (Ok((_, t)), Ok(kib)) => {
                ticks += t;
                peak += kib;
                processes += 1;
            }
            (Err(e), _) | (_, Err(e)) if i == 0 => return Err(e),
            _ => {}
        }
    }
    Ok(Usage {
        cpu_seconds: ticks as f64 / ticks_per_second(),
        peak_rss_kib: peak,
        processes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_this_process() {
        let u = usage(std::process::id()).unwrap();
        assert!(u.processes >= 1);
        assert!(u.peak_rss_kib > 0);
    }

    #[test]
    fn includes_children() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let t = tree(std::process::id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(t.contains(&child.id()), "{t:?} lacks {}", child.id());
    }
}
