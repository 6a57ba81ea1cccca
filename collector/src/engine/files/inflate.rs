//! Compressed rotated logs (the kubelet's `….gz`; Docker's with `--log-opt compress=true`).
//!
//! Nothing writes them, so they are never tailed: their lines are normally read before the
//! runtime compresses them. Compressed files are read (inflated into unnamed temporary files in
//! the state directory, gone once closed, even after a crash, and read like deleted files) when
//! their lines would otherwise be lost:
//! * a collector that was down, or a drain that lagged, holds a checkpoint into a file that has
//!   been compressed since: that file and the compressed files after it are read, so the drain
//!   resumes where it was (when the checkpointed file is gone altogether, every compressed file
//!   is newer than it, and all are read) — [`FileSet::inflate`], which only takes those files
//!   out of history and leaves the reading to the one path below;
//! * a file was rotated and compressed between two looks (a fast writer on a busy node: Docker
//!   compresses a rotated file at once), so it was never seen uncompressed: every compressed file
//!   that appears is recognised by its head as a file known (or remembered as a ghost), else it
//!   is such a missed file and is read — [`FileSet::take_missed`]. At a container's first look,
//!   compressed files last written before the engine started are history, and not read (shipping
//!   starts at the oldest uncompressed file); later ones were missed too (a container that
//!   rotated before the engine first looked).
//!
//! Invariants: inflated entries have no path and no inode of their own (`dev_ino` is `(0, 0)`),
//! so they are forgotten once no cursor needs them; they are numbered by their first record's
//! time (see `order`), else in the compressed files' order (after the entry of the compressed
//! file before them, else before every file on disk); a compressed file whose content is known
//! already (inflated before, or its original still on disk) is not inflated (recognised by its
//! head); there is one way to read one (`take_missed`);
//! a compressed file is looked at once (by device, inode, size, modification time and gzip
//! trailer: renames keep them; see `Key`).

use std::{
    collections::HashMap,
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use flate2::read::MultiGzDecoder;

use super::{Changes, FileSet, State, Tracked, identity, order};
use crate::pipeline::FileId;

/// Listings in a row that must miss a compressed file looked at before it is forgotten (a
/// listing taken during a rename can miss a file once).
const FORGET_AFTER_MISSES: u8 = 3;

/// How long since its last write a compressed file that cannot be read counts as bad input:
/// a runtime writes one in place, and one being written cannot be read yet (it ends early, or
/// mid-block looks corrupt).
const UNREADABLE_AFTER: Duration = Duration::from_secs(2);

/// The most a compressed log is inflated to. A rotated log is a few to a few hundred MiB; one
/// that inflates past this is taken for a decompression bomb and not read (the state directory
/// it is inflated into is on the node's disk).
pub const MAX_INFLATED_BYTES: u64 = 1024 * 1024 * 1024;

/// The compressed files of a container already looked at.
#[derive(Debug, Default)]
pub struct Compressed {
    /// At the first look, compressed files last written before this are history; later ones
    /// are read. (`None`: all are history.)
    history_before: Option<SystemTime>,
    /// Whether the first look was taken.
    primed: bool,
    /// Compressed files (by [`Key`]) that are never history: they hold lines a checkpoint
    /// still wants (see [`FileSet::inflate`]).
    not_history: Vec<Key>,
    /// Compressed files looked at, by [`Key`]: the entry whose content each one holds (if
    /// known, for numbering files around it), and how many listings in a row missed it.
    seen: HashMap<Key, Looked>,
}

#[derive(Debug, Clone, Copy)]
struct Looked {
    seq: Option<u64>,
    misses: u8,
}

impl Compressed {
    /// Compressed files last written before `history_before` are history at the first look.
    pub fn new(history_before: SystemTime) -> Self {
        Self {
            history_before: Some(history_before),
            ..Self::default()
        }
    }
}

/// What a compressed file holds (see [`FileSet::take_missed`]).
enum Look {
    /// The file of the entry `seq` (`None`: nothing, or not known any more).
    Known(Option<u64>),
    /// A file never seen, inflated: its descriptor, identity and size.
    Missed(Inflated),
    /// A file never seen (its head is no known file's) that could not be inflated.
    MissedUnreadable(io::Error),
}

/// An inflated compressed file: its descriptor, identity and size.
type Inflated = (File, FileId, u64);

/// Missed compressed files, inflated, by [`Key`].
type Missed = HashMap<Key, Inflated>;

/// A listed compressed file.
struct Listed<'a> {
    path: &'a Path,
    /// Its key when listed.
    key: Key,
    modified: SystemTime,
}

