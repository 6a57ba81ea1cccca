//! File identity: device and inode plus a hash of the file's head.
//!
//! Invariants: the head is the first `min(len, HEAD_MAX)` bytes when the file is first seen; a
//! later check hashes the same number of bytes again, so a file that was truncated and rewritten
//! (or a reused inode) no longer matches, while a copy of the file (copy-truncate) still does by
//! its head.

use std::{
    fs::File,
    io,
    os::unix::fs::{FileExt, MetadataExt},
};

use crate::pipeline::FileId;

/// How many leading bytes identify a file.
pub const HEAD_MAX: u32 = 1024;

/// FNV-1a over `bytes`: stable across releases and platforms.
pub fn head_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Read up to `len` bytes from the start of `file` (fewer only at the end of the file).
pub fn read_head(file: &File, len: u32) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The identity of an open file, as it is now.
pub fn identify(file: &File) -> io::Result<FileId> {
    let meta = file.metadata()?;
    let head = read_head(file, HEAD_MAX)?;
    Ok(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
        head_hash: head_hash(&head),
        head_len: u32::try_from(head.len()).expect("invariant: the head is at most HEAD_MAX bytes"),
    })
}

/// Whether `file` still starts with the head `id` was taken from (ignoring device and inode).
pub fn same_head(file: &File, id: &FileId) -> io::Result<bool> {
    let head = read_head(file, id.head_len)?;
    Ok(head.len() == id.head_len as usize && head_hash(&head) == id.head_hash)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn identity_follows_content_not_just_the_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"first line\n").unwrap();
        let id = identify(&File::open(&path).unwrap()).unwrap();
        assert_eq!(id.head_len, 11);
        // Growing keeps the identity (the same head bytes are hashed).
        f.write_all(&[b'x'; 3000]).unwrap();
        let reopened = File::open(&path).unwrap();
        assert!(same_head(&reopened, &id).unwrap());
        assert_eq!(identify(&reopened).unwrap().head_len, HEAD_MAX);
        // Truncated and rewritten: same inode, different head.
        let mut f = File::create(&path).unwrap();
        f.write_all(b"other line\n").unwrap();
        let reopened = File::open(&path).unwrap();
        assert!(!same_head(&reopened, &id).unwrap());
        assert_eq!(identify(&reopened).unwrap().ino, id.ino);
        // A copy matches by head.
        std::fs::write(dir.path().join("b.log"), b"first line\nmore").unwrap();
        assert!(same_head(&File::open(dir.path().join("b.log")).unwrap(), &id).unwrap());
    }
}
