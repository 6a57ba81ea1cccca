//! The rescan: bring containers, their files and their cursors up to date with the routes and
//! the disk.
//!
//! Invariants:
//! * a new cursor resumes from its checkpointed cursor when there is one, else starts at the
//!   beginning of its container's oldest file;
//! * a checkpointed file that is gone is a loss that is counted (one event: its lines are
//!   unknown) and logged with the drain's name;
//! * a deleted file stays open while a cursor still needs it, up to [`MAX_DELETED_OPEN`] per
//!   container; closing one a cursor had not finished counts the lines that cursor loses;
//! * a finishing container is forgotten only once every cursor read to the end of its newest
//!   file as a fresh `fstat` finds it, and its drain acknowledged all of it, or all that is left
//!   is an unterminated last line that stayed unchanged for `unterminated_quiet` (counted once as
//!   `unterminated_line`; the cursors' `acked_end` moves past it, their `resume` stays at its
//!   start, so a line completed after all is still read whole); its cursors stay in
//!   the checkpoint (dormant) as long as its directory exists, and if its files change after
//!   that (a container created, then started and finished between two looks) it is read again.

use std::{
    collections::BTreeMap,
    fs::File,
    io,
    os::unix::fs::FileExt,
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::{Duration, SystemTime},
};

use tokio::time::Instant;

use sluice_api::node_config::Stream;

use super::{Container, Tail};
use crate::{
    engine::{
        cursor::{Loc, ReadCursor},
        discover,
        files::FileSet,
        lifecycle::{Action, Observation},
        parse::Format,
        read,
        report::Reporter,
        route::{self, Desired},
    },
    pipeline::{ContainerMeta, FileId, Position},
};

/// Deleted files kept open per container for cursors that still need them.
pub const MAX_DELETED_OPEN: usize = 8;

/// Fresh listings taken before a checkpointed file counts as gone, and the pause between them.
const RELIST: usize = 3;
/// Fresh listings taken at most, counting those that had to look again (see `find_checkpointed`).
const RELIST_MAX: usize = 100;
const RELIST_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

impl Tail {
    /// Resolve the routes, update every container's files and cursors, forget finished ones.
    pub(super) fn rescan(&mut self) {
        let sources = &self.settings.sources;
        let selectors = !self.routes.selectors.is_empty();
        let docker = discover::DockerContainers::read(
            &sources.docker_root,
            route::docker_ids(&self.routes),
            selectors,
        );
        let desired = route::resolve(&self.routes, sources, &self.settings.node_name, &docker);
        let changed = self.hints.take_changed();
        let now = Instant::now();
        let mut soon = false;
        for c in &mut self.containers {
            match desired.get(&c.key) {
                Some(d) => {
                    c.finishing = !d.running;
                    if c.meta != d.meta {
                        c.meta = d.meta.clone();
                    }
                }
                None => c.finishing = true,
            }
        }
        for (key, d) in &desired {
            let i = match self.containers.iter().position(|c| c.key == *key) {
                Some(i) => i,
                None if !d.running
                    && self
                        .finished
                        .get_mut(key)
                        .is_some_and(|f| f.unchanged(d, changed.touches(&d.dir), now)) =>
                {
                    continue;
                }
                None => {
                    if self.finished.remove(key).is_some() {
                        tracing::info!(container = %key, "a finished container's files changed since it was read to its end; reading it again");
                    }
                    self.containers.push(new_container(key, d, self.history_before));
                    let i = self.containers.len() - 1;
                    // Before its cursors exist, nothing may be released.
                    let spill = &self.settings.state_dir;
                    soon |= refresh_files(&mut self.containers[i], &mut self.rep, spill, false);
                    i
                }
            };
            self.sync_cursors(i, d);
        }
        for c in &mut self.containers {
            soon |= refresh_files(c, &mut self.rep, &self.settings.state_dir, true);
        }
        if soon {
            self.hints.rescan.store(true, Ordering::Release);
        }
        self.forget_done();
        let sources = &self.settings.sources;
        let exists = |key: &str| discover::locate(key, sources).is_some_and(|(dir, _)| dir.exists());
        self.dormant.retain(|(key, _), _| exists(key));
        self.finished.retain(|key, _| exists(key));
        let open: usize = self.containers.iter().map(|c| c.files.open_count()).sum();
        self.rep.emitter.open_files(open as u64);
    }

