//! The contract between the tail engine and the drains.
//!
//! Data flows one way and acknowledgements the other:
//!
//! ```text
//!   tail loop ── encode(LogLine) into a Batch per drain ──► bounded channel ──► drain task
//!       ▲                                                                        │
//!       └──────────── AckMark::cursor.ack(position) (in order, per stream) ◄────┘
//! ```
//!
//! * The tail engine owns the files and the read positions. It encodes each line with the
//!   drain's [`Encoder`] directly into the batch being built for that drain, so no line is ever
//!   copied into a shared queue.
//! * A [`Batch`] carries, for every (container, drain) stream it holds lines of, an [`AckMark`]:
//!   the stream's [`Cursor`] and the position just past the last line of that stream in the batch.
//! * A drain calls [`Batch::ack`] only once every line in the batch has been handed to the
//!   destination (TCP: the peer's TCP acknowledged the bytes; HTTP: a 2xx response), and only after
//!   every earlier batch of the same drain was acknowledged. Cursors therefore only move forward,
//!   and only over delivered lines.
//! * A drain that cannot deliver keeps the batch (retrying) and stops taking new ones; its channel
//!   fills, and the tail engine stops reading *for that drain only*. The backlog stays in the log
//!   files.

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard},
};

use serde::{Deserialize, Serialize};
use sluice_api::node_config::Stream;

/// Identity of one log file: where it lives (device, inode) and what it starts with (a hash of
/// its first [`FileId::head_len`] bytes). A reused inode has a different head, so it is never
/// mistaken for the file that had the inode before.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// Hash of the first `head_len` bytes.
    pub head_hash: u64,
    /// How many bytes the hash covers.
    pub head_len: u32,
}

impl FileId {
    /// A 64-bit digest of the identity, used in message ids.
    pub fn digest(&self) -> u64 {
        // FNV-1a over the fields: stable across releases and platforms (unlike std's hasher).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for word in [self.dev, self.ino, self.head_hash, u64::from(self.head_len)] {
            for byte in word.to_le_bytes() {
                h ^= u64::from(byte);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        h
    }
}

/// A byte position in one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FilePos {
    /// The file.
    pub file: FileId,
    /// Offset of a byte in it.
    pub offset: u64,
}

/// How far one drain has got in one container's log.
///
/// `acked_end` is just past the last line the drain acknowledged. `resume` is where reading must
/// restart so that lines still being re-joined (a Docker 16 KiB split or a CRI `P` fragment whose
/// end was not yet read) are read again from their first fragment; it is never after `acked_end`.
/// After a restart, lines that complete at or before `acked_end` are skipped, so nothing is sent
/// twice and nothing is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Where to start reading again.
    pub resume: FilePos,
    /// Just past the last acknowledged line.
    pub acked_end: FilePos,
}

impl Position {
    /// Everything before `offset` of `file` acknowledged, and reading resumes there.
    pub fn acked_to(file: FileId, offset: u64) -> Self {
        let at = FilePos { file, offset };
        Self {
            resume: at,
            acked_end: at,
        }
    }
}

/// The stable id of a message: the file it came from and the offset of its first byte. Rendered
/// as 32 hex digits at most, so it fits RFC5424's MSGID, and receivers can drop repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MsgId {
    /// [`FileId::digest`] of the file holding the line's first byte.
    pub file: u64,
    /// Offset of the line's first byte in it.
    pub offset: u64,
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:x}", self.file, self.offset)
    }
}

/// Who a line came from: everything templates and structured data may use.
///
/// Equality compares the content and ignores [`ContainerMeta::revision`].
#[derive(Clone, Debug, Default)]
pub struct ContainerMeta {
    /// Runtime id without the scheme (Docker: the 64-hex container id).
    pub container_id: String,
    /// Pod namespace (on a plain Docker host: empty).
    pub namespace: String,
    /// Pod name (on a plain Docker host: the container name).
    pub pod: String,
    /// Pod UID (on a plain Docker host: empty).
    pub pod_uid: String,
    /// Container name.
    pub container: String,
    /// Pod (or Docker container) labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The node (or host) name.
    pub node: String,
    /// A number new for every metadata the engine builds ([`ContainerMeta::next_revision`]), so
    /// encoders can cache what they render per (container, revision) and still see a changed
    /// label at once, even when the new metadata is written over the old in place. `0`: unknown
    /// (encoders then compare the content).
    pub revision: u64,
}

