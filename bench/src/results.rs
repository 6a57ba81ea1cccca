//! Benchmark results: one tab-separated row per shipper run, and the comparison table.
//!
//! Invariants: a row is written once, after its run ended, with everything measured; the table
//! is computed from rows alone (no run-time state), so `bench-report` can be re-run on an old
//! results file. A row PASSes only when every expected line arrived and none twice.

use std::{fmt::Write as _, fs, io, path::Path};

/// A results file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or appending failed.
    #[error("results file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A row does not have the expected columns.
    #[error("results file {path}, line {line}: {message}")]
    Format {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One shipper's run on one workload.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The workload (`single`, `many`, `many-drain-down`).
    pub workload: String,
    /// The shipper (`sluice`, `rsyslog`, `syslog-ng`, `standin`).
    pub shipper: String,
    /// Lines written.
    pub expected: u64,
    /// Distinct lines received.
    pub unique: u64,
    /// Lines received more than once.
    pub duplicates: u64,
    /// Wall seconds from the first to the last line received.
    pub seconds: f64,
    /// User + system CPU seconds of the shipper's process tree.
    pub cpu_seconds: f64,
    /// Peak resident set size in KiB.
    pub peak_rss_kib: u64,
    /// Why the run ended (`complete`, `idle`, `exited`, `timeout`).
    pub end: String,
}

const HEADER: &str =
    "workload\tshipper\texpected\tunique\tduplicates\tseconds\tcpu_seconds\tpeak_rss_kib\tend";

impl Row {
    /// Whether every line arrived exactly once.
    pub fn pass(&self) -> bool {
        self.unique == self.expected && self.duplicates == 0
    }
    /// Lines per wall second.
    pub fn lines_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.unique as f64 / self.seconds
        } else {
            0.0
        }
    }
    /// Lines per CPU second.
    pub fn lines_per_cpu_second(&self) -> f64 {
        if self.cpu_seconds > 0.0 {
            self.unique as f64 / self.cpu_seconds
        } else {
            0.0
        }
    }
    /// Peak RSS in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_kib as f64 / 1024.0
    }

    fn to_tsv(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{:.3}\t{:.3}\t{}\t{}\n",
            self.workload,
            self.shipper,
            self.expected,
            self.unique,
            self.duplicates,
            self.seconds,
            self.cpu_seconds,
            self.peak_rss_kib,
            self.end
        )
    }

    fn from_tsv(line: &str) -> Result<Self, String> {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 9 {
            return Err(format!("expected 9 tab-separated columns, found {}", f.len()));
        }
        let int = |i: usize| f[i].parse::<u64>().map_err(|e| format!("column {}: {e}", i + 1));
        let float = |i: usize| f[i].parse::<f64>().map_err(|e| format!("column {}: {e}", i + 1));
        Ok(Row {
            workload: f[0].to_owned(),
            shipper: f[1].to_owned(),
            expected: int(2)?,
            unique: int(3)?,
            duplicates: int(4)?,
            seconds: float(5)?,
            cpu_seconds: float(6)?,
            peak_rss_kib: int(7)?,
            end: f[8].to_owned(),
        })
    }
}

/// Append `row` to the results file at `path` (creating it with a header).
pub fn append(path: &Path, row: &Row) -> Result<()> {
    let err = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    let mut text = if path.exists() {
        String::new()
    } else {
        format!("{HEADER}\n")
    };
    text.push_str(&row.to_tsv());
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    io::Write::write_all(&mut file, text.as_bytes()).map_err(err)
}

/// Read every row of the results file at `path`.
pub fn load(path: &Path) -> Result<Vec<Row>> {
    let text = fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && *l != HEADER)
        .map(|(i, l)| {
            Row::from_tsv(l).map_err(|message| Error::Format {
                path: path.display().to_string(),
                line: i + 1,
                message,
            })
        })
        .collect()
}

/// One row per (workload, shipper) from repeated runs: a failed run if any failed, else the run
/// with the median lines per CPU second; the peak RSS is the largest of all runs. Also returns
/// how many runs there were. First-seen order is kept.
pub fn combine(rows: &[Row]) -> Vec<(Row, usize)> {
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.workload.as_str(), r.shipper.as_str())) {
            keys.push((&r.workload, &r.shipper));
        }
    }
    keys.into_iter()
        .map(|(w, s)| {
            let mut runs: Vec<&Row> = rows
                .iter()
                .filter(|r| r.workload == w && r.shipper == s)
                .collect();
            runs.sort_by(|a, b| a.lines_per_cpu_second().total_cmp(&b.lines_per_cpu_second()));
            let pick = runs.iter().find(|r| !r.pass()).unwrap_or(&runs[runs.len() / 2]);
            let mut row = (*pick).clone();
            row.peak_rss_kib = runs.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0);
            (row, runs.len())
        })
        .collect()
}