    /// Make the container's cursors match its drains: new pairs start from their dormant cursor
    /// or the oldest file; pairs no longer routed become dormant.
    fn sync_cursors(&mut self, index: usize, desired: &Desired) {
        let c = &mut self.containers[index];
        let (keep, gone): (Vec<_>, Vec<_>) = c
            .cursors
            .drain(..)
            .partition(|s| desired.drains.contains_key(&s.drain));
        c.cursors = keep;
        for s in gone {
            self.dormant.insert((c.key.clone(), s.drain), s.acked);
        }
        let resuming: Vec<Position> = desired
            .drains
            .keys()
            .filter(|drain| !c.cursors.iter().any(|s| s.drain == **drain))
            .filter_map(|drain| self.dormant.get(&(c.key.clone(), drain.clone())))
            .filter_map(|cursor| cursor.get())
            .collect();
        find_checkpointed(c, &resuming, &self.settings.state_dir, &mut self.rep);
        for (drain, wanted) in &desired.drains {
            if let Some(s) = c.cursors.iter_mut().find(|s| s.drain == *drain) {
                s.wanted = *wanted;
                continue;
            }
            let cursor = self
                .dormant
                .remove(&(c.key.clone(), drain.clone()))
                .unwrap_or_default();
            let mut s = ReadCursor::new(drain.clone(), *wanted, Arc::clone(&cursor), Loc::START);
            match cursor.get() {
                Some(position) => seek_to(&mut c.files, &c.meta, &mut s, position, &mut self.rep),
                None => s.seek(oldest(&c.files), None),
            }
            c.cursors.push(s);
        }
    }

    /// Rewind every cursor of `drain` to its acknowledged cursor (its drain was re-created).
    pub(super) fn rewind(&mut self, drain: &str) {
        for c in &mut self.containers {
            for s in c.cursors.iter_mut().filter(|s| s.drain == drain) {
                match s.acked.get() {
                    Some(position) => seek_to(&mut c.files, &c.meta, s, position, &mut self.rep),
                    None => s.seek(oldest(&c.files), None),
                }
            }
        }
    }

    /// Forget finishing containers that every cursor read to the end, as the files are now, and
    /// whose drains acknowledged everything handed to them. An unterminated last line left in
    /// the newest file, unchanged for `unterminated_quiet`, does not keep one alive: it is
    /// counted once and acknowledged past (see [`acknowledge_unterminated`]).
    fn forget_done(&mut self) {
        let mut i = 0;
        while i < self.containers.len() {
            let c = &mut self.containers[i];
            let progress = match c.finishing {
                true => progress(c),
                false => Progress::Busy,
            };
            // With only an unterminated last line left: whether it stayed as it is long enough.
            let quiet = match (progress, c.unterminated) {
                (Progress::Unterminated(look), Some((then, since))) if then == look => {
                    since.elapsed() >= self.settings.unterminated_quiet
                }
                (Progress::Unterminated(look), _) => {
                    c.unterminated = Some((look, Instant::now()));
                    false
                }
                _ => {
                    c.unterminated = None;
                    false
                }
            };
            if !(quiet || progress == Progress::Done) {
                i += 1;
                continue;
            }
            let c = self.containers.swap_remove(i);
            if let (Progress::Unterminated(look), true) = (progress, quiet) {
                acknowledge_unterminated(&c, look, &mut self.rep);
            }
            tracing::info!(container = %c.key, "container finished and read to its end; forgetting it");
            // A runtime split whose last fragment never came (the container died mid-line) does
            // not keep a finished container alive: the piece is counted and dropped.
            let unfinished = c
                .cursors
                .iter()
                .flat_map(|s| &s.pending)
                .filter(|p| p.start.is_some())
                .count();
            if unfinished > 0 {
                let detail = "the container finished in the middle of a split line";
                self.rep.input_once(&c.dir, "unterminated_line", &detail);
            }
            for s in c.cursors {
                self.dormant.insert((c.key.clone(), s.drain), s.acked);
            }
            let forgotten = Forgotten::new(&c.dir, c.format, self.settings.rescan_interval);
            self.finished.insert(c.key, forgotten);
        }
    }
}

/// A container read to its end and forgotten while not running: what its directory held then,
/// and when to look again.
pub(super) struct Forgotten {
    footprint: discover::Footprint,
    backoff: Backoff,
}

