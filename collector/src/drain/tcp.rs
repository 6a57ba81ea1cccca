//! The `syslog://` and `syslog-tls://` transport: octet-counted frames over one TCP (or TLS)
//! connection, acknowledged by the peer's TCP stack.
//!
//! What "delivered" means here, the core of at-least-once for TCP drains:
//! * A batch is acknowledged only when the peer's TCP stack has acknowledged every byte of it. After
//!   each write the task knows the cumulative number of bytes written to the socket (for TLS, TLS
//!   bytes counted under the TLS layer) and asks the kernel how many are still unsent or
//!   unacknowledged (`ioctl(SIOCOUTQ)`); a batch whose end offset is ≤ written − queued is done.
//! * Several batches are written ahead (the concurrency limit of the stack decides how many), so
//!   throughput does not fall to one round trip per batch; while batches wait, the kernel is asked
//!   again every millisecond.
//! * A connection is dead when it breaks, or when bytes wait to be acknowledged and the peer has
//!   acknowledged none for the drain's `timeoutMs` (an idle-progress timeout: a receiver that reads
//!   slowly, at any rate, is not dead, however long one batch takes). There is no per-batch timeout.
//! * A connection given up with bytes still unacknowledged is closed with a reset (`SO_LINGER` 0),
//!   so the kernel drops what it still queued rather than delivering it later next to the copies
//!   sent on the new connection. Every batch not yet acknowledged fails and the retry layer sends it
//!   again. A receiver can therefore see a line twice only if it belongs to a batch the peer had
//!   only partly acknowledged (or that was in flight) when the connection was given up: at most the
//!   batches in flight on that connection. Repeats keep their MSGID, so a receiver can drop them.
//! * A collector crash after `write()` still delivers: the kernel owns the bytes and sends them.
//!   Only a receiver crash can lose lines: what its kernel acknowledged but the receiver had not yet
//!   read. No TCP syslog protocol can close that gap (RFC 5425/6587 have no application acks).
//!
//! * TLS 1.3 servers check a client certificate only after the client finished its handshake, and
//!   refuse with an alert; bytes sent before that would be acknowledged by the server's TCP stack and
//!   discarded. So a new TLS connection carries no lines until the server acknowledged the handshake
//!   and 50 ms passed without a refusal.
//!
//! Invariants: one connection task per drain owns the socket; batches are written whole and in the
//! order they arrive; a connection attempt is made only when there is something to send, and
//! failed attempts back off (jittered, exponential) before the next.

mod conn;

use std::{
    collections::VecDeque,
    io,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

pub use conn::Target;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf},
    sync::{mpsc, oneshot},
    time::{Instant, MissedTickBehavior},
};
use tower::{BoxError, Service};

use super::{
    backoff::Backoff,
    stack::{Delivered, Delivery},
};
use crate::pipeline::Batch;

