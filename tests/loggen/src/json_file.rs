//! Docker's json-file log format, written directly (for tests and benchmarks that need no Docker).
//!
//! Each entry is one line `{"log":"…\n","stream":"stdout","time":"<RFC3339 nanos, UTC>"}`. Like
//! Docker, a line longer than [`DOCKER_SPLIT_BYTES`] is written as several entries: every entry but
//! the last carries exactly 16 KiB of the line and no trailing `\n` (a "partial" entry); the last
//! carries the rest plus `\n`. Rotation follows Docker's json-file driver: before an entry would
//! take the file to `rotate_bytes` or beyond, `<path>.{k}` become `<path>.{k+1}` (the oldest beyond
//! `max_files - 1` is removed), `<path>` becomes `<path>.1`, and a new `<path>` is started.
//!
//! Invariants: an entry is never split across files (Docker's neither), but the entries of one
//! long line may be, which is exactly the "split across a rotation" case readers must handle.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use crate::Stream;

/// The size at which Docker splits a line into partial entries.
pub const DOCKER_SPLIT_BYTES: usize = 16 * 1024;

/// Docker-style rotation settings (`--log-opt max-size` / `max-file`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before the file would reach this many bytes.
    pub max_bytes: u64,
    /// Files kept in total, the current one included (≥ 1).
    pub max_files: u32,
}

/// Appends json-file entries to a log file, rotating like Docker.
#[derive(Debug)]
pub struct JsonFileWriter {
    path: PathBuf,
    file: File,
    size: u64,
    rotation: Option<Rotation>,
    scratch: String,
}

impl JsonFileWriter {
    /// Open `path` for appending (creating it), with optional rotation.
    pub fn open(path: impl Into<PathBuf>, rotation: Option<Rotation>) -> io::Result<Self> {
        let path = path.into();
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            file,
            size,
            rotation,
            scratch: String::new(),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write one log line (without terminator) as one or more entries, stamped with the current
    /// time. Returns the number of entries written.
    pub fn write_line(&mut self, stream: Stream, line: &str) -> io::Result<usize> {
        let time = rfc3339_nanos(SystemTime::now());
        let mut entries = 0;
        let mut rest = line;
        // Cut the line into ≤ 16 KiB pieces (at a char boundary), the last one with "\n".
        loop {
            let mut cut = rest.len().min(DOCKER_SPLIT_BYTES);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (piece, tail) = rest.split_at(cut);
            let last = tail.is_empty();
            self.scratch.clear();
            encode_entry(piece, last, stream, &time, &mut self.scratch);
            let entry = std::mem::take(&mut self.scratch);
            self.write_entry(entry.as_bytes())?;
            self.scratch = entry;
            entries += 1;
            if last {
                return Ok(entries);
            }
            rest = tail;
        }
    }

    /// Write bytes as they are (for tests of malformed input); counts toward rotation.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_entry(bytes)
    }

    /// Flush to the operating system (the writer does not buffer, so this is a no-op kept for
    /// symmetry) and sync the data to disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn write_entry(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(rotation) = self.rotation
            && self.size > 0
            && self.size + bytes.len() as u64 >= rotation.max_bytes
        {
            self.rotate(rotation)?;
        }
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    fn rotate(&mut self, rotation: Rotation) -> io::Result<()> {
        let numbered = |k: u32| PathBuf::from(format!("{}.{k}", self.path.display()));
        if rotation.max_files <= 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        // Shift .k → .k+1 from the oldest down, dropping the one that falls off the end.
        let oldest = rotation.max_files - 1;
        match fs::remove_file(numbered(oldest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        for k in (1..oldest).rev() {
            match fs::rename(numbered(k), numbered(k + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.path, numbered(1))?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Append one json-file entry (with its trailing newline) to `out`.
pub fn encode_entry(piece: &str, last: bool, stream: Stream, time: &str, out: &mut String) {
    out.push_str("{\"log\":\"");
    escape_json(piece, out);
    if last {
        out.push_str("\\n");
    }
    out.push_str("\",\"stream\":\"");
    out.push_str(stream.as_str());
    out.push_str("\",\"time\":\"");
    out.push_str(time);
    out.push_str("\"}\n");
}

/// Escape `text` as the inside of a JSON string (as Go's encoder does for the characters that
/// must be escaped; `<`, `>` and `&` are escaped like Go does, too).
pub fn escape_json(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

/// Format a time as RFC 3339 in UTC with nine fractional digits, like Docker.
pub fn rfc3339_nanos(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's well-known algorithm, written from its description).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn entries_escape_and_split_like_docker() {
        let mut out = String::new();
        encode_entry("a\"b\\c\u{1}<", true, Stream::Stderr, "T", &mut out);
        assert_eq!(
            out,
            "{\"log\":\"a\\\"b\\\\c\\u0001\\u003c\\n\",\"stream\":\"stderr\",\"time\":\"T\"}\n"
        );

        let dir = std::env::temp_dir().join(format!("loggen-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x-json.log");
        let _ = fs::remove_file(&path);
        let mut w = JsonFileWriter::open(&path, None).unwrap();
        let long = "x".repeat(DOCKER_SPLIT_BYTES * 2 + 5);
        assert_eq!(w.write_line(Stream::Stdout, &long).unwrap(), 3);
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(!lines[0].contains("\\n\""));
        assert!(lines[2].starts_with("{\"log\":\"xxxxx\\n\""));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rotation_keeps_max_files() {
        let dir = std::env::temp_dir().join(format!("loggen-rot-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("y-json.log");
        let mut w = JsonFileWriter::open(
            &path,
            Some(Rotation {
                max_bytes: 1000,
                max_files: 3,
            }),
        )
        .unwrap();
        for i in 0..200 {
            w.write_line(Stream::Stdout, &format!("line {i:05}")).unwrap();
        }
        assert!(path.exists() && dir.join("y-json.log.1").exists() && dir.join("y-json.log.2").exists());
        assert!(!dir.join("y-json.log.3").exists());
        assert!(fs::metadata(&path).unwrap().len() < 1000);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn time_format() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        assert_eq!(rfc3339_nanos(t), "2023-11-14T22:13:20.000000005Z");
        assert_eq!(
            rfc3339_nanos(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000000Z"
        );
    }
}