/// The longest a forgotten container's directory goes without a look.
const LOOK_AT_MOST_EVERY: Duration = Duration::from_secs(60);

impl Forgotten {
    /// Forgotten now, with its directory as `dir` holds it now; looked at again after `first`.
    fn new(dir: &Path, format: Format, first: Duration) -> Self {
        Self {
            footprint: discover::footprint(dir, format),
            backoff: Backoff::new(first, LOOK_AT_MOST_EVERY, Instant::now()),
        }
    }

    /// Whether the container's directory (of `desired`) holds what it held when it was forgotten. It
    /// is looked at when the watcher saw it change (`touched`; the backoff starts again), or when
    /// its backoff is due (the next look comes twice as late); else it is taken as unchanged.
    fn unchanged(&mut self, desired: &Desired, touched: bool, now: Instant) -> bool {
        if touched {
            self.backoff.reset(now);
        } else if self.backoff.due(now) {
            self.backoff.looked(now);
        } else {
            return true;
        }
        self.footprint == discover::footprint(&desired.dir, desired.format)
    }
}

/// When to look next: `first` after the start, then twice as late each time, up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Backoff {
    first: Duration,
    max: Duration,
    interval: Duration,
    next: Instant,
}

impl Backoff {
    fn new(first: Duration, max: Duration, now: Instant) -> Self {
        Self {
            first,
            max,
            interval: first,
            next: now + first,
        }
    }

    fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// A look was taken at `now`: the next one comes twice as late as the last.
    fn looked(&mut self, now: Instant) {
        self.interval = (self.interval * 2).min(self.max);
        self.next = now + self.interval;
    }

    /// Something changed at `now`: look again after `first`.
    fn reset(&mut self, now: Instant) {
        self.interval = self.first;
        self.next = now + self.first;
    }
}

/// The newest file of a container as an `fstat` found it: a file that still changes is still
/// being written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FileLook {
    seq: u64,
    len: u64,
    modified: Option<SystemTime>,
}

/// How far a finishing container's cursors are from its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// Every cursor read to the end of the newest file, and its drain acknowledged all of it.
    Done,
    /// Every cursor's drain acknowledged all it was handed, and all a cursor has left to read is
    /// an unterminated last line of the newest file (as it looked then).
    Unterminated(FileLook),
    /// Something is still to be read or acknowledged.
    Busy,
}

/// Whether every cursor of `container` has read to the end of its newest file, as a fresh `fstat` of
/// that file says, and its drain acknowledged everything it was handed. Flags a read set earlier
/// do not count: a file may have grown since, or a cursor may not have been read at all while
/// its drain's channel was full.
fn progress(container: &mut Container) -> Progress {
    let Some(newest) = container.files.files.last_mut() else {
        // No file: nothing was written, or everything was deleted (counted where it happened).
        return Progress::Done;
    };
    let mut modified = None;
    if let Some(fd) = &newest.fd {
        match fd.metadata() {
            Ok(m) => {
                newest.size = newest.size.max(m.len());
                modified = m.modified().ok();
            }
            Err(_) => return Progress::Busy,
        }
    }
    let (seq, size) = (newest.seq, newest.size);
    if !container.cursors.iter().all(|s| s.at.seq == seq && s.settled()) {
        return Progress::Busy;
    }
    let Some(from) = container.cursors.iter().map(|s| s.at.offset).min() else {
        return Progress::Done;
    };
    if from >= size {
        return Progress::Done;
    }
    // The reader consumes whole lines only, so what is left starts a line; it is an
    // unterminated last line if it holds no newline (a longer one than the read buffer would
    // have been discarded as garbage).
    let (Some(fd), true) = (&newest.fd, size - from < read::BUFFER_BYTES as u64) else {
        return Progress::Busy;
    };
    let mut rest = vec![0u8; (size - from) as usize];
    match fd.read_exact_at(&mut rest, from) {
        Ok(()) if memchr::memchr(b'\n', &rest).is_none() => Progress::Unterminated(FileLook {
            seq,
            len: size,
            modified,
        }),
        _ => Progress::Busy,
    }
}