/// A TCP or TLS delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// TCP connect (or name resolution) failed.
    #[error("cannot connect to {address}")]
    Connect {
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The destinations policy refuses every address the host resolves to.
    #[error("cannot connect to {address}")]
    Refused {
        /// `host:port`.
        address: String,
        /// The refusal.
        #[source]
        source: super::destinations::Refused,
    },
    /// Connecting took longer than the drain's timeout.
    #[error("connecting to {address} took longer than {after:?}")]
    ConnectTimeout {
        /// `host:port`.
        address: String,
        /// The limit.
        after: Duration,
    },
    /// The TLS handshake failed (certificate not trusted, wrong name, client certificate refused…).
    #[error("TLS handshake with {address} failed")]
    Handshake {
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The connection broke while sending (the error comes from the socket or the TLS layer).
    #[error("connection to {address} failed")]
    Io {
        /// `host:port`.
        address: String,
        /// Whether the failure came from TLS (an alert from the peer, a bad record).
        tls: bool,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The peer closed the connection before acknowledging everything.
    #[error("{address} closed the connection")]
    Closed {
        /// `host:port`.
        address: String,
    },
    /// The peer acknowledged nothing for the drain's timeout while bytes waited; the connection was
    /// reset and its unacknowledged batches are sent again on a new one.
    #[error("connection to {address} reset: the receiver acknowledged nothing for {idle:?}")]
    Stalled {
        /// `host:port`.
        address: String,
        /// How long nothing was acknowledged.
        idle: Duration,
    },
    /// The connection task is gone (the drain is shutting down).
    #[error("the drain's connection task has stopped")]
    Gone,
}

impl Error {
    /// The `cause` metric label.
    pub fn cause(&self) -> &'static str {
        match self {
            Error::Connect { .. } => "connect",
            Error::Refused { .. } => "destination",
            Error::ConnectTimeout { .. } | Error::Stalled { .. } => "timeout",
            Error::Handshake { .. } | Error::Io { tls: true, .. } => "tls",
            Error::Io { .. } | Error::Closed { .. } | Error::Gone => "write",
        }
    }

    fn io(address: &str, source: io::Error) -> Self {
        let tls = super::http::is_tls(&source);
        Error::Io {
            address: address.to_owned(),
            tls,
            source,
        }
    }
}

/// One batch handed to the connection task, and where to report its fate.
struct Job {
    batch: Arc<Batch>,
    done: oneshot::Sender<Result<(), Error>>,
}

/// The transport [`Service`]: hands batches to the drain's connection task, and starts that task
/// again if it died (a panic: its batches fail with [`Error::Gone`] and the retry layer sends
/// them again).
#[derive(Clone)]
pub struct TcpService {
    jobs: Arc<std::sync::Mutex<mpsc::UnboundedSender<Job>>>,
    target: Target,
    backoff: Backoff,
}

impl std::fmt::Debug for TcpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpService")
            .field("address", &self.target.address())
            .finish_non_exhaustive()
    }
}

impl TcpService {
    /// Start the connection task for `target` (it connects when the first batch arrives).
    pub fn spawn(target: Target, backoff: Backoff) -> Self {
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(target.clone(), backoff, rx));
        Self {
            jobs: Arc::new(std::sync::Mutex::new(jobs)),
            target,
            backoff,
        }
    }

    /// Hand `job` to the connection task, starting a new one if it is gone.
    fn send(&self, job: Job) {
        // Held only to send or swap the sender, never across an await.
        let mut jobs = self.jobs.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Err(mpsc::error::SendError(job)) = jobs.send(job) {
            tracing::error!(address = %self.target.address(), "the drain's connection task died; starting it again");
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(self.target.clone(), self.backoff, rx));
            let _ = tx.send(job);
            *jobs = tx;
        }
    }
}

impl Service<Arc<Batch>> for TcpService {
    type Response = Delivered;
    type Error = BoxError;
    type Future = Delivery;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Arc<Batch>) -> Self::Future {
        let (done, result) = oneshot::channel();
        self.send(Job { batch, done });
        Box::pin(async move {
            result.await.map_err(|_| Error::Gone)??;
            Ok(Delivered::default())
        })
    }
}

/// The connection task: connect when there is work, run the connection until it breaks, repeat.
async fn run(target: Target, backoff: Backoff, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut failures = 0u32;
    loop {
        queue.retain(|job| !job.done.is_closed());
        if queue.is_empty() {
            match rx.recv().await {
                Some(job) => queue.push_back(job),
                None => return,
            }
            continue;
        }
        let (io, meter) = match conn::connect(&target).await {
            Ok(conn) => conn,
            Err(err) => {
                fail_all(&mut queue, &err, &target);
                let delay = backoff.delay(failures);
                failures = failures.saturating_add(1);
                // Back off before the next attempt, still taking new batches (and noticing shutdown).
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        job = rx.recv() => match job {
                            Some(job) => queue.push_back(job),
                            None => return,
                        },
                    }
                }
                continue;
            }
        };
        failures = 0;
        match Connection::new(io, meter, target.address(), target.idle_timeout)
            .run(&mut queue, &mut rx)
            .await
        {
            Ok(()) => return,
            Err(err) => fail_all(&mut queue, &err, &target),
        }
    }
}

