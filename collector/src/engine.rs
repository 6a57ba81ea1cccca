//! The tail engine: finds container log files, reads them with one cursor per (container,
//! drain) cursor, parses and re-joins lines, encodes them into each drain's batch, and keeps the
//! checkpoint of what every drain acknowledged.
//!
//! It imports no `kube` and no `prometheus`: the glue hands it [`Routes`] and an [`Emitter`].
//!
//! Invariants:
//! * one thread reads every file ([`start`] spawns it); a `notify` watcher only wakes it, and the
//!   periodic rescan is the truth about which files exist;
//! * a cursor's acknowledged position moves only when its drain acknowledged a batch; the checkpoint holds the
//!   cursors, so after a restart every cursor resumes where its drain's acknowledgements end;
//! * a drain whose channel is full is skipped (its cursors lag on their files); no line is copied
//!   into a queue, so memory does not grow with a backlog;
//! * bad input is counted through the [`Emitter`], logged once per file and cause, and skipped;
//!   it never stops the loop.

mod checkpoint;
mod cursor;
mod discover;
mod files;
mod identity;
mod lifecycle;
mod outlet;
pub mod parse;
mod read;
mod report;
mod route;
mod tail;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Condvar, Mutex, mpsc},
    thread::JoinHandle,
    time::Duration,
};

use sluice_api::node_config::{ContainerConfig, SelectorConfig, Sources, Stream};
use tokio::time::Instant;

use crate::pipeline::{DrainEndpoint, Wake};

