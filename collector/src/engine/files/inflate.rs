//! Compressed rotated logs (the kubelet's `….gz`; Docker's with `--log-opt compress=true`).
//!
//! Nothing writes them, so they are never tailed: their lines were read before the runtime
//! compressed them. But a collector that was down, or a drain that lagged, can hold a checkpoint
//! into a file that has been compressed since. Then that file and the compressed files after it
//! are inflated into unnamed temporary files in the state directory (gone once closed, even
//! after a crash) and read like deleted files, so the drain resumes where it was instead of
//! losing the rest. (When the checkpointed file is gone altogether, every compressed file is
//! newer than it, and all of them are read.)
//!
//! Invariants: inflated entries have no path and no inode of their own (`dev_ino` is `(0, 0)`),
//! so they are forgotten once no stream needs them; they are numbered in the compressed files'
//! order, before every file on disk; a compressed file whose content is readable already
//! (inflated before, or its original still on disk) is not inflated (recognised by its head).

use std::{
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
};

use flate2::read::MultiGzDecoder;

use super::{FileSet, Tracked, identity};
use crate::pipeline::FileId;

impl FileSet {
    /// Inflate, into temporary files in `spill`, the earliest of the `compressed` files (oldest
    /// first) that starts like one of `wanted` (checkpointed files not on disk) and the ones
    /// after it; when none does, the checkpointed files are gone altogether (the runtime deletes
    /// the oldest first), so every compressed file is newer than them and all are inflated.
    /// Files whose content is readable already are skipped. How many were inflated.
    pub fn inflate(&mut self, compressed: &[PathBuf], wanted: &[FileId], spill: &Path) -> io::Result<usize> {
        // Each head is inflated once (a failure to read one counts as no match).
        let heads: Vec<Vec<u8>> = compressed
            .iter()
            .map(|p| inflated_head(p).unwrap_or_default())
            .collect();
        let first = heads
            .iter()
            .position(|h| wanted.iter().any(|id| starts_with(h, id)))
            .unwrap_or(0);
        // Each compressed file's entry if its content is readable already: inflated before, or
        // still on disk uncompressed (the runtime removes the original once the `.gz` is whole).
        let mut entries: Vec<Option<u64>> = heads.iter().map(|h| self.readable_as(h)).collect();
        let on_disk = self.files.iter().find(|f| f.path.is_some()).map(|f| f.seq);
        let mut count = 0;
        // Newest first, each numbered just before its successor, so they end up in order.
        for j in (first..compressed.len()).rev() {
            if entries[j].is_some() {
                continue;
            }
            let before = entries[j + 1..].iter().flatten().next().copied().or(on_disk);
            let fd = inflate_into(&compressed[j], spill)?;
            let size = fd.metadata()?.len();
            if size == 0 {
                continue; // nothing to read (and an empty head would match any file)
            }
            let (id, _) = identity::identify(&fd)?;
            let seq = self.seq_for(before);
            tracing::debug!(path = %compressed[j].display(), seq, size, "inflated a compressed log");
            self.insert(Tracked {
                sealed: true,
                ..Tracked::new(id, seq, fd, size)
            });
            entries[j] = Some(seq);
            count += 1;
        }
        self.seal();
        Ok(count)
    }

    /// The readable entry (on disk, held open, or inflated) whose file starts with `head` (a
    /// compressed file's first bytes), if any.
    fn readable_as(&self, head: &[u8]) -> Option<u64> {
        self.files
            .iter()
            .filter(|f| f.path.is_some() || f.fd.is_some())
            .find(|f| starts_with(head, &f.id))
            .map(|f| f.seq)
    }
}

/// The first [`identity::HEAD_MAX`] bytes of the compressed file at `path`, inflated.
fn inflated_head(path: &Path) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    MultiGzDecoder::new(File::open(path)?)
        .take(u64::from(identity::HEAD_MAX))
        .read_to_end(&mut head)?;
    Ok(head)
}

/// Whether `head` (a file's first bytes) starts with the head `id` was taken from. An empty head
/// identifies nothing.
fn starts_with(head: &[u8], id: &FileId) -> bool {
    let len = id.head_len as usize;
    len > 0 && head.len() >= len && identity::head_hash(&head[..len]) == id.head_hash
}

/// The content of the compressed file at `path`, in an unnamed temporary file in `spill`.
fn inflate_into(path: &Path, spill: &Path) -> io::Result<File> {
    let mut out = tempfile::tempfile_in(spill)?;
    io::copy(&mut MultiGzDecoder::new(File::open(path)?), &mut out)?;
    Ok(out)
}
