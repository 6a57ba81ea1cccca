//! Taking new files into a [`FileSet`]: numbering them in age order, passing over copies, and
//! withdrawing them when the directory changed under the look.
//!
//! Invariant: a new file is numbered between the files whose first records are older and newer
//! than its own (see `order`), or, where that does not decide, between the files the listing
//! puts around it; and only from a look that still holds once it is open (see
//! [`FileSet::take_new`]).

use std::{
    fs::File,
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{Changes, FileSet, State, Tracked, identity, open_log};
use crate::engine::discover::Listing;

/// The gap between the sequence numbers of files found in order, so that a file found late
/// (a listing taken during a rename can miss it once) still gets one between its neighbours.
const SEQ_STEP: u64 = 1 << 20;

/// What [`FileSet::add`] did.
enum Added {
    Yes(u64),
    Known,
    Later,
}

impl FileSet {
    /// Track the files of the listing not known yet (`unknown`, by index), oldest first. One that
    /// sorts before another file and starts like it or like a file we know is a copy
    /// (copy-truncate), being made or made: the original's entry adopts it once the original is
    /// truncated (`detect_truncation`). Any other is tailed, even one that sorts before a known
    /// file (a listing taken during a rename can miss a file once): late, but not lost.
    ///
    /// The new files are numbered by their first records' times (see `order`), else by the
    /// listing's order, passing over the `empty` files and the copies. That look holds only if
    /// those are still empty and still copies once the new files are open: copy-truncate may have truncated a copy's original in between, and then the copy
    /// holds the only old content while the file just opened holds new lines. If one is not,
    /// the new files are withdrawn and taken again from the next listing.
    pub(super) fn take_new(
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

    /// Whether the file at `path` is a copy: it has the head of a file we know (a finished
    /// copy, even if the original was truncated since), or its first bytes are the first bytes of
    /// a file we hold open or of a file listed after it (a copy still being written).
    fn is_copy(&self, path: &Path, later: &[PathBuf]) -> bool {
        let Ok((fd, _)) = open_log(path) else {
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
                .filter(|f| f.state.claims_inode())
                .filter_map(|f| f.fd.as_ref())
                .any(starts_alike)
            || later
                .iter()
                .filter_map(|p| open_log(p).ok())
                .any(|(other, _)| starts_alike(&other))
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
        let (fd, meta) = open_log(path)?;
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
        let tracked = Tracked::new(id, 0, fd, meta.len(), State::NEW_ON_DISK);
        let seq = self.seq_for_new(tracked.first_time, before);
        tracing::debug!(path = %path.display(), seq, first_time = ?tracked.first_time, "new log file");
        self.insert(Tracked {
            seq,
            path: Some(path.to_owned()),
            dev_ino,
            ..tracked
        });
        Ok(Added::Yes(seq))
    }

    /// The sequence number for a new file: after every other, or, for a file found late that is
    /// older than the file `before`, between that one and the file preceding it (when there is
    /// still room).
    pub(super) fn seq_for(&mut self, before: Option<u64>) -> u64 {
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

    /// The sequence number for a file found late that is newer than the file numbered `after`:
    /// between that one and the file following it (when there is still room), else after every
    /// other.
    pub(super) fn seq_after(&mut self, after: u64) -> u64 {
        let upper = self.files.iter().map(|f| f.seq).filter(|&s| s > after).min();
        match upper {
            Some(upper) if upper - after > 1 => after + (upper - after) / 2,
            upper => self.seq_for(upper),
        }
    }
}
