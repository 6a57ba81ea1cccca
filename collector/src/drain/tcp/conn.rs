//! Opening one TCP or TLS connection, and asking the kernel how much of it the peer acknowledged.
//!
//! Invariants: [`Meter::written`] counts every byte handed to the TCP socket (for TLS: TLS record
//! bytes, counted under the TLS layer), and [`Meter::acked`] is `written − SIOCOUTQ`, the bytes the
//! peer's TCP stack acknowledged. Both only grow while the connection lives.

use std::{
    io,
    os::fd::{AsRawFd, RawFd},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use super::Error;
use crate::drain::destinations::Destinations;

/// Where a TCP drain connects.
#[derive(Clone)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS: the connector and the name to verify.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Limit for resolving, connecting and the TLS handshake together.
    pub connect_timeout: Duration,
    /// How long a live connection may go without the peer acknowledging anything while bytes wait.
    pub idle_timeout: Duration,
    /// Which addresses may be connected to.
    pub destinations: Arc<Destinations>,
}

impl Target {
    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Anything a connection can be.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Measures an open connection: bytes written and bytes acknowledged.
pub struct Meter {
    fd: RawFd,
    written: Arc<AtomicU64>,
}

impl Meter {
    /// Bytes written to the TCP socket so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Bytes of those the peer's TCP stack has acknowledged.
    pub fn acked(&self) -> io::Result<u64> {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ (SIOCOUTQ for sockets) stores one c_int through the pointer, which points
        // to a live local; `fd` is the connection's socket, open for as long as the connection's stream
        // lives, and the stream is dropped together with its meter.
        let rc = unsafe { libc::ioctl(self.fd, libc::TIOCOUTQ, &mut queued) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.written().saturating_sub(u64::try_from(queued).unwrap_or(0)))
    }

    /// Make closing the socket a reset (`SO_LINGER` 0): the kernel drops what it still queued
    /// instead of delivering it after the connection was given up.
    pub fn reset_on_close(&self) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: SO_LINGER reads one `linger` struct through the pointer, which points to a live
        // local of the right size; `fd` is the connection's socket, open while the meter lives.
        let _ = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }
}

/// Resolve, connect (TCP_NODELAY, keepalive) and, for TLS, handshake, within the target's timeout.
pub async fn connect(target: &Target) -> Result<(Box<dyn Io>, Meter), Error> {
    let address = target.address();
    let attempt = async {
        let tcp = connect_allowed(target, &address).await?;
        let _ = tcp.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10));
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
        let fd = tcp.as_raw_fd();
        let written = Arc::new(AtomicU64::new(0));
        let counting = Counting {
            inner: tcp,
            written: Arc::clone(&written),
        };
        let meter = Meter { fd, written };
        let io: Box<dyn Io> = match &target.tls {
            None => Box::new(counting),
            Some((connector, name)) => {
                let handshake = |source| Error::Handshake {
                    address: address.clone(),
                    source,
                };
                let mut tls = connector
                    .connect(name.clone(), counting)
                    .await
                    .map_err(handshake)?;
                await_refusal(&mut tls, &meter).await.map_err(handshake)?;
                Box::new(tls)
            }
        };
        Ok((io, meter))
    };
    match tokio::time::timeout(target.connect_timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Error::ConnectTimeout {
            address,
            after: target.connect_timeout,
        }),
    }
}

/// Resolve the target and connect to the first address the destinations policy allows that
/// answers.
async fn connect_allowed(target: &Target, address: &str) -> Result<TcpStream, Error> {
    let connect = |source| Error::Connect {
        address: address.to_owned(),
        source,
    };
    let resolved = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(connect)?;
    let allowed = target
        .destinations
        .filter(resolved)
        .map_err(|source| Error::Refused {
            address: address.to_owned(),
            source,
        })?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
    for addr in allowed {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = e,
        }
    }
    Err(connect(last))
}

/// How long to listen for a refusal after the server acknowledged the end of the handshake.
const REFUSAL_GRACE: Duration = Duration::from_millis(50);

/// A TLS 1.3 server checks the client's certificate only after the client considers the handshake
/// done; a refusal arrives as an alert right after. Bytes sent before that would be acknowledged by
/// the server's TCP stack and then thrown away by the server, so wait until the server acknowledged
/// the handshake, then listen briefly for an alert (or a close) before any line is sent.
async fn await_refusal(tls: &mut (impl AsyncRead + Unpin), meter: &Meter) -> io::Result<()> {
    // Poll the kernel until the handshake's last flight is acknowledged (bounded by the caller's
    // connect timeout).
    while meter.acked()? < meter.written() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut scratch = [0u8; 512];
    match tokio::time::timeout(REFUSAL_GRACE, tokio::io::AsyncReadExt::read(tls, &mut scratch)).await {
        Err(_) | Ok(Ok(1..)) => Ok(()),
        Ok(Ok(0)) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the server closed the connection right after the handshake",
        )),
        Ok(Err(e)) => Err(e),
    }
}

/// A TCP stream that counts the bytes written to it.
struct Counting {
    inner: TcpStream,
    written: Arc<AtomicU64>,
}

impl AsyncRead for Counting {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counting {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = poll {
            self.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
