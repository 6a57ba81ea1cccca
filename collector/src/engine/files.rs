//! The log files of one container, as the engine knows them.
//!
//! Every file gets a sequence number when it is first seen, increasing with age order (oldest
//! first, as the listing sorts them; a file found late gets one between its neighbours), so
//! positions in different files compare by `(seq, offset)`. Invariants:
//! * a file keeps the [`FileId`] it had when first seen, and positions always name that id, even
//!   after copy-truncate moved its content into a copy (then the entry reads from the copy);
//! * what happens to a file (rotation, copy-truncate, truncation, deletion, compression) is its
//!   [`State`], changed only by [`lifecycle::transition`] through [`Tracked::observe`]; a file is
//!   *sealed* once a newer file exists: it will not grow any more, so a reader at its end moves
//!   on to the next file;
//! * a file deleted from disk stays readable through its open descriptor until no cursor needs
//!   it; files on disk that no cursor needs keep their entry (so a rescan does not take them for
//!   new files) but not their descriptor.

use std::{
    fs::File,
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::time::Instant;

mod inflate;
mod intake;
mod order;
mod truncation;

use super::{
    discover::Listing,
    identity,
    lifecycle::{self, Action, Observation, State, Step},
};
use crate::pipeline::FileId;

/// Entries of files gone from disk kept per container (see [`FileSet::release`]).
const MAX_GHOSTS: usize = 32;

/// One known log file.
#[derive(Debug)]
pub struct Tracked {
    /// Identity when first seen; positions name it.
    pub id: FileId,
    /// `id.digest()`, for message ids.
    pub digest: u64,
    /// Age order within the container.
    pub seq: u64,
    /// Where it is on disk now (`None`: deleted).
    pub path: Option<PathBuf>,
    /// The open descriptor, if held.
    pub fd: Option<File>,
    /// Device and inode behind `fd`/`path` (the copy's after copy-truncate).
    pub dev_ino: (u64, u64),
    /// Size at the last look.
    pub size: u64,
    /// Where it is in its life (see [`lifecycle`]).
    pub state: State,
    /// When its first record was written (nanoseconds since the epoch), if its head is one:
    /// what orders it among the container's files (see [`order`]).
    pub first_time: Option<i128>,
    /// When it was sealed (a newer file found), while it stays sealed.
    pub sealed_at: Option<Instant>,
    /// What the cursors had not read of it was counted as lost ([`Action::CountLoss`]): a
    /// cursor passing over it later counts nothing more.
    pub loss_counted: bool,
}

/// The copy copy-truncate made of a file: its path, descriptor and metadata.
pub(super) type CopyFound = (PathBuf, File, std::fs::Metadata);

impl Tracked {
    /// A file first seen now as `id`, numbered `seq`, open as `fd`, `size` bytes long, in
    /// `state`; with no path or inode of its own yet.
    fn new(id: FileId, seq: u64, fd: File, size: u64, state: State) -> Self {
        let first_time = order::file_first_time(&fd);
        Self {
            first_time,
            id,
            digest: id.digest(),
            seq,
            path: None,
            fd: Some(fd),
            dev_ino: (0, 0),
            size,
            state,
            sealed_at: state.sealed().then(Instant::now),
            loss_counted: false,
        }
    }

    /// A newer file exists: a reader at its end moves on (see [`Self::may_still_be_written`]).
    pub fn sealed(&self) -> bool {
        self.state.sealed()
    }

    /// Whether the runtime may still append to it at `now`: it is not sealed, or was sealed
    /// less than `wait` ago (an inflated file's content is complete).
    pub fn may_still_be_written(&self, now: Instant, wait: Duration) -> bool {
        match (self.state, self.sealed_at) {
            (State::Inflated { .. }, _) => false,
            (_, Some(at)) => now.saturating_duration_since(at) < wait,
            (state, None) => !state.sealed(),
        }
    }

    /// Take what the engine observed about the file: move to the next state and apply the
    /// actions about the entry itself, `listed_at` being where a listing shows it and `copy` the
    /// copy found for [`Action::AdoptCopy`]. The step is returned for the caller to apply the
    /// actions about the container's cursors ([`Action::CountLoss`], [`Action::Forget`]).
    pub(super) fn observe(
        &mut self,
        obs: Observation,
        listed_at: Option<&Path>,
        copy: Option<CopyFound>,
    ) -> Step {
        let step = lifecycle::transition(self.state, obs);
        if step.state != self.state || !step.actions.is_empty() {
            tracing::trace!(seq = self.seq, from = ?self.state, ?obs, to = ?step.state, actions = ?step.actions, "file state");
        }
        match (self.state.sealed(), step.state.sealed()) {
            (false, true) => self.sealed_at = Some(Instant::now()),
            (true, false) => self.sealed_at = None,
            _ => {}
        }
        self.state = step.state;
        let mut copy = copy;
        for action in step.actions {
            match action {
                Action::TakePath => self.path = listed_at.map(Path::to_owned),
                Action::DropPath => self.path = None,
                Action::DisownInode => self.dev_ino = (0, 0),
                Action::Close => self.fd = None,
                Action::AdoptCopy => {
                    if let Some((path, fd, meta)) = copy.take() {
                        tracing::debug!(seq = self.seq, copy = %path.display(), size = meta.len(), "file truncated in place; reading its old content from the copy");
                        self.path = Some(path);
                        self.dev_ino = (meta.dev(), meta.ino());
                        self.size = meta.len();
                        self.fd = Some(fd);
                    }
                }
                Action::CountLoss => self.loss_counted = true,
                Action::Forget => {}
            }
        }
        step
    }
}

/// What a refresh noticed that the cursors must react to.
#[derive(Debug, Default)]
pub struct Changes {
    /// Files truncated in place whose old content could not be found in a copy: `(seq, old size)`.
    pub truncated_lost: Vec<(u64, u64)>,
    /// Paths that could not be opened or are not regular files, with the reason.
    pub unreadable: Vec<(PathBuf, String)>,
    /// A new file was left for later (its first line is not complete yet, or the directory
    /// changed while it was looked at): look again soon.
    pub deferred: bool,
    /// The `seq` of each file first seen in this refresh.
    pub added: Vec<u64>,
    /// Compressed files never read that could not be inflated and were given up: their lines
    /// are lost to every drain of the container.
    pub lost_compressed: Vec<PathBuf>,
}

/// The files of one container, by `seq`.
#[derive(Debug, Default)]
pub struct FileSet {
    /// Oldest first.
    pub files: Vec<Tracked>,
    next_seq: u64,
    /// Compressed files looked at (see [`FileSet::take_missed`]).
    compressed: inflate::Compressed,
}

/// Open a log file for reading the way every log file is opened: a symbolic link is not
/// followed (a link in a log directory must not lead the collector to another file), opening a
/// FIFO or device does not block, and what was opened is checked (`fstat`) to be a regular file.
fn open_log(path: &Path) -> io::Result<(File, std::fs::Metadata)> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::other("a symbolic link (not followed)"),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok((file, meta))
}

