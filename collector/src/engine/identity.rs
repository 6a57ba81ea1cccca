//! File identity: device and inode plus a hash of the file's head.
//!
//! Invariants: the head is the file's first line (through its newline), or its first
//! [`HEAD_MAX`] bytes when the first line is longer. Both runtimes start every line with a
//! timestamp or end it with one within that bound (Docker's json-file entries carry at most
//! 16 KiB of text and the time; CRI lines start with it), so two log files practically never
//! share a head, even when both start with the continuation of a long line. A later check
//! hashes the same number of bytes again: a file truncated and rewritten (or a reused inode) no
//! longer matches, while a copy of the file (copy-truncate) still does.

use std::{
    fs::File,
    io,
    os::unix::fs::{FileExt, MetadataExt},
};

use crate::pipeline::FileId;

/// The most leading bytes that identify a file (a first line longer than this is cut).
pub const HEAD_MAX: u32 = 64 * 1024;

/// How much of the head is read at a time while looking for the first newline.
const HEAD_STEP: usize = 4096;

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
    let got = fill_from(file, &mut buf, 0)?;
    buf.truncate(got);
    Ok(buf)
}

/// Fill `buf[from..]` with the file's bytes at the same offsets; how far it got (less than
/// `buf.len()` only at the end of the file).
fn fill_from(file: &File, buf: &mut [u8], from: usize) -> io::Result<usize> {
    let mut got = from;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The head of `file`: its first line through the newline, else its first [`HEAD_MAX`] bytes,
/// else (a short file whose first line is not complete yet) all of it. The flag says whether the
/// head is final (a newline or the cap was reached); a file with a partial head may still grow
/// into a longer one.
pub fn read_first_line(file: &File) -> io::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::new();
    loop {
        let from = buf.len();
        let want = (from + HEAD_STEP).min(HEAD_MAX as usize);
        buf.resize(want, 0);
        let got = fill_from(file, &mut buf, from)?;
        buf.truncate(got);
        if let Some(nl) = buf[from..].iter().position(|&b| b == b'\n') {
            buf.truncate(from + nl + 1);
            return Ok((buf, true));
        }
        if got < want || got == HEAD_MAX as usize {
            let settled = got == HEAD_MAX as usize;
            return Ok((buf, settled));
        }
    }
}

/// The identity of an open file, as it is now, and whether its head is final (see
/// [`read_first_line`]).
pub fn identify(file: &File) -> io::Result<(FileId, bool)> {
    let meta = file.metadata()?;
    let (head, settled) = read_first_line(file)?;
    let id = FileId {
        dev: meta.dev(),
        ino: meta.ino(),
        head_hash: head_hash(&head),
        head_len: u32::try_from(head.len()).expect("invariant: the head is at most HEAD_MAX bytes"),
    };
    Ok((id, settled))
}

/// Whether `file` still starts with the head `id` was taken from (ignoring device and inode).
/// An empty head identifies nothing: it matches no file.
pub fn same_head(file: &File, id: &FileId) -> io::Result<bool> {
    if id.head_len == 0 {
        return Ok(false);
    }
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
        let (id, settled) = identify(&File::open(&path).unwrap()).unwrap();
        assert_eq!((id.head_len, settled), (11, true));
        // Growing keeps the identity (the same head bytes are hashed).
        f.write_all(&[b'x'; 3000]).unwrap();
        let reopened = File::open(&path).unwrap();
        assert!(same_head(&reopened, &id).unwrap());
        assert_eq!(identify(&reopened).unwrap().0, id);
        // Truncated and rewritten: same inode, different head.
        let mut f = File::create(&path).unwrap();
        f.write_all(b"other line\n").unwrap();
        let reopened = File::open(&path).unwrap();
        assert!(!same_head(&reopened, &id).unwrap());
        assert_eq!(identify(&reopened).unwrap().0.ino, id.ino);
        // A copy matches by head.
        std::fs::write(dir.path().join("b.log"), b"first line\nmore").unwrap();
        assert!(same_head(&File::open(dir.path().join("b.log")).unwrap(), &id).unwrap());
        // An empty head (an empty file's) matches nothing, not everything.
        std::fs::write(dir.path().join("empty.log"), b"").unwrap();
        let (empty, _) = identify(&File::open(dir.path().join("empty.log")).unwrap()).unwrap();
        assert_eq!(empty.head_len, 0);
        assert!(!same_head(&reopened, &empty).unwrap());
    }

    #[test]
    fn the_head_is_the_first_line_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        // A first line without its newline yet: the head is not final.
        std::fs::write(&path, vec![b'q'; 10_000]).unwrap();
        let (head, settled) = read_first_line(&File::open(&path).unwrap()).unwrap();
        assert_eq!((head.len(), settled), (10_000, false));
        // Two files starting with the same 10,000 bytes differ by the rest of their first line.
        let mut a = vec![b'q'; 10_000];
        a.extend_from_slice(b" 2026-11-21T10:00:00.000000001Z\nnext\n");
        let mut b = vec![b'q'; 10_000];
        b.extend_from_slice(b" 2026-11-21T10:00:00.000000002Z\nnext\n");
        std::fs::write(&path, &a).unwrap();
        let (ida, settled) = identify(&File::open(&path).unwrap()).unwrap();
        assert!(settled);
        assert_eq!(ida.head_len as usize, a.len() - 5);
        std::fs::write(dir.path().join("b.log"), &b).unwrap();
        assert!(!same_head(&File::open(dir.path().join("b.log")).unwrap(), &ida).unwrap());
        // A first line longer than the cap: the head is the cap, and final.
        std::fs::write(&path, vec![b'q'; HEAD_MAX as usize + 10]).unwrap();
        let (head, settled) = read_first_line(&File::open(&path).unwrap()).unwrap();
        assert_eq!((head.len(), settled), (HEAD_MAX as usize, true));
    }
}
