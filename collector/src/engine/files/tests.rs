//! A container's files against listings that race the runtime: the order and the states the
//! file set ends up with, on real files.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::SystemTime,
};

use flate2::{Compression, write::GzEncoder};

use super::{FileSet, State};
use crate::engine::discover::Listing;

/// CRI lines `first..first + n`, each stamped one nanosecond after the last.
fn cri(first: u32, count: u32) -> String {
    (first..first + count)
        .map(|i| format!("2026-11-21T15:15:34.{i:09}Z stdout F line {i}\n"))
        .collect()
}

/// A listing of `files` in the order given (as a racing directory read may return them).
fn listing(files: &[&Path], compressed: &[&Path]) -> Listing {
    Listing {
        files: files.iter().map(|p| p.to_path_buf()).collect(),
        inodes: files
            .iter()
            .map(|p| fs::metadata(p).ok().map(|m| (m.dev(), m.ino())))
            .collect(),
        compressed: compressed.iter().map(|p| p.to_path_buf()).collect(),
    }
}

/// The files as (path, state), oldest first.
fn order(set: &FileSet) -> Vec<(Option<PathBuf>, State)> {
    set.files.iter().map(|f| (f.path.clone(), f.state)).collect()
}

struct Dir {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    spill: PathBuf,
}

fn dir() -> Dir {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let root = tmp.path().join("logs");
    let spill = tmp.path().join("state");
    fs::create_dir(&root).expect("mkdir");
    fs::create_dir(&spill).expect("mkdir");
    Dir {
        _tmp: tmp,
        root,
        spill,
    }
}

/// A listing that shows the files out of their age order: the one it shows last is the newest
/// (a clock stepped back at a rotation does not make a new file older), and one it shows before
/// goes before every known file with a newer first record.
#[test]
fn the_newest_listed_stays_newest_and_files_found_late_go_by_their_first_record() {
    let d = dir();
    let (a, b, c) = (
        d.root.join("0.log.1"),
        d.root.join("0.log.2"),
        d.root.join("0.log"),
    );
    fs::write(&a, cri(0, 3)).expect("write");
    fs::write(&b, cri(3, 3)).expect("write");
    fs::write(&c, cri(6, 2)).expect("write");
    let mut set = FileSet::new(SystemTime::UNIX_EPOCH);
    // Listed oldest last: taken as the newest.
    set.refresh(&listing(&[&b, &a], &[]), false, &d.spill);
    assert_eq!(
        order(&set),
        [(Some(b.clone()), State::Rotated), (Some(a.clone()), State::Live)]
    );
    // A file listed before `a` whose first record is newer than `b`'s: the listing puts it
    // before `a`, and the time does not move it later.
    set.refresh(&listing(&[&b, &c, &a], &[]), false, &d.spill);
    assert_eq!(
        order(&set),
        [
            (Some(b), State::Rotated),
            (Some(c), State::Rotated),
            (Some(a), State::Live)
        ]
    );
}

/// A rotated file missed by one listing (a rename seen half-way) and found by the next under a
/// name the listing sorts between two known files: its first record, older than both, puts it
/// before them.
#[test]
fn a_file_found_late_goes_before_every_newer_one() {
    let d = dir();
    let (x, a, b) = (
        d.root.join("0.log.3"),
        d.root.join("0.log.2"),
        d.root.join("0.log"),
    );
    fs::write(&x, cri(0, 3)).expect("write");
    fs::write(&a, cri(3, 3)).expect("write");
    fs::write(&b, cri(6, 2)).expect("write");
    let mut set = FileSet::new(SystemTime::UNIX_EPOCH);
    set.refresh(&listing(&[&a, &b], &[]), false, &d.spill);
    let changes = set.refresh(&listing(&[&a, &x, &b], &[]), false, &d.spill);
    assert_eq!(changes.added.len(), 1, "{changes:?}");
    assert_eq!(
        order(&set),
        [
            (Some(x), State::Rotated),
            (Some(a), State::Rotated),
            (Some(b), State::Live)
        ]
    );
}

/// A compressed file appearing beside its source still on disk (the kubelet removes the source
/// once the `.gz` is whole) is recognised as the known file, not read again; once the source is
/// gone, the entry is a deleted one, still read through its descriptor.
#[test]
fn a_compressed_file_beside_its_source_is_the_known_file() {
    let d = dir();
    let (old, new) = (d.root.join("0.log.20261121-151534"), d.root.join("0.log"));
    let gz = d.root.join("0.log.20261121-151534.gz");
    fs::write(&old, cri(0, 3)).expect("write");
    fs::write(&new, cri(3, 2)).expect("write");
    let mut set = FileSet::new(SystemTime::UNIX_EPOCH);
    set.refresh(&listing(&[&old, &new], &[]), false, &d.spill);
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(cri(0, 3).as_bytes()).expect("compress");
    fs::write(&gz, enc.finish().expect("compress")).expect("write");
    let changes = set.refresh(&listing(&[&old, &new], &[&gz]), false, &d.spill);
    assert!(changes.added.is_empty(), "{changes:?}");
    fs::remove_file(&old).expect("rm");
    let changes = set.refresh(&listing(&[&new], &[&gz]), false, &d.spill);
    assert!(changes.added.is_empty(), "{changes:?}");
    assert_eq!(
        order(&set),
        [(None, State::Deleted { sealed: true }), (Some(new), State::Live)]
    );
    assert!(set.files[0].fd.is_some(), "held open while a cursor may need it");
}

/// Copy-truncate: the entry reads its old content from the copy; what the truncated file holds
/// now is a newer file. A listing that does not show the copy yet leaves the entry truncated
/// for one more look; a second one counts the loss.
#[test]
fn copy_truncate_with_the_copy_seen_one_listing_late() {
    let d = dir();
    let (log, copy) = (d.root.join("app.log"), d.root.join("app.log.1"));
    fs::write(&log, cri(0, 3)).expect("write");
    let mut set = FileSet::new(SystemTime::UNIX_EPOCH);
    set.refresh(&listing(&[&log], &[]), false, &d.spill);
    fs::copy(&log, &copy).expect("copy");
    fs::write(&log, cri(3, 1)).expect("truncate and write");
    // The listing predates the copy: what the file holds now is a newer file.
    let changes = set.refresh(&listing(&[&log], &[]), false, &d.spill);
    assert!(changes.truncated_lost.is_empty());
    let states: Vec<State> = set.files.iter().map(|f| f.state).collect();
    assert_eq!(states, [State::Truncated { sealed: true }, State::Live]);
    let changes = set.refresh(&listing(&[&copy, &log], &[]), false, &d.spill);
    assert!(changes.truncated_lost.is_empty(), "{changes:?}");
    assert_eq!(
        order(&set),
        [
            (Some(copy.clone()), State::Rotated),
            (Some(log.clone()), State::Live)
        ]
    );

    // Truncated again, and no copy shows in two listings: the loss is counted once.
    fs::write(&log, cri(4, 1)).expect("truncate and write");
    fs::remove_file(&copy).expect("rm");
    set.refresh(&listing(&[&log], &[]), false, &d.spill);
    let changes = set.refresh(&listing(&[&log], &[]), false, &d.spill);
    assert_eq!(changes.truncated_lost.len(), 1, "{changes:?}");
    // A cursor passing over the entry later does not count it again.
    let (seq, _) = changes.truncated_lost[0];
    let lost = set.get(seq).expect("the entry stays while a cursor may need it");
    assert!(lost.loss_counted);
    assert!(matches!(lost.state, State::Deleted { .. }), "{:?}", lost.state);
}
