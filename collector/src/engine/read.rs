//! The hot path: read a cursor's file into the shared buffer, split it into lines, parse and
//! re-join them, and encode each complete line into the drain's batch.
//!
//! The steps, one function each: `fill` the buffer (or move on to the next file), split it into
//! `lines`; per line `parse_line`, `hold` a fragment the runtime split off, `skip` a line
//! delivered before a restart, `join` the line whole, `encode` it, `mark` the cursor's next
//! place; `pass_over` what can never become a line.
//!
//! Invariants:
//! * one buffer (at least 256 KiB) serves every file; no allocation per line in the common case
//!   (the message borrows from the buffer, or from the pending line it was joined into);
//! * only whole physical lines are consumed; a line without its newline yet is read again later,
//!   unless its file is sealed and past its `rotate_wait` (then it never completes: counted and
//!   skipped); the last line of a finished container's newest file is counted and acknowledged
//!   when the container is forgotten (see `tail/rescan.rs`);
//! * a physical line longer than the buffer is discarded up to its newline and counted;
//! * the cursor's position moves past every consumed line, delivered or skipped, and the batch
//!   mark after each delivered line says where a restart resumes.

use std::{os::unix::fs::FileExt, path::PathBuf, time::Duration};

use tokio::time::Instant;

use sluice_api::node_config::Stream;

use super::{
    cursor::{Loc, Pending, ReadCursor},
    files::FileSet,
    identity,
    outlet::Outlet,
    parse::{self, Format, Fragment, Scratch},
    report::Reporter,
    route::stream_index,
};
use crate::pipeline::{ContainerMeta, LogLine, MsgId, Position};

/// Size of the shared read buffer.
pub const BUFFER_BYTES: usize = 256 * 1024;

/// The container a cursor belongs to, as the reader needs it.
pub struct Ctx<'a> {
    /// Its files.
    pub files: &'a mut FileSet,
    /// Its metadata.
    pub meta: &'a ContainerMeta,
    /// Its log format.
    pub format: Format,
    /// The furthest line end any of its cursors read (lines are counted once, there).
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

/// The per-file facts the line steps need.
struct FileCtx {
    /// [`FileId::digest`](crate::pipeline::FileId::digest) of the file, for message ids.
    digest: u64,
    /// Where it is (empty when deleted), for reports.
    path: PathBuf,
    /// A newer file exists and this one will not grow (a rotated CRI file only once its
    /// `rotate_wait` is over).
    sealed: bool,
}

/// What filling the buffer gave.
enum Fill {
    /// This many bytes from this file.
    Data(usize, FileCtx),
    /// The cursor moved on to the next file.
    NextFile,
    /// Nothing to read now.
    Stop,
}

/// The reusable buffers of the tail thread.
pub struct Reader {
    buf: Vec<u8>,
    scratch: Scratch,
    text: String,
    max_line: usize,
    /// How long a rotated CRI file is still read after it was sealed.
    rotate_wait: Duration,
    counts: [(u64, u64); 2],
    /// A file was found truncated in place; the caller should rescan.
    pub truncation_seen: bool,
}

impl Reader {
    /// A reader delivering lines of at most `max_line` bytes, reading a rotated CRI file for
    /// `rotate_wait` after it was sealed.
    pub fn new(max_line: usize, rotate_wait: Duration) -> Self {
        Self {
            buf: vec![0; BUFFER_BYTES],
            scratch: Scratch::default(),
            text: String::new(),
            max_line,
            rotate_wait,
            counts: [(0, 0); 2],
            truncation_seen: false,
        }
    }

    /// Read for `cursor` until `budget` bytes were consumed, the data ends, or the drain is full.
    /// Each pass fills the buffer from the cursor's file ([`Reader::fill`]), hands the complete
    /// lines in it to the line steps ([`Reader::lines`]), and passes over what can never become
    /// a line ([`Reader::pass_over`]).
    pub fn read(
        &mut self,
        ctx: &mut Ctx<'_>,
        cursor: &mut ReadCursor,
        outlet: &mut Outlet,
        budget: u64,
    ) -> Outcome {
        let mut total = 0u64;
        while total < budget {
            let (n, file) = match self.fill(ctx, cursor) {
                Fill::Data(n, file) => (n, file),
                Fill::NextFile => continue,
                Fill::Stop => break,
            };
            let (consumed, blocked) = self.lines(ctx, &file, cursor, outlet, n);
            total += consumed;
            if blocked {
                self.emit(ctx);
                return Outcome::Blocked(total);
            }
            if consumed == 0 {
                match self.pass_over(ctx, &file, cursor, n) {
                    Some(passed) => total += passed,
                    None => break, // the rest of the line is not written yet
                }
            }
        }
        self.emit(ctx);
        Outcome::Read(total)
    }

