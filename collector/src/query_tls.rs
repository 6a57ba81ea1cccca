//! The query API's TLS listener: mutual TLS with the operator (see [`sluice_api::query_tls`]).
//!
//! TCP connections are accepted and their handshakes run on their own tasks, each within
//! [`HANDSHAKE_TIMEOUT`] and at most [`HANDSHAKES_AT_ONCE`] at a time; only a connection whose
//! client presented a certificate of the client CA reaches the HTTP server (which then still
//! checks the bearer token). A failed handshake is counted and logged at debug: it concerns
//! nobody but the peer, and nothing here touches the tail thread or the drains.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::sync::CancellationToken;

/// How long a client may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; a connection beyond them is closed at once.
pub const HANDSHAKES_AT_ONCE: usize = 64;

/// The TLS the query API is served with.
#[derive(Clone, Debug)]
pub struct QueryTls {
    /// Server certificate and key; requires a client certificate of the operator's CA.
    pub config: Arc<rustls::ServerConfig>,
    /// Counts handshakes that failed, timed out or were turned away
    /// (`sluice_collector_query_tls_handshake_failures_total`).
    pub handshake_failures: prometheus::IntCounter,
}

impl QueryTls {
    /// The counter [`QueryTls::handshake_failures`] (to register).
    pub fn failures_counter() -> prometheus::Result<prometheus::IntCounter> {
        prometheus::IntCounter::new(
            "sluice_collector_query_tls_handshake_failures_total",
            "TLS handshakes on the query API that failed (no or a wrong client certificate, timeouts).",
        )
    }

    /// Accept on `listener` until `cancel`, handing on the connections whose handshake succeeded.
    pub fn listen(&self, listener: TcpListener, cancel: CancellationToken) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(HANDSHAKES_AT_ONCE);
        let acceptor = TlsAcceptor::from(Arc::clone(&self.config));
        let failures = self.handshake_failures.clone();
        let permits = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_AT_ONCE));
        tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    () = cancel.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of descriptors and the like: wait instead of spinning.
                            tracing::warn!(error = %e, "query API: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                // A follow is a stream of small writes, each a TLS record: send each at once
                // (Nagle's algorithm would hold one back until the last is acknowledged).
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%peer, error = %e, "query API: cannot set TCP_NODELAY");
                }
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    failures.inc();
                    tracing::debug!(%peer, "query API: too many handshakes in progress; connection closed");
                    continue;
                };
                let (acceptor, tx, failures) = (acceptor.clone(), tx.clone(), failures.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            drop(permit);
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            failures.inc();
                            tracing::debug!(%peer, error = %e, "query API: TLS handshake failed (not the operator?)");
                        }
                        Err(_) => {
                            failures.inc();
                            tracing::debug!(%peer, "query API: TLS handshake not done within {} s", HANDSHAKE_TIMEOUT.as_secs());
                        }
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

/// Connections that completed mutual TLS, for `axum::serve`.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            // The accept loop ended (shutdown): nothing comes any more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