impl ContainerMeta {
    /// A revision number not handed out before in this process.
    pub fn next_revision() -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

impl PartialEq for ContainerMeta {
    fn eq(&self, other: &Self) -> bool {
        let Self {
            container_id,
            namespace,
            pod,
            pod_uid,
            container,
            labels,
            node,
            revision: _,
        } = self;
        *container_id == other.container_id
            && *namespace == other.namespace
            && *pod == other.pod
            && *pod_uid == other.pod_uid
            && *container == other.container
            && *labels == other.labels
            && *node == other.node
    }
}

impl Eq for ContainerMeta {}

/// One complete line, as the tail engine hands it to an [`Encoder`].
#[derive(Clone, Copy, Debug)]
pub struct LogLine<'a> {
    /// Its container.
    pub meta: &'a ContainerMeta,
    /// stdout or stderr.
    pub stream: Stream,
    /// The runtime's timestamp, RFC3339 with up to nanoseconds (`2026-11-21T15:15:34.165439785Z`).
    pub timestamp: &'a str,
    /// The line without its trailing newline: valid UTF-8 (invalid sequences were replaced and
    /// counted by the parser), at most the configured `maxLineBytes`.
    pub message: &'a str,
    /// Its stable id.
    pub id: MsgId,
    /// Whether the line was cut to `maxLineBytes`.
    pub truncated: bool,
}

/// Turns lines into a drain's wire format. One per drain, owned by the tail engine's thread.
pub trait Encoder: Send {
    /// Append `line`, as one or more frames, to `batch` (calling [`Batch::push_frame`] per frame).
    fn encode(&mut self, line: &LogLine<'_>, batch: &mut Batch);
}

/// A shared, monotonic acknowledgement cursor of one (container, drain) stream.
///
/// The drain writes it (through [`Batch::ack`]); the checkpoint writer reads it.
#[derive(Debug, Default)]
pub struct Cursor {
    acked: Mutex<Option<Position>>,
}

impl Cursor {
    /// A cursor starting at `position` (from a checkpoint), or nowhere yet.
    pub fn new(position: Option<Position>) -> Self {
        Self {
            acked: Mutex::new(position),
        }
    }

    /// The last acknowledged position.
    pub fn get(&self) -> Option<Position> {
        *self.lock()
    }

    /// Record an acknowledgement. Batches of one drain are acknowledged in order, so this only
    /// ever moves forward.
    pub fn ack(&self, position: Position) {
        *self.lock() = Some(position);
    }

    /// Forget the position (its file is gone and the loss was counted): until the next
    /// acknowledgement, a restart starts at the oldest file, as this reader did.
    pub fn reset(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> MutexGuard<'_, Option<Position>> {
        // A poisoned cursor only means a panic elsewhere while holding it; the value is a plain
        // copy type and still consistent.
        self.acked.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A stream's acknowledgement: move `cursor` to `position` once the batch is delivered.
#[derive(Clone, Debug)]
pub struct AckMark {
    /// The stream's cursor.
    pub cursor: Arc<Cursor>,
    /// Where it moves to.
    pub position: Position,
}

/// Encoded lines on their way to one drain.
#[derive(Debug, Default)]
pub struct Batch {
    /// The frames, back to back (for TCP syslog already octet-counted; for HTTP JSON lines).
    pub bytes: Vec<u8>,
    /// End offset in `bytes` of each frame (datagram transports send one frame per datagram).
    pub frame_ends: Vec<u32>,
    /// How many log lines the batch holds (a line may take several frames). The engine counts
    /// them as it encodes; encoders leave this alone.
    pub lines: u32,
    /// What to acknowledge when the batch is delivered, at most one mark per stream.
    pub marks: Vec<AckMark>,
}

impl Batch {
    /// Append one frame; the encoder writes its bytes with `write`.
    pub fn push_frame(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.bytes);
        let end = u32::try_from(self.bytes.len()).expect("invariant: batches stay far below 4 GiB");
        self.frame_ends.push(end);
    }

    /// The frames, in order.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0usize;
        self.frame_ends.iter().map(move |&end| {
            let frame = &self.bytes[start..end as usize];
            start = end as usize;
            frame
        })
    }