    /// Fill the buffer from where `cursor` is in its file: the bytes read, with the file's facts; or,
    /// at the end of a sealed file, move `cursor` on to the next file; or stop (no file to read, the
    /// end of the data, or a truncation found, left to the rescan).
    fn fill(&mut self, ctx: &mut Ctx<'_>, cursor: &mut ReadCursor) -> Fill {
        if !self.position(ctx, cursor) {
            return Fill::Stop;
        }
        let f = ctx
            .files
            .get(cursor.at.seq)
            .expect("invariant: position() found the file");
        let fd = f.fd.as_ref().expect("invariant: position() opened the file");
        let n = match fd.read_at(&mut self.buf, cursor.at.offset) {
            Ok(n) => n,
            Err(e) => {
                let path = f.path.clone().unwrap_or_default();
                ctx.rep.input(&path, "unreadable_file", 1, &e);
                0
            }
        };
        let (sealed, next) = (
            f.sealed(),
            ctx.files.next_after(cursor.at.seq).map(|n| (n.seq, n.id)),
        );
        // The runtime may still append to a CRI file it rotated (see `rotate_wait`).
        let written_to =
            ctx.format == Format::Cri && f.may_still_be_written(Instant::now(), self.rotate_wait);
        // A file truncated and rewritten in place (copy-truncate) no longer has its head:
        // what was just read is not this file's. Leave it to the rescan. (A sealed file too:
        // a newer file can appear before the truncation of the one it follows is noticed.)
        if n > 0 && !identity::same_head(fd, &f.id).unwrap_or(true) {
            self.truncation_seen = true;
            return Fill::Stop;
        }
        if n == 0 {
            // At the end of the file: one now shorter than where we are was truncated in
            // place before it grew back this far. What it holds now is a new file, which the
            // rescan numbers after this one: do not move past it.
            let truncated = fd.metadata().is_ok_and(|m| m.len() < cursor.at.offset);
            self.truncation_seen |= truncated;
            return match next {
                Some((seq, file)) if sealed && !truncated && !written_to => {
                    tracing::debug!(drain = %cursor.drain, from = cursor.at.seq, offset = cursor.at.offset, to = seq, "read to the end of a rotated file; next file");
                    cursor.at = Loc { seq, file, offset: 0 };
                    Fill::NextFile
                }
                _ => Fill::Stop,
            };
        }
        let file = FileCtx {
            digest: f.digest,
            path: f.path.clone().unwrap_or_default(),
            // A late write may still complete the last line of a file inside its wait.
            sealed: sealed && !written_to,
        };
        // The file is at least as long as what was read: the rescan's truncation check
        // then agrees with the one above (a reader waiting on it is never left waiting).
        let read_to = cursor.at.offset + n as u64;
        if let Some(f) = ctx.files.get_mut(cursor.at.seq) {
            f.size = f.size.max(read_to);
        }
        Fill::Data(n, file)
    }

