//! The tail loop: one thread, round-robin over containers, a byte budget per container per round.
//!
//! Invariants:
//! * the loop never blocks on a drain: a cursor is read only when its drain has a reserved slot,
//!   so a full channel leaves that drain's cursors lagging on their files while others go on;
//! * when a round read nothing, the loop sleeps until woken (a file event, a drain taking a
//!   batch, a command) or until the next rescan, checkpoint or lag report is due;
//! * the checkpoint is written from the cursors (what drains acknowledged), never from read
//!   positions, every `checkpoint_interval` when it changed, and on request.

mod rescan;
mod watch;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, atomic::Ordering, mpsc},
    time::Duration,
};

use tokio::time::Instant;

use super::{
    Command, EngineSettings, Error, Result, Routes, Waker,
    checkpoint::{CursorKey, Store},
    cursor::{Loc, ReadCursor},
    files::FileSet,
    outlet::Outlet,
    parse::Format,
    read::{Ctx, Outcome, Reader},
    report::Reporter,
};
use crate::{
    engine::Emitter,
    pipeline::{ContainerMeta, Cursor, Position},
};

/// One container being tailed.
pub(crate) struct Container {
    key: String,
    dir: PathBuf,
    format: Format,
    meta: ContainerMeta,
    files: FileSet,
    cursors: Vec<ReadCursor>,
    hw: Loc,
    delivered: [Loc; 2],
    /// Not running or no longer routed: read to the end, then forget.
    finishing: bool,
    /// While finishing, all that is left unread is an unterminated last line: how its file
    /// looked when that was first seen, and when (see `rescan::Tail::forget_done`).
    unterminated: Option<(rescan::FileLook, Instant)>,
}

/// The state of the tail thread.
pub(crate) struct Tail {
    settings: EngineSettings,
    waker: Waker,
    rep: Reporter,
    commands: mpsc::Receiver<Command>,
    store: Store,
    routes: Routes,
    outlets: BTreeMap<String, Outlet>,
    containers: Vec<Container>,
    /// Cursors of cursors not being read (loaded, or of forgotten containers), kept in the
    /// checkpoint while their container's directory exists.
    dormant: BTreeMap<CursorKey, Arc<Cursor>>,
    /// Containers read to their end and forgotten while not running, with what their directory
    /// held then: one whose files changed since is read again. Each is looked at on a backoff,
    /// and early when the watcher saw its directory change.
    finished: BTreeMap<String, rescan::Forgotten>,
    reader: Reader,
    rr: usize,
    written: Option<BTreeMap<CursorKey, Position>>,
    /// Checkpoint writes failed in a row (the first failure and the recovery are logged).
    checkpoint_failures: u64,
    /// What the watcher saw: a rescan is due soon, directories that changed.
    hints: watch::Hints,
    next_rescan: Instant,
    next_checkpoint: Instant,
    next_lag: Instant,
    stopped: bool,
    /// Compressed logs last written before this (the engine's start, less a margin for coarse
    /// file clocks) are history when a container is first seen (see `files::inflate`).
    history_before: std::time::SystemTime,
    _watcher: Option<notify::RecommendedWatcher>,
}

const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// Compressed logs written this long before the engine started may hold lines written after it
/// (file times come from a coarse clock): they are read, not taken for history.
const HISTORY_MARGIN: Duration = Duration::from_secs(1);

impl Tail {
    /// Load the checkpoint and set everything up (on the caller's thread).
    pub fn new(
        settings: EngineSettings,
        routes: Routes,
        waker: Waker,
        emitter: Arc<dyn Emitter>,
        commands: mpsc::Receiver<Command>,
    ) -> Result<Self> {
        let store = Store::open(&settings.state_dir)?;
        let loaded = store.load()?;
        for corrupt in &loaded.corrupt {
            emitter.input_error("checkpoint_corrupt");
            tracing::error!(error = %corrupt, "checkpoint set aside; using the previous one (some lines may be sent again)");
        }
        let dormant = loaded
            .positions
            .into_iter()
            .map(|(k, p)| (k, Arc::new(Cursor::new(Some(p)))))
            .collect();
        let hints = watch::Hints::default();
        hints.rescan.store(true, Ordering::Release);
        let watcher = watch::start(&settings.sources, waker.clone(), hints.clone());
        let now = Instant::now();
        let mut tail = Self {
            reader: Reader::new(settings.max_line_bytes as usize, settings.rotate_wait),
            settings,
            waker,
            rep: Reporter::new(emitter),
            commands,
            store,
            routes: Routes::default(),
            outlets: BTreeMap::new(),
            containers: Vec::new(),
            dormant,
            finished: BTreeMap::new(),
            rr: 0,
            written: None,
            checkpoint_failures: 0,
            hints,
            next_rescan: now,
            next_checkpoint: now,
            next_lag: now,
            stopped: false,
            history_before: std::time::SystemTime::now()
                .checked_sub(HISTORY_MARGIN)
                .unwrap_or(std::time::SystemTime::UNIX_EPOCH),
            _watcher: watcher,
        };
        tail.apply(routes);
        Ok(tail)
    }

