//! CRI log lines (containerd, CRI-O): `<RFC3339Nano time> <stdout|stderr> <tags> <message>`.
//!
//! `tags` is `P` (partial: the runtime split the line, the next `P`/`F` of the same stream
//! continues it) or `F` (full, the last fragment), possibly followed by `:`-separated extra tags.
//! The message is raw bytes and runs to the end of the line; it may be empty.

use sluice_api::node_config::Stream;

use super::{Bad, Fragment};

/// Parse one CRI line.
pub fn parse(line: &[u8]) -> Result<Fragment<'_>, Bad> {
    let sp = memchr::memchr(b' ', line).ok_or(Bad::MalformedCri)?;
    let time = std::str::from_utf8(&line[..sp]).map_err(|_| Bad::MalformedCri)?;
    if time.is_empty() {
        return Err(Bad::MalformedCri);
    }
    let rest = &line[sp + 1..];
    let stream = if rest.starts_with(b"stdout ") {
        Stream::Stdout
    } else if rest.starts_with(b"stderr ") {
        Stream::Stderr
    } else {
        return Err(Bad::MalformedCri);
    };
    let rest = &rest[7..];
    let (tags, log) = match memchr::memchr(b' ', rest) {
        Some(sp) => (&rest[..sp], &rest[sp + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let partial = match tags.split(|&b| b == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(Bad::MalformedCri),
    };
    Ok(Fragment {
        stream,
        time,
        log,
        partial,
        replaced: false,
    })
}
