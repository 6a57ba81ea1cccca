//! The hot path: read a stream's file into the shared buffer, split it into lines, parse and
//! re-join them, and encode each complete line into the drain's batch.
//!
//! Invariants:
//! * one buffer (at least 256 KiB) serves every file; no allocation per line in the common case
//!   (the message borrows from the buffer, or from the pending line it was joined into);
//! * only whole physical lines are consumed; a line without its newline yet is read again later,
//!   unless its file is sealed (then it never completes: counted and skipped); the last line of
//!   a finished container's newest file is counted and acknowledged when the container is
//!   forgotten (see `tail/rescan.rs`);
//! * a physical line longer than the buffer is discarded up to its newline and counted;
//! * the stream's position moves past every consumed line, delivered or skipped, and the batch
//!   mark after each delivered line says where a restart resumes.

use std::{os::unix::fs::FileExt, path::Path};

use sluice_api::node_config::Stream;

use super::{
    files::FileSet,
    identity,
    outlet::Outlet,
    parse::{self, Format, Scratch},
    report::Reporter,
    route::stream_index,
    stream::{Loc, StreamState},
};
use crate::pipeline::{ContainerMeta, LogLine, MsgId, Position};

/// Size of the shared read buffer.
pub const BUFFER_BYTES: usize = 256 * 1024;

/// The container a stream belongs to, as the reader needs it.
pub struct Ctx<'a> {
    /// Its files.
    pub files: &'a mut FileSet,
    /// Its metadata.
    pub meta: &'a ContainerMeta,
    /// Its log format.
    pub format: Format,
    /// The furthest line end any of its streams read (lines are counted once, there).
    pub hw: &'a mut Loc,
    /// Per output stream (stdout, stderr), the furthest end of a line any of its streams
    /// delivered (problems found in a delivered line are counted once, there).
    pub delivered: &'a mut [Loc; 2],
    /// Where problems are reported.
    pub rep: &'a mut Reporter,
    /// Where lines read for the first time are kept for queries.
    pub recent: Option<&'a crate::recent::Recent>,
}

/// How a read went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Read this many bytes and stopped at the budget or the end of the data.
    Read(u64),
    /// Read this many bytes, then the drain's channel was full.
    Blocked(u64),
}

/// The per-file facts the line loop needs.
struct FileCtx<'a> {
    digest: u64,
    path: &'a Path,
}

/// The reusable buffers of the tail thread.
pub struct Reader {
    buf: Vec<u8>,
    scratch: Scratch,
    text: String,
    max_line: usize,
    counts: [(u64, u64); 2],
    /// A file was found truncated in place; the caller should rescan.
    pub truncation_seen: bool,
}

