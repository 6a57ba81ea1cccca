//! Parsing of one physical log line (without its trailing newline) into a [`Fragment`].
//!
//! Pure functions, no I/O and no allocation in the common case: the message of a fragment borrows
//! from the line itself, or from the caller's [`Scratch`] when it had to be unescaped.
//!
//! Invariants:
//! * a fragment's `time` is valid UTF-8 and its `log` holds the message bytes without the
//!   runtime's trailing newline; `partial` says that the runtime split the line and the next
//!   fragment of the same stream continues it;
//! * `log` may still be invalid UTF-8 (raw bytes in a CRI file or in a damaged JSON file); the
//!   caller validates the re-joined line once;
//! * a line that cannot be parsed yields a [`Bad`] naming the cause; nothing is guessed.

pub(crate) mod cri;
pub(crate) mod docker;

use sluice_api::node_config::Stream;

/// The on-disk format of a container's log files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Docker's json-file driver: one JSON object per line.
    Docker,
    /// The CRI format of containerd and CRI-O: `<time> <stream> <P|F> <message>`.
    Cri,
}

/// One parsed physical line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// stdout or stderr.
    pub stream: Stream,
    /// The runtime's timestamp.
    pub time: &'a str,
    /// The message bytes, without the runtime's newline.
    pub log: &'a [u8],
    /// The runtime split the line here; the next fragment of the same stream continues it.
    pub partial: bool,
    /// An escape in the line did not decode to valid Unicode and was replaced (U+FFFD).
    pub replaced: bool,
}

/// Why a line was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bad {
    /// Not a Docker json-file record.
    MalformedJson,
    /// Not a CRI log line.
    MalformedCri,
}

impl Bad {
    /// The `cause` label of the `input_errors` counter.
    pub fn cause(self) -> &'static str {
        match self {
            Bad::MalformedJson => "malformed_json",
            Bad::MalformedCri => "malformed_cri",
        }
    }
}

/// Buffers a parser may write an unescaped message or timestamp into, reused for every line.
#[derive(Debug, Default)]
pub struct Scratch {
    pub(crate) log: Vec<u8>,
    pub(crate) time: String,
}

/// Parse one physical line of `format`.
pub fn parse<'a>(format: Format, line: &'a [u8], scratch: &'a mut Scratch) -> Result<Fragment<'a>, Bad> {
    match format {
        Format::Docker => docker::parse(line, scratch),
        Format::Cri => cri::parse(line),
    }
}

#[cfg(test)]
mod tests;
