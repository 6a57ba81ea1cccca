//! The read cursor of one (container, drain) pair: where it reads, the lines it is re-joining,
//! and the position its drain acknowledged.
//!
//! Invariants:
//! * `at` is always at the start of a physical line (just past a newline, or offset 0);
//! * a pending (partial) line remembers where its first fragment starts; the cursor's `resume`
//!   is never after the start of a pending line, so a restart re-reads every fragment of it;
//! * lines that complete at or before `skip_until` (the checkpointed `acked_end`) were already
//!   delivered and are skipped once, after a restart or a rewind;
//! * a pending line holds at most `max_line_bytes`: the rest of a longer line is discarded while
//!   it is read, and the line is delivered cut and flagged `truncated`;
//! * fragments are joined only across files read one after the other: when the unread rest of a
//!   file is left behind (counted as lost), the lines being joined are lost with it.

use std::sync::Arc;

use super::route::Wanted;
use crate::pipeline::{Cursor, FileId, FilePos, MsgId, Position};

/// A position with the age order of its file, so positions in different files compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    /// Age order of the file in its container (0: before any file).
    pub seq: u64,
    /// The file.
    pub file: FileId,
    /// Byte offset.
    pub offset: u64,
}

impl Loc {
    /// Before every file of the container.
    pub const START: Loc = Loc {
        seq: 0,
        file: FileId {
            dev: 0,
            ino: 0,
            head_hash: 0,
            head_len: 0,
        },
        offset: 0,
    };

    /// Whether `self` is at or before `other`.
    pub fn le(&self, other: &Loc) -> bool {
        (self.seq, self.offset) <= (other.seq, other.offset)
    }

    /// As a checkpoint position.
    pub fn pos(&self) -> FilePos {
        FilePos {
            file: self.file,
            offset: self.offset,
        }
    }
}

/// A line of one output stream being re-joined from fragments.
#[derive(Debug, Default)]
pub struct Pending {
    /// Where its first fragment starts (`None`: nothing pending).
    pub start: Option<Loc>,
    /// [`FileId::digest`] of the file holding the first fragment.
    pub digest: u64,
    /// The bytes so far (at most `max_line_bytes`).
    pub buf: Vec<u8>,
    /// The first fragment's timestamp.
    pub time: String,
    /// Bytes were discarded beyond `max_line_bytes`.
    pub truncated: bool,
}

impl Pending {
    /// Begin a line at `start`.
    pub fn begin(&mut self, start: Loc, digest: u64, time: &str) {
        self.start = Some(start);
        self.digest = digest;
        self.buf.clear();
        self.time.clear();
        self.time.push_str(time);
        self.truncated = false;
    }

    /// The line's id (file and offset of its first fragment), if one is pending.
    pub fn id(&self) -> Option<MsgId> {
        self.start.map(|s| MsgId {
            file: self.digest,
            offset: s.offset,
        })
    }

    /// Add a fragment, keeping at most `max` bytes.
    pub fn append(&mut self, bytes: &[u8], max: usize) {
        let room = max.saturating_sub(self.buf.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// Forget the line (and give back a large buffer's memory).
    pub fn clear(&mut self) {
        self.start = None;
        self.truncated = false;
        self.buf.clear();
        if self.buf.capacity() > 64 * 1024 {
            self.buf = Vec::new();
        }
    }
}

/// One (container, drain) cursor.
#[derive(Debug)]
pub struct ReadCursor {
    /// The drain's name.
    pub drain: String,
    /// Which output streams it takes.
    pub wanted: Wanted,
    /// The acknowledged position, shared with the drain (saved in the checkpoint).
    pub acked: Arc<Cursor>,
    /// Where the next read starts.
    pub at: Loc,
    /// Skip lines completing at or before this (already delivered before a restart or rewind).
    pub skip_until: Option<Loc>,
    /// Lines being re-joined, per output stream (stdout, stderr).
    pub pending: [Pending; 2],
    /// The next newline ends a physical line too long to buffer: discard up to it.
    pub discarding: bool,
    /// The last position put in a batch for this cursor (its drain has not necessarily
    /// acknowledged it yet).
    pub marked: Option<Position>,
}

impl ReadCursor {
    /// A cursor reading from `at`.
    pub fn new(drain: String, wanted: Wanted, acked: Arc<Cursor>, at: Loc) -> Self {
        Self {
            drain,
            wanted,
            acked,
            at,
            skip_until: None,
            pending: Default::default(),
            discarding: false,
            marked: None,
        }
    }

    /// Whether the drain acknowledged everything handed to it for this cursor.
    pub fn settled(&self) -> bool {
        self.marked.is_none_or(|m| self.acked.get() == Some(m))
    }

    /// Read again from `at`, skipping lines that complete at or before `skip_until`.
    pub fn seek(&mut self, at: Loc, skip_until: Option<Loc>) {
        tracing::debug!(drain = %self.drain, seq = at.seq, offset = at.offset, skip_until = ?skip_until.map(|s| (s.seq, s.offset)), "cursor seeks");
        self.at = at;
        self.skip_until = skip_until.filter(|s| !s.le(&at));
        for p in &mut self.pending {
            p.clear();
        }
        self.discarding = false;
        self.marked = None;
    }

    /// Go on at `next`, leaving the unread rest of the current file behind (it can no longer be
    /// read): a line being re-joined, or discarded as too long, ended in that rest, so it is lost
    /// with it rather than joined to the first line of `next`.
    pub fn leave_unread_rest(&mut self, next: Loc) {
        self.at = next;
        for p in &mut self.pending {
            p.clear();
        }
        self.discarding = false;
    }

    /// Where reading must resume for the lines after `end` not to be lost: the earliest pending
    /// line's start, or `end`.
    pub fn resume_from(&self, end: Loc) -> Loc {
        self.pending
            .iter()
            .filter_map(|p| p.start)
            .fold(end, |a, b| if b.le(&a) { b } else { a })
    }
}