    /// The loop; returns on [`Command::Shutdown`] or when the handle is gone.
    pub fn run(mut self) {
        loop {
            if !self.commands_done() {
                return;
            }
            if self.stopped {
                self.rep.emitter.engine_alive();
                self.waker.wait(Duration::from_secs(1));
                continue;
            }
            let now = Instant::now();
            if now >= self.next_rescan || self.hints.rescan.swap(false, Ordering::AcqRel) {
                self.rescan();
                self.next_rescan = now + self.settings.rescan_interval;
            }
            let progress = self.round();
            if now >= self.next_checkpoint {
                // A failure is logged inside and retried at the next interval.
                let _ = self.checkpoint(false);
                self.next_checkpoint = now + self.settings.checkpoint_interval;
            }
            if now >= self.next_lag {
                self.rep.emitter.engine_alive();
                self.report_lag();
                self.next_lag = now + LAG_INTERVAL;
            }
            if !progress {
                let due = self.next_rescan.min(self.next_checkpoint).min(self.next_lag);
                self.waker.wait(
                    due.saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(1)),
                );
            }
        }
    }

    /// Handle queued commands; `false` to exit.
    fn commands_done(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Apply(routes)) => self.apply(routes),
                Ok(Command::StopReading { deadline, done }) => {
                    self.stop(deadline);
                    let _ = done.send(());
                }
                Ok(Command::WriteCheckpoint { done }) => {
                    let _ = done.send(self.checkpoint(true));
                }
                Ok(Command::Rescan { done }) => {
                    if !self.stopped {
                        self.rescan();
                    }
                    let _ = done.send(());
                }
                Ok(Command::Pause { paused, resume }) => {
                    let _ = paused.send(());
                    // Returns when the guard is dropped (the sender is gone).
                    let _ = resume.recv();
                }
                Ok(Command::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    /// One round over every container, starting one further each round; then hand every
    /// partly built batch over. `true` if anything was read.
    fn round(&mut self) -> bool {
        let mut progress = false;
        let n = self.containers.len();
        for k in 0..n {
            progress |= self.read_container((self.rr + k) % n);
        }
        self.rr = if n == 0 { 0 } else { (self.rr + 1) % n };
        for outlet in self.outlets.values_mut() {
            outlet.flush();
        }
        if std::mem::take(&mut self.reader.truncation_seen) {
            self.hints.rescan.store(true, Ordering::Release);
        }
        progress
    }

    fn read_container(&mut self, index: usize) -> bool {
        let c = &mut self.containers[index];
        let budget = (self.settings.read_budget_bytes / c.cursors.len().max(1)).max(1) as u64;
        let mut ctx = Ctx {
            files: &mut c.files,
            meta: &c.meta,
            format: c.format,
            hw: &mut c.hw,
            delivered: &mut c.delivered,
            rep: &mut self.rep,
            recent: self.settings.recent.as_deref(),
        };
        let mut progress = false;
        for s in &mut c.cursors {
            let Some(outlet) = self.outlets.get_mut(&s.drain) else {
                continue;
            };
            if !outlet.ready() {
                continue;
            }
            match self.reader.read(&mut ctx, s, outlet, budget) {
                Outcome::Read(n) | Outcome::Blocked(n) => progress |= n > 0,
            }
        }
        progress
    }

    /// Stop reading and hand every partly built batch over (each holds a reserved slot, so this
    /// does not wait).
    fn stop(&mut self, deadline: Instant) {
        self.stopped = true;
        for (name, outlet) in &mut self.outlets {
            if Instant::now() > deadline {
                tracing::warn!(drain = %name, "stop deadline passed before every batch was handed over");
                break;
            }
            outlet.flush();
        }
        // Let go of the drains: an outlet holds a reserved slot in its drain's channel (and a
        // sender), and a drain finishing its queue waits for every outstanding slot and sender.
        // Nothing is sent after a stop, so a drain must not wait for the engine until its deadline.
        self.outlets.clear();
        self.routes.drains.clear();
    }

    /// Every cursor's acknowledged position, live and dormant.
    fn positions(&self) -> BTreeMap<CursorKey, Position> {
        let mut out: BTreeMap<CursorKey, Position> = self
            .dormant
            .iter()
            .filter_map(|(k, c)| Some((k.clone(), c.get()?)))
            .collect();
        for c in &self.containers {
            for s in &c.cursors {
                if let Some(p) = s.acked.get() {
                    out.insert((c.key.clone(), s.drain.clone()), p);
                }
            }
        }
        out
    }

    /// Write the checkpoint if it changed (or always, when `force`).
    fn checkpoint(&mut self, force: bool) -> Result<()> {
        let positions = self.positions();
        if !force && self.written.as_ref() == Some(&positions) {
            return Ok(());
        }
        match self.store.write(&positions) {
            Ok(()) => {
                if self.checkpoint_failures > 0 {
                    tracing::info!(
                        failures = self.checkpoint_failures,
                        "the checkpoint is written again"
                    );
                    self.checkpoint_failures = 0;
                }
                self.written = Some(positions);
                self.rep.emitter.checkpoint_written();
                Ok(())
            }
            Err(e) => {
                self.rep.emitter.checkpoint_failed();
                if self.checkpoint_failures == 0 || force {
                    tracing::error!(
                        error = %e,
                        "cannot write the checkpoint (retried every interval; /readyz fails meanwhile): shipping goes on, but a restart now would send again what was delivered since the last checkpoint"
                    );
                }
                self.checkpoint_failures += 1;
                self.written = None;
                Err(Error::Checkpoint(e))
            }
        }
    }

    /// Bytes between each drain's read positions and the ends of its files.
    fn report_lag(&self) {
        let mut lag: BTreeMap<&str, u64> = self.outlets.keys().map(|k| (k.as_str(), 0)).collect();
        for c in &self.containers {
            for s in &c.cursors {
                // From what the drain acknowledged (what a restart would resume from); with
                // nothing acknowledged yet, from the start of the files.
                let (seq, offset) = s
                    .acked
                    .get()
                    .and_then(|p| {
                        let f = c.files.files.iter().find(|f| f.id == p.acked_end.file)?;
                        Some((f.seq, p.acked_end.offset))
                    })
                    .unwrap_or((0, 0));
                let behind: u64 = c
                    .files
                    .files
                    .iter()
                    .filter(|f| f.seq >= seq)
                    .map(|f| {
                        if f.seq == seq {
                            f.size.saturating_sub(offset)
                        } else {
                            f.size
                        }
                    })
                    .sum();
                if let Some(total) = lag.get_mut(s.drain.as_str()) {
                    *total += behind;
                }
            }
        }
        for (drain, bytes) in lag {
            self.rep.emitter.lag_bytes(drain, bytes);
        }
    }

    /// Swap the routing table: unchanged drains keep everything; a drain with a new generation
    /// gets a fresh outlet and its cursors rewind to their acknowledged cursors.
    fn apply(&mut self, routes: Routes) {
        for (name, endpoint) in &routes.drains {
            match self.outlets.get_mut(name) {
                Some(o) if o.endpoint.generation == endpoint.generation => {
                    o.endpoint.batch_max_lines = endpoint.batch_max_lines;
                    o.endpoint.batch_max_bytes = endpoint.batch_max_bytes;
                }
                Some(o) => {
                    *o = Outlet::new(endpoint.clone());
                    self.rewind(name);
                }
                None => {
                    self.outlets.insert(name.clone(), Outlet::new(endpoint.clone()));
                    // A drain removed and added again before the rescan that parks its cursors
                    // still has them, read past the batches its old outlet and channel held:
                    // they go back to what the drain acknowledged. (A new drain has none.)
                    self.rewind(name);
                }
            }
        }
        self.outlets.retain(|name, _| routes.drains.contains_key(name));
        self.routes = routes;
        self.hints.rescan.store(true, Ordering::Release);
    }
}
