//! Docker json-file records: `{"log":"…\n","stream":"stdout","time":"2026-…Z"}`.
//!
//! The common shape (exactly those three keys in that order, as Docker writes them) is read by a
//! hand-written scanner that borrows the message from the line when it has no escapes and
//! unescapes it into the scratch buffer otherwise. Anything else (other key order, `attrs`,
//! whitespace) goes through `serde_json`, which is slower but complete. A `log` value that does
//! not end in `\n` is a partial line (Docker splits lines at 16 KiB).

use std::{borrow::Cow, ops::Range};

use serde::Deserialize;
use sluice_api::node_config::Stream;

use super::{Bad, Fragment, Scratch};

const PREFIX: &[u8] = br#"{"log":""#;
const STDOUT_TIME: &[u8] = br#","stream":"stdout","time":""#;
const STDERR_TIME: &[u8] = br#","stream":"stderr","time":""#;
const SUFFIX: &[u8] = br#""}"#;

/// Where the fast scanner found the message.
enum LogAt {
    /// In the line, with no escapes.
    Line(Range<usize>),
    /// Unescaped into the scratch buffer.
    Scratch,
}

/// Parse one Docker json-file line.
pub fn parse<'a>(line: &'a [u8], scratch: &'a mut Scratch) -> Result<Fragment<'a>, Bad> {
    match fast(line, &mut scratch.log) {
        Some((stream, time, at, replaced)) => {
            let time = std::str::from_utf8(&line[time]).map_err(|_| Bad::MalformedJson)?;
            let log = match at {
                LogAt::Line(range) => &line[range],
                LogAt::Scratch => &scratch.log[..],
            };
            Ok(finish(stream, time, log, replaced))
        }
        None => slow(line, scratch),
    }
}

fn finish<'a>(stream: Stream, time: &'a str, log: &'a [u8], replaced: bool) -> Fragment<'a> {
    match log.strip_suffix(b"\n") {
        Some(log) => Fragment {
            stream,
            time,
            log,
            partial: false,
            replaced,
        },
        None => Fragment {
            stream,
            time,
            log,
            partial: true,
            replaced,
        },
    }
}

/// The scanner for Docker's own shape; `None` means "not that shape, ask serde".
fn fast(line: &[u8], out: &mut Vec<u8>) -> Option<(Stream, Range<usize>, LogAt, bool)> {
    let body = line.strip_prefix(PREFIX)?;
    let (len, escaped, replaced) = scan_string(body, out)?;
    let start = PREFIX.len();
    let after = start + len + 1;
    let rest = &line[after..];
    let stream = if rest.starts_with(STDOUT_TIME) {
        Stream::Stdout
    } else if rest.starts_with(STDERR_TIME) {
        Stream::Stderr
    } else {
        return None;
    };
    let time_start = after + STDOUT_TIME.len();
    let time_len = memchr::memchr(b'"', &line[time_start..])?;
    let time_end = time_start + time_len;
    if &line[time_end..] != SUFFIX || line[time_start..time_end].contains(&b'\\') {
        return None;
    }
    let at = if escaped {
        LogAt::Scratch
    } else {
        LogAt::Line(start..start + len)
    };
    Some((stream, time_start..time_end, at, replaced))
}

/// Scan a JSON string body (after its opening quote) up to its closing quote. Returns the length
/// of the raw body, whether it had escapes (then `out` holds the unescaped bytes) and whether an
/// escape had to be replaced by U+FFFD. `None` for a bad escape or a missing closing quote.
pub(crate) fn scan_string(bytes: &[u8], out: &mut Vec<u8>) -> Option<(usize, bool, bool)> {
    let mut i = 0;
    let mut escaped = false;
    let mut replaced = false;
    // Copy the runs between escapes; only the first escape switches to the scratch buffer.
    loop {
        let j = i + memchr::memchr2(b'"', b'\\', &bytes[i..])?;
        if escaped {
            out.extend_from_slice(&bytes[i..j]);
        }
        if bytes[j] == b'"' {
            return Some((j, escaped, replaced));
        }
        if !escaped {
            out.clear();
            out.extend_from_slice(&bytes[..j]);
            escaped = true;
        }
        let byte = match *bytes.get(j + 1)? {
            b'n' => b'\n',
            b't' => b'\t',
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'r' => b'\r',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'u' => {
                let (c, used, bad) = unicode_escape(&bytes[j..])?;
                replaced |= bad;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                i = j + used;
                continue;
            }
            _ => return None,
        };
        out.push(byte);
        i = j + 2;
    }
}

/// Decode `\uXXXX` (and a following low surrogate) at the start of `bytes`. Returns the character,
/// the bytes used, and whether it had to be replaced by U+FFFD (a lone surrogate).
fn unicode_escape(bytes: &[u8]) -> Option<(char, usize, bool)> {
    let hi = hex4(bytes.get(2..6)?)?;
    if !(0xD800..0xDC00).contains(&hi) {
        return Some(match char::from_u32(hi) {
            Some(c) => (c, 6, false),
            None => (char::REPLACEMENT_CHARACTER, 6, true),
        });
    }
    // A high surrogate must be followed by `\u` and a low surrogate.
    let lo = match bytes.get(6..12) {
        Some(next) if next.starts_with(b"\\u") => hex4(&next[2..6])?,
        _ => return Some((char::REPLACEMENT_CHARACTER, 6, true)),
    };
    if !(0xDC00..0xE000).contains(&lo) {
        return Some((char::REPLACEMENT_CHARACTER, 6, true));
    }
    let c = char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?;
    Some((c, 12, false))
}

fn hex4(bytes: &[u8]) -> Option<u32> {
    bytes
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc * 16 + char::from(b).to_digit(16)?))
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    log: Cow<'a, str>,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow, default)]
    time: Cow<'a, str>,
}

/// The complete path: any key order, extra keys, whitespace. A line with invalid UTF-8 is retried
/// after replacing the bad bytes (and reported as `replaced`).
fn slow<'a>(line: &'a [u8], scratch: &'a mut Scratch) -> Result<Fragment<'a>, Bad> {
    let (stream, replaced) = match serde_json::from_slice::<Record<'_>>(line) {
        Ok(record) => (store(record, scratch)?, false),
        Err(_) => {
            let text = String::from_utf8_lossy(line);
            if matches!(text, Cow::Borrowed(_)) {
                return Err(Bad::MalformedJson);
            }
            let record = serde_json::from_str::<Record<'_>>(&text).map_err(|_| Bad::MalformedJson)?;
            (store(record, scratch)?, true)
        }
    };
    Ok(finish(stream, &scratch.time, &scratch.log, replaced))
}

fn store(record: Record<'_>, scratch: &mut Scratch) -> Result<Stream, Bad> {
    let stream = match &*record.stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return Err(Bad::MalformedJson),
    };
    scratch.log.clear();
    scratch.log.extend_from_slice(record.log.as_bytes());
    scratch.time.clear();
    scratch.time.push_str(&record.time);
    Ok(stream)
}