/// Count the unterminated last line of a finished container's newest file (as `look` found it)
/// once as `unterminated_line`, and acknowledge it for every cursor: each cursor's `acked_end`
/// moves past it, so a restart does not count it again, while its `resume` stays at the line's
/// start, so a line the file completes after all (it grows, and the container is read again)
/// is delivered whole.
fn acknowledge_unterminated(container: &Container, look: FileLook, rep: &mut Reporter) {
    let Some(newest) = container.files.get(look.seq) else {
        return;
    };
    let end = Loc {
        seq: look.seq,
        file: newest.id,
        offset: look.len,
    };
    let counted_before = container
        .cursors
        .iter()
        .any(|s| s.acked.get().is_some_and(|p| p.acked_end == end.pos()));
    // A cursor discarding a line too long to buffer counted that line as garbage already.
    let from = container
        .cursors
        .iter()
        .filter(|s| !s.discarding)
        .map(|s| s.at.offset)
        .min();
    let bytes = from.map_or(0, |from| look.len.saturating_sub(from));
    if bytes > 0 && !counted_before {
        let path = newest.path.clone().unwrap_or_default();
        rep.emitter.lines_read(Stream::Stdout, 0, bytes);
        let detail = format_args!("{bytes} bytes without a newline at the end of a finished container's log");
        rep.input(&path, "unterminated_line", 1, &detail);
    }
    for s in container.cursors.iter().filter(|s| s.at.offset < end.offset) {
        s.acked.ack(Position {
            resume: s.resume_from(s.at).pos(),
            acked_end: end.pos(),
        });
    }
}

/// A container first seen now; its compressed files last written before `history_before` are
/// history, not read (see `files::inflate`).
fn new_container(key: &str, desired: &Desired, history_before: std::time::SystemTime) -> Container {
    Container {
        key: key.to_owned(),
        dir: desired.dir.clone(),
        format: desired.format,
        meta: desired.meta.clone(),
        files: FileSet::new(history_before),
        cursors: Vec::new(),
        hw: Loc::START,
        delivered: [Loc::START; 2],
        finishing: !desired.running,
        unterminated: None,
    }
}

/// The start of the oldest file (or before any file, when there is none yet).
fn oldest(files: &FileSet) -> Loc {
    files.oldest().map_or(Loc::START, |f| Loc {
        seq: f.seq,
        file: f.id,
        offset: 0,
    })
}

/// Position `cursor` at a checkpointed position.
fn seek_to(
    files: &mut FileSet,
    whose: &ContainerMeta,
    cursor: &mut ReadCursor,
    position: Position,
    rep: &mut Reporter,
) {
    if let Some((resume, skip)) = locate(files, position) {
        cursor.seek(resume, skip);
        return;
    }
    tracing::debug!(
        checkpoint = ?position,
        files = ?files.files.iter().map(|f| (f.seq, f.id, f.size, &f.path)).collect::<Vec<_>>(),
        "the checkpointed file is not on disk"
    );
    cursor.seek(oldest(files), None);
    // The loss is counted now; a stop before the first acknowledgement must not count it again.
    cursor.acked.reset();
    let detail = "the file its checkpoint points into is gone; continuing with the oldest file";
    rep.dropped(&cursor.drain, whose, "rotated_away", 1, &detail);
}

/// Make the files of checkpointed positions `resuming` known before cursors resume from them.
/// A file missing from a listing is looked for in fresh listings a few times (a listing taken
/// while the runtime renames files can miss one); one still missing may have been compressed
/// meanwhile, and is then read from its compressed form (inflated into `spill`), with the
/// compressed files after it; if it is gone altogether, all compressed files are newer and read.
fn find_checkpointed(container: &mut Container, resuming: &[Position], spill: &Path, rep: &mut Reporter) {
    // Listings that held (a refresh that had to look again, a rotation in progress, does not
    // count: its files may be missing for now), up to a bound on all.
    let (mut held, mut tries) = (0, 0);
    while held < RELIST && tries < RELIST_MAX {
        if resuming
            .iter()
            .all(|&p| locate(&mut container.files, p).is_some())
        {
            return;
        }
        std::thread::sleep(RELIST_PAUSE);
        // The cursors being placed are not among the container's yet: release nothing.
        if !refresh_files(container, rep, spill, false) {
            held += 1;
        }
        tries += 1;
    }
    let missing: Vec<FileId> = resuming
        .iter()
        .filter(|&&p| locate(&mut container.files, p).is_none())
        .flat_map(|p| [p.resume.file, p.acked_end.file])
        .collect();
    let compressed = match discover::list(&container.dir, container.format) {
        Ok(listing) if !listing.compressed.is_empty() => listing.compressed,
        _ => return,
    };
    // A compressed file still being written (or renamed meanwhile) is looked at again, a few
    // times, before the cursors are placed.
    let mut read = 0;
    for _ in 0..RELIST_MAX {
        let changes = container.files.inflate(&compressed, &missing, spill);
        read += changes.added.len();
        for (path, why) in &changes.unreadable {
            rep.input_once(path, "unreadable_file", why);
        }
        if !changes.deferred {
            break;
        }
        std::thread::sleep(RELIST_PAUSE);
    }
    if read > 0 {
        tracing::info!(
            container = %container.key,
            files = read,
            "a checkpointed file was compressed or deleted meanwhile: reading the compressed files after it"
        );
    }
}