    /// None of the `filled` bytes in the buffer ends a line: a physical line longer than the buffer
    /// (discarded up to its newline), or the unterminated end of a sealed file. Counted once
    /// and passed over: the bytes passed over; `None` when the line may still be completed.
    fn pass_over(
        &mut self,
        ctx: &mut Ctx<'_>,
        file: &FileCtx,
        cursor: &mut ReadCursor,
        filled: usize,
    ) -> Option<u64> {
        if filled < self.buf.len() && !file.sealed {
            return None;
        }
        let cause = if filled == self.buf.len() {
            "garbage"
        } else {
            "unterminated_line"
        };
        let end = Loc {
            offset: cursor.at.offset + filled as u64,
            ..cursor.at
        };
        if first_read(ctx.hw, end) {
            self.counts[0].1 += filled as u64;
            ctx.rep.input(
                &file.path,
                cause,
                1,
                &format_args!("{filled} bytes without a newline at offset {}", cursor.at.offset),
            );
        }
        cursor.discarding = filled == self.buf.len();
        cursor.at.offset += filled as u64;
        Some(filled as u64)
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
    fn position(&mut self, ctx: &mut Ctx<'_>, cursor: &mut ReadCursor) -> bool {
        loop {
            if cursor.at.seq != 0 && ctx.files.ensure_open(cursor.at.seq) {
                return true;
            }
            // Not readable (never started, or the file is gone): go on with the next one.
            match ctx.files.next_after(cursor.at.seq) {
                Some(next) => {
                    tracing::debug!(drain = %cursor.drain, from = cursor.at.seq, offset = cursor.at.offset, to = next.seq, "file not readable; next file");
                    // Passing over the unread rest of a file is a loss (counted once: a look
                    // may have counted it already).
                    let (unread, counted) = ctx
                        .files
                        .get(cursor.at.seq)
                        .map_or((false, false), |f| (f.size > cursor.at.offset, f.loss_counted));
                    let next = Loc {
                        seq: next.seq,
                        file: next.id,
                        offset: 0,
                    };
                    if unread {
                        if !counted {
                            let detail =
                                "the file being read can no longer be opened; going on with the next one";
                            ctx.rep
                                .dropped(&cursor.drain, ctx.meta, "rotated_away", 1, &detail);
                        }
                        cursor.leave_unread_rest(next);
                    } else {
                        cursor.at = next;
                    }
                }
                None => return false,
            }
        }
    }

    /// Consume the complete lines among the first `filled` bytes of the buffer. Returns the bytes
    /// consumed and whether the drain became full.
    fn lines(
        &mut self,
        ctx: &mut Ctx<'_>,
        file: &FileCtx,
        cursor: &mut ReadCursor,
        outlet: &mut Outlet,
        filled: usize,
    ) -> (u64, bool) {
        let Self {
            buf,
            scratch,
            text,
            max_line,
            counts,
            ..
        } = self;
        let data = &buf[..filled];
        let mut pos = 0;
        while let Some(i) = memchr::memchr(b'\n', &data[pos..]) {
            let line = &data[pos..pos + i];
            let start = cursor.at;
            pos += i + 1;
            cursor.at.offset += i as u64 + 1;
            let first = first_read(ctx.hw, cursor.at);
            if cursor.discarding {
                cursor.discarding = false;
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
            if !one.handle(ctx, file, cursor, outlet, line, start) {
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
    /// No cursor of the container read this line before: it is counted (read, bad input) now.
    first: bool,
}

/// A line made whole from its fragments: what is encoded.
struct Whole<'a> {
    bytes: &'a [u8],
    time: &'a str,
    id: MsgId,
    truncated: bool,
}

impl Line<'_> {
    /// One physical line through the steps: parse it, hold it if the runtime split it, skip it
    /// if it was delivered before a restart or rewind, join it with its held fragments, encode
    /// it into the drain's batch and mark where the cursor's acknowledged position goes once the batch is
    /// acknowledged. `false` when the drain is now full.
    fn handle(
        &mut self,
        ctx: &mut Ctx<'_>,
        file: &FileCtx,
        cursor: &mut ReadCursor,
        outlet: &mut Outlet,
        line: &[u8],
        start: Loc,
    ) -> bool {
        let Line {
            scratch,
            text,
            max_line,
            counts,
            first,
        } = self;
        let Some(frag) = parse_line(ctx, file, line, start, scratch, counts, *first) else {
            return true;
        };
        let idx = stream_index(frag.stream);
        if !cursor.wanted[idx] {
            return true;
        }
        // Just past this line: where the cursor is now.
        let end = cursor.at;
        if frag.partial {
            hold(&mut cursor.pending[idx], &frag, start, file.digest, *max_line);
            return true;
        }
        if skip(cursor, idx, end) {
            return true;
        }
        let whole = join(&mut cursor.pending[idx], &frag, start, file.digest, *max_line);
        encode(
            ctx,
            file,
            outlet,
            text,
            *max_line,
            &whole,
            frag.stream,
            frag.replaced,
            end,
        );
        mark(cursor, idx, outlet, end);
        !outlet.full() || outlet.flush()
    }
}

/// Parse: one physical line into a fragment, counted as read (once per container: `first`);
/// a line that is not a record of the format is counted as bad input and skipped (`None`).
#[inline]
fn parse_line<'a>(
    ctx: &mut Ctx<'_>,
    file: &FileCtx,
    line: &'a [u8],
    start: Loc,
    scratch: &'a mut Scratch,
    counts: &mut [(u64, u64); 2],
    first: bool,
) -> Option<Fragment<'a>> {
    match parse::parse(ctx.format, line, scratch) {
        Ok(frag) => {
            if first {
                let idx = stream_index(frag.stream);
                counts[idx].0 += u64::from(!frag.partial);
                counts[idx].1 += line.len() as u64 + 1;
            }
            Some(frag)
        }
        Err(bad) => {
            if first {
                counts[0].1 += line.len() as u64 + 1;
                ctx.rep.input(
                    &file.path,
                    bad.cause(),
                    1,
                    &format_args!("line at offset {}", start.offset),
                );
            }
            None
        }
    }
}

/// Hold: a fragment the runtime split off (its line goes on in the next fragment of its output
/// cursor) is added to the cursor's pending line, which remembers where the line starts.
#[inline]
fn hold(pending: &mut Pending, frag: &Fragment<'_>, start: Loc, digest: u64, max_line: usize) {
    if pending.start.is_none() {
        pending.begin(start, digest, frag.time);
    }
    pending.append(frag.log, max_line);
}

/// Skip: a line completing at or before the cursor's `skip_until` was delivered before a restart
/// or a rewind; it is dropped with its held fragments. The first line past it ends the skipping.
#[inline]
fn skip(cursor: &mut ReadCursor, idx: usize, end: Loc) -> bool {
    let Some(until) = cursor.skip_until else {
        return false;
    };
    if end.le(&until) {
        cursor.pending[idx].clear();
        return true;
    }
    cursor.skip_until = None;
    false
}

/// Join: the last fragment of a line with the fragments held before it (the line's id and time
/// are its first fragment's), or the fragment alone; at most `max_line` bytes, else cut.
#[inline]
fn join<'a>(
    pending: &'a mut Pending,
    frag: &Fragment<'a>,
    start: Loc,
    digest: u64,
    max_line: usize,
) -> Whole<'a> {
    match pending.id() {
        Some(id) => {
            pending.append(frag.log, max_line);
            Whole {
                bytes: &pending.buf,
                time: &pending.time,
                id,
                truncated: pending.truncated,
            }
        }
        None => {
            let cut = frag.log.len().min(max_line);
            Whole {
                bytes: &frag.log[..cut],
                time: frag.time,
                id: MsgId {
                    file: digest,
                    offset: start.offset,
                },
                truncated: cut < frag.log.len(),
            }
        }
    }
}