/// What a compressed file is known by: device, inode, size, modification time and its gzip
/// trailer (the CRC-32 and length of what it holds; 0 when it cannot be read). A rename keeps all
/// five. The time and the trailer tell a new file from one deleted since the last look whose inode
/// number it got (ext4 hands freed numbers out again at once) and whose size it has (small files
/// of like lines compress to the same size), even when both were written within one tick of the
/// file system's clock.
type Key = (u64, u64, u64, SystemTime, u64);

/// The [`Key`] of a compressed file, open as `file`.
fn key_of(file: &File, meta: &std::fs::Metadata) -> Key {
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    (
        meta.dev(),
        meta.ino(),
        meta.len(),
        modified,
        trailer(file, meta.len()),
    )
}

/// The last 8 bytes of a gzip file of `len` bytes, as a number (0 when they cannot be read).
fn trailer(file: &File, len: u64) -> u64 {
    use std::os::unix::fs::FileExt as _;
    let mut bytes = [0u8; 8];
    len.checked_sub(8)
        .and_then(|at| file.read_exact_at(&mut bytes, at).ok())
        .map_or(0, |()| u64::from_le_bytes(bytes))
}

/// The [`Key`] of the compressed file at `path`: `NotFound` when it is gone (renamed, most
/// likely); one that cannot be opened is keyed by its metadata alone (looking at it reports why).
fn listed_key(path: &Path) -> io::Result<Key> {
    match super::open_log(path) {
        Ok((file, meta)) => Ok(key_of(&file, &meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
        Err(_) => {
            let meta = std::fs::symlink_metadata(path)?;
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            Ok((meta.dev(), meta.ino(), meta.len(), modified, 0))
        }
    }
}

impl Listed<'_> {
    /// The file, opened; its identity, head and content are all read through this descriptor,
    /// so a rename cannot swap it between them. Still the file listed (it may have grown while
    /// being written), or `NotFound`.
    fn open(&self) -> io::Result<File> {
        let (file, meta) = super::open_log(self.path)?;
        let (dev, ino) = (meta.dev(), meta.ino());
        if (dev, ino) != (self.key.0, self.key.1) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "renamed since it was listed",
            ));
        }
        Ok(file)
    }
}

impl FileSet {
    /// Read the compressed files that hold lines of checkpointed files not on disk (`wanted`):
    /// the earliest of the `compressed` files (oldest first) that starts like one of them, and
    /// the ones after it; when none does, the checkpointed files are gone altogether (the
    /// runtime deletes the oldest first), so every compressed file is newer than them and all
    /// are read. They are read the one way every compressed file is ([`FileSet::take_missed`]):
    /// those taken for history at the first look are looked at again, and one whose content is
    /// known already is not inflated.
    pub fn inflate(&mut self, compressed: &[PathBuf], wanted: &[FileId], spill: &Path) -> Changes {
        // Each file is opened once (a rename cannot swap it between looks), and its head
        // inflated once (a failure to read one counts as no match).
        let heads: Vec<Option<(Key, Vec<u8>)>> = compressed
            .iter()
            .map(|p| {
                let (file, meta) = super::open_log(p).ok()?;
                match inflated_head(&file) {
                    (head, None) => Some((key_of(&file, &meta), head)),
                    _ => None,
                }
            })
            .collect();
        let first = heads
            .iter()
            .position(|h| {
                h.as_ref()
                    .is_some_and(|(_, head)| wanted.iter().any(|id| starts_with(head, id)))
            })
            .unwrap_or(0);
        let keys: Vec<Key> = heads[first..].iter().flatten().map(|(key, _)| *key).collect();
        let looked = &mut self.compressed;
        looked
            .seen
            .retain(|key, l| l.seq.is_some() || !keys.contains(key));
        looked.not_history.extend(keys);
        let mut changes = Changes::default();
        self.take_missed(compressed, spill, &mut changes);
        changes
    }

