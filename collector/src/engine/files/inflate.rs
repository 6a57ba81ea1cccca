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
    /// Inflate, into temporary files in `spill`, the `compressed` files (oldest first) from
    /// `first` on that are not inflated yet. How many were inflated.
    pub fn inflate(&mut self, compressed: &[PathBuf], first: usize, spill: &Path) -> io::Result<usize> {
        // Each compressed file's entry if its content is readable already: inflated before, or
        // still on disk uncompressed (the runtime removes the original once the `.gz` is whole).
        let mut entries: Vec<Option<u64>> = compressed.iter().map(|p| self.readable_as(p)).collect();
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

    /// The earliest of the `compressed` files (oldest first) that starts like one of `wanted`.
    pub fn compressed_match(compressed: &[PathBuf], wanted: &[FileId]) -> Option<usize> {
        compressed
            .iter()
            .position(|p| wanted.iter().any(|id| starts_like(p, id).unwrap_or(false)))
    }

    /// The readable entry (on disk, held open, or inflated) with the content of the compressed
    /// file at `path`, if any.
    fn readable_as(&self, path: &Path) -> Option<u64> {
        self.files
            .iter()
            .filter(|f| f.path.is_some() || f.fd.is_some())
            .find(|f| starts_like(path, &f.id).unwrap_or(false))
            .map(|f| f.seq)
    }
}

/// Whether the compressed file at `path` starts with the head `id` was taken from.
fn starts_like(path: &Path, id: &FileId) -> io::Result<bool> {
    if id.head_len == 0 {
        return Ok(false);
    }
    let mut head = Vec::with_capacity(id.head_len as usize);
    MultiGzDecoder::new(File::open(path)?)
        .take(u64::from(id.head_len))
        .read_to_end(&mut head)?;
    Ok(head.len() == id.head_len as usize && identity::head_hash(&head) == id.head_hash)
}

/// The content of the compressed file at `path`, in an unnamed temporary file in `spill`.
fn inflate_into(path: &Path, spill: &Path) -> io::Result<File> {
    let mut out = tempfile::tempfile_in(spill)?;
    io::copy(&mut MultiGzDecoder::new(File::open(path)?), &mut out)?;
    Ok(out)
}
