//! The log files of one container, as the engine knows them.
//!
//! Every file gets a sequence number when it is first seen, increasing with age order (oldest
//! first, as the listing sorts them; a file found late gets one between its neighbours), so
//! positions in different files compare by `(seq, offset)`. Invariants:
//! * a file keeps the [`FileId`] it had when first seen, and positions always name that id, even
//!   after copy-truncate moved its content into a copy (then the entry reads from the copy);
//! * a file is *sealed* once a newer file exists: it will not grow any more, so a reader at its
//!   end moves on to the next file;
//! * a file deleted from disk stays readable through its open descriptor until no stream needs
//!   it; files on disk that no stream needs keep their entry (so a rescan does not take them for
//!   new files) but not their descriptor.

use std::{
    fs::File,
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{discover::Listing, identity};
use crate::pipeline::FileId;

/// Entries of files gone from disk kept per container (see [`FileSet::release`]).
const MAX_GHOSTS: usize = 32;

/// The gap between the sequence numbers of files found in order, so that a file found late
/// (a listing taken during a rename can miss it once) still gets one between its neighbours.
const SEQ_STEP: u64 = 1 << 20;

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
    /// A newer file exists: this one will not grow.
    pub sealed: bool,
    /// Found truncated in place once, without a copy (yet). What its inode holds now is another
    /// file's content: the entry no longer claims the inode (see [`FileSet::by_inode`]).
    pub truncated_once: bool,
}

/// What a refresh noticed that the streams must react to.
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
}

/// What [`FileSet::add`] did.
enum Added {
    Yes(u64),
    Known,
    Later,
}

/// The files of one container, by `seq`.
#[derive(Debug, Default)]
pub struct FileSet {
    /// Oldest first.
    pub files: Vec<Tracked>,
    next_seq: u64,
}

fn open_regular(path: &Path) -> io::Result<(File, std::fs::Metadata)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok((file, meta))
}

impl FileSet {
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

    /// The oldest entry still on disk, else the oldest one.
    pub fn oldest(&self) -> Option<&Tracked> {
        self.files
            .iter()
            .find(|f| f.path.is_some())
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
            .position(|f| f.dev_ino == dev_ino && !f.truncated_once)
    }