/// What a listed path is now.
enum Found {
    /// A regular file.
    Regular(std::fs::Metadata),
    /// Not a regular file, or not readable: reported in `changes`.
    Bad,
    /// Gone since the listing (renamed or deleted; the next rescan sees where it went).
    Gone,
}

/// What the listed `path` is now; a bad one is reported in `changes`.
fn regular_meta(path: &Path, changes: &mut Changes) -> Found {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => Found::Regular(meta),
        Ok(meta) => {
            let why = match meta.file_type().is_symlink() {
                true => "a symbolic link (not followed)",
                false => "not a regular file",
            };
            changes.unreadable.push((path.to_owned(), why.to_owned()));
            Found::Bad
        }
        // Not found: renamed or deleted (a rotation may have put another file at the path since).
        Err(e) if e.kind() == io::ErrorKind::NotFound => Found::Gone,
        Err(e) => {
            changes.unreadable.push((path.to_owned(), e.to_string()));
            Found::Bad
        }
    }
}

impl FileSet {
    /// The files of a container not looked at yet. At its first look, compressed files last
    /// written before `history_before` are history, and not read; later ones hold lines never
    /// seen, and are (see [`FileSet::take_missed`]).
    pub fn new(history_before: std::time::SystemTime) -> Self {
        Self {
            compressed: inflate::Compressed::new(history_before),
            ..Self::default()
        }
    }

    /// The entry with `seq`.
    pub fn get(&self, seq: u64) -> Option<&Tracked> {
        self.files
            .binary_search_by_key(&seq, |f| f.seq)
            .ok()
            .map(|i| &self.files[i])
    }