impl Reader {
    /// A reader delivering lines of at most `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: vec![0; BUFFER_BYTES],
            scratch: Scratch::default(),
            text: String::new(),
            max_line,
            counts: [(0, 0); 2],
            truncation_seen: false,
        }
    }

    /// Read for stream `s` until `budget` bytes were consumed, the data ends, or the drain is full.
    pub fn read(&mut self, ctx: &mut Ctx<'_>, s: &mut StreamState, d: &mut Outlet, budget: u64) -> Outcome {
        let mut total = 0u64;
        // Each pass reads one buffer from the current file, or moves on to the next file.
        while total < budget {
            if !self.position(ctx, s) {
                break;
            }
            let f = ctx
                .files
                .get(s.at.seq)
                .expect("invariant: position() found the file");
            let fd = f.fd.as_ref().expect("invariant: position() opened the file");
            let n = match fd.read_at(&mut self.buf, s.at.offset) {
                Ok(n) => n,
                Err(e) => {
                    let path = f.path.clone().unwrap_or_default();
                    ctx.rep.input(&path, "unreadable_file", 1, &e);
                    0
                }
            };
            let (sealed, next) = (f.sealed, ctx.files.next_after(s.at.seq).map(|n| (n.seq, n.id)));
            // A file truncated and rewritten in place (copy-truncate) no longer has its head:
            // what was just read is not this file's. Leave it to the rescan. (A sealed file too:
            // a newer file can appear before the truncation of the one it follows is noticed.)
            if n > 0 && !identity::same_head(fd, &f.id).unwrap_or(true) {
                self.truncation_seen = true;
                break;
            }
            if n == 0 {
                // At the end of the file: one now shorter than where we are was truncated in
                // place before it grew back this far. What it holds now is a new file, which the
                // rescan numbers after this one: do not move past it.
                let truncated = fd.metadata().is_ok_and(|m| m.len() < s.at.offset);
                self.truncation_seen |= truncated;
                match next {
                    Some((seq, file)) if sealed && !truncated => {
                        tracing::debug!(drain = %s.drain, from = s.at.seq, offset = s.at.offset, to = seq, "read to the end of a rotated file; next file");
                        s.at = Loc { seq, file, offset: 0 };
                    }
                    _ => break,
                }
                continue;
            }
            let path = f.path.clone().unwrap_or_default();
            let file = FileCtx {
                digest: f.digest,
                path: &path,
            };
            // The file is at least as long as what was read: the rescan's truncation check
            // then agrees with the one above (a reader waiting on it is never left waiting).
            let read_to = s.at.offset + n as u64;
            if let Some(f) = ctx.files.get_mut(s.at.seq) {
                f.size = f.size.max(read_to);
            }
            let (consumed, blocked) = self.lines(ctx, &file, s, d, n);
            total += consumed;
            if blocked {
                self.emit(ctx);
                return Outcome::Blocked(total);
            }
            if consumed == 0 {
                if n < self.buf.len() && !sealed {
                    break; // the rest of the line is not written yet
                }
                // A physical line longer than the buffer, or an unterminated end of a finished file.
                let cause = if n == self.buf.len() {
                    "garbage"
                } else {
                    "unterminated_line"
                };
                let end = Loc {
                    offset: s.at.offset + n as u64,
                    ..s.at
                };
                if first_read(ctx.hw, end) {
                    self.counts[0].1 += n as u64;
                    ctx.rep.input(
                        &path,
                        cause,
                        1,
                        &format_args!("{n} bytes without a newline at offset {}", s.at.offset),
                    );
                }
                s.discarding = n == self.buf.len();
                s.at.offset += n as u64;
                total += n as u64;
            }
        }
        self.emit(ctx);
        Outcome::Read(total)
    }

    fn emit(&mut self, ctx: &mut Ctx<'_>) {
        let counts = std::mem::take(&mut self.counts);
        for (stream, (lines, bytes)) in [Stream::Stdout, Stream::Stderr].into_iter().zip(counts) {
            if lines > 0 || bytes > 0 {
                ctx.rep.emitter.lines_read(stream, lines, bytes);
            }
        }
    }

    /// Point `s.at` at a readable file: skip files that vanished, open the descriptor. `false`
    /// when there is no file to read.
    fn position(&mut self, ctx: &mut Ctx<'_>, s: &mut StreamState) -> bool {
        loop {
            if s.at.seq != 0 && ctx.files.ensure_open(s.at.seq) {
                return true;
            }
            // Not readable (never started, or the file is gone): go on with the next one.
            match ctx.files.next_after(s.at.seq) {
                Some(next) => {
                    tracing::debug!(drain = %s.drain, from = s.at.seq, offset = s.at.offset, to = next.seq, "file not readable; next file");
                    // Passing over the unread rest of a file this stream was reading is a loss.
                    let unread = ctx.files.get(s.at.seq).is_some_and(|f| f.size > s.at.offset);
                    if unread {
                        let detail =
                            "the file being read can no longer be opened; going on with the next one";
                        ctx.rep.dropped(&s.drain, ctx.meta, "rotated_away", 1, &detail);
                    }
                    s.at = Loc {
                        seq: next.seq,
                        file: next.id,
                        offset: 0,
                    }
                }
                None => return false,
            }
        }
    }

    /// Consume the complete lines among the first `n` bytes of the buffer. Returns the bytes
    /// consumed and whether the drain became full.
    fn lines(
        &mut self,
        ctx: &mut Ctx<'_>,
        file: &FileCtx<'_>,
        s: &mut StreamState,
        d: &mut Outlet,
        n: usize,
    ) -> (u64, bool) {
        let Self {
            buf,
            scratch,
            text,
            max_line,
            counts,
            ..
        } = self;
        let data = &buf[..n];
        let mut pos = 0;
        while let Some(i) = memchr::memchr(b'\n', &data[pos..]) {
            let line = &data[pos..pos + i];
            let start = s.at;
            pos += i + 1;
            s.at.offset += i as u64 + 1;
            let first = first_read(ctx.hw, s.at);
            if s.discarding {
                s.discarding = false;
                if first {
                    counts[0].1 += i as u64 + 1;
                }
                continue;
            }
            let mut one = Line {
                scratch,
                text,
                max_line: *max_line,
                counts,
                first,
            };
            if !one.handle(ctx, file, s, d, line, start) {
                return (pos as u64, true);
            }
        }
        (pos as u64, false)
    }
}