/// What the engine reports; the glue implements it over Prometheus.
pub trait Emitter: Send + Sync + 'static {
    /// Complete lines read from log files (counted once, however many drains read them).
    fn lines_read(&self, stream: Stream, lines: u64, bytes: u64);
    /// Bad input that was skipped or repaired: `malformed_json`, `malformed_cri`, `invalid_utf8`,
    /// `truncated`, `unreadable_file`, `garbage`, `checkpoint_corrupt`.
    fn input_error(&self, cause: &'static str);
    /// Lines a drain will never get, by cause (`rotated_away`).
    fn lines_dropped(&self, drain: &str, cause: &'static str, lines: u64);
    /// Bytes between a drain's read positions and the ends of its files.
    fn lag_bytes(&self, drain: &str, bytes: u64);
    /// Log files held open.
    fn open_files(&self, files: u64);
    /// The checkpoint file was written.
    fn checkpoint_written(&self);
    /// Writing the checkpoint failed (it is retried at the next interval).
    fn checkpoint_failed(&self);
    /// The tail thread went round its loop: called about once a second while it runs, so a
    /// thread that hangs or died shows as silence (the collector's `/healthz` fails on it).
    fn engine_alive(&self);
}

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineSettings {
    /// Where the checkpoint lives (created if missing).
    pub state_dir: PathBuf,
    /// Where the runtimes keep their logs.
    pub sources: Sources,
    /// Longest line delivered whole (longer lines are cut and flagged `truncated`).
    pub max_line_bytes: u32,
    /// This node's name (in every line's metadata).
    pub node_name: String,
    /// How often the log directories are listed again (1 s).
    pub rescan_interval: Duration,
    /// How often changed cursors are written to the checkpoint (1 s).
    pub checkpoint_interval: Duration,
    /// Bytes read per container per round (256 KiB), so one busy container cannot starve others.
    pub read_budget_bytes: usize,
    /// How long the unterminated last line of a finished container's newest file must stay
    /// unchanged before it is counted as `unterminated_line` and the container forgotten (5 s).
    pub unterminated_quiet: Duration,
    /// How long a rotated CRI file is still read after a newer file was found, before a cursor
    /// at its end moves on (5 s). containerd swaps its writer at a rotation while the old one
    /// still holds up to 4 KiB of each output stream, which it writes to the rotated file after
    /// lines went to the new one; Docker closes its file before it rotates, so its files are
    /// left at once.
    pub rotate_wait: Duration,
    /// Where each line read for the first time is also kept (for `kubectl sluice logs`).
    pub recent: Option<Arc<crate::recent::Recent>>,
}

impl EngineSettings {
    /// Settings with the defaults for everything but the state directory, sources and node.
    pub fn new(state_dir: PathBuf, sources: Sources, node_name: String) -> Self {
        Self {
            state_dir,
            sources,
            max_line_bytes: sluice_api::node_config::Limits::DEFAULT_MAX_LINE_BYTES,
            node_name,
            rescan_interval: Duration::from_secs(1),
            checkpoint_interval: Duration::from_secs(1),
            read_budget_bytes: 256 * 1024,
            unterminated_quiet: Duration::from_secs(5),
            rotate_wait: Duration::from_secs(5),
            recent: None,
        }
    }
}

/// The routing table: running drains and the containers bound to them.
#[derive(Clone, Debug, Default)]
pub struct Routes {
    /// Running drains, by name.
    pub drains: BTreeMap<String, DrainEndpoint>,
    /// Containers bound by runtime id (from the operator or the standalone config).
    pub containers: Vec<ContainerConfig>,
    /// Docker containers bound by name glob and labels.
    pub selectors: Vec<SelectorConfig>,
}

/// The engine could not start or persist its state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::Error),
    /// The tail thread could not be started.
    #[error("cannot start the tail thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The tail thread is gone (it stopped or panicked).
    #[error("the tail thread is not running")]
    Stopped,
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wakes the tail loop: drains call it (through [`Waker::wake_fn`]) when they took a batch, so a
/// loop that stopped reading for lack of room goes on.
#[derive(Clone, Debug, Default)]
pub struct Waker {
    inner: Arc<(Mutex<bool>, Condvar)>,
}

impl Waker {
    /// A new waker (create it first, hand [`Waker::wake_fn`] to the drains, then [`start`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The callback drains call after taking a batch off their channel.
    pub fn wake_fn(&self) -> Wake {
        let waker = self.clone();
        Arc::new(move || waker.wake())
    }

    /// Wake the loop.
    pub fn wake(&self) {
        let (flag, cv) = &*self.inner;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_one();
    }

    /// Sleep until woken or `timeout` passed.
    pub(crate) fn wait(&self, timeout: Duration) {
        let (flag, cv) = &*self.inner;
        let mut woken = flag.lock().unwrap_or_else(|p| p.into_inner());
        if !*woken {
            woken = cv
                .wait_timeout(woken, timeout)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *woken = false;
    }
}

/// Requests from the handle to the tail thread.
pub(crate) enum Command {
    Apply(Routes),
    StopReading {
        deadline: Instant,
        done: mpsc::Sender<()>,
    },
    WriteCheckpoint {
        done: mpsc::Sender<Result<()>>,
    },
    Rescan {
        done: mpsc::Sender<()>,
    },
    Pause {
        paused: mpsc::Sender<()>,
        resume: mpsc::Receiver<()>,
    },
    Shutdown,
}

/// The tail thread held still by [`EngineHandle::pause`]; dropping it lets the thread go on.
#[derive(Debug)]
pub struct Paused {
    _resume: mpsc::Sender<()>,
}

/// The running engine.
pub struct EngineHandle {
    commands: mpsc::Sender<Command>,
    waker: Waker,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle").finish_non_exhaustive()
    }
}

/// Load the checkpoint, then spawn the tail thread (and its file watcher).
pub fn start(
    settings: EngineSettings,
    routes: Routes,
    waker: Waker,
    emitter: Arc<dyn Emitter>,
) -> Result<EngineHandle> {
    let (tx, rx) = mpsc::channel();
    let tail = tail::Tail::new(settings, routes, waker.clone(), emitter, rx)?;
    let thread = std::thread::Builder::new()
        .name("sluice-tail".into())
        .spawn(move || tail.run())
        .map_err(Error::Spawn)?;
    Ok(EngineHandle {
        commands: tx,
        waker,
        thread: Some(thread),
    })
}

impl EngineHandle {
    fn send(&self, command: Command) -> bool {
        let sent = self.commands.send(command).is_ok();
        self.waker.wake();
        sent
    }

    /// Swap the routing table in place (no restart).
    pub fn apply(&self, routes: Routes) {
        self.send(Command::Apply(routes));
    }

    /// Stop reading and hand the partly built batches to the drains. Blocks (briefly: every
    /// non-empty batch already holds a reserved channel slot) until done or `deadline`.
    pub fn stop_reading(&self, deadline: Instant) {
        let (done, wait) = mpsc::channel();
        if self.send(Command::StopReading { deadline, done }) {
            let _ = wait.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
    }

    /// Write the checkpoint now (the last step of a graceful stop, after the drains delivered).
    pub fn write_checkpoint(&self) -> Result<()> {
        let (done, wait) = mpsc::channel();
        if !self.send(Command::WriteCheckpoint { done }) {
            return Err(Error::Stopped);
        }
        wait.recv().map_err(|_| Error::Stopped)?
    }

    /// List every container's directory again now, without waiting for the rescan interval or a
    /// file event; returns once done. Lets a caller order a look before or after its own writes.
    pub fn rescan(&self) -> Result<()> {
        let (done, wait) = mpsc::channel();
        if !self.send(Command::Rescan { done }) {
            return Err(Error::Stopped);
        }
        wait.recv().map_err(|_| Error::Stopped)
    }

    /// Hold the tail thread still (as a SIGSTOP of the process would) until the returned guard is
    /// dropped; returns once the thread has stopped. Lets a caller make files change between two
    /// of the engine's looks, the way a paused or starved collector sees them.
    pub fn pause(&self) -> Result<Paused> {
        let (paused, confirmed) = mpsc::channel();
        let (resume_tx, resume) = mpsc::channel();
        if !self.send(Command::Pause { paused, resume }) {
            return Err(Error::Stopped);
        }
        confirmed.recv().map_err(|_| Error::Stopped)?;
        Ok(Paused { _resume: resume_tx })
    }

    /// Stop the thread and wait for it.
    pub fn join(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EngineHandle {
    /// Dropping the handle stops the thread without writing a final checkpoint (like a crash of
    /// the process, as far as the files on disk are concerned).
    fn drop(&mut self) {
        self.shutdown();
    }
}
