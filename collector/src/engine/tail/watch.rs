//! The file watcher: inotify (through `notify`) on the log roots, only to wake the tail loop.
//!
//! Invariants: events never carry state into the engine; a created, removed or renamed path (or a
//! watcher overflow) asks for a rescan, anything else only wakes the loop. Without a watcher
//! (roots missing at start, inotify limits) the periodic rescan still finds everything.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use notify::{EventKind, RecursiveMode, Watcher, event::ModifyKind};
use sluice_api::node_config::Sources;

use crate::engine::Waker;

/// Watch the Docker `containers/` directory and the pods root, if they exist.
pub fn start(sources: &Sources, waker: Waker, rescan: Arc<AtomicBool>) -> Option<notify::RecommendedWatcher> {
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
        if structural {
            rescan.store(true, Ordering::Release);
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
    for root in roots.iter().filter(|r| r.is_dir()) {
        watch(&mut watcher, root);
    }
    Some(watcher)
}

fn watch(watcher: &mut notify::RecommendedWatcher, root: &Path) {
    if let Err(e) = watcher.watch(root, RecursiveMode::Recursive) {
        tracing::warn!(path = %root.display(), error = %e, "cannot watch; relying on the periodic rescan");
    }
}