/// What handling one physical line borrows from the reader.
struct Line<'r> {
    scratch: &'r mut Scratch,
    text: &'r mut String,
    max_line: usize,
    counts: &'r mut [(u64, u64); 2],
    /// No stream of the container read this line before: it is counted (read, bad input) now.
    first: bool,
}

impl Line<'_> {
    /// Parse, re-join and deliver one physical line; `false` when the drain is now full.
    fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        file: &FileCtx<'_>,
        s: &mut StreamState,
        d: &mut Outlet,
        line: &[u8],
        start: Loc,
    ) -> bool {
        let first = self.first;
        let frag = match parse::parse(ctx.format, line, self.scratch) {
            Ok(frag) => frag,
            Err(bad) => {
                if first {
                    self.counts[0].1 += line.len() as u64 + 1;
                    ctx.rep.input(
                        file.path,
                        bad.cause(),
                        1,
                        &format_args!("line at offset {}", start.offset),
                    );
                }
                return true;
            }
        };
        let idx = stream_index(frag.stream);
        if first {
            self.counts[idx].0 += u64::from(!frag.partial);
            self.counts[idx].1 += line.len() as u64 + 1;
        }
        if !s.wanted[idx] {
            return true;
        }
        let end = s.at;
        if frag.partial {
            let p = &mut s.pending[idx];
            if p.start.is_none() {
                p.begin(start, file.digest, frag.time);
            }
            p.append(frag.log, self.max_line);
            return true;
        }
        if let Some(skip) = s.skip_until {
            if end.le(&skip) {
                s.pending[idx].clear();
                return true;
            }
            s.skip_until = None;
        }
        let p = &mut s.pending[idx];
        let (bytes, time, id, truncated) = match p.id() {
            Some(id) => {
                p.append(frag.log, self.max_line);
                (&p.buf[..], &p.time[..], id, p.truncated)
            }
            None => {
                let cut = frag.log.len().min(self.max_line);
                (
                    &frag.log[..cut],
                    frag.time,
                    MsgId {
                        file: file.digest,
                        offset: start.offset,
                    },
                    cut < frag.log.len(),
                )
            }
        };
        let (message, invalid) = text(bytes, truncated, self.max_line, self.text);
        // Whether this line was delivered before, to any drain: its problems are counted once.
        let first = first_read(&mut ctx.delivered[idx], end);
        if first && (invalid || frag.replaced) {
            ctx.rep.input(
                file.path,
                "invalid_utf8",
                1,
                &format_args!("line at offset {}", id.offset),
            );
        }
        if first && truncated {
            ctx.rep.input(
                file.path,
                "truncated",
                1,
                &format_args!("line at offset {} cut to {} bytes", id.offset, self.max_line),
            );
        }
        let stream = frag.stream;
        // Kept once, by the first stream that delivers it.
        if first && let Some(recent) = ctx.recent {
            recent.push(ctx.meta, stream, time, message);
        }
        let line = LogLine {
            meta: ctx.meta,
            stream,
            timestamp: time,
            message,
            id,
            truncated,
        };
        d.encoder.encode(&line, &mut d.batch);
        d.batch.lines += 1;
        s.pending[idx].clear();
        let position = Position {
            resume: s.resume_from(end).pos(),
            acked_end: end.pos(),
        };
        d.batch.mark(&s.cursor, position);
        s.marked = Some(position);
        !d.full() || d.flush()
    }
}

/// Whether the line ending at `end` is read for the first time by any stream of its container
/// (`hw`, the furthest line end read so far, moves past it): what is read is counted once, not
/// once per drain.
fn first_read(hw: &mut Loc, end: Loc) -> bool {
    let first = !end.le(hw);
    if first {
        *hw = end;
    }
    first
}

/// The message as UTF-8: borrowed when valid; a cut line loses an incomplete last character;
/// otherwise invalid sequences are replaced (and reported by the caller).
fn text<'a>(bytes: &'a [u8], truncated: bool, max: usize, out: &'a mut String) -> (&'a str, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s, false),
        Err(e) if truncated && e.error_len().is_none() => (
            std::str::from_utf8(&bytes[..e.valid_up_to()]).expect("invariant: valid up to here"),
            false,
        ),
        Err(_) => {
            out.clear();
            out.push_str(&String::from_utf8_lossy(bytes));
            if out.len() > max {
                let mut cut = max;
                while !out.is_char_boundary(cut) {
                    cut -= 1;
                }
                out.truncate(cut);
            }
            (out, true)
        }
    }
}