    /// Make sure the entry `seq` has an open descriptor (re-opening it by path, checking that it
    /// is still the same file). `false` if the file cannot be read any more.
    pub fn ensure_open(&mut self, seq: u64) -> bool {
        let Some(f) = self.get_mut(seq) else { return false };
        if f.fd.is_some() {
            return true;
        }
        let Some(path) = &f.path else { return false };
        match open_regular(path) {
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

    /// Bring the set up to date with `paths` (the container's files on disk, oldest first).
    /// `finished`: nothing writes the files any more, so a newest file whose first line is not
    /// complete is taken as it is rather than waited for.
    /// `listing.inodes` are the device and inode of each path when it was listed: a path that names
    /// another file now was renamed since, and the whole refresh is left for the next rescan
    /// (taking some files of a rotation and not others would get their order wrong).
    pub fn refresh(&mut self, listing: &Listing, finished: bool) -> Changes {
        let (paths, inodes) = (&listing.files[..], &listing.inodes[..]);
        let mut changes = Changes::default();
        self.detect_truncation(paths, &mut changes);
        let mut seen = Vec::new();
        // First the files we know (by inode, and by head for entries without a descriptor).
        let (mut unknown, mut empty) = (Vec::new(), Vec::new());
        let mut listed: Vec<Option<u64>> = vec![None; paths.len()];
        for (n, path) in paths.iter().enumerate() {
            let meta = match std::fs::metadata(path) {
                Ok(meta) if meta.is_file() => meta,
                Ok(_) => {
                    changes
                        .unreadable
                        .push((path.clone(), "not a regular file".into()));
                    continue;
                }
                // Renamed or deleted since the listing: the next rescan sees where it went.
                Err(e) if e.kind() == io::ErrorKind::NotFound && std::fs::symlink_metadata(path).is_err() => {
                    continue;
                }
                Err(e) => {
                    changes.unreadable.push((path.clone(), e.to_string()));
                    continue;
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
                    f.path = Some(path.clone());
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
                f.path = None;
            }
        }
        self.seal();
        changes
    }

    /// Track the files of the listing not known yet (`unknown`, by index), oldest first. One that
    /// sorts before another file and starts like it or like a file we know is a copy
    /// (copy-truncate), being made or made: the original's entry adopts it once the original is
    /// truncated (`detect_truncation`). Any other is tailed, even one that sorts before a known
    /// file (a listing taken during a rename can miss a file once): late, but not lost.
    ///
    /// The new files are numbered by the listing's order, passing over the `empty` files and the
    /// copies. That order holds only if those are still empty and still copies once the new files
    /// are open: copy-truncate may have truncated a copy's original in between, and then the copy
    /// holds the only old content while the file just opened holds new lines. If one is not,
    /// the new files are withdrawn and taken again from the next listing.
    fn take_new(
        &mut self,
        listing: &Listing,
        unknown: &[usize],
        empty: &[usize],
        listed: &mut [Option<u64>],
        finished: bool,
        changes: &mut Changes,
    ) {
        let (paths, inodes) = (&listing.files[..], &listing.inodes[..]);
        let mut copies = Vec::new();
        let mut last = None;
        for &n in unknown {
            let path = &paths[n];
            if n + 1 < paths.len() && self.is_copy(path, &paths[n + 1..]) {
                tracing::debug!(path = %path.display(), "new file is a copy of another: not tailed");
                copies.push(n);
                continue;
            }
            let newest = n + 1 == paths.len() && !finished;
            let before = listed[n + 1..].iter().flatten().next().copied();
            match self.add(path, inodes[n], newest, before) {
                Ok(Added::Yes(seq)) => {
                    listed[n] = Some(seq);
                    changes.added.push(seq);
                    last = Some(n);
                }
                Ok(Added::Known) => {}
                Ok(Added::Later) => changes.deferred = true,
                // Renamed or deleted since the listing: the next rescan sees where it went.
                Err(e) if e.kind() == io::ErrorKind::NotFound => changes.deferred = true,
                Err(e) => changes.unreadable.push((path.clone(), e.to_string())),
            }
        }
        let Some(last) = last else { return };
        let filled = |n: usize| std::fs::metadata(&paths[n]).is_ok_and(|m| m.len() > 0);
        let stale = empty.iter().any(|&n| n < last && filled(n))
            || copies
                .iter()
                .any(|&n| n < last && !self.is_copy(&paths[n], &paths[n + 1..]));
        if stale {
            tracing::debug!("a file passed over as empty or a copy no longer is; looking again");
            let added = std::mem::take(&mut changes.added);
            self.withdraw(&added);
            changes.deferred = true;
        }
    }

    /// Forget files just added (`Changes::added`): the directory changed while they were opened,
    /// so what they hold may not be what the listing's order says (copy-truncate can copy and
    /// truncate a file between its listing and its opening: its old content is then in a copy
    /// the listing did not show). The next refresh takes them again, from a fresh listing.
    pub fn withdraw(&mut self, added: &[u64]) {
        self.files.retain(|f| !added.contains(&f.seq));
        self.seal();
    }

    /// Every file but the newest is sealed.
    fn seal(&mut self) {
        let newest = self.newest_seq();
        for f in &mut self.files {
            f.sealed = f.seq != newest;
        }
    }

    /// Whether the file at `path` is a copy: it has the head of a file we know (a finished
    /// copy, even if the original was truncated since), or its first bytes are the first bytes of
    /// a file we hold open or of a file listed after it (a copy still being written).
    fn is_copy(&self, path: &Path, later: &[PathBuf]) -> bool {
        let Ok((fd, _)) = open_regular(path) else {
            return false;
        };
        let Ok((head, _)) = identity::read_first_line(&fd) else {
            return false;
        };
        if head.is_empty() {
            return false;
        }
        let len = u32::try_from(head.len()).expect("invariant: the head is at most HEAD_MAX bytes");
        let starts_alike = |other: &File| identity::read_head(other, len).is_ok_and(|h| h == head);
        self.files
            .iter()
            .any(|f| identity::same_head(&fd, &f.id).unwrap_or(false))
            || self
                .files
                .iter()
                .filter(|f| !f.truncated_once)
                .filter_map(|f| f.fd.as_ref())
                .any(starts_alike)
            || later
                .iter()
                .filter_map(|p| open_regular(p).ok())
                .any(|(other, _)| starts_alike(&other))
    }

    /// Whether the file at `path` (with the inode of entry `i`, which holds no descriptor) is
    /// still that entry's file; if not, the entry is marked gone. `None` if `path` was renamed
    /// between the listing and now.
    fn still_same(&mut self, i: usize, path: &Path) -> Option<bool> {
        let f = &mut self.files[i];
        let (fd, meta) = open_regular(path).ok()?;
        if (meta.dev(), meta.ino()) != f.dev_ino {
            return None;
        }
        // Log files only grow: a smaller one with this inode is another file, even when its
        // head looks the same (long lines split by the runtime have heads of the same bytes).
        let same = meta.len() >= f.size && identity::same_head(&fd, &f.id).unwrap_or(false);
        if !same {
            tracing::debug!(seq = f.seq, path = %path.display(), "inode reused by another file");
            f.path = None;
            f.dev_ino = (0, 0);
        }
        Some(same)
    }

    /// Start tracking the file at `path`, unless it turned out to be known (renamed between the
    /// listing and now), or it is the `newest` file and its first line is not complete yet: its
    /// identity is taken once it is (there is nothing to read before that anyway).
    fn add(
        &mut self,
        path: &Path,
        listed: Option<(u64, u64)>,
        newest: bool,
        before: Option<u64>,
    ) -> io::Result<Added> {
        let (fd, meta) = open_regular(path)?;
        let dev_ino = (meta.dev(), meta.ino());
        if listed != Some(dev_ino) {
            return Ok(Added::Later);
        }
        if self.by_inode(dev_ino).is_some() || meta.len() == 0 {
            return Ok(Added::Known);
        }
        let (id, settled) = identity::identify(&fd)?;
        if newest && !settled {
            tracing::trace!(path = %path.display(), "new file's first line is not complete yet");
            return Ok(Added::Later);
        }
        let seq = self.seq_for(before);
        tracing::debug!(path = %path.display(), seq, "new log file");
        let at = self.files.partition_point(|f| f.seq < seq);
        self.files.insert(
            at,
            Tracked {
                id,
                digest: id.digest(),
                seq,
                path: Some(path.to_owned()),
                fd: Some(fd),
                dev_ino,
                size: meta.len(),
                sealed: false,
                truncated_once: false,
            },
        );
        Ok(Added::Yes(seq))
    }

    /// The sequence number for a new file: after every other, or, for a file found late that is
    /// older than the file `before`, between that one and the file preceding it (when there is
    /// still room).
    fn seq_for(&mut self, before: Option<u64>) -> u64 {
        if let Some(upper) = before {
            let lower = self
                .files
                .iter()
                .map(|f| f.seq)
                .filter(|&s| s < upper)
                .max()
                .unwrap_or(0);
            if upper - lower > 1 {
                return lower + (upper - lower) / 2;
            }
        }
        self.next_seq += SEQ_STEP;
        self.next_seq
    }

    /// A file that shrank or whose head changed was truncated in place (copy-truncate). Its old
    /// content is looked for among the files on disk by head; if found, the entry reads the copy
    /// from now on, and the truncated file becomes a new entry on the next pass.
    fn detect_truncation(&mut self, paths: &[PathBuf], changes: &mut Changes) {
        for i in 0..self.files.len() {
            let f = &self.files[i];
            let Some(fd) = &f.fd else { continue };
            let now = fd.metadata().map(|m| m.len()).unwrap_or(0);
            // (A deleted file is checked too: a stream may be waiting at its end for the verdict.)
            let intact = now >= f.size && identity::same_head(fd, &f.id).unwrap_or(false);
            if intact {
                continue;
            }
            // Files we hold open cannot be the copy; a closed entry's file may have been
            // overwritten by it (logrotate copying onto the same `.1` again).
            let known: Vec<(u64, u64)> = self
                .files
                .iter()
                .filter(|f| f.fd.is_some())
                .map(|f| f.dev_ino)
                .collect();
            let id = f.id;
            let copy = paths.iter().find_map(|p| {
                let (fd, meta) = open_regular(p).ok()?;
                let dev_ino = (meta.dev(), meta.ino());
                (!known.contains(&dev_ino) && identity::same_head(&fd, &id).ok()?)
                    .then(|| (p.clone(), fd, meta))
            });
            if let Some((_, _, meta)) = &copy {
                for stale in self
                    .files
                    .iter_mut()
                    .filter(|f| f.dev_ino == (meta.dev(), meta.ino()))
                {
                    stale.path = None;
                    stale.dev_ino = (0, 0);
                }
            }
            let f = &mut self.files[i];
            match copy {
                Some((path, fd, meta)) => {
                    tracing::debug!(seq = f.seq, copy = %path.display(), size = meta.len(), "file truncated in place; reading its old content from the copy");
                    f.path = Some(path);
                    f.dev_ino = (meta.dev(), meta.ino());
                    f.size = meta.len();
                    f.fd = Some(fd);
                    f.truncated_once = false;
                }
                // The listing may predate the copy: look again at the next rescan first.
                None if !f.truncated_once => {
                    tracing::debug!(seq = f.seq, "file truncated in place; looking for its copy");
                    f.truncated_once = true;
                }
                None => {
                    changes.truncated_lost.push((f.seq, f.size));
                    f.path = None;
                    f.fd = None;
                    f.dev_ino = (0, 0);
                }
            }
        }
    }

    /// Close descriptors of files no stream needs (those before `needed_from`), and forget
    /// entries of such files that are gone from disk.
    pub fn release(&mut self, needed_from: u64) {
        // A few entries of files not seen on disk are kept (newest first): a listing taken
        // while files are being renamed can miss one, and it must not come back as a new file.
        let mut ghosts = 0;
        for f in self.files.iter_mut().rev() {
            if f.seq < needed_from {
                f.fd = None;
                if f.path.is_none() {
                    ghosts += 1;
                    if ghosts > MAX_GHOSTS {
                        f.dev_ino = (0, 0);
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