/// Where a checkpointed position is in `files` now: where to resume, and what to skip up to.
fn locate(files: &mut FileSet, position: Position) -> Option<(Loc, Option<Loc>)> {
    let mut find = |pos: crate::pipeline::FilePos| {
        let seq = files.find(&pos.file, pos.offset)?;
        let file = files.get(seq)?.id;
        Some(Loc {
            seq,
            file,
            offset: pos.offset,
        })
    };
    let resume = find(position.resume);
    let acked = find(position.acked_end);
    match (resume, acked) {
        (Some(r), a) => Some((r, a)),
        (None, Some(a)) => Some((a, None)),
        (None, None) => None,
    }
}

/// List the container's directory and update its files (inflating into `spill` compressed files
/// never seen); react to truncation and deletion; with `release`, close what no cursor needs. `true` if a new file was left for the next
/// rescan.
fn refresh_files(container: &mut Container, rep: &mut Reporter, spill: &Path, release: bool) -> bool {
    let listing = match discover::list(&container.dir, container.format) {
        Ok(listing) => listing,
        Err(e) => {
            rep.input_once(&container.dir, "unreadable_file", &e);
            return false;
        }
    };
    let mut changes = container.files.refresh(&listing, container.finishing, spill);
    // New files are numbered by the listing's order: it must still hold once they are open.
    if !changes.added.is_empty()
        && discover::list(&container.dir, container.format).ok().as_ref() != Some(&listing)
    {
        tracing::debug!(container = %container.key, "the directory changed while new files were opened; looking again");
        container.files.withdraw(&changes.added);
        changes.deferred = true;
    }
    tracing::trace!(
        container = %container.key,
        listed = listing.files.len(),
        files = ?container.files.files.iter().map(|f| (f.seq, f.fd.is_some(), f.path.is_some(), f.size)).collect::<Vec<_>>(),
        streams = ?container.cursors.iter().map(|s| (s.at.seq, s.at.offset)).collect::<Vec<_>>(),
        "rescanned"
    );
    for (path, why) in &changes.unreadable {
        rep.input_once(path, "unreadable_file", why);
    }
    for path in &changes.lost_compressed {
        for s in &container.cursors {
            let detail = format!(
                "the compressed log {} held lines never read, and cannot be inflated",
                path.display()
            );
            rep.dropped(&s.drain, &container.meta, "unreadable_compressed", 1, &detail);
        }
    }
    for &(seq, size) in &changes.truncated_lost {
        for s in container
            .cursors
            .iter()
            .filter(|s| s.at.seq < seq || (s.at.seq == seq && s.at.offset < size))
        {
            rep.dropped(
                &s.drain,
                &container.meta,
                "rotated_away",
                1,
                &"file truncated in place before it was read and no copy was found",
            );
        }
    }
    if release {
        let needed_from = container
            .cursors
            .iter()
            .map(|s| {
                let acked = s.acked.get().and_then(|p| {
                    container
                        .files
                        .files
                        .iter()
                        .find(|f| f.id == p.resume.file)
                        .map(|f| f.seq)
                });
                acked.map_or(s.at.seq, |a| a.min(s.at.seq))
            })
            .min()
            .unwrap_or(u64::MAX);
        container.files.release(needed_from);
    }
    enforce_cap(container, rep);
    changes.deferred
}