    /// The entry with `seq`, mutably.
    pub fn get_mut(&mut self, seq: u64) -> Option<&mut Tracked> {
        self.files
            .binary_search_by_key(&seq, |f| f.seq)
            .ok()
            .map(|i| &mut self.files[i])
    }

    /// The first entry after `seq`.
    pub fn next_after(&self, seq: u64) -> Option<&Tracked> {
        self.files.iter().find(|f| f.seq > seq)
    }

    /// The oldest entry that can still be read (on disk, or held open: deleted, or inflated from
    /// a compressed file), else the oldest one.
    pub fn oldest(&self) -> Option<&Tracked> {
        self.files
            .iter()
            .find(|f| f.path.is_some() || f.fd.is_some())
            .or(self.files.first())
    }

    /// The newest `seq` (0 when empty).
    pub fn newest_seq(&self) -> u64 {
        self.files.last().map_or(0, |f| f.seq)
    }

    /// Find the entry for a checkpointed file: by identity, else by head, on the same inode
    /// first (a checkpoint written by an older release may hold a shorter head), then on any
    /// (the file's copy, after copy-truncate). `offset` is a position known to be in the file:
    /// a file shorter than that is another one.
    pub fn find(&mut self, id: &FileId, offset: u64) -> Option<u64> {
        if let Some(f) = self.files.iter().find(|f| f.id == *id) {
            return Some(f.seq);
        }
        // A file first seen shorter than the head size had a shorter head then: the same inode
        // with the same bytes over the checkpointed head length is the same file.
        let seqs: Vec<u64> = self
            .files
            .iter()
            .filter(|f| f.path.is_some() || f.fd.is_some())
            .map(|f| f.seq)
            .collect();
        let matching: Vec<u64> = seqs
            .into_iter()
            .filter(|&seq| {
                self.ensure_open(seq)
                    && self
                        .get(seq)
                        .and_then(|f| f.fd.as_ref())
                        .is_some_and(|fd| identity::same_head(fd, id).unwrap_or(false))
            })
            .collect();
        // The same inode first; then a file with the same head elsewhere: the copy that
        // copy-truncate made while the collector was down. (Heads are whole first lines with
        // their timestamps, so two different log files do not share one.)
        let long_enough = |f: &&Tracked| f.size >= offset;
        let on_inode = matching.iter().find(|&&seq| {
            self.get(seq)
                .filter(long_enough)
                .is_some_and(|f| f.dev_ino == (id.dev, id.ino))
        });
        on_inode
            .or_else(|| {
                matching
                    .iter()
                    .find(|&&seq| self.get(seq).filter(long_enough).is_some())
            })
            .copied()
    }

    /// The entry whose file is the inode `dev_ino`. An entry found truncated in place does not
    /// count: the inode holds new content, which is a new file (the entry waits for its copy).
    fn by_inode(&self, dev_ino: (u64, u64)) -> Option<usize> {
        self.files
            .iter()
            .position(|f| f.dev_ino == dev_ino && f.state.claims_inode())
    }

    /// Make sure the entry `seq` has an open descriptor (re-opening it by path, checking that it
    /// is still the same file). `false` if the file cannot be read any more.
    pub fn ensure_open(&mut self, seq: u64) -> bool {
        let Some(f) = self.get_mut(seq) else { return false };
        if f.fd.is_some() {
            return true;
        }
        let Some(path) = &f.path else { return false };
        match open_log(path) {
            Ok((fd, meta))
                if (meta.dev(), meta.ino()) == f.dev_ino
                    && meta.len() >= f.size
                    && identity::same_head(&fd, &f.id).unwrap_or(false) =>
            {
                f.fd = Some(fd);
                true
            }
            _ => false,
        }
    }

