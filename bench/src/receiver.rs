//! The counting syslog receiver: accepts TCP connections and counts messages, bytes, and the
//! distinct workload lines among them.
//!
//! Framing is decided per message, the way rsyslog and syslog-ng's own TCP listeners do it: a
//! message that starts with a digit is octet-counted (RFC6587 3.4.1, `LEN SP MSG`); anything else
//! runs to the next `\n` (non-transparent framing). Empty lines between messages are skipped.
//!
//! Invariants:
//! * every complete frame is counted exactly once (`messages`, `bytes` = the message bytes
//!   without framing); a partial frame at the end of a read waits for the next read;
//! * a workload line is recognised by its marker ([`crate::workload::MARKER_PREFIX`]); `unique`
//!   counts sequence numbers seen for the first time, `duplicates` the repeats (one bit per
//!   expected line, set with an atomic `fetch_or`, so any number of connections may share it);
//! * `first`/`last` are the instants of the first and the latest read that carried a message, so
//!   `(last - first)` is the wall time over which the lines arrived.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use tokio::{io::AsyncReadExt as _, net::TcpListener, time::Instant};

use crate::workload::MARKER_PREFIX;

/// The receiver could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or accepting failed.
    #[error("receiver on {addr}: {source}")]
    Io {
        /// The listen address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What has been received so far; shared by all connections.
#[derive(Debug)]
pub struct Tally {
    /// Complete messages.
    pub messages: AtomicU64,
    /// Message bytes (framing excluded).
    pub bytes: AtomicU64,
    /// Distinct workload lines (by marker).
    pub unique: AtomicU64,
    /// Workload lines seen again.
    pub duplicates: AtomicU64,
    /// Messages without a marker, or with a sequence number outside the workload.
    pub foreign: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    seen: Vec<AtomicU64>,
    expected: u64,
    times: Mutex<Option<(Instant, Instant)>>,
}

impl Tally {
    /// A tally for a workload of `expected` lines (sequence numbers `0..expected`).
    pub fn new(expected: u64) -> Self {
        Self {
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            unique: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            seen: (0..expected.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            expected,
            times: Mutex::new(None),
        }
    }

    /// The number of lines the workload has.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Account one message.
    pub fn message(&self, msg: &[u8]) {
        self.messages.fetch_add(1, Relaxed);
        self.bytes.fetch_add(msg.len() as u64, Relaxed);
        match marker_seq(msg) {
            Some(seq) if seq < self.expected => {
                let bit = 1u64 << (seq % 64);
                let old = self.seen[(seq / 64) as usize].fetch_or(bit, Relaxed);
                if old & bit == 0 {
                    self.unique.fetch_add(1, Relaxed);
                } else {
                    self.duplicates.fetch_add(1, Relaxed);
                }
            }
            _ => {
                self.foreign.fetch_add(1, Relaxed);
            }
        }
    }

    /// Note that a read carrying messages happened now.
    pub fn touch(&self, now: Instant) {
        let mut times = self.times.lock().unwrap_or_else(|poison| poison.into_inner());
        *times = Some(times.map_or((now, now), |(first, _)| (first, now)));
    }

    /// The instants of the first and the latest read that carried messages.
    pub fn span(&self) -> Option<(Instant, Instant)> {
        *self.times.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// A one-line summary, `key=value` separated by spaces (the receiver's output format).
    pub fn summary(&self) -> String {
        let secs = self.span().map_or(0.0, |(a, b)| (b - a).as_secs_f64());
        format!(
            "messages={} bytes={} unique={} duplicates={} foreign={} expected={} connections={} seconds={secs:.3}",
            self.messages.load(Relaxed),
            self.bytes.load(Relaxed),
            self.unique.load(Relaxed),
            self.duplicates.load(Relaxed),
            self.foreign.load(Relaxed),
            self.expected,
            self.connections.load(Relaxed),
        )
    }
}

/// The sequence number of the first marker in `msg`, if any.
pub fn marker_seq(msg: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(msg, MARKER_PREFIX)? + MARKER_PREFIX.len();
    let digits = &msg[at..];
    let end = digits.iter().position(|&b| b == b']')?;
    if end == 0 || end > 19 {
        return None;
    }
    digits[..end].iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Splits a byte stream into syslog messages (see the module docs for the framing rules).
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
}

impl Deframer {
    /// Append `data` and hand every now complete message to `on_message`; returns how many.
    pub fn push(&mut self, data: &[u8], mut on_message: impl FnMut(&[u8])) -> u64 {
        self.buf.extend_from_slice(data);
        let mut pos = 0;
        let mut count = 0;
        // Take one frame per iteration until the rest is an incomplete frame (or nothing).
        while pos < self.buf.len() {
            let rest = &self.buf[pos..];
            match rest[0] {
                b'\n' | b'\r' => pos += 1,
                b'0'..=b'9' => match octet_frame(rest) {
                    Frame::Complete { header, len } => {
                        on_message(&rest[header..header + len]);
                        pos += header + len;
                        count += 1;
                    }
                    Frame::Partial => break,
                    // Not a length after all: fall back to newline framing.
                    Frame::NotOctet => match newline_frame(rest) {
                        Some((len, used)) => {
                            on_message(&rest[..len]);
                            pos += used;
                            count += 1;
                        }
                        None => break,
                    },
                },
                _ => match newline_frame(rest) {
                    Some((len, used)) => {
                        on_message(&rest[..len]);
                        pos += used;
                        count += 1;
                    }
                    None => break,
                },
            }
        }
        self.buf.drain(..pos);
        count
    }

    /// Bytes of an incomplete frame waiting for more input.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

enum Frame {
    Complete { header: usize, len: usize },
    Partial,
    NotOctet,
}

fn octet_frame(rest: &[u8]) -> Frame {
    let digits = rest.iter().take(11).take_while(|b| b.is_ascii_digit()).count();
    match rest.get(digits) {
        None if digits < 11 => Frame::Partial,
        Some(b' ') => {
            let len: usize = rest[..digits]
                .iter()
                .fold(0, |n, &b| n * 10 + usize::from(b - b'0'));
            let header = digits + 1;
            if rest.len() >= header + len {
                Frame::Complete { header, len }
            } else {
                Frame::Partial
            }
        }
        _ => Frame::NotOctet,
    }
}

/// The message length and the bytes consumed (message + `\n`) of a newline-framed message.
fn newline_frame(rest: &[u8]) -> Option<(usize, usize)> {
    let end = memchr::memchr(b'\n', rest)?;
    let len = if end > 0 && rest[end - 1] == b'\r' {
        end - 1
    } else {
        end
    };
    Some((len, end + 1))
}

/// Accept connections on `listener` forever, counting into `tally`.
pub async fn serve(listener: TcpListener, tally: Arc<Tally>) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    loop {
        let (mut stream, _) = listener.accept().await.map_err(|source| Error::Io {
            addr: addr.clone(),
            source,
        })?;
        tally.connections.fetch_add(1, Relaxed);
        let tally = Arc::clone(&tally);
        tokio::spawn(async move {
            let mut deframer = Deframer::default();
            let mut buf = vec![0u8; 256 * 1024];
            // Read until the peer closes (or the connection breaks); a broken connection only
            // ends this connection, the counts so far stay.
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if deframer.push(&buf[..n], |m| tally.message(m)) > 0 {
                    tally.touch(Instant::now());
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]]) -> Vec<String> {
        let mut d = Deframer::default();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, |m| out.push(String::from_utf8_lossy(m).into_owned()));
        }
        out
    }

    #[test]
    fn octet_counted_and_newline_framed_mix_across_chunk_boundaries() {
        let got = frames(&[b"11 <13>1 hello", b"4 <1>a\n<14>b c\r", b"\n\n4 <1>x", b"3 <2>"]);
        assert_eq!(got, ["<13>1 hello", "<1>a", "<14>b c", "<1>x", "<2>"]);
    }

    #[test]
    fn byte_at_a_time_gives_the_same_messages() {
        let stream = b"17 <13>1 - - [sb 12]\n<14>[sb 0000000003] x\n8 <1>a b c";
        let whole = frames(&[stream]);
        let split: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(frames(&split), whole);
        assert_eq!(whole, ["<13>1 - - [sb 12]", "<14>[sb 0000000003] x", "<1>a b c"]);
    }

    #[test]
    fn digits_without_a_length_fall_back_to_newlines() {
        assert_eq!(frames(&[b"2026-01-01 hello\n"]), ["2026-01-01 hello"]);
    }

    #[test]
    fn markers_count_unique_duplicates_and_foreign() {
        let t = Tally::new(100);
        for m in [
            "a [sb 0000000001] x",
            "[sb 0000000002]",
            "[sb 0000000001] again",
            "no marker",
            "[sb 0000000100]",
        ] {
            t.message(m.as_bytes());
        }
        assert_eq!(t.unique.load(Relaxed), 2);
        assert_eq!(t.duplicates.load(Relaxed), 1);
        assert_eq!(t.foreign.load(Relaxed), 2);
        assert_eq!(t.messages.load(Relaxed), 5);
        assert_eq!(marker_seq(b"[sb 12x]"), None);
    }

    #[tokio::test]
    async fn serves_several_connections() {
        use tokio::io::AsyncWriteExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tally = Arc::new(Tally::new(10));
        tokio::spawn(serve(listener, Arc::clone(&tally)));
        for chunk in [&b"<1>[sb 0000000000]\n"[..], b"20 <1>[sb 0000000001] z"] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(chunk).await.unwrap();
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while tally.unique.load(Relaxed) < 2 {
            assert!(Instant::now() < deadline, "receiver got {}", tally.summary());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(tally.messages.load(Relaxed), 2);
        assert!(tally.span().is_some());
    }
}
