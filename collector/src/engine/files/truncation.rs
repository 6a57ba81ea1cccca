//! Files truncated in place (copy-truncate) and inodes reused by other files.
//!
//! Invariant: an entry keeps reading its own content: from the copy once its file was
//! truncated, or not at all (the loss counted) when no copy is found.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use super::{Action, Changes, FileSet, Observation, State, identity, open_log};

impl FileSet {
    /// A file that shrank or whose head changed was truncated in place (copy-truncate). Its old
    /// content is looked for among the files on disk by head; if found, the entry reads the copy
    /// from now on, and the truncated file becomes a new entry on the next pass.
    pub(super) fn detect_truncation(&mut self, paths: &[PathBuf], changes: &mut Changes) {
        for i in 0..self.files.len() {
            let f = &self.files[i];
            let Some(fd) = &f.fd else { continue };
            let now = fd.metadata().map(|m| m.len()).unwrap_or(0);
            // (A deleted file is checked too: a cursor may be waiting at its end for the verdict.)
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
                let (fd, meta) = open_log(p).ok()?;
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
                    stale.observe(Observation::InodeReused, None, None);
                }
            }
            let f = &mut self.files[i];
            let obs = match copy {
                Some(_) => Observation::TruncatedCopyFound,
                None => Observation::TruncatedNoCopy,
            };
            // The listing may predate the copy: the state machine looks once more first.
            let (size, step) = (f.size, f.observe(obs, None, copy));
            if step.actions.contains(&Action::CountLoss) {
                changes.truncated_lost.push((f.seq, size));
            } else if matches!(f.state, State::Truncated { .. }) {
                tracing::debug!(seq = f.seq, "file truncated in place; looking for its copy");
            }
        }
    }

    /// Whether the file at `path` (with the inode of entry `index`, which holds no descriptor) is
    /// still that entry's file; if not, the entry is marked gone. `None` if `path` was renamed
    /// between the listing and now.
    pub(super) fn still_same(&mut self, index: usize, path: &Path) -> Option<bool> {
        let f = &mut self.files[index];
        let (fd, meta) = open_log(path).ok()?;
        if (meta.dev(), meta.ino()) != f.dev_ino {
            return None;
        }
        // Log files only grow: a smaller one with this inode is another file, even when its
        // head looks the same (long lines split by the runtime have heads of the same bytes).
        let same = meta.len() >= f.size && identity::same_head(&fd, &f.id).unwrap_or(false);
        if !same {
            tracing::debug!(seq = f.seq, path = %path.display(), "inode reused by another file");
            f.observe(Observation::InodeReused, None, None);
        }
        Some(same)
    }
}