/// Encode: the whole line, as UTF-8, into the drain's batch. Its problems (invalid UTF-8, cut)
/// are counted, and it is kept for queries, the first time any drain delivers it.
#[allow(clippy::too_many_arguments)] // the steps' inputs, named; a struct would only rename them
#[inline]
fn encode(
    ctx: &mut Ctx<'_>,
    file: &FileCtx,
    outlet: &mut Outlet,
    text_buf: &mut String,
    max_line: usize,
    whole: &Whole<'_>,
    stream: Stream,
    replaced: bool,
    end: Loc,
) {
    let (message, invalid) = text(whole.bytes, whole.truncated, max_line, text_buf);
    // Whether this line was delivered before, to any drain: its problems are counted once.
    let first = first_read(&mut ctx.delivered[stream_index(stream)], end);
    if first && (invalid || replaced) {
        ctx.rep.input(
            &file.path,
            "invalid_utf8",
            1,
            &format_args!("line at offset {}", whole.id.offset),
        );
    }
    if first && whole.truncated {
        ctx.rep.input(
            &file.path,
            "truncated",
            1,
            &format_args!("line at offset {} cut to {max_line} bytes", whole.id.offset),
        );
    }
    // Kept once, by the first cursor that delivers it.
    if first && let Some(recent) = ctx.recent {
        recent.push(ctx.meta, stream, whole.time, message);
    }
    let line = LogLine {
        meta: ctx.meta,
        stream,
        timestamp: whole.time,
        message,
        id: whole.id,
        truncated: whole.truncated,
    };
    outlet.encoder.encode(&line, &mut outlet.batch);
    outlet.batch.lines += 1;
}

/// Mark: the line ending at `end` is in the batch. Once the drain acknowledges the batch, the
/// cursor's acknowledged position moves past it, and a restart resumes at the first line still being joined.
#[inline]
fn mark(cursor: &mut ReadCursor, idx: usize, outlet: &mut Outlet, end: Loc) {
    cursor.pending[idx].clear();
    let position = Position {
        resume: cursor.resume_from(end).pos(),
        acked_end: end.pos(),
    };
    outlet.batch.mark(&cursor.acked, position);
    cursor.marked = Some(position);
}

/// Whether the line ending at `end` is read for the first time by any cursor of its container
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