    /// Look at the compressed files of a listing (oldest first) not looked at before, and read
    /// those that hold lines never seen (see the module doc): inflated into `spill`, numbered
    /// before the files on disk and after the compressed files before them. Runs after the files
    /// on disk were brought up to date, so a file's original still on disk is known.
    ///
    /// All or nothing: when a compressed file cannot be looked at yet (still being written, or
    /// renamed since the listing), it may be a missed file older than the others and than the
    /// files just added, so none of them is taken now (a reader must not pass the place it goes
    /// to); a later look takes them together.
    pub(super) fn take_missed(&mut self, listed: &[PathBuf], spill: &Path, changes: &mut Changes) {
        let keys: Vec<io::Result<Key>> = listed.iter().map(|path| listed_key(path)).collect();
        // One gone since the listing (renamed, most likely) is looked at under its new name.
        let mut complete = keys.iter().all(Result::is_ok);
        let listed: Vec<Listed<'_>> = listed
            .iter()
            .zip(keys)
            .filter_map(|(path, key)| {
                let key = key.ok()?;
                Some(Listed {
                    path,
                    key,
                    modified: key.3,
                })
            })
            .collect();
        self.prime(&listed);
        tracing::trace!(
            compressed = ?listed.iter().map(|l| (l.path.file_name(), l.key, self.compressed.seen.get(&l.key).map(|s| s.seq))).collect::<Vec<_>>(),
            files = ?self.files.iter().map(|f| (f.seq, f.path.as_ref().and_then(|p| p.file_name()), f.fd.is_some())).collect::<Vec<_>>(),
            "looking at compressed files"
        );
        let missed = self.look_at_new(&listed, spill, &mut complete, changes);
        if !complete {
            let added = std::mem::take(&mut changes.added);
            self.withdraw(&added);
            changes.deferred = true;
            return;
        }
        self.number_missed(&listed, missed, changes);
        self.seal();
    }