/// Close the oldest deleted files beyond the cap, counting what lagging cursors lose.
fn enforce_cap(container: &mut Container, rep: &mut Reporter) {
    loop {
        let deleted: Vec<u64> = container
            .files
            .files
            .iter()
            .filter(|f| f.path.is_none() && f.fd.is_some())
            .map(|f| f.seq)
            .collect();
        if deleted.len() <= MAX_DELETED_OPEN {
            return;
        }
        let seq = deleted[0];
        let Some(f) = container.files.get_mut(seq) else {
            return;
        };
        let step = f.observe(Observation::OverOpenCap, None, None);
        let fd = f.fd.as_ref().expect("invariant: filtered on an open descriptor");
        let mut lost: BTreeMap<String, u64> = BTreeMap::new();
        let counted = step.actions.contains(&Action::CountLoss);
        for s in container.cursors.iter().filter(|s| counted && s.at.seq <= seq) {
            let from = if s.at.seq == seq { s.at.offset } else { 0 };
            // A cursor at the file's end loses nothing; an unreadable rest counts as one line.
            let n = count_lines(fd, from).unwrap_or(1);
            if n > 0 {
                *lost.entry(s.drain.clone()).or_default() += n;
            }
        }
        for (drain, n) in lost {
            rep.dropped(
                &drain,
                &container.meta,
                "rotated_away",
                n,
                &"a deleted file was closed before this drain read it (too many deleted files held open)",
            );
        }
        // Only files held open off disk are listed above, and each of those is forgotten.
        debug_assert!(step.actions.contains(&Action::Forget));
        container.files.files.retain(|f| f.seq != seq);
    }
}

/// Newlines in `fd` from `from` to its end.
fn count_lines(fd: &File, from: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let (mut at, mut n) = (from, 0u64);
    loop {
        let got = fd.read_at(&mut buf, at)?;
        if got == 0 {
            return Ok(n);
        }
        n += memchr::memchr_iter(b'\n', &buf[..got]).count() as u64;
        at += got as u64;
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{AccessKind, AccessMode};

    use super::{super::watch, *};

    /// The looks at a forgotten container's directory: `first` after it was forgotten, then
    /// twice as late each time up to `max`; a change seen by the watcher starts over.
    #[test]
    fn backoff_doubles_up_to_its_bound_and_starts_over_on_a_change() {
        let (first, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let mut b = Backoff::new(first, max, t0);
        assert!(!b.due(t0));
        assert!(b.due(at(1)));
        // (time of the look, the interval after it): 2, 4, … 32, then 60 at most.
        let mut now = 1;
        for interval in [2, 4, 8, 16, 32, 60, 60] {
            assert!(b.due(at(now)), "due at {now} s");
            b.looked(at(now));
            assert_eq!(b.interval, Duration::from_secs(interval));
            assert!(
                !b.due(at(now + interval - 1)),
                "not due before {} s",
                now + interval
            );
            now += interval;
        }
        assert_eq!(now, 1 + 2 + 4 + 8 + 16 + 32 + 60 + 60);
        b.reset(at(now));
        assert_eq!((b.interval, b.next), (first, at(now + 1)));
        b.looked(at(now + 1));
        assert_eq!(b.interval, Duration::from_secs(2));
    }

    /// Only the directories events named count as changed, and every directory outside the
    /// watched roots; an overflow or error makes every directory count.
    #[test]
    fn changed_directories_from_the_watcher() {
        let hints = watch::Hints::default();
        let root = Path::new("/logs/containers");
        let (a, b) = (root.join("a"), root.join("b"));
        // Before the watcher runs, nothing is known.
        assert!(hints.take_changed().touches(&a));
        hints.set_watched(vec![root.to_owned()]);
        hints.note(&Ok(
            notify::Event::new(notify::EventKind::Any).add_path(a.join("a-json.log"))
        ));
        // Reading a file (the collector's own looks) is no change.
        let read = notify::EventKind::Access(AccessKind::Close(AccessMode::Read));
        hints.note(&Ok(notify::Event::new(read).add_path(b.join("config.v2.json"))));
        let changed = hints.take_changed();
        assert!(changed.touches(&a));
        assert!(!changed.touches(&b));
        assert!(
            changed.touches(Path::new("/elsewhere/c")),
            "outside the watched roots"
        );
        let changed = hints.take_changed();
        assert!(!changed.touches(&a), "taken once");
        hints.note(&Err(notify::Error::generic("queue overflow")));
        assert!(hints.take_changed().touches(&b));
        assert!(!hints.take_changed().touches(&b));
    }
}