    /// Bring the set up to date with `paths` (the container's files on disk, oldest first), and
    /// read compressed files that hold lines never seen (inflated into `spill`).
    /// `finished`: nothing writes the files any more, so a newest file whose first line is not
    /// complete is taken as it is rather than waited for.
    /// `listing.inodes` are the device and inode of each path when it was listed: a path that names
    /// another file now was renamed since, and the whole refresh is left for the next rescan
    /// (taking some files of a rotation and not others would get their order wrong).
    pub fn refresh(&mut self, listing: &Listing, finished: bool, spill: &Path) -> Changes {
        let (paths, inodes) = (&listing.files[..], &listing.inodes[..]);
        let mut changes = Changes::default();
        self.detect_truncation(paths, &mut changes);
        let mut seen = Vec::new();
        // First the files we know (by inode, and by head for entries without a descriptor).
        let (mut unknown, mut empty) = (Vec::new(), Vec::new());
        let mut listed: Vec<Option<u64>> = vec![None; paths.len()];
        for (n, path) in paths.iter().enumerate() {
            let meta = match regular_meta(path, &mut changes) {
                Found::Regular(meta) => meta,
                Found::Bad => continue,
                // Perhaps compressed, after a listing that did not show the compressed file yet:
                // taking newer files now could put a reader past the place that file goes to.
                Found::Gone => {
                    tracing::debug!(path = %path.display(), "gone since the listing; looking again");
                    changes.deferred = true;
                    return changes;
                }
            };
            if inodes.get(n).copied().flatten() != Some((meta.dev(), meta.ino())) {
                tracing::debug!(path = %path.display(), "renamed since the listing; looking again");
                changes.deferred = true;
                return changes;
            }
            let known = self.by_inode((meta.dev(), meta.ino()));
            // An entry without a descriptor does not pin its inode: a new file may have it now.
            let known = match known {
                Some(i) if self.files[i].fd.is_none() => match self.still_same(i, path) {
                    Some(true) => Some(i),
                    Some(false) => None,
                    None => continue, // renamed under our feet: look again next time
                },
                known => known,
            };
            match known {
                Some(i) => {
                    seen.push(self.files[i].seq);
                    listed[n] = Some(self.files[i].seq);
                    let f = &mut self.files[i];
                    f.observe(Observation::Listed, Some(path), None);
                    f.size = f.size.max(meta.len());
                }
                None if meta.len() == 0 => empty.push(n),
                None => unknown.push(n),
            }
        }
        self.take_new(listing, &unknown, &empty, &mut listed, finished, &mut changes);
        seen.extend_from_slice(&changes.added);
        for f in &mut self.files {
            if !seen.contains(&f.seq) {
                f.observe(Observation::NotListed, None, None);
            }
        }
        self.take_missed(&listing.compressed, spill, &mut changes);
        changes
    }

    /// Forget files just added (`Changes::added`): the directory changed while they were opened,
    /// so what they hold may not be what the listing's order says (copy-truncate can copy and
    /// truncate a file between its listing and its opening: its old content is then in a copy
    /// the listing did not show). The next refresh takes them again, from a fresh listing.
    pub fn withdraw(&mut self, added: &[u64]) {
        self.files.retain(|f| !added.contains(&f.seq));
        // A compressed file recognised as one of them is looked at again with them.
        self.forget_compressed(added);
        self.seal();
    }

    /// Add `file`, in `seq` order.
    fn insert(&mut self, file: Tracked) {
        let at = self.files.partition_point(|f| f.seq < file.seq);
        self.files.insert(at, file);
    }

    /// Every file but the newest is sealed.
    fn seal(&mut self) {
        let newest = self.newest_seq();
        for f in &mut self.files {
            let obs = match f.seq == newest {
                true => Observation::Newest,
                false => Observation::NewerExists,
            };
            f.observe(obs, None, None);
        }
    }

    /// Close descriptors of files no cursor needs (those before `needed_from`), and forget
    /// entries of such files that are gone from disk.
    pub fn release(&mut self, needed_from: u64) {
        // A few entries of files not seen on disk are kept (newest first): a listing taken
        // while files are being renamed can miss one, and it must not come back as a new file.
        let mut ghosts = 0;
        for f in self.files.iter_mut().rev() {
            if f.seq < needed_from {
                f.observe(Observation::NotNeeded, None, None);
                if f.path.is_none() {
                    ghosts += 1;
                    if ghosts > MAX_GHOSTS {
                        f.observe(Observation::TooManyGhosts, None, None);
                    }
                }
            }
        }
        self.files.retain(|f| {
            let keep = f.seq >= needed_from || f.dev_ino != (0, 0);
            if !keep {
                tracing::debug!(seq = f.seq, needed_from, "forgetting file entry");
            }
            keep
        });
    }

    /// How many descriptors are open.
    pub fn open_count(&self) -> usize {
        self.files.iter().filter(|f| f.fd.is_some()).count()
    }
}

#[cfg(test)]
mod tests;