    /// Look at the listed compressed files not looked at before: record those that hold known
    /// files (or are bad, reported in `changes`), and return the missed ones, inflated. One that
    /// cannot be looked at yet clears `complete`.
    fn look_at_new(
        &mut self,
        listed: &[Listed<'_>],
        spill: &Path,
        complete: &mut bool,
        changes: &mut Changes,
    ) -> Missed {
        let mut missed = HashMap::new();
        for l in listed {
            if self.compressed.seen.contains_key(&l.key) {
                continue;
            }
            let (e, never_read) = match self.look_at(l, spill) {
                Ok(Look::Known(seq)) => {
                    tracing::debug!(path = %l.path.display(), seq, "compressed log holds a known file");
                    self.compressed.seen.insert(l.key, Looked { seq, misses: 0 });
                    continue;
                }
                Ok(Look::Missed(file)) => {
                    missed.insert(l.key, file);
                    continue;
                }
                Ok(Look::MissedUnreadable(e)) => (e, true),
                Err(e) => (e, false),
            };
            if e.raw_os_error() == Some(libc::ENOSPC) {
                // The state directory is full: look again later, and take no newer file before
                // this one is read (a reader must not pass the place it goes to).
                let why = format!(
                    "cannot inflate a compressed log into the state directory, retrying at every look (newer files of this container wait): {e}"
                );
                changes.unreadable.push((spill.to_owned(), why));
                *complete = false;
            } else if may_be_unfinished(&e, l) {
                tracing::debug!(path = %l.path.display(), error = %e, "compressed log not readable yet");
                *complete = false;
            } else {
                let why = format!("cannot inflate this compressed log into the state directory: {e}");
                changes.unreadable.push((l.path.to_owned(), why));
                if never_read {
                    // It holds lines no drain will get: counted per drain by the caller.
                    changes.lost_compressed.push(l.path.to_owned());
                }
                self.compressed
                    .seen
                    .insert(l.key, Looked { seq: None, misses: 0 });
            }
        }
        missed
    }

    /// Track the `missed` compressed files of the listing, in its order (oldest first).
    fn number_missed(&mut self, listed: &[Listed<'_>], mut missed: Missed, changes: &mut Changes) {
        // Oldest first, each numbered just after the file before it (the compressed files'
        // order is the runtime's; a file on disk may be the original of one of them still),
        // the first one before the files on disk.
        let mut after = None;
        let on_disk = self.files.iter().find(|f| f.path.is_some()).map(|f| f.seq);
        for l in listed {
            let Some(file) = missed.remove(&l.key) else {
                after = self
                    .compressed
                    .seen
                    .get(&l.key)
                    .and_then(|looked| looked.seq)
                    .or(after);
                continue;
            };
            let seq = self.seq_for_inflated(order::file_first_time(&file.0), |set| match after {
                Some(after) => set.seq_after(after),
                None => set.seq_for(on_disk),
            });
            tracing::info!(
                path = %l.path.display(),
                seq,
                "a log file was rotated and compressed before it was seen: reading it from its compressed form"
            );
            self.track_inflated(file, seq);
            self.compressed.seen.insert(
                l.key,
                Looked {
                    seq: Some(seq),
                    misses: 0,
                },
            );
            // Numbered from this listing: withdrawn with the files it added if it did not hold.
            changes.added.push(seq);
            after = Some(seq);
        }
    }

    /// Forget compressed files looked at that are not listed any more, and at the first look,
    /// take those last written before the engine started for history.
    fn prime(&mut self, listed: &[Listed<'_>]) {
        let compressed = &mut self.compressed;
        compressed.seen.retain(|key, looked| {
            looked.misses = match listed.iter().any(|l| l.key == *key) {
                true => 0,
                false => looked.misses + 1,
            };
            looked.misses < FORGET_AFTER_MISSES
        });
        if compressed.primed {
            return;
        }
        compressed.primed = true;
        let history_before = compressed.history_before;
        for l in listed {
            let history = history_before.is_none_or(|before| l.modified < before);
            if history && !compressed.not_history.contains(&l.key) {
                tracing::debug!(path = %l.path.display(), "compressed log is history");
                compressed.seen.insert(l.key, Looked { seq: None, misses: 0 });
            }
        }
    }

    /// Look again at compressed files recognised as the entries `seqs` (withdrawn).
    pub(super) fn forget_compressed(&mut self, seqs: &[u64]) {
        self.compressed
            .seen
            .retain(|_, looked| !looked.seq.is_some_and(|seq| seqs.contains(&seq)));
    }

    /// What a compressed file not looked at before holds: the file of a known entry, nothing,
    /// or a file never seen (then inflated into `spill`).
    fn look_at(&self, listed: &Listed<'_>, spill: &Path) -> io::Result<Look> {
        let file = listed.open()?;
        // A file still being written is known by the part written so far.
        let (head, cut_short) = inflated_head(&file);
        if let Some(f) = self.files.iter().find(|f| starts_with(&head, &f.id)) {
            return Ok(Look::Known(Some(f.seq)));
        }
        if let Some(e) = cut_short {
            return Err(e);
        }
        if head.is_empty() {
            return Ok(Look::Known(None));
        }
        Ok(match inflated(&file, spill) {
            Ok(file) => Look::Missed(file),
            Err(e) => Look::MissedUnreadable(e),
        })
    }

    /// Track an inflated file as `seq` (sealed: nothing writes it).
    fn track_inflated(&mut self, (fd, id, size): Inflated, seq: u64) {
        self.insert(Tracked::new(id, seq, fd, size, State::NEW_INFLATED));
    }
}

/// Whether `err`, from reading the compressed file `listed`, may come from one still being written
/// (written to recently) or renamed since it was listed, rather than from bad content.
fn may_be_unfinished(err: &io::Error, listed: &Listed<'_>) -> bool {
    err.kind() == io::ErrorKind::NotFound || listed.modified.elapsed().unwrap_or_default() < UNREADABLE_AFTER
}

/// The first [`identity::HEAD_MAX`] bytes of the compressed `file`, inflated, and the error that
/// cut them short, if any (what was read of a file still being written is its beginning).
fn inflated_head(file: &File) -> (Vec<u8>, Option<io::Error>) {
    let mut head = Vec::new();
    let read = from_start(file).and_then(|file| {
        MultiGzDecoder::new(file)
            .take(u64::from(identity::HEAD_MAX))
            .read_to_end(&mut head)
    });
    (head, read.err())
}

/// `file`, read from its start.
fn from_start(mut file: &File) -> io::Result<&File> {
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}

/// Whether `head` (a file's first bytes) starts with the head `id` was taken from. An empty head
/// identifies nothing.
fn starts_with(head: &[u8], id: &FileId) -> bool {
    let len = id.head_len as usize;
    len > 0 && head.len() >= len && identity::head_hash(&head[..len]) == id.head_hash
}

/// The compressed `file`, inflated into `spill`, with its identity and size.
fn inflated(file: &File, spill: &Path) -> io::Result<Inflated> {
    let fd = inflate_into(file, spill)?;
    let size = fd.metadata()?.len();
    let (id, _) = identity::identify(&fd)?;
    Ok((fd, id, size))
}

/// The content of the compressed `file`, in an unnamed temporary file in `spill`, if it is at
/// most [`MAX_INFLATED_BYTES`].
fn inflate_into(file: &File, spill: &Path) -> io::Result<File> {
    inflate_at_most(file, spill, MAX_INFLATED_BYTES)
}

fn inflate_at_most(file: &File, spill: &Path, max: u64) -> io::Result<File> {
    let mut out = tempfile::tempfile_in(spill)?;
    let decoder = MultiGzDecoder::new(from_start(file)?);
    let copied = io::copy(&mut decoder.take(max + 1), &mut out)?;
    if copied > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it inflates to more than {max} bytes; not read (taken for a decompression bomb)"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::{Compression, write::GzEncoder};

    use super::*;

    fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().expect("a temporary file");
        file.write_all(bytes).expect("written");
        file
    }

    #[test]
    fn inflation_stops_at_the_bound() {
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(&vec![b'x'; 100_000]).expect("compressed");
        let bomb = file_with(&gz.finish().expect("compressed"));
        let spill = tempfile::tempdir().expect("a temporary dir");
        let err = inflate_at_most(&bomb, spill.path(), 10_000).expect_err("over the bound");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let whole = inflate_at_most(&bomb, spill.path(), 100_000).expect("within the bound");
        assert_eq!(whole.metadata().expect("fstat").len(), 100_000);
    }

    #[test]
    fn a_head_is_read_from_the_part_of_a_file_written_so_far() {
        let content: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&content).expect("compressed");
        let whole = gz.finish().expect("compressed");

        let (head, cut_short) = inflated_head(&file_with(&whole));
        assert!(cut_short.is_none());
        assert_eq!(head, content[..identity::HEAD_MAX as usize]);

        // Half written: the head is there already.
        let (head, cut_short) = inflated_head(&file_with(&whole[..whole.len() / 2]));
        assert!(cut_short.is_none());
        assert_eq!(head, content[..identity::HEAD_MAX as usize]);

        // Barely begun: what was read is the file's beginning, and the error says it is not all.
        let (head, cut_short) = inflated_head(&file_with(&whole[..1_000]));
        assert!(cut_short.is_some());
        assert!(!head.is_empty() && head.len() < identity::HEAD_MAX as usize);
        assert_eq!(head, content[..head.len()]);
    }
}
