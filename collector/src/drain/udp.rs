//! The `syslog-udp://` transport (RFC5426): one datagram per frame.
//!
//! UDP has no acknowledgements, so this transport is **at most once**: a batch counts as delivered
//! once every datagram was handed to the kernel. Datagrams lost on the way are not noticed. A send
//! error (for example ICMP port unreachable reported on a connected socket) fails the batch, which is
//! then sent again whole, so a receiver may see the first datagrams of that batch twice.
//!
//! Invariants: the socket is created (and the host resolved) when the first batch is sent, and again
//! after a send error; frames are never re-framed or cut here (the encoder already respected
//! `maxDatagramBytes`).

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use tokio::net::UdpSocket;
use tower::{BoxError, Service};

use super::{
    destinations::{Destinations, Refused},
    stack::{Delivered, Delivery},
};
use crate::pipeline::Batch;

/// A UDP delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host could not be resolved or the socket not set up.
    #[error("cannot reach {address} over UDP")]
    Connect {
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The destinations policy refuses every address the host resolves to.
    #[error("{address}: no address it resolves to may be sent to")]
    Refused {
        /// `host:port`.
        address: String,
        /// The refusal.
        #[source]
        source: Refused,
    },
    /// Sending a datagram failed.
    #[error("sending a datagram to {address} failed")]
    Send {
        /// `host:port`.
        address: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The `cause` metric label.
    pub fn cause(&self) -> &'static str {
        match self {
            Error::Connect { .. } => "connect",
            Error::Refused { .. } => "destination",
            Error::Send { .. } => "write",
        }
    }
}

/// The UDP transport [`Service`].
#[derive(Clone, Debug)]
pub struct UdpService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    host: String,
    port: u16,
    destinations: Arc<Destinations>,
    socket: Mutex<Option<Arc<UdpSocket>>>,
}

impl UdpService {
    /// A transport sending to `host:port`, where `destinations` allows.
    pub fn new(host: String, port: u16, destinations: Arc<Destinations>) -> Self {
        Self {
            inner: Arc::new(Inner {
                host,
                port,
                destinations,
                socket: Mutex::new(None),
            }),
        }
    }
}

impl Inner {
    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    fn cached(&self) -> Option<Arc<UdpSocket>> {
        self.socket
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    fn store(&self, socket: Option<Arc<UdpSocket>>) {
        *self.socket.lock().unwrap_or_else(|poison| poison.into_inner()) = socket;
    }

    async fn socket(&self) -> Result<Arc<UdpSocket>, Error> {
        if let Some(socket) = self.cached() {
            return Ok(socket);
        }
        let err = |source| Error::Connect {
            address: self.address(),
            source,
        };
        let resolved = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(err)?;
        let allowed = self
            .destinations
            .filter(resolved)
            .map_err(|source| Error::Refused {
                address: self.address(),
                source,
            })?;
        let target: SocketAddr = allowed.into_iter().next().ok_or_else(|| {
            err(io::Error::new(
                io::ErrorKind::NotFound,
                "the name resolved to no address",
            ))
        })?;
        let local: SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(local).await.map_err(err)?;
        socket.connect(target).await.map_err(err)?;
        let socket = Arc::new(socket);
        self.store(Some(Arc::clone(&socket)));
        Ok(socket)
    }

    async fn send(&self, batch: &Batch) -> Result<(), Error> {
        let socket = self.socket().await?;
        for frame in batch.frames() {
            if let Err(source) = socket.send(frame).await {
                self.store(None);
                return Err(Error::Send {
                    address: self.address(),
                    source,
                });
            }
        }
        Ok(())
    }
}

impl Service<Arc<Batch>> for UdpService {
    type Response = Delivered;
    type Error = BoxError;
    type Future = Delivery;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Arc<Batch>) -> Self::Future {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            inner.send(&batch).await?;
            Ok(Delivered::default())
        })
    }
}