    /// Whether nothing was encoded into it.
    pub fn is_empty(&self) -> bool {
        self.frame_ends.is_empty() && self.marks.is_empty()
    }

    /// Record that lines of the stream with `cursor` up to `position` are in this batch.
    pub fn mark(&mut self, cursor: &Arc<Cursor>, position: Position) {
        match self.marks.iter_mut().find(|m| Arc::ptr_eq(&m.cursor, cursor)) {
            Some(mark) => mark.position = position,
            None => self.marks.push(AckMark {
                cursor: Arc::clone(cursor),
                position,
            }),
        }
    }

    /// The batch was delivered: move every stream's cursor past its lines.
    pub fn ack(&self) {
        for mark in &self.marks {
            mark.cursor.ack(mark.position);
        }
    }
}

/// Called by a drain when it has taken a batch off its channel, so a tail engine that stopped
/// reading for lack of room can go on.
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// Makes a fresh [`Encoder`] for a drain (the engine keeps one per drain on its own thread).
pub type EncoderFactory = Arc<dyn Fn() -> Box<dyn Encoder> + Send + Sync>;

/// What the tail engine needs to feed one running drain.
#[derive(Clone)]
pub struct DrainEndpoint {
    /// The drain's name (the key of its cursors).
    pub name: String,
    /// Changes whenever the drain was re-created (its config changed); the engine then rewinds
    /// the drain's streams to their acknowledged cursors, since batches sent to the old instance
    /// may never be acknowledged.
    pub generation: u64,
    /// Where to send batches. Bounded: when full, the engine reads nothing more for this drain.
    pub batches: tokio::sync::mpsc::Sender<Batch>,
    /// The drain's encoder.
    pub new_encoder: EncoderFactory,
    /// Flush a batch once it holds this many lines…
    pub batch_max_lines: u32,
    /// …or this many bytes.
    pub batch_max_bytes: u32,
}

impl fmt::Debug for DrainEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainEndpoint")
            .field("name", &self.name)
            .field("generation", &self.generation)
            .finish()
    }
}

/// A position in one made-up file, for the tests of batches and drains.
#[cfg(any(test, feature = "test-support"))]
pub fn test_position(offset: u64) -> Position {
    let file = FileId {
        dev: 1,
        ino: 2,
        head_hash: 3,
        head_len: 4,
    };
    Position::acked_to(file, offset)
}

#[cfg(test)]
mod tests {
    use super::{test_position as pos, *};

    #[test]
    fn batch_frames_and_marks() {
        let cursor = Arc::new(Cursor::new(None));
        let mut batch = Batch::default();
        batch.push_frame(|b| b.extend_from_slice(b"one"));
        batch.push_frame(|b| b.extend_from_slice(b"three"));
        batch.mark(&cursor, pos(10));
        batch.mark(&cursor, pos(20));
        assert_eq!(
            batch.frames().collect::<Vec<_>>(),
            vec![&b"one"[..], &b"three"[..]]
        );
        assert_eq!(batch.marks.len(), 1, "one mark per stream");
        assert_eq!(cursor.get(), None, "nothing moves before delivery");
        batch.ack();
        assert_eq!(cursor.get(), Some(pos(20)));
    }

    #[test]
    fn msg_id_fits_rfc5424_msgid() {
        let id = MsgId {
            file: u64::MAX,
            offset: u64::MAX,
        };
        assert!(id.to_string().len() <= 32);
        assert_eq!(
            MsgId {
                file: 0xab,
                offset: 0x10
            }
            .to_string(),
            "00000000000000ab10"
        );
    }
}