/// Fail every queued job with a copy of `err` (the retry layer sends them again).
fn fail_all(queue: &mut VecDeque<Job>, err: &Error, target: &Target) {
    for job in queue.drain(..) {
        let copy = match err {
            Error::Connect { source, .. } => Error::Connect {
                address: target.address(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::Handshake { source, .. } => Error::Handshake {
                address: target.address(),
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::Io { source, tls, .. } => Error::Io {
                address: target.address(),
                tls: *tls,
                source: io::Error::new(source.kind(), source.to_string()),
            },
            Error::Refused { source, .. } => Error::Refused {
                address: target.address(),
                source: source.clone(),
            },
            Error::ConnectTimeout { after, .. } => Error::ConnectTimeout {
                address: target.address(),
                after: *after,
            },
            Error::Closed { .. } => Error::Closed {
                address: target.address(),
            },
            Error::Stalled { idle, .. } => Error::Stalled {
                address: target.address(),
                idle: *idle,
            },
            Error::Gone => Error::Gone,
        };
        let _ = job.done.send(Err(copy));
    }
}

/// One live connection and the batches written on it but not yet acknowledged.
struct Connection {
    reader: ReadHalf<Box<dyn conn::Io>>,
    writer: WriteHalf<Box<dyn conn::Io>>,
    meter: conn::Meter,
    address: String,
    /// Written batches and the socket byte offset at which each ends.
    written: VecDeque<(Job, u64)>,
    /// How long the peer may acknowledge nothing while bytes wait.
    idle_timeout: Duration,
    /// While bytes wait: the acknowledged byte count when it last grew, and when.
    progress: Option<(u64, Instant)>,
}

impl Connection {
    fn new(io: Box<dyn conn::Io>, meter: conn::Meter, address: String, idle_timeout: Duration) -> Self {
        let (reader, writer) = tokio::io::split(io);
        Self {
            reader,
            writer,
            meter,
            address,
            written: VecDeque::new(),
            idle_timeout,
            progress: None,
        }
    }

    /// Fail with [`Error::Stalled`] when bytes have waited (`outstanding`) and the peer has
    /// acknowledged nothing new for the idle timeout. Any growth of the acknowledged count is
    /// progress; the clock starts when something starts waiting.
    fn check_progress(&mut self, outstanding: bool) -> Result<(), Error> {
        if !outstanding {
            self.progress = None;
            return Ok(());
        }
        let now = Instant::now();
        let acked = self.meter.acked().map_err(|e| Error::io(&self.address, e))?;
        match self.progress {
            Some((seen, since)) if acked <= seen => {
                let idle = now.duration_since(since);
                if idle >= self.idle_timeout {
                    return Err(Error::Stalled {
                        address: self.address.clone(),
                        idle,
                    });
                }
            }
            _ => self.progress = Some((acked, now)),
        }
        Ok(())
    }

    /// Resolve every written job the peer acknowledged.
    fn settle(&mut self) -> Result<(), Error> {
        if self.written.is_empty() {
            return Ok(());
        }
        let acked = self.meter.acked().map_err(|e| Error::io(&self.address, e))?;
        while self.written.front().is_some_and(|(_, end)| *end <= acked) {
            if let Some((job, _)) = self.written.pop_front() {
                let _ = job.done.send(Ok(()));
            }
        }
        Ok(())
    }

    /// Write queued batches and settle acknowledgements until the connection breaks (`Err`, with
    /// every unacknowledged job moved back to the front of `queue`) or the drain stops (`Ok`).
    async fn run(
        mut self,
        queue: &mut VecDeque<Job>,
        rx: &mut mpsc::UnboundedReceiver<Job>,
    ) -> Result<(), Error> {
        let result = self.pump(queue, rx).await;
        if result.is_err() {
            // The peer may have acknowledged more before the connection broke: SIOCOUTQ counts
            // sequence numbers, so it stays right after a reset.
            let _ = self.settle();
        }
        if self
            .meter
            .acked()
            .map_or(true, |acked| acked < self.meter.written())
        {
            // Given up with bytes unacknowledged: reset, so the kernel does not deliver them later
            // next to the copies the retry sends on a new connection.
            self.meter.reset_on_close();
        }
        // Whatever was written but not acknowledged goes back first, in order, to fail with the rest.
        while let Some((job, _)) = self.written.pop_back() {
            queue.push_front(job);
        }
        result
    }

    /// Settle acknowledgements, fail the connection if a job on it timed out, and pick what to
    /// write next (`None` while flushing or idle).
    fn prepare(
        &mut self,
        queue: &mut VecDeque<Job>,
        offset: usize,
        flushing: &mut bool,
    ) -> Result<Option<Arc<Batch>>, Error> {
        self.settle()?;
        let outstanding = !self.written.is_empty() || offset > 0 || *flushing || !queue.is_empty();
        self.check_progress(outstanding)?;
        if self.written.iter().any(|(job, _)| job.done.is_closed())
            || (offset > 0 && queue.front().is_some_and(|job| job.done.is_closed()))
        {
            // The drain stopped waiting for a batch on this connection (it is stopping).
            return Err(Error::Gone);
        }
        if offset == 0 && !*flushing {
            queue.retain(|job| !job.done.is_closed());
        }
        let current = if *flushing {
            None
        } else {
            queue.front().map(|job| Arc::clone(&job.batch))
        };
        if current.as_ref().is_some_and(|batch| batch.bytes.is_empty()) {
            // Nothing to write (a batch of marks only): it is acknowledged with what precedes it.
            *flushing = true;
            return Ok(None);
        }
        Ok(current)
    }

    async fn pump(
        &mut self,
        queue: &mut VecDeque<Job>,
        rx: &mut mpsc::UnboundedReceiver<Job>,
    ) -> Result<(), Error> {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut offset = 0usize; // bytes of the front job already written
        let mut flushing = false;
        let mut scratch = [0u8; 512];
        // Each round: settle acks, check for timed-out jobs, then wait for whichever comes first of
        // a new job, write progress, a flush, data or EOF from the peer, or the next tick.
        loop {
            let current = self.prepare(queue, offset, &mut flushing)?;
            let waiting = !self.written.is_empty() || current.is_some() || flushing;
            tokio::select! {
                biased;
                job = rx.recv() => match job {
                    Some(job) => queue.push_back(job),
                    None => return Ok(()),
                },
                progress = advance(&mut self.writer, current.as_deref(), offset, flushing) => {
                    match progress.map_err(|e| Error::io(&self.address, e))? {
                        Progress::Wrote(n) => {
                            offset += n;
                            flushing = current.is_some_and(|batch| offset >= batch.bytes.len());
                        }
                        Progress::Flushed => {
                            flushing = false;
                            offset = 0;
                            if let Some(job) = queue.pop_front() {
                                self.written.push_back((job, self.meter.written()));
                            }
                        }
                    }
                }
                r = self.reader.read(&mut scratch) => match r {
                    Ok(0) => return Err(Error::Closed { address: self.address.clone() }),
                    Ok(_) => {} // syslog receivers send nothing; ignore whatever they do send
                    Err(e) => return Err(Error::io(&self.address, e)),
                },
                _ = tick.tick(), if waiting => {}
            }
        }
    }
}

enum Progress {
    Wrote(usize),
    Flushed,
}

/// Flush (when `flushing`), or write some of `batch` from `offset`; pending forever when there is
/// nothing to do. Each call does one step, so dropping it mid-way loses no knowledge of what was
/// written.
async fn advance(
    writer: &mut WriteHalf<Box<dyn conn::Io>>,
    batch: Option<&Batch>,
    offset: usize,
    flushing: bool,
) -> io::Result<Progress> {
    if flushing {
        writer.flush().await?;
        return Ok(Progress::Flushed);
    }
    let Some(batch) = batch.filter(|b| offset < b.bytes.len()) else {
        return std::future::pending().await;
    };
    match writer.write(&batch.bytes[offset..]).await? {
        0 => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "the socket accepted no bytes",
        )),
        n => Ok(Progress::Wrote(n)),
    }
}