/// The comparison table: per workload a row per shipper (see [`combine`] for repeated runs),
/// then `subject` against the best peer.
pub fn table(rows: &[Row], subject: &str) -> String {
    let combined = combine(rows);
    let mut out = String::new();
    let mut workloads: Vec<&str> = Vec::new();
    for (r, _) in &combined {
        if !workloads.contains(&r.workload.as_str()) {
            workloads.push(&r.workload);
        }
    }
    for w in workloads {
        let in_w: Vec<&(Row, usize)> = combined.iter().filter(|(r, _)| r.workload == w).collect();
        let _ = writeln!(out, "\n== workload {w} ({} lines)", in_w[0].0.expected);
        let _ = writeln!(
            out,
            "{:<10} {:>4} {:>12} {:>10} {:>12} {:>10} {:>21} {:>7}",
            "shipper", "runs", "lines/s", "CPU s/M", "lines/CPU-s", "peak MiB", "received/expected", "result"
        );
        for (r, runs) in &in_w {
            let verdict = if r.pass() {
                "PASS".to_owned()
            } else {
                format!("FAIL ({}, dup {})", r.end, r.duplicates)
            };
            let cpu_per_million = if r.unique > 0 {
                r.cpu_seconds * 1e6 / r.unique as f64
            } else {
                f64::NAN
            };
            let _ = writeln!(
                out,
                "{:<10} {:>4} {:>12.0} {:>10.3} {:>12.0} {:>10.1} {:>21} {:>7}",
                r.shipper,
                runs,
                r.lines_per_second(),
                cpu_per_million,
                r.lines_per_cpu_second(),
                r.peak_rss_mib(),
                format!("{}/{}", r.unique, r.expected),
                verdict
            );
        }
        let rows: Vec<&Row> = in_w.iter().map(|(r, _)| r).collect();
        let _ = write!(out, "{}", ratio_line(&rows, subject));
    }
    out
}

/// The shipper name of another build of the subject (`BASELINE_COLLECTOR` in `collector.sh`):
/// compared with the subject on a line of its own, never taken as a peer.
pub const BASELINE: &str = "baseline";

/// `subject` against the best peer (by lines per CPU second) of one workload, and against the
/// baseline build if one ran.
fn ratio_line(rows: &[&Row], subject: &str) -> String {
    let Some(me) = rows.iter().find(|r| r.shipper == subject) else {
        return String::new();
    };
    let compare = |label: String, other: &Row| {
        format!(
            "{subject} vs {label}: {:.2}x lines per CPU second, {:.2}x peak RSS ({:.1} vs {:.1} MiB)\n",
            me.lines_per_cpu_second() / other.lines_per_cpu_second(),
            me.peak_rss_mib() / other.peak_rss_mib(),
            me.peak_rss_mib(),
            other.peak_rss_mib()
        )
    };
    let best = rows
        .iter()
        .filter(|r| r.shipper != subject && r.shipper != BASELINE && r.pass())
        .max_by(|a, b| a.lines_per_cpu_second().total_cmp(&b.lines_per_cpu_second()));
    let mut out = best.map_or_else(String::new, |peer| {
        compare(format!("best peer ({})", peer.shipper), peer)
    });
    if let Some(base) = rows.iter().find(|r| r.shipper == BASELINE && r.pass()) {
        out.push_str(&compare("baseline build".to_owned(), base));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(shipper: &str, unique: u64, cpu: f64, rss: u64) -> Row {
        Row {
            workload: "single".into(),
            shipper: shipper.into(),
            expected: 1000,
            unique,
            duplicates: 0,
            seconds: 2.0,
            cpu_seconds: cpu,
            peak_rss_kib: rss,
            end: "complete".into(),
        }
    }

    #[test]
    fn rows_round_trip_and_the_table_compares_with_the_best_passing_peer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.tsv");
        let rows = [
            row("sluice", 1000, 0.5, 10240),
            row("rsyslog", 1000, 2.0, 20480),
            row("syslog-ng", 999, 0.1, 1024),
        ];
        for r in &rows {
            append(&path, r).unwrap();
        }
        assert_eq!(load(&path).unwrap(), rows);
        let t = table(&rows, "sluice");
        assert!(
            t.contains("sluice vs best peer (rsyslog): 4.00x lines per CPU second, 0.50x peak RSS"),
            "{t}"
        );
        assert!(t.contains("999/1000"), "{t}");
        assert!(t.contains("FAIL"), "{t}");
    }

    #[test]
    fn a_baseline_build_is_compared_on_its_own_line_and_is_no_peer() {
        let rows = [
            row("sluice", 1000, 0.5, 10240),
            row("rsyslog", 1000, 2.0, 20480),
            row(BASELINE, 1000, 0.4, 8192),
        ];
        let t = table(&rows, "sluice");
        assert!(t.contains("sluice vs best peer (rsyslog): 4.00x"), "{t}");
        assert!(
            t.contains("sluice vs baseline build: 0.80x lines per CPU second, 1.25x peak RSS"),
            "{t}"
        );
    }

    #[test]
    fn repeated_runs_combine_to_the_median_and_the_largest_peak() {
        let runs = [
            row("sluice", 1000, 0.5, 100),
            row("sluice", 1000, 0.25, 300),
            row("sluice", 1000, 1.0, 200),
        ];
        let combined = combine(&runs);
        assert_eq!(combined.len(), 1);
        assert_eq!(combined[0].1, 3);
        assert_eq!(combined[0].0.cpu_seconds, 0.5);
        assert_eq!(combined[0].0.peak_rss_kib, 300);
        let mut failed = runs.to_vec();
        failed[2].unique = 10;
        assert_eq!(combine(&failed)[0].0.unique, 10);
    }
}
