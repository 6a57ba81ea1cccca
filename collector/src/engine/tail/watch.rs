//! The file watcher: inotify (through `notify`) on the log roots, only to wake the tail loop.
//!
//! Invariants: events never carry state into the engine; a created, removed or renamed path (or a
//! watcher overflow) asks for a rescan, anything else only wakes the loop. Without a watcher
//! (roots missing at start, inotify limits) the periodic rescan still finds everything.
//! The directories events name are kept as a hint ([`Changed`]): the rescan looks into a
//! forgotten container's directory early when it changed, and otherwise on a backoff.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use notify::{
    EventKind, RecursiveMode, Watcher,
    event::{AccessKind, AccessMode, ModifyKind},
};
use sluice_api::node_config::Sources;

use crate::engine::Waker;

/// Directories remembered between two rescans; past this, every directory counts as changed.
const MAX_CHANGED_DIRS: usize = 4096;

/// The directories events named since the rescan last looked (the directory holding each
/// path). A directory outside the watched roots always counts as changed, and every directory
/// does after an overflow or an error, or when too many changed.
#[derive(Debug, Default)]
pub struct Changed {
    dirs: HashSet<PathBuf>,
    everything: bool,
    watched: Vec<PathBuf>,
}

impl Changed {
    /// Whether something in `dir` may have changed.
    pub fn touches(&self, dir: &Path) -> bool {
        self.everything || self.dirs.contains(dir) || !self.watched.iter().any(|root| dir.starts_with(root))
    }

    fn note(&mut self, path: &Path) {
        let Some(dir) = path.parent() else { return };
        if self.everything || self.dirs.contains(dir) {
            return;
        }
        if self.dirs.len() >= MAX_CHANGED_DIRS {
            self.everything();
            return;
        }
        self.dirs.insert(dir.to_owned());
    }

    fn everything(&mut self) {
        self.everything = true;
        self.dirs.clear();
    }
}

/// What the watcher shares with the tail loop.
#[derive(Clone, Debug, Default)]
pub struct Hints {
    /// Set when a rescan is needed soon (a path was created, removed or renamed).
    pub rescan: Arc<AtomicBool>,
    /// The directories that changed, taken by each rescan.
    changed: Arc<Mutex<Changed>>,
}

impl Hints {
    /// What changed since the last call.
    pub fn take_changed(&self) -> Changed {
        let mut changed = self.changed.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = Changed {
            watched: changed.watched.clone(),
            ..Changed::default()
        };
        std::mem::replace(&mut *changed, fresh)
    }

    /// Where events come from: `roots`, watched recursively.
    pub fn set_watched(&self, roots: Vec<PathBuf>) {
        self.changed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .watched = roots;
    }

    /// Remember the directories `event` names (every directory, for an overflow or an error).
    pub fn note(&self, event: &notify::Result<notify::Event>) {
        let mut changed = self.changed.lock().unwrap_or_else(PoisonError::into_inner);
        match event {
            Ok(e) if e.need_rescan() => changed.everything(),
            // Opening, reading and closing a file unwritten change nothing: the collector's own
            // looks (a listing, `config.v2.json`) must not count as changes.
            Ok(e) if matches!(e.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write)) => {}
            Ok(e) => e.paths.iter().for_each(|p| changed.note(p)),
            Err(_) => changed.everything(),
        }
    }
}

/// Watch the Docker `containers/` directory and the pods root, if they exist.
pub fn start(sources: &Sources, waker: Waker, hints: Hints) -> Option<notify::RecommendedWatcher> {
    let shared = hints.clone();
    let handler = move |event: notify::Result<notify::Event>| {
        let structural = match &event {
            Ok(e) => {
                e.need_rescan()
                    || matches!(
                        e.kind,
                        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
                    )
            }
            Err(_) => true,
        };
        shared.note(&event);
        if structural {
            shared.rescan.store(true, Ordering::Release);
        }
        waker.wake();
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "no file watcher; relying on the periodic rescan");
            return None;
        }
    };
    let roots = [sources.docker_root.join("containers"), sources.pods_root.clone()];
    let watched: Vec<PathBuf> = roots
        .into_iter()
        .filter(|root| root.is_dir() && watch(&mut watcher, root))
        .collect();
    hints.set_watched(watched);
    Some(watcher)
}

/// Watch `root`; `false` if it cannot be.
fn watch(watcher: &mut notify::RecommendedWatcher, root: &Path) -> bool {
    match watcher.watch(root, RecursiveMode::Recursive) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(path = %root.display(), error = %e, "cannot watch; relying on the periodic rescan");
            false
        }
    }
}
